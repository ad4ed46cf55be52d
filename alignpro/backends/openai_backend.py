"""π_F behind an OpenAI-compatible API (OpenAI, vLLM / llama.cpp / Ollama servers, hosted APIs): ``openai:`` specs.

Spec: ``openai:<model>@<base_url>[?option=value&...]``, e.g. ``openai:gpt-4o-mini@https://api.openai.com/v1`` or
``openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8001/v1?no_key=true&concurrency=32``. The options after ``?``
are the fields of :class:`OpenAIOptions` (API key variable, concurrency, retries, budget, cache).

What one request goes through (:meth:`OpenAITarget.acomplete`):

1. the on-disk cache, keyed by sha256(model, messages, generation config, sample index, seed): a hit costs nothing;
2. the budget: before each HTTP request, ``max_requests`` / ``max_tokens`` are checked and :class:`BudgetExceeded`
   is raised once either is spent (callers checkpoint and stop; answers already received are in the cache, so the
   resumed run does not pay for them again);
3. the concurrency limit (a semaphore per event loop);
4. the request itself, with bounded exponential backoff on 429 / 5xx / timeouts / connection errors / malformed
   bodies. The ``openai`` client's own retries are off (``max_retries=0``) so every retry is counted here.

Counters live in ``target.usage`` (:class:`~alignpro.backends.base.Usage`): ``calls`` = HTTP requests sent (retries
included), ``retries``, ``generated_tokens`` = completion tokens, and ``extra``: ``prompt_tokens``,
``cache_hits``, ``cache_misses``, ``failed_requests``.

The sync API (:meth:`~OpenAITarget.answer`, :meth:`~OpenAITarget.chat`) runs the requests on a private event loop
thread, so it works from plain scripts, training loops and from inside other event loops alike. The async API
(:meth:`~OpenAITarget.acomplete`, :meth:`~OpenAITarget.acreate`) runs on whatever loop awaits it (``alignpro serve``).

``openai`` itself is imported when a target is built, so importing this module (e.g. for :class:`BudgetExceeded`)
is cheap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from alignpro.backends.base import Answer, GenerationConfig, Usage
from alignpro.config import setting
from alignpro.errors import AlignProError, ConfigError

OPENAI_SPEC_FORM = "openai:<model>@<base_url>[?option=value&...]"
_REF = re.compile(r"^(?P<model>[^?]+?)@(?P<url>https?://[^?\s]+)(?:\?(?P<query>.*))?$")
#: HTTP statuses worth retrying: request timeout, conflict, rate limit, and every server error.
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class BudgetExceeded(AlignProError):
    """A request budget (``max_requests`` or ``max_tokens``) is spent. Catch it to checkpoint and stop cleanly."""

    def __init__(self, setting_name: str, limit: int, used: int, target: str) -> None:
        self.setting_name, self.limit, self.used, self.target = setting_name, limit, used, target
        super().__init__(f"budget of target '{target}' reached: {setting_name}={limit} (used {used}); the "
                         f"answers received are cached, so a rerun (a new process has a fresh budget) or a larger "
                         f"'{setting_name}' in the spec continues without paying for them again")


class TargetError(AlignProError):
    """The target API failed: a non-retryable status, or still failing after the allowed retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  #: the last HTTP status from the server (None: no response, or a malformed one)


@dataclass
class OpenAIOptions:
    """Options of an ``openai:`` target, written after ``?`` in its spec (``...@http://host/v1?concurrency=4``)."""

    key_env: str = setting("OPENAI_API_KEY", "environment variable that holds the API key")
    no_key: bool = setting(False, "the server needs no key (local vLLM / llama.cpp / Ollama); send a placeholder")
    concurrency: int = setting(8, "most requests in flight at once")
    timeout_s: float = setting(120.0, "seconds before one request times out (then it is retried)")
    max_retries: int = setting(5, "retries per request on 429 / 5xx / timeouts / connection errors / bad bodies")
    backoff_s: float = setting(0.5, "delay before the first retry; doubles on each retry (with jitter)")
    max_backoff_s: float = setting(20.0, "longest delay between retries (also caps a server's Retry-After)")
    max_requests: int = setting(0, "budget: most HTTP requests (retries included) before BudgetExceeded; 0 = none")
    max_tokens: int = setting(0, "budget: most prompt + completion tokens before BudgetExceeded; 0 = none")
    cache: str = setting("auto", "answer cache folder; auto = $ALIGNPRO_HOME/cache/openai, off = no cache")
    cache_unseeded: bool = setting(False, "also cache requests without a seed (they are fresh samples otherwise)")
    send_top_k: bool = setting(False, "send top_k (vLLM and llama.cpp servers accept it; OpenAI's API rejects it)")

    def __post_init__(self) -> None:
        for name in ("concurrency",):
            if getattr(self, name) < 1:
                raise ConfigError(f"option '{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("max_retries", "max_requests", "max_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"option '{name}' must be >= 0, got {getattr(self, name)}")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"option '{name}' must be >= 0, got {getattr(self, name)}")
        if not self.no_key and not self.key_env:
            raise ConfigError("option 'key_env' must name an environment variable (or set no_key=true)")

    def cache_dir(self) -> Path | None:
        if self.cache == "off":
            return None
        if self.cache == "auto":
            from alignpro.assets import alignpro_home

            return alignpro_home() / "cache" / "openai"
        return Path(self.cache).expanduser()


def parse_openai_ref(ref: str) -> tuple[str, str, OpenAIOptions]:
    """``<model>@<base_url>[?options]`` → (model, base_url, options); an AlignProError names what is wrong."""
    from alignpro.specs import spec_options

    m = _REF.match(ref.strip())
    if not m:
        raise AlignProError(f"invalid openai spec 'openai:{ref}'; expected {OPENAI_SPEC_FORM}, e.g. "
                            "openai:gpt-4o-mini@https://api.openai.com/v1")
    options = spec_options(OpenAIOptions, m.group("query") or "", f"openai:{ref}")
    return m.group("model").strip(), m.group("url").rstrip("/"), options


# ---------------------------------------------------------------------------------------------- the cache
class AnswerCache:
    """One JSON file per answer under ``folder/ab/<sha256>.json``; writes are atomic (tmp file + rename)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(model: str, messages: list[dict[str, Any]], params: dict[str, Any], sample: int,
            seed: int | None) -> str:
        blob = json.dumps({"model": model, "messages": messages, "params": params, "sample": sample, "seed": seed},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


class _Malformed(Exception):
    """The server answered 200 with a body that is not a chat completion."""


def request_seed(seed: int, sample: int) -> int:
    """The seed sent for sample ``sample`` of a prompt: distinct per sample, so n answers are n draws."""
    digest = hashlib.sha256(f"{seed}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------- the target
class OpenAITarget:
    """π_F answered by ``model`` at ``base_url`` through the official ``openai`` client."""

    def __init__(self, model: str, base_url: str, gen: GenerationConfig | None = None,
                 options: OpenAIOptions | None = None, *, name: str | None = None,
                 api_key: str | None = None) -> None:
        import openai  # noqa: F401  (fail here, not on the first request, if it is missing)

        self.model, self.base_url = model, base_url.rstrip("/")
        self.gen = gen or GenerationConfig()
        self.options = options or OpenAIOptions()
        self.name = name or f"openai:{model}@{self.base_url}"
        if api_key is None:
            if self.options.no_key:
                api_key = "no-key"
            else:
                api_key = os.environ.get(self.options.key_env, "")
                if not api_key:
                    raise AlignProError(
                        f"target '{self.name}' needs an API key in the environment variable "
                        f"{self.options.key_env}, which is not set; set it, name another variable with "
                        f"'?key_env=NAME', or add '?no_key=true' for a local server that needs no key")
        self._api_key = api_key
        cache_dir = self.options.cache_dir()
        self.cache = AnswerCache(cache_dir) if cache_dir else None
        self.usage = Usage()
        self.usage.extra.update({"prompt_tokens": 0.0, "cache_hits": 0.0, "cache_misses": 0.0,
                                 "failed_requests": 0.0})
        self._lock = threading.Lock()  # guards usage (several event loops may update it)
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> (client, semaphore)
        self._bg_loop: asyncio.AbstractEventLoop | None = None
        self._bg_thread: threading.Thread | None = None

    parse_ref = staticmethod(parse_openai_ref)

    @classmethod
    def from_spec(cls, ref: str, gen: GenerationConfig | None = None) -> "OpenAITarget":
        """Build from the part of an ``openai:`` spec after the colon."""
        model, base_url, options = parse_openai_ref(ref)
        return cls(model, base_url, gen, options, name=f"openai:{model}@{base_url}")

    # ------------------------------------------------------------------ sync API (Target protocol)
    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None) -> list[list[Answer]]:
        """``n`` answers per prompt, shape (len(prompts), n); each answer is its own (cached) request."""
        if n < 1:
            raise AlignProError(f"n must be >= 1, got {n}")
        systems = list(systems) if systems is not None else [None] * len(prompts)
        if len(systems) != len(prompts):
            raise AlignProError(f"got {len(systems)} system prompts for {len(prompts)} prompts")
        convs = [([{"role": "system", "content": s}] if s else []) + [{"role": "user", "content": p}]
                 for p, s in zip(prompts, systems)]
        flat = self._run(self._complete_all(convs, self.gen, n, seed))
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def chat(self, messages_list: Sequence[list[dict[str, Any]]], gen: GenerationConfig | None = None, *,
             seed: int | None = None) -> list[str]:
        """One answer text per conversation (a judge's entry point): full control over the messages."""
        answers = self._run(self._complete_all([list(m) for m in messages_list], gen or self.gen, 1, seed))
        return [a.text for a in answers]

    def close(self) -> None:
        """Close the private loop's HTTP client and stop its thread (the target can be used again after)."""
        loop, thread = self._bg_loop, self._bg_thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._bg_loop = self._bg_thread = None

    def _run(self, coro: Any) -> Any:
        with self._lock:
            if self._bg_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"alignpro-{self.model}", daemon=True)
                thread.start()
                self._bg_loop, self._bg_thread = loop, thread
            loop = self._bg_loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def _complete_all(self, convs: list[list[dict[str, Any]]], gen: GenerationConfig, n: int,
                            seed: int | None) -> list[Answer]:
        jobs = [self.acomplete(c, gen, seed=seed, sample=j) for c in convs for j in range(n)]
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
                self._count(cache_hits=1)
                return Answer(hit["text"], int(hit.get("n_tokens", 0)))
            self._count(cache_misses=1)
        resp = await self.acreate(messages, params=params)
        text = resp.choices[0].message.content or ""
        n_tokens = int(getattr(resp.usage, "completion_tokens", 0) or 0) if resp.usage else 0
        if use_cache:
            self.cache.put(key, {"text": text, "n_tokens": n_tokens, "model": self.model})  # type: ignore[union-attr]
        return Answer(text, n_tokens)

    async def acreate(self, messages: list[dict[str, Any]], *, stream: bool = False,
                      params: dict[str, Any] | None = None) -> Any:
        """``chat.completions.create`` with budget, concurrency limit and counted retries (no cache).

        Returns the client's ``ChatCompletion`` (or its ``AsyncStream`` when ``stream``; retries then cover
        getting the stream started). ``params`` are further request fields; unknown ones go in ``extra_body``.
        """
        import openai

        client, semaphore = self._loop_state()
        params = dict(params or {})
        known = {"extra_body", "extra_headers", "extra_query"} | _CREATE_FIELDS
        extra = {k: params.pop(k) for k in list(params) if k not in known}
        if extra:
            params["extra_body"] = {**params.get("extra_body", {}), **extra}
        opts = self.options
        last: str = ""
        last_status: int | None = None
        for attempt in range(opts.max_retries + 1):
            async with semaphore:
                self._reserve_request(retry=attempt > 0)
                retry_after: float | None = None
                try:
                    resp = await client.chat.completions.create(model=self.model, messages=messages, stream=stream,
                                                                timeout=opts.timeout_s, **params)
                    if not stream:
                        if not getattr(resp, "choices", None) or getattr(resp.choices[0], "message", None) is None:
                            raise _Malformed("a 200 response without choices")
                        self._count_tokens(resp.usage)
                    return resp
                except openai.APIStatusError as exc:
                    last_status, last = exc.status_code, f"HTTP {exc.status_code}: {_short(exc)}"
                    if exc.status_code not in RETRY_STATUSES:
                        self._count(failed_requests=1)
                        raise TargetError(f"target '{self.name}' refused the request ({last})",
                                          exc.status_code) from None
                    retry_after = _retry_after(exc)
                except openai.APITimeoutError:
                    last_status, last = None, f"timed out after {opts.timeout_s} s"
                except openai.APIConnectionError as exc:
                    last_status, last = None, f"cannot connect to {self.base_url} ({_short(exc)})"
                except (_Malformed, json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                    last_status, last = None, f"malformed response: {_short(exc)}"
            self._count(failed_requests=1)
            if attempt < opts.max_retries:
                delay = min(opts.max_backoff_s, opts.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                if retry_after is not None:
                    delay = max(delay, min(opts.max_backoff_s, retry_after))
                await asyncio.sleep(delay)
        raise TargetError(f"target '{self.name}' failed after {opts.max_retries} retries: {last}", last_status)

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[0].close()

    # ------------------------------------------------------------------ counters and per-loop state
    def _loop_state(self) -> tuple[Any, asyncio.Semaphore]:
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                 timeout=self.options.timeout_s)
            state = (client, asyncio.Semaphore(self.options.concurrency))
            self._loops[loop] = state
        return state

    def _reserve_request(self, retry: bool = False) -> None:
        """Count one HTTP request about to be sent (a retry when ``retry``), or raise BudgetExceeded."""
        opts = self.options
        with self._lock:
            u = self.usage
            if opts.max_requests and u.calls >= opts.max_requests:
                raise BudgetExceeded("max_requests", opts.max_requests, u.calls, self.name)
            tokens = int(u.generated_tokens + u.extra.get("prompt_tokens", 0))
            if opts.max_tokens and tokens >= opts.max_tokens:
                raise BudgetExceeded("max_tokens", opts.max_tokens, tokens, self.name)
            u.calls += 1
            u.retries += int(retry)

    def _count_tokens(self, usage: Any) -> None:
        if usage is None:
            return
        with self._lock:
            self.usage.generated_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            self.usage.extra["prompt_tokens"] += float(getattr(usage, "prompt_tokens", 0) or 0)

    def _count(self, *, retries: int = 0, **extra: int) -> None:
        with self._lock:
            self.usage.retries += retries
            for k, v in extra.items():
                self.usage.extra[k] = self.usage.extra.get(k, 0.0) + v

    def usage_dict(self) -> dict[str, float]:
        """The counters as one flat dict (for a run's metrics)."""
        with self._lock:
            return {"requests": self.usage.calls, "retries": self.usage.retries,
                    "completion_tokens": self.usage.generated_tokens, **self.usage.extra}


# the named fields of chat.completions.create that are not given explicitly above
_CREATE_FIELDS = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "reasoning_effort", "response_format", "seed", "service_tier", "stop", "store", "stream_options",
    "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user"})


def _short(exc: BaseException, limit: int = 300) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text = body["message"]
    elif isinstance(body, dict) and isinstance(body.get("error"), dict):
        text = str(body["error"].get("message", body))
    else:
        text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None
