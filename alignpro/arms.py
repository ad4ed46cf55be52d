"""The arms the paper compares, and the one way they are run: by `alignpro demo` and by `alignpro evaluate`.

On N prompts x (with their system prompts) and one seed, every arm gives (N, n) fresh answers of π_F, each scored
against the ORIGINAL x:

- ``no_ft``: π_F answers x (the paper's "No Fine-Tuning");
- ``align_pro_closed_form``: eq (3) sampled by :func:`alignpro.method.composed_rollout` (K rewrites of ρ_sft, plus
  x itself with prior mass α, M answers each → R̂(x, x′)), ρ* of eq (10), one x′ drawn, fresh answers to x′;
- ``align_pro_closed_form_rewrites_only``: ρ* restricted to the K LM rewrites (α = 0), from the same R̂;
- ``align_pro``: a trained prompter rewrites x once, fresh answers to its x′;
- ``align_pro_closed_form_trained``: the closed form with a trained prompter as the proposal (and its prior);
- ``oracle``: an RLHF-tuned π_F answers x.

The method, one for both commands:

- **Fresh answers.** The answers that estimated R̂ are never reused for an arm's reward: they chose x′, so they
  are selection-biased (best-of-K in disguise). :attr:`ClosedForm.selection_biased_r_hat` keeps that figure
  apart, labelled as such.
- **Common random numbers.** One set of fresh answers per distinct (x, x′): where two arms show π_F the same x′
  (ρ* keeping x, as no_ft does) they are scored on the same answers, so their paired difference there is exactly 0,
  as it is for identical systems, instead of answer noise. Each arm's mean stays unbiased (those answers took no
  part in choosing x′). The oracle is another model: it has answers of its own.
- **System prompts.** Every call to π_F carries each prompt's system prompt, the closed form's candidates included.
- **One seed scheme** (:data:`FRESH_SEED`, :data:`ROLLOUT_SEED`, :data:`REWRITE_SEED`): each stage draws from
  ``seed + offset``, plus the index of a chunk's first prompt where the stage is chunked; the ρ* draws come from
  one generator ``default_rng(seed)`` in the order closed form, its rewrites-only variant (drawn whenever α > 0,
  answered only when that arm runs), closed form over the trained prompter.

The stage functions fill an :class:`ArmRun`; the callers choose the backends (plain for the demo, cached for
``evaluate``), the order of models in memory, and the progress display.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from alignpro.backends.base import Answer, RewardModel, RewriteSet, Target
from alignpro.config import setting
from alignpro.method import composed_rollout, kl_to_prior, optimal_prompter_weights, sample_candidates


class Arm(str, enum.Enum):
    """The configurations compared (the paper's, plus the closed-form ρ* of eq 10, which needs no training)."""

    NO_FT = "no_ft"  #: π_F answers x (the paper's "No Fine-Tuning", B in Table 1)
    CLOSED_FORM = "align_pro_closed_form"  #: ρ* of eq (10) on ρ_sft's K rewrites and x, fresh π_F answers
    CLOSED_FORM_REWRITES_ONLY = "align_pro_closed_form_rewrites_only"  #: the same ρ* without x as a candidate
    ALIGN_PRO = "align_pro"  #: a trained prompter rewrites x once, fresh π_F answers (A in Table 1)
    CLOSED_FORM_TRAINED = "align_pro_closed_form_trained"  #: ρ* of eq (10) with a trained prompter as proposal
    ORACLE = "oracle"  #: an RLHF-tuned target answers x (the paper's "RLHF" oracle)

    @property
    def title(self) -> str:
        """The arm's name in tables and figures."""
        return _TITLES[self]

    @property
    def rewrites(self) -> bool:
        """Whether π_F answers a rewrite x′ of x (so the arm needs a prompter and its rewrite template)."""
        return self not in (Arm.NO_FT, Arm.ORACLE)

    @property
    def is_no_learning_baseline(self) -> bool:
        """Whether the arm is something a user can do without training (a fixed line, repetition, π_F rewriting
        its own answer): trained arms report their paired gain over the strongest of these too."""
        return self in NO_LEARNING_BASELINES

    @property
    def checkpoint_role(self) -> str | None:
        """'prompter' / 'target' for an arm that needs a trained model, else None."""
        return _CHECKPOINT_ROLE.get(self)


_TITLES = {
    Arm.NO_FT: "No fine-tuning",
    Arm.CLOSED_FORM: "Align-Pro (closed-form ρ*, eq 10)",
    Arm.CLOSED_FORM_REWRITES_ONLY: "Align-Pro (closed-form ρ*, rewrites only)",
    Arm.ALIGN_PRO: "Align-Pro (trained prompter)",
    Arm.CLOSED_FORM_TRAINED: "Align-Pro (closed-form ρ* over the trained prompter)",
    Arm.ORACLE: "Oracle (RLHF-tuned target)",
}
_CHECKPOINT_ROLE = {Arm.ALIGN_PRO: "prompter", Arm.CLOSED_FORM_TRAINED: "prompter", Arm.ORACLE: "target"}
BASELINE = Arm.NO_FT.value
#: the no-learning baselines (beside no_ft) that trained arms are compared against
NO_LEARNING_BASELINES: frozenset[Arm] = frozenset()

#: seed offset of each arm's fresh answers (a chunk adds the index of its first prompt)
FRESH_SEED = {Arm.NO_FT: 100, Arm.CLOSED_FORM: 200, Arm.CLOSED_FORM_REWRITES_ONLY: 250, Arm.ALIGN_PRO: 400,
              Arm.ORACLE: 500, Arm.CLOSED_FORM_TRAINED: 600}
#: seed offset of the rollouts that estimate R̂ for a closed form (a chunk adds the index of its first prompt)
ROLLOUT_SEED = {Arm.CLOSED_FORM: 1000, Arm.CLOSED_FORM_TRAINED: 2000}
#: seed offset of the trained prompter's one rewrite per prompt (arm align_pro)
REWRITE_SEED = 300

Progress = Callable[[int], Any]  #: called with the number of prompts just done


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(n) in chunks of ``size``."""
    return [(i, min(n, i + size)) for i in range(0, n, size)]


# ---------------------------------------------------------------------------------------------------------------
# π_F with each prompt's system prompt
# ---------------------------------------------------------------------------------------------------------------


class _WithSystems:
    """A target for one call: each prompt gets its system prompt (composed_rollout passes none)."""

    def __init__(self, target: Target, systems: Sequence[str | None]) -> None:
        self.target, self.systems, self.name = target, list(systems), target.name

    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None) -> list[list[Answer]]:
        return self.target.answer(prompts, n=n, seed=seed, systems=self.systems if systems is None else systems)


def bind(target: Target, systems: Sequence[str | None], originals: Sequence[str]) -> Target:
    """``target`` for one call on prompts that stand for ``originals`` with ``systems``. A target with its own
    ``bound(systems, originals)`` (the cached target, whose keys hold the originals) binds itself."""
    own = getattr(target, "bound", None)
    return own(systems, originals) if own is not None else _WithSystems(target, systems)


# ---------------------------------------------------------------------------------------------------------------
# Typed results
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FreshAnswers:
    """Fresh answers of π_F to the prompts it was shown, scored against the original x."""

    texts: list[list[str]]  #: (N, n)
    tokens: list[list[int]]  #: (N, n) answer lengths in tokens
    rewards: np.ndarray  #: (N, n) r(x, y)


@dataclass(frozen=True)
class ClosedFormSettings:
    """The closed form's settings (eq 10 over sampled candidates)."""

    k: int  #: K rewrites sampled from the proposal per prompt
    m: int  #: M answers per candidate to estimate R̂(x, x′)
    lam: float  #: λ of eq (10) (0 = argmax, inf = the proposal itself)
    identity_prior: float  #: the proposal's prior mass α on keeping x unchanged


@dataclass
class ClosedFormConfig:
    """The closed form's settings as settings of a command (flags = YAML keys): the one declaration the demo's and
    evaluate's configs inherit."""

    k: int = setting(4, "K: LM rewrites sampled from ρ_sft per prompt (the closed-form arms)")
    m: int = setting(2, "M: answers per candidate used to estimate R̂(x, x′)")
    lam: float = setting(0.1, "λ, the prompt-tuning parameter of eq (9)/(10) (0 = argmax, inf = ρ_sft)")
    identity_prior: float = setting(0.5, "ρ_sft's prior mass α on keeping x unchanged (0 = rewrites only)")

    def closed_form_settings(self) -> ClosedFormSettings:
        return ClosedFormSettings(k=self.k, m=self.m, lam=self.lam, identity_prior=self.identity_prior)


@dataclass
class ClosedForm:
    """ρ* of eq (10) over one proposal's candidates, and the x′ drawn from it for each prompt."""

    candidates: list[list[str]]  #: (N, C) candidates x′ (x itself first when α > 0)
    rewrite_sets: list[RewriteSet]  #: (N,) the proposal's K rewrites
    r_hat: np.ndarray  #: (N, C) R̂(x, x′) on M answers each
    weights: np.ndarray  #: (N, C′) ρ*(x′|x) over the candidates it may pick (C′ = C, or K when rewrites only)
    picked: np.ndarray  #: (N,) index of the drawn x′ in ``candidates``
    kl: float  #: mean KL(ρ* ‖ prior) over prompts
    identity_first: bool  #: whether candidate 0 is x itself

    @property
    def chosen(self) -> list[str]:
        """(N,) the drawn x′."""
        return [row[j] for row, j in zip(self.candidates, self.picked)]

    @property
    def selection_biased_r_hat(self) -> float:
        """Mean R̂ of the drawn x′ on the very answers that chose them: biased upward, NOT a result."""
        return float(self.r_hat[np.arange(len(self.picked)), self.picked].mean())

    @property
    def chose_original_fraction(self) -> float:
        return float((self.picked == 0).sum() / len(self.picked)) if self.identity_first else 0.0

    @property
    def rewrites_parsed_fraction(self) -> float:
        n_parsed = sum(rw.parsed for s in self.rewrite_sets for rw in s.rewrites)
        return n_parsed / max(1, sum(len(s.rewrites) for s in self.rewrite_sets))

    def diagnostics(self) -> dict[str, Any]:
        return {"kl_rho_star_to_rho_sft": self.kl, "chose_original_fraction": self.chose_original_fraction,
                "rewrites_parsed_fraction": self.rewrites_parsed_fraction,
                "selection_biased_r_hat_of_chosen": self.selection_biased_r_hat,
                "selection_biased_note": "mean R̂ of the chosen x′ on the answers that chose them: biased upward "
                                         "(best-of-K), NOT a result; the arm's reward uses fresh answers"}


@dataclass
class ArmRun:
    """Everything the arms produced on one prompt set with one seed. Shapes: N prompts, n answers per arm."""

    prompts: list[str]  #: (N,) original prompts x
    systems: list[str | None]  #: (N,) their system prompts
    n: int  #: fresh answers per prompt and arm
    seed: int
    batch_size: int  #: answers per call of π_F (fresh answers: batch_size // n prompts per call)
    answers: dict[str, list[list[str]]] = field(default_factory=dict)  #: arm -> (N, n) answer texts
    tokens: dict[str, list[list[int]]] = field(default_factory=dict)  #: arm -> (N, n) answer lengths in tokens
    rewards: dict[str, np.ndarray] = field(default_factory=dict)  #: arm -> (N, n) r(x, y)
    rewrites: dict[str, list[str]] = field(default_factory=dict)  #: arm -> (N,) the x′ π_F answered
    closed_forms: dict[str, ClosedForm] = field(default_factory=dict)  #: closed-form arm -> its ρ* and draw
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: common random numbers: (prompt index, x′ shown) -> its fresh answers (texts, tokens, rewards)
    fresh: dict[tuple[int, str], tuple[list[str], list[int], np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)  # the ρ* draws, in the order of the module docstring

    @property
    def chunk(self) -> int:
        """Prompts per call of π_F for fresh answers."""
        return max(1, self.batch_size // self.n)

    def flat(self, arm: str) -> list[str]:
        """(N·n,) the arm's answers, prompt by prompt."""
        return [y for row in self.answers[arm] for y in row]

    def flat_prompts(self) -> list[str]:
        """(N·n,) the original prompt of every answer, in the order of :meth:`flat`."""
        return [x for x in self.prompts for _ in range(self.n)]


# ---------------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------------


def answer_and_score(target: Target, reward: RewardModel, shown: list[str], originals: list[str],
                     systems: list[str | None], *, n: int, seed: int, chunk: int,
                     progress: Progress | None = None) -> FreshAnswers:
    """``n`` fresh answers to each prompt of ``shown`` (x or x′), scored against ``originals``; the call on
    prompts [a, b) draws from ``seed + a``."""
    texts, tokens, scores = [], [], []
    for a, b in chunk_bounds(len(shown), chunk):
        rows = bind(target, systems[a:b], originals[a:b]).answer(shown[a:b], n=n, seed=seed + a)
        t = [[ans.text for ans in row] for row in rows]
        s = reward.score([x for x in originals[a:b] for _ in range(n)], [y for row in t for y in row])
        texts.extend(t)
        tokens.extend([[ans.n_tokens for ans in row] for row in rows])
        scores.extend(np.asarray(s, dtype=float).reshape(b - a, n).tolist())
        if progress:
            progress(b - a)
    return FreshAnswers(texts, tokens, np.asarray(scores, dtype=float).reshape(len(shown), n))


def answer_arm(run: ArmRun, arm: Arm, target: Target, reward: RewardModel, shown: list[str],
               progress: Progress | None = None) -> None:
    """Fresh answers of π_F to ``shown`` (x for no_ft, else the arm's x′), with common random numbers: only the
    (x, x′) no arm has had answered yet are answered, from ``seed + FRESH_SEED[arm]``."""
    need = [i for i, x in enumerate(shown) if (i, x) not in run.fresh]
    if progress and len(need) < len(shown):
        progress(len(shown) - len(need))
    got = answer_and_score(target, reward, [shown[i] for i in need], [run.prompts[i] for i in need],
                           [run.systems[i] for i in need], n=run.n, seed=run.seed + FRESH_SEED[arm],
                           chunk=run.chunk, progress=progress)
    run.fresh.update({(i, shown[i]): (t, k, r) for i, t, k, r in zip(need, got.texts, got.tokens, got.rewards)})
    rows = [run.fresh[(i, x)] for i, x in enumerate(shown)]
    run.answers[arm.value] = [r[0] for r in rows]
    run.tokens[arm.value] = [r[1] for r in rows]
    run.rewards[arm.value] = np.stack([r[2] for r in rows]) if rows else np.zeros((0, run.n))  # (N, n)
    if arm is not Arm.NO_FT:
        run.rewrites[arm.value] = list(shown)


def answer_oracle(run: ArmRun, oracle: Target, reward: RewardModel, progress: Progress | None = None) -> None:
    """The oracle (another π) answers x; its answers are its own (no common random numbers with π_F)."""
    got = answer_and_score(oracle, reward, run.prompts, run.prompts, run.systems, n=run.n,
                           seed=run.seed + FRESH_SEED[Arm.ORACLE], chunk=run.chunk, progress=progress)
    arm = Arm.ORACLE.value
    run.answers[arm], run.tokens[arm], run.rewards[arm] = got.texts, got.tokens, got.rewards


def rewrite_once(run: ArmRun, prompter, progress: Progress | None = None) -> list[str]:
    """The trained prompter's one x′ per prompt (arm align_pro), from ``seed + REWRITE_SEED``; records the
    fraction of rewrites parsed."""
    sets = prompter.rewrite(run.prompts, 1, seed=run.seed + REWRITE_SEED)
    run.diagnostics[Arm.ALIGN_PRO.value] = {"rewrites_parsed_fraction": float(np.mean([s.rewrites[0].parsed
                                                                                       for s in sets]))}
    if progress:
        progress(len(run.prompts))
    return [s.rewrites[0].text for s in sets]


def rho_star_draw(r_hat: np.ndarray, log_prior: np.ndarray, lam: float, rng: np.random.Generator, *,
                  rewrites_only: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """ρ* of eq (10) on R̂ (N, C) and the prior (C,), one draw per prompt: (weights, picked (N,) in the full
    candidate list, mean KL to the prior). ``rewrites_only`` drops candidate 0 (x itself) and renormalises."""
    offset = 1 if rewrites_only else 0
    lp = log_prior[offset:]
    if rewrites_only:
        lp = lp - np.log(np.exp(lp).sum())
    w = optimal_prompter_weights(r_hat[:, offset:], lp, lam)  # (N, C′)
    idx = sample_candidates(w, rng)  # (N,)
    return w, idx + offset, float(kl_to_prior(w, lp).mean())


def propose_closed_form(run: ArmRun, arm: Arm, prompter, target: Target, reward: RewardModel,
                        cf: ClosedFormSettings, progress: Progress | None = None) -> None:
    """R̂(x, x′) from ``prompter``'s K rewrites (+ x when α > 0) and M answers each, then ρ* and one x′ per prompt
    (``arm`` is CLOSED_FORM or CLOSED_FORM_TRAINED). For CLOSED_FORM with α > 0 the rewrites-only variant is
    drawn too. Fills ``run.closed_forms`` and ``run.diagnostics``; answers nothing afresh."""
    c_count = cf.k + (1 if cf.identity_prior > 0 else 0)
    chunk = max(1, 2 * run.batch_size // ((cf.k + 1) * cf.m))  # ~2 target batches per call
    rollouts = []
    for a, b in chunk_bounds(len(run.prompts), chunk):
        # composed_rollout asks π_F for the N·C candidates in prompt order: bind their x and system prompt
        bound = bind(target, [s for s in run.systems[a:b] for _ in range(c_count)],
                     [x for x in run.prompts[a:b] for _ in range(c_count)])
        rollouts.append(composed_rollout(run.prompts[a:b], prompter, bound, reward, k=cf.k, m=cf.m,
                                         identity_prior=cf.identity_prior, seed=run.seed + ROLLOUT_SEED[arm] + a))
        if progress:
            progress(b - a)
    candidates = [c for r in rollouts for c in r.candidates]  # (N, C)
    sets = [s for r in rollouts for s in r.rewrite_sets]
    r_hat = np.concatenate([r.r_hat for r in rollouts])  # (N, C)
    log_prior = rollouts[0].log_prior  # (C,)
    identity = cf.identity_prior > 0
    variants = [(arm, False)] + ([(Arm.CLOSED_FORM_REWRITES_ONLY, True)] if arm is Arm.CLOSED_FORM and identity
                                 else [])
    for name, rewrites_only in variants:
        w, picked, kl = rho_star_draw(r_hat, log_prior, cf.lam, run.rng, rewrites_only=rewrites_only)
        drawn = ClosedForm(candidates, sets, r_hat, w, picked, kl, identity and not rewrites_only)
        run.closed_forms[name.value] = drawn
        run.diagnostics[name.value] = drawn.diagnostics()
