"""Prompt sources, and the one place a source string is resolved: :func:`load_prompts`.

A source is a prompt set known by name (:data:`NAMED_SOURCES`: ``builtin`` and ``builtin-ifeval`` of
:mod:`alignpro.data.builtin`, each ``<name>`` or ``<name>:<split>``), a local ``.jsonl``/``.csv`` file
(:mod:`alignpro.data.files`), or a Hugging Face dataset: ``hf:<hub id>`` or one of the paper's three
(:data:`PAPER_DATASETS`, :func:`load_hf_prompts`). Every loader returns a :class:`LoadResult` of
:class:`PromptRecord` (:mod:`alignpro.data.records`) and applies the bad-row rules of :mod:`alignpro.data.rules`.

A new named set is one line in :data:`NAMED_SOURCES`: its name -> a :class:`NamedSource` whose ``load`` returns
the records of one split.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from alignpro.data.builtin import BUILTIN_SPLITS, load_builtin
from alignpro.data.files import PROMPT_FILE_SUFFIXES, load_prompt_file
from alignpro.data.hub import iter_rows, load_hf_split
from alignpro.data.records import LoadResult, PromptRecord
from alignpro.data.rules import (IFEVAL_FIELDS, BadRow, PromptCollector, Rules, check_sample, row_category, row_id,
                                 row_instructions, sample_records)
from alignpro.errors import AlignProError


# ---------------------------------------------------------------------------------------------------------------
# Named prompt sets
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedSource:
    """A prompt set called by name in a source string: ``<name>`` or ``<name>:<split>``."""

    load: Callable[[str, Rules, bool], LoadResult]
    """``(split, rules, skip_bad)`` -> the records of that split, in source order."""
    splits: tuple[str, ...] = BUILTIN_SPLITS
    """The splits it has."""
    default_split: str = "all"
    """The split of a bare ``<name>``."""


def _deferred(module: str, function: str) -> Callable[[str, Rules, bool], LoadResult]:
    """The loader ``module.function``, imported on first use (those modules read files of this package)."""
    def load(split: str, rules: Rules, skip_bad: bool) -> LoadResult:
        return getattr(importlib.import_module(module), function)(split, rules, skip_bad)
    return load


NAMED_SOURCES: dict[str, NamedSource] = {
    "builtin": NamedSource(partial(load_builtin, "builtin")),
    "builtin-ifeval": NamedSource(partial(load_builtin, "builtin-ifeval")),
    "builtin-writing": NamedSource(_deferred("alignpro.data.writing", "load_writing_split")),
    "ifeval": NamedSource(_deferred("alignpro.data.ifeval_google", "load_ifeval_split"), splits=("all", "offline")),
}
"""Source name -> the prompt set it names (one line each)."""


def _named_forms(name: str) -> str:
    return ", ".join([name] + [f"{name}:{split}" for split in NAMED_SOURCES[name].splits])


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------------------------


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


def _resolve_spec(name_or_hub_id: str) -> tuple[str, DatasetSpec | None]:
    """``(label, spec)`` for a paper name or hub id; spec is None for a dataset outside the paper's three."""
    if name_or_hub_id in PAPER_DATASETS:
        return name_or_hub_id, PAPER_DATASETS[name_or_hub_id]
    for name, spec in PAPER_DATASETS.items():
        if spec.hub_id.lower() == name_or_hub_id.lower():
            return name, spec
    return name_or_hub_id, None


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

    Rows may carry IFEval instructions (``instruction_id_list`` and ``kwargs`` columns, e.g. ``google/IFEval``;
    parquet/arrow store kwargs as structs whose absent keys are null, and nulls are dropped), and IFEval's
    ``key`` column is the record id when there is no ``id``. Rows are checked with the bad-row rules of
    :mod:`alignpro.data.rules` (the row index is the record's ``line``) and exact duplicates (same text and system
    prompt) are dropped, keeping the first seen. With ``n``, rows are visited
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
    rules = Rules(field, system_field, max_chars, max_tokens, count_tokens)
    check_sample(n, seed)

    # ---- load the split (from the hub, or from local files in the same column format) ----
    try:
        dataset, where = load_hf_split(hub_id, split, data_files, cache_dir,
                                       config=spec.config if spec is not None else None)
    except AlignProError as err:
        # the hub unreachable (the library's OSError is the suppressed context): a set that ships says so
        from alignpro.data.ifeval_google import hub_unreachable_hint

        hint = hub_unreachable_hint(hub_id) if data_files is None and isinstance(err.__context__, OSError) else None
        if hint is None:
            raise
        raise AlignProError(f"{err}; {hint}") from None

    # ---- check the columns once, not per row ----
    columns = list(dataset.column_names)
    for name, what in ((rules.field, "field"), (rules.system_field, "system_field")):
        if name is not None and name not in columns:
            raise AlignProError(f"{where} split '{split}' has no column '{name}'; columns are: "
                                f"{', '.join(columns)}. Set {what} to one of them")
    wanted = [c for c in dict.fromkeys([rules.field, rules.system_field, "id", "key", "category", *IFEVAL_FIELDS])
              if c in columns]

    # ---- visit rows (shuffled when sampling), check, dedup ----
    order = list(range(len(dataset)))
    if n is not None:
        random.Random(seed).shuffle(order)
    collector = PromptCollector(skip_bad)
    seen: set[tuple[str, str | None]] = set()
    for index, row in iter_rows(dataset, order, wanted):
        if n is not None and len(collector.records) >= n:
            break
        try:
            text, system = rules.extract(row)
            instructions = row_instructions(row)
        except BadRow as bad:
            collector.bad(f"{where} split '{split}', row {index}", bad)
            continue
        if (text, system) in seen:
            collector.duplicates += 1
            continue
        seen.add((text, system))
        collector.records.append(PromptRecord(id=row_id(row, f"{label}:{index}"), text=text, system=system,
                                              source=hub_id, line=index, category=row_category(row),
                                              instructions=instructions))
    result = collector.result(f"{where} split '{split}'")
    result.records.sort(key=lambda r: r.line or 0)  # dataset order
    return result


# ---------------------------------------------------------------------------------------------------------------
# One resolver for every source
# ---------------------------------------------------------------------------------------------------------------


def _valid_sources() -> str:
    return ("; ".join(_named_forms(name) for name in NAMED_SOURCES) + "; a path ending in .jsonl or .csv; "
            "hf:<hub id> (e.g. hf:openbmb/UltraFeedback, hf:google/IFEval); or one of "
            f"{', '.join(PAPER_DATASETS)}")


def load_prompts(source: str, split: str | None = None, n: int | None = None, seed: int = 0,
                 field: str | None = None, skip_bad: bool = False, *, system_field: str | None = None,
                 max_chars: int | None = None, max_tokens: int | None = None,
                 count_tokens: Callable[[str], int] | None = None, data_files: Any = None,
                 cache_dir: str | Path | None = None) -> LoadResult:
    """Prompts from any source string; the one place source names are resolved.

    ``source`` is a named set of :data:`NAMED_SOURCES` (``builtin``, or ``builtin:train`` / ``builtin:eval`` /
    ``builtin:all``; ``builtin-ifeval``, the builtin prompts with IFEval instructions, with the same splits), a
    path ending in ``.jsonl`` or ``.csv``,
    ``hf:<hub id>``, or a paper dataset name (``ultrafeedback``, ``helpsteer``, ``orca``). ``split`` is the
    named set's split (train/eval/all for the builtin sets) or the Hugging Face split; files have none.
    ``field``/``system_field`` name the prompt columns of files and datasets (builtin prompts have fixed ones),
    ``data_files`` is for Hugging Face sources only. ``n``/``seed`` take a seeded sample in source order.
    """
    if not isinstance(source, str) or not source.strip():
        raise AlignProError(f"prompt source must be a non-empty string; valid forms: {_valid_sources()}")
    source = source.strip()
    rules_kwargs = {"max_chars": max_chars, "max_tokens": max_tokens, "count_tokens": count_tokens}
    name, _, named_split = source.partition(":")
    if name in NAMED_SOURCES:
        _reject(source, field=field, system_field=system_field, data_files=data_files)
        named = named_split or None
        if named is not None and split is not None and named != split:
            raise AlignProError(f"prompt source '{source}' names split '{named}' but split={split!r} was also given; "
                                "give the split once")
        chosen = named or split or NAMED_SOURCES[name].default_split
        if chosen not in NAMED_SOURCES[name].splits:
            raise AlignProError(f"unknown {name} split '{chosen}'; valid forms: {_named_forms(name)}")
        check_sample(n, seed)
        result = NAMED_SOURCES[name].load(chosen, Rules("prompt", **rules_kwargs), skip_bad)
        result.records = sample_records(result.records, n, seed)
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

    raise AlignProError(f"unknown prompt source '{source}'; valid forms: {_valid_sources()}")


def _reject(source: str, **given: Any) -> None:
    """Raise if an option that does not apply to this kind of source was set."""
    for name, value in given.items():
        if value is not None:
            raise AlignProError(f"{name} does not apply to prompt source '{source}'; leave it unset")
