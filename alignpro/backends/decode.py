"""A lean sampling loop for causal LMs: the same distribution as ``model.generate``, without its overheads.

Measured on the 2-core development machine for SmolLM2-135M at batch 64 (docs/benchmarks.md): transformers'
warper chain (temperature → top-k → top-p) spends ~100 ms per step sorting the full 49k-token vocabulary, more
than half of a decode step. Here:

- **top-p inside the top-k** (:func:`warp_top_k_top_p`): top-k first, then the nucleus cut on the k survivors.
  This is exactly transformers' chain (its top-p sorts the whole vocabulary, but every token outside the top-k
  already has probability 0), at the cost of a ``topk`` instead of a full sort;
- **shared prefixes are encoded once** (:func:`plan_prefix`): rows that are the same conversation (the target
  answering one prompt M times) are prefilled once, and the longest common prefix of the batch (the prompter's
  system prompt + few-shot examples, 220 of ~250 tokens; a chat template's default system prompt) is prefilled once
  and copied into every row's KV cache. Model inputs are the same tokens at the same positions; only where the
  padding sits changes (between the shared prefix and each row's suffix instead of on the left);
- the log-prob of each sampled token at temperature 1 is one gather and one logsumexp, not a (B, T, V) logit
  store;
- **per-row random streams** (:func:`row_uniforms`, :func:`sample_next` with ``uniforms``): each row may bring its
  own seed; its step-t token is the inverse CDF of its warped distribution at the t-th uniform of its own stream,
  so a row's answer does not depend on the batch it is decoded in, its position there, or the other rows (the
  common random numbers of :func:`alignpro.backends.base.stream_seed`). Same distribution as ``multinomial``.

transformers internals used here (``DynamicCache.reorder_cache``, ``DynamicCache.batch_select_indices``, the
``cache``/``past_key_values`` argument picked by :func:`cache_kwarg`) were run with transformers 5.17.0 and
5.24.0; pyproject.toml pins ``transformers>=5.17,<5.25`` for that reason. Widen it only after
tests/test_decode.py and tests/test_shared_prefix.py pass on the new release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from alignpro.backends.base import GenerationConfig

#: below this many shared tokens the extra forward pass costs more than it saves
MIN_SHARED_PREFIX = 16


def warp_top_k_top_p(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None
                     ) -> tuple[Tensor, Tensor]:
    """The sampling distribution of transformers' temperature → top-k → top-p chain, over the kept tokens only.

    logits (B, V) raw → (log_weights (B, k), token_ids (B, k)): unnormalised log-probabilities of the candidate
    tokens, sorted by decreasing logit, −inf for the ones the nucleus cut removes. ``top_k`` None/0 keeps all V.
    The nucleus rule is transformers' own: drop a token when the probability mass of it and every less likely
    token is ≤ 1 − top_p; the most likely token always stays.
    """
    scores = logits / temperature
    k = top_k if top_k and top_k < scores.shape[-1] else scores.shape[-1]
    vals, ids = torch.topk(scores, k, dim=-1)  # (B, k) sorted descending
    if top_p is not None and top_p < 1.0:
        probs = torch.softmax(vals, dim=-1)
        mass_from_here_down = probs.flip(-1).cumsum(-1).flip(-1)  # (B, k): Σ_{j ≥ i} p_j
        drop = mass_from_here_down <= 1.0 - top_p
        drop[:, 0] = False
        vals = vals.masked_fill(drop, float("-inf"))
    return vals, ids


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Index (B,) of the category of each row of ``probs`` (B, k) (non-negative, each row's positive entries
    first) in which the uniform ``u`` (B,) ∈ [0, 1) falls: P(index = i) = probs[i] / Σ probs, exactly up to the
    uniforms' resolution (2⁻²⁴). A token of probability 0 is never returned."""
    cum = probs.double().cumsum(-1)  # (B, k)
    v = u.double().unsqueeze(1) * cum[:, -1:]  # (B, 1) in [0, total)
    idx = (cum <= v).sum(-1)  # (B,) first i with cum_i > v
    return torch.minimum(idx, (probs > 0).sum(-1) - 1)  # v rounding up to the total: the last kept token


def row_uniforms(seeds: Sequence[int], steps: int, device: torch.device | str = "cpu") -> Tensor:
    """(B, steps) uniforms in [0, 1): row b's are the first ``steps`` draws of a CPU generator seeded ``seeds[b]``
    (the same on every device and in every batch)."""
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return (torch.stack(rows) if rows else torch.zeros((0, steps))).to(device)


def sample_next(logits: Tensor, gen: GenerationConfig, generator: torch.Generator | None = None,
                uniforms: Tensor | None = None) -> Tensor:
    """One token per row (B,) from raw logits (B, V) under ``gen`` (greedy when ``do_sample`` is False), drawn from
    ``generator`` (torch's global one when None), or, given ``uniforms`` (B,), by the inverse CDF of each row's
    warped distribution at its own uniform (the same distribution)."""
    if not gen.do_sample:
        return logits.argmax(-1)
    log_w, ids = warp_top_k_top_p(logits, gen.temperature, gen.top_k, gen.top_p)
    probs = torch.softmax(log_w, dim=-1)  # (B, k), sorted by decreasing logit, 0 where the nucleus cut
    if uniforms is not None:
        return ids.gather(1, inverse_cdf(probs, uniforms).unsqueeze(1)).squeeze(1)
    choice = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
    return ids.gather(1, choice).squeeze(1)


def token_logprob(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] at temperature 1 (the model's own probability), (B,)."""
    return logits.gather(1, tokens.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)


@dataclass(frozen=True)
class PrefixPlan:
    """How a batch of token sequences is prefilled: ``shared`` tokens once, then each unique row's suffix."""

    shared: list[int]  #: the longest common prefix, encoded once (empty when too short to pay off)
    unique: list[list[int]]  #: (U, ·) the distinct rows' tokens after the shared prefix (≥ 1 token each)
    row_of: list[int]  #: (B,) which unique row each input row is


def plan_prefix(rows: Sequence[Sequence[int]], min_shared: int = MIN_SHARED_PREFIX) -> PrefixPlan:
    """Deduplicate rows and find their longest common prefix (leaving every row at least one token of its own)."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every row needs at least one token")
    index: dict[tuple[int, ...], int] = {}
    row_of = [index.setdefault(tuple(r), len(index)) for r in rows]
    unique = [list(r) for r in index]
    n = min(len(r) for r in unique) - 1
    first = unique[0]
    for r in unique[1:]:
        n = min(n, next((i for i in range(n) if r[i] != first[i]), n))
    if n < min_shared:
        n = 0
    return PrefixPlan(first[:n], [r[n:] for r in unique], row_of)


@dataclass
class Decoded:
    """Sampled continuations: ids (B, T) with ``pad_id`` after each row's end, their lengths and log-probs."""

    ids: Tensor  #: (B, T) long, the sampled tokens, the EOS included, pad after it
    lengths: Tensor  #: (B,) tokens before the first EOS (the EOS not counted)
    ended: Tensor  #: (B,) bool, the row produced an EOS within max_new_tokens
    logprobs: Tensor | None  #: (B, T) log π(token | prefix) at temperature 1, 0 after the end; None if not asked


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x (the old name goes in 5.40)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps with **kwargs
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def forward_after_shared_prefix(model: torch.nn.Module, prefix: Tensor, suffix_ids: Tensor, suffix_mask: Tensor,
                                **model_kwargs) -> tuple[object, object, Tensor, Tensor]:
    """Encode ``prefix`` (1, P) once, copy its keys/values to the N rows, then run the rows' suffixes (N, S), padded
    between the prefix and each suffix (``suffix_mask`` 0 there). Differentiable (the copy is an index_select).
    Returns the model output on the suffixes, the KV cache (N rows), the full mask (N, P+S) and the positions
    (N, S). P may be 0."""
    from transformers import DynamicCache

    cache = DynamicCache()
    kv = {cache_kwarg(model): cache, "use_cache": True}
    P = prefix.shape[1]
    if P:
        model(input_ids=prefix, **kv, logits_to_keep=1)
        cache.reorder_cache(torch.zeros(len(suffix_ids), dtype=torch.long, device=suffix_ids.device))  # → N rows
    mask = torch.cat([torch.ones_like(suffix_mask[:, :1]).expand(-1, P), suffix_mask], 1)  # (N, P+S)
    positions = (P + suffix_mask.long().cumsum(1) - 1).clamp(min=0)  # (N, S)
    out = model(input_ids=suffix_ids, attention_mask=mask, position_ids=positions, **kv, **model_kwargs)
    return out, cache, mask, positions


@torch.no_grad()
def decode(model: torch.nn.Module, rows: Sequence[Sequence[int]], gen: GenerationConfig, *, eos_ids: set[int],
           pad_id: int, with_logprobs: bool = False, min_shared: int = MIN_SHARED_PREFIX,
           generator: torch.Generator | None = None, row_seeds: Sequence[int] | None = None) -> Decoded:
    """Sample one continuation per row of prompt token ids (unpadded), with a KV cache, in one batch; the draws
    come from ``generator`` (on the model's device; torch's global one when None), or with ``row_seeds`` (one per
    row) from each row's own stream (:func:`row_uniforms`), whatever the batch."""
    if row_seeds is not None and len(row_seeds) != len(rows):
        raise ValueError(f"row_seeds: one per row, got {len(row_seeds)} for {len(rows)} rows")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout is off in our policies anyway; eval mode also keeps use_cache on under checkpointing
    try:
        plan = plan_prefix(rows, min_shared)
        S = max(len(r) for r in plan.unique)
        suffix = torch.full((len(plan.unique), S), pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((len(plan.unique), S), dtype=torch.long)
        for i, r in enumerate(plan.unique):  # pad on the left of each suffix, i.e. between prefix and suffix
            suffix[i, S - len(r):] = torch.tensor(r)
            suffix_mask[i, S - len(r):] = 1
        prefix = torch.tensor([plan.shared], dtype=torch.long, device=device).reshape(1, -1)  # (1, P), P may be 0
        out, cache, mask, positions = forward_after_shared_prefix(
            model, prefix, suffix.to(device), suffix_mask.to(device), logits_to_keep=1)
        kv = {cache_kwarg(model): cache, "use_cache": True}
        row_of = torch.tensor(plan.row_of, device=device)
        if len(plan.unique) != len(plan.row_of) or plan.row_of != sorted(plan.row_of):
            cache.reorder_cache(row_of)
        logits = out.logits[:, -1].float().index_select(0, row_of)  # (B, V)
        mask = mask.index_select(0, row_of)
        next_pos = positions[:, -1].index_select(0, row_of) + 1  # (B,)

        B = len(plan.row_of)
        eos = torch.tensor(sorted(eos_ids), device=device)
        ids = torch.full((B, gen.max_new_tokens), pad_id, dtype=torch.long, device=device)
        lp = torch.zeros((B, gen.max_new_tokens), device=device)
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        ended = torch.zeros(B, dtype=torch.bool, device=device)
        live = torch.arange(B, device=device)  # rows still decoding; finished rows leave the batch (and the cache)
        uniforms = row_uniforms(row_seeds, gen.max_new_tokens, device) if row_seeds is not None else None  # (B, T)
        T = 0
        for step in range(gen.max_new_tokens):
            tok = sample_next(logits, gen, generator, None if uniforms is None else uniforms[live, step])
            ids[live, step] = tok
            if with_logprobs:
                lp[live, step] = token_logprob(logits, tok)
            T = step + 1
            is_eos = torch.isin(tok, eos)
            lengths[live] += (~is_eos).long()
            ended[live] = is_eos
            if bool(is_eos.all()) or step == gen.max_new_tokens - 1:
                break
            if bool(is_eos.any()):
                keep = (~is_eos).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, tok, mask, next_pos = live[keep], tok[keep], mask[keep], next_pos[keep]
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], 1)
            out = model(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=next_pos.unsqueeze(1), **kv)
            next_pos = next_pos + 1
            logits = out.logits[:, -1].float()
        return Decoded(ids[:, :T], lengths, ended, lp[:, :T] if with_logprobs else None)
    finally:
        model.train(was_training)
