"""What the prompt loaders return: :class:`PromptRecord` (with its IFEval :class:`Instruction` tuple) in a
:class:`LoadResult`; and what every loader (of prompts or of preference pairs) shares: :class:`RowOrigin`, a row's
system prompt and provenance, and :class:`LoadCounts`, what it left out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alignpro.errors import AlignProError


@dataclass(frozen=True)
class Instruction:
    """One verifiable instruction of IFEval's schema: a registry id and the kwargs of its build_description."""

    id: str
    """Registry id, e.g. ``punctuation:no_comma`` (a key of IFEval's ``INSTRUCTION_DICT``)."""
    kwargs_json: str = "{}"
    """``json.dumps(kwargs, sort_keys=True)`` with null values dropped (kept as text so records stay hashable)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise AlignProError(f"Instruction id must be a non-empty IFEval registry id such as "
                                f"'punctuation:no_comma', got {self.id!r}")
        try:
            kwargs = json.loads(self.kwargs_json)
        except (TypeError, json.JSONDecodeError):
            kwargs = None
        if not isinstance(kwargs, dict):
            raise AlignProError(f"Instruction {self.id}: kwargs_json must be a JSON object like '{{}}', got "
                                f"{self.kwargs_json!r:.80}; build one with Instruction.from_kwargs(id, kwargs)")

    @property
    def kwargs(self) -> dict[str, Any]:
        """The kwargs to pass to the checker's ``build_description`` (a fresh dict each call)."""
        return json.loads(self.kwargs_json)

    @classmethod
    def from_kwargs(cls, instruction_id: str, kwargs: Mapping[str, Any] | None = None) -> Instruction:
        """An instruction from IFEval's kwargs dict (None for none); null values are dropped, keys sorted."""
        kept = {key: value for key, value in (kwargs or {}).items() if value is not None}
        return cls(instruction_id, json.dumps(kept, sort_keys=True))


@dataclass(frozen=True, kw_only=True)
class RowOrigin:
    """What a loaded row (a prompt, a preference pair) carries beside its content: the system prompt that goes with
    it and where it came from. Keyword-only, after the row's own fields."""

    system: str | None = None
    """System prompt that goes with the prompt (OpenOrca has one), or None."""
    source: str = ""
    """Where it came from: ``builtin``, a file path, or a Hugging Face hub id."""
    line: int | None = None
    """1-based line number in a file, or 0-based row index in a Hugging Face dataset."""


@dataclass(frozen=True)
class PromptRecord(RowOrigin):
    """One user prompt x, as the prompter sees it before rewriting."""

    id: str
    """Stable identifier: the row's ``id`` if it has one, else ``<source name>:<line or row>``."""
    text: str
    """The prompt text (stripped)."""
    category: str | None = None
    """Topic label (builtin prompts, or a ``category`` key/column in a file)."""
    instructions: tuple[Instruction, ...] = ()
    """IFEval instructions the answer must follow (``instruction_id_list``/``kwargs`` of the row), or none."""


@dataclass(kw_only=True)
class LoadCounts:
    """What a loader left out (prompts here, preference pairs in :mod:`alignpro.data.preferences`)."""

    skipped: int = 0
    """Bad rows skipped (only non-zero with ``skip_bad=True``)."""
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    """Bad rows skipped per reason (``empty``, ``too_long``, ...)."""
    duplicates: int = 0
    """Exact duplicates dropped (Hugging Face datasets only)."""

    def counted(self, text: str) -> str:
        """``text`` followed by what was left out, for logs: ``228 prompts (skipped 2: empty=1, too_long=1)``."""
        notes = []
        if self.skipped:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped_reasons.items()))
            notes.append(f"skipped {self.skipped}: {reasons}")
        if self.duplicates:
            notes.append(f"{self.duplicates} duplicates dropped")
        return f"{text} ({'; '.join(notes)})" if notes else text


@dataclass
class LoadResult(LoadCounts):
    """The prompts a loader kept, and what it left out."""

    records: list[PromptRecord]
    """Good prompts, in source order."""

    def summary(self) -> str:
        """One line for logs: ``228 prompts (skipped 2: empty=1, too_long=1)``."""
        return self.counted(f"{len(self.records)} prompts")
