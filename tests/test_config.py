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
