"""Deterministic fakes of the three backends, so the whole pipeline runs in tests without a model.

The fakes are a tiny world where prompt optimisation provably helps: the fake target answers more warmly when the
prompt asks for it ("please" / "kind"), and the fake reward pays for words shared with the original prompt and
for warm words. Everything is a pure function of (seed, inputs).
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

from alignpro.backends.base import Answer, Rewrite, RewriteSet, check_keys, stream_seed

WARM_WORDS = ("kind", "glad", "happy", "great", "helpful", "thanks")
_SUFFIXES = ("", " Please be kind and helpful.", " Answer briefly.", " Tell me about the weather instead.")


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


class FakePrompter:
    """Rewrites x into one of four fixed variants (identity, warm, terse, off-topic) with fixed log-probs."""

    name = "fake"
    LOGPROBS = (-2.0, -3.0, -2.5, -4.0)

    def __init__(self, suffixes: Sequence[str] = _SUFFIXES) -> None:
        self.suffixes = tuple(suffixes)

    def rewrite(self, prompts: Sequence[str], k: int, *, seed: int | None = None) -> list[RewriteSet]:
        sets = []
        for i, p in enumerate(prompts):
            rng = _rng("prompter", seed, i, p)
            rws = []
            for _ in range(k):
                j = rng.randrange(len(self.suffixes))
                text = (p.rstrip() + self.suffixes[j]).strip() if j != 3 else "Tell me about the weather."
                lp = self.LOGPROBS[j % len(self.LOGPROBS)]
                rws.append(Rewrite(text=text, raw=text, logprob=lp, token_logprobs=(lp / 2, lp / 2)))
            sets.append(RewriteSet(p, tuple(rws)))
        return sets


class FakeTarget:
    """Echoes the prompt's content words; adds warm words when the prompt says 'please' or 'kind'. With ``keys``,
    answer j to prompt i draws from the stream (seed, keys[i], j) alone: the same draws for any prompt shown, in
    any batch, at any position (common random numbers)."""

    name = "fake"

    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        check_keys(prompts, keys)
        out = []
        for i, p in enumerate(prompts):
            words = [w.strip("?.!,").lower() for w in p.split()]
            warm = any(w in ("please", "kind") for w in words)
            row = []
            for j in range(n):
                rng = _rng("target", seed, i, j, p) if keys is None else _rng(stream_seed(seed or 0, keys[i], j))
                picked = [w for w in words if w and rng.random() < 0.7]
                extra = rng.sample(WARM_WORDS, 2) if warm else rng.sample(["ok", "fine", "so"], 1)
                text = " ".join(["Answer:"] + picked + extra)
                row.append(Answer(text, len(text.split())))
            out.append(row)
        return out


class FakeReward:
    """r(x, y) = 0.5·(share of x's words found in y) + 0.5·min(1, warm words in y / 2) ∈ [0, 1]."""

    name = "fake"
    r_max = 1.0

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        scores = []
        for x, y in zip(prompts, answers, strict=True):
            xw = {w.strip("?.!,").lower() for w in x.split()} - {""}
            yw = [w.lower() for w in y.split()]
            overlap = len(xw & set(yw)) / max(1, len(xw))
            warm = min(1.0, sum(w in WARM_WORDS for w in yw) / 2)
            scores.append(0.5 * overlap + 0.5 * warm)
        return scores
