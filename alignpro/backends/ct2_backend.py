"""π_F's answers and ρ's rewrites on CTranslate2 (CPU, int8): a local model spec with ``?engine=ct2``.

``smollm2?engine=ct2`` and ``hf:<path>?engine=ct2`` (a LoRA adapter folder too: merged first, see
:func:`alignpro.assets.merged_folder`) answer through the same :class:`~alignpro.backends.base.Target` and
:class:`~alignpro.backends.base.Prompter` protocols as the torch path, with the same conversation
(:func:`~alignpro.backends.chat.render_chat`: chat template and system prompts; the same token ids are fed), the
same stop tokens (:func:`~alignpro.backends.chat.stop_token_ids`) and the same sampling settings. The weights are
converted once into ``$ALIGNPRO_HOME/ct2/<name>-<weights key>-<compute type>`` (:func:`ct2_folder`).

Quantised weights change π_F: docs/benchmarks.md measures how much (benchmarks/engine_equivalence.py) and how much
faster it is (benchmarks/rollout.py).

**Seeds.** CTranslate2 4.x samples from one random generator per worker thread, seeded from the global seed
(``ctranslate2.set_random_seed``) when the thread first samples, never again. So a seeded call builds fresh
replicas of the model (one worker thread each, ~0.4 s), seeds each before its first draw, and gives batch ``c``
(rows sorted by length) to replica ``c mod inter_threads``: the same prompts, seed and settings give the same
answers. With ``keys`` (coupled streams, :func:`alignpro.backends.base.stream_seed`) every answer needs a random
stream of its own, so every (prompt, j) is decoded alone on a replica of its own: the same answer in any batch,
at a large cost in tokens/s (measured in docs/benchmarks.md).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from alignpro.assets import alignpro_home, convert_once, merged_folder, weights_key
from alignpro.backends.base import GenerationConfig, Usage
from alignpro.backends.chat import render_chat, request_seed, stop_token_ids
from alignpro.backends.hf import Generated, HFPrompter, HFTarget
from alignpro.backends.options import LocalOptions
from alignpro.errors import AlignProError

INSTALL_HINT = "pip install 'alignpro[ct2]' (CTranslate2 wheels for Linux, macOS and Windows)"
ENGINE_INFO = "alignpro-engine.json"

#: ctranslate2.set_random_seed is process-global: seeding a replica and its first draw happen under this lock
_SEED_LOCK = threading.Lock()


def import_ct2(name: str):
    """The ``ctranslate2`` module, or an AlignProError telling which extra to install."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise AlignProError(f"'{name}' needs CTranslate2, which is not installed ({exc}); {INSTALL_HINT}") from None
    return ctranslate2


def ct2_folder(folder: str | Path, compute_type: str = "int8") -> Path:
    """The CTranslate2 copy of the model at ``folder`` (merged first if it is a LoRA adapter), converted once into
    ``$ALIGNPRO_HOME/ct2`` with weights of ``compute_type``, keyed by the merged weights' hash and the CTranslate2
    version. It holds the tokenizer and :data:`ENGINE_INFO` (the stop tokens, the source)."""
    ct2 = import_ct2(str(folder))
    if not Path(folder).is_dir():
        raise AlignProError(f"engine ct2 converts a local model folder; '{folder}' is none (a hub id: download it "
                            f"first, then give its path)")
    source = merged_folder(folder)
    key = weights_key(source)

    def write(tmp: Path) -> str:
        from transformers import AutoTokenizer
        from transformers import GenerationConfig as HFGenerationConfig

        ct2.converters.TransformersConverter(str(source), low_cpu_mem_usage=True).convert(
            str(tmp), quantization=compute_type, force=True)
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        if tokenizer.pad_token_id is None:  # as HFCausalLM does
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(tmp)
        try:
            gc = HFGenerationConfig.from_pretrained(str(source))
        except OSError:  # no generation_config.json
            gc = None
        stops = stop_token_ids(tokenizer, type("M", (), {"generation_config": gc}), pad=True)
        info = {"source": str(Path(folder)), "weights_key": key, "compute_type": compute_type,
                "ctranslate2": ct2.__version__, "stop_ids": sorted(stops)}
        (tmp / ENGINE_INFO).write_text(json.dumps(info, indent=1))
        return f"CTranslate2 {ct2.__version__} {compute_type} copy of {folder}"

    name = f"{source.name}-{key}-{compute_type}-ct2-{ct2.__version__}"
    return convert_once(alignpro_home() / "ct2" / name, write)


class CT2LM:
    """A CTranslate2 copy of a local causal LM + its tokenizer: chat-templated, batched, seeded sampling."""

    def __init__(self, folder: str | Path, options: LocalOptions | None = None, *, batch_size: int = 16,
                 name: str = "ct2") -> None:
        from transformers import AutoTokenizer

        self.ct2 = import_ct2(name)
        self.options = options or LocalOptions(engine="ct2")
        self.path = ct2_folder(folder, self.options.compute_type)
        self.info = json.loads((self.path / ENGINE_INFO).read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.batch_size, self.name = batch_size, name
        self.usage = Usage()
        self._unseeded: list[Any] | None = None  #: replicas of unseeded calls, kept
        self._scorer: Any = None  #: the replica that teacher-forces log-probs, kept

    # ---------------------------------------------------------------- prompts
    def prompt_ids(self, conversations: Sequence[list[dict[str, str]]], prefill: str = "") -> list[list[int]]:
        """The token ids fed for each conversation: exactly those of the torch path (HFCausalLM.sample)."""
        return [self.tokenizer(render_chat(self.tokenizer, c) + prefill, add_special_tokens=False)["input_ids"]
                for c in conversations]

    def stop_ids(self) -> set[int]:
        return set(self.info["stop_ids"])

    # ---------------------------------------------------------------- replicas
    def _threads(self) -> int:
        import os

        o = self.options
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return o.intra_threads or max(1, cores // o.inter_threads)

    def _replica(self, seed: int | None, intra_threads: int | None = None):
        """A fresh copy of the model with one worker thread; with ``seed``, its random generator seeded now."""
        g = self.ct2.Generator(str(self.path), device="cpu", compute_type=self.options.compute_type,
                               inter_threads=1, intra_threads=intra_threads or self._threads())
        if seed is not None:
            with _SEED_LOCK:  # the worker thread seeds its generator from the global seed at its first draw
                self.ct2.set_random_seed(seed % 2**32)
                g.generate_batch([[self.tokenizer.convert_ids_to_tokens(self.tokenizer.eos_token_id)]],
                                 max_length=1, sampling_topk=0, include_prompt_in_result=False)
        return g

    def _replicas(self, seed: int | None) -> list[Any]:
        n = self.options.inter_threads
        if seed is None:  # kept between calls
            if self._unseeded is None:
                self._unseeded = [self._replica(None) for _ in range(n)]
            return self._unseeded
        return [self._replica(request_seed(seed, r)) for r in range(n)]

    def _generate_kwargs(self, gen: GenerationConfig) -> dict[str, Any]:
        return dict(max_length=gen.max_new_tokens, end_token=sorted(self.stop_ids()), include_prompt_in_result=False,
                    sampling_topk=(gen.top_k if gen.do_sample else 1), sampling_topp=gen.top_p if gen.do_sample else 1,
                    sampling_temperature=gen.temperature if gen.do_sample else 1.0)

    # ---------------------------------------------------------------- sampling
    def sample(self, conversations: Sequence[list[dict[str, str]]], gen: GenerationConfig, seed: int | None = None,
               with_logprobs: bool = True, prefill: str = "", row_seeds: Sequence[int] | None = None):
        """One sampled continuation per conversation (a :class:`~alignpro.backends.hf.Generated`): batches of
        similar length shared round-robin by ``inter_threads`` replicas, or with ``row_seeds`` (one per
        conversation) each continuation decoded alone from its own seed. Log-probs at temperature 1 are
        CTranslate2's scores of the sampled tokens (:meth:`token_logprobs`)."""
        rows = self.prompt_ids(conversations, prefill)
        if row_seeds is not None and len(row_seeds) != len(rows):
            raise ValueError(f"row_seeds: one per conversation, got {len(row_seeds)} for {len(rows)}")
        kwargs = self._generate_kwargs(gen)
        t0 = time.perf_counter()
        out: list[list[int]] = [[] for _ in rows]
        if row_seeds is None:
            order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
            chunks = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
            replicas = self._replicas(seed)
            pending = [(idx, replicas[c % len(replicas)].generate_batch(
                [self.tokenizer.convert_ids_to_tokens(rows[i]) for i in idx], asynchronous=True, **kwargs))
                for c, idx in enumerate(chunks)]
            for idx, results in pending:
                for i, r in zip(idx, results):
                    out[i] = r.result().sequences_ids[0]
            self.usage.calls += len(chunks)
        else:
            def one(i: int) -> list[int]:  # a replica per row: its own random stream, nothing shared
                g = self._replica(row_seeds[i], intra_threads=1)
                return g.generate_batch([self.tokenizer.convert_ids_to_tokens(rows[i])], **kwargs)[0].sequences_ids[0]

            with ThreadPoolExecutor(self.options.inter_threads) as pool:
                out = list(pool.map(one, range(len(rows))))
            self.usage.calls += len(rows)
        lps = self.token_logprobs(rows, out) if with_logprobs else [[] for _ in rows]
        self.usage.generated_tokens += sum(len(o) for o in out)
        self.usage.extra["generate_seconds"] = self.usage.extra.get("generate_seconds", 0.0) + (
            time.perf_counter() - t0)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]
        return Generated(texts, out, lps)

    def token_logprobs(self, rows: Sequence[list[int]], continuations: Sequence[list[int]]) -> list[list[float]]:
        """(N, T_i) log π(a_t | prompt, a_<t) at temperature 1 of each continuation, teacher-forced in one
        ``score_batch`` (the quantised model's own probabilities)."""
        if self._scorer is None:
            self._scorer = self._replica(None)
        scorer = self._scorer
        keep = [i for i, c in enumerate(continuations) if c]
        out: list[list[float]] = [[] for _ in rows]
        full = [self.tokenizer.convert_ids_to_tokens(list(rows[i]) + list(continuations[i])) for i in keep]
        for i, s in zip(keep, scorer.score_batch(full, max_batch_size=self.batch_size)):
            out[i] = list(s.log_probs[len(rows[i]) - 1:])  # log_probs[t] scores token t + 1 given tokens ≤ t
        return out


class CT2Target(HFTarget):
    """π_F on CTranslate2 (:class:`~alignpro.backends.hf.HFTarget` over a :class:`CT2LM`): answers each prompt as a
    single user turn (with its system prompt, if any)."""

    @classmethod
    def from_folder(cls, folder: str | Path, gen: GenerationConfig, options: LocalOptions, *, name: str,
                    batch_size: int = 16) -> "CT2Target":
        return cls(CT2LM(folder, options, batch_size=batch_size, name=name), gen, name=name)

    @property
    def usage(self) -> Usage:
        return self.lm.usage


class CT2Prompter(HFPrompter):
    """ρ on CTranslate2 with a rewrite template (:class:`~alignpro.backends.hf.HFPrompter` over a :class:`CT2LM`);
    log ρ(x′|x) is the quantised model's, not the torch model's."""

    @classmethod
    def from_folder(cls, folder: str | Path, template, gen: GenerationConfig, options: LocalOptions, *, name: str,
                    batch_size: int = 16) -> "CT2Prompter":
        return cls(CT2LM(folder, options, batch_size=batch_size, name=name), template, gen, name=name)
