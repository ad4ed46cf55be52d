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

from alignpro.metrics import standard_error, win_rate_from_outcomes

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
    return out
