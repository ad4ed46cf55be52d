"""``alignpro serve``'s config, service and FastAPI app; :mod:`alignpro.serve` describes the server."""

from __future__ import annotations

import errno
import hmac
import ipaddress
import os
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from alignpro.backends.base import PAPER_ANSWER_CONFIG, PlainAnswerSettings, Prompter, Rewrite, Target
from alignpro.config import check_at_least, parse_config, setting
from alignpro.errors import AlignProError, ConfigError
from alignpro.serve.batching import MicroBatcher
from alignpro.serve.protocol import (RequestError, completion_body, content_text, emulated_stream, error_body,
                                     parse_chat_request, rewrite_header, sse)
from alignpro.specs import model_spec_help


@dataclass
class ServeConfig(PlainAnswerSettings):
    """An OpenAI-compatible server: the prompter ρ rewrites the last user message, the target π_F answers."""

    prompter: str = setting("smollm2", "prompter spec: " + model_spec_help("prompter"))
    target: str = setting("smollm2", "target spec: " + model_spec_help("target"))
    template: str = setting("rewrite-default", "rewrite template for the prompter: builtin name or YAML file")
    host: str = setting("127.0.0.1", "interface to bind; a non-loopback host needs --api-key-env or --allow-remote")
    port: int = setting(8000, "port to listen on (0 = any free port)")
    api_key_env: str = setting("", "environment variable holding the bearer key clients must send; empty = no auth")
    allow_remote: bool = setting(False, "allow a non-loopback --host without --api-key-env (anyone can use it)")
    rewrite: bool = setting(True, "rewrite the last user message; --no-rewrite forwards it unchanged (a baseline)")
    max_batch: int = setting(16, "most prompts the prompter (and a local target) handles in one call")
    batch_wait_ms: float = setting(5.0, "how long a batch's first prompt waits for others to join it")
    model_name: str = setting("alignpro", "the model id listed by /v1/models")
    keep_alive_s: float = setting(30.0, "seconds an idle client connection stays open; keep it above the clients' "
                                        "own idle expiry (httpx and the openai client: 5 s), or a reused connection "
                                        "can be closed under a request")
    max_new_tokens: int = setting(256, "max new tokens of a local target's answer (256, not the answer default "
                                       f"{PAPER_ANSWER_CONFIG.max_new_tokens}: a chat client's answers run longer)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = setting("info", "uvicorn log level")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"setting 'port' must be in [0, 65535], got {self.port}")
        check_at_least(self, 1, "max_batch")
        if self.keep_alive_s <= 0:
            raise ConfigError(f"setting 'keep_alive_s' must be > 0, got {self.keep_alive_s}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"setting 'batch_wait_ms' must be >= 0, got {self.batch_wait_ms}")
        if not is_loopback(self.host) and not (self.api_key_env or self.allow_remote):
            raise ConfigError(f"refusing to bind host '{self.host}' (not loopback) without authentication; "
                              "set --api-key-env NAME (clients then need that bearer key) or --allow-remote")
        self.gen = self.answer_config()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_api_key(env: str) -> str | None:
    """The bearer key from the environment variable ``env`` (None when ``env`` is empty)."""
    if not env:
        return None
    key = os.environ.get(env, "")
    if not key:
        raise AlignProError(f"--api-key-env names the environment variable {env}, which is not set or empty")
    return key


class AlignProService:
    """The serving logic, independent of HTTP: rewrite (batched), then answer (forwarded or batched)."""

    def __init__(self, cfg: ServeConfig, prompter: Prompter | None, target: Target) -> None:
        self.cfg, self.prompter, self.target = cfg, prompter, target
        self.forwards = callable(getattr(target, "acreate", None))  # an API target takes whole conversations
        wait_s = cfg.batch_wait_ms / 1000
        self.rewriter: MicroBatcher[str, Rewrite] | None = None
        if prompter is not None:
            self.rewriter = MicroBatcher(lambda xs: [s.rewrites[0] for s in prompter.rewrite(xs, 1)],
                                         max_batch=cfg.max_batch, wait_s=wait_s, name=f"prompter {prompter.name}")
        self.answerer: MicroBatcher[tuple[str, str | None], Any] | None = None
        if not self.forwards:
            self.answerer = MicroBatcher(
                lambda items: [row[0] for row in target.answer([p for p, _ in items], n=1,
                                                               systems=[s for _, s in items])],
                max_batch=cfg.max_batch, wait_s=wait_s, name=f"target {target.name}")
        self.started = time.time()
        self.requests = 0
        self.errors: dict[int, int] = {}

    async def start(self) -> None:
        for b in (self.rewriter, self.answerer):
            if b is not None:
                b.start()

    async def stop(self) -> None:
        for b in (self.rewriter, self.answerer):
            if b is not None:
                await b.stop()
        if self.forwards and hasattr(self.target, "aclose"):
            await self.target.aclose()  # type: ignore[attr-defined]

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok", "model": self.cfg.model_name, "target": self.target.name,
                               "prompter": self.prompter.name if self.prompter else None,
                               "uptime_s": round(time.time() - self.started, 1), "requests": self.requests,
                               "errors": {str(k): v for k, v in sorted(self.errors.items())}}
        if self.rewriter:
            out["rewrite_batches"] = self.rewriter.stats()
        if self.answerer:
            out["answer_batches"] = self.answerer.stats()
        if hasattr(self.target, "usage_dict"):
            out["target_usage"] = self.target.usage_dict()  # type: ignore[attr-defined]
        return out

    async def rewrite(self, text: str) -> dict[str, Any]:
        """The audit record ``{"original", "rewrite", "parsed", "rewritten"}`` for the last user message."""
        if self.rewriter is None:
            return {"original": text, "rewrite": text, "parsed": False, "rewritten": False}
        try:
            r = await self.rewriter.submit(text)
        except Exception as exc:  # noqa: BLE001
            raise RequestError(500, f"prompter '{self.prompter.name}' failed: {exc}", "server_error") from None
        return {"original": text, "rewrite": r.text, "parsed": r.parsed, "rewritten": True}

    async def answer(self, body: dict[str, Any], user_index: int, audit: dict[str, Any]):
        """A JSON dict (non-streaming) or an async iterator of SSE bytes (streaming)."""
        messages = [dict(m) for m in body["messages"]]
        messages[user_index]["content"] = audit["rewrite"]
        stream = bool(body.get("stream", False))
        if self.forwards:
            return await self._forward(body, messages, stream, audit)
        if body.get("n", 1) not in (1, None):
            raise RequestError(400, f"'n' must be 1 for the local target '{self.target.name}', got "
                                    f"{body['n']!r} (only openai: targets answer n > 1)")
        systems = [content_text(m.get("content")) or "" for m in messages if m["role"] == "system"]
        assert self.answerer is not None
        try:
            ans = await self.answerer.submit((audit["rewrite"], "\n\n".join(systems) or None))
        except Exception as exc:  # noqa: BLE001
            raise RequestError(502, f"target '{self.target.name}' failed: {exc}", "upstream_error") from None
        completion = completion_body(self.cfg.model_name, ans.text, ans.n_tokens, audit)
        return emulated_stream(completion) if stream else completion

    async def _forward(self, body: dict[str, Any], messages: list[dict[str, Any]], stream: bool,
                       audit: dict[str, Any]):
        from alignpro.backends.openai_backend import BudgetExceeded, TargetError

        params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        try:
            result = await self.target.acreate(messages, stream=stream, params=params)  # type: ignore[attr-defined]
            if stream:  # open the stream now, so that a failing target is a 502 and not a broken stream
                iterator = result.__aiter__()
                first = await iterator.__anext__()
        except BudgetExceeded as exc:
            raise RequestError(429, str(exc), "insufficient_quota") from None
        except TargetError as exc:
            status = exc.status if exc.status in (400, 404, 413, 422) else 502
            raise RequestError(status, str(exc), "upstream_error" if status == 502 else "invalid_request_error") \
                from None
        except StopAsyncIteration:
            raise RequestError(502, f"target '{self.target.name}' sent an empty stream", "upstream_error") from None
        except Exception as exc:  # noqa: BLE001 - e.g. a malformed first chunk
            raise RequestError(502, f"target '{self.target.name}' failed: {exc}", "upstream_error") from None
        if not stream:
            data = result.to_dict()
            data["alignpro"] = audit
            return data

        async def relay() -> AsyncIterator[bytes]:
            try:
                chunk = first.to_dict()
                chunk["alignpro"] = audit
                yield sse(chunk)
                async for item in iterator:
                    yield sse(item.to_dict())
                yield sse("[DONE]")
            except Exception as exc:  # noqa: BLE001 - headers are sent: report in the stream
                yield sse(error_body(f"target '{self.target.name}' failed mid-stream: {exc}", "upstream_error"))
            finally:
                await result.close()
        return relay()


def create_app(cfg: ServeConfig, prompter: Prompter | None, target: Target, *,
               api_key: str | None = None) -> FastAPI:
    """The FastAPI app for built backends (``prompter`` None = forward prompts unchanged)."""
    service = AlignProService(cfg, prompter, target)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="alignpro serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    def error(status: int, message: str, type_: str, param: str | None = None) -> JSONResponse:
        service.errors[status] = service.errors.get(status, 0) + 1
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(error_body(message, type_, param), status_code=status, headers=headers)

    def check_key(request: Request) -> JSONResponse | None:
        if api_key is None:
            return None
        sent = request.headers.get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            return error(401, f"missing or invalid API key: send 'Authorization: Bearer <key>' with the key in "
                              f"${cfg.api_key_env}", "invalid_api_key")
        return None

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", "invalid_request_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(service.health())

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if (denied := check_key(request)) is not None:
            return denied
        return JSONResponse({"object": "list", "data": [
            {"id": cfg.model_name, "object": "model", "created": int(service.started), "owned_by": "alignpro"}]})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if (denied := check_key(request)) is not None:
            return denied
        service.requests += 1
        try:
            body, user_index, text = parse_chat_request(await request.body())
            audit = await service.rewrite(text)
            result = await service.answer(body, user_index, audit)
        except RequestError as exc:
            return error(exc.status, exc.message, exc.type, exc.param)
        headers = rewrite_header(audit["rewrite"])
        if isinstance(result, dict):
            return JSONResponse(result, headers=headers)
        return StreamingResponse(result, media_type="text/event-stream",
                                 headers=headers | {"Cache-Control": "no-cache"})

    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (bound as uvicorn binds one), for uvicorn to serve on; a port in use or
    a host that cannot be bound is a :class:`ConfigError` naming the setting."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"setting 'port': port {port} on {host} is already in use; choose another --port "
                              "(0 = any free port) or stop the server holding it") from None
        raise ConfigError(f"settings 'host'/'port': cannot listen on {host}:{port} ({exc.strerror or exc}); give "
                          "an address of this machine (--host, default 127.0.0.1) and a free --port (0 = any free "
                          "port; below 1024 needs privileges)") from None
    sock.set_inheritable(True)
    return sock


def main(argv: list[str]) -> int:
    import uvicorn

    from alignpro.specs import make_prompter, make_target

    cfg = parse_config(ServeConfig, argv, prog="alignpro serve")
    api_key = read_api_key(cfg.api_key_env)
    sock = listening_socket(cfg.host, cfg.port)  # before the models load: a port in use fails at once
    try:
        prompter = make_prompter(cfg.prompter, cfg.template) if cfg.rewrite else None
        target = make_target(cfg.target, cfg.gen)
        app = create_app(cfg, prompter, target, api_key=api_key)
        print(f"alignpro serve: prompter {cfg.prompter if cfg.rewrite else '(off)'}, target {cfg.target}; "
              f"http://{cfg.host}:{sock.getsockname()[1]}/v1 (model '{cfg.model_name}'"
              f"{', bearer key from $' + cfg.api_key_env if api_key else ''})", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=sock.getsockname()[1],
                                               log_level=cfg.log_level, timeout_keep_alive=cfg.keep_alive_s))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
