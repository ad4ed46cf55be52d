"""``alignpro train``: flags and/or a YAML file into one :class:`TrainConfig`, then :func:`train`.

``--resume RUN`` reuses ``RUN/config.yaml``; flags given with it may change only the settings in
:data:`RESUMABLE_CHANGES` (e.g. raise ``--steps``); anything else is an error naming the setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alignpro.config import add_dataclass_arguments, build_config, config_to_dict, load_yaml
from alignpro.errors import ConfigError
from alignpro.train.config import RESUMABLE_CHANGES, TrainConfig


def parse_train_config(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="alignpro train", description=(TrainConfig.__doc__ or "").strip())
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file whose keys are the settings below; flags given here override it")
    add_dataclass_arguments(parser, TrainConfig)
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    values: dict[str, Any] = load_yaml(config_path) if config_path else {}
    values.update(args)  # only the flags given explicitly
    source = f"config '{config_path}'" if config_path else "command line"
    if not values.get("resume"):
        return build_config(TrainConfig, values, source=source)
    run = Path(values["resume"])
    saved_file = run / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"setting 'resume': '{run}' is not a run folder (no config.yaml)")
    saved = load_yaml(saved_file)
    saved_cfg = config_to_dict(build_config(TrainConfig, saved, source=str(saved_file)))
    asked = config_to_dict(build_config(TrainConfig, {**saved, **values}, source=source))
    changed = sorted(k for k in asked if asked[k] != saved_cfg[k] and k not in RESUMABLE_CHANGES + ("out",))
    if changed:
        raise ConfigError(f"setting(s) {changed} differ from the run's {saved_file}; a resumed run may only "
                          f"change {list(RESUMABLE_CHANGES)} (start a new run with --out for the others)")
    return build_config(TrainConfig, {**saved, **values}, source=source)


def main(argv: list[str]) -> int:
    from alignpro.train.loop import train

    train(parse_train_config(argv))
    return 0
