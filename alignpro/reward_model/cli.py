"""``alignpro reward train | label | eval``: learn a Bradley–Terry reward model (eq 1) from preference pairs, make
pairs from a gold reward, and measure a trained model on any pairs. One config dataclass per sub-command (flags
or ``--config FILE.yaml``); see docs/reward-learning.md.

``reward train --resume RUN`` reuses ``RUN/config.yaml`` (``reward label --resume PAIRS.jsonl``: its
``PAIRS.config.yaml``); flags given with it may change only the settings declared resumable
(:func:`alignpro.config.check_resume`).
"""

from __future__ import annotations

import json
from typing import Any

from alignpro.config import parse_config
from alignpro.errors import ConfigError
from alignpro.reward_model.config import RewardEvalConfig, RewardLabelConfig, RewardTrainConfig

SUBCOMMANDS = {
    "train": "learn r_φ from preference pairs by eq (1); held-out accuracy ± s.e. and calibration; writes rm:DIR",
    "label": "make preference pairs: π_F answers each prompt twice, a gold reward picks the winner",
    "eval": "pairwise accuracy ± s.e. (n) and calibration of a trained reward model on any pairs",
}


def _usage() -> str:
    lines = ["usage: alignpro reward <train|label|eval> [options]", "", "sub-commands:"]
    lines += [f"  {name:<6} {help_}" for name, help_ in SUBCOMMANDS.items()]
    lines += ["", "Run 'alignpro reward <sub-command> --help' for its options."]
    return "\n".join(lines)


def parse_train_config(argv: list[str]) -> RewardTrainConfig:
    """Flags and/or YAML into a :class:`RewardTrainConfig`; with ``--resume RUN`` the run's own config.yaml."""
    return parse_config(RewardTrainConfig, argv, "alignpro reward train")


def run_eval(cfg: RewardEvalConfig) -> dict[str, Any]:
    """Score ``cfg.pairs`` with the model and return (and print) the measures."""
    import torch

    from alignpro.data.preferences import load_pairs
    from alignpro.reward_model.measure import measure, plot_calibration, score_pairs
    from alignpro.reward_model.model import RewardScorer

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    scorer = RewardScorer.load(cfg.model, device=cfg.device)
    loaded = load_pairs(cfg.pairs, cfg.pairs_split, cfg.skip_bad, data_files=cfg.data_files or None)
    measures = measure(score_pairs(scorer, loaded.pairs, cfg.batch_size, progress=not cfg.json),
                       cfg.calibration_bins, [p.prompt_key for p in loaded.pairs])
    if cfg.figure:
        plot_calibration(measures, cfg.figure, f"reward model {cfg.model} on {cfg.pairs}")
    result = {"model": cfg.model, "pairs": cfg.pairs, "loaded": loaded.summary(), **measures.to_dict()}
    if cfg.json:
        print(json.dumps(result))
    else:
        acc = measures.accuracy
        print(f"reward model {cfg.model} on {cfg.pairs} ({loaded.summary()}):")
        print(f"  pairwise accuracy   {acc.accuracy:.4f} ± {acc.stderr:.4f}  (n = {acc.n}; {acc.correct} correct, "
              f"{acc.ties} ties)")
        print(f"  eq (1) loss         {measures.loss:.4f} ± {measures.loss_stderr:.4f}")
        print(f"  mean margin Δr      {acc.mean_margin:.4f}")
        print(f"  calibration (ECE)   {measures.ece:.4f}" + (f"; figure: {cfg.figure}" if cfg.figure else ""))
    return result


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "train":
        from alignpro.reward_model.train import train_reward_model

        train_reward_model(parse_train_config(rest))
    elif name == "label":
        from alignpro.reward_model.label import label_pairs

        label_pairs(parse_config(RewardLabelConfig, rest, "alignpro reward label"))
    elif name == "eval":
        run_eval(parse_config(RewardEvalConfig, rest, "alignpro reward eval"))
    else:
        raise ConfigError(f"unknown sub-command '{name}' of 'alignpro reward'; valid: {', '.join(SUBCOMMANDS)}")
    return 0
