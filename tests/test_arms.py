"""The one arm runner (alignpro.arms) and its two callers, `alignpro demo` and `alignpro evaluate`: common random
numbers where two arms show π_F the same x′, system prompts on every call to π_F, ρ* draws that do not depend on
which other arms run, and the Arm definition shared by both commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignpro import baselines
from alignpro.arms import (ANSWER_REWRITE_SEED, FRESH_SEED, NO_LEARNING_BASELINES, REWRITE_SEED, ROLLOUT_SEED, Arm,
                           ArmRun, ClosedFormConfig, ClosedFormSettings, answer_arm, answer_baseline, answer_oracle,
                           parse_baseline, propose_closed_form)
from alignpro.backends.base import prompt_keys
from alignpro.errors import ConfigError
from alignpro.backends.fake import FakePrompter, FakeReward, FakeTarget
from alignpro.config import build_config
from alignpro.data import PromptRecord
from alignpro.demo import DemoConfig, run_demo
from alignpro.evaluate.config import ARM_FORMS, EvaluateConfig
from alignpro.evaluate.runner import Evaluation

DATA = Path(__file__).parent / "data"


class RecordingTarget(FakeTarget):
    """The fake π_F, remembering every (prompt, system) it was asked to answer, and each answer's stream."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.streams: list[tuple[str, int, str, int]] = []  #: (prompt shown, seed, key, j) of every answer

    def answer(self, prompts, *, n=1, seed=None, systems=None, keys=None):
        assert systems is not None and len(systems) == len(prompts), "π_F was called without the system prompts"
        assert keys is not None and len(keys) == len(prompts), "π_F was called without the stream keys"
        self.calls += list(zip(prompts, systems))
        self.streams += [(p, seed, k, j) for p, k in zip(prompts, keys) for j in range(n)]
        return super().answer(prompts, n=n, seed=seed, systems=systems, keys=keys)


class RecordingReward(FakeReward):
    """The fake reward, remembering the prompts it scored against."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def score(self, prompts, answers):
        self.prompts += list(prompts)
        return super().score(prompts, answers)


PROMPTS = ["how do I bake bread", "what is rain", "name a grey kitten", "why is the sky blue"]
SYSTEMS = ["You are a baker.", None, "You are a cat person.", "You are a physicist."]


def _run(**kw) -> ArmRun:
    return ArmRun(list(PROMPTS), list(SYSTEMS), n=kw.get("n", 3), seed=kw.get("seed", 0),
                  batch_size=kw.get("batch_size", 4))


@pytest.fixture
def choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A recorded best_suffix choice in a temporary file (the tests never depend on the committed one)."""
    path = tmp_path / "best_suffix.json"
    path.write_text('{"choice": "Be precise: follow the instructions word for word.", "command": "test"}')
    monkeypatch.setattr(baselines, "CHOICE", path)
    return "Be precise: follow the instructions word for word."


# ---------------------------------------------------------------------------------------------------------------
# The runner itself
# ---------------------------------------------------------------------------------------------------------------


def test_an_arm_showing_x_gets_no_ft_answers_and_is_not_answered_again() -> None:
    run, target, reward = _run(), RecordingTarget(), FakeReward()
    answer_arm(run, Arm.NO_FT, target, reward, run.prompts)
    asked = len(target.calls)
    shown = [PROMPTS[0], PROMPTS[1] + " Please be kind.", PROMPTS[2], PROMPTS[3] + " Thanks."]
    answer_arm(run, Arm.CLOSED_FORM, target, reward, shown)
    assert [p for p, _ in target.calls[asked:]] == [shown[1], shown[3]]  # only the new x′ reach π_F
    for i in (0, 2):  # same x′ as no_ft: the very same answers and rewards (paired difference exactly 0)
        assert run.answers[Arm.CLOSED_FORM][i] == run.answers[Arm.NO_FT][i]
        assert np.array_equal(run.rewards[Arm.CLOSED_FORM][i], run.rewards[Arm.NO_FT][i])
    assert run.answers[Arm.CLOSED_FORM][1] != run.answers[Arm.NO_FT][1]
    assert run.rewards[Arm.CLOSED_FORM].shape == (4, 3) and run.rewrites[Arm.CLOSED_FORM] == shown
    # a third arm showing an x′ another arm already showed shares that arm's answers too
    answer_arm(run, Arm.ALIGN_PRO, target, reward, [shown[1]] * 4)
    assert run.answers[Arm.ALIGN_PRO][1] == run.answers[Arm.CLOSED_FORM][1]
    assert run.answers[Arm.ALIGN_PRO][0] != run.answers[Arm.NO_FT][0]  # same text, other original x


def test_the_oracle_answers_every_x_itself_on_the_coupled_streams() -> None:
    run, target, oracle, reward = _run(), RecordingTarget(), RecordingTarget(), FakeReward()
    answer_arm(run, Arm.NO_FT, target, reward, run.prompts)
    answer_oracle(run, oracle, reward)
    assert [p for p, _ in oracle.calls] == PROMPTS  # every x, although no_ft answered the same x
    assert oracle.streams == target.streams  # the same (seed, key, j): common random numbers across models
    # here the "oracle" is the same fake model, so coupled answers are identical: a paired difference of exactly 0
    assert run.answers[Arm.ORACLE] == run.answers[Arm.NO_FT]


def test_every_call_to_the_target_carries_the_system_prompts() -> None:
    run, target = _run(), RecordingTarget()
    answer_arm(run, Arm.NO_FT, target, FakeReward(), run.prompts)
    propose_closed_form(run, Arm.CLOSED_FORM, FakePrompter(), target, FakeReward(),
                        ClosedFormSettings(k=3, m=2, lam=0.5, identity_prior=0.5))
    answer_arm(run, Arm.CLOSED_FORM, target, FakeReward(), run.closed_forms[Arm.CLOSED_FORM].chosen)
    system_of = dict(zip(PROMPTS, SYSTEMS))
    for prompt, system in target.calls:  # x, or a rewrite of x that starts with x (the fake prompter's suffixes)
        origin = next((x for x in PROMPTS if prompt.startswith(x)), None)
        if origin is not None:
            assert system == system_of[origin], prompt
    n_rollout = len(PROMPTS) * (3 + 1)  # K rewrites + x itself per prompt, asked once each (with M answers)
    assert len(target.calls) >= len(PROMPTS) + n_rollout


def test_rho_star_draws_do_not_depend_on_which_closed_form_variants_are_answered() -> None:
    settings = ClosedFormSettings(k=3, m=1, lam=0.3, identity_prior=0.5)
    runs = [_run(), _run()]
    for run in runs:
        propose_closed_form(run, Arm.CLOSED_FORM, FakePrompter(), FakeTarget(), FakeReward(), settings)
    answer_arm(runs[1], Arm.CLOSED_FORM_REWRITES_ONLY, FakeTarget(), FakeReward(),
               runs[1].closed_forms[Arm.CLOSED_FORM_REWRITES_ONLY].chosen)
    for run in runs:
        propose_closed_form(run, Arm.CLOSED_FORM_TRAINED, FakePrompter(), FakeTarget(), FakeReward(), settings)
    for arm in (Arm.CLOSED_FORM, Arm.CLOSED_FORM_REWRITES_ONLY, Arm.CLOSED_FORM_TRAINED):
        assert np.array_equal(runs[0].closed_forms[arm].picked, runs[1].closed_forms[arm].picked)
    ro = runs[0].closed_forms[Arm.CLOSED_FORM_REWRITES_ONLY]
    assert (ro.picked >= 1).all() and ro.chose_original_fraction == 0.0  # x itself is never a candidate


def test_one_seed_scheme_no_two_streams_share_an_offset() -> None:
    offsets = [FRESH_SEED, ANSWER_REWRITE_SEED, REWRITE_SEED]
    assert len(set(offsets)) == len(offsets) and max(offsets) < min(ROLLOUT_SEED.values())
    assert set(ROLLOUT_SEED) == {Arm.CLOSED_FORM, Arm.CLOSED_FORM_TRAINED}


def test_every_arm_draws_answer_j_of_x_from_one_stream() -> None:
    """Coupled answers: no_ft, the closed form, align_pro, the oracle and the prompt baselines answer x or their x′
    from (seed + FRESH_SEED, key of x, j); R̂'s answers from the closed form's own seed, all candidates of x on x's
    key (so fresh answers never reuse the answers that chose x′)."""
    run, target = _run(n=2), RecordingTarget()
    keys = prompt_keys(PROMPTS, SYSTEMS)
    answer_arm(run, Arm.NO_FT, target, FakeReward(), run.prompts)
    propose_closed_form(run, Arm.CLOSED_FORM, FakePrompter(), target, FakeReward(),
                        ClosedFormSettings(k=3, m=2, lam=0.5, identity_prior=0.5))
    rollout = target.streams[len(PROMPTS) * 2:]
    assert {(s, k) for _, s, k, _ in rollout} == {(ROLLOUT_SEED[Arm.CLOSED_FORM], k) for k in keys}
    assert len(rollout) == len(PROMPTS) * 4 * 2  # (K + 1) candidates × M answers per x, all on x's key
    before = len(target.streams)
    answer_arm(run, Arm.ALIGN_PRO, target, FakeReward(), [x + " Please be kind." for x in PROMPTS])
    answer_baseline(run, Arm.REPEAT, target, FakeReward())
    fresh = target.streams[:len(PROMPTS) * 2] + target.streams[before:]
    assert {(s, k, j) for _, s, k, j in fresh} == {(FRESH_SEED, k, j) for k in keys for j in range(2)}
    assert len(fresh) == 3 * len(PROMPTS) * 2


def test_answers_do_not_depend_on_the_batch_size() -> None:
    """Keyed streams: the same arms on the same prompts give the same answers whatever the chunking."""
    got = []
    for batch_size in (3, 12):
        run = _run(batch_size=batch_size)
        answer_arm(run, Arm.NO_FT, FakeTarget(), FakeReward(), run.prompts)
        propose_closed_form(run, Arm.CLOSED_FORM, FakePrompter(), FakeTarget(), FakeReward(),
                            ClosedFormSettings(k=2, m=2, lam=0.5, identity_prior=0.5))
        answer_arm(run, Arm.ALIGN_PRO, FakeTarget(), FakeReward(), [x + " Please be kind." for x in PROMPTS])
        got.append(run)
    a, b = got
    assert a.answers == b.answers
    # the rewrites are drawn per chunk, but R̂ of x itself (candidate 0) is on x's stream: the same in both
    assert np.array_equal(a.closed_forms[Arm.CLOSED_FORM].r_hat[:, 0], b.closed_forms[Arm.CLOSED_FORM].r_hat[:, 0])


def test_closed_form_settings_are_checked_once() -> None:
    ok = dict(k=2, m=1, lam=0.0, identity_prior=0.0)
    ClosedFormSettings(**ok)
    for name, bad in (("k", 0), ("m", 0), ("lam", -0.1), ("lam", float("nan")), ("identity_prior", 1.0),
                      ("identity_prior", -0.1)):
        with pytest.raises(ConfigError, match=f"'{name}'"):
            ClosedFormSettings(**{**ok, name: bad})
    with pytest.raises(ConfigError, match="'identity_prior'"):
        ClosedFormConfig(identity_prior=1.5)


# ---------------------------------------------------------------------------------------------------------------
# No-learning baselines
# ---------------------------------------------------------------------------------------------------------------


def test_the_baselines_are_the_no_learning_arms() -> None:
    assert NO_LEARNING_BASELINES == {Arm(name) for name in baselines.NAMES}
    assert not any(a.rewrites or a.checkpoint_role for a in NO_LEARNING_BASELINES)  # no prompter, no checkpoint
    assert baselines.DEFAULT_SUFFIX in baselines.load_catalog() and len(baselines.load_catalog()) >= 10


@pytest.mark.parametrize("arm,line,expected", [
    (Arm.SUFFIX, None, "what is rain\n\nIMPORTANT: Follow every instruction in this message exactly."),
    (Arm.SUFFIX, "Be brief.", "what is rain\n\nBe brief."),
    (Arm.REPEAT, None, "what is rain\n\nwhat is rain"),
    (Arm.BEST_SUFFIX, None, "what is rain\n\nBe precise: follow the instructions word for word."),
])
def test_prompt_baselines_show_their_exact_prompt_and_are_scored_against_x(arm, line, expected, choice) -> None:
    run, target, reward = _run(n=2), RecordingTarget(), RecordingReward()
    answer_arm(run, Arm.NO_FT, target, reward, run.prompts)
    answer_baseline(run, arm, target, reward, line=line)
    assert run.rewrites[arm.value][1] == expected
    assert [p for p, _ in target.calls[len(PROMPTS):]] == run.rewrites[arm.value]
    assert reward.prompts == [x for x in PROMPTS for _ in range(2)] * 2  # every answer scored against x
    assert run.rewards[arm.value].shape == (4, 2) and run.answers[arm.value] != run.answers[Arm.NO_FT.value]
    if arm is Arm.BEST_SUFFIX:
        assert run.diagnostics[arm.value]["line"] == choice and run.diagnostics[arm.value]["command"] == "test"


def test_answer_rewrite_rewrites_no_fts_answers_and_is_scored_against_x() -> None:
    run, target, reward = _run(n=2), RecordingTarget(), RecordingReward()
    answer_arm(run, Arm.NO_FT, target, reward, run.prompts)
    asked, drawn = len(target.calls), len(target.streams)
    answer_baseline(run, Arm.ANSWER_REWRITE, target, reward)
    requests = [p for p, _ in target.calls[asked:]]
    assert requests == [baselines.answer_rewrite_request(x, y) for x, row in zip(PROMPTS, run.answers["no_ft"])
                        for y in row]  # stage one is no_ft's answers, not asked again
    assert all(x in r and "Rewrite the draft response" in r for x, r in zip([x for x in PROMPTS for _ in "ab"],
                                                                           requests))
    assert [s for _, s in target.calls[asked:]] == [s for s in SYSTEMS for _ in range(2)]
    keys = prompt_keys(PROMPTS, SYSTEMS)
    assert [(s, k) for _, s, k, _ in target.streams[drawn:]] == [(ANSWER_REWRITE_SEED, f"{k}\x1f{j}") for k in keys
                                                                for j in range(2)]
    stage_two = FakeTarget().answer(requests, seed=ANSWER_REWRITE_SEED,
                                    keys=[f"{k}\x1f{j}" for k in keys for j in range(2)])
    assert run.answers[Arm.ANSWER_REWRITE.value] == [[stage_two[2 * i][0].text, stage_two[2 * i + 1][0].text]
                                                     for i in range(4)]
    assert reward.prompts[len(PROMPTS) * 2:] == [x for x in PROMPTS for _ in range(2)]  # scored against x


def test_answer_rewrite_reports_progress_in_prompts_as_its_calls_finish() -> None:
    run, target, reward, done = _run(n=2, batch_size=4), FakeTarget(), FakeReward(), []
    answer_arm(run, Arm.NO_FT, target, reward, run.prompts)
    answer_baseline(run, Arm.ANSWER_REWRITE, target, reward, progress=done.append)
    assert done == [2, 2]  # 4 prompts × 2 answers, 4 rewrites a call: two calls of two whole prompts each
    with_bar = dict(run.answers)
    run2 = _run(n=2, batch_size=4)
    answer_arm(run2, Arm.NO_FT, FakeTarget(), FakeReward(), run2.prompts)
    answer_baseline(run2, Arm.ANSWER_REWRITE, FakeTarget(), FakeReward())
    assert run2.answers == with_bar  # the bar changes nothing drawn


def test_parse_baseline() -> None:
    assert parse_baseline("suffix=Be brief.") == (Arm.SUFFIX, "Be brief.")
    assert parse_baseline("repeat") == (Arm.REPEAT, None) and parse_baseline("suffix") == (Arm.SUFFIX, None)
    for bad in ("repeat=twice", "no_ft", "sufix"):
        with pytest.raises(ConfigError):
            parse_baseline(bad)


def test_best_suffix_without_a_recorded_choice_is_a_config_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(baselines, "CHOICE", tmp_path / "none.json")
    with pytest.raises(ConfigError, match="alignpro.baselines.choose"):
        parse_baseline("best_suffix")


# ---------------------------------------------------------------------------------------------------------------
# The two commands on the runner
# ---------------------------------------------------------------------------------------------------------------


def test_one_arm_definition_in_both_commands(tmp_path: Path, choice: str) -> None:
    assert ARM_FORMS == tuple(a.value + (f"=<{a.checkpoint_role} checkpoint spec>" if a.checkpoint_role else "")
                              + ("[=<line appended to x>]" if a is Arm.SUFFIX else "") for a in Arm)
    m = run_demo(build_config(DemoConfig, dict(prompter="fake", target="fake", reward="fake", n_prompts=4, k=2, m=1,
                                               n_fresh=1, trained_prompter="fake", sft_prompter="fake", oracle="fake",
                                               guard_reward="",
                                               baselines=[a.value for a in Arm if a.is_no_learning_baseline],
                                               out=str(tmp_path / "demo"))))
    assert list(m["cells"][0]["arms"]) == [a.value for a in Arm]  # the demo runs every arm, in the runner's order


def test_demo_passes_the_records_system_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice) -> None:
    import alignpro.data

    records = [PromptRecord(id=str(i), text=x, system=s) for i, (x, s) in enumerate(zip(PROMPTS, SYSTEMS))]

    class Loaded:
        skipped, skipped_reasons = 0, {}

    Loaded.records = records
    monkeypatch.setattr(alignpro.data, "load_prompts", lambda *a, **kw: Loaded)
    target = RecordingTarget()
    run_demo(build_config(DemoConfig, dict(prompter="fake", target="fake", reward="fake", k=2, m=1, n_fresh=2,
                                           trained_prompter="fake", oracle="", guard_reward="",
                                           out=str(tmp_path / "demo"))), target=target)
    system_of = dict(zip(PROMPTS, SYSTEMS))
    seen = {(p, s) for p, s in target.calls if p in system_of}
    assert seen == set(system_of.items())  # every x reached π_F with its own system prompt, and only with it


def _evaluation(tmp_path: Path, target: RecordingTarget | None = None, **overrides) -> Evaluation:
    values = {"out": str(tmp_path / "run"), "prompters": ["fake"], "targets": ["fake"], "reward": "fake",
              "datasets": [f"mine={DATA / 'prompts.jsonl'}"],
              "dataset_options": ["mine.field=query", "mine.system_field=sys", "mine.skip_bad=true"],
              "seeds": [0], "arms": ["no_ft", "align_pro_closed_form"], "judges": ["reward"], "k": 3, "m": 1,
              "identity_prior": 0.8, "lam": 5.0, "answers_per_prompt": 2, "batch_size": 4, "progress": False}
    values.update(overrides)
    backends = {"prompter": FakePrompter, "target": lambda: target or FakeTarget(), "reward": FakeReward}
    return Evaluation(build_config(EvaluateConfig, values), loader=lambda role, spec: backends[role]())


def test_evaluate_shares_answers_where_the_closed_form_keeps_x(tmp_path: Path) -> None:
    ev = _evaluation(tmp_path, datasets=["builtin:eval"], dataset_options=[], n=12, identity_prior=0.9, lam=1.0)
    ev.run()
    r = ev.runs[0].arms
    cf = Arm.CLOSED_FORM.value
    kept = [i for i, x in enumerate(r.prompts) if r.rewrites[cf][i] == x]
    changed = [i for i in range(len(r.prompts)) if i not in kept]
    assert kept and changed  # α = 0.9 and a soft ρ*: both occur
    for i in kept:
        assert r.answers[cf][i] == r.answers["no_ft"][i] and np.array_equal(r.rewards[cf][i], r.rewards["no_ft"][i])
    assert all(r.answers[cf][i] != r.answers["no_ft"][i] for i in changed)


def test_evaluate_passes_the_system_prompts_in_every_stage(tmp_path: Path) -> None:
    target = RecordingTarget()
    ev = _evaluation(tmp_path, target, arms=["no_ft", "align_pro_closed_form", "align_pro_closed_form_rewrites_only"])
    ev.run()
    systems = dict(zip(ev.runs[0].arms.prompts, ev.runs[0].arms.systems))
    assert any(systems.values())
    for prompt, system in target.calls:
        origin = next(x for x in systems if prompt.startswith(x) or prompt == "Tell me about the weather.")
        if prompt.startswith(origin):
            assert system == systems[origin], prompt


def test_evaluate_runs_every_arm_and_closed_form_draws_match_without_the_extra_arms(tmp_path: Path,
                                                                                     choice: str) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    every = _evaluation(tmp_path / "every", arms=[a.value + (f"=hf:{ckpt}" if a.checkpoint_role else "") for a in Arm])
    metrics = every.run()
    (cell,) = metrics["cells"]
    assert list(cell["arms"]) == [a.value for a in Arm]
    assert {w["arm"] for w in cell["win_rates"]} == {a.value for a in Arm} - {"no_ft"}
    assert set(cell["diagnostics"]) >= {Arm.CLOSED_FORM, Arm.CLOSED_FORM_REWRITES_ONLY, Arm.CLOSED_FORM_TRAINED}
    two = _evaluation(tmp_path / "two")
    two.run()
    cf = Arm.CLOSED_FORM.value
    assert two.runs[0].arms.rewrites[cf] == every.runs[0].arms.rewrites[cf]
    assert two.runs[0].arms.answers[cf] == every.runs[0].arms.answers[cf]


def test_evaluate_suffix_takes_its_line(tmp_path: Path) -> None:
    ev = _evaluation(tmp_path, arms=["no_ft", "suffix=Answer in French.", "repeat"], judges=[])
    ev.run()
    r = ev.runs[0].arms
    assert r.rewrites["suffix"] == [f"{x}\n\nAnswer in French." for x in r.prompts]
    assert r.rewrites["repeat"] == [f"{x}\n\n{x}" for x in r.prompts]
    with pytest.raises(ConfigError, match="takes no checkpoint"):
        _evaluation(tmp_path / "bad", arms=["no_ft", "repeat=twice"])
