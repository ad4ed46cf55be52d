"""The trainable policy (an HF causal LM, fully or through LoRA) with its value head, its frozen reference,
batched sampling of responses, and the export of the trained weights as a loadable model folder.

Shapes: B rollouts, Q query tokens (left-padded), T response tokens (right-padded), V vocabulary, H hidden size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from alignpro.backends.adapter import TRAIN_INFO
from alignpro.backends.base import GenerationConfig
from alignpro.backends.decode import MIN_SHARED_PREFIX, decode, forward_after_shared_prefix
from alignpro.errors import AlignProError
from alignpro.fileio import atomic_write_dir



def response_forward(lm: nn.Module, input_ids: Tensor, attention_mask: Tensor, n_response: int,
                     hidden: bool = False, share_prefix: bool = True,
                     after_last: bool = False) -> tuple[Tensor, Tensor | None]:
    """One teacher-forced forward pass over query+response (B, Q+T), left-padded: the logits that predict the T
    response tokens (B, T, V) and, if asked, the last hidden state at those positions (B, T, H). With
    ``after_last`` the logits of the last position (what follows the response: its stop event) come too, (B, T+1, V).

    With ``share_prefix`` (and no gradient checkpointing, which cannot keep a KV cache), the tokens every row's
    query starts with (the prompter's system prompt and few-shot examples, 220 of ~250 tokens) are encoded once at
    batch 1 and their keys/values copied to every row (:func:`split_shared_prefix`): the same function of θ,
    gradients included, for a fraction of the FLOPs."""
    P = 0
    if share_prefix and not _checkpointing(lm):
        P = shared_prefix_length(input_ids, attention_mask, keep=n_response + 1)
    if P == 0:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, Q+T), left padding aware
        out = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                 output_hidden_states=hidden, logits_to_keep=n_response + 1)
    else:  # the prefix's keys/values stay a function of θ: gradients flow back through the copy
        prefix, suffix_ids, suffix_mask = split_shared_prefix(input_ids, attention_mask, P)
        out = forward_after_shared_prefix(lm, prefix, suffix_ids, suffix_mask, output_hidden_states=hidden,
                                          logits_to_keep=n_response + 1)[0]
    logits = out.logits[:, -(n_response + 1):None if after_last else -1]  # (B, T, V): position t predicts token t
    h = out.hidden_states[-1][:, -(n_response + 1):-1] if hidden else None  # (B, T, H)
    return logits, h


def _checkpointing(lm: nn.Module) -> bool:
    """Is gradient (activation) checkpointing on? (transformers 5.24 renamed the flag; read the new one first.)"""
    flag = getattr(lm, "is_activation_checkpointing", None)
    return bool(getattr(lm, "is_gradient_checkpointing", False) if flag is None else flag)


def shared_prefix_length(input_ids: Tensor, attention_mask: Tensor, keep: int,
                         min_shared: int = MIN_SHARED_PREFIX) -> int:
    """How many leading real tokens (after each row's left padding) all rows share, leaving at least ``keep``
    columns of every row outside the prefix; 0 when fewer than ``min_shared`` (not worth a second pass)."""
    if len(input_ids) < 2:
        return 0
    lead = (attention_mask.long().cumsum(1) == 0).sum(1)  # (B,) left padding of each row
    width = input_ids.shape[1]
    limit = width - int(lead.max()) - keep
    if limit < min_shared:
        return 0
    cols = lead.unsqueeze(1) + torch.arange(limit, device=input_ids.device)  # (B, limit)
    window = input_ids.gather(1, cols)  # each row's first `limit` real tokens
    same = (window == window[:1]).all(0) & (attention_mask.gather(1, cols) == 1).all(0)  # (limit,)
    P = int(limit if bool(same.all()) else int(same.long().argmin()))
    return P if P >= min_shared else 0


def split_shared_prefix(input_ids: Tensor, attention_mask: Tensor, P: int) -> tuple[Tensor, Tensor, Tensor]:
    """(1, P) shared prefix, and each row's remaining tokens (B, S) with their mask, the padding now between
    the prefix and the rest (right-aligned, so the response keeps its columns at the end)."""
    lead = (attention_mask.long().cumsum(1) == 0).sum(1)  # (B,)
    prefix = input_ids[:1, int(lead[0]):int(lead[0]) + P]
    S = input_ids.shape[1] - int(lead.min()) - P
    cols = (input_ids.shape[1] - S + torch.arange(S, device=input_ids.device)).unsqueeze(0)  # last S columns
    cols = cols.expand(len(input_ids), -1)
    suffix_ids, suffix_mask = input_ids.gather(1, cols), attention_mask.gather(1, cols).clone()
    in_prefix = cols < (lead + P).unsqueeze(1)  # columns of a row's own prefix (or its left padding)
    suffix_mask[in_prefix] = 0
    return prefix, suffix_ids, suffix_mask


class PolicyWithValueHead(nn.Module):
    """The policy LM plus, for PPO, a linear value head V(s_t) on its last hidden state (TRL's layout)."""

    def __init__(self, lm: nn.Module, value_head: bool) -> None:
        super().__init__()
        self.lm = lm
        hidden = lm.config.get_text_config().hidden_size if hasattr(lm.config, "get_text_config") \
            else lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1) if value_head else None
        if self.value_head is not None:
            self.value_head.to(next(lm.parameters()).device)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, n_response: int) -> tuple[Tensor, Tensor | None]:
        """Logits predicting the last ``n_response`` tokens (B, T, V) and the values of those states (B, T)."""
        logits, hidden = response_forward(self.lm, input_ids, attention_mask, n_response,
                                          hidden=self.value_head is not None)
        values = None
        if self.value_head is not None:
            values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)  # (B, T)
        return logits, values


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (as TRL does for PPO): the log-probs of the rollout and of the update
    then come from the same deterministic function, in train mode (needed by gradient checkpointing) too."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


def apply_lora(lm: nn.Module, r: int, alpha: int, target_modules: list[str]) -> nn.Module:
    """Wrap ``lm`` with a fresh LoRA adapter (only the adapter is trainable; no LoRA dropout)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(target_modules),
                     task_type="CAUSAL_LM", bias="none")
    try:
        return get_peft_model(lm, cfg)
    except ValueError as exc:
        raise AlignProError(f"setting 'lora_target_modules' {target_modules} does not fit this model: {exc}") from None


class Reference:
    """log π_ref of the sampled tokens: a frozen copy of the initial model, or the policy with LoRA disabled."""

    def __init__(self, frozen_lm: nn.Module | None) -> None:
        self.frozen_lm = frozen_lm  # None = LoRA: the reference is the base model under the adapter

    @torch.no_grad()
    def logits(self, policy: PolicyWithValueHead, input_ids: Tensor, attention_mask: Tensor,
               n_response: int) -> Tensor:
        """(B, T, V) reference logits predicting the response tokens."""
        if self.frozen_lm is None:
            with policy.lm.disable_adapter():
                return response_forward(policy.lm, input_ids, attention_mask, n_response)[0]
        return response_forward(self.frozen_lm, input_ids, attention_mask, n_response)[0]


@torch.no_grad()
def sample_responses(lm: nn.Module, query_ids: Tensor, query_mask: Tensor, gen: GenerationConfig,
                     eos_ids: set[int], pad_id: int, generator: torch.Generator | None = None,
                     row_seeds: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Sample one response per query: response ids (B, T) right-padded with ``pad_id`` after the first EOS,
    and its mask (B, T), 1 up to and including that EOS (a response cut at max_new_tokens has none).

    Sampled by :func:`alignpro.backends.decode.decode`: only ``gen`` shapes the distribution (the model's own
    generation_config, which may carry a repetition penalty or typical_p, is never read), so samples are on-policy.
    ``row_seeds``: one random stream per query (coupled samples, whatever the batch) instead of ``generator``."""
    rows = [q[m.bool()].tolist() for q, m in zip(query_ids, query_mask)]  # unpad
    d = decode(lm, rows, gen.with_(do_sample=True), eos_ids=eos_ids, pad_id=pad_id, generator=generator,
               row_seeds=row_seeds)
    T = d.ids.shape[1]
    mask = torch.arange(T, device=d.ids.device).unsqueeze(0) <= d.lengths.unsqueeze(1)  # (B, T), EOS included
    return d.ids.to(query_ids.device), mask.long().to(query_ids.device)


def param_checksum(module: nn.Module) -> dict[str, Any]:
    """sha256 of every parameter's bytes (in name order) and their float64 sum: equal iff bitwise identical."""
    import hashlib

    h = hashlib.sha256()
    total = 0.0
    for name, p in sorted(module.named_parameters()):
        t = p.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
        total += float(t.double().sum())
    return {"sha256": h.hexdigest(), "sum": total}


# ------------------------------------------------------------------------------------------------------ export
def export_final(policy: PolicyWithValueHead, tokenizer: Any, run: Path, info: dict[str, Any]) -> Path:
    """Write ``RUN/final``: a plain transformers folder (LoRA merged in) + tokenizer, so ``hf:RUN/final`` loads it
    as a prompter or target. With LoRA, the adapter alone also goes to ``RUN/final-adapter`` (the spec
    ``hf:RUN/final-adapter`` loads it: base + adapter, :mod:`alignpro.backends.adapter`)."""
    run = Path(run)
    lm = policy.lm
    if hasattr(lm, "peft_config"):
        atomic_write_dir(run / "final-adapter", lambda d: (lm.save_pretrained(d), tokenizer.save_pretrained(d),
                                                      (d / TRAIN_INFO).write_text(json.dumps(info, indent=2))))
        lm = _merged_copy(lm)

    def write(d: Path) -> None:
        lm.save_pretrained(d, safe_serialization=True)
        tokenizer.save_pretrained(d)
        (d / TRAIN_INFO).write_text(json.dumps(info, indent=2))

    return atomic_write_dir(run / "final", write)


def _merged_copy(peft_lm: nn.Module) -> nn.Module:
    """A plain model with the LoRA weights merged in, leaving ``peft_lm`` untouched."""
    import copy

    return copy.deepcopy(peft_lm).merge_and_unload()
