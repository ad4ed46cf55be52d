"""The Bradley–Terry model of preferences (the paper's eq 1) and the measures of a learned reward.

Under Bradley–Terry, P(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)); the reward model r_φ is fitted by minimising
eq (1)'s negative log-likelihood −E log σ(r_φ(x, y_w) − r_φ(x, y_l)) over preference pairs. Everything here is a
pure function of the reward margins Δ = r(x, y_w) − r(x, y_l), one per pair.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from alignpro.metrics import standard_error


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq (1): −mean log σ(r(x, y_w) − r(x, y_l)) over the pairs. Shapes (B,), (B,) -> ().

    Written as −logsigmoid so a large negative margin gives a large finite loss, not log(0)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def preference_probability(margin: np.ndarray | Sequence[float]) -> np.ndarray:
    """Bradley–Terry's P(y_w ≻ y_l | x) = σ(Δ) for margins Δ = r(x, y_w) − r(x, y_l). Shape (N,) -> (N,)."""
    d = np.asarray(margin, dtype=float)
    return 0.5 * (1.0 + np.tanh(0.5 * d))  # = 1 / (1 + e^−Δ), without overflow for large |Δ|


@dataclass(frozen=True)
class PairwiseAccuracy:
    """How often the reward ranks the preferred answer first; each pair scores 1 (Δ > 0), ½ (Δ = 0) or 0."""

    accuracy: float
    stderr: float  #: standard error of the mean of the per-pair scores (ddof = 1)
    n: int  #: pairs
    correct: int  #: pairs with Δ > 0
    ties: int  #: pairs with Δ = 0 (counted as ½)
    mean_margin: float  #: mean Δ
    prompts: int | None = None  #: distinct prompts of the pairs (when known)
    stderr_by_prompt: float | None = None  #: cluster-robust standard error, the pairs of a prompt one cluster

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        clustered = (f", ± {self.stderr_by_prompt:.3f} clustered by its {self.prompts} prompts"
                     if self.stderr_by_prompt is not None else "")
        return (f"{self.accuracy:.3f} ± {self.stderr:.3f} (n = {self.n}: {self.correct} correct, {self.ties} ties, "
                f"{self.n - self.correct - self.ties} wrong{clustered})")


def clustered_stderr(values: np.ndarray, groups: Sequence[object]) -> float:
    """Cluster-robust standard error of the mean of ``values`` (N,) with clusters ``groups`` (N,):
    sqrt(G/(G−1) · Σ_g (Σ_{i∈g} (v_i − v̄))²) / N. Pairs that share a prompt are not independent; with one value
    per cluster this is exactly the plain standard error sd(ddof = 1)/√N."""
    v = np.asarray(values, dtype=float).ravel()
    keys = list(groups)
    if len(keys) != v.size:
        raise ValueError(f"clustered_stderr: {v.size} values but {len(keys)} groups")
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    G = len(index)
    if G < 2:
        return 0.0
    sums = np.zeros(G)
    np.add.at(sums, [index[k] for k in keys], v - v.mean())
    return float(math.sqrt(G / (G - 1) * (sums ** 2).sum()) / v.size)


def pairwise_accuracy(margin: np.ndarray | Sequence[float],
                      prompts: Sequence[object] | None = None) -> PairwiseAccuracy:
    """Accuracy of the ranking r(x, y_w) > r(x, y_l), with its standard error and count. Shape (N,). With each
    pair's prompt (``prompts``, (N,)) also the standard error clustered by prompt."""
    d = np.asarray(margin, dtype=float).ravel()
    n = int(d.size)
    if n == 0:
        raise ValueError("no pairs to measure an accuracy on")
    s = np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
    clustered = (len(set(prompts)), clustered_stderr(s, prompts)) if prompts is not None else (None, None)
    return PairwiseAccuracy(float(s.mean()), standard_error(s), n, int((d > 0).sum()), int((d == 0).sum()),
                            float(d.mean()), *clustered)


@dataclass(frozen=True)
class CalibrationBin:
    """One bin of the reliability diagram: pairs whose predicted P falls in [lo, hi)."""

    lo: float
    hi: float
    count: int  #: oriented pairs in the bin
    predicted: float  #: mean predicted P(first answer preferred) in the bin (nan when empty)
    observed: float  #: fraction of them where the first answer is the preferred one (nan when empty)
    stderr: float  #: binomial standard error of ``observed``: sqrt(f(1 − f) / count) (nan when empty)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def calibration_bins(margin: np.ndarray | Sequence[float], n_bins: int = 10) -> list[CalibrationBin]:
    """The reliability diagram of σ(Δ): predicted P(answer A preferred) binned vs the observed frequency.

    Each pair is counted in both orders: as (y_w, y_l), predicted σ(Δ), observed 1, and as (y_l, y_w), predicted
    1 − σ(Δ), observed 0; otherwise every observed frequency would be 1. The diagram is therefore symmetric about
    (½, ½), and bins cover [0, 1] evenly (P = 1 falls in the last bin). A calibrated reward lies on the diagonal."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = preference_probability(margin).ravel()
    pred = np.concatenate([p, 1.0 - p])  # (2N,)
    obs = np.concatenate([np.ones_like(p), np.zeros_like(p)])  # (2N,)
    index = np.minimum((pred * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        m = index == b
        k = int(m.sum())
        f = float(obs[m].mean()) if k else math.nan
        bins.append(CalibrationBin(b / n_bins, (b + 1) / n_bins, k, float(pred[m].mean()) if k else math.nan, f,
                                   math.sqrt(f * (1 - f) / k) if k else math.nan))
    return bins


def expected_calibration_error(bins: Sequence[CalibrationBin]) -> float:
    """ECE = Σ_b (count_b / N) · |observed_b − predicted_b| over the non-empty bins."""
    total = sum(b.count for b in bins)
    if total == 0:
        raise ValueError("no pairs in the calibration bins")
    return float(sum(b.count / total * abs(b.observed - b.predicted) for b in bins if b.count))
