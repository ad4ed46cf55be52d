"""Exact Align-Pro quantities on finite (tabular) instances: eqs (3)-(11) of the paper.

Conventions (used by every function here):

* prompts ``X = {0, …, n−1}``; the rewritten prompt ``x′`` ranges over the same set, so a prompter ``ρ`` is an
  ``(n, n)`` row-stochastic matrix with ``ρ[x, x′] = ρ(x′|x)``;
* responses ``Y = {0, …, m−1}``; a policy ``π`` is an ``(n, m)`` row-stochastic matrix, ``π[x, y] = π(y|x)``;
* the reward ``r[x, y] = r*(x, y)`` lies in ``[0, r_max]`` and always scores the *original* prompt ``x``;
* ``P`` is the prompt distribution, shape ``(n,)``; every ``E_x`` below is weighted by ``P``;
* ``d_TV(p, q) = ½‖p − q‖₁`` and ``KL(p‖q) = Σ p log(p/q)`` (natural log, ``0 log 0 = 0``), row-wise;
* ``λ > 0`` (``lam``) is the prompter tuning parameter, ``β > 0`` (``beta``) the alignment tuning parameter.

All functions are pure functions of NumPy arrays. The Gibbs tilts of eqs (4) and (10) are computed in log space
(log-sum-exp), so ``λ`` and ``β`` anywhere in ``[1e-4, 1e4]`` (and well beyond) give no overflow and no NaN;
zero probabilities are allowed (``log 0 = −inf`` is handled explicitly).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignpro.errors import AlignProError

__all__ = [
    "InvalidInstanceError", "TabularInstance", "GapDecomposition", "Theorem1Bound", "Analysis",
    "tv_distance", "kl_divergence", "frozen_reward", "optimal_policy", "optimal_prompter", "prompter_log_partition",
    "optimal_prompter_kl", "composed_policy", "expected_reward", "prompter_objective_per_prompt",
    "prompter_objective", "suboptimality_gap", "gap_decomposition", "theorem1_bound", "analyse", "random_instance",
]

ROW_SUM_TOL = 1e-6
"""How far a row of P, ρ_sft or π_F may be from summing to 1 in an instance file."""


class InvalidInstanceError(AlignProError):
    """A tabular instance (P, ρ_sft, π_F, r, r_max) breaks the conventions of :mod:`alignpro.theory.tabular`."""


# ---------------------------------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------------------------------

def tv_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total variation ``d_TV(p, q) = ½ Σ_i |p_i − q_i|`` along the last axis (broadcasting over the rest)."""
    return 0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum(axis=-1)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``KL(p‖q) = Σ_i p_i log(p_i/q_i)`` along the last axis, with ``0 log 0 = 0``; ``inf`` where p ≪ q fails."""
    p = np.asarray(p, float)
    q = np.broadcast_to(np.asarray(q, float), p.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)  # (..., k); +inf where p > 0 = q
    return terms.sum(axis=-1)


def _log(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(a, float))


def _normalised_tilt(base: np.ndarray, score: np.ndarray, temperature: float) -> np.ndarray:
    """Row-normalise ``base · exp(score / temperature)`` in log space (the Gibbs form of eqs (4) and (10))."""
    logits = _log(base) + np.asarray(score, float) / temperature  # (rows, k); −inf where base = 0
    logits = logits - logits.max(axis=-1, keepdims=True)  # log-sum-exp shift: the largest entry becomes exp(0)=1
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def _check_temperature(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise InvalidInstanceError(f"{name} must be a finite number > 0, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------------
# The paper's equations
# ---------------------------------------------------------------------------------------------------------------

def frozen_reward(pi_F: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Lemma 1's ``R(x, x′) = E_{y∼π_F(·|x′)} r*(x, y)``: the reward for ``x`` of the frozen answer to ``x′``.

    ``pi_F`` (n, m), ``r`` (n, m) → ``R`` (n, n) with ``R[x, x′] = Σ_y r[x, y] π_F[x′, y]``.
    """
    return np.asarray(r, float) @ np.asarray(pi_F, float).T  # (n, m) @ (m, n) -> (n, n)


def optimal_policy(pi_F: np.ndarray, r: np.ndarray, beta: float) -> np.ndarray:
    """Eq (4): the RLHF-optimal policy ``π*(y|x) = π_F(y|x) exp(r*(x, y)/β) / Z*(x)``.

    The reference policy of eq (2) is the frozen model ``π_F`` (as in eq (4)). ``pi_F``, ``r`` (n, m) → (n, m).
    """
    return _normalised_tilt(pi_F, r, _check_temperature("beta", beta))


def optimal_prompter(rho_sft: np.ndarray, R: np.ndarray, lam: float) -> np.ndarray:
    """Eq (10) (Lemma 1): ``ρ*(x′|x) = ρ_sft(x′|x) exp(R(x, x′)/λ) / Z(x)``, the maximiser of eq (9).

    ``rho_sft`` (n, n), ``R = frozen_reward(pi_F, r)`` (n, n) → ``ρ*`` (n, n).
    """
    return _normalised_tilt(rho_sft, R, _check_temperature("lam", lam))


def _tilt_offsets(rho_sft: np.ndarray, R: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``δ = (R − R_top)/λ ≤ 0`` on the support of ρ_sft (R_top: the row's best R there) and the log-mean-exp
    ``L(x) = log Σ_{x′} ρ_sft(x′|x) e^{δ(x, x′)}``, computed with ``log1p``/``expm1`` when ``δ`` is small
    (λ ≫ R) and with ``log`` otherwise, so neither λ → 0 nor λ → ∞ loses precision. Returns (δ, R_top, L)."""
    rho_sft, R = np.asarray(rho_sft, float), np.asarray(R, float)
    support = rho_sft > 0
    R_top = np.where(support, R, -np.inf).max(axis=-1)  # (n,)
    delta = np.where(support, (R - R_top[..., None]) / lam, 0.0)  # (n, n), ≤ 0
    weights = rho_sft / rho_sft.sum(axis=-1, keepdims=True)
    mean_expm1 = (weights * np.expm1(delta)).sum(axis=-1)  # (n,)  E_sft[e^δ] − 1 ∈ (−1, 0]
    with np.errstate(divide="ignore"):
        log_mean = np.where(mean_expm1 > -0.5, np.log1p(np.maximum(mean_expm1, -0.5)),
                            np.log((weights * np.exp(delta)).sum(axis=-1)))
    return delta, R_top, log_mean


def prompter_log_partition(rho_sft: np.ndarray, R: np.ndarray, lam: float) -> np.ndarray:
    """Lemma 1's ``log Z(x) = log Σ_{x′} ρ_sft(x′|x) exp(R(x, x′)/λ)``, in log space. (n, n) → (n,).

    ``λ log Z(x)`` is the maximum of the eq (9) inner objective for prompt ``x`` (its value at ρ*).
    """
    lam = _check_temperature("lam", lam)
    _, R_top, log_mean = _tilt_offsets(rho_sft, R, lam)
    return R_top / lam + log_mean


def optimal_prompter_kl(rho_sft: np.ndarray, R: np.ndarray, lam: float) -> np.ndarray:
    """``KL(ρ*(·|x)‖ρ_sft(·|x))`` for the ρ* of eq (10), per prompt, without forming ``log ρ*``. (n, n) → (n,).

    Uses ``log ρ*/ρ_sft = R/λ − log Z`` so that ``KL = E_{ρ*}[δ] − L`` with the centred ``δ``, ``L`` of eq (10)'s
    normaliser: the absolute error of ``λ·KL`` stays at float rounding of ``R`` even for λ = 1e4, where the
    generic :func:`kl_divergence` would multiply the rounding of ρ* by λ.
    """
    lam = _check_temperature("lam", lam)
    delta, _, log_mean = _tilt_offsets(rho_sft, R, lam)
    rho_star = optimal_prompter(rho_sft, R, lam)
    return np.maximum((rho_star * delta).sum(axis=-1) - log_mean, 0.0)  # KL ≥ 0; clip rounding below 0


def composed_policy(rho: np.ndarray, pi_F: np.ndarray) -> np.ndarray:
    """Eq (3): ``π̃_ρ(y|x) = Σ_{x′} π_F(y|x′) ρ(x′|x)``, the frozen model behind the prompter.

    ``rho`` (…, n, n), ``pi_F`` (n, m) → (…, n, m).
    """
    return np.asarray(rho, float) @ np.asarray(pi_F, float)


def expected_reward(P: np.ndarray, policy: np.ndarray, r: np.ndarray) -> float:
    """``J(π) = E_{x∼P, y∼π(·|x)} r*(x, y)`` (used in eqs (5)-(6)). ``P`` (n,), ``policy``, ``r`` (n, m)."""
    return float(np.asarray(P, float) @ (np.asarray(policy, float) * np.asarray(r, float)).sum(axis=-1))


def prompter_objective_per_prompt(rho: np.ndarray, rho_sft: np.ndarray, R: np.ndarray, lam: float) -> np.ndarray:
    """The inner part of eq (9) for each prompt ``x``: ``E_{x′∼ρ(·|x)} R(x, x′) − λ KL(ρ(·|x)‖ρ_sft(·|x))``.

    ``rho`` (…, n, n) (leading axes broadcast, e.g. a batch of candidate prompters), ``rho_sft``, ``R`` (n, n)
    → (…, n). Lemma 1: for every ``x`` the maximum over the simplex is ``λ log Z(x)``, attained at ``ρ*``.
    """
    rho = np.asarray(rho, float)
    return (rho * np.asarray(R, float)).sum(axis=-1) - lam * kl_divergence(rho, rho_sft)


def prompter_objective(P: np.ndarray, rho: np.ndarray, rho_sft: np.ndarray, R: np.ndarray, lam: float) -> float:
    """Eq (9): ``E_{x∼P}[ E_{x′∼ρ(·|x)} R(x, x′) − λ KL(ρ(·|x)‖ρ_sft(·|x)) ]`` with ``R = frozen_reward(π_F, r)``."""
    return float(np.asarray(P, float) @ prompter_objective_per_prompt(rho, rho_sft, R, lam))


def suboptimality_gap(P: np.ndarray, r: np.ndarray, pi_star: np.ndarray, pi_tilde: np.ndarray) -> float:
    """Eq (5): ``Δ(ρ) = J(π*) − J(π̃_ρ)``; ``pi_star`` from eq (4), ``pi_tilde = composed_policy(ρ, π_F)`` (eq 3).

    May be negative: the composed policy can beat ``π*`` on ``r*`` (the paper's Q2).
    """
    return expected_reward(P, pi_star, r) - expected_reward(P, pi_tilde, r)


@dataclass(frozen=True)
class GapDecomposition:
    """Eq (7): ``J(π*) − J(π̃_ρ) = E_{x∼P}[Δ1 + Δ2]``. Scalars are P-expectations; ``*_per_prompt`` are (n,)."""

    delta1: float
    """``E_x Δ1``, Δ1 = E_{π*(·|x)} r*(x, ·) − E_{π_F(·|x)} r*(x, ·): frozen model vs RLHF optimum (≥ 0)."""
    delta2: float
    """``E_x Δ2``, Δ2 = E_{π_F(·|x)} r*(x, ·) − E_{π̃_ρ(·|x)} r*(x, ·): what the prompter can change (any sign)."""
    delta1_per_prompt: np.ndarray
    delta2_per_prompt: np.ndarray

    @property
    def total(self) -> float:
        """``E_x[Δ1 + Δ2]``, equal to the gap of eq (5)."""
        return self.delta1 + self.delta2


def gap_decomposition(P: np.ndarray, r: np.ndarray, pi_star: np.ndarray, pi_F: np.ndarray,
                      pi_tilde: np.ndarray) -> GapDecomposition:
    """Eq (7): split ``J(π*) − J(π̃_ρ)`` into ``E_x Δ1`` (no prompter) and ``E_x Δ2`` (prompter-dependent)."""
    r = np.asarray(r, float)
    value_star = (np.asarray(pi_star, float) * r).sum(axis=-1)  # (n,)  E_{π*(·|x)} r(x, ·)
    value_F = (np.asarray(pi_F, float) * r).sum(axis=-1)  # (n,)  E_{π_F(·|x)} r(x, ·) = R(x, x)
    value_tilde = (np.asarray(pi_tilde, float) * r).sum(axis=-1)  # (n,)  E_{π̃(·|x)} r(x, ·)
    d1, d2 = value_star - value_F, value_F - value_tilde
    P = np.asarray(P, float)
    return GapDecomposition(float(P @ d1), float(P @ d2), d1, d2)


@dataclass(frozen=True)
class Theorem1Bound:
    """Eq (11), the right-hand side of Theorem 1, term by term; ``total = term1 + term2 + term3``."""

    term1: float
    """``r_max E_x d_TV(π*(·|x), π_F(·|x))`` (≥ 0): how far the frozen model is from the RLHF optimum."""
    term2: float
    """``r_max E_{x, x′∼ρ_sft(·|x)} d_TV(π_F(·|x), π_F(·|x′))`` (≥ 0): how much ρ_sft's rewrites move π_F."""
    term3: float
    """``−λ E_x KL(ρ*(·|x)‖ρ_sft(·|x))`` (≤ 0; stored with its sign)."""
    total: float
    """The bound on ``J(π*) − J(π̃_ρ*)``."""


def theorem1_bound(P: np.ndarray, pi_star: np.ndarray, pi_F: np.ndarray, rho_sft: np.ndarray, R: np.ndarray,
                   r_max: float, lam: float) -> Theorem1Bound:
    """Eq (11) for the ρ* of eq (10): ``r_max E d_TV(π*, π_F) + r_max E_{x′∼ρ_sft} d_TV(π_F(·|x), π_F(·|x′))
    − λ E KL(ρ*‖ρ_sft)``, with ``R = frozen_reward(π_F, r)`` (ρ* is formed from it; see
    :func:`optimal_prompter_kl`).

    Valid for ``r ∈ [0, r_max]`` (see docs/theory.md for why, and for the sharper form it comes from).
    """
    P = np.asarray(P, float)
    pi_F = np.asarray(pi_F, float)
    term1 = r_max * float(P @ tv_distance(pi_star, pi_F))
    pairwise_tv = tv_distance(pi_F[:, None, :], pi_F[None, :, :])  # (n, n)  d_TV(π_F(·|x), π_F(·|x′))
    term2 = r_max * float(P @ (np.asarray(rho_sft, float) * pairwise_tv).sum(axis=-1))
    term3 = -lam * float(P @ optimal_prompter_kl(rho_sft, R, lam))
    return Theorem1Bound(term1, term2, term3, term1 + term2 + term3)


# ---------------------------------------------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------------------------------------------

_FIELDS = ("P", "rho_sft", "pi_F", "r", "r_max")


@dataclass(frozen=True, eq=False)
class TabularInstance:
    """A finite Align-Pro problem; validated on construction (raises :class:`InvalidInstanceError`).

    JSON form: ``{"P": [n], "rho_sft": [[n×n]], "pi_F": [[n×m]], "r": [[n×m]], "r_max": float}``.
    """

    P: np.ndarray
    """(n,) prompt distribution."""
    rho_sft: np.ndarray
    """(n, n) reference prompter, ``rho_sft[x, x′] = ρ_sft(x′|x)``."""
    pi_F: np.ndarray
    """(n, m) frozen model, ``pi_F[x, y] = π_F(y|x)``."""
    r: np.ndarray
    """(n, m) reward ``r*(x, y) ∈ [0, r_max]``."""
    r_max: float
    """Upper end of the reward range (> 0); J ∈ [0, r_max], so ``r_max`` is the trivial bound on the gap."""

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("P", "rho_sft", "pi_F", "r"):
            try:
                a = np.array(getattr(self, name), dtype=float)
            except (TypeError, ValueError):
                raise InvalidInstanceError(f"'{name}' must be a (nested) list of numbers of equal-length rows")
            if not np.isfinite(a).all():
                raise InvalidInstanceError(f"'{name}' has a non-finite entry (NaN or inf)")
            arrays[name] = a
            object.__setattr__(self, name, a)
        P, rho_sft, pi_F, r = arrays["P"], arrays["rho_sft"], arrays["pi_F"], arrays["r"]
        if P.ndim != 1 or P.size == 0:
            raise InvalidInstanceError(f"'P' must be a non-empty list of n numbers, got shape {P.shape}")
        n = P.size
        if rho_sft.shape != (n, n):
            raise InvalidInstanceError(f"'rho_sft' must have shape (n, n) = ({n}, {n}) since P has n = {n} "
                                       f"entries, got shape {rho_sft.shape}")
        if pi_F.ndim != 2 or pi_F.shape[0] != n or pi_F.shape[1] == 0:
            raise InvalidInstanceError(f"'pi_F' must have shape (n, m) with n = {n} rows, got shape {pi_F.shape}")
        if r.shape != pi_F.shape:
            raise InvalidInstanceError(f"'r' must have the shape of 'pi_F' {pi_F.shape}, got shape {r.shape}")
        for name, a in (("P", P[None, :]), ("rho_sft", rho_sft), ("pi_F", pi_F)):
            bad = np.argwhere(a < 0)
            if bad.size:
                where = tuple(int(i) for i in bad[0]) if name != "P" else (int(bad[0][1]),)
                raise InvalidInstanceError(f"'{name}' has a negative entry {a[tuple(bad[0])]:g} at index "
                                           f"{list(where)}; probabilities must be ≥ 0")
            sums = a.sum(axis=-1)
            off = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOL)
            if off.size:
                what = "'P'" if name == "P" else f"row {int(off[0])} of '{name}'"
                raise InvalidInstanceError(f"{what} sums to {sums[off[0]]:.10g}, not 1 (tolerance {ROW_SUM_TOL:g})")
        try:
            r_max = float(self.r_max)
        except (TypeError, ValueError):
            raise InvalidInstanceError(f"'r_max' must be a number, got {self.r_max!r}")
        if not (math.isfinite(r_max) and r_max > 0):
            raise InvalidInstanceError(f"'r_max' must be a finite number > 0, got {self.r_max!r}")
        object.__setattr__(self, "r_max", r_max)
        bad = np.argwhere((r < 0) | (r > r_max))
        if bad.size:
            x, y = (int(i) for i in bad[0])
            raise InvalidInstanceError(f"'r' has entry r[{x}][{y}] = {r[x, y]:g} outside [0, r_max] = [0, {r_max:g}]")
        # Rows within the tolerance but off by more than 1e-12 are renormalised, so every row is a distribution
        # to float precision; rows already that close are kept bit for bit (to_json/from_json round-trips).
        for name, a in (("P", P), ("rho_sft", rho_sft), ("pi_F", pi_F)):
            sums = a.sum(axis=-1, keepdims=True)
            object.__setattr__(self, name, np.where(np.abs(sums - 1.0) > 1e-12, a / sums, a))

    @property
    def n(self) -> int:
        """Number of prompts."""
        return int(self.P.size)

    @property
    def m(self) -> int:
        """Number of responses."""
        return int(self.pi_F.shape[1])

    @classmethod
    def from_dict(cls, data: Any, source: str = "instance") -> TabularInstance:
        """Build from a mapping with exactly the keys ``P, rho_sft, pi_F, r, r_max``."""
        if not isinstance(data, dict):
            raise InvalidInstanceError(f"{source} must be a JSON object with keys {list(_FIELDS)}, "
                                       f"got {type(data).__name__}")
        missing = [k for k in _FIELDS if k not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            raise InvalidInstanceError(f"{source} must have exactly the keys {list(_FIELDS)}; "
                                       f"missing {missing}, unknown {unknown}")
        try:
            return cls(**{k: data[k] for k in _FIELDS})
        except InvalidInstanceError as exc:
            raise InvalidInstanceError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> TabularInstance:
        """Read an instance file (see the class docstring for its form)."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInstanceError(f"instance file '{path}' does not exist")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInstanceError(f"instance file '{path}' is not valid JSON: {exc}") from None
        return cls.from_dict(data, source=f"instance file '{path}'")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form read by :meth:`from_dict`."""
        return {"P": self.P.tolist(), "rho_sft": self.rho_sft.tolist(), "pi_F": self.pi_F.tolist(),
                "r": self.r.tolist(), "r_max": self.r_max}

    def to_json(self, path: str | Path | None = None) -> str:
        """The JSON text of :meth:`to_dict`; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text


@dataclass(frozen=True)
class Analysis:
    """Every quantity of the theory for one instance and one (λ, β); expectations over x are weighted by P."""

    lam: float
    beta: float
    gap: float
    """Eq (5) at ρ*: ``J(π*) − J(π̃_ρ*)``."""
    delta1: float
    """Eq (7): ``E_x Δ1``."""
    delta2: float
    """Eq (7): ``E_x Δ2`` at ρ*."""
    bound: Theorem1Bound
    """Eq (11)."""
    objective: float
    """Eq (9) at ρ* (= ``E_x λ log Z(x)``)."""
    kl: float
    """``E_x KL(ρ*(·|x)‖ρ_sft(·|x))``."""
    rho_star: np.ndarray
    """(n, n) eq (10)."""
    pi_star: np.ndarray
    """(n, m) eq (4)."""
    pi_tilde: np.ndarray
    """(n, m) eq (3) at ρ*."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the ``analyse --json`` object)."""
        return {"lam": self.lam, "beta": self.beta, "gap": self.gap, "delta1": self.delta1, "delta2": self.delta2,
                "term1": self.bound.term1, "term2": self.bound.term2, "term3": self.bound.term3,
                "bound": self.bound.total, "objective": self.objective, "kl": self.kl,
                "rho_star": self.rho_star.tolist()}


def analyse(instance: TabularInstance, lam: float, beta: float) -> Analysis:
    """Compute eqs (3)-(11) for ``instance`` at prompter parameter ``lam`` and alignment parameter ``beta``."""
    lam = _check_temperature("lam", lam)
    beta = _check_temperature("beta", beta)
    P, pi_F, r = instance.P, instance.pi_F, instance.r
    R = frozen_reward(pi_F, r)  # (n, n)
    pi_star = optimal_policy(pi_F, r, beta)  # (n, m) eq (4)
    rho_star = optimal_prompter(instance.rho_sft, R, lam)  # (n, n) eq (10)
    pi_tilde = composed_policy(rho_star, pi_F)  # (n, m) eq (3)
    decomposition = gap_decomposition(P, r, pi_star, pi_F, pi_tilde)
    bound = theorem1_bound(P, pi_star, pi_F, instance.rho_sft, R, instance.r_max, lam)
    return Analysis(
        lam=lam, beta=beta,
        gap=suboptimality_gap(P, r, pi_star, pi_tilde),
        delta1=decomposition.delta1, delta2=decomposition.delta2,
        bound=bound,
        objective=float(P @ (rho_star * R).sum(axis=-1)) + bound.term3,  # eq (9) at ρ*, term3 = −λ E KL
        kl=float(P @ optimal_prompter_kl(instance.rho_sft, R, lam)),
        rho_star=rho_star, pi_star=pi_star, pi_tilde=pi_tilde,
    )


# ---------------------------------------------------------------------------------------------------------------
# Random instances
# ---------------------------------------------------------------------------------------------------------------

def _random_rows(rng: np.random.Generator, rows: int, cols: int, sharpness: float, sparsity: float) -> np.ndarray:
    """Row-stochastic (rows, cols): softmax of Gaussian logits × ``sharpness``; a ``sparsity`` share of entries
    set to exactly 0 (never a whole row)."""
    logits = sharpness * rng.standard_normal((rows, cols))
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    if sparsity > 0:
        zero = rng.random((rows, cols)) < sparsity
        keep = rng.integers(cols, size=rows)  # one entry per row always survives
        zero[np.arange(rows), keep] = False
        weights[zero] = 0.0
    return weights / weights.sum(axis=-1, keepdims=True)


def random_instance(rng: np.random.Generator, *, n: int | None = None, m: int | None = None,
                    max_n: int = 8, max_m: int = 8, sharpness: float | None = None,
                    sparsity: float | None = None, binary_reward: bool | None = None,
                    r_max: float | None = None) -> TabularInstance:
    """A random instance drawn from ``rng``; every argument left as ``None`` is drawn too.

    ``n ∈ [1, max_n]``, ``m ∈ [1, max_m]``; ``sharpness ∈ [0, 8]`` scales the Gaussian logits of P, ρ_sft and π_F
    (0: uniform rows, 8: nearly deterministic rows); with probability ¼ a ``sparsity`` share (up to ½) of the
    probabilities is set to exactly 0; with probability ¼ the reward is binary ``{0, r_max}`` (where Theorem 1's
    d_TV steps are tight), else uniform on ``[0, r_max]``; ``r_max`` is log-uniform on ``[0.1, 10]``.
    """
    n = int(rng.integers(1, max_n + 1)) if n is None else n
    m = int(rng.integers(1, max_m + 1)) if m is None else m
    sharpness = float(rng.uniform(0.0, 8.0)) if sharpness is None else sharpness
    sparsity = (float(rng.uniform(0.0, 0.5)) if rng.random() < 0.25 else 0.0) if sparsity is None else sparsity
    binary_reward = bool(rng.random() < 0.25) if binary_reward is None else binary_reward
    r_max = float(10.0 ** rng.uniform(-1.0, 1.0)) if r_max is None else r_max
    P = _random_rows(rng, 1, n, sharpness, sparsity)[0]
    rho_sft = _random_rows(rng, n, n, sharpness, sparsity)
    pi_F = _random_rows(rng, n, m, sharpness, sparsity)
    unit = rng.integers(0, 2, size=(n, m)).astype(float) if binary_reward else rng.random((n, m))
    return TabularInstance(P=P, rho_sft=rho_sft, pi_F=pi_F, r=r_max * unit, r_max=r_max)
