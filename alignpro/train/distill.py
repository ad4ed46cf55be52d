"""ρ* distillation (``--algo distill``): expert iteration toward the closed-form optimum of eq (10).

Beyond the paper. Eq (10) says the optimal prompter is ρ*(x′|x) ∝ ρ_sft(x′|x) · exp(R(x, x′)/λ). Each step:

1. sample K rewrites x′_1..x′_K from the CURRENT ρ_θ (plus x itself when ρ_sft holds the identity, mass α);
2. estimate R̂(x, x′_k) with M answers of π_F (and R̂(x, x) = b(x), π_F's mean reward on x);
3. represent ρ* on these candidates with :func:`alignpro.method.optimal_prompter_weights`. The candidates come
   from ρ_θ, not ρ_sft, so each LM candidate's prior carries the importance ratio ρ_sft/ρ_θ (self-normalised):

       w_0 ∝ α · exp(R̂(x, x)/λ),   w_k ∝ (1 − α)/K · ρ_sft(x′_k|x)/ρ_θ(x′_k|x) · exp(R̂(x, x′_k)/λ);

   this is where the KL term to ρ_sft of eq (9) enters (λ = ``kl_coef``): at ρ_θ = ρ* the target is ρ_θ itself;
4. update ρ_θ by the weighted log-likelihood −Σ_k w_k log ρ_θ(x′_k|x), i.e. a step on KL(ρ* ‖ ρ_θ).

The identity x′ = x cannot be written by the LM, so w_0 is the mass that stays put: when x beats every rewrite,
w_0 ≈ 1 and that prompt moves ρ_θ hardly at all (rejection sampling, as RAFT and BPO use in practice).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from alignpro.method import candidate_log_prior, optimal_prompter_weights


def distill_weights(r_hat_lm: np.ndarray, log_ratio: np.ndarray, lam: float, identity_prior: float = 0.0,
                    r_hat_identity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ρ*'s weights (eq 10) on each prompt's candidates, from samples of the current ρ_θ.

    ``r_hat_lm`` (N, K): R̂ of the K LM rewrites; ``log_ratio`` (N, K): log ρ_sft(x′_k|x) − log ρ_θ(x′_k|x) of each
    rewrite (0 while ρ_θ = ρ_sft); ``r_hat_identity`` (N,): R̂(x, x), needed when ``identity_prior`` α > 0.
    Returns (LM weights (N, K), identity weight (N,)); per prompt they sum to 1.
    """
    r_hat_lm, log_ratio = np.asarray(r_hat_lm, dtype=float), np.asarray(log_ratio, dtype=float)
    n, k = r_hat_lm.shape
    log_prior = candidate_log_prior(k, identity_prior)  # (C,) identity first when α > 0
    if identity_prior > 0:
        if r_hat_identity is None:
            raise ValueError("identity_prior > 0 needs R̂(x, x) (r_hat_identity)")
        r_hat = np.concatenate([np.asarray(r_hat_identity, dtype=float).reshape(n, 1), r_hat_lm], axis=1)
        ratio = np.concatenate([np.zeros((n, 1)), log_ratio], axis=1)
    else:
        r_hat, ratio = r_hat_lm, log_ratio
    w = optimal_prompter_weights(r_hat, log_prior + ratio, lam)  # (N, C)
    if identity_prior > 0:
        return w[:, 1:], w[:, 0]
    return w, np.zeros(n)


def weighted_nll(logprobs: Tensor, weights: Tensor, mask: Tensor, n_prompts: float) -> Tensor:
    """−(1/N) Σ_i w_i log ρ_θ(x′_i|x): the weighted log-likelihood of the candidates, summed over each response's
    tokens. ``logprobs`` (B, T) per-token log-probs, ``weights`` (B,) or (B, T) (the same value on every token),
    ``mask`` (B, T), ``n_prompts`` the prompts the B rows belong to."""
    w = weights if weights.dim() == 2 else weights.unsqueeze(1)
    return -(w * logprobs * mask).sum() / max(float(n_prompts), 1.0)


def weight_entropy(weights: np.ndarray) -> float:
    """Mean entropy (nats) of the weights per prompt: 0 = one candidate takes all, log C = uniform."""
    w = np.asarray(weights, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(w > 0, w * np.log(w), 0.0).sum(axis=-1)
    return float(np.mean(h)) if h.size else math.nan


def sequence_log_ratio(ref_logprobs: Tensor, logprobs: Tensor, mask: Tensor) -> Tensor:
    """(B,) log ρ_sft(x′|x) − log ρ_θ(x′|x) of each sampled response."""
    return ((ref_logprobs - logprobs) * mask).sum(dim=1)


def weights_to_tensor(lm_weights: np.ndarray, like: Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(lm_weights).reshape(-1), dtype=like.dtype, device=like.device)
