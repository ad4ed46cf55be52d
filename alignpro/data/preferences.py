"""Preference pairs (x, y_w, y_l) for the Bradley–Terry reward model of eq (1): local JSONL and hub schemas.

Every loader returns a :class:`PairLoadResult` of :class:`PreferencePair`. Three row schemas are read, chosen
per row from the types of ``chosen`` and ``rejected``:

* **pairs** (alignpro's own, written by ``alignpro reward label``): ``{"prompt": str, "chosen": str,
  "rejected": str}``, optionally ``"system": str``, ``"id"``, and the gold scores ``"chosen_score"`` /
  ``"rejected_score"`` (numbers). Other keys (e.g. IFEval's ``instruction_id_list``/``kwargs``) are ignored here,
  so a pair file is also a prompt file for :func:`alignpro.data.load_prompts`.
* **transcripts**, as in ``Anthropic/hh-rlhf``: no ``prompt``; ``chosen`` and ``rejected`` are whole dialogues
  ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` that differ only in the last assistant turn. That turn is the answer;
  the turns before it (the same in both, else the row is bad) are the prompt.
* **messages**, as in ``HuggingFaceH4/ultrafeedback_binarized``: ``chosen`` and ``rejected`` are lists of
  ``{"role": "system"|"user"|"assistant", "content": str}`` ending in an assistant message (the answer); the
  messages before it (the same in both) are the prompt, a leading system message is the system prompt.
  ``prompt`` (a string) is used only when the lists hold nothing but the answer.

A prompt of one user turn is that turn's text; a longer conversation is rendered as
``"User: ...\\n\\nAssistant: ...\\n\\nUser: ..."`` (:func:`render_conversation`).

A row is bad (the reason is counted with ``skip_bad=True``) when it is not valid JSON (``invalid_json``), not an
object (``not_an_object``), lacks ``chosen``/``rejected``/``prompt`` (``missing_field``), holds a non-string where
text belongs (``not_a_string``), an empty prompt or answer (``empty``), the same answer twice (``identical``), a
transcript that is not ``Human:``/``Assistant:`` turns ending in an assistant turn (``bad_transcript``), a
malformed message list (``bad_messages``), different prompts in its two sides (``prompt_mismatch``), a
non-numeric gold score (``bad_score``) or a non-string system prompt (``bad_system``). By default the first bad
row raises :class:`AlignProError` naming the file and line (or dataset and row) and what is wrong.

Which source to read is resolved in one place, :func:`load_pairs`: a ``.jsonl`` path or ``hf:<hub id>`` (with
``data_files=`` for local copies in the hub's schema; nothing is downloaded then).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpro.data.hub import iter_rows, load_hf_split
from alignpro.data.records import LoadCounts, RowOrigin
from alignpro.data.rules import BadRow, RowCounter, jsonl_rows, row_id, row_keys
from alignpro.errors import AlignProError

__all__ = ["PREFERENCE_DATASETS", "PairLoadResult", "PreferencePair", "load_hf_pairs", "load_pair_file",
           "load_pairs", "pair_to_row", "render_conversation", "split_pairs_by_prompt"]

PREFERENCE_DATASETS: dict[str, str] = {
    "Anthropic/hh-rlhf": "train",
    "HuggingFaceH4/ultrafeedback_binarized": "train_prefs",
}
"""Hub preference datasets whose schema is known -> their default split (other hub ids default to ``train``)."""

_VALID_SOURCES = ("a path ending in .jsonl (rows {prompt, chosen, rejected}, hh-rlhf transcripts or "
                  "ultrafeedback_binarized message lists); hf:<hub id> (e.g. hf:Anthropic/hh-rlhf, "
                  "hf:HuggingFaceH4/ultrafeedback_binarized; data_files= for local copies)")
_COLUMNS = ("id", "prompt", "system", "chosen", "rejected", "chosen_score", "rejected_score")
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")  # a turn header of an hh-rlhf transcript
_ROLES = ("system", "user", "assistant")
_LABELS = {"user": "User", "assistant": "Assistant"}


# ---------------------------------------------------------------------------------------------------------------
# Records and results
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair(RowOrigin):
    """One comparison: for prompt x, the answer y_w was preferred to y_l (``system``, ``source`` and ``line`` as
    for a prompt: :class:`RowOrigin`)."""

    id: str
    """The row's ``id`` if it has one, else ``<source name>:<line or row>``."""
    prompt: str
    """x: the user prompt (or the rendered conversation before the answer), stripped."""
    chosen: str
    """y_w: the preferred answer, stripped."""
    rejected: str
    """y_l: the other answer, stripped."""
    chosen_score: float | None = None
    """The gold reward of y_w, when the pair was labelled by one (``alignpro reward label``)."""
    rejected_score: float | None = None
    """The gold reward of y_l, likewise."""

    @property
    def prompt_key(self) -> tuple[str | None, str]:
        """(system, prompt): pairs that share it share a prompt, and a held-out split keeps them together."""
        return self.system, self.prompt


@dataclass
class PairLoadResult(LoadCounts):
    """The pairs a loader kept, and what it left out."""

    pairs: list[PreferencePair]
    """Good pairs, in source order."""

    def summary(self) -> str:
        """One line for logs: ``180 pairs (skipped 2: identical=1, empty=1)``."""
        return self.counted(f"{len(self.pairs)} pairs")


def pair_to_row(pair: PreferencePair) -> dict[str, Any]:
    """The JSONL row of a pair in the ``pairs`` schema (what :func:`load_pair_file` reads back)."""
    row: dict[str, Any] = {"id": pair.id, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if pair.system is not None:
        row["system"] = pair.system
    if pair.chosen_score is not None:
        row["chosen_score"] = pair.chosen_score
    if pair.rejected_score is not None:
        row["rejected_score"] = pair.rejected_score
    return row


# ---------------------------------------------------------------------------------------------------------------
# One row -> (prompt, system, chosen, rejected), for every schema
# ---------------------------------------------------------------------------------------------------------------


def render_conversation(turns: list[tuple[str, str]]) -> str:
    """x for a list of (role, text) turns (role user/assistant): one user turn is its text; a longer
    conversation is ``"User: ...\\n\\nAssistant: ...\\n\\nUser: ..."``."""
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n\n".join(f"{_LABELS[role]}: {text}" for role, text in turns)


def _text(row: Mapping[str, Any], name: str, valid: str) -> str:
    """A non-empty stripped string from ``row[name]``, or :class:`BadRow`."""
    if name not in row or row[name] is None:
        where = "is missing" if name not in row else "is null"
        raise BadRow("missing_field", f"field '{name}' {where} (fields in this row: {row_keys(row)})"
                                       + (f"; {valid}" if valid else ""))
    value = row[name]
    if not isinstance(value, str):
        raise BadRow("not_a_string", f"field '{name}' must be a string, got {type(value).__name__} {value!r:.60}")
    if not value.strip():
        raise BadRow("empty", f"field '{name}' is empty or whitespace only")
    return value.strip()


def _transcript_turns(text: str, name: str) -> list[tuple[str, str]]:
    """The (role, text) turns of an hh-rlhf transcript ``\\n\\nHuman: ...\\n\\nAssistant: ...``."""
    heads = list(_TURN.finditer(text))
    valid = ("an hh-rlhf transcript is '\\n\\nHuman: ...\\n\\nAssistant: ...' turns ending in an Assistant turn "
             "(or give the row a 'prompt' field and plain answers)")
    if not heads or text[:heads[0].start()].strip():
        raise BadRow("bad_transcript", f"field '{name}' does not start with a 'Human:' turn ({text[:50]!r}); {valid}")
    turns = []
    for head, after in zip(heads, heads[1:] + [None]):
        content = text[head.end(): after.start() if after else len(text)].strip()
        turns.append(("user" if head.group(1) == "Human" else "assistant", content))
    if turns[-1][0] != "assistant" or len(turns) < 2:
        raise BadRow("bad_transcript", f"field '{name}' does not end with an 'Assistant:' turn; {valid}")
    if turns[0][0] != "user":
        raise BadRow("bad_transcript", f"field '{name}' does not start with a 'Human:' turn; {valid}")
    return turns


def _message_turns(messages: list[Any], name: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(system, turns) of a list of {role, content} messages."""
    valid = f"each message must be {{\"role\": one of {'/'.join(_ROLES)}, \"content\": a string}}"
    turns: list[tuple[str, str]] = []
    system = None
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise BadRow("bad_messages", f"'{name}'[{i}] is a {type(message).__name__}, not a message; {valid}")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES or not isinstance(content, str):
            raise BadRow("bad_messages", f"'{name}'[{i}] has role {role!r} and content of type "
                                          f"{type(content).__name__}; {valid}")
        if role == "system":
            if i != 0:
                raise BadRow("bad_messages", f"'{name}'[{i}] is a system message after the first message; "
                                              "only the first message may be one")
            system = content.strip() or None
            continue
        turns.append((role, content.strip()))
    if not turns or turns[-1][0] != "assistant":
        raise BadRow("bad_messages", f"'{name}' must end with an assistant message (the answer); {valid}")
    return system, turns


def _score(row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRow("bad_score", f"field '{name}' must be a finite number or absent, got {value!r:.60}")
    return float(value)


def _extract(row: Mapping[str, Any]) -> tuple[str, str | None, str, str]:
    """(prompt, system, chosen, rejected) of a row in any of the three schemas, or :class:`BadRow`."""
    valid = "each row needs 'chosen' and 'rejected' (strings, or lists of messages)"
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            where = "is missing" if name not in row else "is null"
            raise BadRow("missing_field", f"field '{name}' {where} (fields in this row: {row_keys(row)}); {valid}")
    chosen, rejected = row["chosen"], row["rejected"]
    system = None
    if isinstance(chosen, str) and isinstance(rejected, str):
        if row.get("prompt") is not None:  # pairs: {prompt, chosen, rejected}
            prompt = _text(row, "prompt", "")
            chosen, rejected = _text(row, "chosen", ""), _text(row, "rejected", "")
            raw = row.get("system")
            if raw is not None and not isinstance(raw, str):
                raise BadRow("bad_system", f"field 'system' must be a string or null, got {type(raw).__name__} "
                                            f"{raw!r:.60}")
            system = (raw.strip() or None) if raw else None
        else:  # transcripts (hh-rlhf)
            if "Human:" not in chosen and "Human:" not in rejected:
                raise BadRow("missing_field", f"field 'prompt' is missing (fields in this row: {row_keys(row)}) and "
                                               "'chosen' is not an hh-rlhf transcript; each row needs 'prompt', "
                                               "'chosen' and 'rejected', or transcripts '\\n\\nHuman: ...\\n\\n"
                                               "Assistant: ...' in 'chosen' and 'rejected'")
            c_turns, r_turns = _transcript_turns(chosen, "chosen"), _transcript_turns(rejected, "rejected")
            if c_turns[:-1] != r_turns[:-1]:
                raise BadRow("prompt_mismatch", "'chosen' and 'rejected' differ before their last Assistant turn; "
                                                 "a pair must share everything but the answer")
            prompt, chosen, rejected = render_conversation(c_turns[:-1]), c_turns[-1][1], r_turns[-1][1]
    elif isinstance(chosen, list) and isinstance(rejected, list):  # messages (ultrafeedback_binarized)
        system, c_turns = _message_turns(chosen, "chosen")
        r_system, r_turns = _message_turns(rejected, "rejected")
        if c_turns[:-1] != r_turns[:-1] or system != r_system:
            raise BadRow("prompt_mismatch", "'chosen' and 'rejected' differ before their last assistant message; "
                                             "a pair must share everything but the answer")
        if c_turns[:-1]:
            if c_turns[-2][0] != "user":
                raise BadRow("bad_messages", "the message before the answer must be a user message")
            prompt = render_conversation(c_turns[:-1])
        else:  # the lists hold only the answer: the prompt is the 'prompt' column
            prompt = _text(row, "prompt", "the message lists hold only the answers, so the row needs 'prompt'")
        chosen, rejected = c_turns[-1][1], r_turns[-1][1]
    else:
        raise BadRow("not_a_string", f"'chosen' and 'rejected' must both be strings or both be lists of messages, "
                                      f"got {type(chosen).__name__} and {type(rejected).__name__}")
    if not prompt:
        raise BadRow("empty", "the prompt is empty")
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        if not answer:
            raise BadRow("empty", f"the {name} answer is empty")
    if chosen == rejected:
        raise BadRow("identical", "'chosen' and 'rejected' are the same answer; a pair needs two different ones")
    return prompt, system, chosen, rejected


class _PairCollector(RowCounter):
    """Keeps good pairs; raises on the first bad row, or counts it when ``skip_bad``."""

    def __init__(self, skip_bad: bool) -> None:
        super().__init__(skip_bad, "Pass --skip-bad (skip_bad=True) to skip and count bad rows instead")
        self.pairs: list[PreferencePair] = []

    def add(self, row: Any, where: str, *, id_fallback: str, source: str, line: int) -> PreferencePair | None:
        try:
            if not isinstance(row, Mapping):
                raise BadRow("not_an_object", "expected a JSON object like {\"prompt\": \"...\", \"chosen\": "
                                               f"\"...\", \"rejected\": \"...\"}}, got a JSON {type(row).__name__}")
            prompt, system, chosen, rejected = _extract(row)
            scores = _score(row, "chosen_score"), _score(row, "rejected_score")
        except BadRow as bad:
            self.bad(where, bad)
            return None
        return PreferencePair(id=row_id(row, id_fallback), prompt=prompt, chosen=chosen, rejected=rejected,
                              system=system, source=source, line=line, chosen_score=scores[0],
                              rejected_score=scores[1])

    def result(self, what: str) -> PairLoadResult:
        result = PairLoadResult(pairs=self.pairs, **self.counts())
        if not result.pairs:
            raise AlignProError(f"{what}: no usable preference pairs ({result.summary()})")
        return result


# ---------------------------------------------------------------------------------------------------------------
# Local JSONL files
# ---------------------------------------------------------------------------------------------------------------


def _parse_jsonl(lines: Iterable[str], label: str, collector: _PairCollector) -> None:
    stem = Path(label).stem
    for line_no, where, row in jsonl_rows(lines, label, collector):
        pair = collector.add(row, where, id_fallback=f"{stem}:{line_no}", source=label, line=line_no)
        if pair is not None:
            collector.pairs.append(pair)


def load_pair_file(path: str | Path, skip_bad: bool = False) -> PairLoadResult:
    """Pairs from a local ``.jsonl`` file, one row per line in any of the three schemas (module docstring).

    Blank lines are ignored; duplicates are kept (a file is taken as written).
    """
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise AlignProError(f"{path}: unsupported preference file type '{path.suffix or '(none)'}'; use a .jsonl "
                            "file (one JSON object per line) or hf:<hub id> with data_files")
    if not path.is_file():
        raise AlignProError(f"{path}: preference file not found")
    collector = _PairCollector(skip_bad)
    try:
        with path.open(encoding="utf-8") as handle:
            _parse_jsonl(handle, str(path), collector)
    except UnicodeDecodeError as err:
        raise AlignProError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    return collector.result(str(path))


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------------------------


def load_hf_pairs(hub_id: str, split: str | None = None, data_files: Any = None, skip_bad: bool = False,
                  cache_dir: str | Path | None = None) -> PairLoadResult:
    """Pairs from a Hugging Face dataset with ``chosen``/``rejected`` columns (any schema of the module docstring).

    ``split`` defaults to :data:`PREFERENCE_DATASETS`' (else ``train``). With ``data_files`` (JSON/JSONL, parquet
    or CSV files in the dataset's columns) nothing is downloaded: ``datasets.load_dataset("json"|..., data_files=)``
    reads them; a plain path or list is split ``train``, a ``{split: paths}`` dict names its splits. The row index
    is each pair's ``line``; exact duplicate pairs are dropped and counted, keeping the first.
    """
    hub_id = hub_id.strip()
    if not hub_id:
        raise AlignProError("empty Hugging Face dataset id; use e.g. hf:Anthropic/hh-rlhf")
    known = {k.lower(): v for k, v in PREFERENCE_DATASETS.items()}
    split = split or (known.get(hub_id.lower(), "train") if data_files is None or isinstance(data_files, Mapping)
                      else "train")
    dataset, where = load_hf_split(hub_id, split, data_files, cache_dir, data_files_name="data_files= (--data-files)")
    columns = list(dataset.column_names)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise AlignProError(f"{where} split '{split}' has no column(s) {missing}; columns are: {', '.join(columns)}. "
                            "A preference dataset needs 'chosen' and 'rejected' (plus 'prompt' unless they are "
                            "hh-rlhf transcripts or message lists)")
    wanted = [c for c in _COLUMNS if c in columns]
    collector = _PairCollector(skip_bad)
    seen: set[tuple[str | None, str, str, str]] = set()
    for index, row in iter_rows(dataset, list(range(len(dataset))), wanted):
        pair = collector.add(row, f"{where} split '{split}', row {index}", id_fallback=f"{hub_id}:{index}",
                             source=hub_id, line=index)
        if pair is None:
            continue
        key = (pair.system, pair.prompt, pair.chosen, pair.rejected)
        if key in seen:
            collector.duplicates += 1
            continue
        seen.add(key)
        collector.pairs.append(pair)
    return collector.result(f"{where} split '{split}'")


# ---------------------------------------------------------------------------------------------------------------
# One resolver for every source
# ---------------------------------------------------------------------------------------------------------------


def load_pairs(source: str, split: str | None = None, skip_bad: bool = False, *, data_files: Any = None,
               cache_dir: str | Path | None = None) -> PairLoadResult:
    """Preference pairs from a source string; the one place pair sources are resolved.

    ``source`` is a path ending in ``.jsonl`` or ``hf:<hub id>``; ``split``, ``data_files`` and ``cache_dir``
    apply to Hugging Face sources only.
    """
    if not isinstance(source, str) or not source.strip():
        raise AlignProError(f"preference source must be a non-empty string; valid forms: {_VALID_SOURCES}")
    source = source.strip()
    if source.lower().endswith(".jsonl"):
        for name, value in (("split", split), ("data_files", data_files)):
            if value:
                raise AlignProError(f"{name} does not apply to the preference file '{source}'; leave it unset")
        return load_pair_file(source, skip_bad=skip_bad)
    if source.startswith("hf:"):
        return load_hf_pairs(source[3:], split=split, data_files=data_files or None, skip_bad=skip_bad,
                             cache_dir=cache_dir)
    raise AlignProError(f"unknown preference source '{source}'; valid forms: {_VALID_SOURCES}")


# ---------------------------------------------------------------------------------------------------------------
# Held-out split
# ---------------------------------------------------------------------------------------------------------------


def split_pairs_by_prompt(pairs: list[PreferencePair], heldout_fraction: float, seed: int = 0
                          ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) pairs, in source order; all pairs of one prompt (system, x) fall on the same side.

    The ``round(heldout_fraction × distinct prompts)`` prompts (at least one when the fraction is > 0 and there
    are two or more prompts) whose ``sha256("<seed>:<system>\\x1f<prompt>")`` sort first are held out: a pure
    function of the data and the seed, the same in every process and independent of the row order."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise AlignProError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    keys = list(dict.fromkeys(p.prompt_key for p in pairs))

    def rank(key: tuple[str | None, str]) -> str:
        return hashlib.sha256(f"{seed}:{key[0] or ''}\x1f{key[1]}".encode()).hexdigest()

    k = round(heldout_fraction * len(keys))
    if heldout_fraction > 0 and len(keys) >= 2:
        k = min(max(k, 1), len(keys) - 1)
    held = set(sorted(keys, key=rank)[:k])
    return [p for p in pairs if p.prompt_key not in held], [p for p in pairs if p.prompt_key in held]
