"""ρ* distillation (alignpro.train.distill): its weights are eq (10)'s, and repeated steps move ρ toward ρ*."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignpro.train.distill import distill_weights, sequence_log_ratio, weight_entropy, weighted_nll


def test_weights_are_eq10_by_hand():
    # one prompt, identity + 2 LM rewrites, ρ_θ = ρ_sft (log ratio 0): w ∝ ρ_sft(x′) exp(R/λ)
    alpha, lam = 0.5, 0.1
    r_id, r_lm = 0.3, np.array([0.5, 0.2])
    lm_w, id_w = distill_weights(r_lm[None], np.zeros((1, 2)), lam, alpha, np.array([r_id]))
    raw = np.array([alpha * math.exp(r_id / lam), 0.25 * math.exp(0.5 / lam), 0.25 * math.exp(0.2 / lam)])
    np.testing.assert_allclose(np.concatenate([id_w, lm_w[0]]), raw / raw.sum(), rtol=1e-12)


def test_weights_correct_for_sampling_from_the_current_prompter():
    # samples from ρ_θ ≠ ρ_sft: each LM candidate's prior carries ρ_sft/ρ_θ
    lam = 0.2
    r = np.array([[0.1, 0.4, 0.4]])
    log_ratio = np.array([[0.0, math.log(2.0), math.log(0.5)]])
    lm_w, id_w = distill_weights(r, log_ratio, lam)
    raw = np.array([1.0, 2.0, 0.5]) * np.exp(r[0] / lam)
    np.testing.assert_allclose(lm_w[0], raw / raw.sum(), rtol=1e-12)
    assert id_w[0] == 0.0


def test_lambda_limits():
    r = np.array([[0.1, 0.9, 0.5]])
    lm_w, _ = distill_weights(r, np.zeros((1, 3)), 0.0)
    np.testing.assert_array_equal(lm_w[0], [0, 1, 0])  # λ → 0: the argmax
    lm_w, _ = distill_weights(r, np.zeros((1, 3)), math.inf)
    np.testing.assert_allclose(lm_w[0], [1 / 3] * 3)  # λ → ∞: ρ_sft itself
    assert weight_entropy(lm_w) == pytest.approx(math.log(3))


def test_identity_needs_its_reward():
    with pytest.raises(ValueError, match="R̂"):
        distill_weights(np.zeros((1, 2)), np.zeros((1, 2)), 0.1, 0.5, None)


def test_weighted_nll_by_hand():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = torch.tensor([0.75, 0.25])
    expected = -(0.75 * (-3.0) + 0.25 * (-1.5)) / 1.0
    assert weighted_nll(logp, w, mask, 1).item() == pytest.approx(expected)
    assert weighted_nll(logp, w.unsqueeze(1) * mask, mask, 2).item() == pytest.approx(expected / 2)
    ratio = sequence_log_ratio(torch.zeros_like(logp), logp, mask)
    np.testing.assert_allclose(ratio.numpy(), [3.0, 1.5])


def _distill_tabular(alpha: float, steps: int, seed: int = 0):
    """ρ_θ = softmax(θ) over 5 enumerable rewrites; R exact; K samples per step from the current ρ_θ."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    theta0 = torch.tensor([0.5, 0.0, -0.5, 0.3, -1.0], dtype=torch.float64)
    R = np.array([0.2, 0.6, 0.5, 0.1, 0.4])
    r_id, lam, k = 0.45, 0.1, 8
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=0.5)
    log_sft = torch.log_softmax(theta0, 0)
    for _ in range(steps):
        logp_all = torch.log_softmax(theta, 0)
        idx = rng.choice(5, size=k, p=logp_all.detach().exp().numpy())
        lr_ = (log_sft[idx] - logp_all.detach()[idx]).numpy()
        lm_w, _ = distill_weights(R[idx][None], lr_[None], lam, alpha, np.array([r_id]))
        loss = weighted_nll(logp_all[idx].unsqueeze(1), torch.as_tensor(lm_w[0]), torch.ones(k, 1), 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # ρ* on the LM's support (eq 10): ∝ ρ_sft exp(R/λ); the identity's mass is not the LM's to learn
    target = torch.softmax(log_sft + torch.as_tensor(R) / lam, 0)
    rho = torch.softmax(theta.detach(), 0)
    kl = lambda p, q: float((p * (p.log() - q.log())).sum())  # noqa: E731
    return kl(target, torch.softmax(theta0, 0)), kl(target, rho)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_repeated_steps_move_rho_toward_rho_star(alpha):
    before, after = _distill_tabular(alpha, steps=400)
    assert before > 0.5
    assert after < 0.05 * before, (before, after)
