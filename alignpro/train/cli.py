"""``alignpro train``: flags and/or a YAML file into one :class:`TrainConfig`, then :func:`train`.

``--resume RUN`` reuses ``RUN/config.yaml``; flags given with it may change only the settings in
:data:`RESUMABLE_CHANGES` (e.g. raise ``--steps``); anything else is an error naming the setting.
"""

from __future__ import annotations

from alignpro.config import parse_resumable_config
from alignpro.train.config import RESUMABLE_CHANGES, TrainConfig


def parse_train_config(argv: list[str]) -> TrainConfig:
    return parse_resumable_config(TrainConfig, argv, "alignpro train", RESUMABLE_CHANGES)


def main(argv: list[str]) -> int:
    from alignpro.train.loop import train

    train(parse_train_config(argv))
    return 0
