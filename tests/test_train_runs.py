"""Tier 2/3: whole runs on a tiny random Llama (SmolLM2's tokenizer, 1.6M parameters) with the fake target and
reward: LoRA, λ = ∞, a real ``kill -9`` then ``--resume``, and two data-parallel processes under
``accelerate launch``."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from alignpro.backends.fake import FakeReward, FakeTarget
from alignpro.config import build_config
from alignpro.errors import ConfigError
from alignpro.train.checkpoint import read_jsonl
from alignpro.train.config import TrainConfig
from alignpro.train.loop import train

REPO = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "rollout_seconds", "reward_seconds", "update_seconds", "elapsed_seconds", "tokens_per_s",
          "samples_per_s",
          "answer_seconds", "score_seconds", "baseline_seconds"}


def _args(tiny, out, **kw):
    base = dict(prompter=f"hf:{tiny}", target="fake", reward="fake", out=str(out), batch_size=2, k=2,
                max_new_tokens=8, epochs=2, lr=1e-3, num_threads=1, progress=False)
    base.update(kw)
    return base


def _flags(values):
    flags = []
    for k, v in values.items():
        flag = "--" + k.replace("_", "-")
        flags += ([flag] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False else [flag, str(v)])
    return flags


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _tiny_weights(tiny):
    from safetensors.torch import load_file

    return load_file(str(tiny / "model.safetensors"))


def test_lora_trains_only_the_adapter_and_exports_a_loadable_model(tiny_model, tmp_path):
    from alignpro.backends.adapter import TRAIN_INFO
    from alignpro.specs import load_causal_lm, make_prompter

    threads = torch.get_num_threads()
    cfg = build_config(TrainConfig, _args(tiny_model, tmp_path / "run", steps=2, lora=True, lora_r=4,
                                          lora_target_modules=["q_proj", "v_proj"]))
    result = train(cfg, target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    assert result.reference.frozen_lm is None  # the reference is the adapter switched off, not a copy
    params = dict(result.policy.lm.named_parameters())
    lora_b = [p for n, p in params.items() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b) and any(p.abs().sum() > 0 for p in lora_b)
    base = _tiny_weights(tiny_model)
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in params.items()
              if "lora_" not in n}
    assert all(torch.equal(frozen[n].detach(), w) for n, w in base.items() if n in frozen)
    assert (tmp_path / "run" / "final-adapter" / "adapter_config.json").is_file()
    info = json.loads((tmp_path / "run" / "final" / TRAIN_INFO).read_text())
    assert info["lora"] and info["base_spec"] == f"hf:{tiny_model}" and info["role"] == "prompter"
    assert info["template"] == "rewrite-default"
    merged = make_prompter(f"hf:{tmp_path / 'run' / 'final'}")  # RUN/final is a plain transformers folder
    from_adapter = load_causal_lm(f"hf:{tmp_path / 'run' / 'final-adapter'}")
    q = "model.layers.0.self_attn.q_proj.weight"
    a, b = dict(merged.lm.model.named_parameters())[q], dict(from_adapter.model.named_parameters())[q]
    assert torch.allclose(a, b) and not torch.equal(a, base[q])
    assert merged.rewrite(["hello there"], k=1)[0].rewrites
    # the adapter folder is a model spec of its own (hf:RUN/final-adapter = base + adapter), as shipped adapters are
    spec_lm = make_prompter(f"hf:{tmp_path / 'run' / 'final-adapter'}", batch_size=3).lm
    assert torch.allclose(dict(spec_lm.model.named_parameters())[q], a) and spec_lm.batch_size == 3


def test_infinite_kl_coef_reproduces_the_reference(tiny_model, tmp_path):
    threads = torch.get_num_threads()
    cfg = build_config(TrainConfig, _args(tiny_model, tmp_path / "run", steps=2, kl_coef="inf"))
    result = train(cfg, target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    base = _tiny_weights(tiny_model)
    params = dict(result.policy.lm.named_parameters())
    assert all(torch.equal(params[n].detach(), w) for n, w in base.items() if n in params)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["kl"] == 0.0 and r["kl_k3"] == 0.0 for r in rows)
    assert all(math.isinf(r["kl_coef"]) for r in rows) and "policy_loss" not in rows[0]


def test_kill_9_then_resume_loses_nothing_and_matches_an_uninterrupted_run(tiny_model, tmp_path):
    steps, every = 15, 3
    values = _args(tiny_model, tmp_path / "killed", steps=steps, save_every=every, keep_checkpoints=2)
    cmd = [sys.executable, "-m", "alignpro", "train", *_flags(values)]
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    ckpt = tmp_path / "killed" / "checkpoints" / "step-000006" / "COMPLETE"
    deadline = time.time() + 180
    # kill once step 7 is logged: its row lies beyond the checkpoint and must be dropped, then re-run
    while not (ckpt.exists() and len(read_jsonl(tmp_path / "killed" / "metrics.jsonl")) >= 7) \
            and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed:\n{(tmp_path / 'killed.log').read_text()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_rows = read_jsonl(tmp_path / "killed" / "metrics.jsonl")
    assert 6 <= len(killed_rows) < steps
    # leftovers a kill can leave: a half-written temporary checkpoint, a folder without its COMPLETE marker
    (tmp_path / "killed" / "checkpoints" / "step-000099.tmp-1").mkdir()
    (tmp_path / "killed" / "checkpoints" / "step-000098").mkdir()
    resume = subprocess.run([sys.executable, "-m", "alignpro", "train", "--resume", str(tmp_path / "killed")],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    assert "resuming after step" in resume.stdout + resume.stderr
    rows = read_jsonl(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # each step exactly once
    assert (tmp_path / "killed" / "final" / "config.json").is_file()

    threads = torch.get_num_threads()
    ref = train(build_config(TrainConfig, _args(tiny_model, tmp_path / "straight", steps=steps, save_every=every)),
                target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    for a, b in zip(ref.rows, rows, strict=True):  # same seeds, same numbers: the resume is exact
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}


def test_two_processes_under_accelerate_hold_identical_parameters(tiny_model, tmp_path):
    values = _args(tiny_model, tmp_path / "ddp", steps=2, save_every=1, debug_param_checksum=True, device="cpu")
    with socket.socket() as s:  # a free port, so parallel test runs on one machine don't collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs" /
           "accelerate-cpu.yaml"), "--main_process_port", str(port), "-m", "alignpro", "train", *_flags(values)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sums = [json.loads((tmp_path / "ddp" / "debug" / f"params-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["world"] == 2 for s in sums)
    assert sums[0]["sha256"] == sums[1]["sha256"]  # gradients were all-reduced: bitwise identical weights
    rows = read_jsonl(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["reward_n"] == 2 * 2 * 2  # both shards gathered
    base = _tiny_weights(tiny_model)
    from safetensors.torch import load_file

    final = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    assert not torch.equal(final["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


def test_demo_train_trains_both_arms_now_and_says_so(tiny_model, tmp_path):
    """`alignpro demo --train`: both recipes run (same models and reward as the demo), both arms are evaluated,
    and the report says they were trained now, from which recipe."""
    from alignpro.arms import Arm
    from alignpro.demo import DemoConfig, run_demo

    ALIGN_PRO, ORACLE = Arm.ALIGN_PRO.value, Arm.ORACLE.value

    recipe = dict(batch_size=2, max_new_tokens=8, answer_max_new_tokens=8, epochs=1, lr=1e-3, num_threads=1,
                  progress=False, save_every=1, generation_batch_size=4)
    for role in ("prompter", "oracle"):
        (tmp_path / f"{role}.yaml").write_text(yaml.safe_dump({**recipe, "role": role, "algo": "ppo", "steps": 5}))
    cfg = build_config(DemoConfig, dict(
        prompter=f"hf:{tiny_model}", target=f"hf:{tiny_model}", reward="fake", out=str(tmp_path / "demo"),
        n_prompts=3, k=2, m=1, n_fresh=1, answer_max_new_tokens=8, batch_size=8, train=True, train_steps=2,
        train_prompter_config=str(tmp_path / "prompter.yaml"), train_oracle_config=str(tmp_path / "oracle.yaml")))
    threads = torch.get_num_threads()
    m = run_demo(cfg)
    torch.set_num_threads(threads)
    assert {ALIGN_PRO, ORACLE} <= set(m["cells"][0]["arms"])
    for arm, role in ((ALIGN_PRO, "prompter"), (ORACLE, "oracle")):
        info = m["demo"]["trained_now"][arm]
        assert info["source"].startswith("trained now") and info["steps"] == 2
        assert [r["step"] for r in read_jsonl(tmp_path / "demo" / f"train-{role}" / "metrics.jsonl")] == [1, 2]
    assert "trained now" in (tmp_path / "demo" / "table.md").read_text()
    with pytest.raises(ConfigError, match="train_prompter_config"):
        build_config(DemoConfig, dict(train=True, train_prompter_config=str(tmp_path / "missing.yaml")))
    with pytest.raises(ConfigError, match="'train'"):
        build_config(DemoConfig, dict(train=True, oracle="fake", train_prompter_config=str(tmp_path / "prompter.yaml"),
                                      train_oracle_config=str(tmp_path / "oracle.yaml")))


def test_identity_baseline_is_restored_on_resume_and_logs_the_gain(tiny_model, tmp_path):
    """baseline_m: b(x) is saved with the checkpoint, so a resumed run subtracts the same b(x) as a straight one."""
    values = _args(tiny_model, tmp_path / "straight", steps=4, save_every=2, baseline_m=3)
    threads = torch.get_num_threads()
    straight = train(build_config(TrainConfig, values), target=FakeTarget(), reward=FakeReward())
    train(build_config(TrainConfig, {**values, "out": str(tmp_path / "split"), "steps": 2}),
          target=FakeTarget(), reward=FakeReward())
    state = json.loads((tmp_path / "split" / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["reward_baselines"] and all(0 <= b <= 1 for b in state["reward_baselines"].values())
    split = str(tmp_path / "split")
    resumed = train(build_config(TrainConfig, {**values, "out": split, "resume": split}),
                    target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    for a, b in zip(straight.rows[2:], resumed.rows, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    samples = read_jsonl(tmp_path / "straight" / "samples.jsonl")
    for row, sample in zip(straight.rows, samples, strict=True):
        assert math.isfinite(row["reward_gain_mean"]) and -1 <= row["reward_gain_mean"] <= 1
        assert 0 <= sample["baseline"] <= 1
    assert any(abs(r["reward_gain_mean"] - r["reward_mean"]) > 1e-6 for r in straight.rows)


def test_distill_run_logs_its_weights_and_moves_the_policy(tiny_model, tmp_path):
    """--algo distill: eq (10)'s weights over x + K samples, the weighted log-likelihood, a resumable run."""
    values = _args(tiny_model, tmp_path / "run", algo="distill", steps=3, k=3, baseline_m=2, identity_prior=0.5,
                   kl_control="fixed", kl_coef=0.05, save_every=3)
    threads = torch.get_num_threads()
    result = train(build_config(TrainConfig, values), target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert 0 <= r["identity_weight"] <= 1 and 0 <= r["weight_entropy"] <= math.log(4) + 1e-9
        assert math.isfinite(r["distill_loss"]) and "policy_loss" not in r and "value_loss" not in r
        assert r["kl_coef"] == 0.05  # fixed: λ of eq (10) throughout
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    moved = {n for n, p in result.policy.lm.named_parameters()
             if not torch.equal(p.detach().cpu(), _tiny_weights(tiny_model).get(n, p.detach().cpu()))}
    assert moved, "distill did not update the prompter"


@pytest.mark.parametrize("bad,match", [
    (dict(kl_control="adaptive"), "kl_control: fixed"),
    (dict(k=1), "k' must be >= 2"),
    (dict(baseline_m=0), "baseline_m >= 1"),
    (dict(role="oracle", baseline_m=0), "role 'prompter'"),
    (dict(identity_prior=1.0), r"in \[0, 1\)"),
    (dict(algo="grpo"), "applies to algo 'distill' only"),
])
def test_distill_config_errors(tiny_model, tmp_path, bad, match):
    values = _args(tiny_model, tmp_path / "run", algo="distill", k=2, baseline_m=2, identity_prior=0.5,
                   kl_control="fixed", kl_coef=0.05)
    values.update(bad)
    if values.get("role") == "oracle":
        values["target"] = f"hf:{tiny_model}"
    with pytest.raises(ConfigError, match=match):
        build_config(TrainConfig, values)


def test_time_limit_stops_after_a_step_with_a_checkpoint_and_resume_finishes(tiny_model, tmp_path):
    """time_limit_minutes: the run stops after the first step that ends past the limit, writes that step's
    checkpoint and RUN/final (recording the step reached), and --resume goes on to `steps`."""
    values = _args(tiny_model, tmp_path / "run", steps=4, save_every=10, time_limit_minutes=1e-9)
    threads = torch.get_num_threads()
    first = train(build_config(TrainConfig, values), target=FakeTarget(), reward=FakeReward())
    assert [r["step"] for r in first.rows] == [1]
    assert (tmp_path / "run" / "checkpoints" / "step-000001" / "COMPLETE").is_file()
    info = json.loads((tmp_path / "run" / "final" / "alignpro-train.json").read_text())
    assert info["steps"] == 1
    rest = train(build_config(TrainConfig, {**values, "resume": str(tmp_path / "run"), "time_limit_minutes": 0}),
                 target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    assert [r["step"] for r in rest.rows] == [2, 3, 4]
    assert json.loads((tmp_path / "run" / "final" / "alignpro-train.json").read_text())["steps"] == 4
    with pytest.raises(ConfigError, match="time_limit_minutes"):
        build_config(TrainConfig, {**values, "time_limit_minutes": -1})


def test_report_to_tensorboard_writes_the_logged_scalars(tiny_model, tmp_path):
    """A 2-step run with --report-to tensorboard: RUN/tensorboard holds every metrics.jsonl scalar, samples/s and
    tokens/s among them, at its step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    threads = torch.get_num_threads()
    cfg = build_config(TrainConfig, _args(tiny_model, tmp_path / "run", steps=2, report_to=["tensorboard"]))
    train(cfg, target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/reward_mean", "train/kl", "train/samples_per_s", "train/tokens_per_s", "train/lr"} <= tags
    assert tags == {f"train/{k}" for k in rows[0] if k != "step"}
    for name in ("reward_mean", "kl", "samples_per_s", "tokens_per_s"):
        got = [(e.step, e.value) for e in acc.Scalars(f"train/{name}")]
        assert [s for s, _ in got] == [1, 2]
        assert [v for _, v in got] == pytest.approx([r[name] for r in rows], rel=1e-6)
    assert rows[0]["samples_per_s"] == pytest.approx(rows[0]["reward_n"] / rows[0]["seconds"])


def test_resume_refuses_fewer_steps_than_the_run_has_done(tiny_model, tmp_path, capsys):
    """`train --resume RUN --steps N` with N below the steps done: one error (exit 2), and config.yaml and
    final/alignpro-train.json still say the steps the weights are at."""
    from alignpro.cli import main

    threads = torch.get_num_threads()
    run = tmp_path / "run"
    train(build_config(TrainConfig, _args(tiny_model, run, steps=3, save_every=1)), target=FakeTarget(),
          reward=FakeReward())
    torch.set_num_threads(threads)
    config, info = (run / "config.yaml").read_text(), (run / "final" / "alignpro-train.json").read_text()
    assert main(["train", "--resume", str(run), "--steps", "2"]) == 2
    torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "setting 'steps' (2) is below the 3 steps the run in" in err and "pass --steps 3 or more" in err
    assert (run / "config.yaml").read_text() == config
    assert (run / "final" / "alignpro-train.json").read_text() == info
    assert json.loads(info)["steps"] == 3 and yaml.safe_load(config)["steps"] == 3
