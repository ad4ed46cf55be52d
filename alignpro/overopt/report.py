"""Stage 5 of ``alignpro overopt``: the result, its figure (``overopt.png``) and its report (``overopt.md``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpro.arms import Arm
from alignpro.config import config_to_dict
from alignpro.fileio import atomic_write_text
from alignpro.overopt.config import OveroptConfig
from alignpro.overopt.curves import CurvePoint

#: each curve's method -> the arm it optimises against a proxy (the closed form over a λ sweep; the trained
#: prompter and the RLHF oracle over their checkpoints)
METHODS: dict[str, Arm] = {"closed_form": Arm.CLOSED_FORM, "prompter": Arm.ALIGN_PRO, "oracle": Arm.ORACLE}


@dataclass
class OveroptResult:
    run: Path
    points: list[CurvePoint]
    summaries: list[dict[str, Any]]
    proxies: dict[str, dict[str, Any]]  #: label -> the proxy's held-out measures and data
    no_ft: dict[str, float]  #: π_F on x at the study's sampling (the oracle's step 0)
    stopped_early: dict[str, int]  #: training run -> the step it reached, for runs its time limit ended early


def plot(result: OveroptResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result.proxies)
    fig, axes = plt.subplots(len(labels), 2, figsize=(11, 4 * len(labels)), squeeze=False)
    style = {"closed_form": ("tab:blue", "o", "λ sweep"), "prompter": ("tab:green", "s", "checkpoints"),
             "oracle": ("tab:red", "^", "checkpoints")}
    for row, label in enumerate(labels):
        for col, (attr, err, name) in enumerate((("gold", "gold_stderr", "gold reward"),
                                                 ("proxy_reward", "proxy_stderr", "proxy reward r_φ"))):
            ax = axes[row][col]
            for method in METHODS:
                pts = sorted((p for p in result.points if p.proxy == label and p.method == method), key=lambda p: p.kl)
                if pts:
                    color, marker, points = style[method]
                    ax.errorbar([p.sqrt_kl for p in pts], [getattr(p, attr) for p in pts],
                                yerr=[getattr(p, err) for p in pts], color=color, marker=marker, capsize=3,
                                label=f"{METHODS[method].title}: {points}")
            if attr == "gold":
                ax.axhline(result.no_ft["gold"], color="gray", ls="--", lw=1, label="no_ft (π_F on x)")
            ax.set_xlabel("√KL (nats^½) to the method's start")
            ax.set_ylabel(name)
            acc = result.proxies[label]["heldout"]
            ax.set_title(f"proxy {label} (held-out acc {acc['accuracy']:.2f} ± {acc['stderr']:.2f}): {name}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _pm(v: float | None, se: float | None) -> str:
    return "—" if v is None else f"{v:.3f} ± {_f(se)}"


def report_markdown(cfg: OveroptConfig, result: OveroptResult) -> str:
    lines = [f"# Over-optimisation: gold `{cfg.gold}` vs Bradley–Terry proxies", "",
             f"Eval prompts: {result.points[0].n_prompts} of `{cfg.eval_prompts}`; π_F `{cfg.target}` at temperature "
             f"{cfg.answer_temperature}, top_p {cfg.answer_top_p}, top_k {cfg.answer_top_k}, ≤ "
             f"{cfg.answer_max_new_tokens} tokens. no_ft (π_F on x): gold {result.no_ft['gold']:.3f} ± "
             f"{result.no_ft['gold_stderr']:.3f}. Standard errors are over prompts; gains are paired by prompt "
             "against the method's start (ρ_sft at λ = ∞, or step 0)." + "".join(
                 f" Run `{name}` was stopped by its time limit ({cfg.train_time_limit_minutes:g} min) after step "
                 f"{steps} of {cfg.train_steps}: it is measured up to step {steps}." for name, steps in
                 result.stopped_early.items()), "", "## Proxies", "",
             "| proxy | training pairs | held-out pairs | held-out accuracy | eq (1) loss |", "|---|---|---|---|---|"]
    for label, rec in result.proxies.items():
        h = rec["heldout"]
        lines.append(f"| {label} | {rec['train_pairs']} | {h['n']} | {h['accuracy']:.3f} ± {h['stderr']:.3f} | "
                     f"{h['loss']:.3f} ± {h['loss_stderr']:.3f} |")
    lines += ["", "## Where each curve peaks", "",
              "| proxy | method | start gold | peak at | √KL | peak gold | last point | √KL | last gold | gold lost "
              "after the peak | KL after the peak | gold lost per nat |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result.summaries:
        lines.append(f"| {s['proxy']} | {s['method']} | {_f(s['start_gold'])} | {s['peak_setting']} | "
                     f"{_f(s['peak_sqrt_kl'], 2)} | {_f(s['peak_gold'])} ± {_f(s['peak_gold_stderr'])} | "
                     f"{s['last_setting']} | {_f(s['last_sqrt_kl'], 2)} | {_f(s['last_gold'])} ± "
                     f"{_f(s['last_gold_stderr'])} | {_pm(s['gold_drop_after_peak'], s['gold_drop_stderr'])} | "
                     f"{_f(s['kl_after_peak'], 2)} | {_pm(s['gold_lost_per_nat'], s['gold_lost_per_nat_stderr'])} |")
    lines += ["", "The peak is the best of a few noisy points, so its gold and the drop after it lean high; the "
              "drop's ± is the paired per-prompt standard error (the peak and the last point share their prompts) "
              "and leaves that selection out. KL after the peak is taken as known.", "", "## Every point", "",
              "| proxy | method | setting | KL | √KL | gold | Δ gold vs start | proxy r_φ | prompts | answers |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result.points:
        lines.append(f"| {p.proxy} | {p.method} | {p.setting} | {p.kl:.3f} ± {p.kl_stderr:.3f} | {p.sqrt_kl:.2f} | "
                     f"{p.gold:.3f} ± {p.gold_stderr:.3f} | {p.gold_gain:+.3f} ± {p.gold_gain_stderr:.3f} | "
                     f"{p.proxy_reward:.3f} ± {p.proxy_stderr:.3f} | {p.n_prompts} | {p.n_answers} |")
    lines += ["", "Closed form: R̂_proxy on the m answers that choose; gold and proxy on the n_fresh other answers, "
              "weighted by ρ*_λ (no selection bias); its KL is exact on the candidates. Checkpoints: their own "
              "samples, KL = the mean over them of Σ_t k3(log π_θ, log π_ref) (Schulman's unbiased, non-negative "
              "estimator).", ""]
    return "\n".join(lines)


def write_report(cfg: OveroptConfig, result: OveroptResult) -> None:
    """``RUN/overopt.json`` (settings, no_ft, proxies, summaries, every point), ``overopt.md`` (also printed) and
    ``overopt.png``."""
    run = result.run
    atomic_write_text(run / "overopt.json", json.dumps({
        "config": config_to_dict(cfg), "no_ft": result.no_ft, "proxies": result.proxies,
        "summaries": result.summaries, "runs_stopped_early": result.stopped_early,
        "points": [p.to_dict() for p in result.points]}, indent=1, default=str) + "\n")
    atomic_write_text(run / "overopt.md", report_markdown(cfg, result))
    plot(result, run / "overopt.png")
    print(report_markdown(cfg, result), flush=True)
    print(f"alignpro overopt: wrote {run / 'overopt.md'}, {run / 'overopt.json'}, {run / 'overopt.png'}", flush=True)
