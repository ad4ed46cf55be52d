"""Settings of ``alignpro train`` (every field is a CLI flag and a YAML key), validated in ``__post_init__``.

Built from the shared setting groups: the run folder (:class:`~alignpro.config.RunSettings`), the optimiser
(:class:`~alignpro.config.OptimizerSettings`) and π_F's answer sampling
(:class:`~alignpro.backends.base.PrefixedAnswerSettings`: ``AnswerSettings`` named ``answer_*``, since a bare
``temperature`` here is the rollouts').
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

from alignpro.backends.base import PAPER_ANSWER_CONFIG, GenerationConfig, PrefixedAnswerSettings
from alignpro.config import OptimizerSettings, RunSettings, check_at_least, setting
from alignpro.data.ifeval_google import refuse_test_set
from alignpro.errors import ConfigError
from alignpro.specs import model_spec_help, reward_spec_help
from alignpro.train.advantages import Algo
from alignpro.train.kl import KLControl

class Role(enum.Enum):
    """What is trained: the prompter ρ of eq (9), or the RLHF oracle π of eq (2)."""

    PROMPTER = "prompter"
    ORACLE = "oracle"


@dataclass
class TrainConfig(RunSettings, OptimizerSettings, PrefixedAnswerSettings):
    """Train the prompter ρ (eq 9) or the RLHF oracle (eq 2) with PPO, RLOO or GRPO."""

    # ---- run (and the group's resume, seed, save_every, keep_checkpoints, report_to, progress, num_threads)
    role: Role = setting(Role.PROMPTER, "prompter: train ρ (init ρ_sft) on the reward of π_F's answer to its "
                                        "rewrite (eq 9); oracle: RLHF-train a copy of π_F itself (eq 2)")
    algo: Algo = setting(Algo.PPO, "ppo: value head + GAE + clipped surrogate (the paper's); rloo, grpo: "
                                   "critic-free, opt-in; distill: ρ* distillation, the weighted log-likelihood "
                                   "of K samples under eq (10)'s weights with λ = kl_coef (kl_control fixed)")
    steps: int = setting(100, "training steps; each = one rollout batch, then `epochs` passes of updates on it "
                              "(a resumed run may raise it, never below the steps it has done)", resumable=True)
    out: str = setting("runs/train", "run folder: config.yaml, metrics.jsonl, samples.jsonl, checkpoints/, final/")

    # ---- models
    prompter: str = setting("smollm2", "ρ_sft model spec (prompter role): the policy's initial weights and the "
                                       "KL reference; " + model_spec_help("trainable"))
    target: str = setting("smollm2", "π_F spec: answers the rewrites (prompter role: "
                                     f"{model_spec_help('target')}) or is the policy's init and KL reference "
                                     f"(oracle role: {model_spec_help('trainable')})")
    reward: str = setting("builtin", "reward r(x, y) spec: " + reward_spec_help())
    template: str = setting("rewrite-default", "rewrite template of the prompter (builtin name or YAML file)")

    # ---- data
    prompts: str = setting("builtin:train", "training prompts: builtin:train | file.jsonl | file.csv | hf:<id>")
    n_prompts: int = setting(0, "use the first N prompts (0 = all)")
    batch_size: int = setting(8, "prompts per step on each process (rollouts per process = batch_size × k)")
    k: int = setting(0, "samples per prompt (0 = 1 for ppo, 4 for rloo/grpo/distill); rloo, grpo, distill need >= 2")
    m: int = setting(1, "M: answers of π_F per rewrite, averaged into the rewrite's reward (prompter role)")
    baseline_m: int = setting(0, "prompter role: subtract b(x), π_F's mean reward on the ORIGINAL x over this many "
                                 "answers (computed once per prompt), from each rewrite's reward, so the policy "
                                 "learns the gain over x; a per-prompt constant, eq (9)'s optimum is unchanged "
                                 "(0 = off); distill uses b(x) as R̂(x, x) of the identity candidate")
    identity_prior: float = setting(0.0, "distill: α, ρ_sft's mass on keeping x itself (eq 10's identity "
                                         "candidate, as in the closed form); needs baseline_m >= 1 (prompter role)")

    # ---- the policy's sampling (rollouts)
    max_new_tokens: int = setting(0, "max tokens of a sampled response (0 = 48 for a rewrite, 64 for an answer)")
    temperature: float = setting(1.0, "rollout temperature; log-probs use the same one (TRL's example: 1.0)")
    top_p: float = setting(1.0, "rollout nucleus top_p (1 = off; < 1 makes the rollouts slightly off-policy)")
    top_k: int = setting(0, "rollout top_k (0 = off; > 0 makes the rollouts slightly off-policy)")

    # ---- π_F's answers (prompter role): AnswerSettings' paper sampling, shorter, as rollouts are training's cost
    answer_max_new_tokens: int = setting(64, "max tokens of π_F's answers to the rewrites (64, not the answer "
                                             f"default {PAPER_ANSWER_CONFIG.max_new_tokens}: π_F's answers are most "
                                             "of a step's time)")

    # ---- optimisation (and the group's weight_decay, max_grad_norm, schedule, warmup_steps)
    lr: float = setting(1.41e-5, "AdamW learning rate (paper: 1.41e-5, TRL's gpt2-sentiment); short CPU runs "
                                 "need more, see docs/training.md")
    epochs: int = setting(4, "passes over each rollout batch (paper/TRL: 4; 1 = plain REINFORCE for rloo)")
    num_minibatches: int = setting(1, "minibatches per pass, one optimizer step each; must divide the rollouts")
    cliprange: float = setting(0.2, "ε of the clipped surrogate")
    cliprange_value: float = setting(0.2, "ε of the clipped value loss (ppo)")
    vf_coef: float = setting(0.1, "weight of the value loss (ppo; TRL: 0.1)")
    gamma: float = setting(1.0, "γ discount of GAE (ppo)")
    gae_lambda: float = setting(0.95, "λ of GAE (ppo); not the KL weight")
    whiten_advantages: bool = setting(True, "normalise PPO's advantages per batch (TRL)")

    # ---- KL to the reference
    kl_coef: float = setting(0.2, "initial KL weight: λ of eq (9) (prompter) or β of eq (2) (oracle); "
                                  "inf = no update (reproduces the reference), 0 = pure reward maximisation")
    kl_control: KLControl = setting(KLControl.ADAPTIVE, "adaptive: TRL's controller steering the KL to kl_target; "
                                                        "fixed: kl_coef throughout")
    kl_target: float = setting(6.0, "target KL in nats per response (adaptive control)")
    kl_horizon: float = setting(10000.0, "horizon of the adaptive controller, in rollouts")

    # ---- LoRA (for 1B+ prompters)
    lora: bool = setting(False, "train a LoRA adapter instead of all weights; the reference is the adapter "
                                "disabled (no second copy)")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha")
    lora_target_modules: list[str] = setting(["q_proj", "k_proj", "v_proj", "o_proj"], "modules LoRA adapts")
    gradient_checkpointing: bool = setting(False, "trade compute for memory in the update (large models)")

    # ---- runtime
    device: str = setting("auto", "auto (accelerate's choice: GPU when there is one) | cpu", resumable=True)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = setting(
        "auto", "mixed precision (GPUs; bf16 is very slow on CPU); auto = the accelerate launcher's, else no")
    generation_batch_size: int = setting(32, "batch size of π_F's answer generation", resumable=True)

    # ---- learning curve on held-out TRAIN prompts (prompter role; alignpro.train.heldout)
    heldout: int = setting(0, "hold out whole prompt groups with at least this many of the training prompts (seeded) "
                              "and measure the prompter on them: RUN/heldout.jsonl; 0 = off")
    heldout_every: int = setting(10, "measure the held-out curve every N steps (and before the first, after the "
                                     "last)", resumable=True)
    heldout_answers: int = setting(2, "π_F's answers per held-out prompt and arm (coupled across arms)")
    heldout_baselines: list[str] = setting(["best_suffix"], "fixed-prompt baselines the curve's paired gains are "
                                                            "also measured against: suffix[=TEXT] | best_suffix | "
                                                            "repeat")
    time_limit_minutes: float = setting(0.0, "stop cleanly after the first step that ends past this many minutes "
                                             "of this invocation (a checkpoint, then RUN/final as of that step; "
                                             "--resume continues); 0 = no limit", resumable=True)
    debug_param_checksum: bool = setting(False, "at the end, each process writes a checksum of its parameters "
                                                "to RUN/debug/ (checks data-parallel sync)", resumable=True)

    def __post_init__(self) -> None:
        refuse_test_set(self.prompts, "alignpro train")
        self.check_run_settings()
        self.check_optimizer_settings()
        if self.k == 0:
            self.k = 1 if self.algo is Algo.PPO else 4
        if self.algo is Algo.DISTILL and self.k < 2:
            raise ConfigError(f"setting 'k' must be >= 2 for algo 'distill' (ρ* is formed over each prompt's K "
                              f"samples), got {self.k}")
        if self.max_new_tokens == 0:
            self.max_new_tokens = 48 if self.role is Role.PROMPTER else 64
        check_at_least(self, 1, "steps", "batch_size", "k", "m", "max_new_tokens", "answer_max_new_tokens", "epochs",
                       "num_minibatches", "generation_batch_size")
        check_at_least(self, 0, "baseline_m", "n_prompts", "time_limit_minutes", "vf_coef", "top_k", "answer_top_k")
        if not self.algo.uses_critic and self.k < 2:
            raise ConfigError(f"setting 'k' must be >= 2 for algo '{self.algo.value}' (its baseline is the other "
                              f"samples of the same prompt), got {self.k}")
        if (self.batch_size * self.k) % self.num_minibatches:
            raise ConfigError(f"setting 'num_minibatches' ({self.num_minibatches}) must divide the rollouts per "
                              f"process, batch_size × k = {self.batch_size * self.k}")
        if self.kl_coef < 0 or math.isnan(self.kl_coef):
            raise ConfigError(f"setting 'kl_coef' must be >= 0 (inf = no update), got {self.kl_coef}")
        if self.kl_target <= 0 or self.kl_horizon <= 0:
            raise ConfigError("settings 'kl_target' and 'kl_horizon' must be > 0, got "
                              f"{self.kl_target} and {self.kl_horizon}")
        for name in ("cliprange", "cliprange_value", "gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= (1 if name in ("gamma", "gae_lambda") else 10):
                raise ConfigError(f"setting '{name}' is out of range: {getattr(self, name)}")
        for name in ("temperature", "answer_temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"setting '{name}' must be > 0, got {getattr(self, name)}")
        for name in ("top_p", "answer_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"setting '{name}' must be in (0, 1], got {getattr(self, name)}")
        if self.lora and (self.lora_r < 1 or self.lora_alpha < 1):
            raise ConfigError(f"settings 'lora_r' and 'lora_alpha' must be >= 1, got {self.lora_r}, {self.lora_alpha}")
        if self.device not in ("auto", "cpu"):
            raise ConfigError(f"setting 'device' must be 'auto' or 'cpu', got {self.device!r} (choose GPUs with "
                              "accelerate launch / CUDA_VISIBLE_DEVICES)")
        spec_name = "prompter" if self.role is Role.PROMPTER else "target"
        if self.policy_spec.strip() == "fake":
            raise ConfigError(f"setting '{spec_name}' must be a causal LM for role '{self.role.value}' (it is the "
                              "policy trained and its reference): smollm2 | hf:<id or path>, not 'fake'")
        if self.algo is Algo.DISTILL:
            if self.kl_control is not KLControl.FIXED:
                raise ConfigError("algo 'distill' uses kl_coef as eq (10)'s λ in its weights; set kl_control: fixed")
            if not 0 <= self.identity_prior < 1:
                raise ConfigError(f"setting 'identity_prior' must be in [0, 1), got {self.identity_prior}")
            if self.identity_prior > 0 and (self.role is not Role.PROMPTER or not self.baseline_m):
                raise ConfigError("setting 'identity_prior' > 0 needs role 'prompter' and baseline_m >= 1 (R̂(x, x) "
                                  "of the identity candidate is π_F's mean reward on x)")
        elif self.identity_prior:
            raise ConfigError(f"setting 'identity_prior' applies to algo 'distill' only, got algo '{self.algo.value}'")
        check_at_least(self, 0, "heldout")
        check_at_least(self, 1, "heldout_every", "heldout_answers")
        if self.heldout:
            from alignpro.train.heldout import check_heldout_baselines

            if self.role is not Role.PROMPTER:
                raise ConfigError("setting 'heldout' applies to role 'prompter' only (the curve measures the "
                                  f"prompter's rewrites); got role '{self.role.value}'")
            check_heldout_baselines(self.heldout_baselines)
        if self.baseline_m and self.role is not Role.PROMPTER:
            raise ConfigError("setting 'baseline_m' applies to role 'prompter' only (it is π_F's reward on the "
                              f"original x); got role '{self.role.value}'")

    @property
    def frozen(self) -> bool:
        """kl_coef = inf: the optimum of eq (9)/(2) is the reference itself, so no update is made."""
        return math.isinf(self.kl_coef)

    @property
    def rollout_gen(self) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, top_k=self.top_k)

    @property
    def answer_gen(self) -> GenerationConfig:
        return self.answer_config()

    @property
    def policy_spec(self) -> str:
        """The model the policy starts from (and the reference is)."""
        return self.prompter if self.role is Role.PROMPTER else self.target
