"""Stages 1-3 of ``alignpro overopt``, each an existing command's function, skipped when complete and resumed when
interrupted:

    1. pairs      RUN/pairs-train.jsonl   π_F answers each train prompt n times, the gold reward labels every
                                          untied pair (``alignpro reward label``)
    2. proxies    RUN/rm-<N>/             a Bradley–Terry reward model (eq 1) on N of those pairs, one per N
                                          (``alignpro reward train``; loads as rm:RUN/rm-<N>)
    3. training   RUN/prompter-<N>/       ρ trained on proxy N (eq 9; the prompter recipe), every checkpoint kept
                  RUN/oracle-<N>/         π_F trained on proxy N (eq 2; the oracle recipe), every checkpoint kept
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignpro.backends.adapter import TRAIN_INFO
from alignpro.config import build_config, check_resume, config_to_dict, load_yaml
from alignpro.errors import AlignProError
from alignpro.overopt.config import OveroptConfig

PAIRS = "pairs-train.jsonl"
ROLES = ("prompter", "oracle")  #: the trained policies: ρ (eq 9) and π_F itself (eq 2)


def stage_pairs(cfg: OveroptConfig) -> Path:
    """Stage 1: the gold-labelled pairs of the train prompts."""
    from alignpro.reward_model.config import RewardLabelConfig
    from alignpro.reward_model.label import label_pairs, progress_path, saved_settings

    out = Path(cfg.out) / PAIRS
    values = dict(prompts=cfg.train_prompts, n_prompts=cfg.n_label_prompts, target=cfg.target, gold=cfg.gold,
                  out=str(out), seed=cfg.seed, answers_per_prompt=cfg.answers_per_prompt,
                  max_new_tokens=cfg.label_max_new_tokens, batch_size=cfg.label_batch_size, progress=cfg.progress)
    record = progress_path(out)
    if record.is_file():
        progress = json.loads(record.read_text())
        saved, where = saved_settings(out, progress)
        check_resume(saved, config_to_dict(build_config(RewardLabelConfig, values)), RewardLabelConfig, where)
        if progress.get("complete"):
            print(f"alignpro overopt: stage 1 done: {progress['counts']['pairs']} pairs in {out}", flush=True)
            return out
        values["resume"] = str(out)  # interrupted: it continues
    label_pairs(build_config(RewardLabelConfig, values))
    return out


def proxy_dir(cfg: OveroptConfig, n: int) -> Path:
    return Path(cfg.out) / f"rm-{n}"


def stage_proxies(cfg: OveroptConfig, pairs: Path) -> dict[int, dict[str, Any]]:
    """Stage 2: one Bradley–Terry proxy per N; returns N -> its reward_model.json record."""
    from alignpro.reward_model.config import RewardTrainConfig
    from alignpro.reward_model.train import CONFIG, RECORD, train_reward_model

    records = {}
    for n in cfg.n_pairs:
        run = proxy_dir(cfg, n)
        values = dict(pairs=str(pairs), n_train=n, base=cfg.rm_base, epochs=cfg.rm_epochs, lr=cfg.rm_lr,
                      batch_size=cfg.rm_batch_size, out=str(run), seed=cfg.seed, progress=cfg.progress,
                      num_threads=cfg.num_threads)
        if (run / CONFIG).is_file():
            check_resume(load_yaml(run / CONFIG), config_to_dict(build_config(RewardTrainConfig, values)),
                         RewardTrainConfig, run / CONFIG)
            if not (run / RECORD).is_file():
                values["resume"] = str(run)
        if not (run / RECORD).is_file():
            train_reward_model(build_config(RewardTrainConfig, values))
        records[n] = json.loads((run / RECORD).read_text())
        print(f"alignpro overopt: stage 2: proxy rm:{run} on {records[n]['data']['train_pairs']} pairs",
              flush=True)
    return records


def train_dir(cfg: OveroptConfig, role: str, n: int) -> Path:
    return Path(cfg.out) / f"{role}-{n}"


def train_values(cfg: OveroptConfig, role: str, n: int) -> dict[str, Any]:
    """The recipe of ``role`` with what the study sets: the proxy, the prompts, the steps, every checkpoint kept,
    and the study's sampling of π_F (prompter: its answers; oracle: its own rollouts)."""
    recipe = cfg.prompter_recipe if role == "prompter" else cfg.oracle_recipe
    values = {**load_yaml(recipe), "reward": f"rm:{proxy_dir(cfg, n)}", "prompts": cfg.train_prompts,
              "steps": cfg.train_steps, "save_every": cfg.checkpoint_every, "keep_checkpoints": cfg.train_steps,
              "out": str(train_dir(cfg, role, n)), "seed": cfg.seed, "target": cfg.target, "progress": cfg.progress,
              "num_threads": cfg.num_threads, "time_limit_minutes": cfg.train_time_limit_minutes}
    gen = cfg.answer_gen
    if role == "prompter":
        values.update(prompter=cfg.prompter, answer_max_new_tokens=gen.max_new_tokens,
                      answer_temperature=gen.temperature, answer_top_p=gen.top_p, answer_top_k=gen.top_k)
    else:
        values.update(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
                      top_k=gen.top_k)
    if values.get("role") != role:
        raise AlignProError(f"setting '{role}_recipe': {recipe} trains role '{values.get('role')}', not '{role}'")
    return values


def reached_step(run: Path) -> int:
    """The step a finished training run reached (its time limit may have ended it before ``steps``)."""
    return int(json.loads((run / "final" / TRAIN_INFO).read_text())["steps"])


def stage_train(cfg: OveroptConfig, role: str, n: int) -> Path:
    """Stage 3: ``role`` trained on proxy N (skipped if done; resumed if interrupted or if its time limit stopped
    it before ``train_steps``, so each run of the study trains it for up to another time limit)."""
    from alignpro.train.config import TrainConfig
    from alignpro.train.loop import CONFIG, train

    run, values = train_dir(cfg, role, n), train_values(cfg, role, n)
    if (run / CONFIG).is_file():
        check_resume(load_yaml(run / CONFIG), config_to_dict(build_config(TrainConfig, values)), TrainConfig,
                     run / CONFIG)
        if (run / "final" / TRAIN_INFO).is_file() and reached_step(run) >= cfg.train_steps:
            return run
        values["resume"] = str(run)  # interrupted, or stopped by its time limit: it continues
    train(build_config(TrainConfig, values))
    return run
