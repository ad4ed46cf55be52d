"""The two roles one loop trains: what a query is, and how a sampled response is rewarded.

- :class:`PrompterRole` (Align-Pro, eq 9): the query is the rewrite request for x (the template's chat turns);
  the response is the raw rewrite; x′ is parsed from it, π_F answers x′ M times through the :class:`Target`
  protocol (so API targets plug in), and the reward is the mean of r(x, y) against the ORIGINAL x. The M answers
  are coupled across the rewrites of one x in a step (keyed by x, :func:`record_key`): rewrites of the same x in a
  group are compared on the same random numbers, so their advantages lose the answer noise they share.
- :class:`OracleRole` (RLHF, eq 2): the query is x itself as a user turn; the response is the answer y; the reward
  is r(x, y).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from alignpro.backends.base import RewardModel, Target, prompt_key
from alignpro.backends.chat import user_turn
from alignpro.data import PromptRecord
from alignpro.templates import RewriteTemplate


def record_key(r: PromptRecord) -> str:
    """x's key: for b(x) (a JSON key) and for π_F's coupled answer streams; the same question under another system
    prompt is another x."""
    return prompt_key(r.text, r.system)


@dataclass
class Scored:
    scores: np.ndarray  #: (B,) reward of each response
    shown: list[str]  #: (B,) what the target saw (x′ for the prompter, x for the oracle)
    answers: list[str]  #: (B,) one answer per response (the first of the M for the prompter)
    baselines: np.ndarray | None = None  #: (B,) b(x) subtracted from ``scores`` for the advantages, or None
    stats: dict[str, float] = field(default_factory=dict)  #: role-specific numbers for the metrics row


class PrompterRole:
    """ρ's action is the rewrite x′; its reward is E_{y~π_F(·|x′)} r(x, y), estimated with M answers.

    With ``baseline_m`` > 0 each prompt also gets b(x) = the mean of r(x, y) over ``baseline_m`` answers of π_F to
    x itself (what no_ft earns), computed the first time the prompt is drawn and kept in ``baselines`` (saved with
    the checkpoints). The loop subtracts it before the advantages: a constant per prompt, so it leaves the optimum
    of eq (9) unchanged, but PPO's value head no longer has to learn each prompt's reward level, and the signal
    left is the gain of the rewrite over x.
    """

    def __init__(self, chat_prompt: Callable[[list[dict[str, str]]], str], template: RewriteTemplate,
                 target: Target, reward: RewardModel, m: int, baseline_m: int = 0) -> None:
        self.chat_prompt, self.template, self.target, self.reward, self.m = chat_prompt, template, target, reward, m
        self.baseline_m = baseline_m
        self.baselines: dict[str, float] = {}  #: x (with its system prompt, if any) → b(x)

    def identity_baselines(self, records: Sequence[PromptRecord], seed: int) -> np.ndarray:
        """(B,) b(x) for each record, answering (once, ``baseline_m`` times, keyed by x) the prompts not seen before."""
        key = record_key
        todo = list({key(r): r for r in records if key(r) not in self.baselines}.values())
        if todo:
            answers = self.target.answer([r.text for r in todo], n=self.baseline_m, seed=seed,
                                         systems=[r.system for r in todo], keys=[key(r) for r in todo])
            flat = self.reward.score([r.text for r in todo for _ in range(self.baseline_m)],
                                     [a.text for row in answers for a in row])
            means = np.asarray(flat, dtype=float).reshape(len(todo), self.baseline_m).mean(axis=1)
            self.baselines.update(zip(map(key, todo), means.tolist()))
        return np.array([self.baselines[key(r)] for r in records])

    def queries(self, records: Sequence[PromptRecord]) -> list[str]:
        return [self.chat_prompt(self.template.messages(r.text)) for r in records]

    def score(self, records: Sequence[PromptRecord], responses: Sequence[str], seed: int) -> Scored:
        parsed = [self.template.parse(raw, r.text) for raw, r in zip(responses, records, strict=True)]
        rewrites = [text for text, _ in parsed]
        t0 = time.perf_counter()
        answers = self.target.answer(rewrites, n=self.m, seed=seed, systems=[r.system for r in records],
                                     keys=[record_key(r) for r in records])  # (B, M), coupled per x
        t1 = time.perf_counter()
        originals = [r.text for r in records for _ in range(self.m)]  # scored against the ORIGINAL x
        flat = self.reward.score(originals, [a.text for row in answers for a in row])
        t2 = time.perf_counter()
        scores = np.asarray(flat, dtype=float).reshape(len(records), self.m).mean(axis=1)
        stats = {"parsed_frac": float(np.mean([ok for _, ok in parsed])),
                 "answer_tokens": float(np.mean([a.n_tokens for row in answers for a in row])),
                 "answer_seconds": t1 - t0, "score_seconds": t2 - t1}
        baselines = None
        if self.baseline_m:
            baselines = self.identity_baselines(records, seed + 1)
            stats["baseline_seconds"] = time.perf_counter() - t2
        return Scored(scores, rewrites, [row[0].text for row in answers], stats=stats, baselines=baselines)


class OracleRole:
    """π's action is the answer y to x itself; its reward is r(x, y)."""

    def __init__(self, chat_prompt: Callable[[list[dict[str, str]]], str], reward: RewardModel) -> None:
        self.chat_prompt, self.reward = chat_prompt, reward

    def queries(self, records: Sequence[PromptRecord]) -> list[str]:
        return [self.chat_prompt(user_turn(r.text, r.system)) for r in records]

    def score(self, records: Sequence[PromptRecord], responses: Sequence[str], seed: int) -> Scored:
        scores = np.asarray(self.reward.score([r.text for r in records], list(responses)), dtype=float)
        return Scored(scores, [r.text for r in records], list(responses))
