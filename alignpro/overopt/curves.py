"""The over-optimisation curves as pure functions: one point per (method, proxy, setting), gold and proxy reward
against √KL (Gao et al. 2023's axis), each with its standard error over prompts.

Shapes: P eval prompts, C candidates per prompt (x first, then K rewrites of ρ_sft), A fresh answers per candidate.

The closed form (eq 10) over a λ sweep is computed from ONE pool of samples: R̂_proxy(x, x′) on M selection
answers picks the weights ρ*_λ; gold and proxy are then read on A *fresh* answers to each candidate, never on the
answers that chose it, and weighted by ρ*_λ, so a point is E_{x′~ρ*_λ} E_{y~π_F(·|x′)} r(x, y) estimated without
selection bias. Its KL is the exact KL(ρ*_λ ‖ ρ_sft) on the candidate support (eq 10's weights against the prior).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from alignpro.method import kl_to_prior, optimal_prompter_weights
from alignpro.metrics import standard_error


def stderr(values: np.ndarray) -> float:
    """Standard error of the mean of 1-D values (:func:`alignpro.metrics.standard_error`; 0 for fewer than 2)."""
    return standard_error(values)


@dataclass(frozen=True)
class CurvePoint:
    """One policy on the curve of one method optimising one proxy, measured on the eval prompts."""

    method: str  #: closed_form | prompter | oracle
    proxy: str  #: the proxy's label, e.g. "N=200"
    setting: str  #: "λ=0.1" for the closed form, "step 8" for a trained checkpoint
    kl: float  #: mean KL(policy ‖ its start) over prompts, nats
    kl_stderr: float
    gold: float  #: mean gold reward (e.g. the fraction of IFEval instructions followed)
    gold_stderr: float
    proxy_reward: float  #: mean proxy reward r_φ (the Bradley–Terry logit scale)
    proxy_stderr: float
    gold_gain: float  #: paired gold − the method's start (λ = ∞ / step 0), mean over prompts
    gold_gain_stderr: float
    n_prompts: int
    n_answers: int  #: fresh answers behind the point (all prompts)
    gold_by_prompt: tuple[float, ...] = field(default=(), repr=False)  #: (P,) in eval-prompt order, for pairing

    @property
    def sqrt_kl(self) -> float:
        return math.sqrt(max(self.kl, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sqrt_kl": self.sqrt_kl}


def make_point(method: str, proxy: str, setting: str, kl: np.ndarray, gold: np.ndarray, proxy_reward: np.ndarray,
               gold_start: np.ndarray, n_answers: int) -> CurvePoint:
    """A point from per-prompt values (P,): its KL, gold and proxy reward, and the method's start's gold."""
    kl, gold, proxy_reward, gold_start = (np.asarray(a, dtype=float) for a in (kl, gold, proxy_reward, gold_start))
    gain = gold - gold_start
    return CurvePoint(method, proxy, setting, float(kl.mean()), stderr(kl), float(gold.mean()), stderr(gold),
                      float(proxy_reward.mean()), stderr(proxy_reward), float(gain.mean()), stderr(gain),
                      len(gold), n_answers, tuple(float(g) for g in gold))


def closed_form_curve(proxy: str, lams: Sequence[float], r_hat_proxy: np.ndarray, log_prior: np.ndarray,
                      gold_fresh: np.ndarray, proxy_fresh: np.ndarray) -> list[CurvePoint]:
    """Eq (10) on the pool for each λ: weights from R̂_proxy (P, C) on the selection answers and the prior (C,);
    gold and proxy on the fresh answers (P, C, A), weighted by ρ*_λ; gains paired against ρ_sft (λ = ∞)."""
    gold_c, proxy_c = gold_fresh.mean(axis=-1), proxy_fresh.mean(axis=-1)  # (P, C)
    prior = np.exp(log_prior)
    start = (gold_c * prior).sum(axis=-1)  # (P,) ρ_sft's expected gold
    n_answers = int(gold_fresh.size)
    points = []
    for lam in lams:
        w = optimal_prompter_weights(r_hat_proxy, log_prior, lam)  # (P, C)
        points.append(make_point("closed_form", proxy, f"λ={lam:g}", kl_to_prior(w, log_prior),
                                 (w * gold_c).sum(axis=-1), (w * proxy_c).sum(axis=-1), start, n_answers))
    return points


@dataclass(frozen=True)
class CurveSummary:
    """Where one curve peaks in gold, and what it lost after the peak per nat of KL."""

    method: str
    proxy: str
    start_gold: float
    peak_setting: str
    peak_sqrt_kl: float
    peak_gold: float
    peak_gold_stderr: float
    last_setting: str  #: the point of largest KL
    last_sqrt_kl: float
    last_gold: float
    last_gold_stderr: float
    gold_drop_after_peak: float  #: peak gold − last gold (≥ 0)
    gold_drop_stderr: float  #: over prompts, paired (the peak and the last point are measured on the same prompts)
    kl_after_peak: float  #: last KL − peak KL (nats)
    gold_lost_per_nat: float | None  #: drop / KL after the peak; None when the peak is the last point
    gold_lost_per_nat_stderr: float | None  #: the drop's standard error / KL after the peak (KL taken as known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_curve(points: Sequence[CurvePoint]) -> CurveSummary:
    """Peak (highest mean gold) and last (largest KL) point of one curve; the gold lost per nat between them.

    The peak is the best of several noisy points, so its gold (and the drop after it) leans high; the drop's
    standard error is that of the paired per-prompt difference and does not include this selection."""
    if not points:
        raise ValueError("summarise_curve: no points")
    by_kl = sorted(points, key=lambda p: p.kl)
    start, last = by_kl[0], by_kl[-1]
    peak = max(by_kl, key=lambda p: p.gold)
    kl_after = last.kl - peak.kl
    drop = peak.gold - last.gold
    paired = np.asarray(peak.gold_by_prompt, dtype=float) - np.asarray(last.gold_by_prompt, dtype=float)
    drop_se = stderr(paired)  # 0 when the points carry no per-prompt gold
    per_nat = drop / kl_after if kl_after > 0 else None
    per_nat_se = drop_se / kl_after if kl_after > 0 else None
    return CurveSummary(points[0].method, points[0].proxy, start.gold, peak.setting, peak.sqrt_kl, peak.gold,
                        peak.gold_stderr, last.setting, last.sqrt_kl, last.gold, last.gold_stderr, drop, drop_se,
                        kl_after, per_nat, per_nat_se)
