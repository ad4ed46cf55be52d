"""Coupled answers (common random numbers): the stream of answer j to x is keyed by (seed, x, j) alone, in every
backend and caller: the fake target, the evaluation's cache, the training role."""

from __future__ import annotations

import hashlib

import pytest

from alignpro.backends.base import GenerationConfig, prompt_key, prompt_keys, stream_seed
from alignpro.backends.fake import FakeReward, FakeTarget
from alignpro.data import PromptRecord


def test_stream_seed_is_a_stable_hash_of_the_three() -> None:
    digest = hashlib.blake2b(b"0\x1fx\x1f0", digest_size=8).digest()
    assert stream_seed(0, "x", 0) == int.from_bytes(digest, "big") >> 1 == 441110014004559888
    assert len({stream_seed(s, k, j) for s in (0, 1) for k in ("x", "y") for j in (0, 1)}) == 8
    assert all(0 <= stream_seed(s, "x", 3) < 2 ** 63 for s in range(50))


def test_prompt_keys_tell_repeats_and_system_prompts_apart() -> None:
    keys = prompt_keys(["a", "b", "a", "a"], [None, None, None, "sys"])
    assert keys == ["a", "b", "a\x00#1", "sys\x00a"]
    assert prompt_key("a", "sys") == keys[3] and prompt_keys(["a", "b"]) == ["a", "b"]


def test_fake_target_answers_by_key_not_by_batch() -> None:
    t = FakeTarget()
    alone = t.answer(["what is rain"], n=3, seed=2, keys=["k"])[0]
    batch = t.answer(["name a cat", "why is the sky blue", "what is rain"], n=3, seed=2, keys=["a", "b", "k"])
    assert batch[2] == alone
    # another x′ under the same key draws the same uniforms: the words both share are kept or dropped alike
    longer = t.answer(["what is rain today"], n=3, seed=2, keys=["k"])[0]
    kept = lambda answers: [[w for w in a.text.split() if w in ("what", "is", "rain")] for a in answers]  # noqa: E731
    assert kept(longer) == kept(alone) and len(set(map(tuple, kept(alone)))) > 1
    with pytest.raises(ValueError, match="keys"):
        t.answer(["a", "b"], keys=["k"])


def test_cached_target_stores_keyed_answers_by_stream(tmp_path) -> None:
    from alignpro.diskcache import DiskCache
    from alignpro.evaluate.cache import CachedTarget, ModelPool

    loads = []
    pool = ModelPool(lambda role, spec: loads.append(spec) or FakeTarget())
    target = CachedTarget(DiskCache(tmp_path / "c.sqlite"), pool, "fake", GenerationConfig(), "no_ft", batch_size=2)
    prompts, keys = ["what is rain", "name a cat", "why is the sky blue"], ["k0", "k1", "k2"]
    got = target.answer(prompts, n=2, seed=7, keys=keys)
    assert got == FakeTarget().answer(prompts, n=2, seed=7, keys=keys)  # seed and keys reach the backend
    assert target.answer(prompts[2:], n=2, seed=7, keys=keys[2:]) == got[2:]  # served from the cache
    assert loads == ["fake"]


def test_prompter_role_couples_the_answers_to_rewrites_of_one_prompt() -> None:
    from alignpro.templates import load_rewrite_template
    from alignpro.train.roles import PrompterRole

    class Keyed(FakeTarget):
        seen: list = []

        def answer(self, prompts, **kw):
            self.seen.append(kw["keys"])
            return super().answer(prompts, **kw)

    role = PrompterRole(str, load_rewrite_template("rewrite-default"), Keyed(), FakeReward(), m=2)
    records = [PromptRecord("a", "explain tides"), PromptRecord("a", "explain tides"),
               PromptRecord("b", "explain tides", system="You are a poet.")]
    scored = role.score(records, ["Explain tides.", "Explain tides.", "Explain tides."], seed=4)
    assert Keyed.seen == [["explain tides", "explain tides", "You are a poet.\x00explain tides"]]
    assert scored.scores[0] == scored.scores[1]  # the same x′ of the same x: the same answers
