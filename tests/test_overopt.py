"""alignpro overopt: the curves' arithmetic by hand, the checkpoint policy's KL, and the whole pipeline on tiny random
models (label -> Bradley–Terry proxies -> prompter and oracle runs -> measurement -> report), rerun as a resume."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from alignpro.config import build_config, config_to_dict, parse_config
from alignpro.errors import AlignProError, ConfigError
from alignpro.method import candidate_log_prior
from alignpro.overopt.config import OveroptConfig
from alignpro.overopt.curves import CurvePoint, closed_form_curve, make_point, summarise_curve

# ---------------------------------------------------------------------------------------------------------------
# The curves by hand
# ---------------------------------------------------------------------------------------------------------------


def test_closed_form_curve_weights_kl_and_fresh_answers_by_hand() -> None:
    log_prior = candidate_log_prior(2, 0.5)  # x: 1/2, two rewrites: 1/4 each
    r_hat = np.array([[0.0, 1.0, 0.0],  # prompt 0: the proxy likes rewrite 1
                      [0.0, 0.0, 2.0]])  # prompt 1: the proxy likes rewrite 2
    gold = np.array([[[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]],  # (P, C, A) fresh answers: the proxy's pick is bad
                     [[0.5, 0.5], [1.0, 1.0], [0.0, 1.0]]])
    proxy = np.array([[[0.0, 0.0], [2.0, 2.0], [0.0, 0.0]],
                      [[0.0, 0.0], [0.0, 0.0], [3.0, 1.0]]])
    inf, argmax = closed_form_curve("N=1", [math.inf, 0.0], r_hat, log_prior, gold, proxy)
    # λ = ∞: ρ_sft's weights (1/2, 1/4, 1/4); gold per prompt 0.5·1 + 0.25·0 + 0.25·0.5 = 0.625 and
    # 0.5·0.5 + 0.25·1 + 0.25·0.5 = 0.625; KL 0; no gain over itself
    assert inf.setting == "λ=inf" and inf.kl == 0.0 and inf.gold == pytest.approx(0.625)
    assert inf.gold_gain == pytest.approx(0.0) and inf.n_prompts == 2 and inf.n_answers == 12
    # λ = 0: the argmax of R̂; gold of its FRESH answers: 0.0 and 0.5; KL log(1/0.25) = log 4 each
    assert argmax.gold == pytest.approx(0.25) and argmax.kl == pytest.approx(math.log(4))
    assert argmax.proxy_reward == pytest.approx((2.0 + 2.0) / 2)
    assert argmax.gold_gain == pytest.approx(0.25 - 0.625)
    assert argmax.gold_stderr == pytest.approx(np.std([0.0, 0.5], ddof=1) / math.sqrt(2))
    assert argmax.sqrt_kl == pytest.approx(math.sqrt(math.log(4)))


def test_closed_form_curve_at_finite_lambda_is_eq_10() -> None:
    log_prior = candidate_log_prior(1, 0.5)
    r_hat = np.array([[0.0, 0.3]])
    gold = np.array([[[0.0], [1.0]]])
    (p,) = closed_form_curve("N=1", [0.1], r_hat, log_prior, gold, gold)
    w1 = math.exp(3.0) / (1 + math.exp(3.0))  # ρ* ∝ ½·exp(R̂/λ)
    assert p.gold == pytest.approx(w1)
    assert p.kl == pytest.approx((1 - w1) * math.log((1 - w1) / 0.5) + w1 * math.log(w1 / 0.5))


def _pt(setting: str, kl: float, gold: float) -> CurvePoint:
    return make_point("prompter", "N=1", setting, np.array([kl, kl]), np.array([gold, gold]), np.zeros(2),
                      np.zeros(2), 4)


def test_summarise_curve_finds_the_peak_and_the_loss_per_nat() -> None:
    s = summarise_curve([_pt("step 0", 0.0, 0.3), _pt("step 4", 0.5, 0.5), _pt("step 8", 2.5, 0.4)])
    assert (s.start_gold, s.peak_setting, s.last_setting) == (0.3, "step 4", "step 8")
    assert s.gold_drop_after_peak == pytest.approx(0.1) and s.kl_after_peak == pytest.approx(2.0)
    assert s.gold_lost_per_nat == pytest.approx(0.05)
    assert s.gold_drop_stderr == 0.0 and s.gold_lost_per_nat_stderr == 0.0  # both prompts dropped by 0.1
    rising = summarise_curve([_pt("step 0", 0.0, 0.3), _pt("step 4", 1.0, 0.5)])
    assert rising.peak_setting == "step 4" and rising.gold_lost_per_nat is None


def test_the_drop_after_the_peak_is_paired_by_prompt() -> None:
    def point(setting: str, kl: float, gold: list[float]) -> CurvePoint:
        return make_point("oracle", "N=1", setting, np.full(3, kl), np.array(gold), np.zeros(3), np.zeros(3), 6)

    s = summarise_curve([point("step 0", 0.0, [0.2, 0.4, 0.6]), point("step 4", 0.5, [0.5, 0.5, 0.8]),
                         point("step 8", 1.5, [0.3, 0.5, 0.5])])
    diffs = np.array([0.2, 0.0, 0.3])  # peak (step 4) − last (step 8), prompt by prompt
    assert s.peak_setting == "step 4" and s.gold_drop_after_peak == pytest.approx(diffs.mean())
    assert s.gold_drop_stderr == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))
    assert s.gold_lost_per_nat_stderr == pytest.approx(s.gold_drop_stderr / 1.0)


@pytest.mark.parametrize("values, message", [
    (dict(n_pairs=[]), "'n_pairs' must be distinct"),
    (dict(n_pairs=[200, 200]), "'n_pairs' must be distinct"),
    (dict(lams=[-1.0]), "'lams' must be"),
    (dict(n_fresh=3, rewrites_per_prompt=2), "must be a multiple"),
    (dict(prompter_recipe="nope.yaml"), "no such file 'nope.yaml'"),
    (dict(gold="judge"), "invalid reward spec 'judge'"),
    (dict(answers_per_prompt=1), "'answers_per_prompt' must be >= 2"),
])
def test_config_errors_name_the_setting(values, message) -> None:
    with pytest.raises(AlignProError, match=message):  # ConfigError is one
        build_config(OveroptConfig, values)


def test_a_resumed_study_needs_its_config_yaml(tmp_path: Path) -> None:
    from alignpro.overopt.run import run_overopt

    with pytest.raises(ConfigError, match=r"is not an overopt study folder \(no config.yaml\); start a new study"):
        run_overopt(build_config(OveroptConfig, dict(resume=str(tmp_path / "none"))))


def test_steps_measured_include_the_start_and_the_end() -> None:
    cfg = build_config(OveroptConfig, dict(train_steps=10, checkpoint_every=4))
    assert cfg.steps_measured_up_to(cfg.train_steps) == [0, 4, 8, 10]
    assert cfg.steps_measured_up_to(6) == [0, 4, 6]  # a run its time limit stopped after step 6


# ---------------------------------------------------------------------------------------------------------------
# The whole pipeline on tiny random models
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_path):
    """A 2-layer random Llama with SmolLM2's tokenizer (π_F, ρ_sft) and a 1-layer BERT classifier (proxy base)."""
    from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, LlamaConfig,
                              LlamaForCausalLM)

    from alignpro.assets import minilm_folder

    root = tmp_path_factory.mktemp("overopt-tiny")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(smollm2_path))
    LlamaForCausalLM(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    btok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    BertForSequenceClassification(BertConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, vocab_size=btok.vocab_size,
                                             max_position_embeddings=128, num_labels=1)).save_pretrained(root / "bert")
    btok.save_pretrained(root / "bert")
    common = dict(algo="distill", kl_coef=0.1, kl_control="fixed", batch_size=2, k=2, lr=1e-2, epochs=1,
                  lora=True, lora_r=4, lora_alpha=8, max_new_tokens=8)
    (root / "prompter.yaml").write_text(yaml.safe_dump(dict(
        role="prompter", template="rewrite-reminder", m=1, baseline_m=1, identity_prior=0.5, **common)))
    (root / "oracle.yaml").write_text(yaml.safe_dump(dict(role="oracle", **common)))
    return root


def length_gold(prompts: list[str], answers: list[str]) -> list[float]:
    """A gold reward random tiny models can earn: the answer's character count mod 5, scaled to [0, 1]."""
    return [(len(y) % 5) / 4 for y in answers]


GOLD = "python:tests.test_overopt:length_gold"


def _values(tiny: Path, out: Path, **kw) -> dict:
    llama = f"hf:{tiny / 'llama'}"
    values = dict(out=str(out), gold=GOLD, train_prompts="builtin:train", eval_prompts="builtin-ifeval:eval",
                  n_eval_prompts=3, target=llama, prompter=llama, n_label_prompts=6, answers_per_prompt=3,
                  label_max_new_tokens=8, label_batch_size=3, n_pairs=[4, 6], rm_base=f"hf:{tiny / 'bert'}",
                  rm_epochs=1, rm_lr=1e-3, answer_max_new_tokens=8, k=2, m=1, lams=[math.inf, 0.1, 0.0],
                  prompter_recipe=str(tiny / "prompter.yaml"), oracle_recipe=str(tiny / "oracle.yaml"),
                  train_steps=2, checkpoint_every=1, n_fresh=2, rewrites_per_prompt=2, batch_size=16,
                  num_threads=1, progress=False)
    values.update(kw)
    return values


def test_overopt_pipeline_on_tiny_models_then_a_rerun_resumes(tiny: Path, tmp_path: Path) -> None:
    from alignpro.overopt.measure import measure_pool
    from alignpro.overopt.run import run_overopt
    from alignpro.overopt.stages import stage_pairs, stage_proxies, stage_train

    threads = torch.get_num_threads()
    out = tmp_path / "overopt"
    # first under a time limit that stops every training run after its first step: measured up to step 1
    hurried = run_overopt(build_config(OveroptConfig, _values(tiny, out, train_time_limit_minutes=1e-9)))
    torch.set_num_threads(threads)
    assert hurried.stopped_early == {"prompter-4": 1, "oracle-4": 1, "prompter-6": 1, "oracle-6": 1}
    assert sorted({p.setting for p in hurried.points if p.method == "oracle"}) == ["step 0", "step 1"]
    assert "stopped by its time limit" in (out / "overopt.md").read_text()
    assert yaml.safe_load((out / "config.yaml").read_text())["train_time_limit_minutes"] == 1e-9
    # the folder holds a study: only --resume continues it
    here = re.escape(str(out))
    with pytest.raises(ConfigError, match=rf"'{here}' already holds a study .*pass --resume {here}"):
        run_overopt(build_config(OveroptConfig, _values(tiny, out)))
    # resumed without the time limit (a resumable setting): the stopped runs resume to train_steps
    cfg = build_config(OveroptConfig, _values(tiny, out, resume=str(out)))
    result = run_overopt(cfg)
    torch.set_num_threads(threads)
    assert result.stopped_early == {}
    assert yaml.safe_load((out / "config.yaml").read_text())["train_time_limit_minutes"] == 0.0

    # stages 1-3 wrote their folders; every checkpoint was kept
    assert (out / "pairs-train.jsonl").is_file() and json.loads((out / "pairs-train.label.json").read_text())["complete"]
    for n in (4, 6):
        assert (out / f"rm-{n}" / "reward_model.json").is_file()
        for role in ("prompter", "oracle"):
            assert sorted(p.name for p in (out / f"{role}-{n}" / "checkpoints").iterdir()) == [
                "step-000001", "step-000002"]
    # stage 5: 3 λ + 3 checkpoints (0, 1, 2) per method, per proxy
    labels = list(result.proxies)
    assert len(labels) == 2 and len(result.points) == 2 * (3 + 3 + 3)
    for label in labels:
        for method in ("prompter", "oracle"):
            pts = [p for p in result.points if p.proxy == label and p.method == method]
            assert [p.setting for p in pts] == ["step 0", "step 1", "step 2"]
            assert pts[0].kl == 0.0 and pts[0].gold_gain == 0.0  # step 0 is the reference itself
            assert all(p.n_prompts == 3 and p.n_answers == 6 for p in pts)
            assert pts[-1].kl != 0.0  # the trained tensors were loaded (lr 1e-2 moves the policy)
        cf = [p for p in result.points if p.proxy == label and p.method == "closed_form"]
        assert [p.setting for p in cf] == ["λ=inf", "λ=0.1", "λ=0"] and cf[0].kl == 0.0
    report = json.loads((out / "overopt.json").read_text())
    assert len(report["summaries"]) == 6 and (out / "overopt.png").stat().st_size > 0
    assert "Where each curve peaks" in (out / "overopt.md").read_text()
    # the gold in the report is the gold of the measured answers
    start = json.loads((out / "measure" / "oracle-start.json").read_text())["prompts"]
    assert len(start) == 3
    for entry in start.values():
        assert entry["scores"]["gold"] == pytest.approx(length_gold([""] * 2, entry["answers"]))
    no_ft = np.mean([np.mean(length_gold([""] * 2, e["answers"])) for e in start.values()])
    assert result.no_ft["gold"] == pytest.approx(no_ft)

    # resumed again, from the JSON config.yaml earlier versions wrote (no resume key): it skips every stage and
    # measures nothing again: the same points
    (out / "config.yaml").write_text(json.dumps({k: v for k, v in config_to_dict(cfg).items() if k != "resume"},
                                                indent=1) + "\n")
    again = run_overopt(parse_config(OveroptConfig, ["--resume", str(out)], "alignpro overopt"))
    torch.set_num_threads(threads)
    assert [p.to_dict() for p in again.points] == [p.to_dict() for p in result.points]
    # a setting that is not resumable is refused, naming it: by the study, and by the stage that was made with it
    for name in ("answers_per_prompt", "n_fresh"):
        with pytest.raises(ConfigError, match=rf"\['{name}'\] differ from the run's {here}/config.yaml"):
            run_overopt(build_config(OveroptConfig, _values(tiny, out, resume=str(out), **{name: 4})))
    with pytest.raises(ConfigError, match=r"\['answers_per_prompt'\] differ from the run's .*pairs-train.config.yaml"):
        stage_pairs(build_config(OveroptConfig, _values(tiny, out, answers_per_prompt=4)))
    with pytest.raises(ConfigError, match=r"\['epochs'\] differ from the run's .*rm-4"):
        stage_proxies(build_config(OveroptConfig, _values(tiny, out, rm_epochs=2)), out / "pairs-train.jsonl")
    recipe = tmp_path / "prompter-2-epochs.yaml"
    recipe.write_text(yaml.safe_dump({**yaml.safe_load((tiny / "prompter.yaml").read_text()), "epochs": 2}))
    with pytest.raises(ConfigError, match=r"\['epochs'\] differ from the run's .*prompter-4"):
        stage_train(build_config(OveroptConfig, _values(tiny, out, prompter_recipe=str(recipe))), "prompter", 4)
    with pytest.raises(AlignProError, match=r"closed-form-pool.json was made with other settings \(\['n_fresh'\]"):
        measure_pool(build_config(OveroptConfig, _values(tiny, out, n_fresh=4)), [], None, None, None)

    # more eval prompts measure only the new ones; the measured entries are kept as they are
    files = sorted((out / "measure").glob("*.json"))
    before = {f.name: json.loads(f.read_text())["prompts"] for f in files}
    more = run_overopt(build_config(OveroptConfig, _values(tiny, out, resume=str(out), n_eval_prompts=5)))
    torch.set_num_threads(threads)
    assert all(p.n_prompts == 5 for p in more.points)
    for f in files:
        after = json.loads(f.read_text())["prompts"]
        assert len(after) == len(set(after) | set(before[f.name])) and len(set(after) - set(before[f.name])) >= 2
        assert all(after[i] == entry for i, entry in before[f.name].items())
    # fewer read a subset, measuring nothing
    grown = {f.name: f.read_text() for f in files}
    fewer = run_overopt(build_config(OveroptConfig, _values(tiny, out, resume=str(out), n_eval_prompts=2)))
    torch.set_num_threads(threads)
    assert all(p.n_prompts == 2 for p in fewer.points)
    assert {f.name: f.read_text() for f in files} == grown

    # a checkpoint's samples are coupled: response j to x comes from x's own stream, whatever the batch or order
    from alignpro.data import load_prompts
    from alignpro.overopt.policies import CheckpointPolicy

    policy = CheckpointPolicy(out / "oracle-4", 1)
    records = load_prompts("builtin-ifeval:eval").records[:3]
    together = policy.sample(records, 2, seed=7, batch_size=6).texts
    apart = policy.sample(records[::-1], 2, seed=7, batch_size=1).texts[::-1]
    torch.set_num_threads(threads)
    assert together == apart and together != policy.sample(records, 2, seed=8, batch_size=6).texts


# ---------------------------------------------------------------------------------------------------------------
# The closed form's pool is the arm's rollout
# ---------------------------------------------------------------------------------------------------------------


class _SeenSystems:
    """FakeTarget, recording the system prompts each call carried."""

    def __init__(self) -> None:
        from alignpro.backends.fake import FakeTarget

        self.inner, self.name, self.systems = FakeTarget(), "fake", []

    def answer(self, prompts, *, n=1, seed=None, systems=None, keys=None):
        self.systems.append(list(systems))
        return self.inner.answer(prompts, n=n, seed=seed, systems=systems, keys=keys)


class _Length:
    def score(self, prompts, answers):
        return [float(len(y)) for y in answers]


def test_the_closed_form_pool_is_the_arms_rollout_with_its_seeds(tmp_path: Path) -> None:
    import dataclasses

    from alignpro.arms import ROLLOUT_SEED, Arm
    from alignpro.backends.fake import FakePrompter, FakeReward, FakeTarget
    from alignpro.data import load_prompts
    from alignpro.method import composed_rollout
    from alignpro.overopt.measure import GOLD, MEASURE, POOL, Scorers, measure_pool

    cfg = build_config(OveroptConfig, dict(out=str(tmp_path), seed=5, k=2, m=1, n_fresh=2, batch_size=6,
                                           progress=False))
    records = load_prompts("builtin:eval", n=4, seed=0).records
    records[1] = dataclasses.replace(records[1], system="Answer in French.")
    target = _SeenSystems()
    got = measure_pool(cfg, records, target, FakePrompter(), Scorers({GOLD: FakeReward(), "len": _Length()}))
    # 6 // (k + 1) = 2 prompts per chunk; chunk a draws from seed + ROLLOUT_SEED[closed form] + a, as the arms do
    expected = []
    for a in (0, 2):
        chunk = [r.text for r in records[a:a + 2]]
        expected.append(composed_rollout(chunk, FakePrompter(), FakeTarget(), FakeReward(), k=2, m=3,
                                         identity_prior=0.5, seed=5 + ROLLOUT_SEED[Arm.CLOSED_FORM] + a))
    assert ROLLOUT_SEED[Arm.CLOSED_FORM] == 1000
    entries = json.loads((tmp_path / MEASURE / POOL).read_text())["prompts"]
    for i, r in enumerate(records):
        rollout, j = expected[i // 2], i % 2
        entry = entries[r.id]
        assert entry["candidates"] == rollout.candidates[j] and entry["candidates"][0] == r.text  # x first (α > 0)
        assert entry["answers"] == rollout.answers[j]  # (C, m + n_fresh)
        assert entry["scores"][GOLD] == rollout.rewards[j].tolist()
        assert entry["scores"]["len"] == [[float(len(y)) for y in row] for row in rollout.answers[j]]
    assert got["ids"] == [r.id for r in records] and got["scores"]["len"][0] == entries[records[0].id]["scores"]["len"]
    # π_F saw each prompt's system prompt with every one of its 3 candidates
    assert target.systems[0] == [None] * 3 + ["Answer in French."] * 3 and target.systems[1] == [None] * 6
