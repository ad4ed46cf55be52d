"""Per-arm statistics and pairwise win rates, each with its uncertainty and count; the one standard-error
helper; the fraction of the no_ft → oracle gap closed; IFEval's four official accuracies."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


def standard_error(values: Sequence[float]) -> float:
    """The standard error of the mean of ``values``: √(s² / n), s² the sample variance (ddof = 1); 0 when n ≤ 1
    (one value says nothing about the spread; 0, not NaN, so a report never shows NaN). The one definition of the
    standard error in alignpro."""
    x = np.asarray(values, dtype=float).ravel()
    return math.sqrt(float(x.var(ddof=1)) / x.size) if x.size > 1 else 0.0


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
    return ArmStats(mean=float(x.mean()), variance=var, stderr=standard_error(x), n=n)


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
    return WinRate(arm, baseline, judge, wins, ties, n - wins - ties, n, float(s.mean()), standard_error(s))


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


# ---------------------------------------------------------------------------------------------------------------
# The fraction of the no_ft → oracle gap closed
# ---------------------------------------------------------------------------------------------------------------

#: the oracle's paired gain over no_ft must be at least this many standard errors for "gap closed" to be shown
GAP_RESOLVED_SE = 2.0


def oracle_gain_resolved(oracle_gain: dict) -> str | None:
    """None when the oracle's paired gain over no_ft ({"mean", "stderr"}) is positive and at least
    :data:`GAP_RESOLVED_SE` standard errors; else why "gap closed" is not shown (a sentence for the report)."""
    mean, se = oracle_gain["mean"], oracle_gain["stderr"]
    if mean > 0 and mean >= GAP_RESOLVED_SE * se:
        return None
    what = "not positive" if mean <= 0 else f"not resolved (< {GAP_RESOLVED_SE:g} s.e.)"
    return f"oracle gain {mean:+.3f} ± {se:.3f} {what}: gap closed not shown"


def gap_closed(arm_gain: dict, oracle_gain: dict) -> float | None:
    """The fraction of the no_ft → oracle gap an arm closes: its paired gain over no_ft / the oracle's (1 = as
    much as the oracle, > 1 = more). None unless :func:`oracle_gain_resolved` (a ratio over a gain within noise
    of 0 is noise; never NaN or inf)."""
    return None if oracle_gain_resolved(oracle_gain) else arm_gain["mean"] / oracle_gain["mean"]


def strongest(means: dict[str, float]) -> str | None:
    """The key with the highest mean (the first of equals, in the dict's order); None for no keys."""
    return max(means, key=lambda a: means[a]) if means else None


# ---------------------------------------------------------------------------------------------------------------
# IFEval's four official accuracies (Zhou et al. 2023, Google's evaluation_main.py)
# ---------------------------------------------------------------------------------------------------------------


def prompt_level_accuracy(verdicts: Sequence[Sequence[bool]]) -> float:
    """IFEval's prompt-level accuracy: the share of answers (one per row) that follow ALL their instructions.
    Strict or loose by the verdicts given."""
    if not verdicts:
        raise ValueError("no answers to compute a prompt-level accuracy from")
    return float(np.mean([all(row) for row in verdicts]))


def instruction_level_accuracy(verdicts: Sequence[Sequence[bool]]) -> float:
    """IFEval's instruction-level accuracy: followed instructions / instructions, pooled over every answer (a
    prompt with more instructions weighs more; unlike the per-answer fraction the ``ifeval`` reward averages)."""
    n = sum(len(row) for row in verdicts)
    if n == 0:
        raise ValueError("no instructions to compute an instruction-level accuracy from")
    return sum(sum(row) for row in verdicts) / n


def ifeval_accuracies(strict: Sequence[Sequence[bool]], loose: Sequence[Sequence[bool]]) -> dict[str, float]:
    """The four official IFEval metrics from per-answer, per-instruction verdicts (rows = answers)."""
    return {"prompt_strict": prompt_level_accuracy(strict), "prompt_loose": prompt_level_accuracy(loose),
            "instruction_strict": instruction_level_accuracy(strict),
            "instruction_loose": instruction_level_accuracy(loose)}
