"""``alignpro.theory.estimate``: Monte-Carlo estimates of Theorem 1's quantities (eq 11) for real LLMs.

Tier 1: the pure estimators on hand-computed arrays (exact). Tier 3 (``model``): teacher-forced log-probs against
``HFCausalLM.sample``, KL(ρ‖ρ_sft) = 0 for one checkpoint loaded twice, and the CLI on the embedded model.
"""

import json
import math

import numpy as np
import pytest

from alignpro.cli import main
from alignpro.theory.estimate import (
    Estimate, KLEstimator, Theorem1Estimates, importance_kl_optimal_policy, importance_tv, kl_from_logprobs,
    pinsker_tv_upper, term1_pinsker_upper, term2_pinsker_upper, term3_candidates,
)
from alignpro.theory.tabular import kl_divergence, optimal_policy, optimal_prompter_kl, tv_distance

LN2, LN3 = math.log(2), math.log(3)


def length_reward(prompts, answers):
    """A python: reward with no declared r_max (for the --r-max error)."""
    return [float(len(a)) for a in answers]


# ---------------------------------------------------------------------------------------------------------------
# Tier 1: pure functions, exact
# ---------------------------------------------------------------------------------------------------------------

# p = (¼, ¾), q = (½, ½), and a "perfectly stratified" sample from p: z = (0, 1, 1, 1). The sample mean of any
# f(z) is then exactly E_p f, so every unbiased estimator returns the exact divergence.
P, Q, Z = np.array([0.25, 0.75]), np.array([0.5, 0.5]), np.array([0, 1, 1, 1])


@pytest.mark.parametrize("estimator", [KLEstimator.K1, KLEstimator.K3])
def test_unbiased_kl_estimators_are_exact_on_a_stratified_sample(estimator):
    exact = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # KL(p‖q) by hand
    value = kl_from_logprobs(np.log(P[Z]), np.log(Q[Z]), estimator)
    assert value == pytest.approx(exact, abs=1e-15)
    assert value == pytest.approx(kl_divergence(P, Q), abs=1e-15)


def test_kl_from_logprobs_by_hand():
    lp, lq = np.array([[-1.0, -2.0], [-3.0, -3.0]]), np.array([[-2.0, -2.0], [-3.0, -3.0]])  # (2 prompts, S = 2)
    assert kl_from_logprobs(lp, lq).tolist() == [0.5, 0.0]  # k1: mean of (1, 0) and of (0, 0)
    assert kl_from_logprobs(lp, lq, KLEstimator.K2).tolist() == [0.25, 0.0]  # ½ d²
    assert kl_from_logprobs(lp, lq, KLEstimator.K3) == pytest.approx([math.exp(-1) / 2, 0.0], abs=1e-15)
    assert kl_from_logprobs(lp, lp, KLEstimator.K3).tolist() == [0.0, 0.0]  # same model: exactly 0


def test_pinsker_tv_upper():
    assert pinsker_tv_upper(np.array([0.0, 0.5, 2.0, 8.0, -0.1])).tolist() == [0.0, 0.5, 1.0, 1.0, 0.0]
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(5), size=200), rng.dirichlet(np.ones(5), size=200)
    assert np.all(pinsker_tv_upper(kl_divergence(p, q)) >= tv_distance(p, q) - 1e-15)  # it is an upper bound


def test_importance_tv_is_exact_on_a_stratified_sample():
    # 1 − mean min(1, q/p) = 1 − (min(1, 2) + 3·min(1, 2/3))/4 = 1 − 3/4 = ¼ = ½(|¼ − ½| + |¾ − ½|)
    assert importance_tv(np.log(P[Z]), np.log(Q[Z])) == pytest.approx(0.25, abs=1e-15)
    assert importance_tv(np.log(P[Z]), np.log(P[Z])) == 0.0
    assert importance_tv(np.array([0.0]), np.array([-800.0])) == 1.0  # disjoint-looking: 1, never above


def test_importance_kl_optimal_policy_two_samples():
    # r = (0, 1), β = 1/ln 3: e^{r/β} = (1, 3), so w = (¼, ¾)
    est = importance_kl_optimal_policy(np.array([0.0, 1.0]), 1 / LN3)
    assert est.kl == pytest.approx(0.75 * LN3 - LN2, abs=1e-15)  # Σ w r/β − log mean e^{r/β}
    assert est.tv == pytest.approx(0.25, abs=1e-15)  # ½(|¼ − ½| + |¾ − ½|)
    assert est.reward_pi_star == pytest.approx(0.75, abs=1e-15)
    assert est.reward_pi_F == 0.5


def test_importance_kl_matches_the_tabular_pi_star_when_the_samples_are_the_support():
    # π_F uniform over m answers, each sampled once: the self-normalised weights are π* exactly (eq 4)
    rng = np.random.default_rng(1)
    r = rng.uniform(0, 2, size=(6, 5))  # (prompts, answers)
    pi_F = np.full((6, 5), 0.2)
    for beta in (0.05, 1.0, 30.0):
        pi_star = optimal_policy(pi_F, r, beta)
        est = importance_kl_optimal_policy(r, beta)
        assert est.kl == pytest.approx(kl_divergence(pi_star, pi_F), abs=1e-12)
        assert est.tv == pytest.approx(tv_distance(pi_star, pi_F), abs=1e-12)
        assert est.reward_pi_star == pytest.approx((pi_star * r).sum(-1), abs=1e-12)


def test_importance_kl_is_finite_and_at_most_log_s_for_extreme_beta():
    r = np.array([[0.0, 10.0, 5.0], [3.0, 3.0, 3.0]])
    for beta in (1e-4, 1e4):
        est = importance_kl_optimal_policy(r, beta)
        assert np.all(np.isfinite(est.kl)) and np.all(est.kl <= math.log(3) + 1e-12) and np.all(est.kl >= 0)
    assert importance_kl_optimal_policy(r, 1e-4).kl[0] == pytest.approx(math.log(3))  # all mass on one sample
    assert importance_kl_optimal_policy(r, 1e-4).kl[1] == 0.0  # equal rewards: π* = π_F
    with pytest.raises(ValueError, match="beta"):
        importance_kl_optimal_policy(r, 0.0)


def test_term_estimates_by_hand():
    assert term1_pinsker_upper(np.array([0.5, 8.0]), 2.0).tolist() == [1.0, 2.0]  # 2·(½, 1)
    assert term2_pinsker_upper(np.array([[0.5, 8.0], [0.0, 0.0]]), 2.0).tolist() == [1.5, 0.0]
    # R̂ = (0, 1), λ = 1/(2 ln 3): e^{R̂/λ} = (1, 9), so ρ* = (0.1, 0.9) on two uniform candidates
    lam = 1 / (2 * LN3)
    w, kl = term3_candidates(np.array([[0.0, 1.0]]), lam)
    assert w[0] == pytest.approx([0.1, 0.9], abs=1e-15)
    assert kl[0] == pytest.approx(0.1 * math.log(0.2) + 0.9 * math.log(1.8), abs=1e-15)
    assert kl[0] == pytest.approx(optimal_prompter_kl(np.full((1, 2), 0.5), np.array([[0.0, 1.0]]), lam)[0])


def test_estimate_mean_and_stderr():
    e = Estimate.from_values([1.0, 2.0, 3.0])
    assert (e.mean, e.n) == (2.0, 3) and e.stderr == pytest.approx(1 / math.sqrt(3))
    one = Estimate.from_values([4.0])
    assert one.to_dict() == {"mean": 4.0, "stderr": 0.0, "n": 1}  # 0 at n = 1 (alignpro.metrics.standard_error)


def test_per_prompt_terms_add_up():
    imp = importance_kl_optimal_policy(np.array([[0.0, 1.0], [1.0, 1.0]]), 1 / LN3)
    res = Theorem1Estimates(
        prompts=["a", "b"], rewrites=[["a1", "a2"], ["b1", "b2"]], parsed=np.ones((2, 2), bool),
        kl_prompter=np.zeros(2), kl_answers=np.array([[0.5, 8.0], [0.0, 2.0]]),
        tv_answers=np.array([[0.3, 0.9], [0.0, 0.5]]), importance=imp, r_hat=np.array([[0.0, 1.0], [0.5, 0.5]]),
        rho_star=np.full((2, 2), 0.5), kl_rho_star=np.array([0.2, 0.0]), r_max=2.0, lam=0.5, beta=1 / LN3)
    per = res.per_prompt()
    assert per["term2_upper"].tolist() == [1.5, 1.0]
    assert per["term3"].tolist() == [-0.1, 0.0]
    assert per["bound_upper"] == pytest.approx(per["term1_upper"] + per["term2_upper"] + per["term3"])
    assert per["term2_direct"] == pytest.approx([1.2, 0.5])
    assert per["term1_direct"] == pytest.approx([0.5, 0.0])  # 2·d_TV((¼, ¾), (½, ½)) and 2·0
    d = res.to_dict()
    assert set(d["estimates"]) == set(per) and len(d["per_prompt"]) == 2
    json.dumps(d)  # JSON-safe


# ---------------------------------------------------------------------------------------------------------------
# CLI errors that need no model
# ---------------------------------------------------------------------------------------------------------------

def test_reward_without_r_max_needs_the_flag(capsys):
    code = main(["theory", "estimate", "--reward", "python:tests.test_theory_estimate:length_reward"])
    assert code == 2
    err = capsys.readouterr().err
    assert "declares no r_max: pass --r-max" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--prompter", "fake"], "setting 'prompter' must be a local model"),
    (["--target", "openai:m@http://127.0.0.1:1/v1"], "setting 'target' must be a local model"),
    (["--k", "0"], "setting 'k' must be ≥ 1"),
    (["--beta", "0"], "setting 'beta' must be a finite number > 0"),
    (["--r-max", "-1"], "setting 'r_max' must be a finite number > 0"),
])
def test_estimate_bad_settings(capsys, argv, message):
    assert main(["theory", "estimate", *argv]) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Tier 3: the embedded SmolLM2 (tiny settings)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm(smollm2_path):
    import torch

    from alignpro.backends.hf import HFCausalLM

    torch.set_num_threads(1)
    return HFCausalLM(smollm2_path, batch_size=2)  # 3 conversations → two batches, with left padding


@pytest.mark.model
def test_sequence_logprobs_match_the_sampled_token_logprobs(lm):
    from alignpro.theory.estimate import model_sampling, response_token_logprobs, sequence_logprobs

    convs = [[{"role": "user", "content": p}]
             for p in ("Hi", "Explain photosynthesis to a child in one short sentence please.", "Name a color.")]
    g = lm.sample(convs, model_sampling(10), seed=0)
    rows = response_token_logprobs(lm, convs, g.token_ids)
    for values, sampled in zip(rows, g.token_logprobs):
        assert values.tolist() == pytest.approx(sampled, abs=1e-3)
    total = sequence_logprobs(lm, convs, g.token_ids)
    assert total == pytest.approx([sum(t) for t in g.token_logprobs], abs=1e-3)
    with_stop = sequence_logprobs(lm, convs, g.token_ids, ended=[True] * 3)
    assert np.all(np.isfinite(with_stop)) and np.all(with_stop < total)  # log P(stop) < 0 is added


@pytest.mark.model
def test_prompter_kl_is_exactly_zero_for_one_checkpoint_loaded_twice(lm, smollm2_path):
    from alignpro.backends.hf import HFCausalLM
    from alignpro.templates import load_rewrite_template
    from alignpro.theory.estimate import model_sampling, prompter_kl

    twin = HFCausalLM(smollm2_path, batch_size=2)  # separate weights, same checkpoint
    template = load_rewrite_template()
    kl, raw = prompter_kl(["how to sleep better", "Name a fruit."], lm, twin, template, k=2, gen=model_sampling(8),
                          seed=3)
    assert kl.tolist() == [0.0, 0.0] and len(raw) == 4
    twin.model.model.norm.weight.mul_(0.5)  # a flatter ρ_sft (logits halved): ρ's samples now differ in log-prob
    kl, _ = prompter_kl(["how to sleep better"], lm, twin, template, k=2, gen=model_sampling(8), seed=3)
    assert kl[0] > 0.1


@pytest.mark.model
def test_estimate_cli_on_the_embedded_model(capsys):
    import torch

    torch.set_num_threads(1)
    argv = ["theory", "estimate", "--n-prompts", "2", "--k", "2", "--samples", "2", "--max-new-tokens", "8",
            "--batch-size", "8", "--lam", "0.05", "--beta", "0.2", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n_prompts"] == 2 and d["r_max"] == 1.0 and d["settings"]["r_max_source"] == "the reward 'builtin'"
    est = d["estimates"]
    assert all(math.isfinite(e["mean"]) and math.isfinite(e["stderr"]) and e["n"] == 2 for e in est.values())
    assert est["kl_prompter"]["mean"] == 0.0  # ρ = ρ_sft
    assert 0 <= est["term1_upper"]["mean"] <= 1 and 0 <= est["term2_upper"]["mean"] <= 1
    assert est["term3"]["mean"] <= 0 and est["kl_rho_star"]["mean"] <= math.log(2) + 1e-12
    assert est["bound_upper"]["mean"] == pytest.approx(
        est["term1_upper"]["mean"] + est["term2_upper"]["mean"] + est["term3"]["mean"])
    assert 0 <= est["tv_answers"]["mean"] <= 1 and 0 <= est["tv_pi_star"]["mean"] <= 1
    assert [len(p["rewrites"]) for p in d["per_prompt"]] == [2, 2]
    assert d["rewards_outside_range"] == 0
