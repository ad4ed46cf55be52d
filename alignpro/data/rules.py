"""The bad-row rules every loader applies, and how a loader counts or raises on bad rows.

A row is bad when its text field is

* missing or null                                  -> reason ``missing_field``
* not a string                                     -> reason ``not_a_string``
* empty or whitespace only                         -> reason ``empty``
* longer than ``max_chars`` characters             -> reason ``too_long``
* longer than ``max_tokens`` by ``count_tokens``   -> reason ``too_many_tokens``

or when its system field (if one is asked for) holds something other than a string or null (``bad_system``).
A JSONL line that is not valid JSON (``invalid_json``) or not a JSON object (``not_an_object``) is bad too.
By default the first bad row raises :class:`AlignProError` naming the file (or dataset), the line (or row
index), the field and the problem; with ``skip_bad=True`` bad rows are skipped and counted per reason.

Prompt texts are stripped of surrounding whitespace; an empty or null system prompt becomes ``None``.

IFEval instructions. A JSONL row or a Hugging Face row may carry verifiable instructions in IFEval's own schema:
``instruction_id_list`` (registry ids such as ``punctuation:no_comma``) and ``kwargs`` (one dict per id, the
arguments of that checker's ``build_description``; null values are dropped, as IFEval's evaluation does). They
become the record's :class:`Instruction` tuple; a row without ``instruction_id_list`` (or with null there) has
none. The row is bad (reason ``bad_instructions``) when either field is not a list, the two lengths differ, an id
is not in IFEval's registry, a kwargs entry is not a dict, or the registry's checker rejects the kwargs. IFEval's
``key`` is the record id when a row has no ``id``. CSV files cannot hold these lists and carry no instructions.

:class:`BadRow`, :class:`RowCounter`, :func:`row_keys` and :func:`row_id` serve the preference-pair loaders of
:mod:`alignpro.data.preferences` too.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from alignpro.data.records import Instruction, LoadResult, PromptRecord
from alignpro.errors import AlignProError

IFEVAL_FIELDS = ("instruction_id_list", "kwargs")
"""The columns of IFEval's schema that carry a row's instructions."""
SKIP_BAD_HINT = ("Fix or remove the row, or skip and count bad rows instead with the setting skip_bad "
                 "(--skip-bad) of a command that has it")
"""What the first bad row's error suggests (a loader whose every caller has ``--skip-bad`` names that flag)."""


class BadRow(Exception):
    """A row broke a rule. ``reason`` is the key counted in ``LoadResult.skipped_reasons``."""

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(problem)
        self.reason = reason
        self.problem = problem


def row_keys(row: Mapping[str, Any]) -> str:
    names = [str(k) for k in row if k is not None]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "none"


@dataclass(frozen=True)
class Rules:
    """What makes a row good: the text field, optional system field, and length limits."""

    field: str
    system_field: str | None = None
    max_chars: int | None = None
    max_tokens: int | None = None
    count_tokens: Callable[[str], int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field:
            raise AlignProError(f"field must be a non-empty column name, got {self.field!r}")
        if self.system_field is not None and (not isinstance(self.system_field, str) or not self.system_field):
            raise AlignProError(f"system_field must be a non-empty column name or None, got {self.system_field!r}")
        if self.max_chars is not None and (not is_int(self.max_chars) or self.max_chars < 1):
            raise AlignProError(f"max_chars must be a positive integer or None, got {self.max_chars!r}")
        if self.max_tokens is not None:
            if not is_int(self.max_tokens) or self.max_tokens < 1:
                raise AlignProError(f"max_tokens must be a positive integer or None, got {self.max_tokens!r}")
            if self.count_tokens is None:
                raise AlignProError("max_tokens needs count_tokens (a callable str -> int, e.g. a tokenizer's length)")
        elif self.count_tokens is not None:
            raise AlignProError("count_tokens was given without max_tokens; set max_tokens to the token limit")

    def extract(self, row: Mapping[str, Any]) -> tuple[str, str | None]:
        """``(text, system)`` of a good row; raises :class:`BadRow` naming the field, problem and fix."""
        name = self.field
        valid = f"each row needs a non-empty string in '{name}'"
        if name not in row:
            raise BadRow("missing_field", f"field '{name}' is missing (fields in this row: {row_keys(row)}); {valid}, "
                                           "or set field to the key that holds the prompt")
        value = row[name]
        if value is None:
            raise BadRow("missing_field", f"field '{name}' is null; {valid}")
        if not isinstance(value, str):
            raise BadRow("not_a_string",
                          f"field '{name}' must be a string, got {type(value).__name__} {value!r:.60}; {valid}")
        text = value.strip()
        if not text:
            raise BadRow("empty", f"field '{name}' is empty or whitespace only; {valid}")
        if self.max_chars is not None and len(text) > self.max_chars:
            raise BadRow("too_long", f"field '{name}' has {len(text)} characters, more than "
                                      f"max_chars={self.max_chars}; shorten it or raise max_chars")
        if self.max_tokens is not None and self.count_tokens is not None:
            n_tokens = self.count_tokens(text)
            if n_tokens > self.max_tokens:
                raise BadRow("too_many_tokens", f"field '{name}' has {n_tokens} tokens, more than "
                                                 f"max_tokens={self.max_tokens}; shorten it or raise max_tokens")
        system = None
        if self.system_field is not None:
            raw = row.get(self.system_field)
            if raw is not None and not isinstance(raw, str):
                raise BadRow("bad_system", f"system field '{self.system_field}' must be a string or null, "
                                            f"got {type(raw).__name__} {raw!r:.60}")
            system = (raw.strip() or None) if raw else None
        return text, system


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RowCounter:
    """A loader's bad rows: the first one raises (naming where it is and ``hint``), or with ``skip_bad`` each is
    counted by reason; and the duplicates it dropped."""

    def __init__(self, skip_bad: bool, hint: str = SKIP_BAD_HINT) -> None:
        self.skip_bad, self.hint = skip_bad, hint
        self.reasons: Counter[str] = Counter()
        self.duplicates = 0

    def bad(self, where: str, bad: BadRow) -> None:
        if not self.skip_bad:
            raise AlignProError(f"{where}: {bad.problem}. {self.hint}") from None
        self.reasons[bad.reason] += 1

    def counts(self) -> dict[str, Any]:
        """The :class:`LoadCounts` fields."""
        return {"skipped": sum(self.reasons.values()), "skipped_reasons": dict(self.reasons),
                "duplicates": self.duplicates}


def jsonl_rows(lines: Iterable[str], label: str, counter: RowCounter) -> Iterator[tuple[int, str, Any]]:
    """``(line number, where, parsed JSON)`` of each non-blank line of a JSONL file named ``label`` in messages; a
    line that is not valid JSON is a bad row (``invalid_json``) of ``counter``."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{label}, line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            counter.bad(where, BadRow("invalid_json", f"not valid JSON ({err.msg} at column {err.colno}); "
                                                      "each line must hold one JSON object"))
            continue
        yield line_no, where, row


class PromptCollector(RowCounter):
    """Keeps good records; raises on the first bad row, or counts it when ``skip_bad``."""

    def __init__(self, skip_bad: bool) -> None:
        super().__init__(skip_bad)
        self.records: list[PromptRecord] = []

    def result(self, what: str) -> LoadResult:
        result = LoadResult(records=self.records, **self.counts())
        if not result.records:
            raise AlignProError(f"{what}: no usable prompts ({result.summary()})")
        return result


def row_id(row: Mapping[str, Any], fallback: str) -> str:
    for name in ("id", "key"):  # IFEval names its ids `key`
        value = row.get(name)
        if (isinstance(value, str) and value.strip()) or is_int(value):
            return str(value).strip()
    return fallback


def row_category(row: Mapping[str, Any]) -> str | None:
    value = row.get("category")
    return (value.strip() or None) if isinstance(value, str) else None


def _ifeval_registry() -> Mapping[str, Any]:
    """IFEval's ``INSTRUCTION_DICT`` (id -> checker class), imported only when a row has instructions."""
    try:
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError:
        raise AlignProError("reading IFEval instructions (an 'instruction_id_list' field) needs the "
                            "'if-verifiable' package (pip install if-verifiable)") from None
    return INSTRUCTION_DICT


def row_instructions(row: Mapping[str, Any]) -> tuple[Instruction, ...]:
    """The row's IFEval instructions (``instruction_id_list`` + ``kwargs``), () when it has none.

    Raises :class:`BadRow` ``bad_instructions`` naming the problem and what would be valid."""
    ids, kwargs_list = (row.get(name) for name in IFEVAL_FIELDS)
    if ids is None:
        return ()
    if not isinstance(ids, list):
        raise BadRow("bad_instructions", f"'instruction_id_list' must be a list of IFEval instruction ids, "
                                          f"got {type(ids).__name__} {ids!r:.60}")
    if not isinstance(kwargs_list, list):
        raise BadRow("bad_instructions", f"'kwargs' must be a list with one dict per instruction id ({{}} for "
                                          f"none), got {type(kwargs_list).__name__} {kwargs_list!r:.60}")
    if len(ids) != len(kwargs_list):
        raise BadRow("bad_instructions", f"'instruction_id_list' has {len(ids)} ids but 'kwargs' has "
                                          f"{len(kwargs_list)} entries; give one kwargs dict per id ({{}} for none)")
    registry = _ifeval_registry()
    return tuple(_instruction(position, instruction_id, kwargs, registry)
                 for position, (instruction_id, kwargs) in enumerate(zip(ids, kwargs_list)))


def _instruction(position: int, instruction_id: Any, kwargs: Any, registry: Mapping[str, Any]) -> Instruction:
    """One checked instruction; ``position`` is its 0-based index in the row's lists."""
    if not isinstance(instruction_id, str) or instruction_id not in registry:
        raise BadRow("bad_instructions", f"'instruction_id_list'[{position}] is {instruction_id!r}, not an "
                                          "instruction of IFEval's registry (if_verifiable.ifeval."
                                          f"instructions_registry.INSTRUCTION_DICT); valid ids: "
                                          f"{', '.join(sorted(registry))}")
    if not isinstance(kwargs, dict):
        raise BadRow("bad_instructions", f"'kwargs'[{position}] (for {instruction_id}) must be a dict of "
                                          f"build_description arguments ({{}} for none), got "
                                          f"{type(kwargs).__name__} {kwargs!r:.60}")
    try:
        instruction = Instruction.from_kwargs(instruction_id, kwargs)
    except (TypeError, ValueError) as err:  # keys that are not strings, values that are not JSON
        raise BadRow("bad_instructions", f"'kwargs'[{position}] (for {instruction_id}) is not a JSON object: "
                                          f"{err}") from None
    _check_builds(registry[instruction_id], instruction, position)
    return instruction


def _check_builds(checker_class: Any, instruction: Instruction, position: int) -> None:
    """Raise :class:`BadRow` unless IFEval's checker accepts the kwargs, as its evaluation will call it."""
    state = random.getstate()  # build_description draws absent kwargs from the global RNG: leave that untouched
    try:
        checker_class(instruction.id).build_description(**instruction.kwargs)
    except Exception as err:  # noqa: BLE001 - library boundary: IFEval raises TypeError, ValueError, ...
        raise BadRow("bad_instructions", f"IFEval's {instruction.id} checker rejects 'kwargs'[{position}] "
                                          f"{instruction.kwargs_json:.120} ({type(err).__name__}: {err})") from None
    finally:
        random.setstate(state)


def check_sample(n: int | None, seed: int) -> None:
    if n is not None and (not is_int(n) or n < 1):
        raise AlignProError(f"n must be a positive integer or None (all prompts), got {n!r}")
    if not is_int(seed):
        raise AlignProError(f"seed must be an integer, got {seed!r}")


def sample_records(records: list[PromptRecord], n: int | None, seed: int) -> list[PromptRecord]:
    """A seeded sample of n records (all if n is None or too large), kept in source order."""
    if n is None or n >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]
