"""Advantage estimators: ``gae`` (PPO with a value head), ``rloo`` and ``grpo`` (critic-free, opt-in).
``distill`` (:mod:`alignpro.train.distill`) has none: it weights its samples by eq (10) instead.

The pure equations are :func:`gae`, :func:`rloo` and :func:`grpo`. Each algorithm also has one ``estimate_*``
function with the same signature, which turns a rollout's scores r(x, y), per-token KL k1 and values into
per-token rewards, advantages and returns; :class:`Algo` maps the algorithm's name to it.

Shapes: B rollouts (= prompts × K samples, the K samples of a prompt adjacent), T response tokens.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from alignpro.train.losses import masked_whiten


# ---------------------------------------------------------------------------------------------- the equations
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each response.

    δ_t = r_t + γ V(s_{t+1}) − V(s_t),   A_t = δ_t + γ λ A_{t+1},   R_t = A_t + V(s_t);
    V and A are 0 after the last real token. (B, T) × 3 → advantages (B, T), returns (B, T).
    """
    rewards, values = rewards * mask, values * mask
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def rloo(scores: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): A_i = r_i − mean_{j≠i} r_j within each group of K.

    (B,) → (B,), B = N·K with each prompt's K samples adjacent.
    """
    k = group_size
    if k < 2:
        raise ValueError(f"rloo needs at least 2 samples per prompt, got {k}")
    r = scores.view(-1, k)  # (N, K)
    baseline = (r.sum(dim=1, keepdim=True) - r) / (k - 1)
    return (r - baseline).view(-1)


def grpo(scores: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """Group-relative advantage (Shao et al. 2024): A_i = (r_i − mean_group) / (std_group + eps). (B,) → (B,)."""
    k = group_size
    if k < 2:
        raise ValueError(f"grpo needs at least 2 samples per prompt, got {k}")
    r = scores.view(-1, k)  # (N, K)
    return ((r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + eps)).view(-1)


def last_token_index(mask: Tensor) -> Tensor:
    """(B, T) → (B,) index of each response's last real token."""
    return (mask.sum(dim=1).long() - 1).clamp(min=0)


def kl_shaped_token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """TRL's PPO reward: −kl_coef · k1 on every token, plus the score r(x, y) on the last one. → (B, T)."""
    rewards = -kl_coef * kl * mask  # (B, T)
    rewards[torch.arange(len(scores)), last_token_index(mask)] += scores
    return rewards


# ------------------------------------------------------------------------- one estimator per algorithm
@dataclass
class Estimate:
    rewards: Tensor  #: (B, T) per-token reward the advantages were computed from
    advantages: Tensor  #: (B, T)
    returns: Tensor | None  #: (B, T) value targets (ppo only)


def estimate_ppo(scores: Tensor, kl: Tensor, mask: Tensor, values: Tensor | None, *, kl_coef: float,
                 group_size: int, gamma: float, lam: float, whiten: bool = True) -> Estimate:
    """PPO: KL-shaped per-token rewards, GAE with the value head, advantages whitened (as TRL)."""
    if values is None:
        raise ValueError("ppo needs the value head's values")
    rewards = kl_shaped_token_rewards(scores, kl, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return Estimate(rewards, advantages, returns)


def estimate_rloo(scores: Tensor, kl: Tensor, mask: Tensor, values: Tensor | None, *, kl_coef: float,
                  group_size: int, gamma: float, lam: float, whiten: bool = True) -> Estimate:
    """RLOO: sequence reward r(x, y) − kl_coef·Σ_t k1, leave-one-out baseline, the same advantage on every token."""
    seq_reward = scores - kl_coef * (kl * mask).sum(dim=1)  # (B,)
    adv = rloo(seq_reward, group_size)  # (B,)
    rewards = torch.zeros_like(kl)
    rewards[torch.arange(len(scores)), last_token_index(mask)] = seq_reward
    return Estimate(rewards, adv.unsqueeze(1) * mask, None)


def estimate_grpo(scores: Tensor, kl: Tensor, mask: Tensor, values: Tensor | None, *, kl_coef: float,
                  group_size: int, gamma: float, lam: float, whiten: bool = True) -> Estimate:
    """GRPO: group-normalised r(x, y) on every token; the KL (k3) goes into the loss, not the reward."""
    adv = grpo(scores, group_size)  # (B,)
    rewards = torch.zeros_like(kl)
    rewards[torch.arange(len(scores)), last_token_index(mask)] = scores
    return Estimate(rewards, adv.unsqueeze(1) * mask, None)


class Algo(enum.Enum):
    """The advantage estimator; ``.estimate`` is its function."""

    PPO = "ppo"
    RLOO = "rloo"
    GRPO = "grpo"
    DISTILL = "distill"  #: ρ* distillation (alignpro.train.distill): weights of eq (10), not advantages

    @property
    def estimate(self) -> Callable[..., Estimate]:
        if self is Algo.DISTILL:
            raise ValueError("distill has no advantage estimator: its per-rollout weights come from eq (10) "
                             "(alignpro.train.distill.distill_weights)")
        return {Algo.PPO: estimate_ppo, Algo.RLOO: estimate_rloo, Algo.GRPO: estimate_grpo}[self]

    @property
    def uses_critic(self) -> bool:
        """A value head and a value loss (ppo)."""
        return self is Algo.PPO

    @property
    def kl_in_loss(self) -> bool:
        """The KL penalty is a loss term (grpo, k3) instead of a reward term (ppo, rloo, k1)."""
        return self is Algo.GRPO
