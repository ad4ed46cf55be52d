"""What a learned reward is measured by on pairs it never trained on: pairwise accuracy (± s.e., n), eq (1)'s loss,
and calibration of σ(Δr) (a table and a reliability figure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from alignpro.data.preferences import PreferencePair
from alignpro.metrics import standard_error
from alignpro.reward_model.bt import (CalibrationBin, PairwiseAccuracy, bradley_terry_loss, calibration_bins,
                                      expected_calibration_error, pairwise_accuracy, preference_probability)
from alignpro.reward_model.model import RewardScorer


@dataclass(frozen=True)
class PairScores:
    """r_φ of both answers of each pair. Shapes (N,), (N,)."""

    chosen: np.ndarray
    rejected: np.ndarray

    @property
    def margin(self) -> np.ndarray:
        return self.chosen - self.rejected  # (N,) Δ = r(x, y_w) − r(x, y_l)


@dataclass(frozen=True)
class PairMeasures:
    accuracy: PairwiseAccuracy
    loss: float  #: eq (1)'s mean −log σ(Δ)
    loss_stderr: float  #: its standard error over the pairs
    calibration: list[CalibrationBin]
    ece: float  #: expected calibration error of σ(Δ)

    def to_dict(self) -> dict[str, Any]:
        return {**self.accuracy.to_dict(), "loss": self.loss, "loss_stderr": self.loss_stderr, "ece": self.ece,
                "calibration": [b.to_dict() for b in self.calibration]}

    def __str__(self) -> str:
        return (f"pairwise accuracy {self.accuracy}; eq (1) loss {self.loss:.4f} ± {self.loss_stderr:.4f}; "
                f"ECE {self.ece:.3f}")


def score_pairs(scorer: RewardScorer, pairs: Sequence[PreferencePair], batch_size: int = 32,
                progress: bool = False, desc: str = "score pairs") -> PairScores:
    """r_φ(x, y_w) and r_φ(x, y_l) for every pair (eval mode: no dropout)."""
    from tqdm.auto import tqdm

    chosen, rejected = [], []
    for i in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", disable=not progress,
                  dynamic_ncols=True, leave=False):
        batch = pairs[i:i + batch_size]
        prompts, systems = [p.prompt for p in batch] * 2, [p.system for p in batch] * 2
        r = scorer.score(prompts, [p.chosen for p in batch] + [p.rejected for p in batch], systems,
                         batch_size=2 * len(batch))  # (2b,)
        chosen.append(r[:len(batch)])
        rejected.append(r[len(batch):])
    return PairScores(np.concatenate(chosen), np.concatenate(rejected))


def measure(scores: PairScores, n_bins: int = 10, prompts: Sequence[object] | None = None) -> PairMeasures:
    """Accuracy, eq (1)'s loss and calibration of the scored pairs; with each pair's prompt key (``prompts``) the
    accuracy's standard error is also clustered by prompt (a prompt's pairs share their answers)."""
    margin = scores.margin
    per_pair = -torch.nn.functional.logsigmoid(torch.as_tensor(margin, dtype=torch.float64)).numpy()  # (N,)
    loss = float(bradley_terry_loss(torch.as_tensor(scores.chosen, dtype=torch.float64),
                                    torch.as_tensor(scores.rejected, dtype=torch.float64)))
    bins = calibration_bins(margin, n_bins)
    return PairMeasures(pairwise_accuracy(margin, prompts), loss,
                        standard_error(per_pair), bins,
                        expected_calibration_error(bins))


def score_rows(pairs: Sequence[PreferencePair], scores: PairScores) -> list[dict[str, Any]]:
    """One JSONL row per pair: its id and r_φ of both answers, Δ and σ(Δ)."""
    p = preference_probability(scores.margin)
    return [{"id": pair.id, "r_chosen": float(c), "r_rejected": float(r), "margin": float(c - r),
             "p_chosen": float(q)} for pair, c, r, q in zip(pairs, scores.chosen, scores.rejected, p, strict=True)]


def plot_calibration(measures: PairMeasures, path: str | Path, title: str = "") -> Path:
    """The reliability diagram of σ(Δr) (observed frequency ± s.e. per bin against the diagonal) over a histogram
    of the predictions."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    full = [b for b in measures.calibration if b.count]
    top.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    top.errorbar([b.predicted for b in full], [b.observed for b in full], yerr=[b.stderr for b in full],
                 fmt="o-", color="tab:blue", capsize=3, label="observed frequency ± s.e.")
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("observed P(first answer preferred)")
    acc = measures.accuracy
    top.set_title(title or "reward model calibration")
    top.text(0.02, 0.97, f"accuracy {acc.accuracy:.3f} ± {acc.stderr:.3f} (n = {acc.n})\nECE {measures.ece:.3f}",
             transform=top.transAxes, va="top", fontsize=9)
    top.legend(fontsize=8, loc="lower right")
    top.grid(True, alpha=0.3)
    bottom.bar([(b.lo + b.hi) / 2 for b in measures.calibration], [b.count for b in measures.calibration],
               width=[0.9 * (b.hi - b.lo) for b in measures.calibration], color="tab:blue", alpha=0.6)
    bottom.set_xlabel("predicted P(first answer preferred) = σ(r(x, y_a) − r(x, y_b))")
    bottom.set_ylabel("count (each pair\nin both orders)")
    bottom.grid(True, alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
