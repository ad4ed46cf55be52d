"""Pairwise judges: verdict parsing, both-order combination, the reward judge, a local LLM judge (scripted LM),
and the OpenAI-compatible judge over real HTTP against a local server (429, malformed reply, 401, 5xx)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from alignpro.backends.base import GenerationConfig
from alignpro.errors import AlignProError, ConfigError
from alignpro.evaluate.config import JudgeSpec, parse_judge_spec
from alignpro.evaluate.judges import (Judgment, LLMJudge, OpenAIJudge, PairwiseJudge, RewardJudge, Verdict,
                                      combine_orders, load_judge_template, parse_choice)
from alignpro.metrics import reward_win_rate, win_rate_from_outcomes

# ---------------------------------------------------------------------------------------------------------------
# Parsing and combining
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, choice", [
    ("[[A]]", "A"), ("Assistant B is more helpful. [[B]]", "B"), ("[[C]]", "tie"), ("[[ A ]]", "A"),
    ("[[A]] and again [[A]]", "A"), ("[[A]] or [[B]]", "invalid"), ("A is better", "invalid"), ("", "invalid"),
    ("[A]", "invalid"), ("[[D]]", "invalid"),
])
def test_parse_choice(text: str, choice: str) -> None:
    assert parse_choice(text) == choice


@pytest.mark.parametrize("ab, ba, winner", [
    ("A", "B", "A"),  # A first: A better; B first: the second (A) better -> A in both orders
    ("B", "A", "B"),
    ("A", "A", "tie"),  # always the first answer: position bias -> tie
    ("B", "B", "tie"),
    ("tie", "tie", "tie"),
    ("A", "tie", "tie"),
    ("A", "invalid", "tie"),
    ("invalid", "invalid", "tie"),
])
def test_combine_orders_counts_disagreement_as_tie(ab: str, ba: str, winner: str) -> None:
    v = combine_orders(Judgment(ab), Judgment(ba))
    assert v.winner == winner
    assert v.invalid == (ab == "invalid") + (ba == "invalid")
    assert v.outcome == {"A": 1.0, "B": 0.0, "tie": 0.5}[winner]


class _Scripted(PairwiseJudge):
    """Prefers the answer containing 'good'; with position_bias, always the first answer."""

    def __init__(self, position_bias: bool = False) -> None:
        self.position_bias, self.calls = position_bias, 0

    def judge_ordered(self, prompts, firsts, seconds):
        self.calls += 1
        if self.position_bias:
            return [Judgment("A") for _ in prompts]
        return [Judgment("A" if "good" in a else "B" if "good" in b else "tie") for a, b in zip(firsts, seconds)]


def test_judge_shows_both_orders_and_position_bias_gives_ties() -> None:
    prompts, a, b = ["q1", "q2", "q3"], ["good", "bad", "meh"], ["bad", "good", "meh"]
    fair = _Scripted()
    verdicts = fair.judge(prompts, a, b)
    assert fair.calls == 2
    assert [v.winner for v in verdicts] == ["A", "B", "tie"]
    assert all(v.consistent for v in verdicts)
    biased = _Scripted(position_bias=True).judge(prompts, a, b)
    assert [v.winner for v in biased] == ["tie"] * 3
    assert not any(v.consistent for v in biased)


def test_reward_judge_matches_reward_win_rate() -> None:
    rng = np.random.default_rng(0)
    ra, rb = rng.random(40), rng.random(40)
    rb[:5] = ra[:5] + 0.005  # within the tie margin

    class Table:
        name, r_max = "table", None

        def score(self, prompts, answers):
            return [float(ra[int(y[1:])]) if y[0] == "a" else float(rb[int(y[1:])]) for y in answers]

    prompts = [f"x{i}" for i in range(40)]
    judge = RewardJudge(Table(), tie_margin=0.01)
    verdicts = judge.judge(prompts, [f"a{i}" for i in range(40)], [f"b{i}" for i in range(40)])
    ours = win_rate_from_outcomes([v.outcome for v in verdicts], arm="arm", baseline="base", judge=judge.name)
    ref = reward_win_rate(ra, rb, arm="arm", baseline="base", tie_margin=0.01)
    assert ours == ref
    assert not judge.independent and judge.name == "reward(tie_margin=0.01)"


# ---------------------------------------------------------------------------------------------------------------
# Template and specs
# ---------------------------------------------------------------------------------------------------------------


def test_builtin_template_has_the_papers_criteria_and_placeholders() -> None:
    tpl = load_judge_template()
    for word in ("helpfulness", "harmlessness", "relevance", "accuracy", "depth", "creativity", "level of detail",
                 "[[A]]", "[[B]]", "[[C]]"):
        assert word in tpl.system
    msgs = tpl.messages("Q {braces}?", "ans A", "ans B")
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
    assert "Q {braces}?" in msgs[1]["content"] and msgs[1]["content"].index("ans A") < msgs[1]["content"].index("ans B")


def test_custom_template_must_use_the_three_placeholders(tmp_path: Path) -> None:
    bad = tmp_path / "judge.yaml"
    bad.write_text("system: judge\nuser: '{question} {answer_a}'\n")
    with pytest.raises(AlignProError, match="answer_b"):
        load_judge_template(str(bad))
    with pytest.raises(AlignProError, match="builtin judge templates"):
        load_judge_template("no-such-template")


def test_parse_judge_spec() -> None:
    assert parse_judge_spec("reward") == JudgeSpec("reward")
    assert parse_judge_spec("llm:smollm2") == JudgeSpec("llm", "smollm2")
    assert parse_judge_spec("llm:hf:Qwen/Qwen2.5-7B-Instruct").model == "hf:Qwen/Qwen2.5-7B-Instruct"
    s = parse_judge_spec("openai:gpt-4o@https://api.openai.com/v1/")
    assert (s.model, s.base_url, str(s)) == ("gpt-4o", "https://api.openai.com/v1",
                                             "openai:gpt-4o@https://api.openai.com/v1")
    for bad in ("gpt4", "openai:gpt-4o", "openai:@http://x", "llm:", "llm:nope:x", "llm:fake", "openai:m@ftp://x"):
        with pytest.raises(ConfigError):
            parse_judge_spec(bad)


# ---------------------------------------------------------------------------------------------------------------
# LLMJudge with a scripted LM (the real SmolLM2 judge runs in tests/test_evaluate.py)
# ---------------------------------------------------------------------------------------------------------------


class _ScriptedLM:
    """Renders like HFCausalLM (chat_prompt per conversation) and 'generates' from the rendered text."""

    def __init__(self, replies) -> None:
        self.replies, self.rendered, self.gens = replies, [], []

    def chat_prompt(self, messages):
        return "|".join(m["content"] for m in messages) + "|assistant:"

    def sample(self, conversations, gen, seed=None, prefill=""):
        texts = [self.chat_prompt(c) + prefill for c in conversations]
        self.rendered += texts
        self.gens.append(gen)
        return SimpleNamespace(texts=[self.replies(t) for t in texts])


def test_llm_judge_prefills_parses_and_counts_invalid() -> None:
    def replies(text: str) -> str:
        a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
        return "A]]" if "good" in a else "oops"

    lm = _ScriptedLM(replies)
    judge = LLMJudge(lm, load_judge_template(), max_new_tokens=5, prefill="Verdict: [[", name="llm:scripted")
    verdicts = judge.judge(["q1", "q2"], ["good answer", "bad"], ["bad", "good answer"])
    assert all(t.endswith("|assistant:Verdict: [[") for t in lm.rendered)  # the prefill starts the reply
    assert "chat_prompt" not in vars(lm)  # the prefill is an argument of sample(), not a patched renderer
    assert all(g.do_sample is False and g.max_new_tokens == 5 for g in lm.gens)  # greedy
    # pair 1: A first -> "A" ; B first -> "oops" (invalid) => tie. pair 2 likewise mirrored.
    assert [v.winner for v in verdicts] == ["tie", "tie"]
    assert [v.invalid for v in verdicts] == [1, 1]
    assert judge.usage.extra["invalid"] == 2


# ---------------------------------------------------------------------------------------------------------------
# OpenAIJudge over real HTTP
# ---------------------------------------------------------------------------------------------------------------


class FakeOpenAIServer:
    """A local OpenAI-compatible /v1/chat/completions. It answers the scripted ``failures`` first (each a
    (status, body) pair, a str body sent as is, or None for a normal reply), then verdicts: [[A]] when assistant A's answer contains
    'GOOD', [[B]] when B's does, [[C]] otherwise."""

    def __init__(self, failures=(), *, always=None, retry_after: str = "0") -> None:
        self.failures, self.always, self.retry_after = list(failures), always, retry_after
        self.requests: list[dict] = []
        self.auth: list[str] = []
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization", ""))
                    scripted = server.always or (server.failures.pop(0) if server.failures else None)
                if self.path != "/v1/chat/completions":
                    scripted = (404, {"error": {"message": f"no route {self.path}"}})
                status, payload = scripted or (200, server.completion(body))
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", server.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def completion(body: dict) -> dict:
        user = body["messages"][-1]["content"]
        a = re.search(r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End", user, re.S).group(1)
        b = re.search(r"\[The Start of Assistant B's Answer\]\n(.*?)\n\[The End", user, re.S).group(1)
        verdict = "[[A]]" if "GOOD" in a else "[[B]]" if "GOOD" in b else "[[C]]"
        return {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"Both are fine. {verdict}"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


RATE_LIMITED = (429, {"error": {"message": "Rate limit reached", "type": "requests"}})
MALFORMED = (200, "this is not a chat completion")


def _openai_judge(url: str, **kw) -> OpenAIJudge:
    sleeps: list[float] = []
    judge = OpenAIJudge("judge-model", url, "sk-test", load_judge_template(), max_tokens=64, concurrency=1,
                        max_retries=kw.pop("max_retries", 3), backoff_s=0.01, sleep=sleeps.append, **kw)
    judge.sleeps = sleeps  # type: ignore[attr-defined]
    return judge


def test_openai_judge_over_http_retries_429() -> None:
    with FakeOpenAIServer([RATE_LIMITED]) as server:  # the first request is rate limited, then normal replies
        judge = _openai_judge(server.url)
        verdicts = judge.judge(["q1", "q3"], ["GOOD one", "same"], ["meh", "same"])
    # order (A, B): q1 -> [[A]], q3 -> [[C]] (whichever got the 429 was retried); (B, A): q1 -> [[B]] (= A), q3 -> [[C]]
    assert [v.winner for v in verdicts] == ["A", "tie"] and [v.invalid for v in verdicts] == [0, 0]
    assert judge.usage.retries == 1 and judge.usage.extra["rate_limited"] == 1
    assert judge.usage.calls == 5 and len(server.requests) == 5  # 4 judgments + 1 retry
    # Retry-After: 0 is a minimum the backoff already exceeds: the backoff (0.01 s, jittered into [0.005, 0.01])
    assert len(judge.sleeps) == 1 and 0.005 <= judge.sleeps[0] <= 0.01
    req = server.requests[0]
    assert req["model"] == "judge-model" and req["temperature"] == 0 and req["max_tokens"] == 64
    assert req["messages"][0]["role"] == "system" and "harmlessness" in req["messages"][0]["content"]
    assert set(server.auth) == {"Bearer sk-test"}


def test_openai_judge_honours_retry_after_as_a_minimum() -> None:
    """The server's Retry-After is the least the judge waits (the target's rule), even above its own backoff."""
    with FakeOpenAIServer([RATE_LIMITED, RATE_LIMITED], retry_after="0.5") as server:
        judge = _openai_judge(server.url)
        (j,) = judge.judge_ordered(["q"], ["GOOD"], ["bad"])
    assert j.choice == "A" and len(server.requests) == 3
    assert judge.sleeps == [0.5, 0.5]  # not min(backoff, Retry-After) = 0.01, 0.02


def test_openai_judge_counts_a_malformed_reply_as_invalid_without_retrying() -> None:
    with FakeOpenAIServer([MALFORMED]) as server:  # (A, B) gets the malformed body, (B, A) a normal reply
        judge = _openai_judge(server.url)
        (v,) = judge.judge(["q2"], ["meh"], ["GOOD two"])
    assert v.ab == "invalid" and v.ba == "B" and v.winner == "tie" and v.invalid == 1
    assert judge.usage.extra["malformed"] == 1 and judge.usage.retries == 0
    assert judge.usage.calls == 2 and len(server.requests) == 2


@pytest.mark.parametrize("payload", [
    {"id": "x", "object": "chat.completion"},  # no choices
    {"choices": []},
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]},
])
def test_openai_judge_malformed_json_replies_are_invalid(payload: dict) -> None:
    with FakeOpenAIServer([(200, payload)]) as server:
        judge = _openai_judge(server.url)
        (j,) = judge.judge_ordered(["q"], ["GOOD"], ["bad"])
    assert j.choice == "invalid" and j.raw.startswith("<malformed reply")
    assert judge.usage.extra["malformed"] == 1


def test_openai_judge_gives_up_after_bounded_retries() -> None:
    with FakeOpenAIServer(always=(503, {"error": {"message": "overloaded"}})) as server:
        judge = _openai_judge(server.url, max_retries=2)
        with pytest.raises(AlignProError, match="judge 'openai:judge-model@.*' failed after 2 retries: HTTP 503"):
            judge.judge_ordered(["q"], ["a"], ["b"])
    assert len(server.requests) == 3
    # exponential backoff with jitter: 0.01 then 0.02, each scaled into [0.5, 1] of itself
    assert len(judge.sleeps) == 2 and 0.005 <= judge.sleeps[0] <= 0.01 and 0.01 <= judge.sleeps[1] <= 0.02


def test_openai_judge_stops_on_an_auth_error_with_the_servers_message() -> None:
    with FakeOpenAIServer(always=(401, {"error": {"message": "Incorrect API key provided"}})) as server:
        judge = _openai_judge(server.url)
        with pytest.raises(AlignProError, match="HTTP 401.*Incorrect API key"):
            judge.judge_ordered(["q"], ["a"], ["b"])
    assert len(server.requests) == 1  # not retried


def test_openai_judge_connection_refused_is_retried_then_reported() -> None:
    with FakeOpenAIServer() as server:
        url = server.url
    judge = _openai_judge(url, max_retries=1)  # the server is gone
    with pytest.raises(AlignProError, match="failed after 1 retries: cannot connect"):
        judge.judge_ordered(["q"], ["a"], ["b"])
    assert judge.usage.extra["connection_errors"] == 2


def test_verdict_is_frozen() -> None:
    v = Verdict("A", "A", "A")
    with pytest.raises(Exception):
        v.winner = "B"  # type: ignore[misc]


@pytest.mark.model
def test_llm_judge_prefill_hook_samples_what_the_patched_renderer_did(smollm2_path) -> None:
    """``sample(..., prefill=)`` replaced patching ``lm.chat_prompt``: the same judge replies, token for token."""
    from alignpro.backends.hf import HFCausalLM

    lm = HFCausalLM(smollm2_path, batch_size=4)
    template, prefill = load_judge_template(), "My final verdict is [["
    convs = [template.messages(q, a, b) for q, a, b in [("What is 2+2?", "4", "5"), ("Say hi", "hi", "Hello!")]]
    gen = GenerationConfig(max_new_tokens=6, do_sample=False)
    hooked = lm.sample(convs, gen, seed=0, prefill=prefill)
    render = lm.chat_prompt
    lm.chat_prompt = lambda messages: render(messages) + prefill  # the former mechanism
    try:
        patched = lm.sample(convs, gen, seed=0)
    finally:
        del lm.chat_prompt
    assert hooked.token_ids == patched.token_ids and hooked.texts == patched.texts
