"""Per-token log-probs, masked statistics and the clipped PPO losses, as pure functions of tensors.

Shapes: B rollouts, T response tokens, V vocabulary. ``mask`` (B, T) is 1 on real response tokens (the EOS
included) and 0 on the right padding after it.
"""

from __future__ import annotations

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------------------------- log-probs
def logprobs_from_logits(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) at ``tokens``: (B, T, V), (B, T) → (B, T)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / temperature) per position: (B, T, V) → (B, T)."""
    z = logits.float() / temperature  # (B, T, V)
    p = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (p * z).sum(-1)  # (B, T)


# ------------------------------------------------------------------------------------------ masked statistics
def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over everything, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance of ``x`` where ``mask`` is 1 (0 when fewer than two entries)."""
    n = mask.sum()
    if n < 2:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask) * n / (n - 1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − mean) / std over the masked entries (TRL's ``masked_whiten``); padding is set to 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# --------------------------------------------------------------------------------------------------- losses
def clipped_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                        cliprange: float) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate, token-level: mean of max(−A·ratio, −A·clip(ratio, 1 ± ε)) over real tokens.

    Returns (loss, clip fraction, approx KL(old ‖ new) = mean ½(log ratio)²); all scalars.
    """
    log_ratio = logp - old_logp  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(0.5 * log_ratio.detach() ** 2, mask)
    return loss, clip_frac.detach(), approx_kl


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                       cliprange_value: float) -> tuple[Tensor, Tensor]:
    """PPO's clipped value loss: ½ mean of max((V − R)², (clip(V, V_old ± ε) − R)²). Returns (loss, clip fraction)."""
    v_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)  # (B, T)
    l_unclipped = (values - returns) ** 2
    l_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l_unclipped, l_clipped), mask)
    return loss, masked_mean((l_clipped > l_unclipped).float(), mask).detach()
