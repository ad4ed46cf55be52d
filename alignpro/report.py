"""The one metrics/report module of `alignpro evaluate` and `alignpro demo` (a preset of it): what is computed
from each grid cell's arms, over seeds, and shown as the per-arm tables.

Per cell and arm (:func:`cell_arm_metrics`), beside the reward's mean ± s.e.:

- the paired gain over ``no_ft`` (:func:`alignpro.metrics.paired_gain`), and for every arm that learns or
  optimises (not no_ft, not a no-learning baseline) the paired gain over the STRONGEST no-learning baseline that
  ran (:attr:`alignpro.arms.Arm.is_no_learning_baseline`; strongest = highest mean reward in the cell, named);
- the trained prompter's paired gain over its SFT start when both ran (``align_pro`` − ``align_pro_sft``: what
  its RL stage added);
- the fraction of the no_ft → oracle gap closed, only when the oracle's own gain is resolved
  (:func:`alignpro.metrics.gap_closed`), else the reason;
- the guard reward of the same answers and its paired gain over no_ft; the share of rewrites that keep x;
- on prompts with IFEval instructions: IFEval's four official metrics (prompt- and instruction-level, strict and
  loose), the per-answer fraction followed (what the ``ifeval`` reward averages) and the rate per instruction type.

:func:`alignpro.evaluate.aggregate.aggregate_cells` carries these over seeds; :func:`render_arm_sections`
renders them (markdown) for ``table.md`` and the terminal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alignpro.arms import BASELINE, Arm, ArmRun
from alignpro.metrics import (arm_stats, gap_closed, ifeval_accuracies, keeps_original_fraction,
                              oracle_gain_resolved, paired_gain, standard_error, strongest)

IFEVAL_METRICS = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")
NO_BASELINE_NOTE = "no no-learning baseline arm ran: no gain over one is shown"


def words(text: str) -> int:
    """The number of whitespace-separated words (answer lengths in the tables)."""
    return len(text.split())


def is_baseline(arm: str) -> bool:
    """Whether ``arm`` is a no-learning baseline (trained arms are compared with the strongest of these)."""
    return Arm(arm).is_no_learning_baseline


def learns(arm: str) -> bool:
    """Whether ``arm`` optimises or trains something (every arm but no_ft and the no-learning baselines)."""
    return arm != BASELINE and not is_baseline(arm)


def instruction_checker(records: list) -> Any:
    """IFEval's checkers over ``records`` when any of them has instructions (whatever the reward), else None."""
    if not any(getattr(r, "instructions", None) for r in records):
        return None
    from alignpro.rewards.ifeval import IFEvalReward

    return IFEvalReward([r for r in records if r.instructions])


def ifeval_arm(checker, run: ArmRun, arm: str) -> dict[str, Any]:
    """IFEval's four official metrics, the per-answer fraction followed (loose, what the reward averages) as
    mean ± s.e., and the loose rate per instruction type, over the arm's (N, n) answers; ``first`` keeps each
    prompt's first answer's loose verdicts for the examples."""
    from alignpro.rewards.ifeval import fraction_followed

    results = checker.results(run.flat_prompts(), run.flat(arm))  # (N·n,) lists of verdicts
    per_type: dict[str, list[int]] = {}
    for v in (v for row in results for v in row):
        c = per_type.setdefault(v.id, [0, 0])
        c[0] += v.followed
        c[1] += 1
    fractions = np.array([fraction_followed(r) for r in results]).reshape(len(run.prompts), run.n)  # (N, n)
    strict, loose = [[v.strict for v in r] for r in results], [[v.followed for v in r] for r in results]
    errors = {"prompt_strict": [all(r) for r in strict], "prompt_loose": [all(r) for r in loose],
              "instruction_strict": sum(strict, []), "instruction_loose": sum(loose, [])}  # the indicators averaged
    return {**ifeval_accuracies(strict, loose), **{f"{k}_stderr": standard_error(v) for k, v in errors.items()},
            "followed": arm_stats(fractions.ravel()).to_dict(), "_fractions": fractions,
            "per_type": {t: {"followed": f, "n": n, "rate": f / n} for t, (f, n) in sorted(per_type.items())},
            "first": [[[v.id, v.followed] for v in results[i * run.n]] for i in range(len(run.prompts))]}


def cell_arm_metrics(run: ArmRun, arms: list[str], *, guard: dict[str, np.ndarray] | None = None,
                     checker: Any = None) -> dict[str, Any]:
    """Everything the report shows of one cell's arms (see the module docstring): ``{"arms": {arm: {...}},
    "strongest_baseline", "baseline_note", "gap_closed_note", "instruction_first"}``."""
    guard = guard or {}
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        st = arm_stats(run.rewards[arm].ravel()).to_dict()
        st["mean_answer_words"] = float(np.mean([words(y) for y in run.flat(arm)]))
        st["mean_answer_tokens"] = float(np.mean([t for row in run.tokens[arm] for t in row]))
        if arm != BASELINE and BASELINE in run.rewards:  # paired by prompt: mean over prompts of Δ
            st["paired_vs_no_ft"] = paired_gain(run.rewards[arm], run.rewards[BASELINE])
        if arm in guard:
            st["guard"] = arm_stats(guard[arm].ravel()).to_dict()
            if arm != BASELINE and BASELINE in guard:
                st["guard"]["paired_vs_no_ft"] = paired_gain(guard[arm], guard[BASELINE])
        out[arm] = st
    baselines = {a: out[a]["mean"] for a in arms if is_baseline(a)}
    best = strongest(baselines)
    for arm in arms:
        if best is not None and learns(arm):
            out[arm]["paired_vs_baseline"] = {"baseline": best, **paired_gain(run.rewards[arm], run.rewards[best])}
    trained, start = Arm.ALIGN_PRO.value, Arm.ALIGN_PRO_SFT.value
    if trained in out and start in out:  # what the RL stage added to its SFT start, paired by prompt
        out[trained]["paired_vs_start"] = paired_gain(run.rewards[trained], run.rewards[start])
    gap_note = None
    oracle = Arm.ORACLE.value
    if oracle in out and "paired_vs_no_ft" in out[oracle]:
        gap_note = oracle_gain_resolved(out[oracle]["paired_vs_no_ft"])
        for arm in arms:
            if "paired_vs_no_ft" in out[arm]:
                value = gap_closed(out[arm]["paired_vs_no_ft"], out[oracle]["paired_vs_no_ft"])
                if value is not None:
                    out[arm]["gap_closed"] = value
    first: dict[str, list] = {}
    if checker is not None:
        fractions = {}
        for arm in arms:
            m = ifeval_arm(checker, run, arm)
            fractions[arm], first[arm] = m.pop("_fractions"), m.pop("first")
            out[arm]["ifeval"] = m
        for arm in arms:
            if arm != BASELINE and BASELINE in fractions:
                out[arm]["ifeval"]["followed_paired_vs_no_ft"] = paired_gain(fractions[arm], fractions[BASELINE])
    keeps = {a: keeps_original_fraction(run.prompts, run.rewrites[a]) for a in arms if a in run.rewrites}
    return {"arms": out, "strongest_baseline": best, "baseline_note": None if best else NO_BASELINE_NOTE,
            "gap_closed_note": gap_note, "rewrite_keeps_original_fraction": keeps, "instruction_first": first}


def examples(run: ArmRun, n_examples: int, first: dict[str, list], **where: Any) -> list[dict[str, Any]]:
    """A few prompts of the cell, preferring those whose rewrite differs from x (like the paper's Appendix C):
    each arm's rewrite, first answer and its reward, and (on prompts with instructions) its verdicts."""
    rewritten = next((a for a in (Arm.ALIGN_PRO.value, Arm.CLOSED_FORM.value) if a in run.rewrites), None)
    order = list(range(len(run.prompts)))
    if rewritten:
        order.sort(key=lambda i: run.rewrites[rewritten][i] == run.prompts[i])
    return [{**where, "prompt": run.prompts[i], "system": run.systems[i],
             "rewrites": {arm: xs[i] for arm, xs in run.rewrites.items()},
             "answers": {arm: ys[i][0] for arm, ys in run.answers.items()},
             "rewards": {arm: float(v[i, 0]) for arm, v in run.rewards.items()},
             **({"followed": {arm: v[i] for arm, v in first.items()}} if first else {})}
            for i in order[:n_examples]]


# ---------------------------------------------------------------------------------------------------------------
# Rendering (markdown), from metrics.json alone
# ---------------------------------------------------------------------------------------------------------------


def _pm(g: dict | None, digits: int = 4) -> str:
    """'+0.0590 ± 0.0130 (+4.5 s.e.)' for a paired gain ({"mean", "stderr"}); '—' for none."""
    if not g:
        return "—"
    z = f" ({g['mean'] / g['stderr']:+.1f} s.e.)" if g["stderr"] > 0 else ""
    return f"{g['mean']:+.{digits}f} ± {g['stderr']:.{digits}f}{z}"


def _ci(v: dict, digits: int = 3) -> str:
    return f"{v['mean']:.{digits}f} [{v['ci95'][0]:.{digits}f}, {v['ci95'][1]:.{digits}f}]"


def render_arm_sections(metrics: dict[str, Any]) -> list[str]:
    """Per pair and dataset (over seeds): the per-arm table (reward, paired gains over no_ft and over the
    strongest no-learning baseline, gap closed, guard, rewrites keeping x) with its notes, then on prompts with
    instructions IFEval's four official metrics and the rate per instruction type. Both commands print these."""
    from alignpro.evaluate.report import dataset_name

    lines: list[str] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in metrics["aggregate"]:
        groups.setdefault((e["pair"], e["dataset"]), []).append(e)
    guard = metrics["config"].get("guard_reward")
    for (pair, dataset), entries in groups.items():
        seeds = entries[0]["seeds"]
        lines += [f"## Per arm: {pair}, {dataset_name(dataset)} (seed{'s' if len(seeds) > 1 else ''} "
                  f"{', '.join(map(str, seeds))}; reward `{metrics['config']['reward']}`, against the ORIGINAL x)", "",
                  "| arm | mean reward [95% CI] | n | paired Δ vs no_ft ± s.e. | Δ vs strongest baseline ± s.e. | "
                  "gap closed |" + (f" guard `{guard}` paired Δ |" if guard else "") + " x kept |",
                  "|---|---|---:|---|---|---:|" + ("---|" if guard else "") + "---:|"]
        for e in entries:
            b = e.get("paired_vs_baseline")
            keep = e.get("rewrite_keeps_original_fraction")
            lines.append(f"| {e['arm']} | {_ci(e['reward_mean'], 4)} | {e['n']} | {_pm(e.get('paired_vs_no_ft'))} | "
                         + (f"{_pm(b)} ({b['baseline']})" if b else "—") + " | "
                         + (f"{e['gap_closed']:.2f}" if "gap_closed" in e else "—") + " |"
                         + (f" {_pm(e.get('guard_paired_vs_no_ft'))} |" if guard else "")
                         + (f" {100 * keep:.0f} % |" if keep is not None else " — |"))
        notes = [n for n in (entries[0].get("gap_closed_note"), entries[0].get("baseline_note")) if n]
        best = entries[0].get("strongest_baseline")
        if best:
            notes.append(f"strongest no-learning baseline in this run: {best} (highest mean reward)")
        notes += [f"{e['arm']} over its SFT start {Arm.ALIGN_PRO_SFT.value} (what its RL stage added), paired: "
                  f"{_pm(e['paired_vs_start'])}" for e in entries if "paired_vs_start" in e]
        lines += [""] + ([("Paired Δ: mean over prompts of the arm's per-prompt mean reward minus the other arm's. "
                           + "; ".join(notes) + "."), ""] if notes else [])
        ife = [e for e in entries if "ifeval" in e]
        if ife:
            lines += ["IFEval's official metrics (Zhou et al. 2023): prompt level = answers following ALL their "
                      "instructions, instruction level = followed / instructions pooled; strict = the answer as "
                      "is, loose = also without its first/last line or '*'. Beside them the per-answer fraction "
                      "followed (loose) that the `ifeval` reward averages.", "",
                      "| arm | fraction followed ± s.e. | its paired Δ vs no_ft | prompt strict | prompt loose | "
                      "instruction strict | instruction loose |", "|---|---|---|---|---|---|---|"]
            for e in ife:
                m = e["ifeval"]
                lines.append(f"| {e['arm']} | {m['followed']['mean']:.3f} ± {m['followed']['stderr']:.3f} | "
                             f"{_pm(m.get('followed_paired_vs_no_ft'), 3)} | "
                             + " | ".join(_ci(m[k]) for k in IFEVAL_METRICS) + " |")
            arms = [e["arm"] for e in ife]
            types = sorted({t for e in ife for t in e["ifeval"]["per_type"]})
            lines += ["", "| instruction type (loose rate, n) | " + " | ".join(arms) + " |",
                      "|---|" + "---|" * len(arms)]
            for t in types:
                cells = [(lambda c: f"{c['rate']:.2f} ({c['n']})" if c else "—")(e["ifeval"]["per_type"].get(t))
                         for e in ife]
                lines.append(f"| {t} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines + render_diagnostics(metrics)


def render_diagnostics(metrics: dict[str, Any]) -> list[str]:
    """Per cell: the closed forms' ρ* (KL to its proposal, x kept, rewrites parsed, and the selection-biased R̂ of
    the chosen x′, NOT a result), and where the trained arms came from (a checkpoint and what its training
    recorded, or trained now by `alignpro demo --train`)."""
    now = (metrics.get("demo") or {}).get("trained_now") or {}
    lines: list[str] = []
    for c in metrics["cells"]:
        parts = []
        for arm, d in c.get("diagnostics", {}).items():
            if "kl_rho_star_to_rho_sft" in d:
                parts.append(f"{arm}: KL(ρ* ‖ proposal) {d['kl_rho_star_to_rho_sft']:.3f}, drew x itself for "
                             f"{d['chose_original_fraction']:.0%} of prompts, rewrites parsed "
                             f"{d['rewrites_parsed_fraction']:.0%}, mean R̂ of the drawn x′ on the answers that chose "
                             f"them {d['selection_biased_r_hat_of_chosen']:.4f} (selection-biased, NOT a result)")
            if "checkpoint" in d:
                info = now.get(arm) if now.get(arm, {}).get("spec") == d["checkpoint"] else None
                parts.append(f"{arm} = `{d['checkpoint']}`" + (
                    f", trained now (--train) from {info['recipe']}, {info['steps']} steps in "
                    f"{info['train_seconds'] / 60:.1f} min" if info else
                    f" ({d.get('algo')}, {d.get('steps')} steps, KL to its reference {d['final_kl']:.2f} nats at "
                    f"the end of training)" if d.get("final_kl") is not None else ""))
        if parts:
            lines += [f"Cell {c['pair']}, {c['dataset']}, seed {c['seed']}: " + "; ".join(parts) + ".", ""]
    return lines
