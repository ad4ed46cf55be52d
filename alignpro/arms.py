"""The arms the paper compares, and the one way they are run: by `alignpro demo` and by `alignpro evaluate`.

On N prompts x (with their system prompts) and one seed, every arm gives (N, n) fresh answers of π_F, each scored
against the ORIGINAL x:

- ``no_ft``: π_F answers x (the paper's "No Fine-Tuning");
- ``align_pro_closed_form``: eq (3) sampled by :func:`alignpro.method.composed_rollout` (K rewrites of ρ_sft, plus
  x itself with prior mass α, M answers each → R̂(x, x′)), ρ* of eq (10), one x′ drawn, fresh answers to x′;
- ``align_pro_closed_form_rewrites_only``: ρ* restricted to the K LM rewrites (α = 0), from the same R̂;
- ``align_pro``: a trained prompter rewrites x once, fresh answers to its x′;
- ``align_pro_closed_form_trained``: the closed form with a trained prompter as the proposal (and its prior);
- ``oracle``: an RLHF-tuned π_F answers x;
- the no-learning baselines (:data:`NO_LEARNING_BASELINES`, prompts built in :mod:`alignpro.baselines`):
  ``suffix`` (x + a fixed line), ``repeat`` (x twice), ``best_suffix`` (x + the catalog line chosen on train
  prompts), ``answer_rewrite`` (π_F rewrites its own answer to x so it follows x), all by :func:`answer_baseline`.

The method, one for both commands:

- **Fresh answers.** The answers that estimated R̂ are never reused for an arm's reward: they chose x′, so they
  are selection-biased (best-of-K in disguise). :attr:`ClosedForm.selection_biased_r_hat` keeps that figure
  apart, labelled as such.
- **Common random numbers (coupled answers).** Answer j to prompt x draws its random numbers from the stream
  :func:`alignpro.backends.base.stream_seed` (seed, key of x, j), whatever x′ is shown and whatever batch it is
  generated in: every arm (the oracle, another model, included) answers x or its x′ with the same uniforms, and so
  do the K candidates of x when R̂ is estimated; paired differences lose the noise they share. Where two arms show
  π_F the very same x′ (ρ* keeping x, as no_ft does) the answers are reused, so the paired difference there is
  exactly 0. Each arm's mean stays unbiased: fresh answers take no part in choosing x′ (R̂ and the prompters draw
  from other streams).
- **System prompts.** Every call to π_F carries each prompt's system prompt, the closed form's candidates included.
- **One seed scheme.** Keys: :func:`alignpro.backends.base.prompt_keys` of the original prompts (and system
  prompts), the same list for every arm. π_F's answers are keyed streams under ``seed + offset``:
  :data:`FRESH_SEED` for every arm's fresh answers (the first stage of answer_rewrite included: it is no_ft's
  answers), :data:`ANSWER_REWRITE_SEED` for answer_rewrite's second stage (key of x and j), ``ROLLOUT_SEED[arm]``
  for a closed form's R̂ answers. The prompters draw from ``seed + REWRITE_SEED`` (align_pro) and
  ``seed + ROLLOUT_SEED[arm]`` plus the index of a chunk's first prompt (the closed forms' rewrites). The ρ* draws
  come from one generator ``default_rng(seed)`` in the order closed form, its rewrites-only variant (drawn whenever
  α > 0, answered only when that arm runs), closed form over the trained prompter.

The stage functions fill an :class:`ArmRun`; the callers choose the backends (plain for the demo, cached for
``evaluate``), the order of models in memory, and the progress display.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from alignpro import baselines
from alignpro.backends.base import Answer, RewardModel, RewriteSet, Target, prompt_keys
from alignpro.config import setting
from alignpro.errors import ConfigError
from alignpro.method import composed_rollout, kl_to_prior, optimal_prompter_weights, sample_candidates


class Arm(str, enum.Enum):
    """The configurations compared (the paper's, plus the closed-form ρ* of eq 10, which needs no training)."""

    NO_FT = "no_ft"  #: π_F answers x (the paper's "No Fine-Tuning", B in Table 1)
    SUFFIX = "suffix"  #: π_F answers x + a fixed line (no learning)
    REPEAT = "repeat"  #: π_F answers x twice over (no learning)
    BEST_SUFFIX = "best_suffix"  #: π_F answers x + the catalog line chosen on train prompts (no learning)
    ANSWER_REWRITE = "answer_rewrite"  #: π_F answers x, then rewrites its answer to follow x (no learning)
    CLOSED_FORM = "align_pro_closed_form"  #: ρ* of eq (10) on ρ_sft's K rewrites and x, fresh π_F answers
    CLOSED_FORM_REWRITES_ONLY = "align_pro_closed_form_rewrites_only"  #: the same ρ* without x as a candidate
    ALIGN_PRO = "align_pro"  #: a trained prompter rewrites x once, fresh π_F answers (A in Table 1)
    ALIGN_PRO_SFT = "align_pro_sft"  #: the trained prompter's start ρ_sft rewrites x once (what RL adds is the Δ)
    CLOSED_FORM_TRAINED = "align_pro_closed_form_trained"  #: ρ* of eq (10) with a trained prompter as proposal
    ORACLE = "oracle"  #: an RLHF-tuned target answers x (the paper's "RLHF" oracle)

    @property
    def title(self) -> str:
        """The arm's name in tables and figures."""
        return _TITLES[self]

    @property
    def rewrites(self) -> bool:
        """Whether π_F answers a rewrite x′ of x (so the arm needs a prompter and its rewrite template)."""
        return self not in (Arm.NO_FT, Arm.ORACLE) and not self.is_no_learning_baseline

    @property
    def is_no_learning_baseline(self) -> bool:
        """Whether the arm is something a user can do without training (a fixed line, repetition, π_F rewriting
        its own answer): trained arms report their paired gain over the strongest of these too."""
        return self in NO_LEARNING_BASELINES

    @property
    def checkpoint_role(self) -> str | None:
        """'prompter' / 'target' for an arm that needs a trained model, else None."""
        return _CHECKPOINT_ROLE.get(self)

    @property
    def form(self) -> str:
        """How the arm is written in a list of arms (evaluate's 'arms'); only suffix takes a text (its line)."""
        if self is Arm.SUFFIX:
            return f"{self.value}[=<line appended to x>]"
        return self.value + (f"=<{self.checkpoint_role} checkpoint spec>" if self.checkpoint_role else "")


_TITLES = {
    Arm.NO_FT: "No fine-tuning",
    Arm.CLOSED_FORM: "Align-Pro (closed-form ρ*, eq 10)",
    Arm.CLOSED_FORM_REWRITES_ONLY: "Align-Pro (closed-form ρ*, rewrites only)",
    Arm.ALIGN_PRO: "Align-Pro (trained prompter)",
    Arm.ALIGN_PRO_SFT: "Align-Pro (the trained prompter's SFT start ρ_sft)",
    Arm.CLOSED_FORM_TRAINED: "Align-Pro (closed-form ρ* over the trained prompter)",
    Arm.ORACLE: "Oracle (RLHF-tuned target)",
    Arm.SUFFIX: "x + a fixed line (no learning)",
    Arm.REPEAT: "x repeated twice (no learning)",
    Arm.BEST_SUFFIX: "x + the best catalog line, chosen on train prompts (no learning)",
    Arm.ANSWER_REWRITE: "π_F rewrites its own answer to follow x (no learning)",
}
_CHECKPOINT_ROLE = {Arm.ALIGN_PRO: "prompter", Arm.ALIGN_PRO_SFT: "prompter", Arm.CLOSED_FORM_TRAINED: "prompter",
                    Arm.ORACLE: "target"}
BASELINE = Arm.NO_FT.value
#: the no-learning baselines (beside no_ft) that trained arms are compared against
NO_LEARNING_BASELINES: frozenset[Arm] = frozenset({Arm.SUFFIX, Arm.REPEAT, Arm.BEST_SUFFIX, Arm.ANSWER_REWRITE})

#: how each no-learning baseline is written in a list of arms (the demo's 'baselines', evaluate's 'arms')
BASELINE_FORMS = tuple(a.form for a in Arm if a in NO_LEARNING_BASELINES)

#: seed offset of every arm's fresh answers (keyed streams: coupled across arms)
FRESH_SEED = 100
#: seed offset of answer_rewrite's second stage (π_F rewriting its answer; keyed by x and the answer's index)
ANSWER_REWRITE_SEED = 700
#: seed offset of a closed form's rollouts: its rewrites (+ the index of a chunk's first prompt) and R̂ answers
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
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        return self.target.answer(prompts, n=n, seed=seed, systems=self.systems if systems is None else systems,
                                  keys=keys)


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

    def __post_init__(self) -> None:
        """The one check of the closed form's settings (k ≥ 1, m ≥ 1, λ ≥ 0, 0 ≤ α < 1), naming the setting."""
        for name in ("k", "m"):
            if getattr(self, name) < 1:
                raise ConfigError(f"setting '{name}' must be >= 1, got {getattr(self, name)}")
        if not self.lam >= 0:  # NaN fails too
            raise ConfigError(f"setting 'lam' must be >= 0 (0 = argmax, inf = no optimisation), got {self.lam}")
        if not 0 <= self.identity_prior < 1:
            raise ConfigError(f"setting 'identity_prior' must be in [0, 1), got {self.identity_prior}")


@dataclass
class ClosedFormConfig:
    """The closed form's settings as settings of a command (flags = YAML keys): the one declaration the demo's and
    evaluate's configs inherit."""

    k: int = setting(4, "K: LM rewrites sampled from ρ_sft per prompt (the closed-form arms)")
    m: int = setting(2, "M: answers per candidate used to estimate R̂(x, x′)")
    lam: float = setting(0.1, "λ, the prompt-tuning parameter of eq (9)/(10) (0 = argmax, inf = ρ_sft)")
    identity_prior: float = setting(0.5, "ρ_sft's prior mass α on keeping x unchanged (0 = rewrites only)")

    def __post_init__(self) -> None:
        self.closed_form_settings()  # raises ConfigError on a bad setting

    def closed_form_settings(self) -> ClosedFormSettings:
        """These settings, checked (:meth:`ClosedFormSettings.__post_init__`)."""
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
        self.keys = prompt_keys(self.prompts, self.systems)  #: (N,) each x's stream key, shared by every arm

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
                     systems: list[str | None], keys: list[str], *, n: int, seed: int, chunk: int,
                     progress: Progress | None = None) -> FreshAnswers:
    """``n`` fresh answers to each prompt of ``shown`` (x or x′), scored against ``originals``; answer j to prompt i
    draws from the stream (seed, keys[i], j), so chunking changes nothing."""
    texts, tokens, scores = [], [], []
    for a, b in chunk_bounds(len(shown), chunk):
        rows = bind(target, systems[a:b], originals[a:b]).answer(shown[a:b], n=n, seed=seed, keys=keys[a:b])
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
    """Fresh answers of π_F to ``shown`` (x for no_ft, else the arm's x′), coupled: every arm draws from
    ``seed + FRESH_SEED`` keyed by x, and only the (x, x′) no arm has had answered yet are answered."""
    need = [i for i, x in enumerate(shown) if (i, x) not in run.fresh]
    if progress and len(need) < len(shown):
        progress(len(shown) - len(need))
    got = answer_and_score(target, reward, [shown[i] for i in need], [run.prompts[i] for i in need],
                           [run.systems[i] for i in need], [run.keys[i] for i in need], n=run.n,
                           seed=run.seed + FRESH_SEED, chunk=run.chunk, progress=progress)
    run.fresh.update({(i, shown[i]): (t, k, r) for i, t, k, r in zip(need, got.texts, got.tokens, got.rewards)})
    rows = [run.fresh[(i, x)] for i, x in enumerate(shown)]
    run.answers[arm.value] = [r[0] for r in rows]
    run.tokens[arm.value] = [r[1] for r in rows]
    run.rewards[arm.value] = np.stack([r[2] for r in rows]) if rows else np.zeros((0, run.n))  # (N, n)
    if arm is not Arm.NO_FT:
        run.rewrites[arm.value] = list(shown)


def answer_oracle(run: ArmRun, oracle: Target, reward: RewardModel, progress: Progress | None = None) -> None:
    """The oracle (another π) answers x: answers of its own (never π_F's), on π_F's coupled streams."""
    got = answer_and_score(oracle, reward, run.prompts, run.prompts, run.systems, run.keys, n=run.n,
                           seed=run.seed + FRESH_SEED, chunk=run.chunk, progress=progress)
    arm = Arm.ORACLE.value
    run.answers[arm], run.tokens[arm], run.rewards[arm] = got.texts, got.tokens, got.rewards


def answer_baseline(run: ArmRun, arm: Arm, target: Target, reward: RewardModel, *, line: str | None = None,
                    progress: Progress | None = None) -> None:
    """A no-learning baseline arm (one of :data:`NO_LEARNING_BASELINES`): fresh, coupled answers scored against x.

    suffix / repeat / best_suffix: π_F answers :func:`alignpro.baselines.shown_prompts` (``line`` replaces
    suffix's default line or best_suffix's recorded one). answer_rewrite: π_F's answers to x (no_ft's, coupled
    and reused; answered first if no_ft has not run) are each rewritten by π_F answering
    :func:`alignpro.baselines.answer_rewrite_request` once, from ``seed + ANSWER_REWRITE_SEED`` keyed by (x, j);
    the arm's answers are the rewritten ones."""
    if arm not in NO_LEARNING_BASELINES:
        raise ValueError(f"arm '{arm.value}' is not a no-learning baseline")
    if arm is not Arm.ANSWER_REWRITE:
        used = baselines.resolve_line(arm.value, line)
        run.diagnostics[arm.value] = {} if used is None else {"line": used}
        if arm is Arm.BEST_SUFFIX and line is None:
            choice = baselines.load_choice()
            run.diagnostics[arm.value].update(chosen_in=choice.source, command=choice.command)
        return answer_arm(run, arm, target, reward, baselines.shown_prompts(arm.value, run.prompts, used), progress)
    first = [run.fresh.get((i, x)) for i, x in enumerate(run.prompts)]
    if any(f is None for f in first):  # no_ft has not run: its answers are this arm's first stage
        answer_arm(run, Arm.NO_FT, target, reward, run.prompts)
        first = [run.fresh[(i, x)] for i, x in enumerate(run.prompts)]
    n = run.n
    requests = [baselines.answer_rewrite_request(x, y) for x, row in zip(run.prompts, first) for y in row[0]]
    keys = [f"{k}\x1f{j}" for k in run.keys for j in range(n)]
    per_call = max(1, run.batch_size // n) * n  # whole prompts per call, so the bar counts prompts as they finish
    got = answer_and_score(target, reward, requests, [x for x in run.prompts for _ in range(n)],
                           [s for s in run.systems for _ in range(n)], keys, n=1,
                           seed=run.seed + ANSWER_REWRITE_SEED, chunk=per_call,
                           progress=(lambda done: progress(done // n)) if progress else None)
    a = arm.value
    run.answers[a], run.tokens[a] = ([[t[0] for t in got_[i * n:(i + 1) * n]] for i in range(len(run.prompts))]
                                     for got_ in (got.texts, got.tokens))
    run.rewards[a] = got.rewards.reshape(len(run.prompts), n)  # (N, n) r(x, rewritten y)
    run.diagnostics[a] = {"request": baselines.ANSWER_REWRITE_REQUEST}


def parse_baseline(entry: str) -> tuple[Arm, str | None]:
    """'suffix=TEXT' → (Arm.SUFFIX, 'TEXT'); a baseline's name → (its arm, None); ConfigError otherwise."""
    name, line = baselines.parse_entry(entry)
    return Arm(name), line


def answer_baselines(run: ArmRun, entries: Sequence[str], target: Target, reward: RewardModel,
                     bar: Callable[[str], Any]) -> None:
    """The baselines written in ``entries`` (:func:`parse_baseline`), in order, each under the progress bar
    ``bar(arm name)`` (a context manager with ``update``)."""
    for arm, line in map(parse_baseline, entries):
        with bar(arm.value) as b:
            answer_baseline(run, arm, target, reward, line=line, progress=b.update)


def rewrite_once(run: ArmRun, prompter, progress: Progress | None = None, arm: Arm = Arm.ALIGN_PRO) -> list[str]:
    """A trained prompter's one x′ per prompt (arm align_pro, or align_pro_sft: its SFT start), from
    ``seed + REWRITE_SEED`` (the same for both, so they differ by their weights only); records the fraction of
    rewrites parsed."""
    sets = prompter.rewrite(run.prompts, 1, seed=run.seed + REWRITE_SEED)
    run.diagnostics[arm.value] = {"rewrites_parsed_fraction": float(np.mean([s.rewrites[0].parsed for s in sets]))}
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
    """R̂(x, x′) from ``prompter``'s K rewrites (+ x when α > 0) and M answers each (answer j of every candidate of
    x from one stream, keyed by x: coupled), then ρ* and one x′ per prompt
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
                                         identity_prior=cf.identity_prior, seed=run.seed + ROLLOUT_SEED[arm] + a,
                                         keys=run.keys[a:b], answer_seed=run.seed + ROLLOUT_SEED[arm]))
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
