"""The three backend protocols and their typed results.

- :class:`Prompter` ρ: samples K rewrites x′ ~ ρ(·|x) per prompt and returns their token log-probs.
- :class:`Target` π_F: answers a batch of prompts (it never receives gradients).
- :class:`RewardModel` r: scores (ORIGINAL prompt x, answer y) pairs.

**Coupled answers (common random numbers).** ``Target.answer(..., keys=...)`` takes one key per prompt: the
ORIGINAL prompt's identity (:func:`prompt_keys`), not the x′ shown. Answer j to prompt i then draws its random
numbers from the stream :func:`stream_seed` (seed, keys[i], j), whatever the batch it is generated in, its position
there and the x′ shown: two arms, or K candidate rewrites, showing π_F different x′ for the same x use the same
uniforms, so their paired difference loses the sampling noise they share. ``keys=None`` keeps one stream per call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence, runtime_checkable

from alignpro.config import renamed_group, setting
from alignpro.errors import ConfigError


def stream_seed(seed: int, key: str, j: int) -> int:
    """The seed (< 2**63) of answer ``j``'s random stream for the prompt keyed ``key`` under ``seed``: a stable
    hash (blake2b of the three), the same in every process and on every machine (unlike Python's ``hash``)."""
    digest = hashlib.blake2b(f"{int(seed)}\x1f{key}\x1f{int(j)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def prompt_key(text: str, system: str | None = None) -> str:
    """x's stream key: its text, with its system prompt when it has one (another system prompt, another x)."""
    return text if system is None else f"{system}\x00{text}"


def prompt_keys(prompts: Sequence[str], systems: Sequence[str | None] | None = None) -> list[str]:
    """One key per prompt for :func:`stream_seed`: its system prompt and text, and for a repeat of an earlier
    (system, text) in the list, its occurrence number (so two records with the same text get independent answers,
    and the keys of a list are the same in every arm that answers it)."""
    systems = list(systems) if systems is not None else [None] * len(prompts)
    seen: dict[str, int] = {}
    keys = []
    for x, s in zip(prompts, systems, strict=True):
        base = prompt_key(x, s)
        keys.append(base if base not in seen else f"{base}\x00#{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return keys


def check_keys(prompts: Sequence[str], keys: Sequence[str] | None) -> None:
    """A backend's check of ``keys``: None, or one str per prompt."""
    if keys is not None and len(keys) != len(prompts):
        raise ValueError(f"keys: one per prompt, got {len(keys)} keys for {len(prompts)} prompts")


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings shared by every backend. The defaults are THE answer-sampling default of every command
    (:data:`PAPER_ANSWER_CONFIG`): the paper's temperature 1.5, top_p 0.6, top_k 20 (Sec. Hyper-parameters) and
    answers of at most 128 new tokens (the budget measured in docs/instruction-following.md: most answers
    finish). A command that needs another value overrides it in its own config dataclass, where --help shows it."""

    max_new_tokens: int = 128
    temperature: float = 1.5
    top_p: float = 0.6
    top_k: int = 20
    do_sample: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")

    def with_(self, **changes: object) -> "GenerationConfig":
        return replace(self, **changes)  # type: ignore[arg-type]


#: The one answer-sampling default (π_F's answers in every command): temperature 1.5, top_p 0.6, top_k 20, ≤ 128
#: new tokens. Commands take their settings' defaults from it.
PAPER_ANSWER_CONFIG = GenerationConfig()


@dataclass
class AnswerSettings:
    """π_F's answer sampling as settings of a command (flags = YAML keys), defaulting to :data:`PAPER_ANSWER_CONFIG`:
    the one declaration the demo's and evaluate's configs inherit."""

    answer_max_new_tokens: int = setting(PAPER_ANSWER_CONFIG.max_new_tokens, "max new tokens of π_F's answers")
    temperature: float = setting(PAPER_ANSWER_CONFIG.temperature, "π_F's sampling temperature (paper: 1.5)")
    top_p: float = setting(PAPER_ANSWER_CONFIG.top_p, "π_F's nucleus top_p (paper: 0.6)")
    top_k: int = setting(PAPER_ANSWER_CONFIG.top_k, "π_F's top_k (paper: 20)")

    def answer_config(self) -> GenerationConfig:
        """These settings as the :class:`GenerationConfig` of π_F's answers."""
        return GenerationConfig(max_new_tokens=self.answer_max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, top_k=self.top_k)


#: :class:`AnswerSettings` named ``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``: for commands where
#: π_F's is the only sampling (answer, serve, reward label)
PlainAnswerSettings = renamed_group(AnswerSettings, {"answer_max_new_tokens": "max_new_tokens"})
#: :class:`AnswerSettings` named ``answer_*``: for commands whose bare names are another model's sampling (train:
#: the rollouts'; overopt passes them on to train)
PrefixedAnswerSettings = renamed_group(
    AnswerSettings, {"temperature": "answer_temperature", "top_p": "answer_top_p", "top_k": "answer_top_k"})


@dataclass(frozen=True)
class Rewrite:
    """One sampled rewrite x′ of a prompt x."""

    text: str  #: the parsed rewrite x′ (what the target will see)
    raw: str  #: the prompter's raw output
    logprob: float  #: log ρ(raw | x): sum of the sampled tokens' log-probs (under the sampling distribution's model)
    token_logprobs: tuple[float, ...] = ()  #: (T,) per-token log ρ(a_t | x, a_<t)
    parsed: bool = True  #: False when no rewrite could be parsed out of ``raw`` (then ``text`` is x itself)


@dataclass(frozen=True)
class RewriteSet:
    """K rewrites of one prompt."""

    prompt: str
    rewrites: tuple[Rewrite, ...]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rewrites]


@dataclass(frozen=True)
class Answer:
    """One answer y ~ π_F(·|prompt)."""

    text: str
    n_tokens: int = 0


@dataclass
class Usage:
    """Counters a backend accumulates (tokens generated, calls, retries...)."""

    generated_tokens: int = 0
    calls: int = 0
    retries: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Prompter(Protocol):
    """ρ(x′|x): rewrites prompts."""

    name: str

    def rewrite(self, prompts: Sequence[str], k: int, *, seed: int | None = None) -> list[RewriteSet]:
        """Sample ``k`` rewrites for each prompt (same order as ``prompts``)."""
        ...


@runtime_checkable
class Target(Protocol):
    """π_F(y|x): the frozen model."""

    name: str

    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        """``n`` sampled answers per prompt, shape (len(prompts), n). With ``keys`` (one per prompt: the original
        prompt's key, :func:`prompt_keys`), answer j to prompt i draws from the stream
        ``stream_seed(seed, keys[i], j)``, independent of the batch and of the x′ shown."""
        ...


@runtime_checkable
class RewardModel(Protocol):
    """r(x, y): always scored against the ORIGINAL prompt x."""

    name: str
    r_max: float | None  #: an upper bound on the reward when known (Theorem 1 assumes r ∈ [0, r_max])

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        ...
