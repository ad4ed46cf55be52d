"""Crash-safe run-folder files: atomic checkpoints, fsync'd JSONL logs, and their repair on resume.

A checkpoint is written into ``RUN/checkpoints/step-XXXXXX.tmp-<pid>``, every file fsync'd, a ``COMPLETE`` marker
written last, then the folder is renamed to ``step-XXXXXX`` (``os.replace``, atomic). Resume uses the highest
``step-XXXXXX`` that holds ``COMPLETE``; ``*.tmp-*`` folders are never read (and are deleted when seen).

A JSONL log row is appended (flush + fsync) only after its step has completed. On resume from checkpoint step s,
rows with step > s (and a torn last line) are dropped by rewriting the file atomically, so the steps that are
re-run are logged exactly once.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsync'd temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` then fsync."""
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / f"step-{step:06d}"


def begin_checkpoint(run: Path, step: int) -> Path:
    """A fresh temporary folder for the checkpoint of ``step``."""
    tmp = checkpoint_dir(run, step).with_name(f"step-{step:06d}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def finish_checkpoint(tmp: Path, run: Path, step: int) -> Path:
    """fsync everything in ``tmp``, write ``COMPLETE`` last, rename it to ``step-XXXXXX`` atomically."""
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    with open(tmp / COMPLETE, "w") as fh:
        fh.write(f"{step}\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(tmp)
    final = checkpoint_dir(run, step)
    if final.exists():  # only possible for a leftover that was never complete (see latest_checkpoint)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def complete_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    root = Path(run) / CHECKPOINTS
    found = []
    if root.is_dir():
        for d in root.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and (d / COMPLETE).is_file():
                found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(run: Path) -> tuple[int, Path] | None:
    """The highest complete checkpoint, or None."""
    found = complete_checkpoints(run)
    return found[-1] if found else None


def prune_checkpoints(run: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and temporary folders of other processes."""
    found = complete_checkpoints(run)
    for _, d in found[:-keep] if keep else found:
        shutil.rmtree(d, ignore_errors=True)
    root = Path(run) / CHECKPOINTS
    if root.is_dir():
        for d in root.iterdir():
            if ".tmp-" in d.name and not d.name.endswith(f".tmp-{os.getpid()}"):
                shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ JSONL logs
def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one row, flushed and fsync'd (a kill after this returns never loses it)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a JSONL log (a torn last line is ignored)."""
    rows = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_jsonl(path: Path, max_step: int) -> int:
    """Keep the rows with ``step <= max_step`` (atomic rewrite); returns how many rows were dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row.get("step", 0)) <= max_step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)
