"""Tier 1 (pure math, exact): alignpro.theory.tabular on hand-computed instances, edge cases and validation."""

import json
import math

import numpy as np
import pytest

from alignpro.theory import (
    InvalidInstanceError, TabularInstance, analyse, composed_policy, expected_reward, frozen_reward,
    gap_decomposition, kl_divergence, optimal_policy, optimal_prompter, optimal_prompter_kl,
    prompter_log_partition, prompter_objective, prompter_objective_per_prompt, random_instance, suboptimality_gap,
    theorem1_bound, tv_distance,
)

LN2, LN3 = math.log(2), math.log(3)

# The hand instance (n = m = 2). Prompt 1's frozen answers are always good (r = 1); prompt 0's are a coin flip.
#   P = (1/4, 3/4), ρ_sft(·|x) = (1/2, 1/2) for both x, π_F(·|0) = (1/2, 1/2), π_F(·|1) = (0, 1),
#   r(x, ·) = (0, 1) for both x, r_max = 1; β = 1/ln 3 so e^{r/β} = 3^r; λ = 1/(2 ln 3) so e^{R/λ} = 9^R.
HAND = dict(P=[0.25, 0.75], rho_sft=[[0.5, 0.5], [0.5, 0.5]], pi_F=[[0.5, 0.5], [0.0, 1.0]],
            r=[[0.0, 1.0], [0.0, 1.0]], r_max=1.0)
BETA, LAM = 1 / LN3, 1 / (2 * LN3)


@pytest.fixture
def hand():
    return TabularInstance(**HAND)


def test_hand_instance_every_quantity(hand):
    # Lemma 1: R(x, x′) = Σ_y r(x, y) π_F(y|x′) = P(y = 1 | x′): R(·, 0) = 1/2, R(·, 1) = 1 for both x.
    R = frozen_reward(hand.pi_F, hand.r)
    np.testing.assert_allclose(R, [[0.5, 1.0], [0.5, 1.0]], atol=1e-15)
    # eq (4): π*(·|0) ∝ (1/2 · 3⁰, 1/2 · 3¹) = (1/4, 3/4); π*(·|1) ∝ (0, 3) = (0, 1).
    pi_star = optimal_policy(hand.pi_F, hand.r, BETA)
    np.testing.assert_allclose(pi_star, [[0.25, 0.75], [0.0, 1.0]], atol=1e-15)
    # eq (10): ρ*(·|x) ∝ (1/2 · 9^{1/2}, 1/2 · 9¹) = (3/2, 9/2) → (1/4, 3/4); Z(x) = 3/2 + 9/2 = 6.
    rho_star = optimal_prompter(hand.rho_sft, R, LAM)
    np.testing.assert_allclose(rho_star, [[0.25, 0.75], [0.25, 0.75]], atol=1e-15)
    np.testing.assert_allclose(prompter_log_partition(hand.rho_sft, R, LAM), [math.log(6)] * 2, atol=1e-15)
    # eq (3): π̃(·|x) = 1/4 · (1/2, 1/2) + 3/4 · (0, 1) = (1/8, 7/8) for both x.
    pi_tilde = composed_policy(rho_star, hand.pi_F)
    np.testing.assert_allclose(pi_tilde, [[0.125, 0.875], [0.125, 0.875]], atol=1e-15)
    # J(π*) = 1/4 · 3/4 + 3/4 · 1 = 15/16; J(π̃) = 7/8; J(π_F) = 1/4 · 1/2 + 3/4 · 1 = 7/8.
    assert expected_reward(hand.P, pi_star, hand.r) == pytest.approx(15 / 16, abs=1e-15)
    assert expected_reward(hand.P, pi_tilde, hand.r) == pytest.approx(7 / 8, abs=1e-15)
    assert expected_reward(hand.P, hand.pi_F, hand.r) == pytest.approx(7 / 8, abs=1e-15)
    # eq (5): gap = 15/16 − 7/8 = 1/16.
    assert suboptimality_gap(hand.P, hand.r, pi_star, pi_tilde) == pytest.approx(1 / 16, abs=1e-15)
    # eq (7): Δ1(0) = 3/4 − 1/2 = 1/4, Δ1(1) = 1 − 1 = 0 → E Δ1 = 1/16;
    #         Δ2(0) = 1/2 − 7/8 = −3/8, Δ2(1) = 1 − 7/8 = 1/8 → E Δ2 = −3/32 + 3/32 = 0.
    dec = gap_decomposition(hand.P, hand.r, pi_star, hand.pi_F, pi_tilde)
    np.testing.assert_allclose(dec.delta1_per_prompt, [0.25, 0.0], atol=1e-15)
    np.testing.assert_allclose(dec.delta2_per_prompt, [-0.375, 0.125], atol=1e-15)
    assert (dec.delta1, dec.delta2, dec.total) == pytest.approx((1 / 16, 0.0, 1 / 16), abs=1e-15)
    # KL(ρ*(·|x)‖ρ_sft(·|x)) = 1/4 ln(1/2) + 3/4 ln(3/2) = (3/4) ln 3 − ln 2 for both x.
    kl = (3 / 4) * LN3 - LN2
    np.testing.assert_allclose(optimal_prompter_kl(hand.rho_sft, R, LAM), [kl, kl], atol=1e-15)
    np.testing.assert_allclose(kl_divergence(rho_star, hand.rho_sft), [kl, kl], atol=1e-15)
    # eq (11): term1 = r_max E d_TV(π*, π_F) = 1/4 · 1/4 + 3/4 · 0 = 1/16;
    #          term2 = r_max E_x Σ_x′ ρ_sft d_TV(π_F(x), π_F(x′)) = 1/2 · 1/2 (d_TV(π_F(0), π_F(1)) = 1/2) = 1/4;
    #          term3 = −λ KL = −((3/4) ln 3 − ln 2)/(2 ln 3) = −3/8 + ln 2/(2 ln 3);
    #          bound = 1/16 + 1/4 − 3/8 + ln 2/(2 ln 3) = ln 2/(2 ln 3) − 1/16 ≈ 0.25296.
    b = theorem1_bound(hand.P, pi_star, hand.pi_F, hand.rho_sft, R, hand.r_max, LAM)
    assert b.term1 == pytest.approx(1 / 16, abs=1e-15)
    assert b.term2 == pytest.approx(1 / 4, abs=1e-15)
    assert b.term3 == pytest.approx(-3 / 8 + LN2 / (2 * LN3), abs=1e-15)
    assert b.total == pytest.approx(LN2 / (2 * LN3) - 1 / 16, abs=1e-15)
    assert b.total == pytest.approx(b.term1 + b.term2 + b.term3, abs=1e-15)
    # eq (9) at ρ*: E_ρ* R − λ KL = 7/8 − 3/8 + ln 2/(2 ln 3) = 1/2 + ln 2/(2 ln 3) = λ ln Z = ln 6/(2 ln 3).
    objective = prompter_objective(hand.P, rho_star, hand.rho_sft, R, LAM)
    assert objective == pytest.approx(0.5 + LN2 / (2 * LN3), abs=1e-15)
    assert objective == pytest.approx(math.log(6) / (2 * LN3), abs=1e-15)


def test_hand_instance_through_analyse(hand):
    a = analyse(hand, LAM, BETA)
    assert a.gap == pytest.approx(1 / 16, abs=1e-15)
    assert (a.delta1, a.delta2) == pytest.approx((1 / 16, 0.0), abs=1e-15)
    assert a.bound.total == pytest.approx(LN2 / (2 * LN3) - 1 / 16, abs=1e-15)
    assert a.objective == pytest.approx(0.5 + LN2 / (2 * LN3), abs=1e-15)
    assert a.kl == pytest.approx(0.75 * LN3 - LN2, abs=1e-15)
    np.testing.assert_allclose(a.rho_star, [[0.25, 0.75]] * 2, atol=1e-15)
    d = a.to_dict()
    assert {"gap", "delta1", "delta2", "term1", "term2", "term3", "bound", "objective", "rho_star"} <= set(d)
    json.dumps(d)  # JSON-safe


def test_distances():
    assert tv_distance([1, 0], [0, 1]) == 1.0
    assert tv_distance([0.5, 0.5], [0.25, 0.75]) == 0.25
    assert kl_divergence([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(LN2)  # 0 log 0 = 0
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf  # p not ≪ q


def test_limits_of_lambda(hand):
    R = frozen_reward(hand.pi_F, hand.r)
    # λ → ∞: no prompt optimisation, ρ* → ρ_sft; λ → 0: ρ* → the argmax of R(x, ·) on supp ρ_sft.
    np.testing.assert_allclose(optimal_prompter(hand.rho_sft, R, 1e12), hand.rho_sft, atol=1e-9)
    np.testing.assert_allclose(optimal_prompter(hand.rho_sft, R, 1e-6), [[0, 1], [0, 1]], atol=1e-12)
    # β → ∞: π* → π_F so Δ1 → 0; β → 0: π* → argmax_y r.
    np.testing.assert_allclose(optimal_policy(hand.pi_F, hand.r, 1e12), hand.pi_F, atol=1e-9)
    np.testing.assert_allclose(optimal_policy(hand.pi_F, hand.r, 1e-6), [[0, 1], [0, 1]], atol=1e-12)


def test_zero_probabilities_are_respected():
    # ρ_sft(1|0) = 0: ρ* keeps it 0 whatever R says (the KL of eq 9 forbids leaving the support).
    inst = TabularInstance(P=[1.0, 0.0], rho_sft=[[1.0, 0.0], [0.5, 0.5]], pi_F=[[1.0, 0.0], [0.0, 1.0]],
                           r=[[0.0, 1.0], [0.0, 1.0]], r_max=1.0)
    for lam in (1e-4, 1.0, 1e4):
        a = analyse(inst, lam, 1.0)
        assert a.rho_star[0].tolist() == [1.0, 0.0]
        assert a.kl == 0.0 and a.bound.term3 == 0.0
        assert all(math.isfinite(v) for v in (a.gap, a.bound.total, a.objective))


@pytest.mark.parametrize("lam", [1e-4, 1e-2, 1.0, 1e2, 1e4])
@pytest.mark.parametrize("beta", [1e-4, 1.0, 1e4])
def test_extreme_temperatures_stay_finite(lam, beta):
    rng = np.random.default_rng(7)
    for _ in range(5):
        inst = random_instance(rng, r_max=10.0, sharpness=8.0)  # R/λ up to 1e5: exp would overflow
        a = analyse(inst, lam, beta)
        values = [a.gap, a.delta1, a.delta2, a.bound.term1, a.bound.term2, a.bound.term3, a.objective, a.kl]
        assert all(math.isfinite(v) for v in values)
        assert np.isfinite(a.rho_star).all() and np.isfinite(a.pi_star).all()
        np.testing.assert_allclose(a.rho_star.sum(axis=1), 1.0, atol=1e-12)
        assert a.gap <= a.bound.total + 1e-9 * inst.r_max


def test_stable_kl_matches_generic_and_stays_exact_when_rho_star_is_rho_sft():
    rng = np.random.default_rng(3)
    inst = random_instance(rng, n=5, m=4)
    R = frozen_reward(inst.pi_F, inst.r)
    for lam in (0.1, 1.0, 10.0):
        np.testing.assert_allclose(optimal_prompter_kl(inst.rho_sft, R, lam),
                                   kl_divergence(optimal_prompter(inst.rho_sft, R, lam), inst.rho_sft),
                                   rtol=1e-9, atol=1e-14)
    # m = 1: R(x, ·) is constant, so ρ* = ρ_sft and λ KL must be exactly 0 even at λ = 1e4.
    flat = random_instance(rng, n=4, m=1)
    assert optimal_prompter_kl(flat.rho_sft, frozen_reward(flat.pi_F, flat.r), 1e4).tolist() == [0.0] * 4


def test_objective_at_rho_star_is_lambda_log_z():
    rng = np.random.default_rng(5)
    inst = random_instance(rng, n=6, m=3, sharpness=1.0)
    R = frozen_reward(inst.pi_F, inst.r)
    for lam in (0.05, 0.5, 5.0):
        rho_star = optimal_prompter(inst.rho_sft, R, lam)
        np.testing.assert_allclose(prompter_objective_per_prompt(rho_star, inst.rho_sft, R, lam),
                                   lam * prompter_log_partition(inst.rho_sft, R, lam), rtol=1e-12)


def test_bound_needs_rewards_in_zero_to_r_max():
    """Why the convention r ∈ [0, r_max] matters: with r ∈ [−1, 1] and r_max := max|r| = 1 the bound fails.

    n = 1 (no rewriting possible), m = 2, π_F = (½, ½), r = (−1, 1), β → 0 so π* = (0, 1):
    gap = Δ1 = 1 − 0 = 1 but term1 = 1 · d_TV((0, 1), (½, ½)) = ½, term2 = term3 = 0. Shifting r by +1 to [0, 2]
    (r_max = 2, same gap) restores it: term1 = 1 ≥ gap. The bound holds with r_max = max r − min r.
    """
    P, rho_sft, pi_F = np.array([1.0]), np.array([[1.0]]), np.array([[0.5, 0.5]])
    for r, r_max, holds in ((np.array([[-1.0, 1.0]]), 1.0, False), (np.array([[0.0, 2.0]]), 2.0, True)):
        pi_star = optimal_policy(pi_F, r, 1e-3)
        R = frozen_reward(pi_F, r)
        rho_star = optimal_prompter(rho_sft, R, 1.0)
        gap = suboptimality_gap(P, r, pi_star, composed_policy(rho_star, pi_F))
        bound = theorem1_bound(P, pi_star, pi_F, rho_sft, R, r_max, 1.0)
        assert gap == pytest.approx(1.0)
        assert (gap <= bound.total + 1e-12) is holds


# --- TabularInstance -------------------------------------------------------------------------------------------

def test_json_round_trip(tmp_path):
    inst = random_instance(np.random.default_rng(0), n=3, m=4)
    path = tmp_path / "i.json"
    inst.to_json(path)
    back = TabularInstance.from_json(path)
    for name in ("P", "rho_sft", "pi_F", "r"):
        np.testing.assert_array_equal(getattr(back, name), getattr(inst, name))
    assert back.r_max == inst.r_max and (back.n, back.m) == (3, 4)


@pytest.mark.parametrize("change, message", [
    (dict(rho_sft=[[0.5, 0.4], [0.5, 0.5]]), "row 0 of 'rho_sft' sums to 0.9"),
    (dict(P=[0.5, 0.6]), "'P' sums to 1.1"),
    (dict(pi_F=[[1.5, -0.5], [0.0, 1.0]]), "'pi_F' has a negative entry -0.5 at index [0, 1]"),
    (dict(P=[-0.5, 1.5]), "'P' has a negative entry -0.5 at index [0]"),
    (dict(r=[[0.0, 1.5], [0.0, 1.0]]), "r[0][1] = 1.5 outside [0, r_max] = [0, 1]"),
    (dict(r=[[0.0, -0.1], [0.0, 1.0]]), "r[0][1] = -0.1 outside [0, r_max]"),
    (dict(rho_sft=[[1.0], [1.0]]), "'rho_sft' must have shape (n, n) = (2, 2)"),
    (dict(r=[[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), "'r' must have the shape of 'pi_F' (2, 2)"),
    (dict(pi_F=[[1.0, 0.0]]), "'pi_F' must have shape (n, m) with n = 2 rows"),
    (dict(pi_F=[[1.0, 0.0], [1.0]]), "'pi_F' must be a (nested) list of numbers"),
    (dict(P=[0.5, float("nan")]), "'P' has a non-finite entry"),
    (dict(r_max=0.0), "'r_max' must be a finite number > 0"),
    (dict(r_max="big"), "'r_max' must be a number"),
])
def test_invalid_instances_raise_one_clear_error(change, message):
    with pytest.raises(InvalidInstanceError) as info:
        TabularInstance(**{**HAND, **change})
    assert message in str(info.value)


def test_from_dict_rejects_missing_and_unknown_keys():
    with pytest.raises(InvalidInstanceError, match=r"missing \['r_max'\], unknown \['lam'\]"):
        TabularInstance.from_dict({**{k: v for k, v in HAND.items() if k != "r_max"}, "lam": 1.0})


def test_bad_temperatures_rejected(hand):
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(InvalidInstanceError, match="lam must be a finite number > 0"):
            analyse(hand, bad, 1.0)
        with pytest.raises(InvalidInstanceError, match="beta must be a finite number > 0"):
            analyse(hand, 1.0, bad)
