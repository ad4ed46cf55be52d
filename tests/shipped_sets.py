"""Shared checks of the generated prompt sets shipped with alignpro (builtin-ifeval, builtin-writing): their scripts
(scripts/make_builtin_ifeval.py, scripts/make_builtin_writing.py) are imported as modules, each file must equal a
fresh generation and ``--check`` must catch a stale or missing one; each set is a named source of ``load_prompts``
with its splits and seeded samples."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from collections.abc import Callable
from types import ModuleType

from alignpro.data import PromptRecord, load_prompts

REPO = Path(__file__).parent.parent


def import_script(name: str) -> ModuleType:
    """``scripts/<name>.py``, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_fresh_generation(script: ModuleType, shipped: Path) -> None:
    """``script.generate()`` gives the shipped file byte for byte, and leaves the global RNG as it found it."""
    state = random.getstate()
    assert script.generate().encode("utf-8") == shipped.read_bytes()
    assert random.getstate() == state


def assert_check_flag(script: ModuleType, shipped: Path, key: bytes, stale_key: bytes, tmp_path: Path) -> Path:
    """``--check`` passes (0) on a copy of the shipped file, fails (1) once its first ``key`` reads ``stale_key``,
    and fails (1) on a missing file; returns the copy."""
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(shipped.read_bytes())
    assert script.main(["--check", "--out", str(copy)]) == 0
    copy.write_bytes(shipped.read_bytes().replace(key, stale_key, 1))
    assert script.main(["--check", "--out", str(copy)]) == 1
    assert script.main(["--check", "--out", str(tmp_path / "missing.jsonl")]) == 1
    return copy


def assert_named_source(name: str, split: Callable[[str], list[PromptRecord]], total: int) -> list[PromptRecord]:
    """``load_prompts`` reads the set ``name`` as ``split`` gives it (``NAME:eval``, ``split="train"``, ``NAME`` and
    ``NAME:all``: ``total`` records); a seeded sample of 10 train prompts is the same for the same seed, another
    for another, and in source order. Returns the sample."""
    assert [r.id for r in load_prompts(f"{name}:eval").records] == [r.id for r in split("eval")]
    assert [r.id for r in load_prompts(name, split="train").records] == [r.id for r in split("train")]
    assert len(load_prompts(name).records) == len(load_prompts(f"{name}:all").records) == total
    sample = load_prompts(f"{name}:train", n=10, seed=3).records
    assert [r.id for r in sample] == [r.id for r in load_prompts(f"{name}:train", n=10, seed=3).records]
    assert [r.id for r in sample] != [r.id for r in load_prompts(f"{name}:train", n=10, seed=4).records]
    order = [r.id for r in split("train")]
    assert sorted(order.index(r.id) for r in sample) == [order.index(r.id) for r in sample]
    return sample
