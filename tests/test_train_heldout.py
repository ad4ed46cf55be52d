"""The prompter's learning curve on held-out TRAIN prompts (alignpro.train.heldout): whole prompt groups held out of
training, a row before the first step, every N steps and after the last, paired gains over x and over the fixed-line
baselines, rows that differ by the weights alone, and a resumed run that keeps its curve."""

import math
import subprocess
import sys

import pytest
import torch

from alignpro.backends.fake import FakeReward, FakeTarget
from alignpro.config import build_config
from alignpro.data import load_prompts
from alignpro.errors import ConfigError
from alignpro.train.checkpoint import read_jsonl
from alignpro.train.config import TrainConfig
from alignpro.train.heldout import prompt_group, split_heldout
from alignpro.train.loop import train
from tests.test_train_runs import _args, _env


def test_prompt_group_is_the_base_prompt_of_a_variant():
    assert [prompt_group(i) for i in ("w001-v2", "p001-if3", "p007", "my-prompt", "x-v")] == [
        "w001", "p001", "p007", "my-prompt", "x-v"]


def test_split_heldout_takes_whole_groups_seeded_and_keeps_source_order():
    records = load_prompts("builtin-writing:train").records
    train_a, held_a = split_heldout(records, 10, seed=0)
    train_b, held_b = split_heldout(records, 10, seed=0)
    _, held_c = split_heldout(records, 10, seed=1)
    assert [r.id for r in held_a] == [r.id for r in held_b] and {r.id for r in held_a} != {r.id for r in held_c}
    assert 10 <= len(held_a) < 13 and len(train_a) + len(held_a) == len(records)  # groups of 3 variants
    held_groups = {prompt_group(r.id) for r in held_a}
    assert not held_groups & {prompt_group(r.id) for r in train_a}  # no base prompt on both sides
    assert all(sum(prompt_group(r.id) == g for r in held_a) == 3 for g in held_groups)
    order = {r.id: i for i, r in enumerate(records)}
    assert [order[r.id] for r in held_a] == sorted(order[r.id] for r in held_a)
    assert split_heldout(records, 0, seed=0) == (records, [])
    with pytest.raises(ConfigError, match="setting 'heldout' .* leaves no training prompt"):
        split_heldout(records[:6], 6, seed=0)


@pytest.mark.parametrize("values, message", [
    ({"heldout": 4, "role": "oracle", "target": "smollm2"}, "setting 'heldout' applies to role 'prompter' only"),
    ({"heldout": 4, "heldout_baselines": ["answer_rewrite"]}, "'answer_rewrite' is not a fixed-prompt baseline"),
    ({"heldout": -1}, "setting 'heldout' must be >= 0"),
    ({"heldout": 4, "heldout_answers": 0}, "setting 'heldout_answers' must be >= 1"),
])
def test_bad_heldout_settings_name_the_setting(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, _args("x", tmp_path / "run", prompter="smollm2", **values))


def test_heldout_curve_rows_pair_the_prompter_with_x_and_the_baselines(tiny_model, tmp_path):
    threads = torch.get_num_threads()
    cfg = build_config(TrainConfig, _args(tiny_model, tmp_path / "run", steps=3, heldout=5, heldout_every=2,
                                          heldout_answers=2, heldout_baselines=["best_suffix", "suffix=Be kind."]))
    train(cfg, target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    rows = read_jsonl(tmp_path / "run" / "heldout.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 3]  # before the first step, every 2, after the last
    for r in rows:
        assert r["prompts"] == 5 and r["answers"] == 2 and 0 <= r["keeps_x"] <= 1
        for label in ("x", "best_suffix", "suffix=Be kind."):  # balanced pairs: mean of differences = difference
            assert math.isclose(r[f"gain_vs_{label}"], r["reward"] - r[f"{label}_reward"], abs_tol=1e-9)
            assert r[f"gain_vs_{label}_se"] >= 0
    # the fixed arms are drawn once, on the same coupled streams, so every row holds the same numbers for them
    assert len({(r["x_reward"], r["best_suffix_reward"], r["suffix=Be kind._reward"]) for r in rows}) == 1
    # a fake line that asks for kindness: the fake π_F turns warm, the fake reward pays for it
    assert rows[0]["suffix=Be kind._reward"] > rows[0]["x_reward"]


def test_frozen_prompter_gives_the_same_row_at_every_step(tiny_model, tmp_path):
    """λ = ∞ leaves the weights as they are: the rewrites come from one fixed stream and the answers are coupled, so
    the rows differ by nothing (they would differ by sampling noise if either stream moved with the step)."""
    threads = torch.get_num_threads()
    cfg = build_config(TrainConfig, _args(tiny_model, tmp_path / "run", steps=2, kl_coef="inf", heldout=4,
                                          heldout_every=1))
    train(cfg, target=FakeTarget(), reward=FakeReward())
    torch.set_num_threads(threads)
    rows = read_jsonl(tmp_path / "run" / "heldout.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert len({(r["reward"], r["gain_vs_x"], r["keeps_x"]) for r in rows}) == 1


def test_resumed_run_continues_its_curve_without_the_start_row_again(tiny_model, tmp_path):
    run = tmp_path / "run"
    values = _args(tiny_model, run, steps=2, save_every=2, heldout=4, heldout_every=2, target="fake", reward="fake")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in values.items() if not isinstance(v, bool)] + ["--no-progress"]
    first = subprocess.run([sys.executable, "-m", "alignpro", "train", *flags], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "(4 held out)" in first.stdout + first.stderr and "held-out curve at step 0" in first.stdout + first.stderr
    again = subprocess.run([sys.executable, "-m", "alignpro", "train", "--resume", str(run), "--steps", "4"],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [r["step"] for r in read_jsonl(run / "heldout.jsonl")] == [0, 2, 4]


def test_writing_recipe_configs_hold_out_the_same_groups_in_sft_and_distillation():
    from pathlib import Path

    from alignpro.config import load_yaml
    from alignpro.train.sft import SFTConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    sft_cfg = build_config(SFTConfig, load_yaml(configs / "sft-prompter-writing.yaml"))
    distill = build_config(TrainConfig, load_yaml(configs / "train-prompter-distill-writing.yaml"))
    assert (sft_cfg.prompts, sft_cfg.heldout, sft_cfg.seed) == (distill.prompts, distill.heldout, distill.seed)
    assert distill.prompter == "hf:runs/sft-writing/final-adapter"  # the SFT command's documented --out
    assert distill.prompts == "builtin-writing:train" and distill.heldout_baselines == ["best_suffix", "suffix"]
    from alignpro.baselines import load_choice

    assert sft_cfg.demo_format.endswith(" " + load_choice().line)  # the recorded best fixed line, verbatim


def test_writing_oracle_recipe_has_the_prompter_recipes_rollout_budget():
    """Equal cost: per step the oracle samples as many answers (a SmolLM2-sized model's) as the prompter's recipe
    draws from π_F (K × M per prompt plus b(x)'s baseline_m), over as many steps, on the same prompts and reward."""
    from pathlib import Path

    from alignpro.config import load_yaml

    configs = Path(__file__).resolve().parents[1] / "configs"
    prompter = build_config(TrainConfig, load_yaml(configs / "train-prompter-distill-writing.yaml"))
    oracle = build_config(TrainConfig, load_yaml(configs / "train-oracle-distill-writing.yaml"))
    assert prompter.batch_size * (prompter.k * prompter.m + prompter.baseline_m) == oracle.batch_size * oracle.k
    assert (oracle.steps, oracle.prompts, oracle.reward, oracle.kl_coef) == (
        prompter.steps, prompter.prompts, prompter.reward, prompter.kl_coef)
    assert oracle.role.value == "oracle" and oracle.max_new_tokens == prompter.answer_max_new_tokens  # answers as long
