"""Prompt sources: the builtin set, local JSONL/CSV files, and the paper's Hugging Face datasets.

Every loader returns a :class:`LoadResult` of :class:`PromptRecord` and applies the same bad-row rules. A row
is bad when its text field is

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
Which source to read is resolved in one place, :func:`load_prompts`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from alignpro.errors import AlignProError

__all__ = [
    "BUILTIN_EVAL_FRACTION",
    "PAPER_DATASETS",
    "PROMPT_FILE_SUFFIXES",
    "DatasetSpec",
    "LoadResult",
    "PromptRecord",
    "builtin_prompts",
    "load_hf_prompts",
    "load_prompt_file",
    "load_prompts",
]

PROMPT_FILE_SUFFIXES = (".jsonl", ".csv")
"""File suffixes :func:`load_prompt_file` reads (case-insensitive)."""

BUILTIN_EVAL_FRACTION = 0.2
"""Share of each builtin category held out for ``split="eval"``."""

_BUILTIN_RESOURCE = "builtin_prompts.jsonl"
_HF_ROW_CHUNK = 4096  # rows pulled from a `datasets.Dataset` per read


# ---------------------------------------------------------------------------------------------------------------
# Records and results
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptRecord:
    """One user prompt x, as the prompter sees it before rewriting."""

    id: str
    """Stable identifier: the row's ``id`` if it has one, else ``<source name>:<line or row>``."""
    text: str
    """The prompt text (stripped)."""
    system: str | None = None
    """System prompt that goes with the prompt (OpenOrca has one), or None."""
    source: str = ""
    """Where it came from: ``builtin``, a file path, or a Hugging Face hub id."""
    line: int | None = None
    """1-based line number in a file, or 0-based row index in a Hugging Face dataset."""
    category: str | None = None
    """Topic label (builtin prompts, or a ``category`` key/column in a file)."""


@dataclass
class LoadResult:
    """The prompts a loader kept, and what it left out."""

    records: list[PromptRecord]
    """Good prompts, in source order."""
    skipped: int = 0
    """Bad rows skipped (only non-zero with ``skip_bad=True``)."""
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    """Bad rows skipped per reason (``empty``, ``too_long``, ...)."""
    duplicates: int = 0
    """Exact duplicate prompts dropped (Hugging Face datasets only)."""

    def summary(self) -> str:
        """One line for logs: ``228 prompts (skipped 2: empty=1, too_long=1)``."""
        text = f"{len(self.records)} prompts"
        notes = []
        if self.skipped:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped_reasons.items()))
            notes.append(f"skipped {self.skipped}: {reasons}")
        if self.duplicates:
            notes.append(f"{self.duplicates} duplicates dropped")
        return f"{text} ({'; '.join(notes)})" if notes else text


@dataclass(frozen=True)
class DatasetSpec:
    """Where a Hugging Face prompt dataset lives and which columns hold the prompt."""

    hub_id: str
    """Repository id on the Hugging Face hub."""
    split: str
    """Split to read by default."""
    field: str
    """Column holding the user prompt."""
    system_field: str | None = None
    """Column holding a system prompt, if the dataset has one."""
    config: str | None = None
    """Dataset config name passed to ``datasets.load_dataset``, if needed."""


PAPER_DATASETS: dict[str, DatasetSpec] = {
    "ultrafeedback": DatasetSpec(hub_id="openbmb/UltraFeedback", split="train", field="instruction"),
    "helpsteer": DatasetSpec(hub_id="nvidia/HelpSteer", split="train", field="prompt"),
    "orca": DatasetSpec(hub_id="Open-Orca/OpenOrca", split="train", field="question", system_field="system_prompt"),
}
"""The three prompt datasets of the Align-Pro paper's experiments, by short name."""


# ---------------------------------------------------------------------------------------------------------------
# Bad-row rules, shared by every loader
# ---------------------------------------------------------------------------------------------------------------


class _BadRow(Exception):
    """Internal: a row broke a rule. ``reason`` is the key counted in ``LoadResult.skipped_reasons``."""

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(problem)
        self.reason = reason
        self.problem = problem


def _keys(row: Mapping[str, Any]) -> str:
    names = [str(k) for k in row if k is not None]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "none"


@dataclass(frozen=True)
class _Rules:
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
        if self.max_chars is not None and (not _is_int(self.max_chars) or self.max_chars < 1):
            raise AlignProError(f"max_chars must be a positive integer or None, got {self.max_chars!r}")
        if self.max_tokens is not None:
            if not _is_int(self.max_tokens) or self.max_tokens < 1:
                raise AlignProError(f"max_tokens must be a positive integer or None, got {self.max_tokens!r}")
            if self.count_tokens is None:
                raise AlignProError("max_tokens needs count_tokens (a callable str -> int, e.g. a tokenizer's length)")
        elif self.count_tokens is not None:
            raise AlignProError("count_tokens was given without max_tokens; set max_tokens to the token limit")

    def extract(self, row: Mapping[str, Any]) -> tuple[str, str | None]:
        """``(text, system)`` of a good row; raises :class:`_BadRow` naming the field, problem and fix."""
        name = self.field
        valid = f"each row needs a non-empty string in '{name}'"
        if name not in row:
            raise _BadRow("missing_field", f"field '{name}' is missing (fields in this row: {_keys(row)}); {valid}, "
                                           "or set field to the key that holds the prompt")
        value = row[name]
        if value is None:
            raise _BadRow("missing_field", f"field '{name}' is null; {valid}")
        if not isinstance(value, str):
            raise _BadRow("not_a_string",
                          f"field '{name}' must be a string, got {type(value).__name__} {value!r:.60}; {valid}")
        text = value.strip()
        if not text:
            raise _BadRow("empty", f"field '{name}' is empty or whitespace only; {valid}")
        if self.max_chars is not None and len(text) > self.max_chars:
            raise _BadRow("too_long", f"field '{name}' has {len(text)} characters, more than "
                                      f"max_chars={self.max_chars}; shorten it or raise max_chars")
        if self.max_tokens is not None and self.count_tokens is not None:
            n_tokens = self.count_tokens(text)
            if n_tokens > self.max_tokens:
                raise _BadRow("too_many_tokens", f"field '{name}' has {n_tokens} tokens, more than "
                                                 f"max_tokens={self.max_tokens}; shorten it or raise max_tokens")
        system = None
        if self.system_field is not None:
            raw = row.get(self.system_field)
            if raw is not None and not isinstance(raw, str):
                raise _BadRow("bad_system", f"system field '{self.system_field}' must be a string or null, "
                                            f"got {type(raw).__name__} {raw!r:.60}")
            system = (raw.strip() or None) if raw else None
        return text, system


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Collector:
    """Keeps good records; raises on the first bad row, or counts it when ``skip_bad``."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.records: list[PromptRecord] = []
        self.reasons: Counter[str] = Counter()
        self.duplicates = 0

    def bad(self, where: str, bad: _BadRow) -> None:
        if not self.skip_bad:
            raise AlignProError(f"{where}: {bad.problem}. Pass skip_bad=True to skip and count bad rows instead"
                                ) from None
        self.reasons[bad.reason] += 1

    def result(self, what: str) -> LoadResult:
        result = LoadResult(records=self.records, skipped=sum(self.reasons.values()),
                            skipped_reasons=dict(self.reasons), duplicates=self.duplicates)
        if not result.records:
            raise AlignProError(f"{what}: no usable prompts ({result.summary()})")
        return result


def _row_id(row: Mapping[str, Any], fallback: str) -> str:
    value = row.get("id")
    if (isinstance(value, str) and value.strip()) or _is_int(value):
        return str(value).strip()
    return fallback


def _row_category(row: Mapping[str, Any]) -> str | None:
    value = row.get("category")
    return (value.strip() or None) if isinstance(value, str) else None


def _check_sample(n: int | None, seed: int) -> None:
    if n is not None and (not _is_int(n) or n < 1):
        raise AlignProError(f"n must be a positive integer or None (all prompts), got {n!r}")
    if not _is_int(seed):
        raise AlignProError(f"seed must be an integer, got {seed!r}")


def _sample(records: list[PromptRecord], n: int | None, seed: int) -> list[PromptRecord]:
    """A seeded sample of n records (all if n is None or too large), kept in source order."""
    if n is None or n >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


# ---------------------------------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------------------------------


def _parse_jsonl(lines: Iterable[str], label: str, source: str, id_prefix: str, rules: _Rules,
                 collector: _Collector) -> None:
    """Read JSONL rows into ``collector``; ``label`` names the file in messages. Blank lines are ignored."""
    rows_seen = 0
    system_seen = False
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rows_seen += 1
        where = f"{label}, line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            collector.bad(where, _BadRow("invalid_json", f"not valid JSON ({err.msg} at column {err.colno}); "
                                                         "each line must hold one JSON object"))
            continue
        if not isinstance(row, dict):
            collector.bad(where, _BadRow("not_an_object",
                                         f"expected a JSON object like {{\"{rules.field}\": \"...\"}}, "
                                         f"got a JSON {type(row).__name__}"))
            continue
        system_seen = system_seen or (rules.system_field is not None and rules.system_field in row)
        try:
            text, system = rules.extract(row)
        except _BadRow as bad:
            collector.bad(where, bad)
            continue
        collector.records.append(PromptRecord(id=_row_id(row, f"{id_prefix}:{line_no}"), text=text, system=system,
                                              source=source, line=line_no, category=_row_category(row)))
    if rules.system_field is not None and rows_seen and not system_seen:
        raise AlignProError(f"{label}: no row has the system field '{rules.system_field}'; "
                            "check the name or leave system_field unset")


def _parse_csv(path: Path, rules: _Rules, collector: _Collector) -> None:
    """Read CSV rows (header first, UTF-8, optional BOM) into ``collector``."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames
        if not columns:
            raise AlignProError(f"{path}: empty CSV file; expected a header row naming a '{rules.field}' column")
        for name, what in ((rules.field, "field"), (rules.system_field, "system_field")):
            if name is not None and name not in columns:
                raise AlignProError(f"{path}, line 1: no column '{name}' in the CSV header; columns are: "
                                    f"{', '.join(columns)}. Set {what} to one of them")
        previous_end = reader.line_num
        for row in reader:
            line_no = previous_end + 1  # first physical line of this record (a quoted cell may span lines)
            previous_end = reader.line_num
            try:
                text, system = rules.extract(row)
            except _BadRow as bad:
                collector.bad(f"{path}, line {line_no}", bad)
                continue
            collector.records.append(PromptRecord(id=_row_id(row, f"{path.stem}:{line_no}"), text=text,
                                                  system=system, source=str(path), line=line_no,
                                                  category=_row_category(row)))


def load_prompt_file(path: str | Path, field: str = "prompt", system_field: str | None = None,
                     max_chars: int | None = None, skip_bad: bool = False, *, max_tokens: int | None = None,
                     count_tokens: Callable[[str], int] | None = None, n: int | None = None,
                     seed: int = 0) -> LoadResult:
    """Prompts from a local ``.jsonl`` (one JSON object per line) or ``.csv`` (header row) file.

    ``field`` names the key/column holding the prompt, ``system_field`` an optional system prompt. A row's
    ``id`` key/column becomes the record id (else ``<file stem>:<line>``); a ``category`` key/column is kept.
    Bad rows follow the module rules (see the module docstring). ``n`` takes a seeded sample, kept in file
    order. Duplicates are kept: a file is taken as written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PROMPT_FILE_SUFFIXES:
        raise AlignProError(f"{path}: unsupported prompt file type '{path.suffix or '(none)'}'; "
                            f"valid suffixes are {', '.join(PROMPT_FILE_SUFFIXES)}")
    if not path.is_file():
        raise AlignProError(f"{path}: prompt file not found")
    rules = _Rules(field, system_field, max_chars, max_tokens, count_tokens)
    _check_sample(n, seed)
    collector = _Collector(skip_bad)
    try:
        if suffix == ".csv":
            _parse_csv(path, rules, collector)
        else:
            with path.open(encoding="utf-8") as handle:
                _parse_jsonl(handle, str(path), str(path), path.stem, rules, collector)
    except UnicodeDecodeError as err:
        raise AlignProError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    result = collector.result(str(path))
    result.records = _sample(result.records, n, seed)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Builtin prompts
# ---------------------------------------------------------------------------------------------------------------


def _builtin_text() -> str:
    return resources.files("alignpro.data").joinpath(_BUILTIN_RESOURCE).read_text(encoding="utf-8")


def _load_builtin(rules: _Rules, skip_bad: bool) -> LoadResult:
    collector = _Collector(skip_bad)
    _parse_jsonl(_builtin_text().splitlines(), f"alignpro/data/{_BUILTIN_RESOURCE}", "builtin", "builtin", rules,
                 collector)
    return collector.result("builtin prompts")


def _split_key(record_id: str) -> str:
    """Stable across processes and Python versions (unlike the salted built-in ``hash``)."""
    return hashlib.sha256(f"alignpro-split:{record_id}".encode()).hexdigest()


@lru_cache(maxsize=1)
def _builtin_eval_ids() -> frozenset[str]:
    """Ids in the builtin eval split: per category, the ``round(0.2 * size)`` (at least 1) ids whose
    ``sha256("alignpro-split:" + id)`` hex digests sort first. Stratified, so both splits cover every category
    (a category with a single prompt stays in train)."""
    by_category: dict[str | None, list[str]] = {}
    for record in _builtin_all():
        by_category.setdefault(record.category, []).append(record.id)
    eval_ids: set[str] = set()
    for ids in by_category.values():
        k = max(1, round(BUILTIN_EVAL_FRACTION * len(ids))) if len(ids) > 1 else 0
        eval_ids.update(sorted(ids, key=_split_key)[:k])
    return frozenset(eval_ids)


def _take_split(records: list[PromptRecord], split: str) -> list[PromptRecord]:
    if split not in ("train", "eval", "all"):
        raise AlignProError(f"builtin split must be 'train', 'eval' or 'all', got {split!r}")
    if split == "all":
        return records
    eval_ids = _builtin_eval_ids()
    return [r for r in records if (r.id in eval_ids) == (split == "eval")]


@lru_cache(maxsize=1)
def _builtin_all() -> tuple[PromptRecord, ...]:
    return tuple(_load_builtin(_Rules("prompt"), skip_bad=False).records)


def builtin_prompts(split: Literal["train", "eval", "all"] = "all") -> list[PromptRecord]:
    """The ~230 everyday prompts shipped with alignpro (12 categories), in file order.

    Split rule: within each category, the 20% of ids (rounded, at least one) whose
    ``sha256("alignpro-split:" + id)`` sorts first form ``eval``; the rest form ``train``. The split is
    therefore deterministic, disjoint, identical in every process, and both parts cover every category.
    """
    return _take_split(list(_builtin_all()), split)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------------------------


def _resolve_spec(name_or_hub_id: str) -> tuple[str, DatasetSpec | None]:
    """``(label, spec)`` for a paper name or hub id; spec is None for a dataset outside the paper's three."""
    if name_or_hub_id in PAPER_DATASETS:
        return name_or_hub_id, PAPER_DATASETS[name_or_hub_id]
    for name, spec in PAPER_DATASETS.items():
        if spec.hub_id.lower() == name_or_hub_id.lower():
            return name, spec
    return name_or_hub_id, None


_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _data_file_list(data_files: Any) -> list[str]:
    if isinstance(data_files, (str, Path)):
        return [str(data_files)]
    if isinstance(data_files, Mapping):
        return [f for files in data_files.values() for f in _data_file_list(files)]
    if isinstance(data_files, Sequence):
        return [str(f) for f in data_files]
    raise AlignProError(f"data_files must be a path, a list of paths or a {{split: paths}} dict, got {data_files!r}")


def _builder_for(files: list[str]) -> str:
    builders = set()
    for name in files:
        suffix = Path(name).suffix.lower()
        if suffix not in _DATA_FILE_BUILDERS:
            raise AlignProError(f"{name}: unsupported data file type '{suffix or '(none)'}'; valid suffixes are "
                                f"{', '.join(_DATA_FILE_BUILDERS)}")
        builders.add(_DATA_FILE_BUILDERS[suffix])
    if len(builders) != 1:
        raise AlignProError(f"data_files mix formats ({', '.join(sorted(builders)) or 'none given'}); "
                            "pass files of one format")
    return builders.pop()


def _iter_rows(dataset: Any, order: list[int], columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row index, row)`` in ``order``, reading ``_HF_ROW_CHUNK`` rows at a time."""
    for start in range(0, len(order), _HF_ROW_CHUNK):
        indices = order[start:start + _HF_ROW_CHUNK]
        batch = dataset[indices]  # dict: column -> list of values
        for offset, index in enumerate(indices):
            yield index, {column: batch[column][offset] for column in columns}


def load_hf_prompts(name_or_hub_id: str, n: int | None = None, seed: int = 0, split: str | None = None,
                    field: str | None = None, system_field: str | None = None, data_files: Any = None,
                    skip_bad: bool = False, max_chars: int | None = None, *, max_tokens: int | None = None,
                    count_tokens: Callable[[str], int] | None = None, cache_dir: str | Path | None = None
                    ) -> LoadResult:
    """Prompts from a Hugging Face dataset: a paper name (``ultrafeedback``, ``helpsteer``, ``orca``) or a hub id.

    Columns and split default to :data:`PAPER_DATASETS` (``field="prompt"``, ``split="train"`` for other hub
    ids). With ``data_files`` (JSON/JSONL, parquet or CSV paths with the same columns) nothing is downloaded:
    ``datasets.load_dataset("json"|"parquet"|"csv", data_files=...)`` reads them; a plain path or list is
    split ``train``, a ``{split: paths}`` dict names its splits.

    Rows are checked with the module's bad-row rules (the row index is the record's ``line``) and exact
    duplicates (same text and system prompt) are dropped, keeping the first seen. With ``n``, rows are visited
    in a shuffled order seeded by ``seed`` until n good unique prompts are found (so a bad row far away does
    not stop a small sample); the sample is returned in dataset order. Without ``n`` every row is read.
    """
    label, spec = _resolve_spec(name_or_hub_id)
    hub_id = spec.hub_id if spec else name_or_hub_id
    if not hub_id.strip():
        raise AlignProError("empty Hugging Face dataset id; use a hub id like 'openbmb/UltraFeedback' or one of "
                            f"{', '.join(PAPER_DATASETS)}")
    field = field or (spec.field if spec else "prompt")
    if system_field is None and spec is not None:
        system_field = spec.system_field
    split = split or (spec.split if spec else "train")
    rules = _Rules(field, system_field, max_chars, max_tokens, count_tokens)
    _check_sample(n, seed)

    try:
        import datasets
    except ImportError:
        raise AlignProError("loading Hugging Face datasets needs the 'datasets' package (pip install datasets)"
                            ) from None

    # ---- load the split (from the hub, or from local files in the same column format) ----
    if data_files is not None:
        files = _data_file_list(data_files)
        where = f"{hub_id} data_files ({', '.join(files)})"
        args: tuple[Any, ...] = (_builder_for(files),)
        kwargs: dict[str, Any] = {"data_files": data_files if isinstance(data_files, Mapping) else files}
    else:
        where = f"{hub_id}"
        args = (hub_id,) if spec is None or spec.config is None else (hub_id, spec.config)
        kwargs = {}
    try:
        dataset = datasets.load_dataset(*args, split=split, cache_dir=str(cache_dir) if cache_dir else None,
                                        **kwargs)
    except Exception as err:  # noqa: BLE001 - library boundary: network, auth, missing split, bad files
        hint = ("check the paths and that each file has the dataset's columns" if data_files is not None else
                "without internet access, pass data_files= pointing at local JSON/parquet/CSV copies")
        raise AlignProError(f"could not load {where} split '{split}': {type(err).__name__}: {err}. {hint}") from None

    # ---- check the columns once, not per row ----
    columns = list(dataset.column_names)
    for name, what in ((rules.field, "field"), (rules.system_field, "system_field")):
        if name is not None and name not in columns:
            raise AlignProError(f"{where} split '{split}' has no column '{name}'; columns are: "
                                f"{', '.join(columns)}. Set {what} to one of them")
    wanted = [c for c in dict.fromkeys([rules.field, rules.system_field, "id", "category"]) if c in columns]

    # ---- visit rows (shuffled when sampling), check, dedup ----
    order = list(range(len(dataset)))
    if n is not None:
        random.Random(seed).shuffle(order)
    collector = _Collector(skip_bad)
    seen: set[tuple[str, str | None]] = set()
    for index, row in _iter_rows(dataset, order, wanted):
        if n is not None and len(collector.records) >= n:
            break
        try:
            text, system = rules.extract(row)
        except _BadRow as bad:
            collector.bad(f"{where} split '{split}', row {index}", bad)
            continue
        if (text, system) in seen:
            collector.duplicates += 1
            continue
        seen.add((text, system))
        collector.records.append(PromptRecord(id=_row_id(row, f"{label}:{index}"), text=text, system=system,
                                              source=hub_id, line=index, category=_row_category(row)))
    result = collector.result(f"{where} split '{split}'")
    result.records.sort(key=lambda r: r.line or 0)  # dataset order
    return result


# ---------------------------------------------------------------------------------------------------------------
# One resolver for every source
# ---------------------------------------------------------------------------------------------------------------

_VALID_SOURCES = ("builtin, builtin:train, builtin:eval, builtin:all; a path ending in .jsonl or .csv; "
                  f"hf:<hub id> (e.g. hf:openbmb/UltraFeedback); or one of {', '.join(PAPER_DATASETS)}")


def load_prompts(source: str, split: str | None = None, n: int | None = None, seed: int = 0,
                 field: str | None = None, skip_bad: bool = False, *, system_field: str | None = None,
                 max_chars: int | None = None, max_tokens: int | None = None,
                 count_tokens: Callable[[str], int] | None = None, data_files: Any = None,
                 cache_dir: str | Path | None = None) -> LoadResult:
    """Prompts from any source string; the one place source names are resolved.

    ``source`` is ``builtin`` (or ``builtin:train`` / ``builtin:eval`` / ``builtin:all``), a path ending in
    ``.jsonl`` or ``.csv``, ``hf:<hub id>``, or a paper dataset name (``ultrafeedback``, ``helpsteer``,
    ``orca``). ``split`` is the builtin split (train/eval/all) or the Hugging Face split; files have none.
    ``field``/``system_field`` name the prompt columns of files and datasets (builtin prompts have fixed ones),
    ``data_files`` is for Hugging Face sources only. ``n``/``seed`` take a seeded sample in source order.
    """
    if not isinstance(source, str) or not source.strip():
        raise AlignProError(f"prompt source must be a non-empty string; valid forms: {_VALID_SOURCES}")
    source = source.strip()
    rules_kwargs = {"max_chars": max_chars, "max_tokens": max_tokens, "count_tokens": count_tokens}

    if source == "builtin" or source.startswith("builtin:"):
        _reject(source, field=field, system_field=system_field, data_files=data_files)
        named = source.partition(":")[2] or None
        if named is not None and split is not None and named != split:
            raise AlignProError(f"prompt source '{source}' names split '{named}' but split={split!r} was also given; "
                                "give the split once")
        chosen = named or split or "all"
        if chosen not in ("train", "eval", "all"):
            raise AlignProError(f"unknown builtin split '{chosen}'; valid forms: builtin, builtin:train, "
                                "builtin:eval, builtin:all")
        _check_sample(n, seed)
        result = _load_builtin(_Rules("prompt", **rules_kwargs), skip_bad)
        result.records = _sample(_take_split(result.records, chosen), n, seed)
        if not result.records:
            raise AlignProError(f"prompt source '{source}': no usable prompts ({result.summary()})")
        return result

    if source.lower().endswith(PROMPT_FILE_SUFFIXES):
        _reject(source, split=split, data_files=data_files)
        return load_prompt_file(source, field=field or "prompt", system_field=system_field, skip_bad=skip_bad,
                                n=n, seed=seed, **rules_kwargs)

    if source.startswith("hf:") or source in PAPER_DATASETS:
        name = source[3:].strip() if source.startswith("hf:") else source
        if not name:
            raise AlignProError(f"prompt source '{source}' has no hub id after 'hf:'; e.g. hf:nvidia/HelpSteer")
        return load_hf_prompts(name, n=n, seed=seed, split=split, field=field, system_field=system_field,
                               data_files=data_files, skip_bad=skip_bad, cache_dir=cache_dir, **rules_kwargs)

    raise AlignProError(f"unknown prompt source '{source}'; valid forms: {_VALID_SOURCES}")


def _reject(source: str, **given: Any) -> None:
    """Raise if an option that does not apply to this kind of source was set."""
    for name, value in given.items():
        if value is not None:
            raise AlignProError(f"{name} does not apply to prompt source '{source}'; leave it unset")
