"""Reward models r(x, y), always scored against the ORIGINAL prompt x. See :func:`alignpro.specs.make_reward`."""

from __future__ import annotations

import math
from typing import Any, Sequence

from alignpro.errors import AlignProError


def check_finite(spec: str, prompts: Sequence[str], values: Sequence[float]) -> Sequence[float]:
    """``values`` when every one is a finite number; else an error naming the reward ``spec`` and the first pair
    (its index in the batch and its prompt) whose reward is NaN or infinite."""
    for i, v in enumerate(values):
        if not math.isfinite(v):
            shown = prompts[i] if len(prompts[i]) <= 80 else prompts[i][:77] + "..."
            raise AlignProError(f"reward '{spec}' gave {v} for pair {i} of {len(values)} (prompt {shown!r}); a "
                                "reward must be a finite number")
    return values


def finite_rewards(reward: Any, spec: str) -> Any:
    """``reward`` itself, its ``score`` now refusing non-finite rewards (:func:`check_finite`); the object (its
    type, its other methods) is unchanged, so every reward :func:`alignpro.specs.make_reward` builds is checked."""
    score = reward.score

    def checked(prompts: Sequence[str], answers: Sequence[str], *args: Any, **kwargs: Any) -> Sequence[float]:
        return check_finite(spec, prompts, score(prompts, answers, *args, **kwargs))

    checked.__doc__ = score.__doc__
    reward.score = checked
    return reward
