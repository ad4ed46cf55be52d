"""``alignpro demo``: no fine-tuning vs Align-Pro on the instruction-following task's eval prompts.

Arms: ``no_ft``, ``align_pro_closed_form`` (eq 10 over ρ_sft's rewrites) and its rewrites-only variant,
``align_pro`` (by default the trained prompter shipped in ``alignpro/adapters``), the closed form over it, and
``oracle`` (π_F trained on the same reward; shipped too). ``--config configs/demo-helpfulness.yaml``: the earlier
helpfulness task.

The demo is a preset of `alignpro evaluate` (:class:`alignpro.evaluate.runner.Evaluation`): one prompter, target,
prompt set and seed, the reward as judge, the backends without the disk cache. It runs the arms of
:mod:`alignpro.arms` and writes the evaluation's outputs, reported by :mod:`alignpro.report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from alignpro.arms import BASELINE_FORMS, Arm, ClosedFormConfig, parse_baseline
from alignpro.backends.base import AnswerSettings
from alignpro.config import build_config, check_at_least, load_yaml, parse_config, setting
from alignpro.errors import ConfigError
from alignpro.specs import model_spec_help, reward_spec_help

#: ``trained_prompter``/``oracle`` value meaning the adapter shipped with alignpro (reproduced by the recipe named)
SHIPPED = "shipped"
ADAPTERS = Path(__file__).resolve().parent / "adapters"
SHIPPED_ADAPTERS = {"trained_prompter": ("ifeval-prompter", "configs/train-prompter-distill-ifeval.yaml"),
                    "oracle": ("ifeval-oracle", "configs/train-oracle-distill-ifeval.yaml")}


@dataclass
class DemoConfig(AnswerSettings, ClosedFormConfig):
    """Settings of `alignpro demo` (every flag is also a YAML key)."""

    quick: bool = setting(False, "a ~1-minute run: 8 prompts, K=2, M=1, 2 fresh 40-token answers, no closed form "
                                 "over the trained prompter, baseline best_suffix only (explicit settings win)",
                          preset=dict(n_prompts=8, k=2, m=1, n_fresh=2, answer_max_new_tokens=40,
                                      closed_form_over_trained=False, baselines=["best_suffix"]))
    out: str = setting("runs/demo", "output folder: the outputs of `alignpro evaluate` (metrics.json, table.md, "
                                    "examples.md, figures, judgments.jsonl)")
    seed: int = setting(0, "random seed for every sampling stage")
    prompter: str = setting("smollm2", "prompter ρ_sft model spec: " + model_spec_help("prompter"))
    target: str = setting("smollm2", "frozen target π_F model spec: " + model_spec_help("target"))
    reward: str = setting("ifeval", "reward spec: " + reward_spec_help())
    template: str = setting("rewrite-restate", "rewrite template: builtin name or YAML file")
    prompts: str = setting("builtin-ifeval:eval", "prompt source: builtin-ifeval:eval | builtin:eval | file.jsonl | "
                                                  "file.csv | hf:<id> | ...")
    field: str = setting("", "prompt field of a .jsonl/.csv file or dataset ('' = the source's default)")
    skip_bad: bool = setting(False, "skip and count bad prompt rows instead of stopping at the first one")
    max_prompt_tokens: int = setting(1024, "prompts longer than this (target tokenizer) are bad rows")
    n_prompts: int = setting(24, "a seeded sample of N prompts, kept in source order (0 = all; --quick: 8)")
    n_fresh: int = setting(4, "fresh answers per prompt used to score each arm (the s.e. falls as 1/√n_fresh)")
    trained_prompter: str = setting(SHIPPED, "a trained prompter spec (e.g. hf:runs/distill-ifeval/final-adapter): "
                                             "adds the arm 'align_pro'; 'shipped' = the LoRA adapter in "
                                             "alignpro/adapters/ifeval-prompter; '' = no such arm")
    sft_prompter: str = setting("", "the trained prompter's SFT start (e.g. hf:alignpro/adapters/ifeval-prompter-sft): "
                                    "adds the arm 'align_pro_sft' and what the RL stage added; '' = none")
    oracle: str = setting(SHIPPED, "an RLHF-trained target spec (e.g. hf:runs/oracle-ifeval/final-adapter): adds the "
                                   "arm 'oracle'; 'shipped' = the adapter in alignpro/adapters/ifeval-oracle; '' = none")
    train: bool = setting(False, "train the align_pro prompter and the oracle now (the recipes below) into "
                                 "OUT/train-prompter and OUT/train-oracle; then evaluate both")
    train_prompter_config: str = setting("configs/train-prompter-distill-ifeval.yaml",
                                         "--train: the prompter's recipe (YAML); its own 'prompter' (ρ_sft, e.g. "
                                         "the shipped SFT prompter) is kept, else the demo's 'prompter'")
    train_oracle_config: str = setting("configs/train-oracle-distill-ifeval.yaml", "--train: the oracle's recipe (YAML)")
    train_steps: int = setting(0, "--train: override the recipes' steps (0 = the recipes' own)")
    closed_form_over_trained: bool = setting(True, "with a trained prompter: also eq (10) with it as the proposal "
                                                   "(arm 'align_pro_closed_form_trained', same K, M, λ, α)")
    baselines: list[str] = setting(["suffix", "best_suffix"], "no-learning baseline arms, any of "
                                   + " | ".join(BASELINE_FORMS) + " (best_suffix: the line recorded by `python -m "
                                   "alignpro.baselines.choose`); [] = none. Default: the two fixed lines; repeat "
                                   "and answer_rewrite each add a stage as long as no_ft's")
    guard_reward: str = setting("builtin", "also score every arm's answers with this reward (are they still on "
                                           "topic?) and report it per arm; '' = off, skipped when it is the reward")
    tie_margin: float = setting(0.01, "reward judge: |Δr| at or below this is a tie")
    batch_size: int = setting(128, "generation batch size")
    n_examples: int = setting(6, "examples shown in examples.md")

    def __post_init__(self) -> None:
        check_at_least(self, 1, "n_fresh", "batch_size", "answer_max_new_tokens")
        if self.n_prompts < 0:
            raise ConfigError(f"setting 'n_prompts' must be >= 0 (0 = all), got {self.n_prompts}")
        [parse_baseline(b) for b in self.baselines]  # ConfigError on a bad baseline
        from alignpro.specs import parse_model_spec

        parse_model_spec(self.prompter), parse_model_spec(self.target)  # the rest: as the evaluation's, below
        for name in ("trained_prompter", "oracle"):
            if getattr(self, name) == SHIPPED:  # --train replaces the shipped adapters with models trained now
                folder = ADAPTERS / SHIPPED_ADAPTERS[name][0]
                if not self.train and not (folder / "adapter_config.json").is_file():
                    raise ConfigError(f"setting '{name}': the shipped adapter is missing ({folder}); reinstall "
                                      f"alignpro, retrain it with `alignpro train --config {SHIPPED_ADAPTERS[name][1]}`, "
                                      "or set it to '' (no such arm) or to a model spec")
                setattr(self, name, "" if self.train else f"hf:{folder}")
        if self.train_steps < 0:
            raise ConfigError(f"setting 'train_steps' must be >= 0 (0 = the recipe's), got {self.train_steps}")
        if self.train:
            if self.trained_prompter or self.oracle:
                raise ConfigError("setting 'train' trains the align_pro and oracle arms itself; drop "
                                  "'trained_prompter'/'oracle' (they load already-trained models instead)")
            for name in ("train_prompter_config", "train_oracle_config"):
                if not Path(getattr(self, name)).is_file():
                    raise ConfigError(f"setting '{name}': no recipe file '{getattr(self, name)}' (run from the "
                                      "alignpro repository, or point it at a YAML of `alignpro train` settings)")
        self.answer_gen = self.answer_config()
        evaluation_config(self)  # the other settings are checked as the evaluation's (k, m, λ, α, sizes, ...)


def evaluation_config(cfg: DemoConfig) -> "EvaluateConfig":
    """The evaluation the demo presets: its models, prompts, seed, arms, closed form and answer sampling."""
    from alignpro.evaluate.config import EvaluateConfig, _dataset_label

    label = _dataset_label(cfg.prompts, 0)
    arms = [a.value + (f"={spec}" if a.checkpoint_role else "") for a, spec, on in (
        (Arm.NO_FT, "", True), (Arm.CLOSED_FORM, "", True),
        (Arm.CLOSED_FORM_REWRITES_ONLY, "", cfg.identity_prior > 0),
        (Arm.ALIGN_PRO, cfg.trained_prompter, cfg.trained_prompter),
        (Arm.ALIGN_PRO_SFT, cfg.sft_prompter, cfg.sft_prompter),
        (Arm.CLOSED_FORM_TRAINED, cfg.trained_prompter, cfg.trained_prompter and cfg.closed_form_over_trained),
        (Arm.ORACLE, cfg.oracle, cfg.oracle)) if on]
    arms[1:1] = cfg.baselines  # the no-learning baselines, right after no_ft
    guard = cfg.guard_reward if cfg.guard_reward.strip() != cfg.reward.strip() else ""  # not the reward twice
    return build_config(EvaluateConfig, dict(
        out=cfg.out, prompters=[f"P1={cfg.prompter}"], targets=[f"F1={cfg.target}"], reward=cfg.reward,
        datasets=[cfg.prompts], n=cfg.n_prompts, data_seed=cfg.seed, seeds=[cfg.seed], arms=arms,
        dataset_options=[f"{label}.skip_bad={str(cfg.skip_bad).lower()}"] + (
            [f"{label}.field={cfg.field}"] if cfg.field else []), judges=["reward"], guard_reward=guard,
        tie_margin=cfg.tie_margin, template=cfg.template, answers_per_prompt=cfg.n_fresh, batch_size=cfg.batch_size,
        n_examples=cfg.n_examples, **{f.name: getattr(cfg, f.name) for f in fields(ClosedFormConfig)},
        **{f.name: getattr(cfg, f.name) for f in fields(AnswerSettings)}))


def run_demo(cfg: DemoConfig, *, prompter=None, target=None, reward=None) -> dict[str, Any]:
    """Run the demo and write its outputs into ``cfg.out``; ``prompter``/``target``/``reward``: backends to use."""
    from alignpro.data import load_prompts
    from alignpro.evaluate.runner import Evaluation
    from alignpro.report import render_arm_sections
    from alignpro.specs import make_prompter, make_reward, make_target

    t_start = time.perf_counter()
    target = target or make_target(cfg.target, cfg.answer_gen, batch_size=cfg.batch_size)
    tokenizer = getattr(getattr(target, "lm", None), "tokenizer", None)
    count_tokens = (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])) if tokenizer else None
    loaded = load_prompts(cfg.prompts, field=cfg.field or None, skip_bad=cfg.skip_bad, n=cfg.n_prompts or None,
                          seed=cfg.seed, max_tokens=cfg.max_prompt_tokens if count_tokens else None,
                          count_tokens=count_tokens)
    print(f"alignpro demo: {len(loaded.records)} prompts from {cfg.prompts} ({loaded.skipped} bad rows skipped); "
          f"K={cfg.k}, M={cfg.m}, λ={cfg.lam}, α={cfg.identity_prior}; writing {cfg.out}")
    trained_now = train_now(cfg, Path(cfg.out)) if cfg.train else {}
    if cfg.train:
        cfg.trained_prompter, cfg.oracle = (trained_now[Arm.ALIGN_PRO.value]["spec"],
                                            trained_now[Arm.ORACLE.value]["spec"])
    given = {("target", cfg.target): target, ("prompter", cfg.prompter): prompter, ("reward", cfg.reward): reward}
    make = {"prompter": lambda spec: make_prompter(spec, cfg.template, batch_size=cfg.batch_size),
            "target": lambda spec: make_target(spec, cfg.answer_gen, batch_size=cfg.batch_size),
            "reward": lambda spec: make_reward(spec, loaded.records)}

    def load(role: str, spec: str):  # the backends given, else built as the demo always built them
        return given[(role, spec)] if given.get((role, spec)) is not None else make[role](spec)

    ecfg = evaluation_config(cfg)  # one dataset, labelled as evaluate labels it
    evaluation = Evaluation(ecfg, load, cached=False, prompts={next(iter(ecfg.dataset_sources)): loaded.records})
    metrics = evaluation.run(extra={"demo": {"prompts_skipped": loaded.skipped, "trained_now": trained_now,
                                             "prompts_skipped_reasons": loaded.skipped_reasons}})
    print("\n".join(render_arm_sections(metrics)))
    print(f"wrote {cfg.out} (metrics.json, table.md, examples.md, ...) in {time.perf_counter() - t_start:.0f} s")
    return metrics


def train_now(cfg: DemoConfig, out: Path) -> dict[str, dict[str, Any]]:
    """``--train``: run ``alignpro train`` for the prompter and the oracle recipes (same models, reward, template
    and seed as this demo; an interrupted run in the same folder is resumed). Returns what the report shows."""
    from alignpro.train.cli import parse_train_config
    from alignpro.train.loop import train

    arms = {}
    for arm, role, recipe in ((Arm.ALIGN_PRO.value, "prompter", cfg.train_prompter_config),
                              (Arm.ORACLE.value, "oracle", cfg.train_oracle_config)):
        run = out / f"train-{role}"
        # a prompter recipe may name its own ρ_sft (the shipped one starts from the SFT prompter); else the demo's
        own_start = role == "prompter" and "prompter" in (load_yaml(recipe) or {})
        argv = (["--resume", str(run)] if (run / "config.yaml").is_file() else
                ["--config", recipe, "--out", str(run), "--role", role,
                 *([] if own_start else ["--prompter", cfg.prompter]), "--target",
                 cfg.target, "--reward", cfg.reward, "--template", cfg.template, "--seed", str(cfg.seed)])
        argv += ["--steps", str(cfg.train_steps)] if cfg.train_steps else []
        tcfg = parse_train_config(argv)
        print(f"alignpro demo --train: {role} from {recipe}, {tcfg.steps} steps into {run}")
        t0 = time.perf_counter()
        result = train(tcfg)
        last = result.rows[-1] if result.rows else {}
        arms[arm] = {"source": "trained now (--train)", "recipe": recipe, "run": str(run), "steps": tcfg.steps,
                     "spec": f"hf:{result.final}", "train_seconds": time.perf_counter() - t0,
                     "final_kl": last.get("kl"), "final_reward_mean": last.get("reward_mean")}
    return arms


def main(argv: list[str]) -> int:
    cfg = parse_config(DemoConfig, argv, prog="alignpro demo")
    run_demo(cfg)
    return 0
