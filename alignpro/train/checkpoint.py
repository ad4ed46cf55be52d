"""Crash-safe run-folder files: atomic checkpoints, fsync'd JSONL logs, and their repair on resume.

:func:`save_checkpoint` / :func:`restore_checkpoint` hold the training checkpoint's file list (one folder per
saved step):

    rng-rank<r>.pt         every process's python / numpy / torch (/ cuda) RNG states
    policy.pt              the trained tensors (all weights + value head, or the LoRA adapter + value head)
    optimizer.pt           the AdamW state
    accelerate_state/      under DeepSpeed, in place of policy.pt and optimizer.pt (sharded; every process)
    scheduler.pt           the learning-rate schedule
    trainer_state.json     :class:`TrainerState`: step, time, data position, KL controller, reward baselines b(x)

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from alignpro.errors import AlignProError
from alignpro.fileio import atomic_write_text, fsync_dir

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


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


# ------------------------------------------------------------------------------------------------ training
@dataclass
class TrainerState:
    """``trainer_state.json``: where a training run stands after ``step``."""

    step: int = 0  #: the last completed step
    elapsed_seconds: float = 0.0  #: training seconds of every invocation so far
    data_position: int = 0  #: prompts drawn so far, over all processes
    kl_controller: dict[str, Any] = field(default_factory=dict)  #: the KL controller's ``state_dict()``
    reward_baselines: dict[str, float] | None = None  #: process 0's b(x) cache (prompter role with baseline_m)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        return cls(**json.loads(text))


def trainable_state(policy: torch.nn.Module) -> dict[str, Tensor]:
    """The trained tensors only: all weights + value head (full fine-tuning), or the adapter + value head (LoRA)."""
    return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if p.requires_grad}


def load_trainable_state(policy: torch.nn.Module, state: dict[str, Tensor]) -> None:
    """Load :func:`trainable_state`'s tensors; an error if they are not exactly the trainable ones of ``policy``."""
    missing, unexpected = policy.load_state_dict(state, strict=False)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    lost = sorted(trainable - set(state))
    if unexpected or lost:
        raise AlignProError(f"checkpoint does not match the model: unexpected {unexpected[:5]}, missing {lost[:5]}")


def _deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def save_checkpoint(run: Path, state: TrainerState, *, accelerator: Any, policy: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, keep: int) -> None:
    """Write the checkpoint of ``state.step`` atomically, then keep only the newest ``keep``. Every process calls
    it (each saves its RNG states; DeepSpeed saves shards); process 0 writes the rest. ``policy`` is unwrapped."""
    from accelerate.utils import broadcast_object_list

    is_main, deepspeed = accelerator.is_main_process, _deepspeed(accelerator)
    tmp = Path(broadcast_object_list([str(begin_checkpoint(run, state.step)) if is_main else ""])[0])
    torch_save(rng_state(), tmp / f"rng-rank{accelerator.process_index}.pt")
    if deepspeed:
        accelerator.save_state(str(tmp / "accelerate_state"))
    if is_main:
        if not deepspeed:
            torch_save(trainable_state(policy), tmp / "policy.pt")
            torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(state.to_json())
    accelerator.wait_for_everyone()
    if is_main:
        finish_checkpoint(tmp, run, state.step)
        prune_checkpoints(run, keep)
    accelerator.wait_for_everyone()


def restore_checkpoint(ckpt: Path, *, accelerator: Any, policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any) -> TrainerState:
    """Load the checkpoint folder ``ckpt`` into the prepared ``optimizer`` and the unwrapped ``policy`` (after
    ``accelerator.prepare``), and the scheduler and this process's RNG states; returns its :class:`TrainerState`
    (the caller restores its KL controller and reward baselines from it)."""
    device = accelerator.device
    if not _deepspeed(accelerator):
        load_trainable_state(policy, torch.load(ckpt / "policy.pt", map_location=device))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt"))
    state = TrainerState.from_json((ckpt / "trainer_state.json").read_text())
    rng_file = ckpt / f"rng-rank{accelerator.process_index}.pt"
    set_rng_state(torch.load(rng_file if rng_file.exists() else ckpt / "rng-rank0.pt", weights_only=False))
    if _deepspeed(accelerator):  # last, as before: accelerate's own RNG states win under DeepSpeed
        accelerator.load_state(str(ckpt / "accelerate_state"))
    return state


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
