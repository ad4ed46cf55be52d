"""The HTTP side of the ``openai:`` backends (the target π_F and the judge): one request, counted and retried.

:class:`OpenAIClient` sends ``chat.completions.create`` through the official ``openai`` client and owns what
every request goes through:

1. the budget: before each HTTP request, ``max_requests`` / ``max_tokens`` are checked and :class:`BudgetExceeded`
   is raised once either is spent;
2. the concurrency limit (a semaphore per event loop);
3. the request itself, retried by :class:`~alignpro.backends.retry.RetryPolicy` on 429 / 5xx / timeouts /
   connection errors and, unless ``retry_malformed`` is off, malformed bodies. The ``openai`` client's own
   retries are off (``max_retries=0``) so every retry is counted here.

Counters live in ``client.usage`` (:class:`~alignpro.backends.base.Usage`): ``calls`` = HTTP requests sent
(retries included), ``retries``, ``generated_tokens`` = completion tokens, and ``extra``: ``prompt_tokens``,
``failed_requests``, and the failures by kind (``rate_limited``, ``server_errors``, ``timeouts``,
``connection_errors``, ``malformed``).

:meth:`OpenAIClient.run` runs a coroutine on a private event-loop thread, so the sync APIs built on it work from
plain scripts, training loops and from inside other event loops alike. ``openai`` itself is imported when a client
is built, so importing this module (e.g. for :class:`BudgetExceeded`) is cheap.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import threading
import weakref
from typing import Any, Awaitable, Callable

from alignpro.backends.base import Usage
from alignpro.backends.retry import RETRY_STATUSES, RetryPolicy, retry_after_s
from alignpro.errors import AlignProError

#: the counters of ``usage.extra`` every client starts with
COUNTERS = ("prompt_tokens", "failed_requests", "rate_limited", "server_errors", "timeouts", "connection_errors",
            "malformed")


class BudgetExceeded(AlignProError):
    """A request budget (``max_requests`` or ``max_tokens``) is spent. Catch it to checkpoint and stop cleanly."""

    def __init__(self, setting_name: str, limit: int, used: int, target: str) -> None:
        self.setting_name, self.limit, self.used, self.target = setting_name, limit, used, target
        super().__init__(f"budget of target '{target}' reached: {setting_name}={limit} (used {used}); the "
                         f"answers received are cached, so a rerun (a new process has a fresh budget) or a larger "
                         f"'{setting_name}' in the spec continues without paying for them again")


class TargetError(AlignProError):
    """The API failed: a non-retryable status, or still failing after the allowed retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  #: the last HTTP status from the server (None: no response, or a malformed one)


class MalformedReply(TargetError):
    """The server answered 200 with a body that is not a chat completion (raised at once when not retried)."""


@functools.cache
def request_fields() -> frozenset[str]:
    """The request fields the installed ``openai`` client takes by name in ``chat.completions.create``, less the
    ones :meth:`OpenAIClient.acreate` passes itself. Any other field goes in ``extra_body`` (the same JSON body)."""
    from openai.resources.chat.completions import AsyncCompletions

    named = set(inspect.signature(AsyncCompletions.create).parameters)
    return frozenset(named - {"self", "model", "messages", "stream", "timeout"})


class OpenAIClient:
    """``model`` at ``base_url``: counted, budgeted, concurrency-limited, retried chat completions."""

    def __init__(self, model: str, base_url: str, api_key: str, *, name: str, role: str = "target",
                 concurrency: int = 8, timeout_s: float = 120.0, retry: RetryPolicy = RetryPolicy(),
                 max_requests: int = 0, max_tokens: int = 0, retry_malformed: bool = True,
                 sleep: Callable[[float], Awaitable[Any] | None] = asyncio.sleep) -> None:
        import openai  # noqa: F401  (fail here, not on the first request, if it is missing)

        self.model, self.base_url, self.name, self.role = model, base_url.rstrip("/"), name, role
        self.concurrency, self.timeout_s, self.retry = concurrency, timeout_s, retry
        self.max_requests, self.max_tokens, self.retry_malformed = max_requests, max_tokens, retry_malformed
        self.sleep = sleep
        self._api_key = api_key
        self.usage = Usage(extra={k: 0.0 for k in COUNTERS})
        self._lock = threading.Lock()  # guards usage (several event loops may update it)
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> (client, semaphore)
        self._bg_loop: asyncio.AbstractEventLoop | None = None
        self._bg_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ one request
    async def acreate(self, messages: list[dict[str, Any]], *, stream: bool = False,
                      params: dict[str, Any] | None = None) -> Any:
        """``chat.completions.create`` with budget, concurrency limit and counted retries.

        Returns the client's ``ChatCompletion`` (or its ``AsyncStream`` when ``stream``; retries then cover
        getting the stream started). ``params`` are further request fields; unknown ones go in ``extra_body``.
        """
        import openai

        client, semaphore = self._loop_state()
        params = dict(params or {})
        known = request_fields()
        extra = {k: params.pop(k) for k in list(params) if k not in known}
        if extra:
            params["extra_body"] = {**params.get("extra_body", {}), **extra}
        who = f"{self.role} '{self.name}'"
        last: str = ""
        last_status: int | None = None
        retries = self.retry.max_retries
        for attempt in range(retries + 1):
            async with semaphore:
                self._reserve_request(retry=attempt > 0)
                retry_after: float | None = None
                try:
                    resp = await client.chat.completions.create(model=self.model, messages=messages, stream=stream,
                                                                timeout=self.timeout_s, **params)
                    if not stream:
                        if not getattr(resp, "choices", None) or getattr(resp.choices[0], "message", None) is None:
                            raise _Malformed("a 200 response without choices")
                        self._count_tokens(resp.usage)
                    return resp
                except openai.APIStatusError as exc:
                    last_status, last = exc.status_code, f"HTTP {exc.status_code}: {_short(exc)}"
                    if exc.status_code not in RETRY_STATUSES:
                        self.count(failed_requests=1)
                        raise TargetError(f"{who} refused the request ({last})", exc.status_code) from None
                    self.count(**{"rate_limited" if exc.status_code == 429 else "server_errors": 1})
                    retry_after = retry_after_s(exc)
                except openai.APITimeoutError:
                    last_status, last = None, f"timed out after {self.timeout_s} s"
                    self.count(timeouts=1)
                except openai.APIConnectionError as exc:
                    last_status, last = None, f"cannot connect to {self.base_url} ({_short(exc)})"
                    self.count(connection_errors=1)
                except (_Malformed, json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                    last_status, last = None, f"malformed response: {_short(exc)}"
                    self.count(malformed=1)
                    if not self.retry_malformed:
                        self.count(failed_requests=1)
                        raise MalformedReply(f"{who} sent a {last}") from None
            self.count(failed_requests=1)
            if attempt < retries:
                waited = self.sleep(self.retry.delay(attempt, retry_after))
                if inspect.isawaitable(waited):  # asyncio.sleep; a plain function (a test's recorder) returns None
                    await waited
        raise TargetError(f"{who} failed after {retries} retries: {last}", last_status)

    # ------------------------------------------------------------------ the private event loop (sync callers)
    def run(self, coro: Any) -> Any:
        """Run ``coro`` to completion on this client's private event-loop thread (started on first use)."""
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

    def close(self) -> None:
        """Close the private loop's HTTP client and stop its thread (the client can be used again after)."""
        loop, thread = self._bg_loop, self._bg_thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._bg_loop = self._bg_thread = None

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[0].close()

    def _loop_state(self) -> tuple[Any, asyncio.Semaphore]:
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                 timeout=self.timeout_s)
            state = (client, asyncio.Semaphore(self.concurrency))
            self._loops[loop] = state
        return state

    # ------------------------------------------------------------------ counters and the budget
    def _reserve_request(self, retry: bool = False) -> None:
        """Count one HTTP request about to be sent (a retry when ``retry``), or raise BudgetExceeded."""
        with self._lock:
            u = self.usage
            if self.max_requests and u.calls >= self.max_requests:
                raise BudgetExceeded("max_requests", self.max_requests, u.calls, self.name)
            tokens = int(u.generated_tokens + u.extra.get("prompt_tokens", 0))
            if self.max_tokens and tokens >= self.max_tokens:
                raise BudgetExceeded("max_tokens", self.max_tokens, tokens, self.name)
            u.calls += 1
            u.retries += int(retry)

    def _count_tokens(self, usage: Any) -> None:
        if usage is None:
            return
        with self._lock:
            self.usage.generated_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            self.usage.extra["prompt_tokens"] += float(getattr(usage, "prompt_tokens", 0) or 0)

    def count(self, **extra: float) -> None:
        """Add to the counters of ``usage.extra``."""
        with self._lock:
            for k, v in extra.items():
                self.usage.extra[k] = self.usage.extra.get(k, 0.0) + v

    def usage_dict(self) -> dict[str, float]:
        """The counters as one flat dict (for a run's metrics)."""
        with self._lock:
            return {"requests": self.usage.calls, "retries": self.usage.retries,
                    "completion_tokens": self.usage.generated_tokens, **self.usage.extra}


class _Malformed(Exception):
    """The server answered 200 with a body that is not a chat completion."""


def _short(exc: BaseException, limit: int = 300) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text = body["message"]
    elif isinstance(body, dict) and isinstance(body.get("error"), dict):
        text = str(body["error"].get("message", body))
    else:
        text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"
