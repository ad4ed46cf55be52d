"""Aggregating grid cells over seeds, with 95% confidence intervals.

With S ≥ 2 seeds a quantity's CI is the Student-t interval over its S per-seed values (seeds are the
independent replicates). With one seed there is nothing to spread over, so the CI is the normal interval from
the within-seed standard error (for a variance, the normal approximation s²·√(2/(n−1)) of its standard error);
``ci_method`` says which was used.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from scipy import stats

from alignpro.metrics import gap_closed, oracle_gain_resolved, standard_error, win_rate_from_outcomes

Z95 = 1.959963984540054


def mean_ci95(values: Sequence[float], single_stderr: float | None = None, lo: float = -math.inf,
              hi: float = math.inf) -> dict[str, Any]:
    """{"mean", "ci95": [low, high]} over seeds; see the module docstring. Clipped to [lo, hi]."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if x.size >= 2:
        half = float(stats.t.ppf(0.975, x.size - 1)) * standard_error(x)
    else:
        half = Z95 * (single_stderr or 0.0)
    return {"mean": mean, "ci95": [max(lo, mean - half), min(hi, mean + half)]}


def _pooled_share(parts: list[tuple[float | None, int]]) -> float | None:
    """A share pooled over seeds from (share, count) pairs; None when every count is 0."""
    total = sum(n for _, n in parts)
    return sum((v or 0.0) * n for v, n in parts) / total if total else None


def ci_method(n_seeds: int) -> str:
    return ("t-interval over seeds" if n_seeds >= 2 else
            "normal interval from the within-seed standard error (one seed)")


def paired_over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """An arm's paired gain over no_ft (per seed: the mean over prompts of the per-prompt mean reward difference,
    with its standard error over prompts) over seeds: the mean, its standard error (over seeds when S ≥ 2, else the
    within-seed one), its 95% CI as :func:`mean_ci95`, and the number of prompts summed over seeds."""
    means = [p["mean"] for p in per_seed]
    ci = mean_ci95(means, per_seed[0]["stderr"])
    stderr = standard_error(means) if len(means) >= 2 else per_seed[0]["stderr"]
    return {**ci, "stderr": stderr, "n_prompts": int(sum(p["n"] for p in per_seed))}


def aggregate_cells(cells: list[dict[str, Any]], outcomes: dict[tuple, list[float]]) -> list[dict[str, Any]]:
    """One entry per pair x dataset x arm, over seeds: reward mean and variance with 95% CIs, and the pooled
    win rate of each judge against the baseline with its 95% CI.

    ``outcomes[(pair, dataset, seed, arm, judge)]`` are the per-item outcomes (1 / ½ / 0) behind each cell's
    win rate; pooling them over seeds reuses :func:`alignpro.metrics.win_rate_from_outcomes`.
    """
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    info: dict[tuple[str, str], dict] = {}
    for c in cells:
        info[(c["pair"], c["dataset"])] = {"prompter": c["prompter"], "target": c["target"]}
        for arm in c["arms"]:
            groups[(c["pair"], c["dataset"], arm)].append(c)
    out = []
    for (pair, dataset, arm), group in groups.items():
        stats_ = [c["arms"][arm] for c in group]
        s = len(group)
        entry: dict[str, Any] = {
            "pair": pair, "dataset": dataset, "arm": arm, **info[(pair, dataset)],
            "seeds": [c["seed"] for c in group], "n": int(sum(a["n"] for a in stats_)),
            "reward_mean": mean_ci95([a["mean"] for a in stats_], stats_[0]["stderr"]),
            "reward_variance": mean_ci95([a["variance"] for a in stats_],
                                         stats_[0]["variance"] * math.sqrt(2 / max(1, stats_[0]["n"] - 1)), lo=0.0),
            "mean_answer_words": float(np.mean([a["mean_answer_words"] for a in stats_])),
            "ci_method": ci_method(s),
            "win_rates": [],
        }
        if all("paired_vs_no_ft" in a for a in stats_):
            entry["paired_vs_no_ft"] = paired_over_seeds([a["paired_vs_no_ft"] for a in stats_])
        if all("guard" in a for a in stats_):  # the guard reward of the same answers
            guards = [a["guard"] for a in stats_]
            entry["guard_mean"] = mean_ci95([g["mean"] for g in guards], guards[0]["stderr"])
            if all("paired_vs_no_ft" in g for g in guards):
                entry["guard_paired_vs_no_ft"] = paired_over_seeds([g["paired_vs_no_ft"] for g in guards])
        entry.update(_report_extras(group, arm))
        judges = [w["judge"] for w in group[0]["win_rates"] if w["arm"] == arm]
        for judge in judges:
            per_seed = [next(w for w in c["win_rates"] if w["arm"] == arm and w["judge"] == judge) for c in group]
            pooled_outcomes = [o for c in group for o in outcomes[(pair, dataset, c["seed"], arm, judge)]]
            pooled = win_rate_from_outcomes(pooled_outcomes, arm=arm, baseline=per_seed[0]["baseline"],
                                            judge=judge).to_dict()
            ci = mean_ci95([w["win_rate"] for w in per_seed], pooled["stderr"], lo=0.0, hi=1.0)
            pooled.update({
                "ci95": ci["ci95"] if s >= 2 else mean_ci95([pooled["win_rate"]], pooled["stderr"], 0.0, 1.0)["ci95"],
                "invalid": int(sum(w["invalid"] for w in per_seed)),
                "position_consistent": float(np.mean([w["position_consistent"] for w in per_seed])),
                "judge_independent": per_seed[0]["judge_independent"],
                "arm_mean_words": float(np.mean([w["arm_mean_words"] for w in per_seed])),
                "baseline_mean_words": float(np.mean([w["baseline_mean_words"] for w in per_seed])),
                "longer_answer_won": _pooled_share([(w["longer_answer_won"], w["n_decisive_with_length_difference"])
                                                    for w in per_seed]),
                "n_decisive_with_length_difference": int(sum(w["n_decisive_with_length_difference"]
                                                             for w in per_seed)),
            })
            entry["win_rates"].append(pooled)
        out.append(entry)
    _gap_over_seeds(out)
    return out


def _one_name(names: list[str | None]) -> str | None:
    """The name shared by every seed, or the distinct names joined ('a / b'), None when none."""
    distinct = list(dict.fromkeys(n for n in names if n))
    return " / ".join(distinct) if distinct else None


def _report_extras(group: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    """Over seeds, what :mod:`alignpro.report` computes per cell: the paired gain over the strongest no-learning
    baseline (named) and the trained prompter's over its SFT start, IFEval's four metrics with 95% CIs, the
    fraction followed, the per-type counts pooled, and the share of rewrites keeping x."""
    stats_ = [c["arms"][arm] for c in group]
    out: dict[str, Any] = {"strongest_baseline": _one_name([c.get("strongest_baseline") for c in group]),
                           "baseline_note": group[0].get("baseline_note")}
    if all("paired_vs_baseline" in a for a in stats_):
        out["paired_vs_baseline"] = {"baseline": _one_name([a["paired_vs_baseline"]["baseline"] for a in stats_]),
                                     **paired_over_seeds([a["paired_vs_baseline"] for a in stats_])}
    if all("paired_vs_start" in a for a in stats_):
        out["paired_vs_start"] = paired_over_seeds([a["paired_vs_start"] for a in stats_])
    if all("ifeval" in a for a in stats_):
        ms = [a["ifeval"] for a in stats_]
        follow = [m["followed"]["mean"] for m in ms]
        types: dict[str, list[int]] = {}
        for m in ms:
            for t, c in m["per_type"].items():
                types.setdefault(t, [0, 0])[0] += c["followed"]
                types[t][1] += c["n"]
        out["ifeval"] = {
            **{k: mean_ci95([m[k] for m in ms], ms[0][f"{k}_stderr"], 0.0, 1.0)
               for k in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")},
            "followed": {"mean": float(np.mean(follow)),
                         "stderr": standard_error(follow) if len(ms) >= 2 else ms[0]["followed"]["stderr"]},
            "per_type": {t: {"followed": f, "n": n, "rate": f / n} for t, (f, n) in sorted(types.items())}}
        if all("followed_paired_vs_no_ft" in m for m in ms):
            out["ifeval"]["followed_paired_vs_no_ft"] = paired_over_seeds([m["followed_paired_vs_no_ft"] for m in ms])
    kept = [c.get("diagnostics", {}).get(arm, {}).get("rewrite_keeps_original_fraction") for c in group]
    if all(k is not None for k in kept):
        out["rewrite_keeps_original_fraction"] = float(np.mean(kept))
    return out


def _gap_over_seeds(entries: list[dict[str, Any]]) -> None:
    """The fraction of the no_ft → oracle gap closed, from the gains over seeds (:func:`alignpro.metrics.gap_closed`:
    only when the oracle's gain is resolved; else ``gap_closed_note`` says why)."""
    oracles = {(e["pair"], e["dataset"]): e["paired_vs_no_ft"] for e in entries
               if e["arm"] == "oracle" and "paired_vs_no_ft" in e}
    for e in entries:
        oracle = oracles.get((e["pair"], e["dataset"]))
        if oracle is None:
            continue
        e["gap_closed_note"] = oracle_gain_resolved(oracle)
        if "paired_vs_no_ft" in e and (value := gap_closed(e["paired_vs_no_ft"], oracle)) is not None:
            e["gap_closed"] = value
