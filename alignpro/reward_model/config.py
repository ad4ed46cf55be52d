"""Settings of ``alignpro reward train | label | eval``: one dataclass per sub-command, every field a CLI flag and a
YAML key, validated in ``__post_init__``. ``train`` is built from the run-folder and optimiser groups, ``label``
from π_F's answer sampling (:class:`~alignpro.backends.base.PlainAnswerSettings`); both resume with ``--resume``
(:mod:`alignpro.config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from alignpro.backends.base import GenerationConfig, PlainAnswerSettings
from alignpro.config import OptimizerSettings, ResumeSettings, RunSettings, check_at_least, setting
from alignpro.data.ifeval_google import refuse_test_set
from alignpro.errors import ConfigError
from alignpro.reward_model.model import check_base_spec, check_template_spec
from alignpro.specs import model_spec_help, reward_spec_help


def _required(name: str, value: str | None, example: str) -> None:
    if not value or not str(value).strip():
        raise ConfigError(f"setting '{name}' is required: pass --{name.replace('_', '-')} {example}")


@dataclass
class RewardTrainConfig(RunSettings, OptimizerSettings):
    """Learn a Bradley–Terry reward model r_φ(x, y) from preference pairs (eq 1: −log σ(r(x, y_w) − r(x, y_l))),
    measure its pairwise accuracy on held-out prompts, and write a folder that loads as the reward spec rm:DIR."""

    run_kind: ClassVar[str] = "reward-model run folder"

    # ---- data
    pairs: str = setting("", "preference pairs: file.jsonl ({prompt, chosen, rejected}, hh-rlhf transcripts or "
                             "message lists) | hf:<hub id> (e.g. hf:Anthropic/hh-rlhf)")
    pairs_split: str | None = setting(None, "split of a hf: source (default: train; train_prefs for "
                                             "HuggingFaceH4/ultrafeedback_binarized)")
    data_files: list[str] = setting([], "local copies of a hf: source in its schema (JSON/JSONL/parquet/CSV); "
                                        "nothing is downloaded then")
    skip_bad: bool = setting(False, "skip and count bad rows instead of stopping at the first one")
    heldout_fraction: float = setting(0.2, "share of the distinct prompts whose pairs are held out (never trained "
                                           "on) to measure accuracy and calibration; a prompt's pairs stay together")
    n_train: int = setting(0, "train on a seeded sample of at most N of the training pairs (0 = all); the held-out "
                              "pairs do not change with N")

    # ---- model
    base: str = setting("minilm", "minilm (the embedded all-MiniLM-L6-v2 + a linear head; CPU) | hf:<hub id or "
                                  "path> (a sequence-classification model with one label; e.g. a 0.5-2B LM on a GPU)")
    template: str = setting("auto", "how (x, y) is rendered: auto | text_pair | chat | a format string with "
                                    "{prompt} and {answer} (optionally {system}); saved with the model")
    max_length: int = setting(0, "truncate (x, y) to this many tokens (0 = 256 for minilm, else min(the "
                                 "tokenizer's limit, 1024))")
    freeze_base: bool = setting(False, "train only the new linear head (the base network stays as loaded)")

    # ---- run (and the group's resume, keep_checkpoints, report_to, progress, num_threads)
    out: str = setting("runs/reward", "run folder: config.yaml, metrics.jsonl, checkpoints/, model/, "
                                      "reward_model.json, heldout.jsonl, heldout_scores.jsonl, calibration.png")
    seed: int = setting(0, "seed of the held-out split, the data order, the head's initialisation and dropout")

    # ---- optimisation (and the group's weight_decay, max_grad_norm, warmup_steps)
    epochs: int = setting(2, "passes over the training pairs (used when steps is 0)")
    steps: int = setting(0, "optimizer steps (0 = epochs × ceil(training pairs / batch_size)); the pairs are one "
                            "stream of seeded permutations")
    batch_size: int = setting(16, "pairs per step (each pair is two forward passes: (x, y_w) and (x, y_l))")
    lr: float = setting(3e-5, "AdamW learning rate of the base network (a pretrained encoder's usual fine-tuning "
                              "rate)")
    head_lr: float = setting(1e-3, "AdamW learning rate of the newly initialised head (for hf: bases that already "
                                   "have a one-label head, every weight uses lr)")
    schedule: Literal["linear", "constant"] = setting("linear", "learning-rate schedule after warmup (linear: to 0 "
                                                                "at the last step, as for BERT-style fine-tuning)")

    # ---- measurement and runtime
    eval_every: int = setting(0, "also measure the held-out accuracy every N steps, into metrics.jsonl (0 = only "
                                 "at the end)")
    eval_batch_size: int = setting(32, "pairs per forward pass when scoring held-out pairs", resumable=True)
    calibration_bins: int = setting(10, "bins of the calibration figure (predicted P(y_w ≻ y_l) = σ(Δr))")
    save_every: int = setting(50, "write a checkpoint every N steps (and at the last step; 50: a step is short)",
                              resumable=True)
    device: str = setting("auto", "auto (a GPU when there is one) | cpu | cuda | cuda:N", resumable=True)

    def __post_init__(self) -> None:
        self.check_run_settings()
        self.check_optimizer_settings()
        _required("pairs", self.pairs, "pairs.jsonl (or hf:<hub id>)")
        self.base = check_base_spec(self.base)
        check_template_spec(self.template)
        if not (0.0 <= self.heldout_fraction < 1.0):
            raise ConfigError(f"setting 'heldout_fraction' must be in [0, 1), got {self.heldout_fraction}")
        check_at_least(self, 1, "epochs", "batch_size", "eval_batch_size", "calibration_bins")
        check_at_least(self, 0, "n_train", "max_length", "steps", "eval_every")
        if not (math.isfinite(self.head_lr) and self.head_lr >= 0):
            raise ConfigError(f"setting 'head_lr' must be a finite number >= 0, got {self.head_lr}")


@dataclass
class RewardLabelConfig(ResumeSettings, PlainAnswerSettings):
    """Make preference pairs from a gold reward: π_F answers each prompt n times (the paper's sampling), the gold
    reward picks the winner of every pair of answers, ties are dropped and counted. Writes JSONL {prompt, chosen,
    rejected, chosen_score, rejected_score} that `alignpro reward train --pairs` reads."""

    run_kind: ClassVar[str] = "labelling run (a pairs file with its .config.yaml)"

    prompts: str = setting("builtin-ifeval:train", "prompts: builtin[-ifeval][:train|:eval] | file.jsonl | "
                                                   "file.csv | hf:<id> (see alignpro.data.load_prompts)")
    n_prompts: int = setting(0, "use a seeded sample of N prompts, in source order (0 = all)")
    field: str | None = setting(None, "the prompt column of a file or hf: source (default: prompt)")
    skip_bad: bool = setting(False, "skip and count bad prompt rows instead of stopping at the first one")
    target: str = setting("smollm2", "π_F, the model that answers: " + model_spec_help("target"))
    gold: str = setting("ifeval", "the gold reward that picks the winner: " + reward_spec_help())
    out: str = setting("", "the pairs file to write (.jsonl); its settings PAIRS.config.yaml and progress record "
                           "PAIRS.label.json sit next to it")
    resume: str | None = setting(None, "continue the interrupted labelling run writing this pairs file (--resume "
                                       "alone: the one in --out), with its saved settings", resumable=True)
    answers_per_prompt: int = setting(2, "π_F's answers per prompt; every pair of them with different gold scores "
                                         "is a row (up to n(n-1)/2 per prompt)")
    tie_margin: float = setting(0.0, "a pair whose gold rewards differ by at most this is a tie (dropped, counted)")
    seed: int = setting(0, "seed of the prompt sample and of π_F's sampling")
    batch_size: int = setting(16, "prompts per generation batch (each gets answers_per_prompt answers); also the "
                                  "unit of resume")
    progress: bool = setting(True, "show a progress bar", resumable=True)

    @staticmethod
    def config_file(run: str | Path) -> Path:
        """``PAIRS.jsonl`` -> ``PAIRS.config.yaml``: where a labelling run keeps its settings."""
        run = Path(run)
        return run.with_name((run.name[: -len(".jsonl")] if run.name.endswith(".jsonl") else run.name)
                             + ".config.yaml")

    def __post_init__(self) -> None:
        refuse_test_set(self.prompts, "alignpro reward label")
        if self.resume:
            self.out = self.resume
        _required("out", self.out, "pairs.jsonl")
        if not self.out.lower().endswith(".jsonl"):
            raise ConfigError(f"setting 'out' must be a .jsonl path (a pairs file), got '{self.out}'")
        from alignpro.specs import check_reward_spec, parse_model_spec

        parse_model_spec(self.target)
        check_reward_spec(self.gold)
        check_at_least(self, 1, "batch_size", "max_new_tokens")
        check_at_least(self, 2, "answers_per_prompt")
        check_at_least(self, 0, "n_prompts", "top_k")
        if not (math.isfinite(self.tie_margin) and self.tie_margin >= 0):
            raise ConfigError(f"setting 'tie_margin' must be a finite number >= 0, got {self.tie_margin}")
        _ = self.answer_gen  # GenerationConfig validates temperature and top_p

    @property
    def answer_gen(self) -> GenerationConfig:
        return self.answer_config()


@dataclass
class RewardEvalConfig:
    """Pairwise accuracy (± standard error, n) and calibration of a trained reward model on any pair file."""

    model: str = setting("", "a run folder of `alignpro reward train` (or its model/ folder)")
    pairs: str = setting("", "preference pairs: file.jsonl | hf:<hub id> (as for reward train)")
    pairs_split: str | None = setting(None, "split of a hf: source")
    data_files: list[str] = setting([], "local copies of a hf: source in its schema")
    skip_bad: bool = setting(False, "skip and count bad rows instead of stopping at the first one")
    batch_size: int = setting(32, "pairs per forward pass")
    calibration_bins: int = setting(10, "bins of the calibration table and figure")
    figure: str = setting("", "also write the calibration figure to this PNG path")
    json: bool = setting(False, "print one JSON object instead of the text report")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    num_threads: int = setting(0, "torch CPU threads (0 = torch's default)")

    def __post_init__(self) -> None:
        _required("model", self.model, "RUN (a folder of alignpro reward train)")
        _required("pairs", self.pairs, "pairs.jsonl (or hf:<hub id>)")
        check_at_least(self, 1, "batch_size", "calibration_bins")
        check_at_least(self, 0, "num_threads")
        if self.figure and not self.figure.lower().endswith(".png"):
            raise ConfigError(f"setting 'figure' must be a .png path, got '{self.figure}'")
