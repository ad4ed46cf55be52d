"""Pairwise judges behind one interface: same prompt, two answers, judged in both orders.

``PairwiseJudge.judge(prompts, answers_a, answers_b) -> list[Verdict]`` shows every pair twice, (A, B) and
(B, A); when the two judgments disagree, or either is unusable, the verdict is a tie (the MT-Bench convention),
so a judge that always prefers the first answer produces ties, not wins.

- :class:`RewardJudge` (``reward``): compares r(x, y) with a tie margin. Cheap, but NOT independent of the
  optimisation target: Align-Pro selected / trained its prompts on this very reward.
- :class:`LLMJudge` (``llm:<model spec>``): a local chat model, greedy, reading ``[[A]]`` / ``[[B]]`` /
  ``[[C]]`` (tie) from its reply.
- :class:`OpenAIJudge` (``openai:<model>@<base_url>``): any OpenAI-compatible chat API (the paper used GPT-4),
  with bounded exponential backoff on 429 / 5xx / connection errors; malformed replies count as invalid.

The judge prompt is a template file (``alignpro/templates/judge-pairwise.yaml``) with the paper's criteria.
"""

from __future__ import annotations

import re
import string
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from alignpro.backends.base import GenerationConfig, RewardModel, Usage
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
        user = self.user.format(question=question, answer_a=answer_a, answer_b=answer_b)
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}]

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
        texts = [self.prefill + t for t in self._generate(convs)]
        self.usage.calls += 1
        out = [Judgment(parse_choice(t), t) for t in texts]
        self.usage.extra["invalid"] = self.usage.extra.get("invalid", 0) + sum(j.choice == "invalid" for j in out)
        return out

    def _generate(self, convs: list[list[dict[str, str]]]) -> list[str]:
        lm, prefill = self.lm, self.prefill
        if not prefill:
            return lm.sample(convs, self.gen, seed=0).texts
        # HFCausalLM.sample renders each conversation with chat_prompt(); start the assistant turn with `prefill`
        had_own = "chat_prompt" in vars(lm)
        render = lm.chat_prompt
        lm.chat_prompt = lambda messages: render(messages) + prefill
        try:
            return lm.sample(convs, self.gen, seed=0).texts
        finally:
            if had_own:
                lm.chat_prompt = render
            else:
                del lm.chat_prompt


class OpenAIJudge(PairwiseJudge):
    """Any OpenAI-compatible chat API as judge (temperature 0), through the official ``openai`` client.

    The client's own retries are off (``max_retries=0``); this class retries 429, 5xx and connection errors up to
    ``max_retries`` times with exponential backoff (``backoff_s`` · 2^attempt, capped at 60 s, or the server's
    Retry-After when it is shorter than that cap), counting them in ``usage.retries``. Other HTTP errors (401,
    400, 404...) stop the evaluation with the server's message. A reply that is not a chat completion counts as
    an invalid judgment (``usage.extra["malformed"]``), as does one without a single ``[[A]]``/``[[B]]``/``[[C]]``.
    """

    def __init__(self, model: str, base_url: str, api_key: str, template: JudgeTemplate, *, max_tokens: int = 1024,
                 concurrency: int = 4, max_retries: int = 5, backoff_s: float = 2.0, timeout_s: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import openai

        self._openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)
        self.model, self.template, self.max_tokens = model, template, max_tokens
        self.concurrency, self.max_retries, self.backoff_s, self.sleep = concurrency, max_retries, backoff_s, sleep
        self.name = f"openai:{model}@{base_url}"
        self.usage = Usage(extra={"malformed": 0, "rate_limited": 0, "server_errors": 0, "connection_errors": 0})
        self._lock = threading.Lock()

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            if what in ("calls", "retries"):
                setattr(self.usage, what, getattr(self.usage, what) + n)
            else:
                self.usage.extra[what] = self.usage.extra.get(what, 0) + n

    def _delay(self, attempt: int, exc: Exception) -> float:
        delay = min(60.0, self.backoff_s * 2 ** attempt)
        response = getattr(exc, "response", None)
        try:
            after = float(response.headers.get("retry-after")) if response is not None else None
        except (TypeError, ValueError):
            after = None
        return min(delay, after) if after is not None and after >= 0 else delay

    def _one(self, messages: list[dict[str, str]]) -> Judgment:
        openai = self._openai
        for attempt in range(self.max_retries + 1):
            self._count("calls")
            try:
                resp = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0,
                                                           max_tokens=self.max_tokens)
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                kind = ("rate_limited" if isinstance(exc, openai.RateLimitError) else
                        "server_errors" if isinstance(exc, openai.InternalServerError) else "connection_errors")
                self._count(kind)
                if attempt == self.max_retries:
                    raise AlignProError(f"judge '{self.name}': giving up after {self.max_retries} retries: "
                                        f"{type(exc).__name__}: {exc}") from None
                self._count("retries")
                self.sleep(self._delay(attempt, exc))
                continue
            except openai.APIStatusError as exc:
                raise AlignProError(f"judge '{self.name}': the API refused the request (HTTP {exc.status_code}): "
                                    f"{exc.message}") from None
            except (ValueError, openai.APIResponseValidationError) as exc:  # a body that is not JSON
                self._count("malformed")
                return Judgment("invalid", f"<malformed reply: {type(exc).__name__}: {exc}>")
            try:
                content = resp.choices[0].message.content
            except (AttributeError, IndexError, KeyError, TypeError):
                content = None
            if not isinstance(content, str):
                self._count("malformed")
                return Judgment("invalid", f"<malformed reply: {str(resp)[:200]}>")
            return Judgment(parse_choice(content), content)
        raise AssertionError("unreachable")

    def judge_ordered(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[Judgment]:
        convs = [self.template.messages(q, a, b) for q, a, b in zip(prompts, firsts, seconds)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, convs))
