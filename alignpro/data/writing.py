"""The ``builtin-writing`` prompt set: writing tasks with verifiable IFEval instructions woven into the request.

Two files in ``alignpro.data``:

* ``writing_bases.jsonl``: 440 base writing prompts written for this project (20 categories, 22 each: essays,
  poems, letters, emails, pitches, summaries and rewrites of a short given text, itineraries, stories, speeches,
  reviews, ads, blog posts, cover letters, recipes, dialogues, songs, riddles, FAQs, social posts). A row holds
  ``id`` (``w001``..), ``category``, ``request`` (what the user asks for) and, for summaries and rewrites,
  ``given`` (the short text to work on). :func:`writing_bases` reads them.
* ``builtin_writing.jsonl``: three variants of every base (``key`` ``<base id>-v<0..2>``), each with 1 to 3
  instructions of IFEval's registry phrased in the request, in IFEval's schema (``key``, ``prompt``,
  ``instruction_id_list``, ``kwargs``) plus ``base_id`` and ``category``. ``scripts/make_builtin_writing.py``
  generates it from the bases (and documents the instruction types, phrasings and draws).

Split. Per category, the ``round(0.15 * size)`` base ids whose ``sha256("alignpro-writing-split:" + id)`` hex
digests sort first are ``eval``; the rest are ``train``. A variant goes where its base goes, so no base prompt
(nor its given text) is in both splits, and both splits cover every category.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from alignpro.data.builtin import held_out_ids, take_split
from alignpro.data.files import load_prompt_file
from alignpro.data.records import LoadResult, PromptRecord
from alignpro.data.rules import Rules
from alignpro.errors import AlignProError

WRITING_SOURCE = "builtin-writing"
"""Source name of the set in :func:`alignpro.data.load_prompts` (``builtin-writing[:train|:eval|:all]``)."""
WRITING_EVAL_FRACTION = 0.15
"""Share of each category's base prompts held out for ``split="eval"``."""
BASES_RESOURCE = "writing_bases.jsonl"
PROMPTS_RESOURCE = "builtin_writing.jsonl"
VARIANT_MARK = "-v"
"""A record key is ``<base id>-v<variant>``, e.g. ``w001-v2``."""


@dataclass(frozen=True)
class WritingBase:
    """One base writing prompt, before instructions are attached."""

    id: str
    """``w001``, ``w002``, ... in file order."""
    category: str
    """Kind of writing: ``essay``, ``poem``, ``summary``, ``rewrite``, ..."""
    request: str
    """What the user asks for, one or a few sentences; the instructions are woven into it."""
    given: str | None = None
    """The short text to summarise or rewrite (it follows the request after a blank line), or None."""

    @property
    def text(self) -> str:
        """The base prompt as a user would send it without instructions."""
        return self.request if self.given is None else f"{self.request}\n\n{self.given}"


def _base_from_row(row: Any, line: int) -> WritingBase:
    where = f"alignpro/data/{BASES_RESOURCE}, line {line}"
    if not isinstance(row, dict):
        raise AlignProError(f"{where}: expected a JSON object with id, category, request (and optional given)")
    fields = {name: row.get(name) for name in ("id", "category", "request", "given")}
    for name, value in fields.items():
        if (value is not None or name != "given") and (not isinstance(value, str) or not value.strip()
                                                      or value != value.strip()):
            raise AlignProError(f"{where}: '{name}' must be a non-empty string without surrounding spaces, "
                                f"got {value!r:.60}")
    unknown = set(row) - set(fields)
    if unknown:
        raise AlignProError(f"{where}: unknown keys {sorted(unknown)}; valid keys are {', '.join(fields)}")
    return WritingBase(**fields)


@lru_cache(maxsize=1)
def writing_bases() -> tuple[WritingBase, ...]:
    """The base writing prompts shipped with alignpro, in file order (ids unique)."""
    text = resources.files("alignpro.data").joinpath(BASES_RESOURCE).read_text(encoding="utf-8")
    bases = tuple(_base_from_row(json.loads(line), n) for n, line in enumerate(text.splitlines(), 1) if line)
    ids = [b.id for b in bases]
    if len(set(ids)) != len(ids):
        raise AlignProError(f"alignpro/data/{BASES_RESOURCE}: duplicate ids")
    return bases


def base_id(record_id: str) -> str:
    """The base prompt of a ``builtin-writing`` record: ``w001`` for ``w001-v2``."""
    return record_id.rpartition(VARIANT_MARK)[0] or record_id


def eval_base_ids(bases: Iterable[WritingBase]) -> frozenset[str]:
    """Per category, the ``round(WRITING_EVAL_FRACTION * size)`` (at least 1) ids whose split keys (salt
    ``alignpro-writing-split``) sort first; a category with a single base stays in train (:func:`held_out_ids`)."""
    return held_out_ids(((b.id, b.category) for b in bases), WRITING_EVAL_FRACTION, "alignpro-writing-split")


def _take_split(records: list[PromptRecord], split: str) -> list[PromptRecord]:
    return take_split(records, split, WRITING_SOURCE, lambda: eval_base_ids(writing_bases()), base_id)


def _read(skip_bad: bool = False, rules: Rules | None = None) -> LoadResult:
    """Every record of ``builtin_writing.jsonl``, read with ``rules``' length limits, source ``builtin-writing``."""
    rules = rules or Rules("prompt")
    with resources.as_file(resources.files("alignpro.data").joinpath(PROMPTS_RESOURCE)) as path:
        result = load_prompt_file(path, skip_bad=skip_bad, max_chars=rules.max_chars, max_tokens=rules.max_tokens,
                                  count_tokens=rules.count_tokens)
    result.records = [replace(r, source=WRITING_SOURCE) for r in result.records]
    return result


@lru_cache(maxsize=1)
def _all_records() -> tuple[PromptRecord, ...]:
    return tuple(_read().records)


def builtin_writing_prompts(split: Literal["train", "eval", "all"] = "all") -> list[PromptRecord]:
    """The writing prompts with woven IFEval instructions, in file order (see the module docstring)."""
    return _take_split(list(_all_records()), split)


def load_writing_split(split: str, rules: Rules, skip_bad: bool) -> LoadResult:
    """The records of one split (``train``, ``eval`` or ``all``), read with ``rules``, in file order: the loader of
    the named source ``builtin-writing`` in :data:`alignpro.data.prompts.NAMED_SOURCES`."""
    result = _read(skip_bad, rules)
    result.records = _take_split(result.records, split)
    return result
