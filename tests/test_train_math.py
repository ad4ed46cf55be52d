"""Tier 1: the training math on hand-computed tensors (GAE, RLOO, GRPO, k1/k3, KL controllers, losses),
the data order, the config checks and the crash-safe run-folder files. No model."""

import json
import math

import pytest
import torch

from alignpro.config import build_config
from alignpro.errors import ConfigError
from alignpro.train.advantages import Algo, estimate_ppo, gae, grpo, kl_shaped_token_rewards, rloo
from alignpro.train.checkpoint import (append_jsonl, begin_checkpoint, finish_checkpoint, latest_checkpoint,
                                       prune_checkpoints, read_jsonl, truncate_jsonl)
from alignpro.train.config import TrainConfig
from alignpro.train.kl import AdaptiveKLController, FixedKLController, KLControl, k1, k3, make_kl_controller
from alignpro.train.losses import clipped_policy_loss, clipped_value_loss, masked_mean, masked_whiten
from alignpro.train.loop import batch_indices

t = torch.tensor


def test_gae_matches_hand_computation():
    # γ = 1, λ = 0.5; V = 0.5 everywhere; reward 1 on the last token
    adv, ret = gae(t([[0.0, 0.0, 1.0]]), t([[0.5, 0.5, 0.5]]), t([[1.0, 1.0, 1.0]]), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.125, 0.25, 0.5]]))
    assert torch.allclose(ret, t([[0.625, 0.75, 1.0]]))


def test_gae_ignores_padding_after_the_last_token():
    adv, ret = gae(t([[0.0, 2.0, 99.0]]), t([[1.0, 1.0, 7.0]]), t([[1.0, 1.0, 0.0]]), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.5, 1.0, 0.0]]))
    assert torch.allclose(ret, t([[1.5, 2.0, 0.0]]))


def test_gae_with_lambda_one_is_the_monte_carlo_return_minus_value():
    r, v, m = t([[0.1, -0.2, 1.0]]), t([[0.3, 0.2, 0.4]]), torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    assert torch.allclose(ret, t([[0.9, 0.8, 1.0]]))
    assert torch.allclose(adv, ret - v)


def test_rloo_leave_one_out_baseline():
    a = rloo(t([1.0, 2.0, 3.0, 10.0, 10.0, 10.0]), group_size=3)
    assert torch.allclose(a, t([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError):
        rloo(t([1.0, 2.0]), group_size=1)


def test_grpo_group_normalisation():
    a = grpo(t([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), group_size=3, eps=0.0 + 1e-12)
    assert torch.allclose(a[:3], t([-1.0, 0.0, 1.0]), atol=1e-6)
    assert torch.all(a[3:] == 0)


def test_kl_estimators_by_hand_and_in_expectation():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert torch.allclose(k1(logp, ref), t([math.log(2)]))
    assert torch.allclose(k3(logp, ref), t([-0.5 + math.log(2)]))
    # E_{a~p}[k1] = E_{a~p}[k3] = KL(p‖q) exactly on a categorical
    p, q = t([0.7, 0.2, 0.1], dtype=torch.float64), t([0.3, 0.3, 0.4], dtype=torch.float64)
    kl = float((p * (p / q).log()).sum())
    assert float((p * k1(p.log(), q.log())).sum()) == pytest.approx(kl)
    assert float((p * k3(p.log(), q.log())).sum()) == pytest.approx(kl)
    assert torch.all(k3(p.log(), q.log()) >= 0)


def test_adaptive_kl_controller_follows_trl():
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(12.0, n_steps=100)  # error clipped to +0.2
    assert c.value == pytest.approx(0.2 * 1.002)
    v = c.value
    c.update(6.0, n_steps=100)
    assert c.value == pytest.approx(v)
    c.update(0.0, n_steps=100)  # error clipped to −0.2
    assert c.value == pytest.approx(v * 0.998)
    d = AdaptiveKLController(1.0, 6.0, 10000)
    d.load_state_dict(c.state_dict())
    assert d.value == c.value
    f = FixedKLController(0.3)
    f.update(100.0, 10)
    assert f.value == 0.3
    assert isinstance(make_kl_controller(KLControl.ADAPTIVE, math.inf, 6, 10000), FixedKLController)


def test_kl_shaped_rewards_put_the_score_on_the_last_real_token():
    r = kl_shaped_token_rewards(t([1.0]), t([[0.1, 0.2, 0.3]]), t([[1.0, 1.0, 0.0]]), kl_coef=0.5)
    assert torch.allclose(r, t([[-0.05, 0.9, 0.0]]))


def test_zero_kl_coef_is_pure_reward_maximisation():
    scores, mask = t([0.3, 0.7]), torch.ones(2, 3)
    v = torch.zeros(2, 3)
    a = estimate_ppo(scores, torch.zeros(2, 3), mask, v, kl_coef=0.0, group_size=1, gamma=1.0, lam=0.95)
    b = estimate_ppo(scores, torch.randn(2, 3), mask, v, kl_coef=0.0, group_size=1, gamma=1.0, lam=0.95)
    assert torch.equal(a.rewards, b.rewards) and torch.allclose(a.advantages, b.advantages)
    c = AdaptiveKLController(0.0, 6.0, 10000)
    c.update(100.0, 1000)
    assert c.value == 0.0


def test_each_algo_estimates_its_own_advantages_and_penalises_the_kl_in_one_place():
    """Through the enum, by hand: 2 prompts × K=2, 3 tokens; rollout 0 has k1 = 1 on each token, λ = 0.5."""
    scores, mask = t([1.0, 0.0, 0.5, 0.5]), torch.ones(4, 3)
    kl = torch.zeros(4, 3)
    kl[0] = 1.0  # Σ_t k1 = 3 → a sequence penalty of 1.5 where the KL is a reward term
    kw = dict(kl_coef=0.5, group_size=2, gamma=1.0, lam=1.0, whiten=False)
    # rloo: seq reward r − λ·Σk1 = [−0.5, 0, 0.5, 0.5], leave-one-out within each prompt, on every token
    rl = Algo("rloo").estimate(scores, kl, mask, None, **kw)
    assert torch.allclose(rl.advantages, t([-0.5, 0.5, 0.0, 0.0]).unsqueeze(1).expand(4, 3))
    # grpo: the KL is not in the reward: (r − mean) / std over [1, 0] = ±1/√2, on every token
    gr = Algo("grpo").estimate(scores, kl, mask, None, **kw)
    assert torch.allclose(gr.advantages[:, 0], t([0.5 ** 0.5, -(0.5 ** 0.5), 0.0, 0.0]), atol=1e-3)
    # ppo (V = 0, γ = λ_GAE = 1, not whitened): A_t = Σ_{t'≥t} r_t', r_t = −0.5·k1_t plus r(x, y) on the last token
    pp = Algo("ppo").estimate(scores, kl, mask, torch.zeros(4, 3), **kw)
    assert torch.allclose(pp.advantages[0], t([-0.5, 0.0, 0.5])) and torch.allclose(pp.advantages[1], t([0.0] * 3))
    assert torch.allclose(pp.returns, pp.advantages)
    with pytest.raises(ValueError, match="eq \\(10\\)"):  # distill weights its samples by eq (10) instead
        Algo.DISTILL.estimate  # noqa: B018
    for algo in (a for a in Algo if a is not Algo.DISTILL):
        values = torch.full((4, 3), 0.25)
        if algo.uses_critic:  # the loop builds a value head exactly when the estimator needs its values
            with pytest.raises(ValueError, match="value"):
                algo.estimate(scores, kl, mask, None, **kw)
        est = algo.estimate(scores, kl, mask, values if algo.uses_critic else None, **kw)
        assert (est.returns is not None) == algo.uses_critic
        # the KL is penalised once: in the loss (kl_in_loss) or in the advantages, never both, never neither
        no_kl = algo.estimate(scores, torch.zeros(4, 3), mask, values if algo.uses_critic else None, **kw)
        assert torch.equal(est.advantages, no_kl.advantages) == algo.kl_in_loss, algo


def test_clipped_losses_by_hand():
    old, m = torch.zeros(1, 2), torch.ones(1, 2)
    new = old + math.log(1.5)
    loss, frac, _ = clipped_policy_loss(new, old, torch.ones(1, 2), m, 0.2)
    assert loss.item() == pytest.approx(-1.2) and frac.item() == 1.0
    loss, frac, _ = clipped_policy_loss(new, old, -torch.ones(1, 2), m, 0.2)
    assert loss.item() == pytest.approx(1.5) and frac.item() == 0.0
    vl, vfrac = clipped_value_loss(t([[1.0]]), t([[0.0]]), t([[1.0]]), t([[1.0]]), 0.2)
    assert vl.item() == pytest.approx(0.5 * 0.8 ** 2) and vfrac.item() == 1.0
    x, mk = t([[1.0, 2.0, 3.0, 100.0]]), t([[1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(x, mk).item() == pytest.approx(2.0)
    w = masked_whiten(x, mk)
    assert w[0, 3] == 0 and masked_mean(w, mk).abs().item() < 1e-6


def test_batch_indices_cover_each_epoch_and_are_pure():
    n, gb = 10, 4
    steps = [batch_indices(s, n, gb, seed=3) for s in range(1, 6)]  # 20 items = 2 epochs
    flat = [i for s in steps for i in s]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert batch_indices(3, n, gb, seed=3) == steps[2]
    assert batch_indices(1, n, gb, seed=4) != steps[0]


def test_config_defaults_and_errors_name_the_setting():
    c = build_config(TrainConfig, {})
    assert (c.k, c.max_new_tokens, c.lr, c.kl_coef, c.epochs, c.gae_lambda, c.cliprange) == (
        1, 48, 1.41e-5, 0.2, 4, 0.95, 0.2)
    assert build_config(TrainConfig, {"algo": "rloo"}).k == 4
    assert build_config(TrainConfig, {"role": "oracle"}).max_new_tokens == 64
    assert build_config(TrainConfig, {"kl_coef": "inf"}).frozen
    for bad, name in [({"algo": "grpo", "k": 1}, "'k'"), ({"kl_coef": -1}, "'kl_coef'"),
                      ({"batch_size": 3, "num_minibatches": 2}, "'num_minibatches'"), ({"top_p": 0}, "'top_p'"),
                      ({"algo": "sac"}, "algo"), ({"steps": 0}, "'steps'"), ({"device": "tpu"}, "'device'")]:
        with pytest.raises(ConfigError, match=name):
            build_config(TrainConfig, bad)


def test_resume_accepts_only_resumable_changes(tmp_path):
    from alignpro.train.cli import parse_train_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("steps: 5\nlr: 0.001\nout: " + str(run) + "\n")
    c = parse_train_config(["--resume", str(run), "--steps", "9"])
    assert (c.steps, c.lr, c.out) == (9, 0.001, str(run))
    with pytest.raises(ConfigError, match="'lr'"):
        parse_train_config(["--resume", str(run), "--lr", "0.1"])
    with pytest.raises(ConfigError, match="resume"):
        parse_train_config(["--resume", str(tmp_path / "nope")])


def test_checkpoints_are_atomic_and_half_written_ones_are_ignored(tmp_path):
    for step in (2, 4):
        tmp = begin_checkpoint(tmp_path, step)
        (tmp / "x").write_text(str(step))
        finish_checkpoint(tmp, tmp_path, step)
    half = begin_checkpoint(tmp_path, 6)  # a kill before finish_checkpoint: only the .tmp folder exists
    (half / "x").write_text("partial")
    (tmp_path / "checkpoints" / "step-000008").mkdir()  # a folder without COMPLETE
    step, folder = latest_checkpoint(tmp_path)
    assert step == 4 and (folder / "x").read_text() == "4"
    prune_checkpoints(tmp_path, keep=1)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "step-000002" not in names and "step-000004" in names


def test_jsonl_truncation_drops_later_and_torn_rows(tmp_path):
    f = tmp_path / "metrics.jsonl"
    for s in range(1, 6):
        append_jsonl(f, {"step": s})
    with open(f, "a") as fh:
        fh.write('{"step": 6, "rew')  # torn by a kill
    assert truncate_jsonl(f, 3) == 3
    assert [r["step"] for r in read_jsonl(f)] == [1, 2, 3]
    assert json.loads(f.read_text().splitlines()[-1]) == {"step": 3}


def test_identity_baseline_is_pi_f_mean_reward_on_x_computed_once_per_prompt():
    from alignpro.backends.fake import FakeReward, FakeTarget
    from alignpro.data import PromptRecord
    from alignpro.templates import load_rewrite_template
    from alignpro.train.roles import PrompterRole

    class Counting(FakeTarget):
        calls: list[list[str]] = []

        def answer(self, prompts, **kw):
            self.calls.append(list(prompts))
            return super().answer(prompts, **kw)

    target, reward = Counting(), FakeReward()
    role = PrompterRole(str, load_rewrite_template("rewrite-default"), target, reward, m=2, baseline_m=4)
    records = [PromptRecord("a", "please explain tides"), PromptRecord("b", "how do I boil an egg"),
               PromptRecord("c", "please explain tides")]
    b = role.identity_baselines(records, seed=5)
    assert target.calls == [["please explain tides", "how do I boil an egg"]]  # each distinct x once
    expected = [sum(reward.score([x] * 4, [a.text for a in row])) / 4
                for x, row in zip(["please explain tides", "how do I boil an egg"],
                                  FakeTarget().answer(["please explain tides", "how do I boil an egg"], n=4, seed=5,
                                                      keys=["please explain tides", "how do I boil an egg"]))]
    assert b.tolist() == pytest.approx([expected[0], expected[1], expected[0]])
    assert role.identity_baselines(records[:2], seed=9).tolist() == pytest.approx(expected)
    assert len(target.calls) == 1  # cached: no new answers
    scored = role.score(records[:2], ["Hi!", "Hello:"], seed=1)
    assert scored.baselines.tolist() == pytest.approx(expected) and "baseline_seconds" in scored.stats
    plain = PrompterRole(str, load_rewrite_template("rewrite-default"), target, reward, m=2)
    assert plain.score(records[:2], ["Hi!", "Hello:"], seed=1).baselines is None


def test_baseline_m_is_for_the_prompter_only():
    with pytest.raises(ConfigError, match="baseline_m"):
        build_config(TrainConfig, {"role": "oracle", "baseline_m": 4})
    with pytest.raises(ConfigError, match="baseline_m"):
        build_config(TrainConfig, {"baseline_m": -1})


def test_identity_baseline_tells_system_prompts_apart():
    from alignpro.backends.fake import FakeReward, FakeTarget
    from alignpro.data import PromptRecord
    from alignpro.templates import load_rewrite_template
    from alignpro.train.roles import PrompterRole

    role = PrompterRole(str, load_rewrite_template("rewrite-default"), FakeTarget(), FakeReward(), m=1, baseline_m=2)
    same = [PromptRecord("a", "explain tides"), PromptRecord("b", "explain tides", system="You are a poet.")]
    role.identity_baselines(same, seed=0)
    assert len(role.baselines) == 2
