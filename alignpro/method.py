"""Align-Pro's composed system (eq 3) and its closed-form optimal prompter (eq 10), on sampled candidates.

Notation (paper): x the original prompt, x′ a rewrite, ρ_sft the initial prompter, π_F the frozen target,
r(x, y) the reward, R(x, x′) = E_{y~π_F(·|x′)} r(x, y), λ the prompt-tuning parameter.

ρ_sft may be a mixture of the identity (keep x, prior mass ``identity_prior`` = α) and the LM rewriter
(mass 1 − α). With K LM rewrites x′_1..x′_K ~ ρ_LM(·|x) and, when α > 0, the identity candidate x′_0 = x,
ρ* (eq 10) is represented by self-normalised weights over the candidates:

    w_0 ∝ α · exp(R̂(x, x)/λ),   w_k ∝ (1 − α)/K · exp(R̂(x, x′_k)/λ),

the standard importance representation of ρ* ∝ ρ_sft · exp(R/λ) on samples from ρ_sft. λ → 0 gives the argmax
of R̂, λ → ∞ gives ρ_sft itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from alignpro.backends.base import Prompter, RewardModel, RewriteSet, Target, prompt_keys


def candidate_log_prior(k: int, identity_prior: float) -> np.ndarray:
    """log ρ_sft mass of each candidate: (K+1,) with the identity first when α > 0, else (K,) uniform."""
    if not 0.0 <= identity_prior < 1.0:
        raise ValueError(f"identity_prior must be in [0, 1), got {identity_prior}")
    lm = np.full(k, math.log((1.0 - identity_prior) / k))
    return np.concatenate([[math.log(identity_prior)], lm]) if identity_prior > 0 else lm


def optimal_prompter_weights(r_hat: np.ndarray, log_prior: np.ndarray, lam: float) -> np.ndarray:
    """Eq (10) on candidates: w ∝ ρ_sft(x′|x) · exp(R̂(x, x′)/λ), normalised over the last axis.

    ``r_hat`` and ``log_prior`` are (..., C). ``lam = 0`` returns the argmax (ties split evenly),
    ``lam = inf`` returns the prior. Computed in log-space (stable for any λ > 0).
    """
    r_hat = np.asarray(r_hat, dtype=float)
    log_prior = np.broadcast_to(np.asarray(log_prior, dtype=float), r_hat.shape)
    if lam < 0 or math.isnan(lam):
        raise ValueError(f"lambda must be >= 0, got {lam}")
    if math.isinf(lam):
        logits = log_prior.copy()
    elif lam == 0:
        best = r_hat == r_hat.max(axis=-1, keepdims=True)
        return best / best.sum(axis=-1, keepdims=True)
    else:
        logits = log_prior + r_hat / lam
    logits = logits - logits.max(axis=-1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=-1, keepdims=True)


def kl_to_prior(weights: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """KL(ρ* ‖ ρ_sft) on the candidate support, (..., C) → (...): Σ w (log w − log prior)."""
    w = np.asarray(weights, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(w > 0, w * (np.log(w) - log_prior), 0.0)
    return terms.sum(axis=-1)


def sample_candidates(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One candidate index per row of ``weights`` (N, C) → (N,)."""
    cum = np.cumsum(weights, axis=-1)
    u = rng.random((weights.shape[0], 1)) * cum[:, -1:]
    return (u > cum).sum(axis=-1)


@dataclass
class CandidateRollout:
    """Everything the composed system (eq 3) produced for N prompts: x → x′ → y → r(x, y)."""

    prompts: list[str]  #: (N,) original prompts x
    candidates: list[list[str]]  #: (N, C) candidate prompts x′ (identity first when α > 0)
    rewrite_sets: list[RewriteSet]  #: (N,) the K LM rewrites with their log-probs
    answers: list[list[list[str]]]  #: (N, C, M) answers y ~ π_F(·|x′)
    rewards: np.ndarray  #: (N, C, M) r(x, y) against the ORIGINAL x
    log_prior: np.ndarray  #: (C,) log ρ_sft of each candidate slot

    @property
    def r_hat(self) -> np.ndarray:
        """(N, C) R̂(x, x′): mean reward over the M answers."""
        return self.rewards.mean(axis=-1)


def composed_rollout(prompts: Sequence[str], prompter: Prompter, target: Target, reward: RewardModel, *,
                     k: int, m: int, identity_prior: float, seed: int, keys: Sequence[str] | None = None,
                     answer_seed: int | None = None) -> CandidateRollout:
    """Eq (3), sampled: K rewrites per x (+ x itself when α > 0), M answers each, scored against x.

    The rewrites draw from ``seed``; answer j of every candidate of x draws from the stream (``answer_seed``,
    key of x, j) (default ``seed + 1``, keys :func:`~alignpro.backends.base.prompt_keys` of ``prompts``): the
    candidates of one x are coupled, so differences of R̂ between them lose the answer noise they share."""
    prompts = list(prompts)
    keys = prompt_keys(prompts) if keys is None else list(keys)
    sets = prompter.rewrite(prompts, k, seed=seed)
    cands = [([p] if identity_prior > 0 else []) + s.texts for p, s in zip(prompts, sets)]
    c = len(cands[0])
    flat = [x for row in cands for x in row]
    answers_flat = target.answer(flat, n=m, seed=seed + 1 if answer_seed is None else answer_seed,
                                 keys=[key for key in keys for _ in range(c)])  # (N·C, M)
    texts = [[a.text for a in row] for row in answers_flat]
    originals = [p for p in prompts for _ in range(c) for _ in range(m)]
    scores = reward.score(originals, [t for row in texts for t in row])
    rewards = np.asarray(scores, dtype=float).reshape(len(prompts), c, m)
    answers = [texts[i * c:(i + 1) * c] for i in range(len(prompts))]
    return CandidateRollout(prompts, cands, sets, answers, rewards, candidate_log_prior(k, identity_prior))
