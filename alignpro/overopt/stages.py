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
from typing import Any, Sequence

from alignpro.backends.adapter import TRAIN_INFO
from alignpro.config import build_config, config_to_dict, load_yaml
from alignpro.errors import AlignProError
from alignpro.overopt.config import OveroptConfig

PAIRS = "pairs-train.jsonl"
ROLES = ("prompter", "oracle")  #: the trained policies: ρ (eq 9) and π_F itself (eq 2)


def check_same(saved: dict[str, Any], wanted: dict[str, Any], ignore: Sequence[str], where: Path) -> None:
    changed = sorted(k for k, v in wanted.items() if k not in ignore and saved.get(k) != v)
    if changed:
        raise AlignProError(f"{where} was made with other settings ({changed} differ from this config's); use "
                            "another --out, or delete that folder to redo the stage")


def stage_pairs(cfg: OveroptConfig) -> Path:
    """Stage 1: the gold-labelled pairs of the train prompts."""
    from alignpro.reward_model.config import RewardLabelConfig
    from alignpro.reward_model.label import RESUMABLE_CHANGES, label_pairs, progress_path

    out = Path(cfg.out) / PAIRS
    label = build_config(RewardLabelConfig, dict(
        prompts=cfg.train_prompts, n_prompts=cfg.n_label_prompts, target=cfg.target, gold=cfg.gold, out=str(out),
        seed=cfg.seed,
        answers_per_prompt=cfg.answers_per_prompt, max_new_tokens=cfg.label_max_new_tokens,
        batch_size=cfg.label_batch_size, progress=cfg.progress))
    record = progress_path(out)
    if record.is_file():
        saved = json.loads(record.read_text())
        check_same(saved["config"], config_to_dict(label), RESUMABLE_CHANGES, record)
        if saved.get("complete"):
            print(f"alignpro overopt: stage 1 done: {saved['counts']['pairs']} pairs in {out}", flush=True)
            return out
        label.resume = True
    label_pairs(label)
    return out


def proxy_dir(cfg: OveroptConfig, n: int) -> Path:
    return Path(cfg.out) / f"rm-{n}"


def stage_proxies(cfg: OveroptConfig, pairs: Path) -> dict[int, dict[str, Any]]:
    """Stage 2: one Bradley–Terry proxy per N; returns N -> its reward_model.json record."""
    from alignpro.reward_model.config import RESUMABLE_CHANGES, RewardTrainConfig
    from alignpro.reward_model.train import CONFIG, RECORD, train_reward_model

    records = {}
    for n in cfg.n_pairs:
        run = proxy_dir(cfg, n)
        values = dict(pairs=str(pairs), n_train=n, base=cfg.rm_base, epochs=cfg.rm_epochs, lr=cfg.rm_lr,
                      batch_size=cfg.rm_batch_size, out=str(run), seed=cfg.seed, progress=cfg.progress,
                      num_threads=cfg.num_threads)
        if (run / CONFIG).is_file():
            check_same(load_yaml(run / CONFIG), config_to_dict(build_config(RewardTrainConfig, values)),
                        RESUMABLE_CHANGES, run / CONFIG)
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
    from alignpro.train.config import RESUMABLE_CHANGES, TrainConfig
    from alignpro.train.loop import CONFIG, train

    run, values = train_dir(cfg, role, n), train_values(cfg, role, n)
    if (run / CONFIG).is_file():
        check_same(load_yaml(run / CONFIG), config_to_dict(build_config(TrainConfig, values)),
                    (*RESUMABLE_CHANGES, "resume", "out"), run / CONFIG)
        if (run / "final" / TRAIN_INFO).is_file() and reached_step(run) >= cfg.train_steps:
            return run
        values["resume"] = str(run)  # interrupted, or stopped by its time limit: it continues
    train(build_config(TrainConfig, values))
    return run
