"""π_F behind an OpenAI-compatible API (OpenAI, vLLM / llama.cpp / Ollama servers, hosted APIs): ``openai:`` specs.

Spec: ``openai:<model>@<base_url>[?option=value&...]``, e.g. ``openai:gpt-4o-mini@https://api.openai.com/v1`` or
``openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8001/v1?no_key=true&concurrency=32``. The options after ``?``
are the fields of :class:`OpenAIOptions` (API key variable, concurrency, retries, budget, cache).

What one answer goes through (:meth:`OpenAITarget.acomplete`):

1. the disk cache (:class:`AnswerCache`, one sqlite file), keyed by sha256(model, messages, generation config,
   sample index, seed): a hit costs nothing;
2. the request (:class:`~alignpro.backends.openai_client.OpenAIClient`): budget (``max_requests`` /
   ``max_tokens``; :class:`BudgetExceeded` once either is spent: callers checkpoint and stop, and the answers
   already received are in the cache, so the resumed run does not pay for them again), the concurrency limit,
   and retries by the one :class:`~alignpro.backends.retry.RetryPolicy` (the server's Retry-After is a minimum).

Counters live in ``target.usage`` (the client's, see :mod:`alignpro.backends.openai_client`), with
``cache_hits`` and ``cache_misses`` added here.

The sync API (:meth:`~OpenAITarget.answer`, :meth:`~OpenAITarget.chat`) runs the requests on the client's private
event loop thread, so it works from plain scripts, training loops and from inside other event loops alike. The
async API (:meth:`~OpenAITarget.acomplete`, :meth:`~OpenAITarget.acreate`) runs on whatever loop awaits it
(``alignpro serve``).

``openai`` itself is imported when a target is built, so importing this module (e.g. for :class:`BudgetExceeded`)
is cheap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from alignpro.backends.base import Answer, GenerationConfig, stream_seed
from alignpro.backends.chat import request_seed, user_turns
from alignpro.backends.openai_client import BudgetExceeded, OpenAIClient, TargetError
from alignpro.backends.options import spec_options
from alignpro.backends.retry import RetryPolicy
from alignpro.config import check_at_least, setting
from alignpro.diskcache import DiskCache
from alignpro.errors import AlignProError, ConfigError

__all__ = ["AnswerCache", "BudgetExceeded", "OpenAIOptions", "OpenAITarget", "TargetError", "parse_openai_ref"]

OPENAI_SPEC_FORM = "openai:<model>@<base_url>[?option=value&...]"
_REF = re.compile(r"^(?P<model>[^?]+?)@(?P<url>https?://[^?\s]+)(?:\?(?P<query>.*))?$")


@dataclass
class OpenAIOptions:
    """Options of an ``openai:`` target, written after ``?`` in its spec (``...@http://host/v1?concurrency=4``)."""

    key_env: str = setting("OPENAI_API_KEY", "environment variable that holds the API key")
    no_key: bool = setting(False, "the server needs no key (local vLLM / llama.cpp / Ollama); send a placeholder")
    concurrency: int = setting(8, "most requests in flight at once")
    timeout_s: float = setting(120.0, "seconds before one request times out (then it is retried)")
    max_retries: int = setting(5, "retries per request on 429 / 5xx / timeouts / connection errors / bad bodies")
    backoff_s: float = setting(0.5, "delay before the first retry; doubles on each retry (with jitter)")
    max_backoff_s: float = setting(20.0, "longest delay between retries (also caps a server's Retry-After, which "
                                         "is otherwise a minimum)")
    max_requests: int = setting(0, "budget: most HTTP requests (retries included) before BudgetExceeded; 0 = none")
    max_tokens: int = setting(0, "budget: most prompt + completion tokens before BudgetExceeded; 0 = none")
    cache: str = setting("auto", "answer cache folder; auto = $ALIGNPRO_HOME/cache/openai, off = no cache")
    cache_unseeded: bool = setting(False, "also cache requests without a seed (they are fresh samples otherwise)")
    send_top_k: bool = setting(False, "send top_k (vLLM and llama.cpp servers accept it; OpenAI's API rejects it)")

    def __post_init__(self) -> None:
        check_at_least(self, 1, "concurrency", kind="option")
        check_at_least(self, 0, "max_retries", "max_requests", "max_tokens", "timeout_s", "backoff_s",
                       "max_backoff_s", kind="option")
        if not self.no_key and not self.key_env:
            raise ConfigError("option 'key_env' must name an environment variable (or set no_key=true)")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_s, self.max_backoff_s)

    def cache_dir(self) -> Path | None:
        if self.cache == "off":
            return None
        if self.cache == "auto":
            from alignpro.assets import alignpro_home

            return alignpro_home() / "cache" / "openai"
        return Path(self.cache).expanduser()


def parse_openai_ref(ref: str) -> tuple[str, str, OpenAIOptions]:
    """``<model>@<base_url>[?options]`` → (model, base_url, options); an AlignProError names what is wrong."""
    m = _REF.match(ref.strip())
    if not m:
        raise AlignProError(f"invalid openai spec 'openai:{ref}'; expected {OPENAI_SPEC_FORM}, e.g. "
                            "openai:gpt-4o-mini@https://api.openai.com/v1")
    options = spec_options(OpenAIOptions, m.group("query") or "", f"openai:{ref}")
    return m.group("model").strip(), m.group("url").rstrip("/"), options


# ---------------------------------------------------------------------------------------------- the cache
class AnswerCache:
    """Answers in one sqlite file, ``folder/answers.sqlite`` (:class:`~alignpro.diskcache.DiskCache`).

    Caches written by earlier versions (one JSON file per answer, ``folder/ab/<key>.json``, same keys) keep
    hitting: a key missing from the sqlite file is looked up there and copied in. The file is opened (and created)
    on first use.
    """

    STAGE = "openai-answer"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._db: DiskCache | None = None

    @property
    def db(self) -> DiskCache:
        if self._db is None:
            self._db = DiskCache(self.folder / "answers.sqlite")
        return self._db

    @staticmethod
    def key(model: str, messages: list[dict[str, Any]], params: dict[str, Any], sample: int,
            seed: int | None) -> str:
        """sha256 of (model, messages, request fields, sample index, seed): the key of the earlier JSON cache."""
        blob = json.dumps({"model": model, "messages": messages, "params": params, "sample": sample, "seed": seed},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        hit = self.db.get(self.STAGE, key)
        if hit is None:
            try:  # an answer of the earlier one-JSON-file-per-answer cache
                hit = json.loads((self.folder / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            self.put(key, hit)
        return hit

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.db.put(self.STAGE, key, value)

    def __len__(self) -> int:
        return len(self.db)


# ---------------------------------------------------------------------------------------------- the target
class OpenAITarget:
    """π_F answered by ``model`` at ``base_url`` through the official ``openai`` client."""

    parse_ref = staticmethod(parse_openai_ref)

    def __init__(self, model: str, base_url: str, gen: GenerationConfig | None = None,
                 options: OpenAIOptions | None = None, *, name: str | None = None,
                 api_key: str | None = None, role: str = "target", retry_malformed: bool = True,
                 sleep: Callable[[float], Awaitable[Any] | None] = asyncio.sleep) -> None:
        self.model, self.base_url = model, base_url.rstrip("/")
        self.gen = gen or GenerationConfig()
        self.options = o = options or OpenAIOptions()
        self.name = name or f"openai:{model}@{self.base_url}"
        if api_key is None:
            if o.no_key:
                api_key = "no-key"
            else:
                api_key = os.environ.get(o.key_env, "")
                if not api_key:
                    raise AlignProError(
                        f"{role} '{self.name}' needs an API key in the environment variable "
                        f"{o.key_env}, which is not set; set it, name another variable with "
                        f"'?key_env=NAME', or add '?no_key=true' for a local server that needs no key")
        self.client = OpenAIClient(model, self.base_url, api_key, name=self.name, role=role,
                                   concurrency=o.concurrency, timeout_s=o.timeout_s, retry=o.retry,
                                   max_requests=o.max_requests, max_tokens=o.max_tokens,
                                   retry_malformed=retry_malformed, sleep=sleep)
        self.usage = self.client.usage
        self.usage.extra.update(cache_hits=0.0, cache_misses=0.0)
        cache_dir = o.cache_dir()
        self.cache = AnswerCache(cache_dir) if cache_dir else None

    @classmethod
    def from_spec(cls, ref: str, gen: GenerationConfig | None = None) -> "OpenAITarget":
        """Build from the part of an ``openai:`` spec after the colon."""
        model, base_url, options = parse_openai_ref(ref)
        return cls(model, base_url, gen, options, name=f"openai:{model}@{base_url}")

    # ------------------------------------------------------------------ sync API (Target protocol)
    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        """``n`` answers per prompt, shape (len(prompts), n); each answer is its own (cached) request. With ``keys``
        answer j to prompt i is requested with its stream's seed (seed, keys[i], j) (coupled answers)."""
        if n < 1:
            raise AlignProError(f"n must be >= 1, got {n}")
        try:
            convs = user_turns(prompts, systems)
        except ValueError as exc:
            raise AlignProError(str(exc)) from None
        if keys is None:
            flat = self.client.run(self._complete_all(convs, self.gen, n, seed))
        else:
            flat = self.client.run(self._gather([self.acomplete(c, self.gen, seed=stream_seed(seed or 0, key, j)
                                                                & 0x7FFFFFFF) for c, key in zip(convs, keys)
                                                 for j in range(n)]))
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def chat(self, messages_list: Sequence[list[dict[str, Any]]], gen: GenerationConfig | None = None, *,
             seed: int | None = None) -> list[str]:
        """One answer text per conversation: full control over the messages."""
        answers = self.client.run(self._complete_all([list(m) for m in messages_list], gen or self.gen, 1, seed))
        return [a.text for a in answers]

    def close(self) -> None:
        """Close the private loop's HTTP client and stop its thread (the target can be used again after)."""
        self.client.close()

    async def _complete_all(self, convs: list[list[dict[str, Any]]], gen: GenerationConfig, n: int,
                            seed: int | None) -> list[Answer]:
        return await self._gather([self.acomplete(c, gen, seed=seed, sample=j) for c in convs for j in range(n)])

    @staticmethod
    async def _gather(jobs: list) -> list[Answer]:
        results = await asyncio.gather(*jobs, return_exceptions=True)  # let in-flight requests finish (and cache)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            budget = [e for e in errors if isinstance(e, BudgetExceeded)]
            raise (budget or errors)[0]
        return list(results)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ async API (any event loop)
    def sampling_params(self, gen: GenerationConfig) -> dict[str, Any]:
        """The request fields for ``gen`` (``temperature`` 0 when not sampling)."""
        params: dict[str, Any] = {"max_tokens": gen.max_new_tokens}
        if gen.do_sample:
            params.update(temperature=gen.temperature, top_p=gen.top_p)
            if self.options.send_top_k and gen.top_k > 0:
                params["extra_body"] = {"top_k": gen.top_k}
        else:
            params["temperature"] = 0.0
        return params

    async def acomplete(self, messages: list[dict[str, Any]], gen: GenerationConfig | None = None, *,
                        seed: int | None = None, sample: int = 0) -> Answer:
        """One answer to ``messages``: cache → budget → concurrency limit → request with retries."""
        params = self.sampling_params(gen or self.gen)
        if seed is not None:
            params["seed"] = request_seed(seed, sample)
        use_cache = self.cache is not None and (seed is not None or self.options.cache_unseeded)
        key = AnswerCache.key(self.model, messages, params, sample, seed) if use_cache else ""
        if use_cache:
            hit = self.cache.get(key)  # type: ignore[union-attr]
            if hit is not None:
                self.client.count(cache_hits=1)
                return Answer(hit["text"], int(hit.get("n_tokens", 0)))
            self.client.count(cache_misses=1)
        resp = await self.acreate(messages, params=params)
        text = resp.choices[0].message.content or ""
        n_tokens = int(getattr(resp.usage, "completion_tokens", 0) or 0) if resp.usage else 0
        if use_cache:
            self.cache.put(key, {"text": text, "n_tokens": n_tokens, "model": self.model})  # type: ignore[union-attr]
        return Answer(text, n_tokens)

    async def acreate(self, messages: list[dict[str, Any]], *, stream: bool = False,
                      params: dict[str, Any] | None = None) -> Any:
        """``chat.completions.create`` with budget, concurrency limit and counted retries (no cache); see
        :meth:`OpenAIClient.acreate <alignpro.backends.openai_client.OpenAIClient.acreate>`."""
        return await self.client.acreate(messages, stream=stream, params=params)

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        await self.client.aclose()

    def usage_dict(self) -> dict[str, float]:
        """The counters as one flat dict (for a run's metrics)."""
        return self.client.usage_dict()
