"""A real, local, OpenAI-compatible HTTP server for tests: answers, slowness, failures and bad bodies on demand.

Usage::

    from tests.fake_openai_server import Behavior, FakeOpenAIServer

    with FakeOpenAIServer() as fake:                      # 127.0.0.1, an ephemeral port
        client = openai.OpenAI(base_url=fake.base_url, api_key="x")
        fake.behavior = Behavior(fail_first=2, fail_status=429)   # change behaviour at any time
        ...
        fake.requests        # every request body received, in order (also the failed ones)
        fake.max_in_flight   # the most requests it was answering at the same time

It serves ``POST /v1/chat/completions`` (JSON or SSE when ``"stream": true``, ``n`` choices), ``GET /v1/models``
and ``GET /health``. The default answer is ``"Answer: <last user message>"``; pass ``Behavior(reply=...)`` for
another. :func:`run_asgi_in_thread` runs any ASGI app (e.g. ``alignpro serve``'s) the same way.

Everything shuts down by itself: leaving the ``with`` block stops uvicorn (open connections get at most
``graceful_s`` seconds), and the server thread is a daemon, so a failing test can never hang the session.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["Behavior", "FakeOpenAIServer", "RunningServer", "default_reply", "last_user_text",
           "run_asgi_in_thread"]


# ---------------------------------------------------------------------------------------------- any ASGI app
class RunningServer:
    """An ASGI app served by uvicorn on a background daemon thread. Use as a context manager or call ``stop()``."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, graceful_s: float = 1.0,
                 start_timeout_s: float = 20.0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=graceful_s, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"asgi-{host}:{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the ASGI server on {host}:{port} did not start within {start_timeout_s} s")
            time.sleep(0.01)
        self.host = host
        self.port: int = self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_asgi_in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0, graceful_s: float = 1.0) -> RunningServer:
    """Start ``app`` on ``host:port`` (0 = an ephemeral port) and return once it accepts connections."""
    return RunningServer(app, host=host, port=port, graceful_s=graceful_s)


# ---------------------------------------------------------------------------------------------- behaviours
def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message of a chat request body ('' when there is none)."""
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


def default_reply(body: dict[str, Any], index: int) -> str:
    """``"Answer: <last user message>"`` (``index`` is the choice number when ``n`` > 1)."""
    return f"Answer: {last_user_text(body)}" + (f" #{index}" if index else "")


@dataclass
class Behavior:
    """How the fake answers. Failures come first: the first ``fail_first`` requests fail, the rest succeed."""

    delay_s: float = 0.0  #: sleep before answering (a slow model); the request counts as in flight meanwhile
    fail_first: int = 0  #: this many requests (counted from when this Behavior was set) fail ...
    fail_status: int = 500  #: ... with this HTTP status (429, 500, 503, 400...)
    retry_after_s: float | None = None  #: send a ``Retry-After`` header with failures
    malformed: bool = False  #: answer 200 with a body that is not JSON (after the failures)
    missing_choices: bool = False  #: answer 200 with JSON that has no ``choices``
    require_key: str | None = None  #: answer 401 unless ``Authorization: Bearer <require_key>``
    stream_chunk_delay_s: float = 0.0  #: sleep between SSE chunks when streaming
    include_usage: bool = True  #: put a ``usage`` object in answers
    reply: Callable[[dict[str, Any], int], str] = default_reply  #: (request body, choice index) -> answer text


@dataclass
class _Stats:
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    failures_sent: int = 0


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on 127.0.0.1 with scriptable failures (see :class:`Behavior`)."""

    def __init__(self, behavior: Behavior | None = None, *, model: str = "fake-model", port: int = 0,
                 record: bool = True) -> None:
        self.model = model
        self.record = record  #: keep request bodies and headers (turn off for long load tests)
        self._behavior = behavior or Behavior()
        self._stats = _Stats()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
        ])
        self._server = run_asgi_in_thread(self.app, port=port)

    # ------------------------------------------------------------------ public API
    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client: ``http://127.0.0.1:<port>/v1``."""
        return f"{self._server.url}/v1"

    @property
    def behavior(self) -> Behavior:
        return self._behavior

    @behavior.setter
    def behavior(self, value: Behavior) -> None:
        with self._lock:
            self._behavior = value
            self._stats.failures_sent = 0

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every chat request body received (failed ones included), in arrival order."""
        with self._lock:
            return list(self._stats.requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._stats.headers)

    @property
    def max_in_flight(self) -> int:
        return self._stats.max_in_flight

    def reset(self, behavior: Behavior | None = None) -> None:
        """Forget the recorded requests and counters; optionally set a new behaviour."""
        with self._lock:
            self._stats = _Stats()
            if behavior is not None:
                self._behavior = behavior

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "FakeOpenAIServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ handlers
    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "body is not JSON")
        with self._lock:
            b = self._behavior
            if self.record:
                self._stats.requests.append(body)
                self._stats.headers.append(dict(request.headers))
            self._stats.in_flight += 1
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._stats.in_flight)
            fail = self._stats.failures_sent < b.fail_first
            if fail:
                self._stats.failures_sent += 1
        try:
            if b.delay_s:
                await asyncio.sleep(b.delay_s)
            if b.require_key is not None and request.headers.get("authorization") != f"Bearer {b.require_key}":
                return _error(401, "invalid api key", "invalid_api_key")
            if fail:
                headers = {"retry-after": str(b.retry_after_s)} if b.retry_after_s is not None else None
                return _error(b.fail_status, f"scripted failure ({b.fail_status})", headers=headers)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return _error(400, "'messages' is required")
            if b.malformed:
                return Response(b"{this is not json", media_type="application/json")
            if b.missing_choices:
                return JSONResponse({"id": "x", "object": "chat.completion"})
            n = int(body.get("n") or 1)
            texts = [b.reply(body, i) for i in range(n)]
            if body.get("stream"):
                return StreamingResponse(self._sse(body, texts[0], b), media_type="text/event-stream")
            return JSONResponse(self._completion(body, texts, b))
        finally:
            with self._lock:
                self._stats.in_flight -= 1

    def _completion(self, body: dict[str, Any], texts: list[str], b: Behavior) -> dict[str, Any]:
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = sum(len(t.split()) for t in texts)
        out: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)],
        }
        if b.include_usage:
            out["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens}
        return out

    async def _sse(self, body: dict[str, Any], text: str, b: Behavior):
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time()), body.get("model", self.model)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        words = text.split(" ")
        for i, w in enumerate(words):
            if b.stream_chunk_delay_s:
                await asyncio.sleep(b.stream_chunk_delay_s)
            yield chunk({"content": w if i == 0 else " " + w})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"


def _error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": "fake_error", "code": code}}, status_code=status,
                        headers=headers)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.fake_openai_server [--port N] [--delay-ms MS]``: serve until SIGTERM / Ctrl-C."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m tests.fake_openai_server", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer latency of the fake model")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeOpenAIServer(Behavior(delay_s=args.delay_ms / 1000), port=args.port, record=False) as fake:
        print(f"fake OpenAI server on {fake.base_url}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
