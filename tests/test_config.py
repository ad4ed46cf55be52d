from dataclasses import dataclass
from typing import Literal

import pytest

from alignpro.config import parse_config, setting
from alignpro.errors import ConfigError


@dataclass
class Cfg:
    steps: int = setting(3, "steps")
    lam: float = setting(0.1, "lambda")
    name: str = setting("x", "a name")
    flag: bool = setting(False, "a flag")
    algo: Literal["ppo", "rloo"] = setting("ppo", "algorithm")
    tags: list[str] = setting([], "tags")

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"setting 'steps' must be >= 1, got {self.steps}")


def test_flags_override_yaml_override_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 7\nlam: 0.5\nalgo: rloo\ntags: [a, b]\n")
    c = parse_config(Cfg, ["--config", str(f), "--lam", "0.25", "--flag"], prog="t")
    assert (c.steps, c.lam, c.flag, c.algo, c.tags, c.name) == (7, 0.25, True, "rloo", ["a", "b"], "x")


def test_unknown_yaml_key_names_it(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stepz: 7\n")
    with pytest.raises(ConfigError, match="stepz.*valid settings"):
        parse_config(Cfg, ["--config", str(f)], prog="t")


def test_bad_type_and_choice_and_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: many\n")
    with pytest.raises(ConfigError, match="'steps'"):
        parse_config(Cfg, ["--config", str(f)], prog="t")
    f.write_text("algo: sac\n")
    with pytest.raises(ConfigError, match="algo"):
        parse_config(Cfg, ["--config", str(f)], prog="t")
    with pytest.raises(ConfigError, match="steps"):
        parse_config(Cfg, ["--steps", "0"], prog="t")
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--algo", "sac"], prog="t")


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(Cfg, ["--config", str(tmp_path / "nope.yaml")], prog="t")


# ---------------------------------------------------------------------------------------------------------------
# Shared setting groups, the one validation helper, the one resume contract, generated spec help
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    out: str = setting("runs/x", "run folder")
    resume: str | None = setting(None, "continue RUN", resumable=True)
    steps: int = setting(3, "steps", resumable=True)
    lr: float = setting(0.1, "learning rate")
    quick: bool = setting(False, "small", preset={"steps": 1, "lr": 0.5})

    def __post_init__(self):
        from alignpro.config import check_at_least

        if self.resume:
            self.out = self.resume
        check_at_least(self, 1, "steps")


def test_check_at_least_names_the_setting_or_collects_every_problem():
    from alignpro.config import check_at_least

    with pytest.raises(ConfigError, match=r"^setting 'steps' must be >= 1, got 0$"):
        check_at_least(_obj(steps=0, lr=1.0), 1, "steps", "lr")
    problems: list[str] = []
    check_at_least(_obj(a=-1, b=float("nan"), c=2), 0, "a", "b", "c", problems=problems)
    assert problems == ["setting 'a' must be >= 0, got -1", "setting 'b' must be >= 0, got nan"]
    with pytest.raises(ConfigError, match=r"^option 'n' must be >= 1, got 0$"):
        check_at_least(_obj(n=0), 1, "n", kind="option")


def _obj(**values):
    import types

    return types.SimpleNamespace(**values)


def test_a_preset_fills_only_the_settings_not_given_and_they_are_validated(tmp_path):
    assert (parse_config(Run, ["--quick"], prog="t").steps, parse_config(Run, ["--quick"], prog="t").lr) == (1, 0.5)
    assert parse_config(Run, ["--quick", "--steps", "7"], prog="t").steps == 7  # a flag wins
    f = tmp_path / "c.yaml"
    f.write_text("quick: true\nlr: 0.25\n")
    assert parse_config(Run, ["--config", str(f)], prog="t").lr == 0.25  # so does a YAML key
    assert parse_config(Run, [], prog="t").steps == 3  # no preset without --quick
    with pytest.raises(ConfigError, match="setting 'steps' must be >= 1, got -1"):
        parse_config(Run, ["--quick", "--steps", "-1"], prog="t")


def test_resume_reuses_the_saved_settings_and_names_every_one_that_may_not_change(tmp_path):
    from alignpro.config import build_config, check_resume, config_to_dict, resumable_settings, write_run_config

    run = tmp_path / "run"
    run.mkdir()
    saved = write_run_config(build_config(Run, {"out": str(run), "lr": 0.3, "steps": 5}))
    assert saved == run / "config.yaml" and "resume: null" in saved.read_text()
    assert resumable_settings(Run) == ("resume", "steps")
    c = parse_config(Run, ["--resume", str(run), "--steps", "9"], prog="t")
    assert (c.out, c.lr, c.steps, c.resume) == (str(run), 0.3, 9, str(run))  # lr from the run, steps raised
    bare = parse_config(Run, ["--out", str(run), "--resume"], prog="t")  # --resume alone: the run in --out
    assert (bare.resume, bare.lr) == (str(run), 0.3)
    with pytest.raises(ConfigError) as err:
        parse_config(Run, ["--resume", str(run), "--lr", "0.5", "--quick"], prog="t")
    assert str(err.value).startswith(f"setting(s) ['lr', 'quick'] differ from the run's {saved} (lr: 0.3 there, "
                                     "0.5 here; quick: False there, True here); a resumed run may change only "
                                     "['steps']")
    with pytest.raises(ConfigError, match=r"'.*nope' is not a run folder \(no config.yaml\)"):
        parse_config(Run, ["--resume", str(tmp_path / "nope")], prog="t")
    check_resume({"out": "elsewhere", "lr": 0.3, "steps": 5}, config_to_dict(c), Run, saved)  # out is no difference


def test_a_renamed_group_may_omit_settings_and_overopt_takes_the_closed_forms_k_m_alpha_from_the_arms():
    import dataclasses

    from alignpro.arms import ClosedFormConfig
    from alignpro.config import renamed_group
    from alignpro.overopt.config import OveroptConfig

    group = {f.name: f for f in dataclasses.fields(ClosedFormConfig)}
    mine = {f.name: f for f in dataclasses.fields(OveroptConfig)}
    for name in ("k", "m", "identity_prior"):  # the arms' declaration: same default and help
        assert (mine[name].default, mine[name].metadata["help"]) == (group[name].default, group[name].metadata["help"])
    assert "lam" not in mine and "lams" in mine
    Renamed = renamed_group(ClosedFormConfig, {"k": "n_rewrites"}, omit=("identity_prior",))
    c = Renamed(n_rewrites=3)
    assert [f.name for f in dataclasses.fields(Renamed)] == ["n_rewrites", "m", "lam"] and c.m == 2
    with pytest.raises(AttributeError, match="identity_prior"):  # its method reads the omitted setting
        c.closed_form_settings()
    with pytest.raises(TypeError, match=r"ClosedFormConfig has no setting\(s\) \['lams'\]"):
        renamed_group(ClosedFormConfig, {}, omit=("lams",))


def test_every_resumable_command_declares_its_resumable_settings_where_they_are_declared():
    from alignpro.config import resumable_settings
    from alignpro.overopt.config import OveroptConfig
    from alignpro.reward_model.config import RewardLabelConfig, RewardTrainConfig
    from alignpro.train.config import TrainConfig
    from alignpro.train.sft import SFTConfig

    run_group = {"resume", "save_every", "keep_checkpoints", "report_to", "progress", "num_threads"}
    assert set(resumable_settings(TrainConfig)) == run_group | {"steps", "device", "generation_batch_size",
                                                                "time_limit_minutes", "debug_param_checksum",
                                                                "heldout_every"}
    assert set(resumable_settings(SFTConfig)) == run_group
    assert set(resumable_settings(RewardTrainConfig)) == run_group | {"device", "eval_batch_size"}
    assert set(resumable_settings(RewardLabelConfig)) == {"resume", "progress"}
    assert set(resumable_settings(OveroptConfig)) == {"resume", "progress", "num_threads", "device",
                                                      "n_eval_prompts", "train_time_limit_minutes"}
    assert RewardLabelConfig.config_file("out/pairs.jsonl").as_posix() == "out/pairs.config.yaml"


def test_answer_sampling_is_declared_once_and_overridden_only_with_a_reason():
    """π_F's sampling settings of every command are AnswerSettings' own fields (same help), under the names each
    command's flags have; a different default is an override whose help says why."""
    import dataclasses

    from alignpro.backends.base import PAPER_ANSWER_CONFIG, AnswerSettings
    from alignpro.demo import DemoConfig
    from alignpro.evaluate.config import EvaluateConfig
    from alignpro.overopt.config import OveroptConfig
    from alignpro.quick import AnswerConfig
    from alignpro.reward_model.config import RewardLabelConfig
    from alignpro.serve.app import ServeConfig
    from alignpro.train.config import TrainConfig

    group = {f.name: f for f in dataclasses.fields(AnswerSettings)}
    plain = {"answer_max_new_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
             "top_k": "top_k"}
    prefixed = {"answer_max_new_tokens": "answer_max_new_tokens", "temperature": "answer_temperature",
                "top_p": "answer_top_p", "top_k": "answer_top_k"}
    same = {n: n for n in group}
    defaults = {}
    for cls, names in ((AnswerConfig, plain), (ServeConfig, plain), (RewardLabelConfig, plain),
                       (TrainConfig, prefixed), (OveroptConfig, prefixed), (DemoConfig, same),
                       (EvaluateConfig, same)):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in group.items():
            mine = fields[names[name]]
            if mine.default == f.default:
                assert mine.metadata["help"] == f.metadata["help"], (cls.__name__, name)
            else:  # an override says what it replaces, and why, next to its value
                assert "not the" in mine.metadata["help"], (cls.__name__, name)
        defaults[cls.__name__] = tuple(fields[names[n]].default for n in group)
    paper = (PAPER_ANSWER_CONFIG.max_new_tokens, PAPER_ANSWER_CONFIG.temperature, PAPER_ANSWER_CONFIG.top_p,
             PAPER_ANSWER_CONFIG.top_k)
    assert defaults == {"AnswerConfig": paper, "ServeConfig": (256, 1.5, 0.6, 20), "RewardLabelConfig": paper,
                        "TrainConfig": (64, 1.5, 0.6, 20), "OveroptConfig": (128, 1.0, 1.0, 0),
                        "DemoConfig": paper, "EvaluateConfig": paper}
    assert TrainConfig(answer_top_k=5).answer_gen.top_k == 5 and TrainConfig(top_k=5).answer_gen.top_k == 20
    assert ServeConfig(max_new_tokens=32, temperature=0.7).gen.max_new_tokens == 32


def test_spec_help_is_generated_from_the_spec_lists():
    import dataclasses

    from alignpro.backends.registry import KINDS
    from alignpro.specs import REWARD_BUILDERS, REWARD_KINDS, model_spec_help, reward_spec_help

    assert model_spec_help("target").split(" | ") == [k.form for k in KINDS.values()]
    assert model_spec_help("prompter") == "smollm2[?options] | hf:<hub id or local path>[?options] | fake"
    assert model_spec_help("trainable") == "smollm2[?options] | hf:<hub id or local path>[?options]"
    assert set(REWARD_KINDS) == set(REWARD_BUILDERS)  # one form per reward kind that can be built
    for form in ("ifeval", "builtin", "rm:<folder of alignpro reward train>", "python:<module>:<function>",
                 "0.75*ifeval+0.25*builtin"):
        assert form in reward_spec_help()

    from alignpro.demo import DemoConfig
    from alignpro.evaluate.config import EvaluateConfig
    from alignpro.overopt.config import OveroptConfig
    from alignpro.quick import ScoreConfig
    from alignpro.reward_model.config import RewardLabelConfig
    from alignpro.theory.cli import EstimateConfig
    from alignpro.train.config import TrainConfig

    for cls, name in ((DemoConfig, "reward"), (EvaluateConfig, "reward"), (OveroptConfig, "gold"),
                      (ScoreConfig, "reward"), (RewardLabelConfig, "gold"), (EstimateConfig, "reward"),
                      (TrainConfig, "reward")):
        help_text = next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]
        assert help_text.endswith(reward_spec_help()), cls.__name__


def test_report_to_names_what_to_install_and_rejects_unknown_trackers(monkeypatch):
    import importlib.util

    from alignpro.config import build_config
    from alignpro.train.config import TrainConfig

    with pytest.raises(ConfigError, match=r"setting 'report_to': unknown \['wandb'\]; valid: tensorboard \| "
                                          r"trackio \| none"):
        build_config(TrainConfig, {"report_to": ["wandb"]})
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        build_config(TrainConfig, {"report_to": ["none", "tensorboard"]})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    with pytest.raises(ConfigError, match=r"'trackio' needs the trackio package, which is not installed: "
                                          r"pip install trackio"):
        build_config(TrainConfig, {"report_to": ["trackio"]})


def test_overopt_resumes_by_the_same_contract_from_its_config_yaml(tmp_path):
    """`alignpro overopt --resume RUN`: the study's settings come from RUN/config.yaml (YAML, or the JSON written by
    earlier versions, which YAML reads); a larger n_eval_prompts may be given, another gold may not."""
    import json
    import math

    from alignpro.config import build_config, config_to_dict, write_run_config
    from alignpro.overopt.config import OveroptConfig

    run = tmp_path / "study"
    run.mkdir()
    cfg = build_config(OveroptConfig, {"out": str(run), "n_pairs": [50], "lams": [math.inf, 0.1]})
    for write in (lambda: write_run_config(cfg, run / "config.yaml"),
                  lambda: (run / "config.yaml").write_text(json.dumps(config_to_dict(cfg), indent=1))):
        write()
        again = parse_config(OveroptConfig, ["--resume", str(run), "--n-eval-prompts", "128"], prog="t")
        assert (again.n_pairs, again.lams, again.n_eval_prompts, again.out) == ([50], [math.inf, 0.1], 128, str(run))
        with pytest.raises(ConfigError, match=r"setting\(s\) \['gold'\] differ"):
            parse_config(OveroptConfig, ["--resume", str(run), "--gold", "builtin"], prog="t")
