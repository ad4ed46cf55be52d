"""``python:<module>:<function>``: any callable (prompts, answers) -> list[float] as the reward."""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

from alignpro.errors import AlignProError


class PythonReward:
    def __init__(self, module: str, function: str, r_max: float | None = None) -> None:
        self.name = f"python:{module}:{function}"
        self.r_max = r_max
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise AlignProError(f"reward '{self.name}': cannot import module '{module}': {exc}") from None
        fn = getattr(mod, function, None)
        if not callable(fn):
            raise AlignProError(f"reward '{self.name}': module '{module}' has no callable '{function}'")
        self.fn: Callable[[list[str], list[str]], Sequence[float]] = fn

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        out = self.fn(list(prompts), list(answers))
        try:
            values = [float(v) for v in out]
        except (TypeError, ValueError):
            raise AlignProError(f"reward '{self.name}' must return a list of numbers, got {type(out).__name__}") from None
        if len(values) != len(prompts):
            raise AlignProError(f"reward '{self.name}' returned {len(values)} scores for {len(prompts)} pairs")
        return values
