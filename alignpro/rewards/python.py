"""``python:<module>:<function>``: any callable (prompts, answers) -> list[float] as the reward."""

from __future__ import annotations

import importlib
import inspect
from typing import Callable, Sequence

from alignpro.errors import AlignProError

#: what a ``python:`` reward function must be (named in every error about one)
EXPECTED = ("(prompts: list[str], answers: list[str]) -> list[float]: one finite number per (prompt, answer) "
            "pair, in order")


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
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a readable signature: checked by its first call
            signature = None
        if signature is not None:
            try:
                signature.bind([], [])
            except TypeError:
                raise AlignProError(f"reward '{self.name}': '{function}{signature}' cannot be called with "
                                    f"(prompts, answers); a python: reward must be {EXPECTED}") from None
        self.fn: Callable[[list[str], list[str]], Sequence[float]] = fn

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        out = self.fn(list(prompts), list(answers))
        if isinstance(out, (str, bytes, dict, set)) or not hasattr(out, "__iter__"):
            raise AlignProError(f"reward '{self.name}' returned a {type(out).__name__}; it must be {EXPECTED}")
        out = list(out)
        values: list[float] = []
        for i, v in enumerate(out):
            try:
                if isinstance(v, (str, bytes)):
                    raise TypeError
                values.append(float(v))
            except (TypeError, ValueError):
                raise AlignProError(f"reward '{self.name}' returned {type(v).__name__} {v!r} at index {i}; it must "
                                    f"be {EXPECTED}") from None
        if len(values) != len(prompts):
            raise AlignProError(f"reward '{self.name}' returned {len(values)} scores for {len(prompts)} pairs; it "
                                f"must be {EXPECTED}")
        return values
