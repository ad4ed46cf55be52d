"""A checkpoint of an ``alignpro train`` run as a policy to measure: samples on new prompts, with the KL of each
sample to the run's reference.

The policy is rebuilt as the training loop built it (the base model of the run's config + a LoRA adapter of the
same shape) and the checkpoint's trained tensors are loaded into it; step 0 is the fresh adapter (B = 0), i.e. the
reference itself. Samples are drawn with the run's rollout sampling (temperature, top_p, top_k), and the KL of a
sample is Σ_t log π_θ(a_t|s_t) − log π_ref(a_t|s_t) at the run's temperature (k1, as the loop logs it; k3 too):
averaged over samples, an estimate of KL(π_θ(·|x) ‖ π_ref(·|x)) in nats (ρ vs ρ_sft for the prompter, π vs π_F
for the oracle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from alignpro.backends.base import prompt_keys, stream_seed
from alignpro.backends.chat import stop_token_ids
from alignpro.config import build_config, load_yaml
from alignpro.data import PromptRecord
from alignpro.errors import AlignProError
from alignpro.train.checkpoint import checkpoint_dir, load_trainable_state
from alignpro.train.config import Role, TrainConfig
from alignpro.train.kl import k1, k3
from alignpro.train.losses import logprobs_from_logits
from alignpro.train.policy import PolicyWithValueHead, Reference, apply_lora, disable_dropout, sample_responses


@dataclass
class PolicySamples:
    """``n`` samples per prompt from one checkpoint. Shapes (P, n)."""

    texts: list[list[str]]  #: raw responses (a rewrite request's output for the prompter, an answer for the oracle)
    kl: np.ndarray  #: (P, n) k1 summed over each response's tokens
    kl_k3: np.ndarray  #: (P, n) k3 summed over each response's tokens


def run_config(run: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` an ``alignpro train`` run folder was made with."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise AlignProError(f"'{run}' is not a run folder of alignpro train (no config.yaml)")
    return build_config(TrainConfig, {**load_yaml(path), "resume": None}, source=str(path))


class CheckpointPolicy:
    """The policy of ``run`` after ``step`` training steps (0 = the reference), ready to sample and score."""

    def __init__(self, run: str | Path, step: int, *, device: str = "cpu") -> None:
        from alignpro.specs import load_causal_lm

        self.cfg = cfg = run_config(run)
        if not cfg.lora:
            raise AlignProError(f"'{run}': measuring checkpoints needs a LoRA run (lora: true); this run trained "
                                "all weights")
        base = load_causal_lm(cfg.policy_spec, trainable=True, device=device)
        self.tokenizer, self.chat_prompt, self.device = base.tokenizer, base.chat_prompt, torch.device(device)
        # a fresh adapter: B = 0, so step 0 is the reference; a checkpoint's tensors replace A and B
        self.policy = PolicyWithValueHead(apply_lora(base.model, cfg.lora_r, cfg.lora_alpha,
                                                     cfg.lora_target_modules), value_head=False)
        if step > 0:
            ckpt = checkpoint_dir(Path(run), step) / "policy.pt"
            if not ckpt.is_file():
                raise AlignProError(f"'{run}' has no checkpoint of step {step} ({ckpt}); keep every checkpoint "
                                    "(keep_checkpoints >= steps / save_every)")
            load_trainable_state(self.policy, torch.load(ckpt, map_location=self.device))
        disable_dropout(self.policy)
        self.policy.eval().requires_grad_(False)
        self.reference = Reference(None)
        self.eos_ids = stop_token_ids(self.tokenizer, base.model, pad=False)

    def queries(self, records: Sequence[PromptRecord]) -> list[str]:
        """The run's queries: the rewrite request for x (prompter) or x as a user turn (oracle)."""
        from alignpro.templates import load_rewrite_template
        from alignpro.train.roles import OracleRole, PrompterRole

        if self.cfg.role is Role.PROMPTER:
            role = PrompterRole(self.chat_prompt, load_rewrite_template(self.cfg.template), None, None, 0)
            return role.queries(records)
        return OracleRole(self.chat_prompt, None).queries(records)

    @torch.no_grad()
    def sample(self, records: Sequence[PromptRecord], n: int, *, seed: int, batch_size: int = 32) -> PolicySamples:
        """``n`` responses per record (the run's rollout sampling) with their KL to the reference. Response j to
        x draws from the stream (seed, x, j) (:func:`alignpro.backends.base.stream_seed`), whatever the batch: two
        checkpoints sample x on the same random numbers, so their paired differences lose that noise."""
        cfg, tok = self.cfg, self.tokenizer
        flat = [r for r in records for _ in range(n)]
        queries = self.queries(flat)
        keys = prompt_keys([r.text for r in records], [r.system for r in records])
        row_seeds = [stream_seed(seed, key, j) for key in keys for j in range(n)]
        texts, kl, kl3 = [], [], []
        for a in range(0, len(flat), batch_size):
            enc = tok(queries[a:a + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            ids, mask = sample_responses(self.policy.lm, enc["input_ids"], enc["attention_mask"], cfg.rollout_gen,
                                         self.eos_ids, tok.pad_token_id,
                                         row_seeds=row_seeds[a:a + batch_size])  # (b, T) ×2
            T = ids.shape[1]
            input_ids = torch.cat([enc["input_ids"], ids], dim=1)
            attention = torch.cat([enc["attention_mask"], mask], dim=1)
            logits, _ = self.policy(input_ids, attention, T)
            logp = logprobs_from_logits(logits, ids, cfg.temperature)  # (b, T)
            del logits
            ref = logprobs_from_logits(self.reference.logits(self.policy, input_ids, attention, T), ids,
                                       cfg.temperature)  # (b, T)
            m = mask.float()
            kl.extend((k1(logp, ref) * m).sum(1).tolist())
            kl3.extend((k3(logp, ref) * m).sum(1).tolist())
            texts.extend(tok.decode(row[mk.bool()], skip_special_tokens=True).strip() for row, mk in zip(ids, mask))
        P = len(records)
        return PolicySamples([texts[i * n:(i + 1) * n] for i in range(P)], np.asarray(kl).reshape(P, n),
                             np.asarray(kl3).reshape(P, n))
