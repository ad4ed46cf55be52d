"""Generate ``alignpro/data/builtin_writing.jsonl``: writing tasks with verifiable IFEval instructions woven in.

Every base writing prompt (``alignpro.data.writing.writing_bases()``, 440 written for this project) gets
``VARIANTS`` = 3 variants, keys ``<base id>-v<v>``, each with 1, 2 or 3 instructions (drawn with weights
``COUNT_WEIGHTS``) of IFEval's registry (``if_verifiable.ifeval``). A row holds IFEval's keys ``key``, ``prompt``,
``instruction_id_list`` and ``kwargs``, plus ``base_id`` and ``category``.

What is drawn. The instruction types, their kwargs and the rules for which two can share a prompt are those of
``scripts/make_builtin_ifeval.py`` (imported, not copied): types a ~100-word answer can follow offline
(``ALLOWED``), IFEval's random draws kept only when they fit that budget, IFEval's ``INSTRUCTION_CONFLICTS`` read
both ways and the clashes its table misses (``clash``). Two more limits for writing tasks: ``EXCLUDED_HERE``
(types that do not fit a writing request), and ``combination:repeat_prompt`` only for a base without a given text
whose request has at most ``REPEAT_MAX_WORDS`` words. The variants of a base have different sets of types.

How it is phrased. IFEval's own descriptions are not used. Each type has several phrasings (``phrasings``), some
a clause woven into the request's last sentence ("Write a poem about rain, all in lowercase letters."), some a
sentence after it; which one is drawn per instruction. A phrasing is rendered from the drawn kwargs, so the words
of the prompt state exactly what the checker checks (``repeat_prompt``'s ``prompt_to_repeat`` is the whole text
before its sentence). The prompt is the request with its clauses, the instruction sentences, then the given text
(for summaries and rewrites) after a blank line.

Determinism. Every draw of a variant goes through Python's global ``random`` (IFEval's ``build_description``
draws from it), seeded with ``"alignpro-writing:<key>"``; the output depends on the installed if-verifiable
version (pinned in pyproject.toml).

No overlap with IFEval. ``--ifeval PATH`` (IFEval's ``input_data.jsonl``, a test set) reports, without printing
any IFEval prompt, how many word 8-grams of the generated prompts and bases occur in IFEval's prompts (must be 0;
an end phrase, one of the two fixed phrases of IFEval's registry, is left out of a prompt for this count)
and the largest token-set Jaccard similarity between a generated prompt or base and any IFEval prompt (must stay
below ``MAX_JACCARD``); exit 1 when either fails.

Usage::

    python scripts/make_builtin_writing.py                      # (re)write the shipped file
    python scripts/make_builtin_writing.py --check              # exit 1 if the shipped file is out of date
    python scripts/make_builtin_writing.py --check --ifeval /path/to/ifeval/input_data.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from alignpro.data.writing import VARIANT_MARK, WritingBase, writing_bases

_HERE = Path(__file__).resolve().parent
OUTPUT = _HERE.parent / "alignpro" / "data" / "builtin_writing.jsonl"


def _import_ifeval_builder() -> Any:
    """``scripts/make_builtin_ifeval.py`` as a module: the one definition of the allowed types and clashes."""
    spec = importlib.util.spec_from_file_location("make_builtin_ifeval", _HERE / "make_builtin_ifeval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ifeval_set = _import_ifeval_builder()
Drawn = ifeval_set.Drawn
Args = dict[str, Any]

VARIANTS = 3
"""Variants per base prompt."""
COUNT_WEIGHTS = {1: 2, 2: 2, 3: 1}
"""Instructions per variant -> relative weight of drawing that many."""
SEED_PREFIX = "alignpro-writing"
"""Variant ``<key>`` seeds Python's global ``random`` with ``f"{SEED_PREFIX}:{key}"``."""
MAX_DRAWS = 1000
"""Draws before giving up on one variant's set of types."""
REPEAT_MAX_WORDS = 30
"""``repeat_prompt`` only for requests this short (the answer repeats them inside a ~100-word budget)."""
REPEAT_PROMPT = ifeval_set.REPEAT_PROMPT
EXCLUDED_HERE: dict[str, str] = {
    "detectable_format:constrained_response": "its answer is one of 'My answer is yes/no/maybe.', which a "
                                              "writing task (a poem, a letter, a pitch) cannot be",
}
"""Types of ``ALLOWED`` left out of the writing set, and why."""
TYPES = tuple(sorted(set(ifeval_set.ALLOWED) - set(EXCLUDED_HERE)))
"""Instruction types drawn into the writing set."""
NGRAM = 8
"""Word n-grams shared with IFEval's prompts must number 0 at this n."""
MAX_JACCARD = 0.5
"""Token-set Jaccard similarity to every IFEval prompt must stay below this."""


# ---------------------------------------------------------------------------------------------------------------
# Phrasings: one list per type, rendered from the kwargs
# ---------------------------------------------------------------------------------------------------------------


class Phrase(NamedTuple):
    """One way to say an instruction: a ``clause`` woven into the request's last sentence, or a ``sentence``."""

    kind: str
    text: str


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_ORDINALS = ("zeroth", "first", "second", "third", "fourth", "fifth")


def _count(n: int, noun: str) -> str:
    """``one paragraph``, ``three paragraphs``."""
    return f"{_NUMBER_WORDS[n]} {noun}" + ("" if n == 1 else "s")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{_NUMBER_WORDS[n]} times")


def _quoted_and(words: Sequence[str], joiner: str = "and") -> str:
    """``"a" and "b"`` (or ``"a", "b" and "c"``)."""
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {joiner} {quoted[-1]}"


def _clause(text: str) -> Phrase:
    return Phrase("clause", text)


def _sentence(text: str) -> Phrase:
    return Phrase("sentence", text)


def _keyword_frequency(a: Args) -> list[Phrase]:
    word, n = a["keyword"], a["frequency"]
    if a["relation"] == "at least":
        return [_clause(f'using the word "{word}" at least {_times(n)}'),
                _sentence(f'Make sure the word "{word}" shows up {_times(n)} or more.'),
                _sentence(f'Work the word "{word}" in at least {_times(n)}.')]
    if n == 1:
        return [_clause(f'without ever using the word "{word}"'),
                _sentence(f'Do not use the word "{word}" even once.')]
    return [_clause(f'using the word "{word}" fewer than {_times(n)}'),
            _sentence(f'The word "{word}" may appear at most {_times(n - 1)}.')]


def _paragraphs(a: Args) -> list[Phrase]:
    n = a["num_paragraphs"]
    if n == 1:
        return [_clause("as one single paragraph with no *** dividers"),
                _sentence("Keep it to a single paragraph and do not use any *** dividers.")]
    return [_clause(f"in {_count(n, 'paragraph')} separated by *** lines"),
            _sentence(f"Split it into {_count(n, 'paragraph')}, with a line of three asterisks (***) between "
                      "each one."),
            _sentence(f"I want exactly {_count(n, 'paragraph')}, and put *** on its own line between them.")]


def _nth_paragraph(a: Args) -> list[Phrase]:
    n, k, word = a["num_paragraphs"], a["nth_paragraph"], a["first_word"]
    if n == 1:
        return [_clause(f'as one paragraph that begins with the word "{word}"'),
                _sentence(f'Write a single paragraph (no blank lines) and start it with the word "{word}".')]
    return [_clause(f"in {_count(n, 'paragraph')} separated by blank lines, with the {_ORDINALS[k]} one opening "
                    f'on the word "{word}"'),
            _sentence(f"Use exactly {_count(n, 'paragraph')} separated by empty lines, and begin paragraph {k} "
                      f'with the word "{word}".'),
            _sentence(f"Give me {_count(n, 'paragraph')} with a blank line between each; the {_ORDINALS[k]} "
                      f'has to start with "{word}".')]


def _sections(a: Args) -> list[Phrase]:
    n, marker = a["num_sections"], a["section_spliter"]
    labels = _quoted_and([f"{marker} {i}" for i in range(1, n + 1)])
    return [_clause(f"divided into {_count(n, 'section')}, each headed {marker} X where X is its number"),
            _sentence(f"Organise it into {_count(n, 'section')} and start each with its label: {labels}."),
            _sentence(f"Give it {_count(n, 'section')} under the headings {labels}.")]


PHRASINGS: dict[str, Callable[[Args], list[Phrase]]] = {
    "keywords:existence": lambda a: [
        _clause(f"working in the words {_quoted_and(a['keywords'])}"),
        _clause(f"making sure to mention {_quoted_and(a['keywords'])} somewhere"),
        _sentence(f"Somewhere in it, use the words {_quoted_and(a['keywords'])}."),
        _sentence(f"The words {_quoted_and(a['keywords'])} both need to appear in your reply.")],
    "keywords:frequency": _keyword_frequency,
    "keywords:forbidden_words": lambda a: [
        _clause(f"without using the words {_quoted_and(a['forbidden_words'], 'or')}"),
        _clause(f"avoiding the words {_quoted_and(a['forbidden_words'])} entirely"),
        _sentence(f"Keep the words {_quoted_and(a['forbidden_words'])} out of it.")],
    "keywords:letter_frequency": lambda a: [
        _clause(f'with the letter "{a["letter"]}" appearing at least {_times(a["let_frequency"])}'),
        _sentence(f'Use the letter "{a["letter"]}" {_times(a["let_frequency"])} or more in total.'),
        _sentence(f'The letter {a["letter"]} must show up at least {_times(a["let_frequency"])} in your reply.')],
    "length_constraints:number_words": lambda a: [
        _clause(f"in fewer than {a['num_words']} words"),
        _clause(f"keeping it under {a['num_words']} words"),
        _sentence(f"Stay below {a['num_words']} words."),
        _sentence(f"Your whole reply should be shorter than {a['num_words']} words.")],
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_content:number_placeholders": lambda a: [
        _clause(f"leaving at least {_count(a['num_placeholders'], 'placeholder')} in square brackets like [name]"),
        _sentence(f"Include at least {_count(a['num_placeholders'], 'fill-in-the-blank spot')} written in square "
                  "brackets, such as [date]."),
        _sentence(f"Put {_NUMBER_WORDS[a['num_placeholders']]} or more bracketed placeholders like [city] in it "
                  "so I can fill them in later.")],
    "detectable_content:postscript": lambda a: [
        _clause(f'closing with a short postscript that opens with "{a["postscript_marker"]}"'),
        _sentence(f'Finish with a short postscript beginning "{a["postscript_marker"]}".'),
        _sentence(f'Add a note at the very end that begins with "{a["postscript_marker"]}".')],
    "detectable_format:number_bullet_lists": lambda a: [
        _clause(f"with exactly {_count(a['num_bullets'], 'markdown bullet point')} (lines starting with *)"),
        _sentence(f"Include exactly {_count(a['num_bullets'], 'bullet point')}, each on its own line "
                  "starting with an asterisk."),
        _sentence(f"Use {_count(a['num_bullets'], 'bullet point')}, no more and no fewer, written as markdown "
                  "lines beginning with *.")],
    "detectable_format:number_highlighted_sections": lambda a: [
        _clause(f"highlighting at least {_count(a['num_highlights'], 'part')} with markdown like *this*"),
        _sentence(f"Put at least {_count(a['num_highlights'], 'phrase')} in italics with single asterisks, "
                  "like *this one*."),
        _sentence(f"Mark at least {_count(a['num_highlights'], 'key section')} as *highlighted text* "
                  "using markdown.")],
    "detectable_format:multiple_sections": _sections,
    "detectable_format:json_format": lambda a: [
        _clause("returned entirely as valid JSON"),
        _sentence("Format the whole reply as JSON."),
        _sentence("Give me the output as one JSON object and nothing else (markdown code fences are fine).")],
    "detectable_format:title": lambda a: [
        _clause("with a title wrapped in double angle brackets like <<title>>"),
        _sentence("Give it a title inside double angular brackets, for example <<My Title>>."),
        _sentence("Put the title at the top between << and >>.")],
    "combination:two_responses": lambda a: [
        _clause("in two different versions divided by a line of ******"),
        _sentence("Give me two different versions, separated by a line of six asterisks (******)."),
        _sentence("I'd like two alternative takes on this; put ****** between them and nothing else.")],
    "combination:repeat_prompt": lambda a: [
        _sentence("Before you answer, repeat my request above word for word, then write your reply (leave this "
                  "sentence out of the repeat)."),
        _sentence("Start by copying out the request exactly as I wrote it, excluding this sentence, and then "
                  "answer it.")],
    "startend:end_checker": lambda a: [
        _clause(f'finishing with the words "{a["end_phrase"]}" and nothing after them'),
        _sentence(f'End your reply with the exact phrase "{a["end_phrase"]}" and nothing after it.'),
        _sentence(f'The very last words should be "{a["end_phrase"]}".')],
    "startend:quotation": lambda a: [
        _clause("enclosed from start to finish in double quotes"),
        _sentence("Wrap the entire reply in double quotation marks."),
        _sentence("Put the whole thing inside one pair of double quotation marks.")],
    "change_case:english_capital": lambda a: [
        _clause("in all caps"),
        _sentence("Write everything in capital letters."),
        _sentence("Use only uppercase English letters for the entire answer.")],
    "change_case:english_lowercase": lambda a: [
        _clause("all in lowercase letters"),
        _sentence("Use no capital letters anywhere."),
        _sentence("Write it all in lowercase, with no capitals at all.")],
    "punctuation:no_comma": lambda a: [
        _clause("without using a single comma"),
        _sentence("Do not use any commas."),
        _sentence("Avoid commas completely; use full stops or dashes instead.")],
}
"""Instruction type -> the ways to say it for given kwargs (each names every kwarg's value exactly)."""


def phrasings(instruction_id: str, kwargs: Args) -> list[Phrase]:
    """The phrasings of one instruction with these kwargs, in a fixed order."""
    return PHRASINGS[instruction_id](kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Weaving the phrases into the request
# ---------------------------------------------------------------------------------------------------------------


def weave(request: str, phrases: Sequence[Phrase]) -> str:
    """The request with the clauses woven into its last sentence (before its final ``.``/``?``/``!``), followed
    by the sentences; a request without final punctuation gets a full stop once something follows it."""
    clauses = [p.text for p in phrases if p.kind == "clause"]
    sentences = [p.text for p in phrases if p.kind == "sentence"]
    body, end = (request[:-1], request[-1]) if request[-1] in ".?!" else (request, ".")
    if clauses:
        joined = clauses[0] if len(clauses) == 1 else f"{', '.join(clauses[:-1])} and {clauses[-1]}"
        body = f"{body}, {joined}"
    head = body + end if (clauses or sentences or request[-1] in ".?!") else request
    return " ".join([head, *sentences])


# ---------------------------------------------------------------------------------------------------------------
# Drawing a variant
# ---------------------------------------------------------------------------------------------------------------


def _types_for(base: WritingBase) -> list[str]:
    """The types a variant of this base may draw (repeat_prompt only for a short request with no given text)."""
    repeatable = base.given is None and len(base.request.split()) <= REPEAT_MAX_WORDS
    return [t for t in TYPES if t != REPEAT_PROMPT or repeatable]


def draw_instructions(base: WritingBase, count: int, taken: Collection[frozenset[str]] = ()) -> list[Drawn]:
    """``count`` instructions of different types, no two clashing, whose set of types is not in ``taken``;
    repeat_prompt last (its kwargs are set once the text before it is known)."""
    types = _types_for(base)
    for _ in range(MAX_DRAWS):
        ids = random.sample(types, count)
        if frozenset(ids) in taken or any(ifeval_set.registry_conflict(a, b)
                                          for i, a in enumerate(ids) for b in ids[i + 1:]):
            continue
        drawn = [ifeval_set.draw_instruction(i, base.request) for i in ids]
        if all(ifeval_set.clash(a, b) is None for i, a in enumerate(drawn) for b in drawn[i + 1:]):
            return sorted(drawn, key=lambda d: d.id == REPEAT_PROMPT)
    raise RuntimeError(f"no {count} compatible instructions in {MAX_DRAWS} draws for base {base.id}")


def make_variant(base: WritingBase, variant: int, taken: Collection[frozenset[str]] = ()) -> dict[str, Any]:
    """Variant ``variant`` of a base, as one row of IFEval's schema plus ``base_id``/``category``."""
    key = f"{base.id}{VARIANT_MARK}{variant}"
    random.seed(f"{SEED_PREFIX}:{key}")
    count = random.choices(list(COUNT_WEIGHTS), weights=list(COUNT_WEIGHTS.values()))[0]
    drawn = draw_instructions(base, count, taken)
    kwargs = [dict(d.kwargs) for d in drawn]
    phrases = [random.choice(phrasings(d.id, a)) for d, a in zip(drawn, kwargs)]
    if drawn[-1].id == REPEAT_PROMPT:  # the request to repeat is everything before the repeat sentence
        before = weave(base.request, phrases[:-1])
        kwargs[-1] = {"prompt_to_repeat": before}
        prompt = f"{before} {phrases[-1].text}"
    else:
        prompt = weave(base.request, phrases)
    if base.given is not None:
        prompt = f"{prompt}\n\n{base.given}"
    return {"key": key, "base_id": base.id, "category": base.category, "prompt": prompt,
            "instruction_id_list": [d.id for d in drawn], "kwargs": kwargs}


def make_rows(bases: Sequence[WritingBase]) -> list[dict[str, Any]]:
    """``VARIANTS`` rows per base, in base order, no two variants of a base with the same set of types; leaves
    the global RNG as it found it (``make_builtin_ifeval.py``'s ``make_rows`` with this set's variants)."""
    return ifeval_set.make_rows(bases, make_variant, VARIANTS)


def generate() -> str:
    """The full text of ``builtin_writing.jsonl``, freshly generated from the base prompts."""
    return "".join(json.dumps(row) + "\n" for row in make_rows(writing_bases()))


# ---------------------------------------------------------------------------------------------------------------
# No overlap with IFEval (a test set: counted, never printed)
# ---------------------------------------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, apostrophes)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def ngrams(words: Sequence[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


class Overlap(NamedTuple):
    """How close our texts come to a reference set's prompts."""

    shared_ngrams: int
    """Distinct word ``NGRAM``-grams of our texts that occur in a reference prompt."""
    max_jaccard: float
    """Largest token-set Jaccard similarity between one of our texts and one reference prompt."""
    closest: str
    """Which of our texts reaches ``max_jaccard`` (its key or base id; the reference text is not named)."""

    @property
    def ok(self) -> bool:
        return self.shared_ngrams == 0 and self.max_jaccard < MAX_JACCARD


def overlap(ours: Iterable[tuple[str, str]], reference: Iterable[str]) -> Overlap:
    """Overlap of ``(name, text)`` pairs with the reference texts."""
    reference_tokens = [tokens(text) for text in reference]
    reference_grams = set().union(*(ngrams(words) for words in reference_tokens))
    reference_sets = [set(words) for words in reference_tokens]
    shared, best, closest = set(), 0.0, ""
    for name, text in ours:
        words = tokens(text)
        shared |= ngrams(words) & reference_grams
        own = set(words)
        score = max((jaccard(own, other) for other in reference_sets), default=0.0)
        if score > best:
            best, closest = score, name
    return Overlap(len(shared), best, closest)


def _without_end_phrase(row: dict[str, Any]) -> str:
    """The prompt without its end phrase: one of the registry's two fixed options, which IFEval's prompts quote
    as they are (the words around it are ours and still count)."""
    text = row["prompt"]
    for kwargs in row["kwargs"]:
        if "end_phrase" in kwargs:
            text = text.replace(kwargs["end_phrase"], " ")
    return text


def ifeval_overlap(path: Path, rows: Sequence[dict[str, Any]], bases: Sequence[WritingBase]) -> Overlap:
    """Overlap of the generated prompts (end phrases left out, :func:`_without_end_phrase`) and the base prompts
    with the prompts of IFEval's ``input_data.jsonl``."""
    reference = [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    ours = [(row["key"], _without_end_phrase(row)) for row in rows] + [(base.id, base.text) for base in bases]
    return overlap(ours, reference)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the shipped file differs from a fresh generation")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"file to write or check (default: {OUTPUT})")
    parser.add_argument("--ifeval", type=Path, default=None,
                        help="IFEval's input_data.jsonl: also check that no prompt overlaps it (exit 1 if one does)")
    args = parser.parse_args(argv)
    text = generate()
    status = 0
    if args.check:
        current = args.out.read_bytes() if args.out.is_file() else None
        if current != text.encode("utf-8"):
            print(f"{args.out} is {'missing' if current is None else 'out of date'}; "
                  "run python scripts/make_builtin_writing.py", file=sys.stderr)
            status = 1
        else:
            print(f"{args.out} is up to date ({text.count(chr(10))} rows)")
    else:
        args.out.write_bytes(text.encode("utf-8"))
        print(f"wrote {text.count(chr(10))} rows to {args.out}")
    if args.ifeval is not None:
        if not args.ifeval.is_file():
            print(f"--ifeval {args.ifeval}: file not found; give IFEval's input_data.jsonl", file=sys.stderr)
            return 2
        rows = [json.loads(line) for line in text.splitlines()]
        found = ifeval_overlap(args.ifeval, rows, writing_bases())
        print(f"overlap with {args.ifeval}: {found.shared_ngrams} shared word {NGRAM}-grams (must be 0); "
              f"max token Jaccard {found.max_jaccard:.3f} at {found.closest} (must be < {MAX_JACCARD})")
        status = status or (0 if found.ok else 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
