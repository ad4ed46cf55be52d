"""``ifeval``: instruction following, scored by IFEval's own checkers (Zhou et al. 2023, Google's Apache-2.0 code).

r(x, y) = the fraction of the ORIGINAL prompt's instructions that the answer y follows, in IFEval's loose mode
(an instruction counts as followed when the answer, or the answer without its first/last line or without
markdown asterisks, passes the checker). It lies in [0, 1], r_max = 1; an empty answer scores 0. Each verdict also
carries the strict one (the answer itself passes the checker), from which :func:`alignpro.metrics.ifeval_accuracies`
gives IFEval's four official metrics (prompt- and instruction-level, strict and loose).

The checkers come from the PyPI wheel ``if-verifiable`` (its ``if_verifiable.ifeval`` is Google's registry and
checkers); nothing here re-implements a check. Which instructions apply is looked up from the RECORD of the
original x (IFEval's ``instruction_id_list`` and ``kwargs``), never parsed from the prompt a target was shown,
so a prompter cannot change what is checked.

Offline: two registry types need nltk data that nltk downloads at run time (:data:`NEEDS_NLTK_DATA`). They are
never drawn into the builtin instruction set; for other prompt sources the reward checks, when it is built,
that the data is installed, and names the type and the fix when it is not.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from alignpro.data import Instruction, PromptRecord
from alignpro.errors import AlignProError

#: instruction type -> the nltk resource its checker loads (downloaded at run time by ``nltk.download``)
NEEDS_NLTK_DATA = {
    "length_constraints:number_sentences": "tokenizers/punkt",  # count_sentences: punkt's English model
    "change_case:capital_word_frequency": "tokenizers/punkt_tab",  # nltk.word_tokenize
}


def registry() -> dict:
    """IFEval's instruction registry: id -> checker class."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    return INSTRUCTION_DICT


def _check_offline(ids: Iterable[str]) -> None:
    """Raise naming each instruction type whose nltk data is missing (instead of a download attempt mid-run)."""
    import nltk

    missing = []
    for iid in sorted(set(ids) & set(NEEDS_NLTK_DATA)):
        try:
            nltk.data.find(NEEDS_NLTK_DATA[iid])
        except LookupError:
            missing.append(f"{iid} (needs nltk '{NEEDS_NLTK_DATA[iid].split('/')[-1]}')")
    if missing:
        names = " ".join(sorted({NEEDS_NLTK_DATA[m.split(' ')[0]].split('/')[-1] for m in missing}))
        raise AlignProError(f"reward 'ifeval': the prompts use instruction types whose checkers need nltk data "
                            f"that is not installed: {', '.join(missing)}. With internet access run "
                            f"`python -m nltk.downloader {names}`, or drop these types from the prompts")


@dataclass(frozen=True)
class InstructionResult:
    id: str  #: the instruction type, e.g. "punctuation:no_comma"
    followed: bool  #: loose-mode pass (the answer, or it without its first/last line or '*', passes)
    strict: bool  #: strict-mode pass (the answer as it is passes)


@contextmanager
def _random_drawn_from(prompt: str, instructions: Sequence[Instruction]) -> Iterator[None]:
    """Python's global ``random`` seeded from the prompt and its instructions, restored afterwards.

    IFEval's checkers draw a random value for a kwarg that is missing or invalid (Google's file has two such
    prompts: ``keywords:letter_frequency`` with the "letter" '#' or '!', for which the checker picks a random
    letter on each check), so without this the same (x, y) could get different verdicts from call to call."""
    key = hashlib.sha256("\x1f".join([prompt, *(f"{i.id}={i.kwargs_json}" for i in instructions)]).encode())
    state = random.getstate()
    random.seed(int.from_bytes(key.digest()[:8], "big"))
    try:
        yield
    finally:
        random.setstate(state)


def follows(prompt: str, instructions: Sequence[Instruction], answer: str) -> list[InstructionResult]:
    """IFEval's loose- and strict-mode verdicts on each instruction of the original prompt ``prompt`` for
    ``answer`` (Google's definitions, as the ``if-verifiable`` wheel implements them). A pure function of its
    arguments: a value the checker would draw at random is drawn from a stream keyed by the prompt."""
    from if_verifiable.common import evaluate_instructions

    if not answer.strip():
        return [InstructionResult(i.id, False, False) for i in instructions]
    with _random_drawn_from(prompt, instructions):
        results, _ = evaluate_instructions(response=answer, instruction_id_list=[i.id for i in instructions],
                                           kwargs_list=[i.kwargs for i in instructions], prompt=prompt,
                                           instruction_registry=registry())
    if len(results) != len(instructions):  # the library skips ids it does not know; records are validated on load
        raise AlignProError(f"reward 'ifeval': IFEval's registry did not check every instruction of the prompt "
                            f"{prompt[:60]!r}: {[i.id for i in instructions]}")
    return [InstructionResult(r.instruction_id, bool(r.loose_pass), bool(r.strict_pass)) for r in results]


def fraction_followed(results: Sequence[InstructionResult]) -> float:
    """r(x, y) of the ``ifeval`` reward: followed instructions / instructions (0 for a prompt without any)."""
    return sum(r.followed for r in results) / len(results) if results else 0.0


class IFEvalReward:
    """The fraction of the original prompt's IFEval instructions that an answer follows (loose mode), in [0, 1].

    Built with the prompt records it will score (their texts are the keys of the instruction look-up).
    """

    name = "ifeval"
    r_max = 1.0

    def __init__(self, records: Iterable[PromptRecord]) -> None:
        import langdetect

        langdetect.DetectorFactory.seed = 0  # the lowercase/capitals checkers call langdetect, random by default
        self.instructions: dict[str, tuple[Instruction, ...]] = {}
        for r in records:
            if not r.instructions:
                continue
            seen = self.instructions.setdefault(r.text, r.instructions)
            if seen != r.instructions:
                raise AlignProError(f"reward 'ifeval': the prompt {r.text[:60]!r} appears twice with different "
                                    f"instructions (record {r.id}); its answers could not be scored")
        if not self.instructions:
            raise AlignProError("reward 'ifeval' scores answers against each prompt's IFEval instructions, and none "
                                "of the prompts has any: use builtin-ifeval[:train|:eval], hf:google/IFEval, or a "
                                "JSONL file in IFEval's schema (prompt, instruction_id_list, kwargs); alignpro score takes "
                                "--instruction-id-list and --kwargs")
        known = registry()
        unknown = {i.id for ins in self.instructions.values() for i in ins} - set(known)
        if unknown:
            raise AlignProError(f"reward 'ifeval': unknown instruction ids {sorted(unknown)}; valid ids are "
                                f"IFEval's registry: {', '.join(sorted(known))}")
        _check_offline(i.id for ins in self.instructions.values() for i in ins)

    def lookup(self, prompt: str) -> tuple[Instruction, ...]:
        try:
            return self.instructions[prompt]
        except KeyError:
            raise AlignProError(f"reward 'ifeval': no instructions for the prompt {prompt[:80]!r}; it scores only "
                                f"the prompts it was built with ({len(self.instructions)} prompts), against their "
                                "ORIGINAL text") from None

    def results(self, prompts: Sequence[str], answers: Sequence[str]) -> list[list[InstructionResult]]:
        """Per pair, the verdict on each instruction of the original prompt."""
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        return [follows(x, self.lookup(x), y) for x, y in zip(prompts, answers)]

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        return [fraction_followed(r) for r in self.results(prompts, answers)]
