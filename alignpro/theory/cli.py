"""``alignpro theory verify | analyse | sweep | estimate``: exact tabular checks of Lemma 1, eq (7) and Theorem 1,
and Monte-Carlo estimates of Theorem 1's quantities for real LLMs (``estimate``).

One config dataclass per sub-command (flags or ``--config FILE.yaml``); see docs/theory.md for examples.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from alignpro.backends.registry import LOCAL_LM_KINDS
from alignpro.config import parse_config, setting
from alignpro.errors import ConfigError
from alignpro.specs import reward_spec_help
from alignpro.theory.tabular import TabularInstance, analyse

MAX_SIZE = 64
"""Largest number of prompts or responses ``verify`` draws (the tabular objects are dense)."""


def _positive_finite(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"setting '{name}' must be a finite number > 0, got {value!r}")


def _required_path(name: str, value: Path | None, what: str) -> None:
    if value is None or str(value) == "":
        raise ConfigError(f"setting '{name}' is required: pass --{name.replace('_', '-')} {what}")


@dataclass
class VerifyConfig:
    """Check Theorem 1 (eq 11), the decomposition (eq 7) and Lemma 1 (eq 10) exactly on random tabular
    instances; exits 1 if any check fails on any instance."""

    instances: int = setting(10000, help="number of random instances (sizes, sharpness, λ, β, r_max all vary)")
    seed: int = setting(0, help="random seed for the instances, perturbations and optimiser starts")
    optimiser_instances: int = setting(
        500, help="how many instances (the first ones) also get the SciPy optimiser check of Lemma 1 "
                  "(about 20 ms each); the perturbation check runs on all")
    perturbations: int = setting(32, help="random perturbations of ρ* per prompt for the Lemma 1 check")
    max_prompts: int = setting(8, help="largest number of prompts n of a random instance")
    max_responses: int = setting(8, help="largest number of responses m of a random instance")
    json: bool = setting(False, help="print one JSON object instead of the text report")

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ConfigError(f"setting 'instances' must be ≥ 1, got {self.instances}")
        if self.optimiser_instances < 0:
            raise ConfigError(f"setting 'optimiser_instances' must be ≥ 0, got {self.optimiser_instances}")
        if self.perturbations < 2:
            raise ConfigError(f"setting 'perturbations' must be ≥ 2, got {self.perturbations}")
        for name in ("max_prompts", "max_responses"):
            if not 1 <= getattr(self, name) <= MAX_SIZE:
                raise ConfigError(f"setting '{name}' must be in [1, {MAX_SIZE}], got {getattr(self, name)}")


@dataclass
class AnalyseConfig:
    """Every quantity of the theory (gap, Δ1, Δ2, the three terms of eq 11, the bound, eq 9 at ρ*, ρ*) for one
    instance file."""

    instance: Path | None = setting(None, help='instance JSON: {"P": [n], "rho_sft": [[n×n]], "pi_F": [[n×m]], '
                                               '"r": [[n×m]], "r_max": float}')
    lam: float = setting(1.0, help="λ, the prompter KL weight of eq (9)")
    beta: float = setting(1.0, help="β, the alignment KL weight of eq (2)/(4)")
    json: bool = setting(False, help="print one JSON object instead of the text report")

    def __post_init__(self) -> None:
        _required_path("instance", self.instance, "FILE.json")
        _positive_finite("lam", self.lam)
        _positive_finite("beta", self.beta)


@dataclass
class SweepConfig:
    """Gap, Theorem 1 bound and KL(ρ*‖ρ_sft) against λ on a log grid, saved as DIR/sweep.csv and DIR/sweep.png;
    λ ranges where the bound is vacuous (≥ r_max) are marked."""

    instance: Path | None = setting(None, help="instance JSON (same form as for 'analyse')")
    out: Path | None = setting(None, help="output folder for sweep.csv and sweep.png (created if missing)")
    beta: float = setting(1.0, help="β, the alignment KL weight of eq (2)/(4)")
    lam_min: float = setting(1e-4, help="smallest λ of the grid")
    lam_max: float = setting(1e4, help="largest λ of the grid")
    points: int = setting(161, help="number of log-spaced λ values")

    def __post_init__(self) -> None:
        _required_path("instance", self.instance, "FILE.json")
        _required_path("out", self.out, "DIR")
        _positive_finite("beta", self.beta)
        _positive_finite("lam_min", self.lam_min)
        _positive_finite("lam_max", self.lam_max)
        if self.lam_max <= self.lam_min:
            raise ConfigError(f"setting 'lam_max' ({self.lam_max:g}) must be greater than 'lam_min' "
                              f"({self.lam_min:g})")
        if not 2 <= self.points <= 10000:
            raise ConfigError(f"setting 'points' must be in [2, 10000], got {self.points}")




@dataclass
class EstimateConfig:
    """Monte-Carlo estimates, with standard errors across prompts, of Theorem 1's quantities (eq 11) for a
    prompter / reference / target / reward on a prompt set. Models sample at temperature 1 with no truncation."""

    prompter: str = setting("smollm2", help="ρ, the prompter being evaluated: smollm2 | hf:<id or path> "
                                            "(e.g. a trained checkpoint)")
    reference: str = setting("smollm2", help="ρ_sft, the reference prompter of eq (9): smollm2 | hf:<id or path>")
    target: str = setting("smollm2", help="π_F, the frozen target: smollm2 | hf:<id or path>")
    reward: str = setting("builtin", help="reward spec: " + reward_spec_help())
    r_max: float | None = setting(None, help="upper end of the reward range; default: the reward's own r_max "
                                             "(required when the reward has none)")
    template: str = setting("rewrite-default", help="rewrite template of ρ and ρ_sft: builtin name or YAML file")
    prompts: str = setting("builtin:eval", help="prompt source: builtin:eval | file.jsonl | file.csv | hf:<id> | ...")
    n_prompts: int = setting(8, help="use the first N prompts (0 = all); standard errors need N ≥ 2")
    k: int = setting(4, help="K: rewrites per prompt, from ρ (for KL(ρ‖ρ_sft)) and from ρ_sft (terms 2 and 3)")
    samples: int = setting(4, help="S: answers per prompt and per rewrite (KL(π_F(x)‖π_F(x′)), π*, R̂)")
    lam: float = setting(0.02, help="λ of eq (9)/(10), for ρ* and term3")
    beta: float = setting(0.1, help="β of eq (2)/(4), for π* and term1")
    max_new_tokens: int = setting(48, help="max new tokens of every rewrite and answer")
    kl_estimator: Literal["k1", "k2", "k3"] = setting("k1", help="sequence-level KL estimator: k1 (unbiased), "
                                                             "k2 (biased, ≥ 0) or k3 (unbiased, ≥ 0, heavy-tailed)")
    seed: int = setting(0, help="random seed of every sampling stage")
    batch_size: int = setting(16, help="sequences per forward pass / generate call")
    json: bool = setting(False, help="print one JSON object (with per-prompt values) instead of the text report")

    def __post_init__(self) -> None:
        from alignpro.specs import check_reward_spec, parse_model_spec

        for name in ("prompter", "reference", "target"):
            spec = parse_model_spec(getattr(self, name))
            if spec.kind not in LOCAL_LM_KINDS:
                raise ConfigError(f"setting '{name}' must be a local model (smollm2 or hf:<id or path>) whose "
                                  f"token log-probs can be computed, got '{spec}'")
        check_reward_spec(self.reward)
        for name in ("k", "samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"setting '{name}' must be ≥ 1, got {getattr(self, name)}")
        if self.n_prompts < 0:
            raise ConfigError(f"setting 'n_prompts' must be ≥ 0 (0 = all), got {self.n_prompts}")
        _positive_finite("lam", self.lam)
        _positive_finite("beta", self.beta)
        if self.r_max is not None:
            _positive_finite("r_max", self.r_max)


# ---------------------------------------------------------------------------------------------------------------

def verify_command(config: VerifyConfig) -> int:
    from alignpro.theory.sweep import CONVERGED, verify_random_instances

    report = verify_random_instances(config.instances, config.seed, config.optimiser_instances,
                                     config.perturbations, config.max_prompts, config.max_responses)
    if config.json:
        print(json.dumps(report.to_dict()))
        return 0 if report.passed else 1
    n = report.instances
    print(f"alignpro theory verify: {n} random instances, seed {report.seed} (n ≤ {config.max_prompts} prompts, "
          f"m ≤ {config.max_responses} responses, λ and β log-uniform on [1e-4, 1e4], "
          f"r_max log-uniform on [0.1, 10])")
    print(f"  Theorem 1 (eq 11)  max(gap − bound)        = {report.max_gap_minus_bound: .3e}   "
          f"violations {report.theorem1_violations} / {n}")
    print(f"  eq (7)             max |gap − E(Δ1 + Δ2)|  = {report.max_decomposition_error: .3e}   "
          f"violations {report.decomposition_violations} / {n}")
    print(f"  Δ1 ≥ 0             min Δ1(x)               = {report.min_delta1: .3e}   "
          f"violations {report.delta1_violations} / {n}")
    print(f"  Lemma 1 (eq 10)    ρ* beaten on eq (9) by optimiser or perturbation: "
          f"violations {report.lemma1_violations} / {n}")
    if report.lemma1_optimiser_instances:
        print(f"    SciPy L-BFGS-B on {report.lemma1_optimiser_instances} instances: max gain over ρ* "
              f"{report.lemma1_optimiser_max_gain:.3e}; reached ρ* (within {CONVERGED:g}·r_max) on "
              f"{report.lemma1_optimiser_converged}/{report.lemma1_optimiser_instances}, max shortfall "
              f"{report.lemma1_optimiser_max_shortfall:.3e}")
    print(f"    random perturbations on {report.lemma1_perturbation_instances} instances × "
          f"{report.lemma1_perturbations_per_prompt} per prompt: max gain over ρ* "
          f"{report.lemma1_perturbation_max_gain:.3e}")
    print(f"  non-finite results: {report.nonfinite}")
    print(f"  bound vacuous (≥ r_max) on {100 * report.vacuous_fraction:.1f} % of instances; gap < 0 on "
          f"{100 * report.negative_gap_fraction:.1f} %; median (bound − gap)/r_max = "
          f"{report.median_relative_slack:.3f}")
    print(f"  a check fails on an instance when it is off by more than {report.tolerance:g}·r_max (float rounding)")
    print(f"{'PASS: every check holds' if report.passed else 'FAIL: see the violations above'} "
          f"({report.wall_s:.1f} s)")
    return 0 if report.passed else 1


def _format_row(values: np.ndarray) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def analyse_command(config: AnalyseConfig) -> int:
    instance = TabularInstance.from_json(config.instance)
    result = analyse(instance, config.lam, config.beta)
    if config.json:
        print(json.dumps(result.to_dict()))
        return 0
    b = result.bound
    print(f"instance {config.instance}: n = {instance.n} prompts, m = {instance.m} responses, "
          f"r_max = {instance.r_max:g}; λ = {config.lam:g}, β = {config.beta:g} (expectations over x ∼ P)")
    rows = [
        ("gap", "J(π*) − J(π̃_ρ*)", "eq 5", result.gap),
        ("delta1", "E Δ1 (frozen model vs π*)", "eq 7", result.delta1),
        ("delta2", "E Δ2 (prompter part)", "eq 7", result.delta2),
        ("term1", "r_max E d_TV(π*, π_F)", "eq 11", b.term1),
        ("term2", "r_max E d_TV(π_F(x), π_F(x′)), x′∼ρ_sft", "eq 11", b.term2),
        ("term3", "−λ E KL(ρ*‖ρ_sft)", "eq 11", b.term3),
        ("bound", "term1 + term2 + term3", "eq 11", b.total),
        ("objective", "E_x[E_ρ* R − λ KL(ρ*‖ρ_sft)] at ρ*", "eq 9", result.objective),
    ]
    for key, meaning, eq, value in rows:
        print(f"  {key:<10} {value:>12.6g}   {meaning} ({eq})")
    holds = "holds" if result.gap <= b.total + 1e-9 * instance.r_max else "FAILS"
    vacuous = "vacuous" if b.total >= instance.r_max else "not vacuous"
    print(f"  Theorem 1 {holds}: bound − gap = {b.total - result.gap:.6g}; the bound is {vacuous} "
          f"(trivial bound r_max = {instance.r_max:g})")
    print("  rho_star (row x is ρ*(·|x) over x′ = 0..n−1):")
    for x, row in enumerate(result.rho_star):
        print(f"    x={x}: {_format_row(row)}")
    return 0


def sweep_command(config: SweepConfig) -> int:
    from alignpro.theory.sweep import lambda_sweep, plot_sweep, write_sweep_csv

    instance = TabularInstance.from_json(config.instance)
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"setting 'out': cannot create folder '{out}': {exc.strerror}") from None
    result = lambda_sweep(instance, config.beta, config.lam_min, config.lam_max, config.points)
    csv_path = write_sweep_csv(result, out / "sweep.csv")
    png_path = plot_sweep(result, out / "sweep.png",
                          title=f"{Path(config.instance).name}: Theorem 1 against λ (β = {config.beta:g})")
    best = int(np.argmin(result.bound))
    print(f"wrote {csv_path} and {png_path} ({config.points} values of λ from {config.lam_min:g} to "
          f"{config.lam_max:g}, β = {config.beta:g})")
    print(f"  gap from {result.gap.min():.6g} to {result.gap.max():.6g}; tightest bound {result.bound[best]:.6g} "
          f"at λ = {result.lam[best]:.3g}; max(gap − bound) = {(result.gap - result.bound).max():.3g}")
    vac = result.vacuous
    if vac.all():
        print(f"  the bound is vacuous (≥ r_max = {instance.r_max:g}) for every λ in the grid")
    elif vac.any():
        spans = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in result.vacuous_ranges())
        print(f"  the bound is vacuous (≥ r_max = {instance.r_max:g}) for λ in {spans}")
    else:
        print(f"  the bound is below r_max = {instance.r_max:g} for every λ in the grid")
    return 0


def _pm(mean: float, stderr: float) -> str:
    return f"{mean:>10.4g} ± {stderr:<9.2g}" if math.isfinite(stderr) else f"{mean:>10.4g} ± {'n/a':<9}"


def estimate_command(config: EstimateConfig) -> int:
    from alignpro.config import config_to_dict
    from alignpro.data import load_prompts
    from alignpro.specs import load_causal_lm, make_reward
    from alignpro.templates import load_rewrite_template
    from alignpro.theory.estimate import QUANTITIES, KLEstimator, estimate_theorem1

    records = load_prompts(config.prompts).records
    reward = make_reward(config.reward, records)
    if config.r_max is not None:
        r_max, r_max_source = config.r_max, "--r-max"
    elif getattr(reward, "r_max", None) is not None:
        r_max, r_max_source = float(reward.r_max), f"the reward '{config.reward}'"
    else:
        raise ConfigError(f"the reward '{config.reward}' declares no r_max: pass --r-max R (Theorem 1 assumes "
                          "r ∈ [0, r_max])")
    template = load_rewrite_template(config.template)
    prompts = [r.text for r in (records[:config.n_prompts] if config.n_prompts else records)]
    models: dict[str, object] = {}  # spec -> HFCausalLM: one copy per distinct spec (nothing is trained here)
    for spec in (config.prompter, config.reference, config.target):
        if spec not in models:
            models[spec] = load_causal_lm(spec, batch_size=config.batch_size)
    result = estimate_theorem1(
        prompts, prompter_lm=models[config.prompter], reference_lm=models[config.reference],
        target_lm=models[config.target], reward=reward, template=template, k=config.k, samples=config.samples,
        lam=config.lam, beta=config.beta, r_max=r_max, max_new_tokens=config.max_new_tokens, seed=config.seed,
        estimator=KLEstimator(config.kl_estimator))
    result.settings = {**config_to_dict(config), "r_max_source": r_max_source}
    if config.json:
        print(json.dumps(result.to_dict()))
        return 0
    n = len(prompts)
    print(f"alignpro theory estimate: {n} prompts from {config.prompts}; ρ = {config.prompter}, "
          f"ρ_sft = {config.reference}, π_F = {config.target}, r = {config.reward} (r_max = {r_max:g} from "
          f"{r_max_source})")
    print(f"  K = {config.k} rewrites, S = {config.samples} answers, λ = {config.lam:g}, β = {config.beta:g}, "
          f"≤ {config.max_new_tokens} new tokens, temperature 1, no top-p/top-k; {config.kl_estimator} "
          "KL estimator")
    print(f"  mean ± s.e. across the {n} prompts (the s.e. covers the sampling noise, not the estimators' bias; "
          "see docs/theory.md)")
    for name, est in result.summary().items():
        print(f"  {name:<17}{_pm(est.mean, est.stderr)}  {QUANTITIES[name]}")
    print(f"  rewrites parsed: {int(result.parsed.sum())}/{result.parsed.size}; rewards outside [0, r_max]: "
          f"{result.rewards_outside}")
    return 0


SUBCOMMANDS = {
    "verify": (VerifyConfig, verify_command, "random instances: does everything hold?"),
    "analyse": (AnalyseConfig, analyse_command, "every quantity for one instance file"),
    "sweep": (SweepConfig, sweep_command, "gap, bound and KL against λ as PNG + CSV"),
    "estimate": (EstimateConfig, estimate_command, "Monte-Carlo estimates of Theorem 1's terms for real LLMs"),
}


def _usage() -> str:
    lines = ["usage: alignpro theory <verify|analyse|sweep|estimate> [options]", "",
             "Exact tabular checks of Align-Pro's Lemma 1, eq (7) and Theorem 1, and Monte-Carlo estimates of",
             "Theorem 1's terms for real LLMs.", "", "sub-commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run 'alignpro theory <sub-command> --help' for its options."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Entry point for ``alignpro theory``; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "analyze":
        name = "analyse"
    if name not in SUBCOMMANDS:
        print(f"alignpro theory: unknown sub-command '{name}'; valid: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    config_cls, run, _ = SUBCOMMANDS[name]
    config = parse_config(config_cls, rest, prog=f"alignpro theory {name}")
    return run(config)
