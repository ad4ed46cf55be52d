"""The run folder's outputs, all rendered from metrics.json alone.

- ``metrics.json``: cells, aggregate over seeds, examples, config (the layout is documented in docs/evaluation.md);
- ``table.md``: the paper's Table 1 layout (rows = prompter/frozen pairs, columns = datasets, A and B win
  rates in %), one table per judge and judged arm, then the details, the rewards as numbers, and the per-arm
  sections of :mod:`alignpro.report` (gains over no_ft and the strongest no-learning baseline, gap closed, guard,
  rewrites keeping x, IFEval's official metrics and per-type rates);
- ``fig_reward_mean.png`` / ``fig_reward_variance.png``: the paper's Figures 2 and 3, grouped bars per dataset
  with 95% CIs;
- ``examples.md``: original prompt, rewrite, final answer (the paper's Appendix C);
- ``judgments.jsonl``: every judged pair with both orders' choices and both answers' lengths.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from alignpro.arms import BASELINE, Arm
from alignpro.report import render_arm_sections

ARM_COLORS = {Arm.NO_FT: "#9e9e9e", Arm.CLOSED_FORM: "#6baed6", Arm.CLOSED_FORM_REWRITES_ONLY: "#c6dbef",
              Arm.ALIGN_PRO: "#2166ac", Arm.ALIGN_PRO_SFT: "#92c5de", Arm.CLOSED_FORM_TRAINED: "#4393c3",
              Arm.ORACLE: "#e08214"}
DATASET_NAMES = {"ultrafeedback": "UltraFeedback", "helpsteer": "HelpSteer", "orca": "Orca"}
OUTPUTS = ("metrics.json", "table.md", "fig_reward_mean.png", "fig_reward_variance.png", "examples.md")


def short_name(spec: str) -> str:
    """'hf:microsoft/Phi-3.5-mini-instruct' -> 'Phi-3.5-mini-instruct'."""
    ref = spec.split(":", 1)[1] if spec.startswith("hf:") else spec
    return ref.rstrip("/").rsplit("/", 1)[-1] or spec


def dataset_name(label: str) -> str:
    return DATASET_NAMES.get(label, label)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}"


def _bold_pair(a: int, b: int) -> tuple[str, str]:
    """Bold the larger of A and B (both when equal), as the paper's Table 1 does."""
    return (f"**{a}**" if a >= b else str(a)), (f"**{b}**" if b >= a else str(b))


# ---------------------------------------------------------------------------------------------------------------
# table.md
# ---------------------------------------------------------------------------------------------------------------


def render_table(metrics: dict[str, Any]) -> str:
    agg = metrics["aggregate"]
    pairs, datasets = list(metrics["pairs"]), list(metrics["datasets"])
    by_key = {(e["pair"], e["dataset"], e["arm"]): e for e in agg}
    seeds = metrics["config"]["seeds"]
    lines = ["# Win rates (the layout of the paper's Table 1)", ""]
    for arm, why in metrics.get("skipped_arms", {}).items():
        lines += [f"*Arm `{arm}` was skipped: {why} (skip_missing_checkpoints).*", ""]
    judged = sorted({(w["judge"], w["arm"]) for e in agg for w in e["win_rates"]},
                    key=lambda t: (t[0], list(Arm).index(Arm(t[1]))))
    if not judged:
        lines += ["No judges were configured (`judges: []`).", ""]
    for judge, arm in judged:
        entries = [w for e in agg for w in e["win_rates"] if w["judge"] == judge and w["arm"] == arm]
        independent = entries[0]["judge_independent"]
        lines += [f"## Judge `{judge}`: A = {arm} ({Arm(arm).title}), B = {BASELINE}", ""]
        head = "| Model architectures (prompter, frozen LLM) | " + " | ".join(
            f"{dataset_name(d)} A | {dataset_name(d)} B" for d in datasets) + " |"
        lines += [head, "|---|" + "---:|---:|" * len(datasets)]
        for pair in pairs:
            info = metrics["pairs"][pair]
            row = [f"{short_name(info['prompter'])}, {short_name(info['target'])} ({pair})"]
            for d in datasets:
                w = next((w for w in by_key.get((pair, d, arm), {}).get("win_rates", []) if w["judge"] == judge),
                         None)
                if w is None:
                    row += ["–", "–"]
                    continue
                a, b = _bold_pair(round(100 * w["wins"] / w["n"]), round(100 * w["losses"] / w["n"]))
                row += [a, b]
            lines.append("| " + " | ".join(row) + " |")
        ns = sorted({w["n"] for w in entries})
        lines += ["", f"A = % of pairs the judge gave to {arm}, B = % it gave to {BASELINE}; ties (including "
                      "pairs whose two orders disagreed and unreadable judgments) are the rest. "
                      f"n = {', '.join(map(str, ns))} pairs per cell (prompts × answers × {len(seeds)} seed(s)); "
                      "each pair judged in both orders."]
        if not independent:
            lines += ["", f"**`{judge}` is not an independent judge**: it is the reward that Align-Pro selected or "
                          "trained its prompts on, so it favours Align-Pro by construction. Use an `llm:` or "
                          "`openai:` judge for the paper's win rates."]
        lines += ["", "| pair | dataset | A % | B % | ties % | win rate (ties ½) [95% CI] | n | unreadable "
                      "judgments | same verdict in both orders | words A / B | longer answer won |",
                  "|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|"]
        for pair in pairs:
            for d in datasets:
                w = next((w for w in by_key.get((pair, d, arm), {}).get("win_rates", []) if w["judge"] == judge),
                         None)
                if w is None:
                    continue
                lw = "–" if w.get("longer_answer_won") is None else _pct(w["longer_answer_won"]) + " %"
                lines.append(
                    f"| {pair} | {dataset_name(d)} | {_pct(w['wins'] / w['n'])} | {_pct(w['losses'] / w['n'])} | "
                    f"{_pct(w['ties'] / w['n'])} | {w['win_rate']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}] | "
                    f"{w['n']} | {w['invalid']} / {2 * w['n']} | {_pct(w['position_consistent'])} % | "
                    f"{w['arm_mean_words']:.0f} / {w['baseline_mean_words']:.0f} | {lw} |")
        lines.append("")
    lines += ["# Rewards (the numbers behind Figures 2 and 3)", "",
              f"Reward `{metrics['config']['reward']}`, scored against the ORIGINAL prompt; mean and sample variance "
              "of the per-answer rewards, with 95% CIs "
              f"({agg[0]['ci_method'] if agg else ''}). Paired Δ: the mean over prompts of the arm's per-prompt mean "
              f"reward minus {BASELINE}'s, ± its standard error, in standard errors, and its 95% CI.", "",
              f"| pair | dataset | arm | mean reward [95% CI] | variance [95% CI] | n | mean words | paired Δ vs "
              f"{BASELINE} ± s.e. (s.e.s) [95% CI] |",
              "|---|---|---|---|---|---:|---:|---|"]
    for e in agg:
        m, v = e["reward_mean"], e["reward_variance"]
        lines.append(f"| {e['pair']} | {dataset_name(e['dataset'])} | {e['arm']} | {m['mean']:.4f} "
                     f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}] | {v['mean']:.4f} [{v['ci95'][0]:.4f}, "
                     f"{v['ci95'][1]:.4f}] | {e['n']} | {e['mean_answer_words']:.0f} | {_paired(e)} |")
    lines += ["", *render_arm_sections(metrics)]
    lines += ["", "Pairs: " + "; ".join(f"{p} = {i['prompter']} → {i['target']}" for p, i in metrics["pairs"].items())
              + ". Datasets: " + "; ".join(f"{k} = {v}" for k, v in metrics["datasets"].items()) + ".", ""]
    return "\n".join(lines)


def _paired(entry: dict[str, Any], key: str = "paired_vs_no_ft") -> str:
    p = entry.get(key)
    if p is None:
        return "–"
    z = f" ({p['mean'] / p['stderr']:+.1f})" if p["stderr"] > 0 else ""
    return f"{p['mean']:+.4f} ± {p['stderr']:.4f}{z} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]"


# ---------------------------------------------------------------------------------------------------------------
# Figures 2 and 3
# ---------------------------------------------------------------------------------------------------------------


def _n_range(agg: list[dict]) -> str:
    ns = sorted({e["n"] for e in agg}) or [0]
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def plot_reward(metrics: dict[str, Any], key: str, path: Path) -> None:
    """Grouped bars: one panel per dataset, one group per pair, one bar per arm, 95% CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = metrics["aggregate"]
    pairs, datasets = list(metrics["pairs"]), list(metrics["datasets"])
    arms = list(dict.fromkeys(e["arm"] for e in agg))  # in the config's order
    by_key = {(e["pair"], e["dataset"], e["arm"]): e for e in agg}
    width = min(0.8 / max(1, len(arms)), 0.25)
    panel_w = max(2.4, 0.6 + 0.17 * len(pairs) * len(arms))
    fig_w = max(6.4, 0.8 + panel_w * len(datasets))
    ncol = len(arms) if fig_w > 2.6 * len(arms) else 2
    rows = -(-len(arms) // ncol)
    seeds = metrics["config"]["seeds"]
    ci = agg[0]["ci_method"] if agg else ""
    caption = (" · ".join(f"{p} = {short_name(i['prompter'])} → {short_name(i['target'])}"
                          for p, i in metrics["pairs"].items())
               + f"  |  reward {metrics['config']['reward']}; n = {_n_range(agg)} answers per bar over "
               f"{len(seeds)} seed(s); error bars: 95% CI ({ci})")
    caption_lines = textwrap.wrap(caption, int(fig_w * 15))
    top_in, bottom_in = 0.25 + 0.25 * rows, 0.1 + 0.14 * len(caption_lines)  # title + legend, caption
    fig_h = 3.6 + top_in + bottom_in
    fig, axes = plt.subplots(1, len(datasets), figsize=(fig_w, fig_h), sharey=True, squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for j, arm in enumerate(arms):
            xs, ys, err = [], [], [[], []]
            for i, pair in enumerate(pairs):
                e = by_key.get((pair, d, arm))
                if e is None:
                    continue
                v = e[key]
                xs.append(i + (j - (len(arms) - 1) / 2) * width)
                ys.append(v["mean"])
                err[0].append(max(0.0, v["mean"] - v["ci95"][0]))
                err[1].append(max(0.0, v["ci95"][1] - v["mean"]))
            ax.bar(xs, ys, width * 0.92, yerr=err, capsize=3, color=ARM_COLORS.get(arm, None),
                   label=Arm(arm).title, edgecolor="black", linewidth=0.5,
                   error_kw={"elinewidth": 1, "ecolor": "black"})
        ax.set_xticks(range(len(pairs)), pairs)
        ax.set_xlim(-0.6, len(pairs) - 0.4)
        ax.set_title(dataset_name(d))
        ax.set_xlabel("prompter-frozen pair")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    what = "mean" if key == "reward_mean" else "variance"
    axes[0][0].set_ylabel(f"reward {what}")
    if key == "reward_variance":
        axes[0][0].set_ylim(bottom=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"Reward {what} comparisons", fontweight="bold", y=1 - 0.08 / fig_h, va="top")
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.42 / fig_h), ncol=ncol,
               frameon=False, fontsize=9)
    fig.text(0.5, 0.08 / fig_h, "\n".join(caption_lines), ha="center", va="bottom", fontsize=7.5, color="#333333")
    fig.tight_layout(rect=(0, bottom_in / fig_h, 1, 1 - top_in / fig_h))
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# examples.md
# ---------------------------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text or "(empty)").splitlines()) or "> (empty)"


def _verdicts(ex: dict[str, Any], arm: str) -> str:
    """'; punctuation:no_comma followed, ...' (IFEval's loose verdicts) for an example's arm; '' without."""
    v = ex.get("followed", {}).get(arm)
    return ("; " + ", ".join(f"{t} {'followed' if ok else 'NOT followed'}" for t, ok in v)) if v else ""


def render_examples(metrics: dict[str, Any]) -> str:
    parts = ["# Examples (like the paper's Appendix C)", "",
             "Original prompt, the rewrite the frozen model answered, and its final answer, beside the answer to "
             "the original prompt (no_ft). Rewards are scored against the ORIGINAL prompt.", ""]
    current = None
    for ex in metrics["examples"]:
        if (ex["pair"], ex["dataset"]) != current:
            current = (ex["pair"], ex["dataset"])
            info = metrics["pairs"][ex["pair"]]
            parts += [f"## {ex['pair']} ({short_name(info['prompter'])} → {short_name(info['target'])}), "
                      f"{dataset_name(ex['dataset'])}, seed {ex['seed']}", ""]
        parts += ["**Original prompt:**", "", _quote(ex["prompt"]), ""]
        if ex.get("system"):
            parts += [f"*System prompt:* {ex['system']}", ""]
        for arm, rewrite in ex["rewrites"].items():
            kept = " *(kept the original prompt)*" if rewrite == ex["prompt"] else ""
            parts += [f"**Re-written prompt ({arm}):**{kept}", "", _quote(rewrite), "",
                      f"**Final response ({arm}, reward {ex['rewards'][arm]:.3f}{_verdicts(ex, arm)}):**", "",
                      _quote(ex["answers"][arm]), ""]
        for arm in ex["answers"]:
            if arm not in ex["rewrites"]:
                parts += [f"**Response to the original prompt ({arm}, reward {ex['rewards'][arm]:.3f}"
                          f"{_verdicts(ex, arm)}):**", "", _quote(ex["answers"][arm]), ""]
        parts += ["---", ""]
    return "\n".join(parts)


def write_outputs(metrics: dict[str, Any], out: Path, judgments: list[dict] | None = None) -> list[Path]:
    """Write the five outputs (and judgments.jsonl) into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    (out / "table.md").write_text(render_table(metrics))
    plot_reward(metrics, "reward_mean", out / "fig_reward_mean.png")
    plot_reward(metrics, "reward_variance", out / "fig_reward_variance.png")
    (out / "examples.md").write_text(render_examples(metrics))
    if judgments is not None:
        with open(out / "judgments.jsonl", "w") as fh:
            for row in judgments:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return [out / name for name in OUTPUTS]
