"""Experiments on tabular instances: ``verify`` (many random instances) and ``sweep`` (one instance, many λ).

* :func:`verify_random_instances` measures, exactly, how Theorem 1 (eq 11), the decomposition (eq 7) and Lemma 1
  (eq 10 maximises eq 9) fare on random instances, and checks Lemma 1 two independent ways: a SciPy optimiser
  of eq (9) from generic starting points, and random perturbations of ρ* on the simplex.
* :func:`lambda_sweep` computes gap, bound and KL(ρ*‖ρ_sft) over a log grid of λ; :func:`write_sweep_csv` and
  :func:`plot_sweep` save them.

Everything here is deterministic given its seed.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignpro.theory.tabular import (
    TabularInstance, analyse, frozen_reward, prompter_objective_per_prompt, random_instance,
)

TOLERANCE = 1e-9
"""Float-rounding allowance, in units of ``r_max``, for every "must hold" comparison (bound, eq 7, Lemma 1)."""

CONVERGED = 1e-6
"""The optimiser "reached" ρ* on an instance when it ends within ``CONVERGED · r_max`` of ρ*'s objective."""


# ---------------------------------------------------------------------------------------------------------------
# Lemma 1, checked numerically
# ---------------------------------------------------------------------------------------------------------------

def numerical_prompter(rho_sft: np.ndarray, R: np.ndarray, lam: float, rng: np.random.Generator,
                       max_iter: int = 300) -> np.ndarray:
    """Maximise eq (9) for every prompt ``x`` with SciPy's L-BFGS-B, never using the closed form (10).

    Parametrisation: ``ρ(·|x) = softmax(log ρ_sft(·|x) + k θ_x)`` on the support of ``ρ_sft(·|x)`` (outside it
    the KL of eq 9 is infinite), ``k = min(1, max|R|/λ)`` so that θ is O(1) whatever λ. Rows are independent, so
    all n rows are optimised at once, and the best of four runs is kept per row. Starts: ``ρ_sft`` with N(0, k²)
    logit noise; a uniformly random point of the simplex (Dirichlet(1)); 90 % of the mass on the best rewrite of
    the *unregularised* problem (8); and, last, half the best point so far plus half uniform. (Softmax
    parametrisations stall on plateaus near the simplex's vertices when λ ≪ max R, hence the vertex start; the
    optimiser can still stop short of ρ* there, which ``verify`` reports as its shortfall.)
    ``rho_sft``, ``R`` (n, n) → ρ (n, n).
    """
    from scipy.optimize import minimize  # SciPy is only needed here

    n = rho_sft.shape[0]
    support = rho_sft > 0  # (n, n)
    log_sft = np.log(np.where(support, rho_sft, 1.0))  # (n, n), 0 off the support (masked below)
    off_support = np.where(support, 0.0, -np.inf)  # (n, n) additive mask for the logits
    R_on = np.where(support, R, 0.0)
    scale = max(float(np.abs(R).max()), 1e-12)
    k = min(1.0, scale / lam)

    def softmax(theta: np.ndarray) -> np.ndarray:
        logits = log_sft + off_support + theta.reshape(n, n) * k
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)

    def negative_objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        rho = softmax(theta)  # (n, n); exactly 0 off the support (and where it underflows)
        log_ratio = np.log(np.maximum(rho, 1e-300)) - log_sft  # log ρ/ρ_sft, finite; multiplied by ρ below
        value = float((rho * (R_on - lam * log_ratio)).sum())  # Σ_x eq (9) inner objective
        d_rho = R_on - lam * (log_ratio + 1.0)  # ∂/∂ρ
        d_theta = rho * (d_rho - (rho * d_rho).sum(axis=1, keepdims=True)) * k  # softmax chain rule
        return -value / scale, -d_theta.ravel() / scale

    def theta_for(rho: np.ndarray) -> np.ndarray:
        return (np.where(support, np.log(np.where(support, rho, 1.0)) - log_sft, 0.0) / k).ravel()

    greedy = np.where(support, R, -np.inf).argmax(axis=1)  # best rewrite of eq (8), per x
    near_vertex = np.full((n, n), 0.1 / n)
    near_vertex[np.arange(n), greedy] += 0.9
    starts = [rng.standard_normal(n * n),  # ρ_sft with N(0, k²) logit noise
              theta_for(rng.dirichlet(np.ones(n), size=n)),  # a random point of the simplex
              theta_for(near_vertex)]
    uniform = support / support.sum(axis=1, keepdims=True)
    best = best_value = None
    for attempt in range(len(starts) + 1):
        # the last start polishes: half the best point so far, half uniform on the support
        theta0 = starts[attempt] if attempt < len(starts) else theta_for(0.5 * best + 0.5 * uniform)
        result = minimize(negative_objective, theta0, jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "gtol": 1e-12, "ftol": 1e-15})
        rho = softmax(result.x)
        value = prompter_objective_per_prompt(rho, rho_sft, R, lam)  # (n,)
        if best is None:
            best, best_value = rho, value
        else:
            better = value > best_value
            best = np.where(better[:, None], rho, best)
            best_value = np.maximum(value, best_value)
    return best


def perturbation_gain(rho_star: np.ndarray, rho_sft: np.ndarray, R: np.ndarray, lam: float,
                      rng: np.random.Generator, count: int = 32) -> float:
    """Largest increase of the eq (9) inner objective, over all prompts, among ``count`` random perturbations
    of ρ* per prompt (Lemma 1 says it is ≤ 0).

    Half are mixtures ``(1 − ε) ρ* + ε q`` with ``q`` uniform on the simplex over supp ρ_sft and
    ``ε`` log-uniform on [1e-6, 1]; half are log-space moves ``ρ* · exp(σ ξ)`` renormalised, ``ξ ∼ N(0, 1)``,
    ``σ`` log-uniform on [1e-6, 10].
    """
    n = rho_star.shape[0]
    support = rho_sft > 0
    half = count // 2
    q = rng.gamma(1.0, size=(half, n, n)) * support  # (K/2, n, n) Dirichlet(1) on the support
    q /= q.sum(axis=-1, keepdims=True)
    eps = 10.0 ** rng.uniform(-6, 0, size=(half, n, 1))
    mixtures = (1 - eps) * rho_star + eps * q
    sigma = 10.0 ** rng.uniform(-6, 1, size=(count - half, n, 1))
    with np.errstate(divide="ignore"):
        logits = np.log(rho_star) + sigma * rng.standard_normal((count - half, n, n))
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    moves = weights / weights.sum(axis=-1, keepdims=True)
    candidates = np.concatenate([mixtures, moves])  # (K, n, n)
    base = prompter_objective_per_prompt(rho_star, rho_sft, R, lam)  # (n,)
    return float((prompter_objective_per_prompt(candidates, rho_sft, R, lam) - base).max())


# ---------------------------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyReport:
    """What ``alignpro theory verify`` measured. Differences are raw (not divided by r_max); a check fails on an
    instance when its difference exceeds ``tolerance · r_max``."""

    instances: int
    seed: int
    tolerance: float
    max_gap_minus_bound: float
    """max over instances of gap − bound (eq 5 minus eq 11); Theorem 1 says ≤ 0."""
    theorem1_violations: int
    max_decomposition_error: float
    """max |gap − E(Δ1 + Δ2)| (eq 7)."""
    decomposition_violations: int
    min_delta1: float
    """min over instances and prompts of Δ1(x) (the paper: Δ1 ≥ 0)."""
    delta1_violations: int
    lemma1_violations: int
    """Instances where the optimiser or a perturbation beat ρ* on eq (9) by more than the tolerance."""
    lemma1_optimiser_instances: int
    lemma1_optimiser_max_gain: float
    """max of (objective found by SciPy) − (objective of ρ*), per prompt; ≤ 0 by Lemma 1."""
    lemma1_optimiser_max_shortfall: float
    """max of (objective of ρ*) − (objective found by SciPy), per prompt: how far the optimiser stopped short."""
    lemma1_optimiser_converged: int
    """Optimiser instances whose every prompt ended within ``1e-6 · r_max`` of ρ*'s objective."""
    lemma1_perturbation_instances: int
    lemma1_perturbations_per_prompt: int
    lemma1_perturbation_max_gain: float
    nonfinite: int
    """Instances where any computed quantity was NaN or infinite."""
    vacuous_fraction: float
    """Share of instances whose bound is ≥ r_max (the trivial bound, since J ∈ [0, r_max])."""
    negative_gap_fraction: float
    """Share of instances where π̃_ρ* beats π* on r (gap < 0, the paper's Q2)."""
    median_relative_slack: float
    """median of (bound − gap) / r_max."""
    wall_s: float

    @property
    def passed(self) -> bool:
        """True when no check failed on any instance."""
        return not (self.theorem1_violations or self.decomposition_violations or self.delta1_violations
                    or self.lemma1_violations or self.nonfinite)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the ``verify --json`` object), with ``passed``."""
        return {**asdict(self), "passed": self.passed}


def random_case(rng: np.random.Generator, max_n: int = 8, max_m: int = 8) -> tuple[TabularInstance, float, float]:
    """A random instance with ``λ`` and ``β`` each log-uniform on [1e-4, 1e4]."""
    instance = random_instance(rng, max_n=max_n, max_m=max_m)
    lam, beta = 10.0 ** rng.uniform(-4, 4, size=2)
    return instance, float(lam), float(beta)


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS/LAPACK to one thread while it runs, when ``threadpoolctl`` is importable.

    Every matrix here is at most 64 × 64; OpenBLAS waking threads for them (notably inside SciPy's L-BFGS-B)
    costs several times the arithmetic on a busy machine. Scoped to the call: nothing global changes.
    """
    import scipy.optimize  # noqa: F401  load SciPy's own OpenBLAS first: only loaded libraries get limited
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only a speed-up
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def verify_random_instances(instances: int, seed: int, optimiser_instances: int = 500,
                            perturbations: int = 32, max_n: int = 8, max_m: int = 8) -> VerifyReport:
    """Draw ``instances`` random cases (see :func:`random_case`) and measure every check on each.

    Eqs (5), (7), (11) and the perturbation check of Lemma 1 run on every instance; the SciPy optimiser of
    eq (9) (:func:`numerical_prompter`, ~20 ms an instance) on the first ``optimiser_instances`` of them.
    """
    with single_threaded_blas():
        return _verify(instances, seed, optimiser_instances, perturbations, max_n, max_m)


def _verify(instances: int, seed: int, optimiser_instances: int, perturbations: int, max_n: int,
            max_m: int) -> VerifyReport:
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    gap_minus_bound, decomposition_error, delta1_min, slack = [], [], [], []
    theorem1_bad = decomposition_bad = delta1_bad = lemma1_bad = nonfinite = vacuous = negative_gap = 0
    opt_gain = opt_shortfall = perturb_gain = -math.inf
    opt_count = opt_converged = 0
    for i in range(instances):
        instance, lam, beta = random_case(rng, max_n, max_m)
        result = analyse(instance, lam, beta)
        tol = TOLERANCE * instance.r_max
        R = frozen_reward(instance.pi_F, instance.r)
        delta1_x = (result.pi_star * instance.r).sum(-1) - (instance.pi_F * instance.r).sum(-1)  # (n,) eq (7)
        values = [result.gap, result.delta1, result.delta2, result.bound.total, result.objective, result.kl]
        if not (all(math.isfinite(v) for v in values) and np.isfinite(result.rho_star).all()):
            nonfinite += 1
            continue
        gap_minus_bound.append(result.gap - result.bound.total)
        theorem1_bad += gap_minus_bound[-1] > tol
        decomposition_error.append(abs(result.gap - (result.delta1 + result.delta2)))
        decomposition_bad += decomposition_error[-1] > tol
        delta1_min.append(float(delta1_x.min()))
        delta1_bad += delta1_min[-1] < -tol
        slack.append((result.bound.total - result.gap) / instance.r_max)
        vacuous += result.bound.total >= instance.r_max
        negative_gap += result.gap < 0
        # Lemma 1: nothing on the simplex beats ρ* on eq (9), prompt by prompt.
        gain = perturbation_gain(result.rho_star, instance.rho_sft, R, lam, rng, perturbations)
        perturb_gain = max(perturb_gain, gain)
        beaten = gain > tol
        if i < optimiser_instances:
            rho_num = numerical_prompter(instance.rho_sft, R, lam, rng)
            diff = (prompter_objective_per_prompt(rho_num, instance.rho_sft, R, lam)
                    - prompter_objective_per_prompt(result.rho_star, instance.rho_sft, R, lam))  # (n,)
            opt_count += 1
            opt_gain = max(opt_gain, float(diff.max()))
            opt_shortfall = max(opt_shortfall, float(-diff.min()))
            opt_converged += bool(-diff.min() <= CONVERGED * instance.r_max)
            beaten = beaten or diff.max() > tol
        lemma1_bad += bool(beaten)
    finite = max(len(slack), 1)
    return VerifyReport(
        instances=instances, seed=seed, tolerance=TOLERANCE,
        max_gap_minus_bound=max(gap_minus_bound, default=math.nan), theorem1_violations=int(theorem1_bad),
        max_decomposition_error=max(decomposition_error, default=math.nan),
        decomposition_violations=int(decomposition_bad),
        min_delta1=min(delta1_min, default=math.nan), delta1_violations=int(delta1_bad),
        lemma1_violations=int(lemma1_bad), lemma1_optimiser_instances=opt_count,
        lemma1_optimiser_max_gain=opt_gain if opt_count else math.nan,
        lemma1_optimiser_max_shortfall=opt_shortfall if opt_count else math.nan,
        lemma1_optimiser_converged=opt_converged,
        lemma1_perturbation_instances=len(slack), lemma1_perturbations_per_prompt=perturbations,
        lemma1_perturbation_max_gain=perturb_gain if slack else math.nan,
        nonfinite=nonfinite, vacuous_fraction=vacuous / finite, negative_gap_fraction=negative_gap / finite,
        median_relative_slack=float(np.median(slack)) if slack else math.nan,
        wall_s=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------------------------

SWEEP_COLUMNS = ("lam", "gap", "delta1", "delta2", "term1", "term2", "term3", "bound", "kl", "objective",
                 "vacuous")


@dataclass(frozen=True)
class SweepResult:
    """Theory quantities along a log grid of λ (each array has one entry per λ); β and the instance fixed."""

    r_max: float
    beta: float
    lam: np.ndarray
    gap: np.ndarray
    delta1: np.ndarray
    delta2: np.ndarray
    term1: np.ndarray
    term2: np.ndarray
    term3: np.ndarray
    bound: np.ndarray
    kl: np.ndarray
    """``E_x KL(ρ*(·|x)‖ρ_sft(·|x))``."""
    objective: np.ndarray

    @property
    def vacuous(self) -> np.ndarray:
        """Where the bound is ≥ the trivial bound r_max (J ∈ [0, r_max] makes any gap ≤ r_max)."""
        return self.bound >= self.r_max

    def vacuous_ranges(self) -> list[tuple[float, float]]:
        """The (first λ, last λ) of each run of grid points where the bound is vacuous."""
        return [(float(self.lam[a]), float(self.lam[b])) for a, b in _runs(self.vacuous)]


def lambda_sweep(instance: TabularInstance, beta: float, lam_min: float = 1e-4, lam_max: float = 1e4,
                 points: int = 161) -> SweepResult:
    """Analyse ``instance`` at ``points`` values of λ, log-spaced from ``lam_min`` to ``lam_max``."""
    lams = np.logspace(math.log10(lam_min), math.log10(lam_max), points)
    rows = [analyse(instance, float(lam), beta) for lam in lams]

    def column(get: Any) -> np.ndarray:
        return np.array([get(a) for a in rows], dtype=float)

    return SweepResult(
        r_max=instance.r_max, beta=beta, lam=lams, gap=column(lambda a: a.gap),
        delta1=column(lambda a: a.delta1), delta2=column(lambda a: a.delta2),
        term1=column(lambda a: a.bound.term1), term2=column(lambda a: a.bound.term2),
        term3=column(lambda a: a.bound.term3), bound=column(lambda a: a.bound.total),
        kl=column(lambda a: a.kl), objective=column(lambda a: a.objective),
    )


def write_sweep_csv(sweep: SweepResult, path: str | Path) -> Path:
    """One row per λ with the columns :data:`SWEEP_COLUMNS` (``vacuous`` is 0/1)."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SWEEP_COLUMNS)
        for i in range(sweep.lam.size):
            writer.writerow([f"{getattr(sweep, c)[i]:.12g}" for c in SWEEP_COLUMNS[:-1]]
                            + [int(sweep.vacuous[i])])
    return path


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive index ranges of the maximal runs of True in ``mask``."""
    runs, start = [], None
    for i, flag in enumerate(mask):
        if flag and start is None:
            start = i
        if not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(mask) - 1))
    return runs


def plot_sweep(sweep: SweepResult, path: str | Path, title: str = "") -> Path:
    """Two panels over a log λ axis: gap, bound (eq 11) and r_max with the vacuous region shaded; then
    KL(ρ*‖ρ_sft) and λ·KL (the size of the bound's third term)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 7), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    lam = sweep.lam
    # shade the vacuous λ ranges, extending half a grid step each side so single points show
    edges = np.sqrt(lam[:-1] * lam[1:]) if lam.size > 1 else lam
    for j, (a, b) in enumerate(_runs(sweep.vacuous)):
        left = lam[0] if a == 0 else edges[a - 1]
        right = lam[-1] if b == lam.size - 1 else edges[b]
        for ax in (top, bottom):
            label = "bound vacuous (≥ r_max)" if ax is top and j == 0 else None
            ax.axvspan(left, right, color="tab:red", alpha=0.12, lw=0, label=label)
    top.plot(lam, sweep.bound, color="tab:red", lw=2, label="Theorem 1 bound (eq 11)")
    top.plot(lam, sweep.term1 + sweep.term2, color="tab:red", lw=1, ls=":",
             label="term1 + term2 (the bound without its λ·KL term)")
    top.plot(lam, sweep.gap, color="tab:blue", lw=2, label=r"gap $J(\pi^*) - J(\tilde\pi_{\rho^*})$ (eq 5)")
    top.plot(lam, sweep.delta1, color="tab:green", lw=1, ls="--",
             label=r"$E\,\Delta_1$ (eq 7, no prompter can reduce it)")
    top.axhline(sweep.r_max, color="black", lw=1, ls="-.", label=f"trivial bound r_max = {sweep.r_max:g}")
    top.axhline(0.0, color="grey", lw=0.5)
    top.set_ylabel("reward units")
    top.set_title(title or f"Align-Pro Theorem 1 against λ (β = {sweep.beta:g})")
    top.legend(fontsize=8, loc="best")
    top.grid(True, which="major", alpha=0.3)
    bottom.plot(lam, sweep.kl, color="tab:purple", lw=2, label=r"$E\,KL(\rho^*\|\rho_{sft})$ (nats)")
    bottom.plot(lam, -sweep.term3, color="tab:orange", lw=1.5, ls="--",
                label=r"$\lambda\,E\,KL$ = −term3 (reward units)")
    if (sweep.kl > 0).all() and (-sweep.term3 > 0).all():
        bottom.set_yscale("log")
    bottom.set_xscale("log")
    bottom.set_xlabel("λ (prompter KL weight, log scale)")
    bottom.set_ylabel(r"KL  /  $\lambda\cdot$KL")
    bottom.legend(fontsize=8, loc="best")
    bottom.grid(True, which="major", alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
