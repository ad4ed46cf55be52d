"""`alignpro evaluate`: config checks before generation, the grid on fake backends (all five outputs), the disk
cache (a second run is free, an interrupted run resumes), the OpenAI judge end to end over HTTP, the shipped
configs, and one tiny run on the embedded SmolLM2 (marked ``model``)."""

from __future__ import annotations

import dataclasses
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from alignpro import cli
from alignpro.backends.fake import FakePrompter, FakeReward, FakeTarget
from alignpro.config import build_config, load_yaml
from alignpro.errors import ConfigError
from alignpro.evaluate.config import EvaluateConfig
from alignpro.evaluate.plan import preflight
from alignpro.evaluate.report import OUTPUTS
from alignpro.evaluate.runner import run_evaluation

REPO = Path(__file__).parent.parent
DATA = REPO / "tests" / "data"


# ---------------------------------------------------------------------------------------------------------------
# Counting fakes: every item a backend computes is counted, and the target can be made to fail mid-way
# ---------------------------------------------------------------------------------------------------------------


class Interrupted(RuntimeError):
    pass


class Counts:
    def __init__(self, fail_after_answers: int | None = None) -> None:
        self.items: Counter[str] = Counter()
        self.loads: Counter[str] = Counter()
        self.fail_after_answers = fail_after_answers

    def loader(self, role: str, spec: str):
        self.loads[role] += 1
        counts = self

        class Prompter(FakePrompter):
            def rewrite(self, prompts, k, *, seed=None):
                counts.items["rewrite"] += len(prompts) * k
                return super().rewrite(prompts, k, seed=seed)

        class Target(FakeTarget):
            def answer(self, prompts, *, n=1, seed=None, systems=None, keys=None):
                if counts.fail_after_answers is not None and counts.items["answer"] >= counts.fail_after_answers:
                    raise Interrupted("simulated crash")
                counts.items["answer"] += len(prompts) * n
                return super().answer(prompts, n=n, seed=seed, systems=systems, keys=keys)

        class Reward(FakeReward):
            def score(self, prompts, answers):
                counts.items["score"] += len(prompts)
                return super().score(prompts, answers)

        if role == "prompter" and spec != "fake":  # another prompter: other rewrites
            return Prompter((" Please be kind to me.", " Be brief.", " Thanks!"))
        return {"prompter": Prompter, "target": Target, "reward": Reward}[role]()


def fake_config(tmp_path: Path, **overrides) -> EvaluateConfig:
    values = {
        "out": str(tmp_path / "run"), "prompters": ["fake", "P2=fake"], "targets": ["fake"], "reward": "fake",
        "datasets": ["builtin:eval", f"mine={DATA / 'prompts.jsonl'}"],
        "dataset_options": ["mine.field=query", "mine.system_field=sys", "mine.skip_bad=true"],
        "n": 5, "seeds": [0, 1], "arms": ["no_ft", "align_pro_closed_form"], "judges": ["reward"],
        "k": 2, "m": 1, "batch_size": 4, "progress": False,
    }
    values.update(overrides)
    return build_config(EvaluateConfig, values)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


# ---------------------------------------------------------------------------------------------------------------
# The grid on fakes
# ---------------------------------------------------------------------------------------------------------------


def test_grid_writes_the_five_outputs_with_the_metrics_contract(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpts" / "prompter-P1-F1-builtin:eval"
    for p in ("P1", "P2"):
        for d in ("builtin:eval", "mine"):
            (tmp_path / "ckpts" / f"prompter-{p}-F1-{d}").mkdir(parents=True)
    (tmp_path / "ckpts" / "oracle-F1").mkdir()
    assert ckpt.is_dir()
    cfg = fake_config(tmp_path, arms=["no_ft", "align_pro_closed_form",
                                      f"align_pro=hf:{tmp_path}/ckpts/prompter-{{pair}}-{{dataset}}",
                                      f"oracle=hf:{tmp_path}/ckpts/oracle-{{target}}"], n_examples=5)
    counts = Counts()
    metrics = run_evaluation(cfg, loader=counts.loader)
    out = Path(cfg.out)
    for name in OUTPUTS + ("judgments.jsonl",):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    # metrics.json: one entry per cell, the spine's shape inside each
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["schema_version"] == 1 and saved["config"]["n"] == 5
    assert len(saved["cells"]) == 2 * 1 * 2 * 2  # prompters x targets x datasets x seeds
    arms = ["no_ft", "align_pro_closed_form", "align_pro", "oracle"]
    for cell in saved["cells"]:
        assert set(cell) >= {"pair", "dataset", "seed", "arms", "win_rates"}
        assert list(cell["arms"]) == arms
        n_prompts = 5 if cell["dataset"] == "builtin:eval" else 4  # the file has one empty prompt, skipped
        for stats in cell["arms"].values():
            assert set(stats) >= {"mean", "variance", "stderr", "n"} and stats["n"] == n_prompts
        assert [w["arm"] for w in cell["win_rates"]] == arms[1:]
        for w in cell["win_rates"]:
            assert set(w) >= {"arm", "baseline", "judge", "wins", "ties", "losses", "n", "win_rate", "stderr"}
            assert w["baseline"] == "no_ft" and w["wins"] + w["ties"] + w["losses"] == w["n"] == n_prompts
            assert w["judge_independent"] is False and "arm_mean_words" in w and "baseline_mean_words" in w
        assert "paired_vs_no_ft" not in cell["arms"]["no_ft"]
        # seed 0's examples hold every prompt (n_examples = 5), one answer each: the per-prompt differences
        shown = [e for e in saved["examples"] if (e["pair"], e["dataset"], e["seed"]) ==
                 (cell["pair"], cell["dataset"], cell["seed"])]
        for arm in arms[1:]:  # paired by prompt; equal answers per prompt, so its mean is the difference of means
            paired = cell["arms"][arm]["paired_vs_no_ft"]
            assert paired["n"] == n_prompts
            assert paired["mean"] == pytest.approx(cell["arms"][arm]["mean"] - cell["arms"]["no_ft"]["mean"])
            if shown:
                diffs = [e["rewards"][arm] - e["rewards"]["no_ft"] for e in shown]
                assert len(diffs) == n_prompts and paired["mean"] == pytest.approx(np.mean(diffs))
                assert paired["stderr"] == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(n_prompts))
        cf = cell["diagnostics"]["align_pro_closed_form"]
        picks = cf["chose_original_fraction"] * n_prompts  # prompts whose drawn x′ is candidate 0, x itself
        assert picks == pytest.approx(round(picks))
        if shown:  # where ρ* drew x itself, π_F was shown x (a rewrite may also equal x)
            assert picks <= sum(e["rewrites"]["align_pro_closed_form"] == e["prompt"] for e in shown)
    # aggregate: pair x dataset x arm over the two seeds, with 95% CIs
    assert len(saved["aggregate"]) == 2 * 2 * 4
    for e in saved["aggregate"]:
        assert e["seeds"] == [0, 1] and e["ci_method"] == "t-interval over seeds"
        lo, hi = e["reward_mean"]["ci95"]
        assert lo <= e["reward_mean"]["mean"] <= hi
        for w in e["win_rates"]:
            assert 0 <= w["ci95"][0] <= w["win_rate"] <= w["ci95"][1] <= 1
        if e["arm"] == "no_ft":
            assert "paired_vs_no_ft" not in e
        else:
            per_seed = [c["arms"][e["arm"]]["paired_vs_no_ft"]["mean"] for c in saved["cells"]
                        if (c["pair"], c["dataset"]) == (e["pair"], e["dataset"])]
            paired = e["paired_vs_no_ft"]
            assert paired["mean"] == pytest.approx(np.mean(per_seed))
            assert paired["stderr"] == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(2))
            assert paired["n_prompts"] == 2 * (5 if e["dataset"] == "builtin:eval" else 4)
    assert metrics["cells"] == saved["cells"]

    # table.md in the layout of Table 1: rows = pairs, columns = datasets x (A, B)
    table = (out / "table.md").read_text()
    assert "| Model architectures (prompter, frozen LLM) | builtin:eval A | builtin:eval B | mine A | mine B |" in table
    assert "fake, fake (P1-F1)" in table and "fake, fake (P2-F1)" in table
    assert "not an independent judge" in table
    assert "paired Δ vs no_ft ± s.e. (s.e.s) [95% CI] |" in table
    # figures and examples
    for name in ("fig_reward_mean.png", "fig_reward_variance.png"):
        w, h = png_size(out / name)
        assert w > 600 and h > 400
    examples = (out / "examples.md").read_text()
    assert "**Original prompt:**" in examples and "**Re-written prompt (align_pro_closed_form):**" in examples
    assert "**Final response (align_pro, reward" in examples
    rows = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(rows) == sum(w["n"] for c in saved["cells"] for w in c["win_rates"])
    assert {"words_arm", "words_baseline", "arm_first", "baseline_first", "winner"} <= set(rows[0])


def test_paired_gain_over_seeds_by_hand() -> None:
    from alignpro.evaluate.aggregate import paired_over_seeds

    one = paired_over_seeds([{"mean": 0.05, "stderr": 0.02, "n": 192}])  # one seed: the within-seed s.e.
    assert one["stderr"] == 0.02 and one["n_prompts"] == 192
    assert one["ci95"] == pytest.approx([0.05 - 1.959964 * 0.02, 0.05 + 1.959964 * 0.02])
    two = paired_over_seeds([{"mean": 0.02, "stderr": 0.01, "n": 10}, {"mean": 0.06, "stderr": 0.03, "n": 10}])
    assert two["mean"] == pytest.approx(0.04) and two["n_prompts"] == 20
    assert two["stderr"] == pytest.approx(0.02)  # std over the seeds (0.0283) / √2
    assert two["ci95"] == pytest.approx([0.04 - 12.7062 * 0.02, 0.04 + 12.7062 * 0.02], rel=1e-4)  # t, 1 d.o.f.


def test_closed_form_answers_afresh_and_no_ft_is_shared_across_prompters(tmp_path: Path) -> None:
    # two prompters whose rewrites never coincide (the counting loader gives any spec but 'fake' other
    # rewrites); α = 0, so x itself is not a shared candidate
    common = dict(datasets=["builtin:eval"], dataset_options=[], seeds=[0], identity_prior=0.0)
    cfg = fake_config(tmp_path, prompters=["fake", "P2=hf:another-prompter"], n_examples=5, **common)
    counts = Counts()
    metrics = run_evaluation(cfg, loader=counts.loader)
    n, k, m = 5, cfg.k, cfg.m

    def fresh(metrics, pair):  # chosen x′ other than x (an unparsed rewrite is x itself: no_ft's answers serve)
        return sum(e["rewrites"]["align_pro_closed_form"] != e["prompt"] for e in metrics["examples"]
                   if e["pair"] == pair)

    # no_ft: 5 answers, computed once for both prompters (its key does not involve the prompter);
    # closed form per prompter: K rewrites, K·M answers that estimate R̂, then FRESH answers to each chosen x′ ≠ x
    assert fresh(metrics, "P1-F1") + fresh(metrics, "P2-F1") >= n
    assert counts.items["answer"] == n + 2 * n * k * m + fresh(metrics, "P1-F1") + fresh(metrics, "P2-F1")
    assert counts.items["rewrite"] == 2 * n * k
    # the same prompter spec twice is the same model: its rewrites, and so their answers, come from the cache
    same = Counts()
    again = run_evaluation(fake_config(tmp_path / "same", n_examples=5, **common), loader=same.loader)
    assert same.items["answer"] == n + n * k * m + fresh(again, "P1-F1") and same.items["rewrite"] == n * k


# ---------------------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------------------


def test_second_identical_run_makes_no_backend_calls(tmp_path: Path) -> None:
    cfg = fake_config(tmp_path)
    first = Counts()
    m1 = run_evaluation(cfg, loader=first.loader)
    assert first.items["answer"] > 0 and first.items["rewrite"] > 0
    second = Counts()
    m2 = run_evaluation(fake_config(tmp_path, resume=True), loader=second.loader)
    assert second.items == Counter() and second.loads == Counter()  # no call, not even a model load
    assert all(v["misses"] == 0 for v in m2["usage"]["cache"].values())
    assert m2["cells"] == m1["cells"]


def test_an_interrupted_run_resumes_and_recomputes_only_the_remainder(tmp_path: Path) -> None:
    clean = Counts()
    run_evaluation(fake_config(tmp_path / "clean"), loader=clean.loader)
    total = clean.items["answer"]

    cfg = fake_config(tmp_path / "crash")
    crashed = Counts(fail_after_answers=total // 2)
    with pytest.raises(Interrupted):
        run_evaluation(cfg, loader=crashed.loader)
    done = crashed.items["answer"]
    assert 0 < done < total

    resumed = Counts()
    cfg = fake_config(tmp_path / "crash", resume=True)
    metrics = run_evaluation(cfg, loader=resumed.loader)
    assert resumed.items["answer"] == total - done  # only the remainder
    assert resumed.items["rewrite"] == clean.items["rewrite"] - crashed.items["rewrite"]
    assert len(metrics["cells"]) == 8
    again = Counts()
    run_evaluation(cfg, loader=again.loader)
    assert sum(again.items.values()) == 0


def test_a_rerun_into_an_evaluation_folder_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The one resume contract: OUT/config.yaml (YAML) holds the run's settings; a rerun into OUT is refused
    without --resume; with it, the run continues through its cache and may change only the resumable settings."""
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"prompters": ["fake"], "targets": ["fake"], "reward": "fake",
                                      "datasets": ["builtin:eval"], "n": 4, "k": 2, "m": 1, "progress": False}))
    out = tmp_path / "run"
    assert cli.main(["evaluate", "--config", str(config), "--out", str(out), "--lam", "0.5"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved == {**json.loads((out / "metrics.json").read_text())["config"], "resume": None}
    assert (saved["out"], saved["lam"], saved["n"], saved["n_examples"]) == (str(out), 0.5, 4, 3)
    capsys.readouterr()

    assert cli.main(["evaluate", "--config", str(config), "--out", str(out), "--lam", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"'{out}' already holds an evaluation (config.yaml); pass --resume {out} to continue it" in err
    assert "Traceback" not in err

    # resumable settings may change; the saved ones (lam 0.5) are reused without being given again
    assert cli.main(["evaluate", "--out", str(out), "--resume", "--n-examples", "1", "--judge-concurrency", "2",
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "cache: " in printed and " hits, 0 misses" in printed and "cache: 0 hits" not in printed
    resumed = json.loads((out / "metrics.json").read_text())
    assert (resumed["config"]["lam"], resumed["config"]["n_examples"]) == (0.5, 1)
    assert len(resumed["examples"]) == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["n_examples"] == 1

    for flags, named in ((["--lam", "0.1"], "['lam']"), (["--batch-size", "8", "--seeds", "0", "1"],
                                                           "['batch_size', 'seeds']")):
        assert cli.main(["evaluate", "--resume", str(out), *flags]) == 2
        err = capsys.readouterr().err
        assert f"setting(s) {named} differ from the run's {out / 'config.yaml'}" in err, err
        assert "'n_examples'" in err and "'judge_concurrency'" in err  # what a resumed run may change
    assert cli.main(["evaluate", "--resume", str(tmp_path / "none")]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_evaluate_resumable_settings_are_those_no_cached_result_depends_on() -> None:
    from alignpro.config import resumable_settings

    assert set(resumable_settings(EvaluateConfig)) == {
        "resume", "progress", "n_examples", "judge_api_key_env", "judge_concurrency", "judge_max_retries",
        "judge_backoff_s", "judge_timeout_s"}


def test_batch_size_changes_cached_results_so_it_cannot_change_on_resume(tmp_path: Path) -> None:
    """Why batch_size is not resumable: a closed form's rewrites are seeded per chunk of the batch, so another
    batch size misses the cache and draws other rewrites (here measured through a shared cache)."""
    first = run_evaluation(fake_config(tmp_path), loader=Counts().loader)
    other = Counts()
    again = run_evaluation(fake_config(tmp_path / "b", batch_size=16, cache=str(tmp_path / "run" / "cache.sqlite")),
                           loader=other.loader)
    assert other.items["rewrite"] > 0 and again["cells"] != first["cells"]


def test_changing_the_generation_config_misses_the_cache(tmp_path: Path) -> None:
    run_evaluation(fake_config(tmp_path), loader=Counts().loader)
    changed = Counts()  # another run (a resumed one may not change π_F's sampling) that shares the first's cache
    run_evaluation(fake_config(tmp_path / "hotter", temperature=1.0, cache=str(tmp_path / "run" / "cache.sqlite")),
                   loader=changed.loader)
    assert changed.items["answer"] > 0 and changed.items["rewrite"] == 0  # rewrites do not use π_F's config


# ---------------------------------------------------------------------------------------------------------------
# Bad configs fail before any generation, with one clear message
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"arms": ["no_ft", "best_of_n"]}, "unknown arm 'best_of_n'; valid arms: no_ft, suffix\\[=<line appended to x>\\], repeat"),
    ({"arms": ["no_ft", "align_pro"]}, "arm 'align_pro' needs a prompter checkpoint"),
    ({"arms": ["no_ft", "align_pro=hf:/nonexistent/ckpt-{pair}"]},
     "arm 'align_pro': checkpoint folders '/nonexistent/ckpt-P1-F1', '/nonexistent/ckpt-P2-F1' do not exist"),
    ({"arms": ["no_ft", "oracle=hf:/nonexistent/oracle"]}, "checkpoint folder '/nonexistent/oracle' does not exist"),
    ({"arms": ["no_ft", "oracle={model}"]}, "unknown placeholder"),
    ({"judges": ["openai:gpt-4o@http://127.0.0.1:9/v1"], "judge_api_key_env": "ALIGNPRO_TEST_NO_SUCH_KEY"},
     "needs an API key in the environment variable 'ALIGNPRO_TEST_NO_SUCH_KEY'"),
    ({"dataset_options": ["mine.field=question"]}, "dataset 'mine': .*field 'question' is missing"),
    ({"datasets": ["nosuchfile.jsonl"], "dataset_options": []}, "prompt file not found"),
    ({"judges": ["gpt4"]}, "invalid judge 'gpt4'"),
    ({"judges": ["reward"], "arms": ["align_pro_closed_form"]}, "add 'no_ft' to 'arms'"),
    ({"prompters": ["llama"]}, "invalid model spec 'llama'"),
    ({"prompters": ["openai:gpt-4o-mini@http://127.0.0.1:9/v1"]}, "can only be a target"),
    ({"reward": "rm"}, "invalid reward spec 'rm'"),
    ({"judged_arms": ["oracle"]}, "'judged_arms' names \\['oracle'\\]"),
])
def test_bad_configs_fail_before_generation(tmp_path: Path, overrides: dict, message: str) -> None:
    counts = Counts()
    with pytest.raises(ConfigError, match=message):
        run_evaluation(fake_config(tmp_path, **overrides), loader=counts.loader)
    assert counts.loads == Counter()  # no backend was even built
    assert not (tmp_path / "run").exists()  # nor the run folder


def test_all_problems_are_reported_in_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALIGNPRO_TEST_NO_SUCH_KEY", raising=False)
    cfg = fake_config(tmp_path, arms=["no_ft", "align_pro=hf:/nope/a", "oracle=hf:/nope/b"],
                      judges=["openai:m@http://127.0.0.1:9/v1"], judge_api_key_env="ALIGNPRO_TEST_NO_SUCH_KEY")
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    text = str(err.value)
    assert text.startswith("3 problems in the evaluation config:")
    assert "/nope/a" in text and "/nope/b" in text and "ALIGNPRO_TEST_NO_SUCH_KEY" in text


# ---------------------------------------------------------------------------------------------------------------
# The CLI and the shipped configs
# ---------------------------------------------------------------------------------------------------------------


def test_cli_runs_a_yaml_config_and_flags_override_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"prompters": ["fake"], "targets": ["fake"], "reward": "fake",
                                      "datasets": ["builtin:eval"], "n": 4, "k": 2, "m": 1, "progress": False,
                                      "out": str(tmp_path / "ignored")}))
    out = tmp_path / "cli-run"
    assert cli.main(["evaluate", "--config", str(config), "--out", str(out), "--seeds", "0", "1"]) == 0
    for name in OUTPUTS:
        assert (out / name).is_file()
    assert not (tmp_path / "ignored").exists()
    assert json.loads((out / "metrics.json").read_text())["config"]["seeds"] == [0, 1]
    printed = capsys.readouterr().out
    assert "| fake, fake (P1-F1) |" in printed and "cache:" in printed

    assert cli.main(["evaluate", "--config", str(config), "--arms", "no_ft", "bogus"]) == 2
    assert "alignpro evaluate: error: unknown arm 'bogus'" in capsys.readouterr().err


def test_cli_help_lists_every_setting(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--prompters", "--targets", "--datasets", "--arms", "--judges", "--seeds", "--judge-api-key-env",
                 "--temperature", "--cache"):
        assert flag in text


def test_arms_without_the_baseline_and_without_judges(tmp_path: Path) -> None:
    counts = Counts()
    metrics = run_evaluation(fake_config(tmp_path, arms=["align_pro_closed_form"], judges=[]), loader=counts.loader)
    assert all(list(c["arms"]) == ["align_pro_closed_form"] and c["win_rates"] == [] for c in metrics["cells"])
    assert "No judges were configured" in (tmp_path / "run" / "table.md").read_text()


def test_guard_reward_scores_every_arms_answers_and_rewrites_keeping_x_are_counted(tmp_path: Path) -> None:
    # the counting loader gives every reward spec the same fake reward, so the guard must equal the reward exactly
    cfg = fake_config(tmp_path, prompters=["fake"], datasets=["builtin:eval"], dataset_options=[], seeds=[0],
                      n_examples=5, answers_per_prompt=2, guard_reward="builtin")
    metrics = run_evaluation(cfg, loader=Counts().loader)
    (cell,) = metrics["cells"]
    for arm, st in cell["arms"].items():
        assert st["guard"]["mean"] == pytest.approx(st["mean"]) and st["guard"]["n"] == 5 * 2
        if arm != "no_ft":
            assert st["guard"]["paired_vs_no_ft"] == pytest.approx(st["paired_vs_no_ft"])
    (cf,) = [e for e in metrics["aggregate"] if e["arm"] == "align_pro_closed_form"]
    assert cf["guard_paired_vs_no_ft"]["mean"] == pytest.approx(cf["paired_vs_no_ft"]["mean"])
    # every prompt is an example here (n_examples = 5 prompts), so the share of x′ that keep x can be recounted
    shown = [(e["prompt"], e["rewrites"]["align_pro_closed_form"]) for e in metrics["examples"]]
    kept = cell["diagnostics"]["align_pro_closed_form"]["rewrite_keeps_original_fraction"]
    assert len(shown) == 5 and kept == pytest.approx(np.mean([x.strip() in xp for x, xp in shown]))
    table = (tmp_path / "run" / "table.md").read_text()
    assert "| gap closed | guard `builtin` paired Δ | x kept |" in table
    row = f"| align_pro_closed_form | {_ci4(cf['reward_mean'])} | 10 | "
    assert row in table and f" {100 * kept:.0f} % |" in table


def _ci4(v: dict) -> str:
    return f"{v['mean']:.4f} [{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]"


def test_a_template_edit_misses_the_rewrite_cache(tmp_path: Path) -> None:
    """Cached rewrites are keyed by the whole template (RewriteTemplate.id): templates that differ only in
    `compose` or `max_chars` (both change the x′ stored) never share a rewrite."""
    base = {"system": "Rewrite the prompt.", "user": "{prompt}"}
    for name, extra in (("a", {}), ("b", {"compose": "{rewrite} {prompt}"}), ("c", {"max_chars": 80})):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**base, **extra}))
    common = dict(datasets=["builtin:eval"], dataset_options=[], seeds=[0], prompters=["fake"],
                  cache=str(tmp_path / "shared.sqlite"))
    first = Counts()
    run_evaluation(fake_config(tmp_path / "a", template=str(tmp_path / "a.yaml"), **common), loader=first.loader)
    assert first.items["rewrite"] > 0
    for name in ("b", "c"):
        other = Counts()
        run_evaluation(fake_config(tmp_path / name, template=str(tmp_path / f"{name}.yaml"), **common),
                       loader=other.loader)
        assert other.items["rewrite"] == first.items["rewrite"], name  # none served from template a's rewrites
    again = Counts()
    run_evaluation(fake_config(tmp_path / "a2", template=str(tmp_path / "a.yaml"), **common), loader=again.loader)
    assert again.items["rewrite"] == 0


def test_sft_start_arm_rewrites_with_its_own_checkpoint_and_the_report_gives_what_rl_added(tmp_path: Path) -> None:
    """align_pro_sft: the trained prompter's SFT start rewrites x once (its own checkpoint, the same seed), fresh
    coupled answers; the trained arm's paired gain over it is in metrics.json and table.md."""
    for d in ("rl", "sft"):
        (tmp_path / d).mkdir()
    counts = Counts()

    def loader(role: str, spec: str):
        if role == "prompter" and spec.endswith("sft"):
            return FakePrompter((" From the start.",))
        return counts.loader(role, spec)

    cfg = fake_config(tmp_path, arms=["no_ft", f"align_pro=hf:{tmp_path / 'rl'}", f"align_pro_sft=hf:{tmp_path / 'sft'}"],
                      prompters=["fake"], datasets=["builtin:eval"], dataset_options=[], seeds=[0], n_examples=5)
    metrics = run_evaluation(cfg, loader=loader)
    (cell,) = metrics["cells"]
    assert list(cell["arms"]) == ["no_ft", "align_pro", "align_pro_sft"]
    assert cell["diagnostics"]["align_pro_sft"]["checkpoint"] == f"hf:{tmp_path / 'sft'}"
    shown = metrics["examples"]
    assert len(shown) == 5 and all(e["rewrites"]["align_pro_sft"].endswith(" From the start.") for e in shown)
    assert all(e["rewrites"]["align_pro_sft"] != e["rewrites"]["align_pro"] for e in shown)
    vs = cell["arms"]["align_pro"]["paired_vs_start"]
    diffs = [np.mean(e["rewards"]["align_pro"]) - np.mean(e["rewards"]["align_pro_sft"]) for e in shown]
    assert vs["n"] == 5 and vs["mean"] == pytest.approx(cell["arms"]["align_pro"]["mean"]
                                                       - cell["arms"]["align_pro_sft"]["mean"])
    assert "paired_vs_start" not in cell["arms"]["align_pro_sft"] and len(diffs) == 5
    table = (Path(cfg.out) / "table.md").read_text()
    assert "align_pro over its SFT start align_pro_sft (what its RL stage added), paired: " in table


def test_missing_checkpoints_can_be_skipped_with_a_notice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "oracle").mkdir()
    cfg = fake_config(tmp_path, arms=["no_ft", "align_pro=hf:/nope/final", f"oracle=hf:{tmp_path / 'oracle'}"],
                      skip_missing_checkpoints=True)
    metrics = run_evaluation(cfg, loader=Counts().loader)
    assert all(list(c["arms"]) == ["no_ft", "oracle"] for c in metrics["cells"])
    assert "'/nope/final' does not exist" in metrics["skipped_arms"]["align_pro"]
    assert "skipping arm 'align_pro'" in capsys.readouterr().out
    assert "*Arm `align_pro` was skipped" in (tmp_path / "run" / "table.md").read_text()


def assert_answers_sampled_as_in_the_paper(cfg: EvaluateConfig) -> None:
    """The generation config the grid hands its targets samples as the paper's (any answer length)."""
    from alignpro.backends.base import PAPER_ANSWER_CONFIG

    assert cfg.answer_gen == PAPER_ANSWER_CONFIG.with_(max_new_tokens=cfg.answer_max_new_tokens)


def test_shipped_eval_quick_config_is_valid_and_small() -> None:
    cfg = build_config(EvaluateConfig, load_yaml(REPO / "configs" / "eval-quick.yaml"))
    assert cfg.datasets == ["builtin:eval"] and cfg.n <= 8 and cfg.seeds == [0]
    assert list(cfg.arm_specs)[:2] == ["no_ft", "align_pro_closed_form"]
    assert cfg.arm_specs["align_pro"] == "hf:runs/train/final" and cfg.skip_missing_checkpoints  # when trained
    assert cfg.judges == ["reward", "llm:smollm2"]
    assert cfg.answer_max_new_tokens <= 48
    assert_answers_sampled_as_in_the_paper(cfg)


def test_confirmatory_configs_share_their_settings_and_cache_and_pass_preflight(monkeypatch) -> None:
    """configs/eval-ifeval-confirm.yaml (the pre-registered two-arm claim) and -confirm-all.yaml (every arm):
    same protocol (all eval prompts, seed 1, 8 answers, the shipped adapters), one cache, so the second run only
    generates the arms the first lacks."""
    monkeypatch.chdir(REPO)  # the adapter paths are relative to the repository
    two, every = (build_config(EvaluateConfig, load_yaml(REPO / "configs" / f"eval-ifeval-{n}.yaml"))
                  for n in ("confirm", "confirm-all"))
    assert list(two.arm_specs) == ["no_ft", "align_pro"] and two.arm_specs.items() <= every.arm_specs.items()
    assert set(every.arm_specs) == {"no_ft", "align_pro_closed_form", "align_pro_closed_form_rewrites_only",
                                    "align_pro", "oracle"}
    assert two.cache_path == every.cache_path
    for name in ("reward", "datasets", "n", "seeds", "answers_per_prompt", "template", "answer_gen", "rewrite_gen",
                 "batch_size", "prompters", "targets"):
        assert getattr(two, name) == getattr(every, name), name
    assert two.n == 0 and two.seeds == [1] and two.answers_per_prompt == 8 and two.reward == "ifeval"
    assert (every.k, every.m, every.lam, every.identity_prior) == (4, 2, 0.1, 0.5)  # the demo's closed form
    for cfg in (two, every):
        plan = preflight(cfg)
        assert plan.arms == list(cfg.arm_specs) and len(plan.prompts["ifeval"]) == 192


def test_headline_config_gives_the_whole_instruction_table_and_passes_preflight(monkeypatch) -> None:
    """configs/eval-ifeval-headline.yaml: the README's headline table from one command: the confirmatory
    protocol (all 192 eval prompts, seed 1, 8 answers, the shipped adapters) with the confirmatory run's five arms
    plus the two fixed-line baselines, the guard and the demo's closed form; its table has the paired gains and the
    gap closed. Its -sft sibling shares the protocol and the cache, with the SFT stage as the prompter."""
    monkeypatch.chdir(REPO)  # the adapter paths are relative to the repository
    cfg = build_config(EvaluateConfig, load_yaml(REPO / "configs" / "eval-ifeval-headline.yaml"))
    sft = build_config(EvaluateConfig, load_yaml(REPO / "configs" / "eval-ifeval-headline-sft.yaml"))
    confirm = build_config(EvaluateConfig, load_yaml(REPO / "configs" / "eval-ifeval-confirm-all.yaml"))
    assert list(cfg.arm_specs) == ["no_ft", "suffix", "best_suffix", "align_pro_closed_form",
                                   "align_pro_closed_form_rewrites_only", "align_pro", "oracle"]
    assert all(cfg.arm_specs[arm] == spec for arm, spec in confirm.arm_specs.items())
    assert cfg.guard_reward == "builtin" and cfg.judges == ["reward"]
    assert list(sft.arm_specs) == ["no_ft", "suffix", "best_suffix", "align_pro"]
    assert sft.arm_specs["align_pro"].endswith("ifeval-prompter-sft") and sft.cache == cfg.cache
    for name in ("reward", "datasets", "n", "seeds", "answers_per_prompt", "template", "answer_gen", "rewrite_gen",
                 "batch_size", "prompters", "targets", "k", "m", "lam", "identity_prior"):
        assert getattr(cfg, name) == getattr(confirm, name), name
        assert getattr(sft, name) == getattr(cfg, name), name
    assert cfg.n == 0 and cfg.seeds == [1] and cfg.answers_per_prompt == 8 and cfg.reward == "ifeval"
    for one in (cfg, sft):
        plan = preflight(one)
        assert plan.arms == list(one.arm_specs) and len(plan.prompts["ifeval"]) == 192


def test_shipped_paper_grid_config_parses_without_loading_models() -> None:
    cfg = build_config(EvaluateConfig, load_yaml(REPO / "configs" / "paper-grid.yaml"))
    assert cfg.prompter_specs == {"P1": "hf:microsoft/Phi-3.5-mini-instruct", "P2": "hf:Qwen/Qwen2.5-1.5B-Instruct"}
    assert cfg.target_specs == {"F1": "hf:meta-llama/Llama-3.1-8B-Instruct", "F2": "hf:Qwen/Qwen2.5-7B-Instruct"}
    assert cfg.reward == "hf:weqweasdas/RM-Gemma-2B"
    assert list(cfg.dataset_sources) == ["ultrafeedback", "helpsteer", "orca"] and cfg.n == 100
    assert set(cfg.arm_specs) == {"no_ft", "align_pro_closed_form", "align_pro", "oracle"}
    (judge,) = [j for j in cfg.judge_specs if j.kind == "openai"]
    assert (judge.model, judge.base_url) == ("gpt-4o", "https://api.openai.com/v1")
    assert cfg.judge_api_key_env == "OPENAI_API_KEY"
    assert_answers_sampled_as_in_the_paper(cfg)


def test_paper_grid_preflight_on_local_copies_of_the_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """The paper's config, with its datasets read from the local samples (same columns as the hub copies): every
    dataset field is found, and the missing checkpoints and key are reported together, before anything runs."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    values = load_yaml(REPO / "configs" / "paper-grid.yaml")
    values["dataset_options"] = [f"{name}.{opt}" for name in ("ultrafeedback", "helpsteer", "orca") for opt in (
        f"data_files={DATA / (name + '_sample.jsonl')}", f"cache_dir={tmp_path / 'hf'}",
        "skip_bad=true")]  # the samples hold a few bad rows
    values["n"] = 3
    cfg = build_config(EvaluateConfig, values)
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    text = str(err.value)
    assert text.startswith("3 problems in the evaluation config:")  # the key and the two checkpoint arms
    assert "OPENAI_API_KEY" in text
    assert ("arm 'align_pro': checkpoint folders 'runs/paper-train/prompter-P1-F1-ultrafeedback/final', "
            "'runs/paper-train/prompter-P1-F1-helpsteer/final'") in text and "and 8 more" in text
    assert "arm 'oracle': checkpoint folders 'runs/paper-train/oracle-F1-ultrafeedback/final'" in text
    assert "dataset '" not in text  # the three datasets loaded, with their fields

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    values["arms"] = ["no_ft", "align_pro_closed_form"]
    values["judged_arms"] = []
    plan = preflight(build_config(EvaluateConfig, values))
    assert len(plan.cells) == 4 * 3 * 3 and {len(p) for p in plan.prompts.values()} == {3}
    assert any(r.system for r in plan.prompts["orca"])  # Orca's system prompts are kept


# ---------------------------------------------------------------------------------------------------------------
# The OpenAI-compatible judge, end to end over HTTP, inside the grid
# ---------------------------------------------------------------------------------------------------------------


def test_grid_with_openai_judge_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        from tests.test_judges import MALFORMED, RATE_LIMITED, FakeOpenAIServer
    except ImportError:  # pytest's rootdir-less import mode puts tests/ itself on sys.path
        from test_judges import MALFORMED, RATE_LIMITED, FakeOpenAIServer

    monkeypatch.setenv("ALIGNPRO_TEST_JUDGE_KEY", "sk-from-env")
    with FakeOpenAIServer([RATE_LIMITED, None, MALFORMED]) as server:
        cfg = fake_config(tmp_path, prompters=["fake"], datasets=["builtin:eval"], dataset_options=[], seeds=[0],
                          judges=["reward", f"openai:judge-model@{server.url}"],
                          judge_api_key_env="ALIGNPRO_TEST_JUDGE_KEY", judge_backoff_s=0.01, judge_concurrency=1)
        metrics = run_evaluation(cfg, loader=Counts().loader)
        n_requests = len(server.requests)
    assert set(server.auth) == {"Bearer sk-from-env"}
    # 5 pairs x 2 orders + 1 retry; where ρ* kept x the arm's answer IS no_ft's (common random numbers), and the
    # two orders of a pair of equal answers are one cached judgment
    rows = [json.loads(line) for line in (Path(cfg.out) / "judgments.jsonl").read_text().splitlines()]
    same = sum(r["answer_arm"] == r["answer_baseline"] for r in rows if r["judge"].startswith("openai:"))
    assert n_requests == 2 * (5 - same) + same + 1
    usage = metrics["usage"]["judges"][f"openai:judge-model@{server.url}"]
    assert usage["retries"] == 1 and usage["rate_limited"] == 1 and usage["malformed"] == 1
    (wr,) = [w for w in metrics["cells"][0]["win_rates"] if w["judge"].startswith("openai:")]
    assert wr["n"] == 5 and wr["judge_independent"] is True
    # the one malformed reply is one unreadable judgment, or two where it judged a pair of equal answers (both
    # orders of such a pair are one cached judgment)
    (bad,) = [r for r in rows if r["judge"].startswith("openai:")
              and "invalid" in (r["arm_first"], r["baseline_first"])]
    assert wr["invalid"] == (2 if bad["answer_arm"] == bad["answer_baseline"] else 1)
    assert wr["invalid"] == (bad["arm_first"] == "invalid") + (bad["baseline_first"] == "invalid")
    table = (Path(cfg.out) / "table.md").read_text()
    assert f"## Judge `openai:judge-model@{server.url}`" in table

    # a resumed run is served from the cache: the server is gone and is not needed
    again = run_evaluation(dataclasses.replace(cfg, resume=cfg.out), loader=Counts().loader)
    assert again["cells"] == metrics["cells"]


# ---------------------------------------------------------------------------------------------------------------
# The embedded model, end to end (tiny)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.timeout(170)
def test_tiny_evaluation_on_smollm2_with_the_llm_judge(tmp_path: Path, smollm2_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    ckpt = tmp_path / "checkpoint"  # stands in for a trained transformers folder (prompter and oracle)
    ckpt.symlink_to(smollm2_path, target_is_directory=True)
    cfg = build_config(EvaluateConfig, {
        "out": str(tmp_path / "run"), "prompters": ["smollm2"], "targets": ["smollm2"], "reward": "builtin",
        "datasets": ["builtin:eval"], "n": 2, "seeds": [0],
        "arms": ["no_ft", "align_pro_closed_form", f"align_pro=hf:{ckpt}", f"oracle=hf:{ckpt}"],
        "judges": ["reward", "llm:smollm2"], "judged_arms": ["align_pro_closed_form"], "k": 1, "m": 1,
        "answer_max_new_tokens": 12, "rewrite_max_new_tokens": 24, "llm_judge_max_new_tokens": 3,
        "progress": False,
    })
    metrics = run_evaluation(cfg)
    for name in OUTPUTS:
        assert (Path(cfg.out) / name).is_file()
    (cell,) = metrics["cells"]
    assert list(cell["arms"]) == ["no_ft", "align_pro_closed_form", "align_pro", "oracle"]
    assert all(a["n"] == 2 for a in cell["arms"].values())
    assert {w["judge"] for w in cell["win_rates"]} == {"reward(tie_margin=0.01)", "llm:smollm2"}
    llm = next(w for w in cell["win_rates"] if w["judge"] == "llm:smollm2")
    assert llm["n"] == 2 and llm["invalid"] <= 4
    assert metrics["usage"]["model_loads"]  # models were loaded...
    again = run_evaluation(dataclasses.replace(cfg, resume=cfg.out))
    assert again["usage"]["model_loads"] == {}  # ...and not at all the second time
    assert again["cells"] == metrics["cells"]


def test_the_ifeval_reward_scores_the_grid_from_the_datasets_records(tmp_path: Path) -> None:
    """`evaluate` hands the datasets' records to a record-based reward: instructions come from the original x.
    The fake target echoes words without punctuation, so it always follows "no commas" and never "all capitals"."""
    rows = [{"key": 1, "prompt": "Describe rain. Do not use any commas.", "instruction_id_list": ["punctuation:no_comma"],
             "kwargs": [{}]},
            {"key": 2, "prompt": "Describe snow. Answer in capital letters only.",
             "instruction_id_list": ["change_case:english_capital"], "kwargs": [{}]}]
    data = tmp_path / "ifeval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = build_config(EvaluateConfig, {
        "out": str(tmp_path / "run"), "prompters": ["fake"], "targets": ["fake"], "reward": "ifeval",
        "datasets": [f"mine={data}"], "seeds": [0], "arms": ["no_ft", "align_pro_closed_form"],
        "judges": ["reward"], "k": 2, "m": 1, "batch_size": 4, "progress": False})
    metrics = run_evaluation(cfg)
    (cell,) = metrics["cells"]
    assert cell["arms"]["no_ft"]["mean"] == pytest.approx(0.5)  # 1 on the first prompt, 0 on the second
    with pytest.raises(ConfigError, match="invalid reward spec"):
        build_config(EvaluateConfig, {"out": str(tmp_path / "x"), "reward": "ifeval+nope",
                                      "datasets": ["builtin-ifeval:eval"]})


def test_google_ifeval_configs_are_the_preregistered_protocol_and_pass_preflight(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """configs/eval-ifeval-google.yaml and -sft.yaml: all 477 offline-checkable IFEval prompts, 4 coupled answers,
    seed 2, every no-learning baseline beside no_ft, the shipped prompter (and oracle) / its SFT stage alone, one
    shared cache; best_suffix is refused until its train-split choice is recorded."""
    import alignpro.baselines as baselines

    monkeypatch.chdir(REPO)  # the adapter paths are relative to the repository
    main = build_config(EvaluateConfig, load_yaml(REPO / "configs" / "eval-ifeval-google.yaml"))
    sft = build_config(EvaluateConfig, load_yaml(REPO / "configs" / "eval-ifeval-google-sft.yaml"))
    baseline_arms = ["suffix", "repeat", "best_suffix", "answer_rewrite"]
    assert list(main.arm_specs) == ["no_ft", *baseline_arms, "align_pro", "oracle"]
    assert list(sft.arm_specs) == ["no_ft", *baseline_arms, "align_pro"]
    assert main.arm_specs["align_pro"] == "hf:alignpro/adapters/ifeval-prompter"
    assert sft.arm_specs["align_pro"] == "hf:alignpro/adapters/ifeval-prompter-sft"
    for name in ("reward", "datasets", "n", "seeds", "answers_per_prompt", "template", "answer_gen", "rewrite_gen",
                 "batch_size", "prompters", "targets", "cache", "guard_reward"):
        assert getattr(main, name) == getattr(sft, name), name
    assert main.dataset_sources == {"google": "ifeval:offline"} and main.n == 0 and main.seeds == [2]
    assert main.answers_per_prompt == 4 and main.reward == "ifeval" and main.guard_reward == "builtin"
    monkeypatch.setattr(baselines, "CHOICE", tmp_path / "none.json")
    with pytest.raises(ConfigError, match="alignpro.baselines.choose"):
        preflight(main)
    (tmp_path / "chosen.json").write_text('{"choice": "Follow all of the instructions above precisely.", '
                                          '"command": "test"}')
    monkeypatch.setattr(baselines, "CHOICE", tmp_path / "chosen.json")
    plan = preflight(main)
    assert plan.arms == list(main.arm_specs) and len(plan.prompts["google"]) == 477


def test_writing_prompter_configs_share_the_preregistered_protocols_and_caches(monkeypatch) -> None:
    """configs/eval-ifeval-google-writing.yaml and eval-ifeval-headline-writing.yaml: the writing prompter and its
    SFT start beside no_ft and every no-learning baseline, under the protocol and on the cache of the IFEval and the
    headline configs (so the baselines' answers are the same answers); both pass preflight."""
    monkeypatch.chdir(REPO)  # the adapter paths are relative to the repository
    baseline_arms = ["suffix", "repeat", "best_suffix", "answer_rewrite"]
    for name, protocol, n in (("google-writing", "google", 477), ("headline-writing", "headline", 192)):
        cfg = build_config(EvaluateConfig, load_yaml(REPO / "configs" / f"eval-ifeval-{name}.yaml"))
        ref = build_config(EvaluateConfig, load_yaml(REPO / "configs" / f"eval-ifeval-{protocol}.yaml"))
        assert list(cfg.arm_specs) == ["no_ft", *baseline_arms, "align_pro", "align_pro_sft"]
        assert cfg.arm_specs["align_pro"] == "hf:alignpro/adapters/writing-prompter"
        assert cfg.arm_specs["align_pro_sft"] == "hf:alignpro/adapters/writing-prompter-sft"
        for key in ("reward", "datasets", "n", "seeds", "answers_per_prompt", "template", "answer_gen",
                    "rewrite_gen", "batch_size", "prompters", "targets", "cache", "guard_reward"):
            assert getattr(cfg, key) == getattr(ref, key), (name, key)
        for arm in ("no_ft", "suffix", "best_suffix"):
            assert cfg.arm_specs[arm] == ref.arm_specs[arm]
        plan = preflight(cfg)
        assert plan.arms == list(cfg.arm_specs) and len(next(iter(plan.prompts.values()))) == n
