"""Prompts from a local file: ``.jsonl`` (one JSON object per line) or ``.csv`` (a header row), checked with the
bad-row rules of :mod:`alignpro.data.rules`."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

from alignpro.data.records import LoadResult, PromptRecord
from alignpro.data.rules import (BadRow, PromptCollector, Rules, check_sample, jsonl_rows, row_category, row_id,
                                 row_instructions, sample_records)
from alignpro.errors import AlignProError

PROMPT_FILE_SUFFIXES = (".jsonl", ".csv")
"""File suffixes :func:`load_prompt_file` reads (case-insensitive)."""


def parse_jsonl(lines: Iterable[str], label: str, source: str, id_prefix: str, rules: Rules,
                 collector: PromptCollector) -> None:
    """Read JSONL rows into ``collector``; ``label`` names the file in messages. Blank lines are ignored."""
    rows_seen = 0
    system_seen = False
    for line_no, where, row in jsonl_rows(lines, label, collector):
        rows_seen += 1
        if not isinstance(row, dict):
            collector.bad(where, BadRow("not_an_object",
                                         f"expected a JSON object like {{\"{rules.field}\": \"...\"}}, "
                                         f"got a JSON {type(row).__name__}"))
            continue
        system_seen = system_seen or (rules.system_field is not None and rules.system_field in row)
        try:
            text, system = rules.extract(row)
            instructions = row_instructions(row)
        except BadRow as bad:
            collector.bad(where, bad)
            continue
        collector.records.append(PromptRecord(id=row_id(row, f"{id_prefix}:{line_no}"), text=text, system=system,
                                              source=source, line=line_no, category=row_category(row),
                                              instructions=instructions))
    if rules.system_field is not None and rows_seen and not system_seen:
        raise AlignProError(f"{label}: no row has the system field '{rules.system_field}'; "
                            "check the name or leave system_field unset")


def _parse_csv(path: Path, rules: Rules, collector: PromptCollector) -> None:
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
            except BadRow as bad:
                collector.bad(f"{path}, line {line_no}", bad)
                continue
            collector.records.append(PromptRecord(id=row_id(row, f"{path.stem}:{line_no}"), text=text,
                                                  system=system, source=str(path), line=line_no,
                                                  category=row_category(row)))


def load_prompt_file(path: str | Path, field: str = "prompt", system_field: str | None = None,
                     max_chars: int | None = None, skip_bad: bool = False, *, max_tokens: int | None = None,
                     count_tokens: Callable[[str], int] | None = None, n: int | None = None,
                     seed: int = 0) -> LoadResult:
    """Prompts from a local ``.jsonl`` (one JSON object per line) or ``.csv`` (header row) file.

    ``field`` names the key/column holding the prompt, ``system_field`` an optional system prompt. A row's
    ``id`` key/column becomes the record id (else IFEval's ``key``, else ``<file stem>:<line>``); a ``category``
    key/column is kept. JSONL rows may carry IFEval instructions (``instruction_id_list`` and ``kwargs``; see the
    docstring of :mod:`alignpro.data.rules`); CSV rows cannot. Bad rows follow the rules of that module. ``n``
    takes a seeded sample, kept in file order. Duplicates are kept: a file is taken as written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PROMPT_FILE_SUFFIXES:
        raise AlignProError(f"{path}: unsupported prompt file type '{path.suffix or '(none)'}'; "
                            f"valid suffixes are {', '.join(PROMPT_FILE_SUFFIXES)}")
    if not path.is_file():
        raise AlignProError(f"{path}: prompt file not found")
    rules = Rules(field, system_field, max_chars, max_tokens, count_tokens)
    check_sample(n, seed)
    collector = PromptCollector(skip_bad)
    try:
        if suffix == ".csv":
            _parse_csv(path, rules, collector)
        else:
            with path.open(encoding="utf-8") as handle:
                parse_jsonl(handle, str(path), str(path), path.stem, rules, collector)
    except UnicodeDecodeError as err:
        raise AlignProError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    result = collector.result(str(path))
    result.records = sample_records(result.records, n, seed)
    return result
