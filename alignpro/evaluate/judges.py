"""Pairwise judges behind one interface: same prompt, two answers, judged in both orders.

``PairwiseJudge.judge(prompts, answers_a, answers_b) -> list[Verdict]`` shows every pair twice, (A, B) and
(B, A); when the two judgments disagree, or either is unusable, the verdict is a tie (the MT-Bench convention),
so a judge that always prefers the first answer produces ties, not wins.

- :class:`RewardJudge` (``reward``): compares r(x, y) with a tie margin. Cheap, but NOT independent of the
  optimisation target: Align-Pro selected / trained its prompts on this very reward.
- :class:`LLMJudge` (``llm:<model spec>``): a local chat model, greedy, reading ``[[A]]`` / ``[[B]]`` /
  ``[[C]]`` (tie) from its reply.
- :class:`OpenAIJudge` (``openai:<model>@<base_url>``): any OpenAI-compatible chat API (the paper used GPT-4),
  built on the ``openai:`` target backend (its retry policy, budget and counters); malformed replies count as
  invalid.

The judge prompt is a template file (``alignpro/templates/judge-pairwise.yaml``) with the paper's criteria.
"""

from __future__ import annotations

import asyncio
import re
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from alignpro.backends.base import GenerationConfig, RewardModel, Usage
from alignpro.backends.chat import user_turn
from alignpro.errors import AlignProError
from alignpro.templates import read_template_yaml

DEFAULT_JUDGE_TEMPLATE = "judge-pairwise"
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


# ---------------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgment:
    """One judgment with the answers shown in one order: ``choice`` 'A' means the answer shown FIRST is better."""

    choice: str  #: "A" | "B" | "tie" | "invalid"
    raw: str = ""  #: the judge's reply (or why there is none)


@dataclass(frozen=True)
class Verdict:
    """One pair judged in both orders, in the caller's labels (A = ``answers_a``)."""

    winner: str  #: "A" | "B" | "tie" — a tie whenever the two orders disagree or either is invalid
    ab: str  #: the choice with A shown first
    ba: str  #: the choice with B shown first, mapped back to the caller's labels

    @property
    def invalid(self) -> int:
        """How many of the two judgments could not be read (0, 1 or 2)."""
        return (self.ab == "invalid") + (self.ba == "invalid")

    @property
    def consistent(self) -> bool:
        """Both orders gave the same usable choice."""
        return self.ab == self.ba and self.ab != "invalid"

    @property
    def outcome(self) -> float:
        """1 = A wins, 0.5 = tie, 0 = B wins (the input of :func:`alignpro.metrics.win_rate_from_outcomes`)."""
        return {"A": 1.0, "tie": 0.5, "B": 0.0}[self.winner]


def combine_orders(ab: Judgment, ba: Judgment) -> Verdict:
    """The verdict of a pair judged as (A, B) -> ``ab`` and as (B, A) -> ``ba``: disagreement is a tie."""
    back = {"A": "B", "B": "A"}.get(ba.choice, ba.choice)  # in (B, A), "first is better" means B
    winner = ab.choice if ab.choice == back and ab.choice in ("A", "B") else "tie"
    return Verdict(winner, ab.choice, back)


def parse_choice(text: str) -> str:
    """'A' / 'B' / 'tie' from a reply holding ``[[A]]``, ``[[B]]`` or ``[[C]]``; 'invalid' when it holds none,
    or several different ones."""
    letters = set(_VERDICT.findall(text or ""))
    if len(letters) != 1:
        return "invalid"
    return {"A": "A", "B": "B", "C": "tie"}[letters.pop()]


class PairwiseJudge(ABC):
    """Judges two answers to the same prompt. Implement :meth:`judge_ordered`; :meth:`judge` shows both orders."""

    name: str = "judge"
    #: False when the judge shares its signal with the optimisation target (the reward judge)
    independent: bool = True

    @abstractmethod
    def judge_ordered(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[Judgment]:
        """One judgment per item with ``firsts[i]`` shown as A and ``seconds[i]`` as B."""

    def judge(self, prompts: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str]) -> list[Verdict]:
        if not len(prompts) == len(answers_a) == len(answers_b):
            raise ValueError(f"got {len(prompts)} prompts, {len(answers_a)} A answers, {len(answers_b)} B answers")
        ab = self.judge_ordered(prompts, answers_a, answers_b)
        ba = self.judge_ordered(prompts, answers_b, answers_a)
        return [combine_orders(x, y) for x, y in zip(ab, ba)]


# ---------------------------------------------------------------------------------------------------------------
# The judge prompt template
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeTemplate:
    """System prompt + user turn with ``{question}``, ``{answer_a}``, ``{answer_b}``."""

    system: str
    user: str
    source: str = ""

    def messages(self, question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        return user_turn(self.user.format(question=question, answer_a=answer_a, answer_b=answer_b), self.system)

    @property
    def id(self) -> str:
        """What identifies the template's content in cache keys."""
        return f"{self.system}\x1f{self.user}"


def load_judge_template(name_or_path: str = DEFAULT_JUDGE_TEMPLATE) -> JudgeTemplate:
    """A builtin judge template by name (``judge-pairwise``) or a YAML file by path (keys ``system``, ``user``)."""
    data, source = read_template_yaml(name_or_path, "judge")
    if not isinstance(data.get("user"), str):
        raise AlignProError(f"judge template '{source}' must be a mapping with the keys 'system' and 'user'")
    fields = {f for _, f, _, _ in string.Formatter().parse(data["user"]) if f is not None}
    if fields != {"question", "answer_a", "answer_b"}:
        raise AlignProError(f"judge template '{source}': 'user' must use exactly {{question}}, {{answer_a}} and "
                            f"{{answer_b}} (double any other braces), found {sorted(fields)}")
    return JudgeTemplate(system=str(data.get("system") or ""), user=data["user"], source=source)


# ---------------------------------------------------------------------------------------------------------------
# The three judges
# ---------------------------------------------------------------------------------------------------------------


class RewardJudge(PairwiseJudge):
    """A beats B when r(x, A) − r(x, B) > tie_margin (the rule of :func:`alignpro.metrics.reward_win_rate`)."""

    independent = False

    def __init__(self, reward: RewardModel, tie_margin: float = 0.01) -> None:
        self.reward, self.tie_margin = reward, tie_margin
        self.name = f"reward(tie_margin={tie_margin})"

    def judge_ordered(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[Judgment]:
        d = np.asarray(self.reward.score(prompts, firsts)) - np.asarray(self.reward.score(prompts, seconds))
        return [Judgment("A" if x > self.tie_margin else "B" if x < -self.tie_margin else "tie", f"Δr={x:+.4f}")
                for x in d]


class LLMJudge(PairwiseJudge):
    """A local chat model (an :class:`~alignpro.backends.hf.HFCausalLM`) as judge, decoding greedily.

    With ``prefill`` the reply is forced to start with it ("My final verdict is [[": the verdict first), which
    small models need to produce a readable verdict at all (SmolLM2-135M continues a bare "[[" with
    "The Start of Assistant B's Answer]]").
    """

    def __init__(self, lm, template: JudgeTemplate, *, max_new_tokens: int = 8,
                 prefill: str = "My final verdict is [[", name: str = "llm") -> None:
        self.lm, self.template, self.prefill, self.name = lm, template, prefill, name
        self.gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
        self.usage = Usage()

    def judge_ordered(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[Judgment]:
        convs = [self.template.messages(q, a, b) for q, a, b in zip(prompts, firsts, seconds)]
        # the reply starts with the prefill: sample() renders each conversation, then appends it
        texts = [self.prefill + t for t in self.lm.sample(convs, self.gen, seed=0, prefill=self.prefill).texts]
        self.usage.calls += 1
        out = [Judgment(parse_choice(t), t) for t in texts]
        self.usage.extra["invalid"] = self.usage.extra.get("invalid", 0) + sum(j.choice == "invalid" for j in out)
        return out


class OpenAIJudge(PairwiseJudge):
    """Any OpenAI-compatible chat API as judge (temperature 0), on the ``openai:`` target backend
    (:class:`~alignpro.backends.openai_backend.OpenAITarget`, here ``self.target``).

    Requests go through the target's client: the one retry policy of the API backends (429, 5xx, timeouts and
    connection errors retried up to ``max_retries`` times, ``backoff_s`` · 2^attempt with jitter, capped at 60 s,
    and never sooner than the server's Retry-After), its concurrency limit and its counters (``usage``: calls,
    retries, and failures by kind). Other HTTP errors (401, 400, 404...) stop the evaluation with the server's
    message. A reply that is not a chat completion is not retried: it counts as an invalid judgment
    (``usage.extra["malformed"]``), as does one without a single ``[[A]]``/``[[B]]``/``[[C]]``. Judgments are
    cached by the evaluation (:class:`~alignpro.evaluate.cache.CachedJudge`), so the target's own cache is off.
    """

    MAX_BACKOFF_S = 60.0

    def __init__(self, model: str, base_url: str, api_key: str, template: JudgeTemplate, *, max_tokens: int = 1024,
                 concurrency: int = 4, max_retries: int = 5, backoff_s: float = 2.0, timeout_s: float = 120.0,
                 sleep: Callable[[float], Awaitable[Any] | None] = asyncio.sleep) -> None:
        from alignpro.backends.openai_backend import OpenAIOptions, OpenAITarget

        options = OpenAIOptions(no_key=True, concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries,
                                backoff_s=backoff_s, max_backoff_s=self.MAX_BACKOFF_S, cache="off")
        self.name = f"openai:{model}@{base_url}"
        self.target = OpenAITarget(model, base_url, GenerationConfig(max_new_tokens=max_tokens, do_sample=False),
                                   options, name=self.name, api_key=api_key, role="judge", retry_malformed=False,
                                   sleep=sleep)
        self.model, self.template, self.max_tokens = model, template, max_tokens
        self.usage = self.target.usage

    async def _one(self, messages: list[dict[str, str]]) -> Judgment:
        from alignpro.backends.openai_client import MalformedReply

        try:
            resp = await self.target.acreate(messages, params=self.target.sampling_params(self.target.gen))
        except MalformedReply as exc:
            return Judgment("invalid", f"<malformed reply: {exc}>")
        content = resp.choices[0].message.content
        if not isinstance(content, str):
            self.target.client.count(malformed=1)
            return Judgment("invalid", f"<malformed reply: {str(resp)[:200]}>")
        return Judgment(parse_choice(content), content)

    async def _all(self, convs: list[list[dict[str, str]]]) -> list[Judgment]:
        results = await asyncio.gather(*(self._one(c) for c in convs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return list(results)  # type: ignore[arg-type]

    def judge_ordered(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[Judgment]:
        convs = [self.template.messages(q, a, b) for q, a, b in zip(prompts, firsts, seconds)]
        return self.target.client.run(self._all(convs))
