"""KL to the reference policy: per-token estimators (named after Schulman) and the KL-coefficient controllers.

With log-probs ``logp = log π(a_t|s_t)`` of the SAMPLED tokens under the policy and ``ref_logp`` under the
reference (ρ_sft for the prompter, π_F for the oracle), and r = π_ref/π = exp(ref_logp − logp):

- k1 = −log r = logp − ref_logp          unbiased, can be negative per token (what TRL's PPO shapes rewards with)
- k2 = ½ (log r)²                         biased, low variance, always ≥ 0 (only ``alignpro theory estimate``
                                          offers it, at the sequence level: :mod:`alignpro.theory.estimate`)
- k3 = (r − 1) − log r                    unbiased and always ≥ 0 (the GRPO loss penalty)

Summed over a response's tokens, each is an estimate of KL(π(·|x) ‖ π_ref(·|x)) in nats, the term of eq (2)
(weight β) and eq (9) (weight λ). See http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

import enum
import math

import numpy as np
import torch
from torch import Tensor

#: k3 exponentiates a log-ratio; beyond this the policy and reference disagree so much that the estimate is
#: meaningless anyway, and clamping keeps a loss finite.
K3_LOG_RATIO_CLAMP = 20.0


def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp − ref_logp, elementwise (…,)."""
    return logp - ref_logp


def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = (r − 1) − log r with r = exp(ref_logp − logp), elementwise (…,); log r clamped to ±20."""
    log_r = (ref_logp - logp).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return torch.expm1(log_r) - log_r


class KLEstimator(enum.Enum):
    """Which KL estimator (Schulman's k1/k2/k3) a Monte-Carlo estimate uses (``alignpro theory estimate``)."""

    K1 = "k1"
    K2 = "k2"
    K3 = "k3"


class KLControl(enum.Enum):
    """How the KL coefficient evolves: ``adaptive`` (TRL's controller, the paper's default) or ``fixed``."""

    ADAPTIVE = "adaptive"
    FIXED = "fixed"


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No change."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. (2019) / TRL's ``AdaptiveKLController``: steer the measured KL towards ``target``.

    e = clip(KL / target − 1, −0.2, 0.2);  coef ← coef · (1 + e · n_steps / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def make_kl_controller(control: KLControl, kl_coef: float, target: float, horizon: float):
    """The controller for ``control``; an infinite coefficient is always fixed (nothing to adapt)."""
    if control is KLControl.FIXED or math.isinf(kl_coef):
        return FixedKLController(kl_coef)
    return AdaptiveKLController(kl_coef, target, horizon)
