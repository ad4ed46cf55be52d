"""Hugging Face transformers backends: batched sampling with left padding, chat templates, a GenerationConfig.

One :class:`HFCausalLM` holds a model + tokenizer; :class:`HFPrompter` and :class:`HFTarget` wrap separate
instances of it (the default uses the same checkpoint for ρ_sft and π_F, loaded twice so they never share
parameters). The target's model is put in eval mode with ``requires_grad_(False)``: π_F never receives gradients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from alignpro.backends.base import Answer, GenerationConfig, Rewrite, RewriteSet, Usage, check_keys, stream_seed
from alignpro.backends.chat import ensure_pad_token, render_chat, stop_token_ids, user_turns
from alignpro.backends.decode import decode
from alignpro.errors import AlignProError
from alignpro.templates import RewriteTemplate


@dataclass
class Generated:
    """Sampled continuations of a batch of chat prompts."""

    texts: list[str]  #: (N,) decoded continuations
    token_ids: list[list[int]]  #: (N, T_i) sampled token ids, without padding or EOS
    token_logprobs: list[list[float]]  #: (N, T_i) log π(a_t | prefix) at temperature 1 (the model itself)


class HFCausalLM:
    """A causal LM + its tokenizer, with chat-templated batched sampling."""

    def __init__(self, path: str | Path, *, device: str | None = None, dtype: str = "auto",
                 trainable: bool = False, batch_size: int = 16) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = str(path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype == "auto":  # fp32 on CPU (bf16 is ~100x slower there), bf16 on GPUs
            dtype = "float32" if self.device.type == "cpu" else "bfloat16"
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise AlignProError(f"unknown dtype '{dtype}'; valid: auto, float32, bfloat16, float16")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, dtype))
        except OSError as exc:
            raise AlignProError(f"could not load a Hugging Face causal LM from '{self.path}': {exc}") from None
        self.model.to(self.device)
        self.tokenizer.padding_side = "left"  # generation appends on the right, so pad on the left
        ensure_pad_token(self.tokenizer)
        if not trainable:
            self.model.eval().requires_grad_(False)
        self.batch_size = batch_size
        self.usage = Usage()

    # ---------------------------------------------------------------- prompts
    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Render a conversation with the tokenizer's chat template (or plain text turns for a base model without
        one), ready for the assistant's turn."""
        return render_chat(self.tokenizer, messages)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, conversations: Sequence[list[dict[str, str]]], gen: GenerationConfig,
               seed: int | None = None, with_logprobs: bool = True, prefill: str = "",
               row_seeds: Sequence[int] | None = None) -> Generated:
        """One sampled continuation per conversation, batched by similar length (less padding), decoded by
        :func:`alignpro.backends.decode.decode` (the distribution of ``generate``, with shared prefixes encoded once).

        ``with_logprobs=False`` leaves ``token_logprobs`` empty (the target's answers need none). ``prefill`` starts
        every assistant turn (the returned texts are what follows it). ``row_seeds`` (one per conversation) gives
        each conversation its own random stream (then ``seed`` is unused): its continuation is the same in any
        batch, at any position.
        """
        if row_seeds is not None and len(row_seeds) != len(conversations):
            raise ValueError(f"row_seeds: one per conversation, got {len(row_seeds)} for {len(conversations)}")
        # a generator of this call's own: sampling never reseeds torch's global RNG (same draws on CPU as before)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        texts = [self.chat_prompt(c) + prefill for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out_text: list[str] = [""] * len(texts)
        out_ids: list[list[int]] = [[] for _ in texts]
        out_lp: list[list[float]] = [[] for _ in texts]
        eos = self.stop_ids()
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            rows = [self.tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in idx]
            t0 = time.perf_counter()
            d = decode(self.model, rows, gen, eos_ids=eos, pad_id=pad, with_logprobs=with_logprobs,
                       generator=generator, row_seeds=None if row_seeds is None else [row_seeds[i] for i in idx])
            for row, i in enumerate(idx):
                n = int(d.lengths[row])
                ids = d.ids[row, :n].tolist()
                out_ids[i] = ids
                out_lp[i] = d.logprobs[row, :n].tolist() if with_logprobs else []
                out_text[i] = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                self.usage.generated_tokens += n
            self.usage.calls += 1
            self.usage.extra["generate_seconds"] = self.usage.extra.get("generate_seconds", 0.0) + (
                time.perf_counter() - t0)
        return Generated(out_text, out_ids, out_lp)

    def stop_ids(self) -> set[int]:
        """The tokens at which :meth:`sample` cuts a continuation: EOS, pad, the generation config's EOS."""
        return stop_token_ids(self.tokenizer, self.model, pad=True)



class HFTarget:
    """π_F backed by a transformers causal LM: answers each prompt as a single user turn."""

    def __init__(self, lm: HFCausalLM, gen: GenerationConfig, name: str = "hf") -> None:
        self.lm, self.gen, self.name = lm, gen, name

    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        check_keys(prompts, keys)
        convs = [conv for conv in user_turns(prompts, systems) for _ in range(n)]
        streams = None if keys is None else [stream_seed(seed or 0, key, j) for key in keys for j in range(n)]
        g = self.lm.sample(convs, self.gen, seed=seed, with_logprobs=False, row_seeds=streams)
        answers = [Answer(t, len(ids)) for t, ids in zip(g.texts, g.token_ids)]
        return [answers[i * n:(i + 1) * n] for i in range(len(prompts))]


class HFPrompter:
    """ρ backed by a transformers causal LM and a rewrite template (system prompt + few-shot examples)."""

    def __init__(self, lm: HFCausalLM, template: RewriteTemplate, gen: GenerationConfig,
                 name: str = "hf") -> None:
        self.lm, self.template, self.gen, self.name = lm, template, gen, name

    def rewrite(self, prompts: Sequence[str], k: int, *, seed: int | None = None) -> list[RewriteSet]:
        convs = [self.template.messages(p) for p in prompts for _ in range(k)]
        g = self.lm.sample(convs, self.gen, seed=seed)
        sets = []
        for i, prompt in enumerate(prompts):
            rws = []
            for j in range(i * k, (i + 1) * k):
                text, ok = self.template.parse(g.texts[j], prompt)
                rws.append(Rewrite(text=text, raw=g.texts[j], logprob=float(sum(g.token_logprobs[j])),
                                   token_logprobs=tuple(g.token_logprobs[j]), parsed=ok))
            sets.append(RewriteSet(prompt, tuple(rws)))
        return sets
