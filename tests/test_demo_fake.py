"""Tier 2: the demo end to end with the deterministic fakes (no model)."""

import json

import pytest
import yaml

from alignpro.cli import main
from alignpro.config import build_config
from alignpro.arms import Arm
from alignpro.demo import DemoConfig, run_demo
from alignpro.errors import AlignProError, ConfigError


def _cfg(tmp_path, **kw):
    base = dict(prompter="fake", target="fake", reward="fake", out=str(tmp_path / "demo"), n_prompts=12, k=4,
                m=2, lam=0.0, identity_prior=0.5, n_fresh=2, trained_prompter="", oracle="", guard_reward="")
    base.update(kw)
    return build_config(DemoConfig, base)


def _cell(m):
    (cell,) = m["cells"]  # the demo is one cell of the evaluation: one prompter, target, prompt set and seed
    return cell


def test_demo_contract_and_align_pro_wins_in_the_fake_world(tmp_path):
    m = run_demo(_cfg(tmp_path))
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert saved["schema_version"] == m["schema_version"] and saved["cells"] == m["cells"]
    arms = _cell(saved)["arms"]
    assert list(arms) == [Arm.NO_FT, Arm.SUFFIX, Arm.BEST_SUFFIX, Arm.CLOSED_FORM,
                          Arm.CLOSED_FORM_REWRITES_ONLY]  # no_ft, the default no-learning baselines, the closed forms
    for s in arms.values():
        assert {"mean", "variance", "stderr", "n"} <= set(s) and s["n"] == 24
    assert [w["arm"] for w in _cell(saved)["win_rates"]] == [Arm.SUFFIX, Arm.BEST_SUFFIX, Arm.CLOSED_FORM,
                                                             Arm.CLOSED_FORM_REWRITES_ONLY]
    for w in _cell(saved)["win_rates"]:
        assert w["wins"] + w["ties"] + w["losses"] == w["n"] == 24 and w["judge"] == "reward(tie_margin=0.01)"
    assert len(saved["examples"]) == 6 and saved["config"]["k"] == 4 and saved["config"]["answers_per_prompt"] == 2
    # the fake target answers warmly when asked kindly and the fake reward pays for it: ρ* must find that
    assert arms[Arm.CLOSED_FORM]["mean"] > arms[Arm.NO_FT]["mean"] + 3 * arms[Arm.NO_FT]["stderr"]
    for name in ("table.md", "examples.md", "fig_reward_mean.png", "judgments.jsonl"):
        assert (tmp_path / "demo" / name).is_file(), name
    assert "**Original prompt:**" in (tmp_path / "demo" / "examples.md").read_text()
    assert "NOT a result" in _cell(saved)["diagnostics"][Arm.CLOSED_FORM]["selection_biased_note"]


def test_lambda_infinity_keeps_rho_sft(tmp_path):
    d = _cell(run_demo(_cfg(tmp_path, lam=float("inf"))))["diagnostics"]
    kls = [d[a]["kl_rho_star_to_rho_sft"] for a in (Arm.CLOSED_FORM, Arm.CLOSED_FORM_REWRITES_ONLY)]
    assert all(abs(v) < 1e-12 for v in kls)


def test_demo_is_deterministic(tmp_path):
    a = run_demo(_cfg(tmp_path, out=str(tmp_path / "a")))
    b = run_demo(_cfg(tmp_path, out=str(tmp_path / "b")))
    assert _cell(a)["arms"] == _cell(b)["arms"]


def test_a_rerun_into_the_demo_folder_overwrites_it(tmp_path):
    """The demo has no cache to continue: a rerun into its folder (runs/demo) is never refused, whatever changed;
    its outputs and OUT/config.yaml (the evaluation's settings, as YAML) are the new run's."""
    run_demo(_cfg(tmp_path))
    saved = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert saved["lam"] == 0.0 and saved["resume"] is None and saved["k"] == 4
    m = run_demo(_cfg(tmp_path, lam=0.5, k=3))
    saved = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert (saved["lam"], saved["k"]) == (0.5, 3)
    assert json.loads((tmp_path / "demo" / "metrics.json").read_text())["cells"] == m["cells"]
    assert m["config"]["lam"] == 0.5


def test_quick_is_small_and_explicit_settings_win(tmp_path):
    """--quick: 8 prompts (the default sample is 24), K = 2, M = 1, 2 fresh answers, 40-token answers, the one
    baseline chosen on train, for every setting not given; a setting given explicitly (flag or YAML) wins over the
    preset, and is validated."""
    fakes = dict(prompter="fake", target="fake", reward="fake", trained_prompter="", oracle="", guard_reward="")
    cfg = build_config(DemoConfig, dict(quick=True, **fakes))
    assert (cfg.n_prompts, cfg.k, cfg.m, cfg.n_fresh, cfg.answer_max_new_tokens) == (8, 2, 1, 2, 40)
    assert not cfg.closed_form_over_trained and cfg.baselines == ["best_suffix"]
    assert build_config(DemoConfig, dict(quick=False, **fakes)).baselines == ["suffix", "best_suffix"]
    assert build_config(DemoConfig, dict(quick=True, baselines=["suffix"], **fakes)).baselines == ["suffix"]
    assert build_config(DemoConfig, dict(quick=True)).n_prompts == 8  # the defaults, as `alignpro demo --quick`
    given = build_config(DemoConfig, dict(quick=True, n_prompts=24, k=4, m=3, **fakes))
    assert (given.n_prompts, given.k, given.m, given.n_fresh) == (24, 4, 3, 2)
    assert build_config(DemoConfig, dict(quick=False, **fakes)).k == 4  # no preset without --quick
    with pytest.raises(ConfigError, match="setting 'm' must be >= 1, got -1"):
        build_config(DemoConfig, dict(quick=True, m=-1, **fakes))
    assert main(["demo", "--quick", "--m", "-1", "--out", str(tmp_path / "x")]) == 2


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="identity_prior"):
        _cfg(tmp_path, identity_prior=1.0)
    with pytest.raises(ConfigError, match="'k'"):
        _cfg(tmp_path, k=0)
    with pytest.raises(AlignProError, match="valid forms"):
        _cfg(tmp_path, prompter="gpt5")
    assert main(["demo", "--reward", "magic", "--out", str(tmp_path / "x")]) == 2


def test_cli_unknown_command_and_help(capsys):
    assert main(["nope"]) == 2
    assert "valid commands" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_bad_prompt_rows_stop_or_are_skipped_and_counted(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"q": "how do I bake bread"}\n{"q": ""}\n{"q": "what is rain"}\n')
    with pytest.raises(AlignProError, match=r"line 2"):
        run_demo(_cfg(tmp_path, prompts=str(f), field="q", n_prompts=0))
    m = run_demo(_cfg(tmp_path, prompts=str(f), field="q", n_prompts=0, skip_bad=True))
    assert m["demo"]["prompts_skipped"] == 1
    assert _cell(m)["arms"]["no_ft"]["n"] == 2 * 2


def test_trained_arms_and_gap_not_shown_when_the_oracle_gain_is_noise(tmp_path):
    """The fake oracle is the fake target: its gain over no_ft is within noise, so no arm gets a "gap closed" and
    the report says why, with the oracle's numbers."""
    m = run_demo(_cfg(tmp_path, trained_prompter="fake", oracle="fake"))
    cell = _cell(m)
    assert {"align_pro", "oracle"} <= set(cell["arms"])
    assert {w["arm"] for w in cell["win_rates"]} >= {"align_pro", "oracle"}
    oracle = cell["arms"]["oracle"]["paired_vs_no_ft"]
    assert not (oracle["mean"] > 0 and oracle["mean"] >= 2 * oracle["stderr"])  # not resolved
    assert not any("gap_closed" in s for s in cell["arms"].values())
    gain = f"oracle gain {oracle['mean']:+.3f} ± {oracle['stderr']:.3f}"
    note = cell["gap_closed_note"]  # a fake oracle coupled with the fake target may gain exactly 0: "not positive"
    assert note in (f"{gain} not resolved (< 2 s.e.): gap closed not shown", f"{gain} not positive: gap closed not shown")
    assert note in (tmp_path / "demo" / "table.md").read_text()
    with pytest.raises(AlignProError, match="valid forms"):
        _cfg(tmp_path, oracle="gpt-9")


def test_arms_showing_the_same_prompt_share_fresh_answers(tmp_path):
    """Common random numbers: where ρ* keeps x itself, that prompt's closed-form answers ARE no_ft's answers."""
    m = run_demo(_cfg(tmp_path, identity_prior=0.9, lam=1.0, n_prompts=12, n_examples=12))
    cf = Arm.CLOSED_FORM.value
    kept = [e for e in m["examples"] if e["rewrites"][cf] == e["prompt"]]
    changed = [e for e in m["examples"] if e["rewrites"][cf] != e["prompt"]]
    assert kept and changed and len(kept) + len(changed) == 12  # both cases occur at this prior
    for e in kept:
        assert e["answers"][cf] == e["answers"]["no_ft"] and e["rewards"][cf] == e["rewards"]["no_ft"]
    assert any(e["answers"][cf] != e["answers"]["no_ft"] for e in changed)
    assert _cell(m)["diagnostics"][cf]["chose_original_fraction"] == pytest.approx(len(kept) / 12)


def test_instruction_task_reports_ifeval_metrics_per_type_rates_guard_and_verdicts(tmp_path):
    """With the ifeval reward: IFEval's four official metrics, the fraction followed and the rate per type per arm,
    the guard reward, and each example's verdicts."""
    from alignpro.data import load_prompts

    m = run_demo(_cfg(tmp_path, prompts="builtin-ifeval:eval", reward="ifeval", guard_reward="fake", n_prompts=10,
                      trained_prompter="fake", n_examples=10))
    cell = _cell(m)
    records = load_prompts("builtin-ifeval:eval", n=10, seed=0).records  # the demo's seeded sample
    n_instructions = sum(len(r.instructions) for r in records)
    for arm, s in cell["arms"].items():
        b = s["ifeval"]
        assert sum(c["n"] for c in b["per_type"].values()) == n_instructions * 2  # 2 fresh answers each
        assert set(b["per_type"]) == {i.id for r in records for i in r.instructions}
        # for the pure ifeval reward the arm's reward IS the per-answer fraction followed (loose) ...
        assert b["followed"]["mean"] == pytest.approx(s["mean"])
        # ... the instruction level pools the per-type counts; all-followed answers are at most the mean fraction
        assert b["instruction_loose"] == pytest.approx(sum(c["followed"] for c in b["per_type"].values())
                                                       / (n_instructions * 2))
        assert b["prompt_strict"] <= b["prompt_loose"] <= b["followed"]["mean"]
        assert b["instruction_strict"] <= b["instruction_loose"]
        assert s["guard"]["n"] == 20
    assert m["config"]["guard_reward"] == "fake"
    shown = [(e["prompt"], e["rewrites"]["align_pro"]) for e in m["examples"]]
    keep = cell["diagnostics"]["align_pro"]["rewrite_keeps_original_fraction"]
    assert keep == pytest.approx(sum(x.strip() in xp for x, xp in shown) / 10)
    ex = next(e for e in m["examples"] if e["prompt"] == records[0].text)
    assert [t for t, _ in ex["followed"]["no_ft"]] == [i.id for i in records[0].instructions]
    verdicts = ", ".join(f"{t} {'followed' if ok else 'NOT followed'}" for t, ok in ex["followed"]["no_ft"])
    examples_md = (tmp_path / "demo" / "examples.md").read_text()
    assert f"(no_ft, reward {ex['rewards']['no_ft']:.3f}; {verdicts}):**" in examples_md
    table = (tmp_path / "demo" / "table.md").read_text()
    assert "| arm | fraction followed ± s.e. | its paired Δ vs no_ft | prompt strict | prompt loose |" in table
