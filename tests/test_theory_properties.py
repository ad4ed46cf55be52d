"""Tier 1 (pure math, property-based): Theorem 1, eq (7) and Lemma 1 on many random tabular instances.

Each Hypothesis example draws a seed (and sometimes λ, β) and checks a *batch* of random instances built from it
(:func:`alignpro.theory.sweep.random_case`: n, m ≤ 8, sharpness 0-8, exact zeros, binary or uniform rewards,
r_max in [0.1, 10], λ and β log-uniform on [1e-4, 1e4]). Instances checked, per test:

    test_theorem1_bound_and_decomposition_hold     300 examples × 20 instances =  6,000
    test_exact_slack_identity                       100 examples × 20 instances =  2,000
    test_lemma1_no_perturbation_beats_rho_star      100 examples × 15 instances =  1,500
    test_extreme_lambda_beta_stay_finite_and_sound  150 examples ×  5 instances =    750
                                                                         total = 10,250

plus test_lemma1_scipy_optimiser (deterministic, 12 instances). Every comparison allows 1e-9 · r_max for float
rounding (the same tolerance as ``alignpro theory verify``).
"""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alignpro.theory.sweep import (
    TOLERANCE, numerical_prompter, perturbation_gain, random_case, single_threaded_blas,
)
from alignpro.theory.tabular import (
    analyse, frozen_reward, optimal_prompter, prompter_log_partition, prompter_objective_per_prompt,
    random_instance, tv_distance,
)

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
LOG10 = st.floats(min_value=-4.0, max_value=4.0)


def fast(examples: int):
    """Deterministic (CI-stable), no example database written, no per-example deadline on a busy machine."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True)


def cases(seed: int, count: int):
    rng = np.random.default_rng(seed)
    return [random_case(rng) for _ in range(count)]


@fast(300)
@given(SEEDS)
def test_theorem1_bound_and_decomposition_hold(seed):
    """6,000 instances: gap ≤ bound (eq 11), gap = E(Δ1 + Δ2) (eq 7), Δ1(x) ≥ 0, terms signed as stated."""
    for instance, lam, beta in cases(seed, 20):
        a = analyse(instance, lam, beta)
        tol = TOLERANCE * instance.r_max
        assert a.gap <= a.bound.total + tol, (seed, lam, beta)
        assert abs(a.gap - (a.delta1 + a.delta2)) <= tol
        delta1_x = (a.pi_star * instance.r).sum(1) - (instance.pi_F * instance.r).sum(1)
        assert delta1_x.min() >= -tol
        assert a.bound.term1 >= 0 and a.bound.term2 >= 0 and a.bound.term3 <= 0
        assert a.bound.term1 <= instance.r_max + tol and a.bound.term2 <= instance.r_max + tol
        assert -instance.r_max - tol <= a.gap <= instance.r_max + tol  # J ∈ [0, r_max]


@fast(100)
@given(SEEDS)
def test_exact_slack_identity(seed):
    """2,000 instances: the proof of Theorem 1 is exact up to three non-negative slacks (docs/theory.md):

    bound − gap = [term1 − E Δ1] + r_max E_{x′∼ρ_sft} d_TV(…) − E_{x′∼ρ_sft}[R(x,x) − R(x,x′)]
                  + λ E KL(ρ_sft‖ρ*),   with  λ KL(ρ_sft‖ρ*) = λ log Z − E_{ρ_sft} R   (log-space, no underflow).
    """
    for instance, lam, beta in cases(seed, 20):
        a = analyse(instance, lam, beta)
        P, rho_sft, pi_F = instance.P, instance.rho_sft, instance.pi_F
        R = frozen_reward(pi_F, instance.r)
        tol = TOLERANCE * instance.r_max
        slack1 = a.bound.term1 - a.delta1
        pairwise = tv_distance(pi_F[:, None, :], pi_F[None, :, :])
        slack2 = a.bound.term2 - float(P @ (rho_sft * (np.diag(R)[:, None] - R)).sum(1))
        reverse = lam * prompter_log_partition(rho_sft, R, lam) - (rho_sft * R).sum(1)  # λ KL(ρ_sft‖ρ*) per x
        slack3 = float(P @ reverse)
        assert min(slack1, slack2, slack3) >= -tol
        assert abs((a.bound.total - a.gap) - (slack1 + slack2 + slack3)) <= 1e-7 * instance.r_max
        assert abs(a.bound.term2 - instance.r_max * float(P @ (rho_sft * pairwise).sum(1))) <= 1e-12


@fast(100)
@given(SEEDS)
def test_lemma1_no_perturbation_beats_rho_star(seed):
    """1,500 instances × 16 random perturbations of ρ* per prompt: none raises the eq (9) objective (Lemma 1)."""
    rng = np.random.default_rng(seed ^ 0x5EED)
    for instance, lam, _ in cases(seed, 15):
        R = frozen_reward(instance.pi_F, instance.r)
        rho_star = optimal_prompter(instance.rho_sft, R, lam)
        assert perturbation_gain(rho_star, instance.rho_sft, R, lam, rng, count=16) <= TOLERANCE * instance.r_max


@fast(150)
@given(SEEDS, LOG10, LOG10)
def test_extreme_lambda_beta_stay_finite_and_sound(seed, log_lam, log_beta):
    """750 instances at λ = 10^a, β = 10^b for a, b anywhere in [−4, 4] (Hypothesis pushes to the ends):
    no overflow or NaN, ρ* a distribution, and the bound still holds."""
    lam, beta = 10.0**log_lam, 10.0**log_beta
    rng = np.random.default_rng(seed)
    for _ in range(5):
        instance = random_instance(rng, r_max=float(rng.choice([0.1, 1.0, 10.0])))
        a = analyse(instance, lam, beta)
        values = (a.gap, a.delta1, a.delta2, a.bound.term1, a.bound.term2, a.bound.term3, a.objective, a.kl)
        assert all(math.isfinite(v) for v in values)
        assert np.isfinite(a.rho_star).all() and abs(a.rho_star.sum(1) - 1).max() < 1e-12
        assert a.gap <= a.bound.total + TOLERANCE * instance.r_max


def test_lemma1_scipy_optimiser():
    """12 instances: SciPy's L-BFGS-B (never told the closed form) never beats ρ*, and reaches it here."""
    rng = np.random.default_rng(11)
    with single_threaded_blas():
        _check_optimiser(rng, 12)


def _check_optimiser(rng, count):
    for _ in range(count):
        instance = random_instance(rng, max_n=5, max_m=5)
        lam = float(10 ** rng.uniform(-1, 1)) * instance.r_max  # a regime where it converges
        R = frozen_reward(instance.pi_F, instance.r)
        rho_star = optimal_prompter(instance.rho_sft, R, lam)
        found = prompter_objective_per_prompt(numerical_prompter(instance.rho_sft, R, lam, rng),
                                              instance.rho_sft, R, lam)
        best = prompter_objective_per_prompt(rho_star, instance.rho_sft, R, lam)
        assert (found - best).max() <= TOLERANCE * instance.r_max
        assert (best - found).max() <= 1e-6 * instance.r_max
