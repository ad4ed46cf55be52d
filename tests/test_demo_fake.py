"""Tier 2: the demo end to end with the deterministic fakes (no model)."""

import json

import pytest

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


def test_demo_contract_and_align_pro_wins_in_the_fake_world(tmp_path):
    m = run_demo(_cfg(tmp_path))
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert saved["arms"].keys() == {Arm.NO_FT, Arm.CLOSED_FORM, Arm.CLOSED_FORM_REWRITES_ONLY, Arm.SUFFIX, Arm.REPEAT,
                                    Arm.ANSWER_REWRITE}  # and the default no-learning baselines
    for s in saved["arms"].values():
        assert set(s) == {"mean", "variance", "stderr", "n"} and s["n"] == 24
    for w in saved["win_rates"]:
        assert set(w) >= {"arm", "baseline", "judge", "wins", "ties", "losses", "n", "win_rate", "stderr"}
        assert w["wins"] + w["ties"] + w["losses"] == w["n"]
        assert w["judge"].startswith("reward")
    assert len(saved["examples"]) == 12 and {"prompt", "rewrite", "answer_align_pro"} <= set(saved["examples"][0])
    assert saved["config"]["k"] == 4
    # the fake target answers warmly when asked kindly and the fake reward pays for it: ρ* must find that
    assert m["arms"][Arm.CLOSED_FORM]["mean"] > m["arms"][Arm.NO_FT]["mean"] + 3 * m["arms"][Arm.NO_FT]["stderr"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Original prompt" in report and "NOT a result" in report


def test_lambda_infinity_keeps_rho_sft(tmp_path):
    m = run_demo(_cfg(tmp_path, lam=float("inf")))
    kl = m["diagnostics"]["kl_rho_star_to_rho_sft"]
    assert all(abs(v) < 1e-12 for v in kl.values())


def test_demo_is_deterministic(tmp_path):
    a = run_demo(_cfg(tmp_path, out=str(tmp_path / "a")))
    b = run_demo(_cfg(tmp_path, out=str(tmp_path / "b")))
    assert a["arms"] == b["arms"]


def test_quick_is_small_whatever_the_sample_size(tmp_path):
    """--quick: at most 8 prompts (the default sample is 24), K <= 2, M = 1, <= 2 fresh answers, <= 40 tokens."""
    for n_prompts, expected in ((24, 8), (0, 8), (5, 5)):
        cfg = build_config(DemoConfig, dict(quick=True, n_prompts=n_prompts, prompter="fake", target="fake",
                                            reward="fake", trained_prompter="", oracle="", guard_reward=""))
        assert cfg.n_prompts == expected
        assert (cfg.k, cfg.m, cfg.n_fresh, cfg.answer_max_new_tokens) == (2, 1, 2, 40)
    assert build_config(DemoConfig, dict(quick=True)).n_prompts == 8  # the defaults, as `alignpro demo --quick`


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
    assert m["diagnostics"]["prompts_skipped"] == 1
    assert m["arms"]["no_ft"]["n"] == 2 * 2


def test_trained_arms_and_gap_fraction(tmp_path):
    m = run_demo(_cfg(tmp_path, trained_prompter="fake", oracle="fake"))
    assert {"align_pro", "oracle"} <= set(m["arms"])
    assert {w["arm"] for w in m["win_rates"]} >= {"align_pro", "oracle"}
    gap = m["diagnostics"]["gap_closed_fraction"]
    span = m["arms"]["oracle"]["mean"] - m["arms"]["no_ft"]["mean"]
    if span:
        assert gap["align_pro"] == pytest.approx((m["arms"]["align_pro"]["mean"] - m["arms"]["no_ft"]["mean"]) / span)
    else:
        assert gap["align_pro"] is None
    assert "gap closed" in (tmp_path / "demo" / "report.md").read_text()
    with pytest.raises(AlignProError, match="valid forms"):
        _cfg(tmp_path, oracle="gpt-9")


def test_arms_showing_the_same_prompt_share_fresh_answers(tmp_path):
    """Common random numbers: where ρ* keeps x itself, that prompt's closed-form answers ARE no_ft's answers."""
    m = run_demo(_cfg(tmp_path, identity_prior=0.9, lam=1.0, n_prompts=12))
    kept = [i for i, e in enumerate(m["examples"]) if e["kept_original"]]
    changed = [i for i, e in enumerate(m["examples"]) if not e["kept_original"]]
    assert kept and changed  # both cases occur at this prior
    for i in kept:
        e = m["examples"][i]
        assert e["answer_align_pro"] == e["answer_no_ft"] and e["reward_align_pro"] == e["reward_no_ft"]
    assert any(m["examples"][i]["answer_align_pro"] != m["examples"][i]["answer_no_ft"] for i in changed)


def test_instruction_task_reports_per_type_rates_guard_and_verdicts(tmp_path):
    """With the ifeval reward: instructions followed per arm and per type, the guard reward, verdicts in examples."""
    from alignpro.data import load_prompts

    m = run_demo(_cfg(tmp_path, prompts="builtin-ifeval:eval", reward="ifeval", guard_reward="fake", n_prompts=10,
                      trained_prompter="fake"))
    b = m["instruction_following"]
    records = load_prompts("builtin-ifeval:eval", n=10, seed=0).records  # the demo's seeded sample
    n_instructions = sum(len(r.instructions) for r in records)
    for arm in m["arms"]:
        assert sum(c["n"] for c in b["per_type"][arm].values()) == n_instructions * 2  # 2 fresh answers each
        assert set(b["per_type"][arm]) == {i.id for r in records for i in r.instructions}
        # for the pure ifeval reward the arm's reward IS the fraction followed
        assert b["followed"][arm]["mean"] == pytest.approx(m["arms"][arm]["mean"])
    assert set(m["guard"]["arms"]) == set(m["arms"]) and m["guard"]["reward"] == "fake"
    assert m["diagnostics"]["rewrite_keeps_original_fraction"]["align_pro"] >= 0
    ex = m["examples"][0]
    assert [t for t, _ in ex["followed_no_ft"]] == [i.id for i in records[0].instructions]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Instructions followed" in report and "Guard reward `fake`" in report
    assert "✓" in report or "✗" in report
