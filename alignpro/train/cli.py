"""``alignpro train``: flags and/or a YAML file into one :class:`TrainConfig`, then :func:`train`.

``--resume RUN`` reuses ``RUN/config.yaml``; flags given with it may change only the settings declared resumable
(``setting(..., resumable=True)``, e.g. raise ``--steps``); anything else is an error naming the setting
(:func:`alignpro.config.check_resume`).
"""

from __future__ import annotations

from alignpro.config import parse_config
from alignpro.train.config import TrainConfig


def parse_train_config(argv: list[str]) -> TrainConfig:
    return parse_config(TrainConfig, argv, "alignpro train")


def main(argv: list[str]) -> int:
    from alignpro.train.loop import train

    train(parse_train_config(argv))
    return 0
