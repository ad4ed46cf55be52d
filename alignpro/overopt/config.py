"""Settings of ``alignpro overopt`` (flags = YAML keys), validated in ``__post_init__``; π_F's sampling is the shared
group (:class:`~alignpro.backends.base.PrefixedAnswerSettings`) with the study's plain-sampling defaults, and the
study resumes by the one contract (``--resume RUN``, :mod:`alignpro.config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from alignpro.backends.base import GenerationConfig, PrefixedAnswerSettings
from alignpro.arms import ClosedFormConfig
from alignpro.config import ResumeSettings, check_at_least, renamed_group, setting
from alignpro.data.ifeval_google import refuse_test_set
from alignpro.errors import ConfigError
from alignpro.specs import model_spec_help, reward_spec_help


#: the closed form's K, M and α as the arms declare them (:class:`alignpro.arms.ClosedFormConfig`); the study sweeps
#: λ (``lams``) instead of one ``lam``, and the M answers that choose a candidate are never measured
ClosedFormProposal = renamed_group(ClosedFormConfig, {}, omit=("lam",))


@dataclass
class OveroptConfig(ResumeSettings, PrefixedAnswerSettings, ClosedFormProposal):
    """Over-optimisation of a learned reward (Gao et al. 2023) against a gold one: label pairs with the gold reward
    on the train prompts, learn Bradley–Terry proxies (eq 1) on N of them, optimise each proxy with the closed form
    (eq 10, a λ sweep), a trained prompter (eq 9) and the RLHF oracle (eq 2), and measure gold and proxy reward
    against √KL on the eval prompts. Every stage is resumable: --resume RUN continues the study in RUN."""

    out: str = setting("runs/overopt", "run folder: pairs, proxies, training runs, measure/, overopt.{json,md,png}")
    seed: int = setting(0, "seed of every stage")

    # ---- the task
    gold: str = setting("ifeval", "the gold reward r* (labels the pairs, and is what the curves measure): "
                                  + reward_spec_help())
    train_prompts: str = setting("builtin-ifeval:train", "prompts of the pairs and of the training runs")
    eval_prompts: str = setting("builtin-ifeval:eval", "prompts of the measurement (never trained or tuned on)")
    n_eval_prompts: int = setting(64, "a seeded sample of N eval prompts (0 = all); a larger N "
                                      "later measures only the prompts not measured yet", resumable=True)
    target: str = setting("smollm2", "π_F: answers everything; the oracle starts from it: "
                                     + model_spec_help("trainable"))
    prompter: str = setting("smollm2", "ρ_sft: the closed form's proposal; the trained prompter starts from it: "
                                       + model_spec_help("trainable"))

    # ---- stage 1: gold-labelled pairs (alignpro reward label)
    n_label_prompts: int = setting(0, "label a seeded sample of N train prompts (0 = all)")
    answers_per_prompt: int = setting(6, "π_F's answers per train prompt; every untied pair is a row")
    label_max_new_tokens: int = setting(128, "max tokens of the labelled answers (the paper's sampling)")
    label_batch_size: int = setting(32, "prompts per labelling batch")

    # ---- stage 2: proxies (alignpro reward train), one per N
    n_pairs: list[int] = setting([200, 2000], "train one proxy on a seeded sample of each N training pairs (all "
                                              "proxies are measured on the same held-out pairs)")
    rm_base: str = setting("minilm", "the proxies' base (minilm | hf:<id or path>)")
    rm_epochs: int = setting(2, "passes over the training pairs")
    rm_lr: float = setting(3e-5, "the base network's learning rate")
    rm_batch_size: int = setting(16, "pairs per step")

    # ---- the study's sampling of π_F: plain sampling, so the oracle's KL is that of the answers it is judged on
    answer_temperature: float = setting(1.0, "π_F's and the oracle's sampling temperature (1, not the paper's 1.5: "
                                             "plain sampling)")
    answer_top_p: float = setting(1.0, "π_F's and the oracle's top_p (1 = off, not the paper's 0.6: plain sampling)")
    answer_top_k: int = setting(0, "π_F's and the oracle's top_k (0 = off, not the paper's 20: plain sampling)")

    # ---- (a) the closed form over a λ sweep (and the arms' K, M, α: ClosedFormProposal)
    lams: list[float] = setting([math.inf, 1.0, 0.3, 0.1, 0.03, 0.01, 0.0], "λ values of eq (10) (inf = ρ_sft, "
                                                                             "0 = argmax of R̂_proxy on the M "
                                                                             "answers, which are never measured)")

    # ---- (b) the trained prompter and (c) the oracle, against each proxy
    prompter_recipe: str = setting("configs/train-prompter-distill-ifeval.yaml", "alignpro train config of the "
                                   "prompter runs (reward, prompts, steps, checkpoints and π_F's sampling are set "
                                   "here)")
    oracle_recipe: str = setting("configs/train-oracle-distill-ifeval.yaml", "alignpro train config of the oracle "
                                 "runs (its rollout sampling is the study's answer sampling)")
    train_steps: int = setting(16, "training steps of each prompter and oracle run")
    checkpoint_every: int = setting(4, "measure a checkpoint every N steps (and step 0, the start)")
    train_time_limit_minutes: float = setting(0.0, "stop each training run cleanly after the first step past this "
                                                   "many minutes (0 = none); a run that stopped early is measured "
                                                   "up to the step it reached, and the report says so; resuming the "
                                                   "study continues it", resumable=True)

    # ---- measurement
    n_fresh: int = setting(4, "fresh answers per candidate (closed form) and per prompt (oracle) that are measured")
    rewrites_per_prompt: int = setting(2, "trained prompter: rewrites per eval prompt (n_fresh / this answers each)")
    batch_size: int = setting(64, "π_F's answers per generation call; the policies' samples per call")
    device: str = setting("auto", "where the checkpoints are measured: auto (a GPU when there is one) | cpu | cuda | "
                                  "cuda:N (training runs use their recipe's device)", resumable=True)
    num_threads: int = setting(0, "torch CPU threads (0 = torch's default)", resumable=True)
    progress: bool = setting(True, "show progress bars", resumable=True)

    def __post_init__(self) -> None:
        refuse_test_set(self.train_prompts, "alignpro overopt", setting="train_prompts")
        if self.resume:
            self.out = self.resume
        check_at_least(self, 1, "n_fresh", "rewrites_per_prompt", "batch_size", "k", "m", "train_steps",
                       "checkpoint_every", "rm_epochs", "rm_batch_size", "label_batch_size", "label_max_new_tokens",
                       "answer_max_new_tokens")
        check_at_least(self, 2, "answers_per_prompt")
        check_at_least(self, 0, "n_eval_prompts", "n_label_prompts", "num_threads")
        if not self.n_pairs or any(n < 1 for n in self.n_pairs) or len(set(self.n_pairs)) != len(self.n_pairs):
            raise ConfigError(f"setting 'n_pairs' must be distinct numbers >= 1, e.g. [200, 2000]; got {self.n_pairs}")
        if not self.lams or any(math.isnan(v) or v < 0 for v in self.lams):
            raise ConfigError(f"setting 'lams' must be λ values >= 0 (inf allowed), got {self.lams}")
        if self.n_fresh % self.rewrites_per_prompt:
            raise ConfigError(f"setting 'n_fresh' ({self.n_fresh}) must be a multiple of 'rewrites_per_prompt' "
                              f"({self.rewrites_per_prompt}): each rewrite gets the same number of answers")
        if not (math.isfinite(self.train_time_limit_minutes) and self.train_time_limit_minutes >= 0):
            raise ConfigError(f"setting 'train_time_limit_minutes' must be >= 0, got {self.train_time_limit_minutes}")
        if not 0 <= self.identity_prior < 1:
            raise ConfigError(f"setting 'identity_prior' must be in [0, 1), got {self.identity_prior}")
        for name in ("prompter_recipe", "oracle_recipe"):
            if not Path(getattr(self, name)).is_file():
                raise ConfigError(f"setting '{name}': no such file '{getattr(self, name)}' (an alignpro train "
                                  "YAML config, e.g. configs/train-prompter-distill-ifeval.yaml)")
        _ = self.answer_gen  # validates temperature and top_p
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"setting 'device' must be auto, cpu, cuda or cuda:N; got '{self.device}'")
        from alignpro.reward_model.model import check_base_spec
        from alignpro.specs import check_reward_spec, parse_model_spec

        check_reward_spec(self.gold)
        parse_model_spec(self.target)
        parse_model_spec(self.prompter)
        self.rm_base = check_base_spec(self.rm_base)

    @property
    def torch_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device

    @property
    def answer_gen(self) -> GenerationConfig:
        return self.answer_config()

    def steps_measured_up_to(self, reached: int) -> list[int]:
        """The measured steps of a run that reached step ``reached`` (its time limit may have stopped it early)."""
        return sorted({0, *range(self.checkpoint_every, reached + 1, self.checkpoint_every), reached})
