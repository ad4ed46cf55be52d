"""The one training loop, for both roles and all three algorithms. Read it top to bottom:

    setup → for each step: 1 rollout → 2 reward → 3 log-probs, values → 4 KL and advantages → 5 clipped update
          (distill: 4 ρ*'s weights of eq (10) → 5 weighted log-likelihood)
          → 6 KL controller → 7 log → 8 held-out curve → 9 checkpoint → export RUN/final

Notation: the policy π_θ is the prompter ρ (role ``prompter``, eq 9) or a trainable copy of π_F (role ``oracle``,
eq 2); π_ref is its frozen initial weights (ρ_sft or π_F); kl_coef is λ (eq 9) or β (eq 2). B = rollouts on this
process (prompts × K), T = response tokens, Q = query tokens.

Data parallel: every process samples its own shard of the step's prompts; ``accelerate`` all-reduces the
gradients, so all processes hold identical weights; process 0 writes the run folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from alignpro.backends.chat import stop_token_ids
from alignpro.config import check_resume, config_to_dict, load_yaml, write_run_config
from alignpro.errors import AlignProError, ConfigError
from alignpro.fileio import atomic_write_text
from alignpro.train.checkpoint import (TrainerState, append_jsonl, latest_checkpoint, read_jsonl,
                                       restore_checkpoint, save_checkpoint, truncate_jsonl)
from alignpro.train.tracking import RunLog
from alignpro.train.advantages import Algo
from alignpro.train.config import Role, TrainConfig
from alignpro.train.heldout import HELDOUT_FILE, HeldoutCurve, policy_sampler, split_heldout
from alignpro.train.distill import distill_weights, sequence_log_ratio, weight_entropy, weighted_nll, weights_to_tensor
from alignpro.train.kl import k1, k3, make_kl_controller
from alignpro.train.losses import (clipped_policy_loss, clipped_value_loss, entropy_from_logits,
                                   logprobs_from_logits, masked_mean)
from alignpro.train.policy import (PolicyWithValueHead, Reference, apply_lora, disable_dropout,
                                   export_final, param_checksum, sample_responses)

METRICS, SAMPLES, CONFIG = "metrics.jsonl", "samples.jsonl", "config.yaml"


@dataclass
class RolloutBatch:
    """One step's rollouts on this process, with everything the update needs."""

    query_ids: Tensor  # (B, Q) left-padded query tokens: the rewrite request for x, or x itself
    query_mask: Tensor  # (B, Q) 1 on real query tokens
    response_ids: Tensor  # (B, T) sampled a_t, right-padded after the EOS
    response_mask: Tensor  # (B, T) 1 on a_t up to and including the EOS
    logprobs: Tensor  # (B, T) log π_θold(a_t|s_t)
    ref_logprobs: Tensor  # (B, T) log π_ref(a_t|s_t)
    values: Tensor | None  # (B, T) V(s_t) of the value head (ppo)
    scores: Tensor  # (B,) r(x, y) (prompter: mean over the M answers to x′)
    rewards: Tensor  # (B, T) the per-token reward the estimator used (KL-shaped for ppo)
    advantages: Tensor  # (B, T) Â_t
    returns: Tensor | None  # (B, T) value targets Â_t + V(s_t) (ppo)

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)  # (B, Q+T)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)  # (B, Q+T)

    def select(self, idx: Tensor) -> "RolloutBatch":
        """The rollouts ``idx`` (a minibatch)."""
        return replace(self, **{f.name: getattr(self, f.name)[idx] for f in fields(self)
                                if getattr(self, f.name) is not None})


@dataclass
class TrainResult:
    run: Path  #: the run folder
    final: Path  #: RUN/final, a transformers folder (load it as hf:RUN/final)
    rows: list[dict[str, Any]]  #: the metrics rows written by this invocation
    policy: PolicyWithValueHead  #: the trained policy (unwrapped)
    reference: Reference  #: the frozen reference


def batch_indices(step: int, n: int, global_batch: int, seed: int) -> list[int]:
    """Prompt indices of ``step`` (1-based): the next ``global_batch`` items of a stream of seeded permutations of
    range(n), one per epoch. A pure function of the step, so a resumed run sees the same data."""
    start, stop = (step - 1) * global_batch, step * global_batch
    out = []
    for epoch in range(start // n, (stop - 1) // n + 1):
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        lo, hi = max(start, epoch * n) - epoch * n, min(stop, (epoch + 1) * n) - epoch * n
        out.extend(perm[lo:hi].tolist())
    return out


def step_seed(seed: int, step: int, rank: int, stage: int) -> int:
    """A distinct seed per (run seed, step, process, sampling stage)."""
    return (seed * 1_000_003 + step * 10_007 + rank * 101 + stage) % (2**31 - 1)


def train(cfg: TrainConfig, *, target=None, reward=None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; ``target``/``reward`` override the specs (tests)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, broadcast_object_list
    from tqdm.auto import tqdm

    from alignpro.data import load_prompts
    from alignpro.specs import load_causal_lm, make_reward, make_target
    from alignpro.templates import load_rewrite_template
    from alignpro.train.roles import OracleRole, PrompterRole

    # ================================================================================== setup: run folder
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available(),
                              mixed_precision=None if cfg.mixed_precision == "auto" else cfg.mixed_precision)
    is_main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    run = Path(cfg.out)
    resume_from = latest_checkpoint(run) if cfg.resume else None
    if cfg.resume and not (run / CONFIG).is_file():
        raise AlignProError(f"--resume {run}: no run there (no {CONFIG}); start one with --out {run}")
    if not cfg.resume and (run / METRICS).is_file() and (run / METRICS).stat().st_size:
        raise AlignProError(f"run folder '{run}' already holds a run; pass --resume {run} to continue it, "
                            "or choose another --out")
    start_step = resume_from[0] if resume_from else 0
    if cfg.resume:  # checked before anything in RUN changes
        check_resume(load_yaml(run / CONFIG), config_to_dict(cfg), TrainConfig, run / CONFIG)
        if cfg.steps < start_step:
            raise ConfigError(f"setting 'steps' ({cfg.steps}) is below the {start_step} steps the run in {run} has "
                              f"done (its checkpoint {resume_from[1].name}); a resumed run goes on to a later step: "
                              f"pass --steps {start_step} or more, or start a new run with another --out")
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
        write_run_config(cfg, run / CONFIG)
        for log in (METRICS, SAMPLES, HELDOUT_FILE):
            if cfg.resume:  # forget the rows after the checkpoint: those steps are re-run
                truncate_jsonl(run / log, start_step)
            else:
                (run / log).unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    metrics_log = RunLog(run, cfg.report_to, prefix="train", config=config_to_dict(cfg), first_step=start_step + 1,
                         metrics_file=METRICS, enabled=is_main)
    torch.manual_seed(cfg.seed)

    # ================================================================================== setup: data, models
    records = load_prompts(cfg.prompts).records
    records = records[:cfg.n_prompts] if cfg.n_prompts else records
    loaded, (records, heldout_records) = records, split_heldout(records, cfg.heldout, cfg.seed)
    device = accelerator.device
    base = load_causal_lm(cfg.policy_spec, trainable=True, device=str(device))
    tokenizer, chat_prompt = base.tokenizer, base.chat_prompt
    lm = base.model
    if cfg.lora:
        lm = apply_lora(lm, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules)
        reference = Reference(None)  # π_ref = the same weights with the adapter disabled
    else:
        reference = Reference(load_causal_lm(cfg.policy_spec, device=str(device)).model)  # a frozen copy
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
        if cfg.lora:
            lm.enable_input_require_grads()
    policy = PolicyWithValueHead(lm, value_head=cfg.algo.uses_critic)
    disable_dropout(policy)  # rollout and update log-probs come from the same deterministic function
    eos_ids, pad_id = stop_token_ids(tokenizer, lm, pad=False), tokenizer.pad_token_id
    reward = reward or make_reward(cfg.reward, loaded)
    curve = None
    if cfg.role is Role.PROMPTER:
        target = target or make_target(cfg.target, cfg.answer_gen, batch_size=cfg.generation_batch_size)
        role = PrompterRole(chat_prompt, load_rewrite_template(cfg.template), target, reward, cfg.m,
                            baseline_m=cfg.baseline_m)
        if heldout_records:
            curve = HeldoutCurve(heldout_records, chat_prompt=chat_prompt, template=role.template, target=target,
                                 reward=reward, answers=cfg.heldout_answers, seed=cfg.seed,
                                 baseline_entries=cfg.heldout_baselines)
    else:
        role = OracleRole(chat_prompt, reward)

    def measure_heldout(step: int) -> None:
        """8. The held-out curve's row at ``step`` (process 0 measures; see alignpro.train.heldout)."""
        if curve is not None and is_main:
            unwrapped.eval()
            sample = policy_sampler(unwrapped.lm, tokenizer, cfg.rollout_gen, eos_ids, pad_id, device)
            row = curve.measure(step, sample, chunk=cfg.batch_size * cfg.k)
            metrics_log.log(row, series="heldout")
            accelerator.print(f"alignpro train: held-out curve at step {step} ({row['prompts']} train prompts × "
                              f"{row['answers']}): reward {row['reward']:.3f}, gain over x {row['gain_vs_x']:+.3f} "
                              f"± {row['gain_vs_x_se']:.3f}")
        accelerator.wait_for_everyone()

    # ================================================================ setup: optimizer, schedule, KL controller
    lm_params = [p for p in policy.lm.parameters() if p.requires_grad]
    groups = [{"params": lm_params, "name": "policy"}]
    if policy.value_head is not None:
        groups.append({"params": list(policy.value_head.parameters()), "name": "value_head"})
    try:  # the fused kernel is ~4x faster on CPU and on GPU
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cfg.lr_factor(s, cfg.steps))
    kl_ctl = make_kl_controller(cfg.kl_control, cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    unwrapped: PolicyWithValueHead = accelerator.unwrap_model(policy)
    state = TrainerState()
    if resume_from:  # weights, optimizer, schedule, RNG states; then the KL controller and b(x) from trainer_state
        state = restore_checkpoint(resume_from[1], accelerator=accelerator, policy=unwrapped, optimizer=optimizer,
                                   scheduler=scheduler)
        kl_ctl.load_state_dict(state.kl_controller)
        if isinstance(role, PrompterRole):
            role.baselines.update(state.reward_baselines or {})
    params = [p for p in policy.parameters() if p.requires_grad]
    accelerator.print(f"alignpro train: role={cfg.role.value} algo={cfg.algo.value} on {len(records)} prompts "
                      f"from {cfg.prompts} ({len(heldout_records)} held out); {world} process(es) × "
                      f"{cfg.batch_size} prompts × K={cfg.k}; "
                      f"{'resuming after step ' + str(start_step) if resume_from else 'new run'} in {run}")

    rows: list[dict[str, Any]] = []
    t_invocation, last_step = time.perf_counter(), cfg.steps
    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"train {cfg.role.value}/{cfg.algo.value}", unit="step",
               disable=not (is_main and cfg.progress), dynamic_ncols=True)
    if start_step == 0:
        measure_heldout(0)  # ρ_sft, before any update
    for step in range(start_step + 1, cfg.steps + 1):
        t_step = time.perf_counter()
        kl_coef = kl_ctl.value  # the coefficient this step's rewards/loss use

        # ========================================================================== 1. rollout: sample y ~ π_θ
        shard = batch_indices(step, len(records), cfg.batch_size * world, cfg.seed)
        shard = shard[rank * cfg.batch_size:(rank + 1) * cfg.batch_size]
        batch_records = [records[i] for i in shard for _ in range(cfg.k)]  # (B,) each prompt's K samples adjacent
        enc = tokenizer(role.queries(batch_records), return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        unwrapped.eval()
        rollout_rng = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, step, rank, 0))
        response_ids, response_mask = sample_responses(unwrapped.lm, enc["input_ids"], enc["attention_mask"],
                                                       cfg.rollout_gen, eos_ids, pad_id, rollout_rng)  # (B, T) ×2
        T = response_ids.shape[1]
        texts = [tokenizer.decode(ids[m.bool()], skip_special_tokens=True).strip()
                 for ids, m in zip(response_ids, response_mask)]
        t_rollout = time.perf_counter()

        # ========================================================= 2. reward: r(x, y) against the original x
        scored = role.score(batch_records, texts, seed=step_seed(cfg.seed, step, rank, 1))
        scores = torch.tensor(scored.scores, dtype=torch.float32, device=device)  # (B,)
        if scored.baselines is not None:  # the gain over x: r − b(x), a per-prompt constant shift
            gains = scores - torch.tensor(scored.baselines, dtype=torch.float32, device=device)
        else:
            gains = scores
        t_reward = time.perf_counter()

        # =============================================== 3. log-probs (policy, reference) and values, no grad
        input_ids = torch.cat([enc["input_ids"], response_ids], dim=1)  # (B, Q+T)
        attention_mask = torch.cat([enc["attention_mask"], response_mask], dim=1)  # (B, Q+T)
        mask = response_mask.float()  # (B, T)
        with torch.no_grad(), accelerator.autocast():
            logits, values = unwrapped(input_ids, attention_mask, T)  # (B, T, V), (B, T) | None
            logprobs = logprobs_from_logits(logits, response_ids, cfg.temperature)  # (B, T) log π_θold
            entropy = masked_mean(entropy_from_logits(logits, cfg.temperature), mask)
            del logits
            ref_logprobs = logprobs_from_logits(reference.logits(unwrapped, input_ids, attention_mask, T),
                                                response_ids, cfg.temperature)  # (B, T) log π_ref
        values = values.float() * mask if values is not None else None

        # ============================================================ 4. KL to the reference and advantages
        kl = k1(logprobs, ref_logprobs) * mask  # (B, T) per-token k1
        seq_kl, seq_k3 = kl.sum(1), (k3(logprobs, ref_logprobs) * mask).sum(1)  # (B,) KL(π_θ‖π_ref) estimates
        distill_stats: dict[str, float] = {}
        if cfg.frozen:  # λ = ∞: the optimum is π_ref itself; nothing to estimate or update
            est_rewards, advantages, returns = torch.zeros_like(kl), torch.zeros_like(kl), None
        elif cfg.algo is Algo.DISTILL:  # ρ*'s weights on the K samples (eq 10); gains: R̂ − b(x), so R̂(x, x) ↦ 0
            n_prompts = len(gains) // cfg.k
            lm_w, id_w = distill_weights(gains.view(n_prompts, cfg.k).cpu().numpy(),
                                         sequence_log_ratio(ref_logprobs, logprobs, mask).view(
                                             n_prompts, cfg.k).cpu().numpy(),
                                         kl_coef, cfg.identity_prior, np.zeros(n_prompts))
            est_rewards, returns = torch.zeros_like(kl), None
            advantages = weights_to_tensor(lm_w, kl).unsqueeze(1) * mask  # (B, T): the candidate's weight per token
            distill_stats = {"identity_weight": float(id_w.mean()),
                             "weight_entropy": weight_entropy(np.concatenate([id_w[:, None], lm_w], axis=1))}
        else:
            est = cfg.algo.estimate(gains, kl, mask, values, kl_coef=kl_coef, group_size=cfg.k, gamma=cfg.gamma,
                                    lam=cfg.gae_lambda, whiten=cfg.whiten_advantages)
            est_rewards, advantages, returns = est.rewards, est.advantages, est.returns
        batch = RolloutBatch(enc["input_ids"], enc["attention_mask"], response_ids, response_mask, logprobs,
                             ref_logprobs, values, scores, est_rewards, advantages, returns)

        # ================================================= 5. update: `epochs` passes of clipped minibatch steps
        upd: dict[str, list[float]] = {}
        if not cfg.frozen:
            policy.train()  # dropout is off; train mode only lets gradient checkpointing work
            shuffle = torch.Generator().manual_seed(step_seed(cfg.seed, step, rank, 2))
            B = len(batch_records)
            for _epoch in range(cfg.epochs):
                for idx in torch.randperm(B, generator=shuffle).chunk(cfg.num_minibatches):
                    mb = batch.select(idx.to(device))
                    mb_mask = mb.response_mask.float()
                    with accelerator.autocast():
                        logits, new_values = policy(mb.input_ids, mb.attention_mask, T)
                    new_logp = logprobs_from_logits(logits, mb.response_ids, cfg.temperature)  # (b, T)
                    del logits
                    if cfg.algo is Algo.DISTILL:  # a step on KL(ρ* ‖ ρ_θ): the weighted log-likelihood
                        loss = weighted_nll(new_logp, mb.advantages, mb_mask, len(idx) / cfg.k)
                        stats = {"distill_loss": loss.item(),
                                 "approx_kl": masked_mean(mb.logprobs - new_logp, mb_mask).item()}
                    else:
                        pg_loss, clip_frac, approx_kl = clipped_policy_loss(new_logp, mb.logprobs, mb.advantages,
                                                                            mb_mask, cfg.cliprange)
                        loss = pg_loss
                        stats = {"policy_loss": pg_loss.item(), "clip_frac": clip_frac.item(),
                                 "approx_kl": approx_kl.item()}
                    if cfg.algo.uses_critic:
                        vf_loss, vf_clip = clipped_value_loss(new_values.float(), mb.values, mb.returns, mb_mask,
                                                              cfg.cliprange_value)
                        loss = loss + cfg.vf_coef * vf_loss
                        stats.update(value_loss=vf_loss.item(), value_clip_frac=vf_clip.item())
                    if cfg.algo.kl_in_loss:  # GRPO: β·k3 as a loss term
                        kl_loss = masked_mean(k3(new_logp, mb.ref_logprobs), mb_mask)
                        loss = loss + kl_coef * kl_loss
                        stats["kl_loss"] = kl_loss.item()
                    accelerator.backward(loss)
                    if cfg.max_grad_norm and not deepspeed:
                        stats["grad_norm"] = float(accelerator.clip_grad_norm_(params, cfg.max_grad_norm))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    for key, v in stats.items():
                        upd.setdefault(key, []).append(v)
            scheduler.step()
        t_update = time.perf_counter()

        # ================================================ 6. adapt the KL coefficient to the measured KL
        all_scores = accelerator.gather(scores)  # (B·world,)
        all_kl, all_k3 = accelerator.gather(seq_kl), accelerator.gather(seq_k3)
        all_len = accelerator.gather(response_mask.sum(1).float())
        kl_ctl.update(float(all_kl.mean()), n_steps=len(all_kl))

        # ============================================================================== 7. log (process 0)
        seconds = time.perf_counter() - t_step
        state = TrainerState(step, state.elapsed_seconds + seconds, data_position=step * cfg.batch_size * world,
                             kl_controller=kl_ctl.state_dict(),  # b(x): process 0's cache; others recompute theirs
                             reward_baselines=role.baselines if isinstance(role, PrompterRole) and role.baseline_m
                             else None)
        local = {k: float(np.mean(v)) for k, v in upd.items()}
        local.update(entropy=float(entropy), **scored.stats, **distill_stats)
        means = {k: float(v) for k, v in zip(local, accelerator.reduce(
            torch.tensor(list(local.values()), dtype=torch.float64, device=device), "mean").tolist())}
        n = len(all_scores)
        row = {"step": step,
               "reward_mean": float(all_scores.mean()),
               "reward_std": float(all_scores.std()) if n > 1 else 0.0,
               "reward_stderr": float(all_scores.std() / math.sqrt(n)) if n > 1 else 0.0,
               "reward_n": n,
               **({"reward_gain_mean": float(accelerator.gather(gains).mean())} if scored.baselines is not None
                  else {}),
               "kl": float(all_kl.mean()), "kl_k3": float(all_k3.mean()), "kl_coef": kl_coef,
               **means,
               "response_tokens": float(all_len.mean()),
               "lr": scheduler.get_last_lr()[0],
               "samples_per_s": n / seconds, "tokens_per_s": float(all_len.sum()) / seconds,
               "rollout_seconds": t_rollout - t_step, "reward_seconds": t_reward - t_rollout,
               "update_seconds": t_update - t_reward, "seconds": seconds,
               "elapsed_seconds": state.elapsed_seconds}
        metrics_log.log(row)
        if is_main:
            append_jsonl(run / SAMPLES, {"step": step, "prompt": batch_records[0].text, "response": texts[0],
                                         "shown_to_target": scored.shown[0], "answer": scored.answers[0],
                                         "reward": float(scored.scores[0]),
                                         **({"baseline": float(scored.baselines[0])}
                                            if scored.baselines is not None else {})})
        rows.append(row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.2f}", refresh=False)

        # ============================ 8. held-out curve, then 9. checkpoint (atomic): a row is written before its step
        out_of_time = bool(cfg.time_limit_minutes) and step < cfg.steps and (
            time.perf_counter() - t_invocation > 60 * cfg.time_limit_minutes)
        if world > 1:  # rank 0's clock decides, so every process stops after the same step
            out_of_time = bool(broadcast_object_list([out_of_time])[0])
        if step % cfg.heldout_every == 0 or step == cfg.steps or out_of_time:
            measure_heldout(step)
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            save_checkpoint(run, state, accelerator=accelerator, policy=unwrapped, optimizer=optimizer,
                            scheduler=scheduler, keep=cfg.keep_checkpoints)
        if out_of_time:
            last_step = step
            accelerator.print(f"alignpro train: time limit of {cfg.time_limit_minutes} min reached after step "
                              f"{step} of {cfg.steps}; checkpoint written, continue with --resume {run}")
            break

    # ================================================================= export: RUN/final as a model folder
    bar.close()
    metrics_log.close()
    if is_main:
        last = read_jsonl(run / METRICS)[-5:]  # the whole run's last steps (this invocation may be a resume)
        info = {"role": cfg.role.value, "algo": cfg.algo.value, "base_spec": cfg.policy_spec, "lora": cfg.lora,
                "template": cfg.template if cfg.role is Role.PROMPTER else None, "steps": last_step,
                "run": str(run), "reward": cfg.reward, "prompts": cfg.prompts,
                "final_kl": float(np.mean([r["kl"] for r in last])) if last else None,
                "final_kl_note": "mean per-response KL(π_θ ‖ π_ref) in nats over the last 5 training steps"}
        export_final(unwrapped, tokenizer, run, info)
        accelerator.print(f"alignpro train: wrote {run / 'final'} (load it as the {cfg.role.value} spec "
                          f"'hf:{run / 'final'}')")
    if cfg.debug_param_checksum:
        (run / "debug").mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "debug" / f"params-rank{rank}.json",
                          json.dumps({"rank": rank, "world": world, "step": last_step, **param_checksum(unwrapped)}))
    accelerator.wait_for_everyone()
    return TrainResult(run, run / "final", rows, unwrapped, reference)

