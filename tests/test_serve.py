"""``alignpro serve`` as a real HTTP server: the official ``openai`` client in front, a fake target behind it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote

import httpx
import openai
import pytest

from alignpro.backends.base import RewriteSet
from alignpro.backends.fake import FakePrompter, FakeTarget
from alignpro.config import parse_config
from alignpro.errors import AlignProError, ConfigError
from alignpro.serve import HEADER_LIMIT, REWRITE_HEADER, MicroBatcher, ServeConfig, create_app, rewrite_header
from alignpro.specs import make_target
from tests.fake_openai_server import Behavior, FakeOpenAIServer, RunningServer, last_user_text, run_asgi_in_thread

REPO = Path(__file__).resolve().parent.parent
FAST = "no_key=true&cache=off&backoff_s=0.01&max_backoff_s=0.05&max_retries=2"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "How do I cook rice?"},
]


class RecordingPrompter(FakePrompter):
    """The fake prompter, slowed down, recording the size of every batch it is given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s, self.batches = delay_s, []

    def rewrite(self, prompts: Sequence[str], k: int, *, seed: int | None = None) -> list[RewriteSet]:
        self.batches.append(len(prompts))
        time.sleep(self.delay_s)
        return super().rewrite(prompts, k, seed=seed)


class BrokenPrompter(FakePrompter):
    def rewrite(self, prompts, k, *, seed=None):
        if any("explode" in p for p in prompts):
            raise RuntimeError("prompter exploded")
        return super().rewrite(prompts, k, seed=seed)


def _serve(target, prompter=None, *, api_key: str | None = None, **cfg) -> RunningServer:
    config = ServeConfig(prompter="fake", target="fake", port=0, **cfg)
    return run_asgi_in_thread(create_app(config, prompter or FakePrompter(), target, api_key=api_key))


@pytest.fixture(scope="module")
def api_serve(fake_openai_server: FakeOpenAIServer):
    """serve: fake prompter → ``openai:`` target on the fake server."""
    target = make_target(f"openai:fake-model@{fake_openai_server.base_url}?{FAST}")
    with _serve(target, BrokenPrompter()) as server:
        yield server


@pytest.fixture(scope="module")
def local_serve():
    """serve: fake prompter → the local fake target (answered in a thread, batched)."""
    with _serve(FakeTarget()) as server:
        yield server


def client(server: RunningServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=20)


# ---------------------------------------------------------------------------------------------- happy paths
def test_openai_client_through_serve_to_an_api_target(api_serve: RunningServer, fake: FakeOpenAIServer) -> None:
    raw = client(api_serve).chat.completions.with_raw_response.create(
        model="alignpro", messages=CONVERSATION, temperature=0.3, max_tokens=17, seed=4)
    resp = raw.parse()
    audit = resp.model_extra["alignpro"]
    assert audit["original"] == "How do I cook rice?" and audit["rewritten"] is True
    assert resp.choices[0].message.content == f"Answer: {audit['rewrite']}"
    assert unquote(raw.headers[REWRITE_HEADER]) == audit["rewrite"]
    (sent,) = fake.requests  # the conversation went through whole, with only the last user message rewritten
    assert sent["messages"][:3] == CONVERSATION[:3]
    assert sent["messages"][3] == {"role": "user", "content": audit["rewrite"]}
    assert (sent["model"], sent["temperature"], sent["max_tokens"], sent["seed"]) == ("fake-model", 0.3, 17, 4)


def test_streaming_passes_through(api_serve: RunningServer, fake: FakeOpenAIServer) -> None:
    c = client(api_serve)
    plain = c.chat.completions.create(model="alignpro", messages=CONVERSATION)
    chunks = list(c.chat.completions.create(model="alignpro", messages=CONVERSATION, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == plain.choices[0].message.content
    assert chunks[0].model_extra["alignpro"] == plain.model_extra["alignpro"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake.requests[-1]["stream"] is True


def test_local_target_json_and_emulated_stream(local_serve: RunningServer) -> None:
    c = client(local_serve)
    msgs = [{"role": "user", "content": "Please explain tides"}]
    resp = c.chat.completions.create(model="alignpro", messages=msgs)
    text = resp.choices[0].message.content
    assert text.startswith("Answer:") and resp.model == "alignpro"
    assert resp.model_extra["alignpro"]["original"] == "Please explain tides"
    chunks = list(c.chat.completions.create(model="alignpro", messages=msgs, stream=True))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert streamed.startswith("Answer:") and "alignpro" in chunks[0].model_extra


def test_models_and_health(local_serve: RunningServer) -> None:
    assert [m.id for m in client(local_serve).models.list()] == ["alignpro"]
    health = httpx.get(f"{local_serve.url}/health").json()
    assert health["status"] == "ok" and health["prompter"] == "fake" and health["target"] == "fake"


def test_concurrent_rewrites_are_batched(fake: FakeOpenAIServer) -> None:
    prompter = RecordingPrompter(delay_s=0.05)
    with _serve(FakeTarget(), prompter, max_batch=8, batch_wait_ms=20) as server:
        async def many() -> list[str]:
            async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as c:
                rs = await asyncio.gather(*[c.chat.completions.create(
                    model="alignpro", messages=[{"role": "user", "content": f"question {i}"}]) for i in range(24)])
            return [r.model_extra["alignpro"]["original"] for r in rs]

        assert asyncio.run(many()) == [f"question {i}" for i in range(24)]
        stats = httpx.get(f"{server.url}/health").json()["rewrite_batches"]
    assert sum(prompter.batches) == 24 and max(prompter.batches) <= 8
    assert len(prompter.batches) < 24 and stats["largest_batch"] > 1


def test_no_rewrite_forwards_the_prompt(fake: FakeOpenAIServer) -> None:
    target = make_target(f"openai:fake-model@{fake.base_url}?{FAST}")
    config = ServeConfig(prompter="fake", target="fake", port=0, rewrite=False)
    with run_asgi_in_thread(create_app(config, None, target)) as server:
        resp = client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "é?"}])
    assert resp.model_extra["alignpro"] == {"original": "é?", "rewrite": "é?", "parsed": False, "rewritten": False}
    assert last_user_text(fake.requests[-1]) == "é?"


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("body, needle", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"model": "m"}', "missing required field 'messages'"),
    (b'{"messages": []}', "non-empty list"),
    (b'{"messages": ["hi"]}', "messages[0] must be an object"),
    (b'{"messages": [{"role": "system", "content": "x"}]}', "no message with role 'user'"),
    (b'{"messages": [{"role": "user", "content": 3}]}', "messages[0].content must be a string"),
    (b'{"messages": [{"role": "user", "content": ""}]}', "messages[0].content is empty"),
    (b'{"messages": [{"role": "user", "content": " \\n "}]}', "messages[0].content is empty"),
    (b'{"messages": [{"role": "user", "content": []}]}', "messages[0].content is empty"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "'stream' must be true or false"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": "two"}', "'n' must be 1 for the local target"),
])
def test_bad_requests_are_400_and_serving_goes_on(local_serve: RunningServer, body: bytes, needle: str) -> None:
    r = httpx.post(f"{local_serve.url}/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert needle in r.json()["error"]["message"] and r.json()["error"]["type"] == "invalid_request_error"
    ok = client(local_serve).chat.completions.create(model="m", messages=[{"role": "user", "content": "still?"}])
    assert ok.choices[0].message.content


def test_empty_content_is_400_naming_the_field(local_serve: RunningServer) -> None:
    """Like ``alignpro rewrite ""``, the server refuses an empty prompt; OpenAI's ``param`` names the field."""
    r = httpx.post(f"{local_serve.url}/v1/chat/completions", json={"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": ""}]}]})
    assert r.status_code == 400
    assert r.json() == {"error": {
        "message": "messages[2].content is empty: the last user message is the prompt Align-Pro rewrites, so it "
                   "must hold some text", "type": "invalid_request_error", "param": "messages[2].content",
        "code": None}}


def test_unknown_path_is_404_in_openai_shape(local_serve: RunningServer) -> None:
    r = httpx.get(f"{local_serve.url}/v1/nope")
    assert r.status_code == 404 and "message" in r.json()["error"]


def test_failing_target_is_502_then_recovers(api_serve: RunningServer, fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(fail_first=1000, fail_status=500))
    c = client(api_serve)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=stream)
        assert err.value.status_code == 502 and "failed after 2 retries: HTTP 500" in err.value.message
    fake.reset(Behavior())
    assert c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices


def test_malformed_target_body_is_502(api_serve: RunningServer, fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(malformed=True))
    r = httpx.post(f"{api_serve.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and "malformed response" in r.json()["error"]["message"]


def test_target_client_errors_keep_their_status(api_serve: RunningServer, fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(fail_first=1, fail_status=400))
    r = httpx.post(f"{api_serve.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "refused the request" in r.json()["error"]["message"]


def test_unreachable_target_is_502() -> None:
    target = make_target(f"openai:m@http://127.0.0.1:9/v1?{FAST}")
    with _serve(target) as server:
        r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 502 and "cannot connect" in r.json()["error"]["message"]
        assert httpx.get(f"{server.url}/health").json()["errors"] == {"502": 1}


def test_budget_spent_is_429(fake: FakeOpenAIServer) -> None:
    target = make_target(f"openai:fake-model@{fake.base_url}?{FAST}&max_requests=1")
    with _serve(target) as server:
        c = client(server)
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "one"}])
        with pytest.raises(openai.RateLimitError, match="max_requests=1"):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "two"}])


def test_prompter_failure_is_500_and_serving_goes_on(api_serve: RunningServer) -> None:
    c = client(api_serve)
    with pytest.raises(openai.InternalServerError, match="prompter exploded"):
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "please explode"}])
    assert c.chat.completions.create(model="m", messages=[{"role": "user", "content": "calm"}]).choices


def test_bearer_key_required_when_configured() -> None:
    with _serve(FakeTarget(), api_key="k-123", api_key_env="ALIGNPRO_SERVE_KEY") as server:
        for key in ("wrong", ""):
            with pytest.raises(openai.AuthenticationError, match="ALIGNPRO_SERVE_KEY"):
                client(server, key or "x").chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}])
        assert httpx.get(f"{server.url}/v1/models").status_code == 401
        assert httpx.get(f"{server.url}/health").status_code == 200  # health checks stay open
        ok = client(server, "k-123").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert ok.choices[0].message.content


# ---------------------------------------------------------------------------------------------- config + units
def test_config_refuses_remote_hosts_without_auth() -> None:
    with pytest.raises(ConfigError, match="--api-key-env"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", api_key_env="KEY").host == "0.0.0.0"
    assert ServeConfig(host="0.0.0.0", allow_remote=True).allow_remote
    assert ServeConfig(host="::1").host == "::1" and ServeConfig(host="localhost").host == "localhost"
    cfg = parse_config(ServeConfig, ["--prompter", "fake", "--target", "fake", "--port", "0", "--no-rewrite",
                                     "--max-batch", "4"], prog="alignpro serve")
    assert (cfg.prompter, cfg.port, cfg.rewrite, cfg.max_batch) == ("fake", 0, False, 4)
    with pytest.raises(ConfigError, match="max_batch"):
        ServeConfig(max_batch=0)


def test_missing_key_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from alignpro.serve import main

    monkeypatch.delenv("ALIGNPRO_NO_SUCH_KEY", raising=False)
    with pytest.raises(AlignProError, match="ALIGNPRO_NO_SUCH_KEY"):
        main(["--prompter", "fake", "--target", "fake", "--api-key-env", "ALIGNPRO_NO_SUCH_KEY"])


def test_rewrite_header_is_always_a_valid_header() -> None:
    text = "Où est\r\nla gare? 100% sûr «ok»"
    h = rewrite_header(text)
    assert h[REWRITE_HEADER].isascii() and "\n" not in h[REWRITE_HEADER]
    assert unquote(h[REWRITE_HEADER]) == text
    long = rewrite_header("é" * 5000)
    assert len(long[REWRITE_HEADER]) <= HEADER_LIMIT and long[f"{REWRITE_HEADER}-Truncated"] == "1"
    assert set(unquote(long[REWRITE_HEADER])) == {"é"}  # cut between escapes, never inside one


def test_micro_batcher_keeps_order_and_shares_errors() -> None:
    async def run() -> None:
        seen: list[int] = []

        def double(xs: list[int]) -> list[int]:
            seen.append(len(xs))
            if 13 in xs:
                raise ValueError("unlucky")
            return [2 * x for x in xs]

        b: MicroBatcher[int, int] = MicroBatcher(double, max_batch=4, wait_s=0.02, name="double")
        b.start()
        assert await asyncio.gather(*[b.submit(i) for i in range(10)]) == [2 * i for i in range(10)]
        assert seen == [4, 4, 2]
        results = await asyncio.gather(b.submit(1), b.submit(13), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert await b.submit(5) == 10  # the worker survived
        await b.stop()

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_process(fake: FakeOpenAIServer) -> None:
    """``alignpro serve`` as its own process, in front of the fake target; stopped with SIGTERM."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ALIGNPRO_SERVE_TEST_KEY": "abc"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignpro", "serve", "--prompter", "fake", "--target",
         f"openai:fake-model@{fake.base_url}?{FAST}", "--port", str(port), "--api-key-env",
         "ALIGNPRO_SERVE_TEST_KEY", "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="abc", max_retries=0)
        resp = c.chat.completions.create(model="alignpro", messages=[{"role": "user", "content": "Hi there"}])
        assert resp.choices[0].message.content == f"Answer: {resp.model_extra['alignpro']['rewrite']}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError("alignpro serve did not stop on SIGTERM within 10 s") from None
    assert proc.returncode in (0, -15)  # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught


def test_servers_stop_by_themselves() -> None:
    before = threading.active_count()
    with _serve(FakeTarget()) as server:
        port = server.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    assert threading.active_count() <= before
