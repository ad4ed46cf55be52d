"""No-learning baselines: what a user can do to π_F's prompt (or answer) without training anything.

Each baseline arm of :mod:`alignpro.arms` shows π_F a prompt built by a pure function of x (:func:`shown_prompts`):

- ``suffix``: x and one fixed line (:data:`DEFAULT_SUFFIX` unless another line is given);
- ``repeat``: x twice;
- ``best_suffix``: x and the best line of the catalog ``suffixes.yaml``, chosen on builtin-ifeval:train prompts
  only by paired reward against x (:mod:`alignpro.baselines.choose`, recorded in ``best_suffix.json``);
- ``answer_rewrite``: π_F answers x, then answers :func:`answer_rewrite_request` (x and its first answer, asking
  for the answer rewritten to follow the message's instructions): the two-stage program GEPA optimised on IFBench.

Every answer is scored against the ORIGINAL x.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from alignpro.errors import ConfigError

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "suffixes.yaml"  #: the fixed lines best_suffix chooses among
CHOICE = HERE / "best_suffix.json"  #: the recorded choice (and every line's score) that best_suffix reads
NAMES = ("suffix", "repeat", "best_suffix", "answer_rewrite")  #: the baselines, as named in alignpro.arms.Arm
DEFAULT_SUFFIX = "IMPORTANT: Follow every instruction in this message exactly."  #: the arm suffix's default line

ANSWER_REWRITE_REQUEST = (
    "Here is a message and a draft response to it.\n\n"
    "Message:\n{prompt}\n\n"
    "Draft response:\n{answer}\n\n"
    "Rewrite the draft response so that it follows every instruction in the message exactly (its format, length, "
    "wording, case and punctuation). Reply with the rewritten response only.")


def with_line(x: str, line: str) -> str:
    """x followed, after a blank line, by ``line`` (arms suffix and best_suffix)."""
    return f"{x.rstrip()}\n\n{line}"


def repeated(x: str) -> str:
    """x twice, separated by a blank line (arm repeat)."""
    return f"{x.rstrip()}\n\n{x.rstrip()}"


def answer_rewrite_request(x: str, answer: str) -> str:
    """The second stage of arm answer_rewrite: π_F asked to rewrite its ``answer`` to x so it follows x."""
    return ANSWER_REWRITE_REQUEST.format(prompt=x.strip(), answer=answer.strip())


def resolve_line(name: str, line: str | None = None) -> str | None:
    """The line arm ``name`` appends to x: ``line`` if given, else suffix's default or best_suffix's recorded
    choice; None for the arms that append none."""
    if name not in ("suffix", "best_suffix"):
        return None
    if line is None:
        line = DEFAULT_SUFFIX if name == "suffix" else load_choice().line
    if not line.strip():
        raise ConfigError(f"arm '{name}': the appended line must not be empty")
    return line


def shown_prompts(name: str, prompts: Sequence[str], line: str | None = None) -> list[str]:
    """(N,) the x′ a prompt-building baseline shows π_F: x + :func:`resolve_line` (suffix, best_suffix), or x twice
    (repeat)."""
    if name == "repeat":
        return [repeated(x) for x in prompts]
    if name in ("suffix", "best_suffix"):
        return [with_line(x, resolve_line(name, line)) for x in prompts]
    raise ValueError(f"arm '{name}' shows π_F no prompt built from x alone")


def parse_entry(entry: str) -> tuple[str, str | None]:
    """'suffix=TEXT' → ('suffix', 'TEXT'); another baseline's name → (name, None); ConfigError otherwise."""
    name, sep, text = str(entry).partition("=")
    name, text = name.strip(), text.strip()
    if name not in NAMES:
        raise ConfigError(f"unknown no-learning baseline '{entry}'; valid: suffix[=<line>], repeat, best_suffix, "
                          "answer_rewrite")
    if sep and name != "suffix":
        raise ConfigError(f"baseline '{name}' takes no text (got '{entry}'); only suffix=<line> does")
    if name == "best_suffix":
        load_choice()  # its recorded choice must exist
    return name, (text or None)


def load_catalog(path: Path | None = None) -> list[str]:
    """The catalog's lines (≥ 10 distinct, the default suffix among them)."""
    path = Path(path or CATALOG)
    lines = [str(s).strip() for s in (yaml.safe_load(path.read_text()) or {}).get("lines", [])]
    if len(set(lines)) != len(lines) or len(lines) < 10 or DEFAULT_SUFFIX not in lines:
        raise ConfigError(f"suffix catalog {path}: needs >= 10 distinct lines including the default "
                          f"'{DEFAULT_SUFFIX}', got {len(lines)}")
    return lines


@dataclass(frozen=True)
class SuffixChoice:
    """The line best_suffix appends, and where it was chosen."""

    line: str
    source: str  #: the file that records the choice (and every line's paired Δ ± s.e.)
    command: str  #: the command that made it


def load_choice(path: Path | None = None) -> SuffixChoice:
    """The recorded best_suffix choice (:data:`CHOICE` unless ``path``); a ConfigError naming the command that
    makes it when there is none."""
    path = Path(path or CHOICE)
    if not path.is_file():
        raise ConfigError(f"arm 'best_suffix' needs its recorded choice {path}, which does not exist; make it with "
                          "`python -m alignpro.baselines.choose` (scores the catalog on builtin-ifeval:train)")
    data = json.loads(path.read_text())
    return SuffixChoice(data["choice"], str(path), data["command"])
