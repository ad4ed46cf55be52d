"""The one report module (alignpro.report) on hand-made arm results: gains over the strongest no-learning
baseline, the gap closed, and their rendering."""

from __future__ import annotations

import numpy as np
import pytest

import alignpro.arms
from alignpro.arms import Arm, ArmRun
from alignpro.evaluate.aggregate import aggregate_cells
from alignpro.report import NO_BASELINE_NOTE, cell_arm_metrics, render_arm_sections

NO_FT, CF, RO, AP, ORACLE = (a.value for a in (Arm.NO_FT, Arm.CLOSED_FORM, Arm.CLOSED_FORM_REWRITES_ONLY,
                                               Arm.ALIGN_PRO, Arm.ORACLE))


def _run(rewards: dict[str, list[list[float]]]) -> ArmRun:
    """A fake ArmRun: 4 prompts, 2 answers each, the rewards given per arm (answers are placeholders)."""
    run = ArmRun([f"x{i}" for i in range(4)], [None] * 4, n=2, seed=0, batch_size=8)
    for arm, r in rewards.items():
        run.rewards[arm] = np.asarray(r, dtype=float)
        run.answers[arm] = [[f"{arm} answer {i}.{j}" for j in range(2)] for i in range(4)]
        run.tokens[arm] = [[3, 3] for _ in range(4)]
    return run


REWARDS = {
    NO_FT: [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
    CF: [[0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]],  # mean 0.1
    RO: [[0.2, 0.2], [0.3, 0.3], [0.2, 0.2], [0.3, 0.3]],  # mean 0.25: the strongest when both are baselines
    AP: [[0.5, 0.5], [0.6, 0.6], [0.5, 0.5], [0.6, 0.6]],  # gain over no_ft 0.55
    ORACLE: [[0.2, 0.2], [0.3, 0.3], [0.2, 0.2], [0.3, 0.3]],  # gain 0.25 ± 0.0289: resolved
}


def test_trained_arms_gain_over_the_strongest_no_learning_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alignpro.arms, "NO_LEARNING_BASELINES", frozenset({Arm.CLOSED_FORM,
                                                                           Arm.CLOSED_FORM_REWRITES_ONLY}))
    got = cell_arm_metrics(_run(REWARDS), list(REWARDS))
    assert got["strongest_baseline"] == RO and got["baseline_note"] is None
    vs = got["arms"][AP]["paired_vs_baseline"]  # per-prompt differences 0.3, 0.3, 0.3, 0.3
    assert vs["baseline"] == RO and vs["mean"] == pytest.approx(0.3) and vs["stderr"] == pytest.approx(0.0)
    assert got["arms"][ORACLE]["paired_vs_baseline"]["mean"] == pytest.approx(0.0)
    for arm in (NO_FT, CF, RO):  # no_ft and the baselines themselves are not compared with a baseline
        assert "paired_vs_baseline" not in got["arms"][arm]
    cell = {"pair": "P1-F1", "prompter": "p", "target": "t", "dataset": "d", "seed": 0, "win_rates": [],
            "diagnostics": {}, **{k: got[k] for k in ("arms", "strongest_baseline", "baseline_note")}}
    agg = aggregate_cells([cell], {})
    metrics = {"aggregate": agg, "cells": [cell], "config": {"reward": "fake", "guard_reward": ""}}
    text = "\n".join(render_arm_sections(metrics))
    assert f"| +0.3000 ± 0.0000 ({RO}) |" in text
    assert f"strongest no-learning baseline in this run: {RO} (highest mean reward)" in text


def test_without_a_baseline_arm_the_report_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alignpro.arms, "NO_LEARNING_BASELINES", frozenset())
    got = cell_arm_metrics(_run(REWARDS), list(REWARDS))
    assert got["strongest_baseline"] is None and got["baseline_note"] == NO_BASELINE_NOTE
    assert not any("paired_vs_baseline" in s for s in got["arms"].values())
    cell = {"pair": "P1-F1", "prompter": "p", "target": "t", "dataset": "d", "seed": 0, "win_rates": [],
            "diagnostics": {}, **{k: got[k] for k in ("arms", "strongest_baseline", "baseline_note")}}
    text = "\n".join(render_arm_sections({"aggregate": aggregate_cells([cell], {}), "cells": [cell],
                                          "config": {"reward": "fake", "guard_reward": ""}}))
    assert NO_BASELINE_NOTE in text and "nan" not in text.lower()


def test_gap_closed_by_hand_when_the_oracle_gain_is_resolved() -> None:
    got = cell_arm_metrics(_run(REWARDS), list(REWARDS))
    oracle = got["arms"][ORACLE]["paired_vs_no_ft"]
    assert oracle["mean"] == pytest.approx(0.25) and oracle["stderr"] == pytest.approx(0.05 / np.sqrt(3))
    assert got["gap_closed_note"] is None
    assert got["arms"][AP]["gap_closed"] == pytest.approx(0.55 / 0.25)
    assert got["arms"][CF]["gap_closed"] == pytest.approx(0.1 / 0.25)
    assert got["arms"][ORACLE]["gap_closed"] == pytest.approx(1.0) and "gap_closed" not in got["arms"][NO_FT]
    # the oracle at no_ft's level for half the prompts: gain 0.125 ± 0.075, not resolved
    noisy = dict(REWARDS, **{ORACLE: [[0.0, 0.0], [0.3, 0.3], [0.0, 0.0], [0.2, 0.2]]})
    got = cell_arm_metrics(_run(noisy), list(noisy))
    assert got["gap_closed_note"] == "oracle gain +0.125 ± 0.075 not resolved (< 2 s.e.): gap closed not shown"
    assert not any("gap_closed" in s for s in got["arms"].values())


def test_trained_prompter_over_its_sft_start_by_hand_over_two_seeds() -> None:
    """align_pro − align_pro_sft, paired by prompt (what the RL stage added), per cell and over seeds."""
    SFT = Arm.ALIGN_PRO_SFT.value
    start = {SFT: [[0.5, 0.3], [0.6, 0.6], [0.4, 0.4], [0.5, 0.5]]}  # per-prompt Δ: 0.1, 0.0, 0.1, 0.1
    cells = []
    for seed in (0, 1):
        got = cell_arm_metrics(_run({**REWARDS, **start}), [*REWARDS, SFT])
        vs = got["arms"][AP]["paired_vs_start"]
        assert vs["mean"] == pytest.approx(0.075) and vs["stderr"] == pytest.approx(np.std(
            [0.1, 0.0, 0.1, 0.1], ddof=1) / 2)
        assert not any("paired_vs_start" in got["arms"][a] for a in (NO_FT, CF, RO, ORACLE, SFT))
        cells.append({"pair": "P1-F1", "prompter": "p", "target": "t", "dataset": "d", "seed": seed,
                      "win_rates": [], "diagnostics": {},
                      **{k: got[k] for k in ("arms", "strongest_baseline", "baseline_note")}})
    agg = aggregate_cells(cells, {})
    (entry,) = [e for e in agg if e["arm"] == AP]
    assert entry["paired_vs_start"]["mean"] == pytest.approx(0.075) and entry["paired_vs_start"]["n_prompts"] == 8
    text = "\n".join(render_arm_sections({"aggregate": agg, "cells": cells,
                                          "config": {"reward": "fake", "guard_reward": ""}}))
    assert f"{AP} over its SFT start {SFT} (what its RL stage added), paired: +0.0750" in text
    without = cell_arm_metrics(_run(REWARDS), list(REWARDS))  # no SFT arm: nothing claimed
    assert "paired_vs_start" not in without["arms"][AP]
