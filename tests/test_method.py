"""Tier 1: exact math of eq (10) on candidates, and the composed rollout (eq 3) with fakes."""

import math

import numpy as np
import pytest

from alignpro.backends.fake import FakePrompter, FakeReward, FakeTarget
from alignpro.backends.base import prompt_keys
from alignpro.method import (candidate_log_prior, composed_rollout, kl_to_prior, optimal_prompter_weights,
                             sample_candidates)


def test_weights_match_hand_computed_eq10():
    # prior (1/2, 1/4, 1/4), R = (0, 1, 0), λ = 1: w ∝ (1/2, e/4, 1/4) → normalise by (3 + e)/4
    prior = np.log([0.5, 0.25, 0.25])
    w = optimal_prompter_weights(np.array([0.0, 1.0, 0.0]), prior, lam=1.0)
    z = (3 + math.e) / 4
    np.testing.assert_allclose(w, [0.5 / z, math.e / 4 / z, 0.25 / z], rtol=1e-12)


def test_lambda_limits():
    prior = np.log([0.5, 0.3, 0.2])
    r = np.array([0.1, 0.9, 0.5])
    np.testing.assert_allclose(optimal_prompter_weights(r, prior, math.inf), [0.5, 0.3, 0.2])
    np.testing.assert_allclose(optimal_prompter_weights(r, prior, 0.0), [0, 1, 0])
    np.testing.assert_allclose(optimal_prompter_weights(r, prior, 1e-6), [0, 1, 0], atol=1e-12)
    # ties at λ = 0 split evenly
    np.testing.assert_allclose(optimal_prompter_weights(np.array([1.0, 1.0, 0.0]), prior, 0.0), [0.5, 0.5, 0])


def test_weights_stable_for_tiny_lambda_and_batched():
    r = np.array([[1000.0, 999.0], [0.0, 0.0]])
    w = optimal_prompter_weights(r, np.log([0.5, 0.5]), lam=1e-4)
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w.sum(-1), 1.0)
    np.testing.assert_allclose(w[1], [0.5, 0.5])


def test_negative_lambda_rejected():
    with pytest.raises(ValueError):
        optimal_prompter_weights(np.zeros(2), np.zeros(2), -1.0)


def test_candidate_prior_identity_mixture():
    lp = candidate_log_prior(4, 0.5)
    np.testing.assert_allclose(np.exp(lp), [0.5, 0.125, 0.125, 0.125, 0.125])
    np.testing.assert_allclose(np.exp(candidate_log_prior(4, 0.0)), [0.25] * 4)
    with pytest.raises(ValueError):
        candidate_log_prior(2, 1.0)


def test_kl_to_prior_exact():
    prior = np.log([0.5, 0.5])
    assert kl_to_prior(np.array([0.5, 0.5]), prior) == pytest.approx(0.0)
    assert kl_to_prior(np.array([1.0, 0.0]), prior) == pytest.approx(math.log(2))


def test_sampling_follows_weights():
    rng = np.random.default_rng(0)
    w = np.tile([0.2, 0.8], (20000, 1))
    idx = sample_candidates(w, rng)
    assert abs(idx.mean() - 0.8) < 0.01
    assert set(np.unique(idx)) == {0, 1}


def test_composed_rollout_scores_against_original_prompt():
    prompts = ["how do I bake bread", "what is rain"]
    ro = composed_rollout(prompts, FakePrompter(), FakeTarget(), FakeReward(), k=3, m=2, identity_prior=0.5, seed=0)
    assert ro.rewards.shape == (2, 4, 2)
    assert [c[0] for c in ro.candidates] == prompts  # identity first
    # re-score by hand against the ORIGINAL prompt
    for i, x in enumerate(prompts):
        for c in range(4):
            np.testing.assert_allclose(ro.rewards[i, c], FakeReward().score([x, x], ro.answers[i][c]))
    np.testing.assert_allclose(ro.r_hat, ro.rewards.mean(-1))
    again = composed_rollout(prompts, FakePrompter(), FakeTarget(), FakeReward(), k=3, m=2, identity_prior=0.5,
                             seed=0)
    np.testing.assert_array_equal(ro.rewards, again.rewards)


def test_composed_rollout_couples_the_candidates_of_one_prompt():
    """Answer j of every candidate of x draws from x's stream: a candidate equal to x gets x's very answers, and
    each row of answers is the fake target's keyed answers to that candidate."""
    prompts = ["how do I bake bread", "what is rain", "how do I bake bread"]
    ro = composed_rollout(prompts, FakePrompter(suffixes=("", " Please be kind.")), FakeTarget(), FakeReward(), k=4,
                          m=3, identity_prior=0.5, seed=3)
    keys = prompt_keys(prompts)
    assert keys[0] != keys[2]  # a repeated prompt is another x, with its own streams
    for i, key in enumerate(keys):
        for c, x_prime in enumerate(ro.candidates[i]):
            expected = FakeTarget().answer([x_prime], n=3, seed=4, keys=[key])[0]  # answer seed = seed + 1
            assert ro.answers[i][c] == [a.text for a in expected]
            if x_prime == prompts[i]:
                assert ro.answers[i][c] == ro.answers[i][0]  # same x′, same streams: same answers, ΔR̂ = 0
    assert ro.answers[0][0] != ro.answers[2][0]
    assert any(x_prime == prompts[i] for i in range(3) for x_prime in ro.candidates[i][1:])  # the case occurs
