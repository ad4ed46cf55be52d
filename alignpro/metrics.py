"""Per-arm statistics and pairwise win rates, each with its uncertainty and count."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ArmStats:
    mean: float
    variance: float  #: sample variance (ddof = 1) of the per-answer rewards
    stderr: float  #: standard error of the mean
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def arm_stats(rewards: Sequence[float]) -> ArmStats:
    x = np.asarray(rewards, dtype=float).ravel()
    n = int(x.size)
    if n == 0:
        raise ValueError("no rewards to summarise")
    var = float(x.var(ddof=1)) if n > 1 else 0.0
    return ArmStats(mean=float(x.mean()), variance=var, stderr=math.sqrt(var / n), n=n)


def paired_gain(arm: np.ndarray, baseline: np.ndarray) -> dict:
    """An arm's reward gain over the baseline, paired by prompt: per prompt (row of the (N, n) reward arrays), the
    arm's mean over its answers minus the baseline's; then :func:`arm_stats` of those N differences (mean ± s.e.).
    The spread between prompts, which both arms share, drops out."""
    return arm_stats((np.asarray(arm, dtype=float) - np.asarray(baseline, dtype=float)).mean(axis=1)).to_dict()


def keeps_original_fraction(prompts: Sequence[str], shown: Sequence[str]) -> float:
    """The share of prompts x whose x′ (what π_F was shown) still contains x verbatim."""
    return float(np.mean([x.strip() in xp for x, xp in zip(prompts, shown, strict=True)]))


@dataclass(frozen=True)
class WinRate:
    arm: str
    baseline: str
    judge: str
    wins: int
    ties: int
    losses: int
    n: int
    win_rate: float  #: (wins + ½·ties) / n
    stderr: float  #: standard error of the per-item score in {0, ½, 1}

    def to_dict(self) -> dict:
        return asdict(self)


def win_rate_from_outcomes(outcomes: Sequence[float], *, arm: str, baseline: str, judge: str) -> WinRate:
    """Outcomes per item: 1 = arm wins, 0.5 = tie, 0 = baseline wins."""
    s = np.asarray(outcomes, dtype=float)
    n = int(s.size)
    if n == 0:
        raise ValueError("no outcomes to compute a win rate from")
    wins, ties = int((s == 1).sum()), int((s == 0.5).sum())
    sd = float(s.std(ddof=1)) if n > 1 else 0.0
    return WinRate(arm, baseline, judge, wins, ties, n - wins - ties, n, float(s.mean()), sd / math.sqrt(n))


def reward_win_rate(arm_rewards: Sequence[float], baseline_rewards: Sequence[float], *, arm: str, baseline: str,
                    tie_margin: float = 0.01) -> WinRate:
    """Pairwise win rate judged by the reward itself: |Δr| ≤ tie_margin is a tie. Same prompts, same order.

    This judge is NOT independent of the optimisation target (the prompter was chosen/trained on this reward).
    """
    a, b = np.asarray(arm_rewards, dtype=float), np.asarray(baseline_rewards, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"arm and baseline must score the same items: {a.shape} vs {b.shape}")
    d = a - b
    outcomes = np.where(d > tie_margin, 1.0, np.where(d < -tie_margin, 0.0, 0.5))
    return win_rate_from_outcomes(outcomes, arm=arm, baseline=baseline, judge=f"reward(tie_margin={tie_margin})")
