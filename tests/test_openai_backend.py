"""The ``openai:`` target against a real local HTTP server: retries, budget, cache, concurrency, specs."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
from tests.fake_openai_server import Behavior, FakeOpenAIServer, last_user_text

from alignpro.backends.base import PAPER_ANSWER_CONFIG, GenerationConfig
from alignpro.backends.fake import FakePrompter, FakeReward
from alignpro.backends.openai_backend import (
    AnswerCache,
    BudgetExceeded,
    OpenAIOptions,
    OpenAITarget,
    TargetError,
    parse_openai_ref,
)
from alignpro.errors import AlignProError
from alignpro.specs import make_prompter, make_target, parse_model_spec

FAST = "no_key=true&cache=off&backoff_s=0.01&max_backoff_s=0.05"


def target(fake: FakeOpenAIServer, options: str = "", gen: GenerationConfig | None = None) -> OpenAITarget:
    """An ``openai:`` target on the fake; ``options`` (``a=1&b=2``) override the fast test defaults."""
    merged = dict(kv.split("=", 1) for kv in FAST.split("&"))
    merged.update(kv.split("=", 1) for kv in options.split("&") if kv)
    query = "&".join(f"{k}={v}" for k, v in merged.items())
    t = make_target(f"openai:fake-model@{fake.base_url}?{query}", gen)
    assert isinstance(t, OpenAITarget)
    return t


# ---------------------------------------------------------------------------------------------- specs
def test_spec_forms_parse() -> None:
    ms = parse_model_spec("openai:gpt-4o-mini@https://api.openai.com/v1")
    assert (ms.kind, ms.ref) == ("openai", "gpt-4o-mini@https://api.openai.com/v1")
    model, url, opts = parse_openai_ref("org/Model-7B@http://127.0.0.1:8001/v1/?no_key=true&concurrency=3")
    assert (model, url, opts.no_key, opts.concurrency) == ("org/Model-7B", "http://127.0.0.1:8001/v1", True, 3)
    assert parse_model_spec("vllm:Qwen/Qwen2.5-0.5B-Instruct").kind == "vllm"
    assert parse_model_spec("gguf:/models/a.gguf?n_threads=2").kind == "gguf"


@pytest.mark.parametrize("spec, needle", [
    ("openai:gpt-4o-mini", "openai:<model>@<base_url>"),
    ("openai:@http://x/v1", "openai:<model>@<base_url>"),
    ("openai:m@ftp://x/v1", "openai:<model>@<base_url>"),
    ("openai:m@http://x/v1?concurrency=0", "'concurrency' must be >= 1"),
    ("openai:m@http://x/v1?backoff_s=-0.5", "option 'backoff_s' must be >= 0, got -0.5"),
    ("openai:m@http://x/v1?concurrency=many", "'concurrency' has invalid value 'many'"),
    ("openai:m@http://x/v1?colour=red", "valid settings: ['backoff_s'"),
    ("openai:m@http://x/v1?no_key=perhaps", "must be true or false"),
    ("openai:m@http://x/v1?cache=off&cache=auto", "given twice"),
    ("vllm:", "valid forms"),
    ("vllm:m?gpu_memory_utilization=2", "'gpu_memory_utilization' must be in (0, 1]"),
    ("gguf:a.gguf?n_ctx=-1", "'n_ctx' must be >= 0"),
    ("gguf:a.gguf?n_gpu_layers=-2", "option 'n_gpu_layers' must be >= 0, got -2"),
])
def test_bad_specs_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(AlignProError) as err:
        parse_model_spec(spec)
    assert needle in str(err.value)


def test_target_only_kinds_refused_as_prompter() -> None:
    with pytest.raises(AlignProError, match="can only be a target"):
        make_prompter("openai:m@http://127.0.0.1:9/v1?no_key=true")


def test_missing_key_names_the_variable(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALIGNPRO_TEST_KEY", raising=False)
    with pytest.raises(AlignProError, match="ALIGNPRO_TEST_KEY") as err:
        make_target(f"openai:fake-model@{fake.base_url}?key_env=ALIGNPRO_TEST_KEY")
    assert "no_key=true" in str(err.value)
    monkeypatch.setenv("ALIGNPRO_TEST_KEY", "s3cret")
    fake.reset(Behavior(require_key="s3cret"))
    t = make_target(f"openai:fake-model@{fake.base_url}?key_env=ALIGNPRO_TEST_KEY&cache=off")
    assert t.answer(["hi"])[0][0].text == "Answer: hi"
    assert fake.request_headers[0]["authorization"] == "Bearer s3cret"


# ---------------------------------------------------------------------------------------------- answers
def test_keyed_answers_send_their_streams_seed(fake: FakeOpenAIServer) -> None:
    """keys: answer j to a key is requested with the same seed whatever the prompt shown or the batch."""
    t = target(fake, "cache=off")
    t.answer(["What is rice?"], n=2, seed=5, keys=["k"])
    t.answer(["Name a fruit.", "What is rice? Be brief."], n=2, seed=5, keys=["other", "k"])
    seeds = {(last_user_text(r), r["seed"]) for r in fake.requests}
    alone = sorted(s for p, s in seeds if p == "What is rice?")
    assert len(alone) == 2 and sorted(s for p, s in seeds if p == "What is rice? Be brief.") == alone
    assert not set(alone) & {s for p, s in seeds if p == "Name a fruit."}


def test_answer_shape_systems_seeds_and_sampling_params(fake: FakeOpenAIServer) -> None:
    t = target(fake)
    rows = t.answer(["What is rice?", "Why is the sky blue?"], n=3, seed=5, systems=["Be brief.", None])
    assert [[a.text for a in row] for row in rows] == [["Answer: What is rice?"] * 3,
                                                      ["Answer: Why is the sky blue?"] * 3]
    assert all(a.n_tokens > 0 for row in rows for a in row)
    reqs = fake.requests
    assert len(reqs) == 6
    first = [r for r in reqs if last_user_text(r) == "What is rice?"]
    assert first[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert all(r["messages"][0]["role"] == "user" for r in reqs if last_user_text(r) != "What is rice?")
    assert len({r["seed"] for r in first}) == 3  # n answers are n different draws
    body = reqs[0]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == (
        "fake-model", 1.5, 0.6, PAPER_ANSWER_CONFIG.max_new_tokens)  # the one answer default
    assert "top_k" not in body  # OpenAI's own API rejects it
    assert t.usage.calls == 6 and t.usage.retries == 0 and t.usage.generated_tokens > 0


def test_send_top_k_and_greedy_chat(fake: FakeOpenAIServer) -> None:
    t = target(fake, "send_top_k=true")
    t.answer(["a"])
    assert fake.requests[-1]["top_k"] == 20
    texts = t.chat([[{"role": "user", "content": "judge this"}]], GenerationConfig(do_sample=False))
    assert texts == ["Answer: judge this"]
    assert fake.requests[-1]["temperature"] == 0.0 and "top_k" not in fake.requests[-1]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_are_counted(fake: FakeOpenAIServer, status: int) -> None:
    fake.reset(Behavior(fail_first=2, fail_status=status))
    t = target(fake)
    assert t.answer(["hello"])[0][0].text == "Answer: hello"
    assert (t.usage.calls, t.usage.retries, t.usage.extra["failed_requests"]) == (3, 2, 2)


def test_retry_after_is_honoured(fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(fail_first=1, fail_status=429, retry_after_s=0.3))
    t = target(fake, "max_backoff_s=1")
    start = time.perf_counter()
    t.answer(["x"])
    assert time.perf_counter() - start >= 0.29 and t.usage.retries == 1


def test_gives_up_after_max_retries(fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(fail_first=1000, fail_status=503))
    t = target(fake, "max_retries=2")
    with pytest.raises(TargetError, match="after 2 retries: HTTP 503") as err:
        t.answer(["x"])
    assert err.value.status == 503 and t.usage.calls == 3 and t.usage.retries == 2


def test_client_errors_are_not_retried(fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(fail_first=1000, fail_status=400))
    t = target(fake)
    with pytest.raises(TargetError, match="refused the request") as err:
        t.answer(["x"])
    assert err.value.status == 400 and t.usage.calls == 1 and t.usage.retries == 0


@pytest.mark.parametrize("behavior", [Behavior(malformed=True), Behavior(missing_choices=True)])
def test_malformed_bodies_are_retried_then_reported(fake: FakeOpenAIServer, behavior: Behavior) -> None:
    fake.reset(behavior)
    t = target(fake, "max_retries=1")
    with pytest.raises(TargetError, match="malformed response"):
        t.answer(["x"])
    assert t.usage.retries == 1 and len(fake.requests) == 2


def test_timeouts_are_retried(fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(delay_s=0.5))
    t = target(fake, "timeout_s=0.1&max_retries=1")
    with pytest.raises(TargetError, match="timed out"):
        t.answer(["x"])
    assert t.usage.retries == 1


def test_unreachable_server() -> None:
    t = make_target(f"openai:m@http://127.0.0.1:9/v1?{FAST}&max_retries=1")
    with pytest.raises(TargetError, match="cannot connect to http://127.0.0.1:9/v1"):
        t.answer(["x"])


def test_concurrency_limit_is_respected(fake: FakeOpenAIServer) -> None:
    fake.reset(Behavior(delay_s=0.1))
    t = target(fake, "concurrency=3")
    start = time.perf_counter()
    t.answer([f"q{i}" for i in range(9)])
    assert fake.max_in_flight == 3
    assert time.perf_counter() - start >= 0.29  # 9 requests, 3 at a time, 0.1 s each


# ---------------------------------------------------------------------------------------------- budget + cache
def test_budget_stops_the_run_and_the_cache_resumes_it(fake: FakeOpenAIServer, tmp_path) -> None:
    prompts = [f"prompt {i}" for i in range(6)]
    t = target(fake, f"cache={tmp_path}&max_requests=3&concurrency=1")
    with pytest.raises(BudgetExceeded, match="max_requests=3") as err:
        t.answer(prompts, seed=11)
    assert (err.value.setting_name, err.value.limit, err.value.used) == ("max_requests", 3, 3)
    assert len(fake.requests) == 3 and t.usage.calls == 3
    resumed = target(fake, f"cache={tmp_path}&concurrency=1")  # the next run, with more budget
    rows = resumed.answer(prompts, seed=11)
    assert [r[0].text for r in rows] == [f"Answer: {p}" for p in prompts]
    assert len(fake.requests) == 6  # only the 3 unanswered prompts were paid for
    assert resumed.usage.extra["cache_hits"] == 3 and resumed.usage.calls == 3


def test_token_budget(fake: FakeOpenAIServer) -> None:
    t = target(fake, "max_tokens=10&concurrency=1")
    with pytest.raises(BudgetExceeded, match="max_tokens=10"):
        t.answer(["one two three four"] * 5)  # 4 prompt + 5 completion tokens each
    assert t.usage.calls == 2


def test_cache_hits_on_the_second_run(fake: FakeOpenAIServer, tmp_path) -> None:
    first = target(fake, f"cache={tmp_path}").answer(["a", "b"], n=2, seed=3)
    again = target(fake, f"cache={tmp_path}")
    assert again.answer(["a", "b"], n=2, seed=3) == first
    assert len(fake.requests) == 4 and again.usage.calls == 0 and again.usage.extra["cache_hits"] == 4
    again.answer(["a"], n=1, seed=4)  # another seed is another sample
    assert len(fake.requests) == 5
    again.answer(["a"], n=1)  # unseeded requests are fresh samples: never cached by default
    again.answer(["a"], n=1)
    assert len(fake.requests) == 7
    assert len(AnswerCache(tmp_path)) == 5  # one row per seeded answer, in the one sqlite file
    assert not list(tmp_path.rglob("*.json"))


def test_cache_key_covers_model_messages_config_sample_seed() -> None:
    msgs = [{"role": "user", "content": "x"}]
    base = AnswerCache.key("m", msgs, {"temperature": 1.5}, 0, 1)
    variants = [AnswerCache.key("m2", msgs, {"temperature": 1.5}, 0, 1),
                AnswerCache.key("m", [{"role": "user", "content": "y"}], {"temperature": 1.5}, 0, 1),
                AnswerCache.key("m", msgs, {"temperature": 1.0}, 0, 1),
                AnswerCache.key("m", msgs, {"temperature": 1.5}, 1, 1),
                AnswerCache.key("m", msgs, {"temperature": 1.5}, 0, 2)]
    assert len({base, *variants}) == 6


# ---------------------------------------------------------------------------------------------- callers
def test_composed_rollout_calls_the_api_for_rewards(fake: FakeOpenAIServer) -> None:
    """Training's reward step (eq 3 sampled) works unchanged with an ``openai:`` target."""
    from alignpro.method import composed_rollout

    t = target(fake)
    roll = composed_rollout(["How do I boil an egg?", "Plan a trip"], FakePrompter(), t, FakeReward(),
                            k=2, m=2, identity_prior=0.25, seed=0)
    assert roll.rewards.shape == (2, 3, 2) and all(math.isfinite(v) for v in roll.rewards.ravel())
    assert len(fake.requests) == 2 * 3 * 2


def test_sync_api_works_inside_a_running_event_loop(fake: FakeOpenAIServer) -> None:
    t = target(fake)

    async def inside() -> str:
        sync = t.answer(["sync"])[0][0].text
        direct = await t.acomplete([{"role": "user", "content": "async"}])
        return f"{sync} | {direct.text}"

    assert asyncio.run(inside()) == "Answer: sync | Answer: async"
    t.close()
    assert t.answer(["after close"])[0][0].text == "Answer: after close"


def test_cli_answer_with_an_openai_target(fake: FakeOpenAIServer, capsys: pytest.CaptureFixture) -> None:
    from alignpro.cli import main

    rc = main(["answer", "Where is the station?", "--target", f"openai:fake-model@{fake.base_url}?{FAST}",
               "--prompter", "fake", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == f"Answer: {out['rewrite']}"  # the fake target answered the fake prompter's rewrite
    assert last_user_text(fake.requests[-1]) == out["rewrite"]


def test_options_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/deployment.md's option table lists every option, and its defaults, read by the spec parser, are the
    defaults; a spec without options reads the key from the documented variable."""
    import dataclasses
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text()
    table = doc.split("### `openai:` options", 1)[1].split("\n\n", 3)[2]  # the paragraph that is the table
    documented: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        names, default = row.split("|")[1:3]
        documented.update(zip(re.findall(r"`([^`]+)`", names), re.findall(r"`([^`]+)`", default), strict=True))
    assert set(documented) == {f.name for f in dataclasses.fields(OpenAIOptions)}
    _, _, parsed = parse_openai_ref("m@http://127.0.0.1:9/v1?" + "&".join(f"{k}={v}" for k, v in documented.items()))
    assert parsed == OpenAIOptions()
    monkeypatch.delenv(documented["key_env"], raising=False)
    with pytest.raises(AlignProError, match=documented["key_env"]):
        make_target("openai:m@http://127.0.0.1:9/v1")
