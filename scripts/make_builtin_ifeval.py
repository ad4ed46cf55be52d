"""Generate ``alignpro/data/builtin_ifeval.jsonl``: the builtin prompts with verifiable IFEval instructions.

Every builtin prompt (``builtin_prompts("all")``) gets ``VARIANTS`` = 4 variants, ids ``<base id>-if<v>``, each
with 1 or 2 instructions from IFEval's registry (``if_verifiable.ifeval``). A row holds ``id``, ``base_id``,
``category`` and IFEval's own keys ``prompt``, ``instruction_id_list`` and ``kwargs``, so
``alignpro.data.load_prompts("builtin-ifeval")`` reads it like any IFEval file. The prompt is the base prompt,
a space, and the instructions' descriptions joined by spaces.

Answer budget. π_F answers in about 128 tokens, roughly 90-100 English words. An instruction type is in
``ALLOWED`` only if an answer of that length can follow it, and its checker must work offline (no nltk data
download). IFEval draws its numbers for essays of hundreds of words (up to 500 words, 5 paragraphs, 5 sections),
so ``ALLOWED`` also says which random draws to keep: a draw that does not fit the budget is drawn again
(rejection sampling, so kept values follow IFEval's own distribution restricted to the budget). ``EXCLUDED``
says why each other registry type is left out; together they cover the whole registry.

The variants of one base prompt have different sets of instruction types. Two instructions of one variant are
different types that do not conflict: not in IFEval's
``INSTRUCTION_CONFLICTS`` (either direction), and not one of the clashes IFEval's table misses (see
``clash``): a word one requires and the other forbids, a section marker that the case change cannot write, and a
repeated request that has commas under ``punctuation:no_comma``.

Determinism. IFEval's ``build_description()`` draws from Python's global ``random``, so every draw of a variant
goes through it, seeded with ``"alignpro-ifeval:<id>"`` (string seeds hash the same in every process). The
output depends on the installed if-verifiable version (its word list and draws): pin it.

Usage::

    python scripts/make_builtin_ifeval.py            # (re)write the shipped file
    python scripts/make_builtin_ifeval.py --check    # exit 1 if the shipped file differs from a fresh generation
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT

from alignpro.data import PromptRecord, builtin_prompts

VARIANTS = 4
"""Variants per builtin prompt."""
SEED_PREFIX = "alignpro-ifeval"
"""Variant ``<id>`` seeds Python's global ``random`` with ``f"{SEED_PREFIX}:{id}"``."""
MAX_DRAWS = 1000
"""Draws before giving up on one instruction (or one pair); the limits below keep about 1 draw in 8 or more."""
OUTPUT = Path(__file__).resolve().parent.parent / "alignpro" / "data" / "builtin_ifeval.jsonl"

Args = dict[str, Any]


def _always(args: Args) -> bool:
    return True


ALLOWED: dict[str, Callable[[Args], bool]] = {
    # instruction id                                keep a random draw when ...               IFEval draws
    "keywords:existence": _always,                                                          # 2 listed words
    "keywords:frequency": lambda a: a["frequency"] <= 3,                                    # 1-3, either relation
    "keywords:forbidden_words": _always,                                                    # 2 listed words
    # "less than N" is unfollowable for a common letter (100 words hold ~50 e's) and empty for a rare one
    "keywords:letter_frequency": lambda a: a["let_relation"] == "at least" and a["let_frequency"] <= 5,  # 1-10
    # "at least N" words (N >= 100) does not fit; "less than N" with N <= 200 does
    "length_constraints:number_words": lambda a: a["relation"] == "less than" and a["num_words"] <= 200,  # 100-500
    "length_constraints:number_paragraphs": lambda a: a["num_paragraphs"] <= 3,             # 1-5
    # IFEval may draw paragraph num_paragraphs + 1, which no answer can follow
    "length_constraints:nth_paragraph_first_word":
        lambda a: a["num_paragraphs"] <= 3 and a["nth_paragraph"] <= a["num_paragraphs"],  # 1-5, nth 1-(n+1)
    "detectable_content:number_placeholders": lambda a: a["num_placeholders"] <= 3,         # 1-4
    "detectable_content:postscript": _always,                                               # P.S. or P.P.S
    "detectable_format:number_bullet_lists": lambda a: a["num_bullets"] <= 4,               # 1-5
    "detectable_format:constrained_response": _always,                                      # no kwargs
    "detectable_format:number_highlighted_sections": lambda a: a["num_highlights"] <= 3,    # 1-4
    "detectable_format:multiple_sections": lambda a: a["num_sections"] <= 3,                # 1-5
    "detectable_format:json_format": _always,                                               # no kwargs
    "detectable_format:title": _always,                                                     # no kwargs
    "combination:two_responses": _always,                                                   # two ~50-word answers
    "combination:repeat_prompt": _always,                     # prompt_to_repeat = the base prompt (<= 19 words)
    "startend:end_checker": _always,                                                        # 2 listed phrases
    "startend:quotation": _always,                                                          # no kwargs
    "change_case:english_capital": _always,                                                 # no kwargs
    "change_case:english_lowercase": _always,                                               # no kwargs
    "punctuation:no_comma": _always,                                                        # no kwargs
}
"""Instruction types a ~100-word answer can follow offline, and which of IFEval's random draws fit that budget."""

EXCLUDED: dict[str, str] = {
    "length_constraints:number_sentences": "its checker needs nltk's punkt data, downloaded at run time",
    "change_case:capital_word_frequency": "its checker needs nltk's punkt_tab data (word_tokenize)",
    "language:response_language": "a 135M English model cannot answer in another language, and langdetect's "
                                  "verdict on short text is random",
}
"""Registry types left out, and why."""

REPEAT_PROMPT = "combination:repeat_prompt"
_CASE_CHANGES = {"change_case:english_capital": str.upper, "change_case:english_lowercase": str.lower}


class Drawn(NamedTuple):
    """One drawn instruction: registry id, build_description kwargs (nulls dropped) and its description."""

    id: str
    kwargs: Args
    description: str


# ---------------------------------------------------------------------------------------------------------------
# Which instructions can share a prompt
# ---------------------------------------------------------------------------------------------------------------


def registry_conflict(a: str, b: str) -> bool:
    """IFEval's own table, read both ways (it lists some conflicts under one id only)."""
    return b in INSTRUCTION_CONFLICTS.get(a, ()) or a in INSTRUCTION_CONFLICTS.get(b, ())


def _required_words(instruction: Drawn) -> set[str]:
    """Lower-case words the answer must contain to follow the instruction."""
    args = instruction.kwargs
    if instruction.id == "keywords:existence":
        return {w.lower() for w in args["keywords"]}
    if instruction.id == "keywords:frequency" and args["relation"] == "at least":
        return {args["keyword"].lower()}
    if instruction.id == "length_constraints:nth_paragraph_first_word":
        return {args["first_word"].lower()}
    if instruction.id == "startend:end_checker":
        return {w.strip("?.!,").lower() for w in args["end_phrase"].split()}
    if instruction.id == "detectable_format:multiple_sections":
        return {args["section_spliter"].lower()}
    return set()


def _forbidden_words(instruction: Drawn) -> set[str]:
    """Lower-case words the answer must not contain to follow the instruction."""
    args = instruction.kwargs
    if instruction.id == "keywords:forbidden_words":
        return {w.lower() for w in args["forbidden_words"]}
    if instruction.id == "keywords:frequency" and args["relation"] == "less than" and args["frequency"] <= 1:
        return {args["keyword"].lower()}
    return set()


def _case_breaks_sections(case: Drawn, sections: Drawn) -> bool:
    """An all-capital (or all-lowercase) answer cannot write a section marker like "Section 1"."""
    change = _CASE_CHANGES.get(case.id)
    if change is None or sections.id != "detectable_format:multiple_sections":
        return False
    marker = sections.kwargs["section_spliter"]
    return change(marker) != marker


def clash(a: Drawn, b: Drawn) -> str | None:
    """Why two drawn instructions cannot both be followed in one answer, or None when they can."""
    if a.id == b.id:
        return "same type twice"
    if registry_conflict(a.id, b.id):
        return "IFEval's INSTRUCTION_CONFLICTS"
    if (_required_words(a) & _forbidden_words(b)) or (_required_words(b) & _forbidden_words(a)):
        return "a word one requires and the other forbids"
    if _case_breaks_sections(a, b) or _case_breaks_sections(b, a):
        return "the case change cannot write the section marker"
    if {a.id, b.id} == {REPEAT_PROMPT, "punctuation:no_comma"}:
        return "the repeated request has commas (no_comma's own description has one)"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------------


def _instruction_args(checker: Any) -> Args:
    """The checker's build_description kwargs, nulls dropped and keys sorted (IFEval's kwargs schema)."""
    args = checker.get_instruction_args() or {}
    return {key: args[key] for key in sorted(args) if args[key] is not None}


def draw_instruction(instruction_id: str, base_prompt: str) -> Drawn:
    """One instruction of this type whose random draw fits the budget (``ALLOWED``), from the global RNG."""
    checker = INSTRUCTION_DICT[instruction_id](instruction_id)
    for _ in range(MAX_DRAWS):
        if instruction_id == REPEAT_PROMPT:
            description = checker.build_description(prompt_to_repeat=base_prompt)
        else:
            description = checker.build_description()
        args = _instruction_args(checker)
        if ALLOWED[instruction_id](args):
            return Drawn(instruction_id, args, description)
    raise RuntimeError(f"{instruction_id}: no draw in {MAX_DRAWS} fits ALLOWED; loosen its limit")


def draw_instructions(base_prompt: str, count: int, taken: Collection[frozenset[str]] = ()) -> list[Drawn]:
    """``count`` instructions of different types, no two clashing, whose set of types is not in ``taken`` (the
    base prompt's earlier variants); repeat_prompt goes last (the "request" to repeat comes first)."""
    types = sorted(ALLOWED)
    for _ in range(MAX_DRAWS):
        ids = random.sample(types, count)
        if frozenset(ids) in taken or any(registry_conflict(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]):
            continue
        drawn = [draw_instruction(instruction_id, base_prompt) for instruction_id in ids]
        if all(clash(a, b) is None for i, a in enumerate(drawn) for b in drawn[i + 1:]):
            return sorted(drawn, key=lambda d: d.id == REPEAT_PROMPT)
    raise RuntimeError(f"no {count} compatible instructions in {MAX_DRAWS} draws for {base_prompt!r}")


def _check_round_trip(instruction: Drawn) -> None:
    """The stored kwargs must rebuild the same description and the same kwargs, as evaluation will rebuild them."""
    checker = INSTRUCTION_DICT[instruction.id](instruction.id)
    description = checker.build_description(**instruction.kwargs)
    if description != instruction.description or _instruction_args(checker) != instruction.kwargs:
        raise RuntimeError(f"{instruction.id}: kwargs {instruction.kwargs} do not rebuild the drawn instruction")


def make_variant(base: PromptRecord, variant: int, taken: Collection[frozenset[str]] = ()) -> dict[str, Any]:
    """Variant ``variant`` of a builtin prompt, as one row of IFEval's schema plus ``id``/``base_id``/``category``;
    its instruction types differ from each set in ``taken``."""
    record_id = f"{base.id}-if{variant}"
    random.seed(f"{SEED_PREFIX}:{record_id}")
    drawn = draw_instructions(base.text, count=random.choice((1, 2)), taken=taken)
    for instruction in drawn:
        _check_round_trip(instruction)
    return {
        "id": record_id,
        "base_id": base.id,
        "category": base.category,
        "prompt": " ".join([base.text, *(d.description for d in drawn)]),
        "instruction_id_list": [d.id for d in drawn],
        "kwargs": [d.kwargs for d in drawn],
    }


def make_rows(prompts: Sequence[Any],
              make: Callable[[Any, int, Collection[frozenset[str]]], dict[str, Any]] = make_variant,
              variants: int = VARIANTS) -> list[dict[str, Any]]:
    """``variants`` rows per prompt, each ``make(prompt, variant, taken)``, in prompt order, no two variants of a
    prompt with the same instruction types; leaves the global RNG as it found it. (``make_builtin_writing.py``
    makes its rows with it, from its own ``make_variant`` and ``VARIANTS``.)"""
    state = random.getstate()
    rows = []
    try:
        for base in prompts:
            taken: list[frozenset[str]] = []
            for variant in range(variants):
                rows.append(make(base, variant, taken))
                taken.append(frozenset(rows[-1]["instruction_id_list"]))
    finally:
        random.setstate(state)
    return rows


def generate() -> str:
    """The full text of ``builtin_ifeval.jsonl``, freshly generated from the builtin prompts."""
    return "".join(json.dumps(row) + "\n" for row in make_rows(builtin_prompts("all")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the shipped file differs from a fresh generation")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"file to write or check (default: {OUTPUT})")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = args.out.read_bytes() if args.out.is_file() else None
        if current != text.encode("utf-8"):
            print(f"{args.out} is {'missing' if current is None else 'out of date'}; "
                  "run python scripts/make_builtin_ifeval.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date ({text.count(chr(10))} rows)")
        return 0
    args.out.write_bytes(text.encode("utf-8"))
    print(f"wrote {text.count(chr(10))} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
