"""``alignpro reward train``: fit r_φ to preference pairs by eq (1). Read it top to bottom:
    setup (run folder, pairs, held-out split by prompt, model, optimizer; or the last checkpoint)
    → for each step: 1 forward (x, y_w) and (x, y_l) → 2 eq (1) loss and update → 3 log → 4 checkpoint
    → measure on the held-out pairs (accuracy ± s.e., eq (1) loss, calibration figure) → RUN/model + record.
Notation: B = pairs per step; r_w, r_l = r_φ(x, y_w), r_φ(x, y_l); Δ = r_w − r_l.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignpro.config import check_resume, config_to_dict, load_yaml, write_run_config
from alignpro.data.preferences import PreferencePair, load_pairs, pair_to_row, split_pairs_by_prompt
from alignpro.errors import AlignProError, ConfigError
from alignpro.reward_model.bt import bradley_terry_loss
from alignpro.reward_model.config import RewardTrainConfig
from alignpro.reward_model.measure import PairMeasures, measure, plot_calibration, score_pairs, score_rows
from alignpro.reward_model.model import MODEL_FOLDER, RewardScorer
from alignpro.fileio import atomic_write_text, check_run_folder, make_run_folder
from alignpro.train.checkpoint import (begin_checkpoint, finish_checkpoint, latest_checkpoint, prune_checkpoints,
                                       read_jsonl, rng_state, set_rng_state, torch_save, truncate_jsonl)
from alignpro.train.loop import batch_indices
from alignpro.train.tracking import RunLog

CONFIG, METRICS, RECORD = "config.yaml", "metrics.jsonl", "reward_model.json"
HELDOUT, HELDOUT_SCORES, FIGURE = "heldout.jsonl", "heldout_scores.jsonl", "calibration.png"


@dataclass
class RewardTrainResult:
    run: Path  #: the run folder
    model: Path  #: RUN/model: load it as the reward spec rm:RUN
    record: dict[str, Any]  #: what RUN/reward_model.json holds
    rows: list[dict[str, Any]]  #: the metrics rows written by this invocation
    scorer: RewardScorer  #: the trained reward model
    heldout: PairMeasures | None  #: the held-out measures (None with heldout_fraction 0)


def total_steps(cfg: RewardTrainConfig, n_train: int) -> int:
    """``steps``, or ``epochs`` passes over the training pairs in batches of ``batch_size``."""
    return cfg.steps or cfg.epochs * math.ceil(n_train / cfg.batch_size)


def _fingerprint(pairs: list[PreferencePair]) -> str:
    """A hash of the training pairs, to refuse resuming a run on different data."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.system, p.prompt, p.chosen, p.rejected]).encode())
    return h.hexdigest()[:16]


def train_reward_model(cfg: RewardTrainConfig) -> RewardTrainResult:
    """Run (or resume) the training described by ``cfg``."""
    from tqdm.auto import tqdm

    # ========================================================================== setup: run folder checks
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run = check_run_folder(cfg.out)
    if cfg.resume and not (run / CONFIG).is_file():
        raise AlignProError(f"--resume {run}: no reward-model run there (no {CONFIG}); start one with --out {run}")
    if not cfg.resume and ((run / METRICS).is_file() or (run / CONFIG).is_file()):
        raise AlignProError(f"run folder '{run}' already holds a run; pass --resume {run} to continue it, or choose "
                            "another --out")
    if cfg.resume:
        check_resume(load_yaml(run / CONFIG), config_to_dict(cfg), RewardTrainConfig, run / CONFIG)

    # ================================================================ setup: pairs, held-out split by prompt
    loaded = load_pairs(cfg.pairs, cfg.pairs_split, cfg.skip_bad, data_files=cfg.data_files or None)
    train_pairs, heldout = split_pairs_by_prompt(loaded.pairs, cfg.heldout_fraction, cfg.seed)
    if cfg.heldout_fraction > 0 and not heldout:
        n_prompts = len({p.prompt_key for p in loaded.pairs})
        raise ConfigError(f"{cfg.pairs}: {len(loaded.pairs)} pair(s) of {n_prompts} distinct prompt(s) leave nothing "
                          f"to hold out (setting 'heldout_fraction' = {cfg.heldout_fraction}): the held-out split "
                          "needs pairs of at least 2 distinct prompts; add pairs, or pass --heldout-fraction 0 to "
                          "train on all of them with no held-out measure")
    available = len(train_pairs)
    if cfg.n_train and cfg.n_train < len(train_pairs):
        keep = sorted(random.Random(cfg.seed).sample(range(len(train_pairs)), cfg.n_train))
        train_pairs = [train_pairs[i] for i in keep]
    if not train_pairs:
        raise AlignProError(f"{cfg.pairs}: no training pairs left after holding out {len(heldout)} "
                            f"(heldout_fraction={cfg.heldout_fraction}); lower heldout_fraction or add pairs")
    steps = total_steps(cfg, len(train_pairs))
    fingerprint = _fingerprint(train_pairs)

    # ================================================================ setup: model, optimizer, schedule
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    scorer = RewardScorer.from_base(cfg.base, cfg.template, cfg.max_length, cfg.device)
    net = scorer.net
    if cfg.freeze_base:
        for name, p in net.named_parameters():
            p.requires_grad_(name in net.new_parameters)
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not named:
        raise AlignProError(f"setting 'freeze_base': the base '{cfg.base}' already has its one-label head, so "
                            "freezing the base leaves nothing to train; drop --freeze-base")
    groups = [{"params": [p for n, p in named if n not in net.new_parameters], "lr": cfg.lr, "name": "base"},
              {"params": [p for n, p in named if n in net.new_parameters], "lr": cfg.head_lr, "name": "head"}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cfg.lr_factor(s, steps))

    # ================================================== setup: run folder (written once everything loaded)
    resume_from = latest_checkpoint(run) if cfg.resume else None
    start_step = resume_from[0] if resume_from else 0
    make_run_folder(run)
    write_run_config(cfg, run / CONFIG)
    if cfg.resume:
        truncate_jsonl(run / METRICS, start_step)  # the steps after the checkpoint are re-run and logged again
    else:
        (run / METRICS).unlink(missing_ok=True)
    atomic_write_text(run / HELDOUT, "".join(json.dumps(pair_to_row(p), ensure_ascii=False) + "\n" for p in heldout))
    state: dict[str, Any] = {"step": 0, "elapsed_seconds": 0.0, "train_pairs": len(train_pairs),
                             "fingerprint": fingerprint}
    if resume_from:
        ckpt = resume_from[1]
        saved = json.loads((ckpt / "trainer_state.json").read_text())
        if saved.get("fingerprint") != fingerprint:
            raise AlignProError(f"--resume {run}: the training pairs from '{cfg.pairs}' differ from those the run "
                                "started with (the file changed?); start a new run with --out")
        state = saved
        net.load_state_dict(torch.load(ckpt / "model.pt", map_location=scorer.device))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=scorer.device))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt"))
        set_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
    print(f"alignpro reward train: {loaded.summary()} from {cfg.pairs}; {len(train_pairs)} training pairs"
          f"{f' (sampled from {available})' if len(train_pairs) < available else ''}, {len(heldout)} held out "
          f"({len({p.prompt_key for p in heldout})} prompts); base {cfg.base}, template {scorer.template.kind}; "
          f"{steps} steps of {cfg.batch_size} pairs; "
          f"{'resuming after step ' + str(start_step) if resume_from else 'new run'} in {run}", flush=True)

    rows: list[dict[str, Any]] = []
    metrics_log = RunLog(run, cfg.report_to, prefix="reward", config=config_to_dict(cfg), first_step=start_step + 1,
                         metrics_file=METRICS)
    bar = tqdm(total=steps, initial=start_step, desc="reward train", unit="step", disable=not cfg.progress,
               dynamic_ncols=True)
    for step in range(start_step + 1, steps + 1):
        t_step = time.perf_counter()
        batch = [train_pairs[i] for i in batch_indices(step, len(train_pairs), cfg.batch_size, cfg.seed)]
        B = len(batch)

        # ===================================================== 1. forward: r_φ(x, y_w) and r_φ(x, y_l) together
        net.train()
        enc = scorer.encode([p.prompt for p in batch] * 2, [p.chosen for p in batch] + [p.rejected for p in batch],
                            [p.system for p in batch] * 2)  # (2B, T) tensors
        r = scorer.net(**enc).float()  # (2B,), as RewardScorer.forward
        r_w, r_l = r[:B], r[B:]  # (B,), (B,)

        # ===================================================== 2. eq (1): −mean log σ(r_w − r_l), one AdamW step
        loss = bradley_terry_loss(r_w, r_l)
        if not torch.isfinite(loss):
            raise AlignProError(f"reward train: the loss is {loss.item()} at step {step}; lower lr/head_lr")
        loss.backward()
        params = [p for _, p in named]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm else
                                                         float("inf")))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        # ============================================================================================ 3. log
        margin = (r_w - r_l).detach()
        seconds = time.perf_counter() - t_step
        state = {**state, "step": step, "elapsed_seconds": state["elapsed_seconds"] + seconds}
        row: dict[str, Any] = {"step": step, "epoch": (step * cfg.batch_size) / len(train_pairs),
                               "loss": loss.item(), "accuracy": float((margin > 0).float().mean()),
                               "margin": float(margin.mean()), "grad_norm": grad_norm,
                               "lr": scheduler.get_last_lr()[0], "samples_per_s": B / seconds,
                               "tokens_per_s": float(enc["attention_mask"].sum()) / seconds, "seconds": seconds,
                               "elapsed_seconds": state["elapsed_seconds"]}
        if cfg.eval_every and heldout and step % cfg.eval_every == 0:
            m = measure(score_pairs(scorer, heldout, cfg.eval_batch_size), cfg.calibration_bins,
                        [p.prompt_key for p in heldout])
            row.update(heldout_accuracy=m.accuracy.accuracy, heldout_stderr=m.accuracy.stderr,
                       heldout_n=m.accuracy.n, heldout_loss=m.loss)
        metrics_log.log(row)
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}", refresh=False)
        bar.update(1)

        # ================================================================================= 4. checkpoint
        if step % cfg.save_every == 0 or step == steps:
            tmp = begin_checkpoint(run, step)
            torch_save(net.state_dict(), tmp / "model.pt")
            torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch_save(rng_state(), tmp / "rng.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
            finish_checkpoint(tmp, run, step)
            prune_checkpoints(run, cfg.keep_checkpoints)
    bar.close()
    metrics_log.close()

    # ============================================================= measure on the held-out pairs (never trained on)
    measures = None
    if heldout:
        scores = score_pairs(scorer, heldout, cfg.eval_batch_size, progress=cfg.progress, desc="held-out pairs")
        measures = measure(scores, cfg.calibration_bins, [p.prompt_key for p in heldout])
        atomic_write_text(run / HELDOUT_SCORES, "".join(json.dumps(r) + "\n" for r in score_rows(heldout, scores)))
        plot_calibration(measures, run / FIGURE, f"Bradley–Terry reward ({cfg.base}) on {measures.accuracy.n} "
                                                 "held-out pairs")

    # ============================================================= export: RUN/model and RUN/reward_model.json
    model_dir = scorer.save(run / MODEL_FOLDER)
    logged = read_jsonl(run / METRICS)
    last = logged[-1] if logged else {}
    record = {
        "model": str(model_dir), "reward_spec": f"rm:{run}", "base": cfg.base, "template": scorer.template.to_dict(),
        "data": {"source": cfg.pairs, "split": cfg.pairs_split, "data_files": cfg.data_files,
                 "loaded_pairs": len(loaded.pairs), "skipped": loaded.skipped,
                 "skipped_reasons": loaded.skipped_reasons, "duplicates": loaded.duplicates,
                 "train_pairs": len(train_pairs), "train_pairs_available": available,
                 "train_prompts": len({p.prompt_key for p in train_pairs}), "heldout_pairs": len(heldout),
                 "heldout_prompts": len({p.prompt_key for p in heldout}), "heldout_fraction": cfg.heldout_fraction,
                 "split_rule": "by prompt: sha256(seed:system\\x1fprompt) order; a prompt's pairs stay together"},
        "training": {"steps": steps, "pairs_seen": steps * cfg.batch_size,
                     "epochs": steps * cfg.batch_size / len(train_pairs),
                     "last_step_loss": last.get("loss"), "last_step_accuracy": last.get("accuracy"),
                     "train_seconds": state["elapsed_seconds"]},
        "heldout": measures.to_dict() if measures else None,
        "config": {**config_to_dict(cfg), "resume": None},
    }
    atomic_write_text(run / RECORD, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    if measures:
        print(f"alignpro reward train: held-out {measures}", flush=True)
    print(f"alignpro reward train: wrote {model_dir} (use it as the reward spec 'rm:{run}') and {run / RECORD}",
          flush=True)
    return RewardTrainResult(run, model_dir, record, rows, scorer, measures)

