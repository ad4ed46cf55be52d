"""A content-addressed disk cache of every generation, score and judgment, and backends that go through it.

Key = sha256 of the canonical JSON of (stage, model spec and fingerprint, inputs, generation config, seed,
sample index). Values are JSON. The cache is one sqlite file (:class:`alignpro.diskcache.DiskCache`, the
cache the API targets use too); work is saved one backend call (≤ batch_size items) at a time, so an interrupted
evaluation loses at most the call in flight, and a second identical run makes no backend calls at all (models are loaded only on a cache miss, see :class:`ModelPool`).

The cached backends implement the protocols of :mod:`alignpro.backends.base`, so :func:`alignpro.method.
composed_rollout` runs on them unchanged.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from typing import Any, Callable, Sequence

from alignpro.arms import chunk_bounds
from alignpro.backends.base import Answer, GenerationConfig, Rewrite, RewriteSet
from alignpro.diskcache import DiskCache, cache_key
from alignpro.evaluate.judges import Judgment, PairwiseJudge


# ---------------------------------------------------------------------------------------------------------------
# Models, loaded on first use
# ---------------------------------------------------------------------------------------------------------------

#: (role, spec) -> backend; roles: "prompter", "target", "reward", "judge_lm"
Loader = Callable[[str, str], Any]


class ModelPool:
    """Backends loaded lazily by (role, spec) and dropped when a stage no longer needs them (GPU memory)."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.loaded: dict[tuple[str, str], Any] = {}
        self.loads: Counter[tuple[str, str]] = Counter()

    def get(self, role: str, spec: str) -> Any:
        key = (role, spec)
        if key not in self.loaded:
            self.loaded[key] = self.loader(role, spec)
            self.loads[key] += 1
        return self.loaded[key]

    def retain(self, keep: set[tuple[str, str]]) -> None:
        """Drop every loaded backend not in ``keep``."""
        dropped = [k for k in self.loaded if k not in keep]
        for k in dropped:
            del self.loaded[k]
        if dropped:
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
# Cached backends
# ---------------------------------------------------------------------------------------------------------------


def _occurrences(items: Sequence[Any]) -> list[int]:
    """For each item, how many equal items came before it (so repeated inputs get independent samples)."""
    seen: Counter[Any] = Counter()
    out = []
    for it in items:
        out.append(seen[it])
        seen[it] += 1
    return out


def _call_seed(first_key: str) -> int:
    """The seed handed to one backend call: derived from the key of its first item, so every call draws its own
    random stream (not the stage seed over and over) while the keys stay independent of how work is chunked."""
    return int(first_key[:8], 16) % (2 ** 31)


class CachedTarget:
    """π_F through the cache. ``stage`` names the role of the answers ('no_ft', 'rhat', ...) so that answers
    for different purposes never share a key (fresh answers are never the ones that selected a rewrite)."""

    def __init__(self, cache: DiskCache, pool: ModelPool, spec: str, gen: GenerationConfig, stage: str, *,
                 fingerprint: str = "", batch_size: int = 16, role: str = "target") -> None:
        self.cache, self.pool, self.spec, self.gen, self.stage = cache, pool, spec, gen, stage
        self.fingerprint, self.batch_size, self.role = fingerprint, batch_size, role
        self.name = spec
        self._systems: list[str | None] | None = None
        self._origins: list[str] | None = None

    def bound(self, systems: Sequence[str | None], origins: Sequence[str]) -> "CachedTarget":
        """The same target for one call on ``len(origins)`` prompts: ``systems`` are used when the caller passes
        none (composed_rollout does not), and ``origins`` (the original x behind each prompt x′) go into the
        keys, so equal rewrites of different prompts get independent answers."""
        view = CachedTarget(self.cache, self.pool, self.spec, self.gen, self.stage, fingerprint=self.fingerprint,
                            batch_size=self.batch_size, role=self.role)
        view._systems, view._origins = list(systems), list(origins)
        return view

    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        """With ``keys`` (coupled answers, :func:`alignpro.backends.base.stream_seed`) answer j's cache key holds
        its stream (seed, key, j) and the backend gets ``seed`` and the keys unchanged."""
        prompts = list(prompts)
        if self._origins is not None and len(self._origins) != len(prompts):
            raise ValueError(f"bound to {len(self._origins)} prompts, called with {len(prompts)}")
        if systems is None and self._systems is not None:
            systems = self._systems
        systems = list(systems) if systems is not None else [None] * len(prompts)
        origins = self._origins or [None] * len(prompts)
        streams = list(keys) if keys is not None else None
        occ = _occurrences(list(zip(prompts, systems, origins))) if streams is None else streams  # keyed: the key
        keys = [[cache_key(stage=f"answer/{self.stage}", model=self.spec, fp=self.fingerprint, gen=self.gen,
                           seed=seed, prompt=p, system=s, origin=x, occurrence=o, index=j) for j in range(n)]
                for p, s, x, o in zip(prompts, systems, origins, occ)]
        found = self.cache.get_many(f"answer/{self.stage}", [k for row in keys for k in row])
        todo = [i for i, row in enumerate(keys) if any(k not in found for k in row)]
        for chunk in (todo[a:b] for a, b in chunk_bounds(len(todo), max(1, self.batch_size // n))):
            backend = self.pool.get(self.role, self.spec)
            rows = backend.answer([prompts[i] for i in chunk], n=n, systems=[systems[i] for i in chunk], **(
                {"seed": _call_seed(keys[chunk[0]][0])} if streams is None
                else {"seed": seed, "keys": [streams[i] for i in chunk]}))
            new = {keys[i][j]: {"text": a.text, "n_tokens": a.n_tokens}  # never overwrite what is stored
                   for i, row in zip(chunk, rows) for j, a in enumerate(row) if keys[i][j] not in found}
            self.cache.put_many(f"answer/{self.stage}", new)
            found.update(new)
        return [[Answer(found[k]["text"], found[k]["n_tokens"]) for k in row] for row in keys]


class CachedPrompter:
    """ρ through the cache (``template_id`` identifies the rewrite template's content)."""

    def __init__(self, cache: DiskCache, pool: ModelPool, spec: str, gen: GenerationConfig, template_id: str, *,
                 fingerprint: str = "", batch_size: int = 16, stage: str = "rewrite") -> None:
        self.cache, self.pool, self.spec, self.gen = cache, pool, spec, gen
        self.template_id, self.fingerprint, self.batch_size, self.stage = template_id, fingerprint, batch_size, stage
        self.name = spec

    def rewrite(self, prompts: Sequence[str], k: int, *, seed: int | None = None) -> list[RewriteSet]:
        prompts = list(prompts)
        occ = _occurrences(prompts)
        keys = [[cache_key(stage=self.stage, model=self.spec, fp=self.fingerprint, gen=self.gen,
                           template=self.template_id, seed=seed, prompt=p, occurrence=o, index=j) for j in range(k)]
                for p, o in zip(prompts, occ)]
        found = self.cache.get_many(self.stage, [x for row in keys for x in row])
        todo = [i for i, row in enumerate(keys) if any(x not in found for x in row)]
        for chunk in (todo[a:b] for a, b in chunk_bounds(len(todo), max(1, self.batch_size // k))):
            backend = self.pool.get("prompter", self.spec)
            sets = backend.rewrite([prompts[i] for i in chunk], k, seed=_call_seed(keys[chunk[0]][0]))
            new = {keys[i][j]: {"text": r.text, "raw": r.raw, "logprob": r.logprob, "parsed": r.parsed}
                   for i, s in zip(chunk, sets) for j, r in enumerate(s.rewrites) if keys[i][j] not in found}
            self.cache.put_many(self.stage, new)
            found.update(new)
        return [RewriteSet(p, tuple(Rewrite(text=found[x]["text"], raw=found[x]["raw"],
                                            logprob=found[x]["logprob"], parsed=found[x]["parsed"]) for x in row))
                for p, row in zip(prompts, keys)]


class CachedReward:
    """r(x, y) through the cache; deterministic, so the key is just (reward, x, y)."""

    def __init__(self, cache: DiskCache, pool: ModelPool, spec: str, *, fingerprint: str = "",
                 batch_size: int = 64) -> None:
        self.cache, self.pool, self.spec, self.batch_size, self.fingerprint = cache, pool, spec, batch_size, fingerprint
        self.name = spec
        self.r_max = None

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        keys = [cache_key(stage="score", model=self.spec, fp=self.fingerprint, prompt=p, answer=a)
                for p, a in zip(prompts, answers, strict=True)]
        found = self.cache.get_many("score", keys)
        todo, seen = [], set()  # one computation per distinct missing key
        for i, key in enumerate(keys):
            if key not in found and key not in seen:
                seen.add(key)
                todo.append(i)
        for chunk in (todo[a:b] for a, b in chunk_bounds(len(todo), self.batch_size)):
            backend = self.pool.get("reward", self.spec)
            values = backend.score([prompts[i] for i in chunk], [answers[i] for i in chunk])
            new = {keys[i]: float(v) for i, v in zip(chunk, values)}
            self.cache.put_many("score", new)
            found.update(new)
        return [float(found[key]) for key in keys]


class CachedJudge(PairwiseJudge):
    """A pairwise judge through the cache: each ordered judgment (prompt, first, second) is stored; the judge
    itself is built only on a miss (``factory``), so a fully cached run loads no judge model."""

    def __init__(self, cache: DiskCache, judge_id: str, factory: Callable[[], PairwiseJudge], *, name: str,
                 chunk: int = 16) -> None:
        self.cache, self.judge_id, self.factory, self.chunk, self.name = cache, judge_id, factory, chunk, name
        self._judge: PairwiseJudge | None = None

    @property
    def inner(self) -> PairwiseJudge:
        """The real judge (built on first use)."""
        if self._judge is None:
            self._judge = self.factory()
        return self._judge

    @property
    def built(self) -> PairwiseJudge | None:
        """The real judge if a cache miss has built it, else None."""
        return self._judge

    def judge_ordered(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[Judgment]:
        keys = [cache_key(stage="judge", judge=self.judge_id, prompt=p, first=a, second=b)
                for p, a, b in zip(prompts, firsts, seconds, strict=True)]
        found = self.cache.get_many("judge", keys)
        todo, seen = [], set()
        for i, key in enumerate(keys):
            if key not in found and key not in seen:
                seen.add(key)
                todo.append(i)
        for chunk in (todo[a:b] for a, b in chunk_bounds(len(todo), self.chunk)):
            got = self.inner.judge_ordered([prompts[i] for i in chunk], [firsts[i] for i in chunk],
                                           [seconds[i] for i in chunk])
            new = {keys[i]: {"choice": j.choice, "raw": j.raw} for i, j in zip(chunk, got)}
            self.cache.put_many("judge", new)
            found.update(new)
        return [Judgment(found[k]["choice"], found[k]["raw"]) for k in keys]
