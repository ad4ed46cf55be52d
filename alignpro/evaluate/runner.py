"""The evaluation grid, stage by stage: generate every arm in every cell, score, judge, aggregate, write.

A cell is (prompter ρ, target π_F, dataset, seed). Its arms are run by :mod:`alignpro.arms`, the runner the demo
uses too (fresh answers scored against the ORIGINAL x, common random numbers where two arms show π_F the same x′,
system prompts on every call to π_F, one seed scheme), on backends that go through the disk cache (``cache.py``).

Stages run over the whole grid, one progress bar each, cells ordered by target then prompter so each model is
loaded once per stage, in the order no_ft, the closed form (and its rewrites-only variant), align_pro, the closed
form over the trained prompter, oracle, the no-learning baselines (the order of :mod:`alignpro.arms`'s ρ* draws).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from alignpro import __version__
from alignpro.config import CONFIG_FILE, check_resume, config_to_dict, load_yaml, write_run_config
from alignpro.errors import AlignProError, ConfigError
from alignpro.evaluate.aggregate import aggregate_cells
from alignpro.arms import (BASELINE, NO_LEARNING_BASELINES, Arm, ArmRun, answer_arm, answer_baseline, answer_oracle,
                           chunk_bounds, propose_closed_form, rewrite_once)
from alignpro.evaluate.cache import (CachedJudge, CachedPrompter, CachedReward, CachedTarget, DiskCache, Loader,
                                     ModelPool)
from alignpro.evaluate.config import SCHEMA_VERSION, EvaluateConfig
from alignpro.evaluate.judge_specs import JudgeSpec
from alignpro.evaluate.judges import (LLMJudge, OpenAIJudge, PairwiseJudge, RewardJudge, Verdict,
                                      load_judge_template)
from alignpro.evaluate.plan import Cell, checkpoint_fingerprint, preflight
from alignpro.metrics import win_rate_from_outcomes
from alignpro.report import words, cell_arm_metrics, examples, instruction_checker
from alignpro.templates import load_rewrite_template


def default_loader(cfg: EvaluateConfig, records: Any = None) -> Loader:
    """(role, spec) -> backend, through :mod:`alignpro.specs` (the one place specs are resolved). ``records``: the
    prompt records a record-based reward (``ifeval``) scores."""

    def load(role: str, spec: str) -> Any:
        from alignpro import specs

        if role == "prompter":
            return specs.make_prompter(spec, cfg.template, cfg.rewrite_gen, batch_size=cfg.batch_size)
        if role == "target":
            return specs.make_target(spec, cfg.answer_gen, batch_size=cfg.batch_size)
        if role == "reward":
            return specs.make_reward(spec, records)
        if role == "judge_lm":
            return specs.load_causal_lm(spec, batch_size=cfg.batch_size)
        raise ValueError(f"unknown backend role '{role}'")

    return load


@dataclass
class CellRun:
    """Everything generated for one cell: its arms (prompts, answers, rewards, rewrites) and the judges' verdicts."""

    cell: Cell
    arms: ArmRun
    verdicts: dict[tuple[str, str], list[Verdict]] = field(default_factory=dict)  #: (judge, arm) -> (N·n,)
    guard: dict[str, np.ndarray] = field(default_factory=dict)  #: arm -> (N, n) guard rewards of its answers


class Evaluation:
    """One run of the grid; :meth:`run` does everything and returns the metrics.

    A run writes its settings to ``OUT/config.yaml`` (:func:`check_run`); a cached run into a folder that holds one
    continues only with ``resume`` set. ``cached`` False runs the backends as they are, without the disk cache
    (`alignpro demo`: its draws come from the arms' seed scheme alone, so a run repeats the demo's numbers, and a
    rerun into the same folder overwrites its outputs); ``prompts`` replaces the prompts preflight
    loaded ({dataset label: [PromptRecord]}, e.g. filtered by the target's tokenizer)."""

    def __init__(self, cfg: EvaluateConfig, loader: Loader | None = None, *, cached: bool = True,
                 prompts: dict[str, list] | None = None) -> None:
        self.cfg = cfg
        self.plan = preflight(cfg)  # raises before anything is generated
        self.plan.prompts.update(prompts or {})
        self.checkers = {}  # dataset -> IFEval's checkers over its instructions (for the report), None without
        for label, records in self.plan.prompts.items():
            try:
                self.checkers[label] = instruction_checker(records)
            except AlignProError as exc:  # e.g. a type whose checker needs nltk data: the run goes on without them
                self.checkers[label] = None
                print(f"alignpro evaluate: dataset '{label}': IFEval's metrics will not be reported: {exc}")
        self.out = Path(cfg.out)
        check_run(cfg, self.out, cached=cached)  # before anything is written
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = DiskCache(cfg.cache_path) if cached else None
        write_run_config(cfg, self.out / CONFIG_FILE)
        self.pool = ModelPool(loader or default_loader(cfg, [r for rs in self.plan.prompts.values() for r in rs]))
        self.fp: dict[str, str] = {}
        self.runs: list[CellRun] = []
        self.judge_usage: dict[str, dict] = {}
        self.judge_independent: dict[str, bool] = {}
        self.template_id = load_rewrite_template(cfg.template).id if cfg.needs_rewrites else ""

    # ---------------------------------------------------------------- helpers
    def fingerprint(self, spec: str) -> str:
        if spec not in self.fp:
            self.fp[spec] = checkpoint_fingerprint(spec)
        return self.fp[spec]

    def keep(self, needs: set[tuple[str, str]]) -> None:
        """Drop the loaded models a stage does not need (with the cache; without it every model stays)."""
        if self.cache is not None:
            self.pool.retain(needs)

    def target(self, spec: str, stage: str) -> CachedTarget:
        if self.cache is None:
            return self.pool.get("target", spec)
        return CachedTarget(self.cache, self.pool, spec, self.cfg.answer_gen, stage,
                            fingerprint=self.fingerprint(spec), batch_size=self.cfg.batch_size)

    def prompter(self, spec: str) -> CachedPrompter:
        if self.cache is None:
            return self.pool.get("prompter", spec)
        return CachedPrompter(self.cache, self.pool, spec, self.cfg.rewrite_gen, self.template_id,
                              fingerprint=self.fingerprint(spec), batch_size=self.cfg.batch_size)

    def reward(self, spec: str | None = None) -> CachedReward:
        """The reward (``spec`` None) or another reward spec (the guard) through the cache."""
        spec = spec or self.cfg.reward
        if self.cache is None:
            return self.pool.get("reward", spec)
        fp = self.fingerprint(spec) if spec.startswith("hf:") else ""
        return CachedReward(self.cache, self.pool, spec, fingerprint=fp, batch_size=max(self.cfg.batch_size, 32))

    def bar(self, desc: str, total: int):
        return tqdm(total=total, desc=desc, unit="prompt", disable=not self.cfg.progress, dynamic_ncols=True)

    def runs_with(self, *arms: Arm) -> list[CellRun]:
        return self.runs if any(a.value in self.plan.arms for a in arms) else []

    def stage(self, desc: str, runs: list[CellRun], step) -> None:
        """``step(run, bar.update)`` on each cell's run, under one progress bar (none when no cell needs it)."""
        if not runs:
            return
        with self.bar(desc, sum(len(r.arms.prompts) for r in runs)) as bar:
            for run in runs:
                step(run, bar.update)

    # ---------------------------------------------------------------- stages (alignpro.arms on cached backends)
    def answer_with_target(self, arm: Arm, shown):
        """A stage step: fresh π_F answers for ``arm`` to ``shown(run)`` (x, or the arm's x′)."""

        def step(run: CellRun, progress) -> None:
            c = run.cell
            self.keep({("target", c.target), ("reward", self.cfg.reward)})
            stage = "no_ft" if arm is Arm.NO_FT else f"fresh/{arm.value}"
            answer_arm(run.arms, arm, self.target(c.target, stage), self.reward(), shown(run), progress)

        return step

    def propose(self, arm: Arm):
        """A stage step: R̂ from the arm's proposal (ρ_sft, or the trained prompter), ρ* and the x′ drawn."""

        def step(run: CellRun, progress) -> None:
            c = run.cell
            spec = c.prompter if arm is Arm.CLOSED_FORM else c.checkpoint(arm.value)
            self.keep({("prompter", spec), ("target", c.target), ("reward", self.cfg.reward)})
            propose_closed_form(run.arms, arm, self.prompter(spec), self.target(c.target, "rhat"), self.reward(),
                                self.cfg.closed_form, progress)

        return step

    def rewrite_trained(self, arm: Arm):
        """A stage step: the trained prompter of ``arm`` (align_pro, or align_pro_sft) rewrites x once."""

        def step(run: CellRun, progress) -> None:
            ckpt = run.cell.checkpoint(arm.value)
            self.keep({("prompter", ckpt)})
            run.arms.rewrites[arm.value] = rewrite_once(run.arms, self.prompter(ckpt), progress, arm)
            run.arms.diagnostics[arm.value].update(checkpoint=ckpt, **trained_info(ckpt))

        return step

    def answer_oracle(self, run: CellRun, progress) -> None:
        ckpt = run.cell.checkpoint(Arm.ORACLE.value)
        self.keep({("target", ckpt), ("reward", self.cfg.reward)})
        run.arms.diagnostics[Arm.ORACLE.value] = {"checkpoint": ckpt, **trained_info(ckpt)}
        answer_oracle(run.arms, self.target(ckpt, "oracle"), self.reward(), progress)

    def stage_arms(self) -> None:
        """Every arm of every cell, in the order of :mod:`alignpro.arms`."""
        cf, ro, cft = Arm.CLOSED_FORM, Arm.CLOSED_FORM_REWRITES_ONLY, Arm.CLOSED_FORM_TRAINED
        chosen = lambda arm: lambda run: run.arms.closed_forms[arm.value].chosen  # noqa: E731
        self.stage("no_ft: π_F answers x", self.runs_with(Arm.NO_FT),
                   self.answer_with_target(Arm.NO_FT, lambda run: run.arms.prompts))
        self.stage("closed form: K rewrites, M answers each → R̂, ρ*", self.runs_with(cf, ro), self.propose(cf))
        for arm in (cf, ro):
            self.stage(f"{arm.value}: fresh answers to x′", self.runs_with(arm),
                       self.answer_with_target(arm, chosen(arm)))
        for arm, what in ((Arm.ALIGN_PRO, "trained ρ"), (Arm.ALIGN_PRO_SFT, "its SFT start ρ_sft")):
            self.stage(f"{arm.value}: {what} rewrites x once", self.runs_with(arm), self.rewrite_trained(arm))
            self.stage(f"{arm.value}: fresh answers to x′", self.runs_with(arm),
                       self.answer_with_target(arm, lambda run, a=arm.value: run.arms.rewrites[a]))
        self.stage(f"{cft.value}: K trained rewrites, M answers each → R̂, ρ*", self.runs_with(cft), self.propose(cft))
        self.stage(f"{cft.value}: fresh answers to x′", self.runs_with(cft), self.answer_with_target(cft, chosen(cft)))
        self.stage("oracle: RLHF-tuned target answers x", self.runs_with(Arm.ORACLE), self.answer_oracle)
        for arm in (a for a in Arm if a in NO_LEARNING_BASELINES):
            self.stage(f"{arm.value}: no-learning baseline", self.runs_with(arm), self.answer_baseline(arm))

    def answer_baseline(self, arm: Arm):
        """A stage step: the no-learning baseline ``arm`` (suffix=<line>: ``arm_specs`` holds the line)."""

        def step(run: CellRun, progress) -> None:
            self.pool.retain({("target", run.cell.target), ("reward", self.cfg.reward)})
            answer_baseline(run.arms, arm, self.target(run.cell.target, f"fresh/{arm.value}"), self.reward(),
                            line=self.cfg.arm_specs[arm.value], progress=progress)

        return step

    def make_judge(self, spec: JudgeSpec) -> tuple[PairwiseJudge, set]:
        """The judge for a JudgeSpec, and the pool entries it needs."""
        cfg = self.cfg
        if spec.kind == "reward":
            return RewardJudge(self.reward(), cfg.tie_margin), {("reward", cfg.reward)}
        template = self.plan.judge_template or load_judge_template(cfg.judge_template)
        if spec.kind == "llm":
            judge_id = json.dumps(["llm", spec.model, self.fingerprint(spec.model), template.id,
                                   cfg.llm_judge_max_new_tokens, cfg.llm_judge_prefill])
            factory = lambda: LLMJudge(self.pool.get("judge_lm", spec.model), template,  # noqa: E731
                                       max_new_tokens=cfg.llm_judge_max_new_tokens, prefill=cfg.llm_judge_prefill,
                                       name=str(spec))
            if self.cache is None:
                return factory(), {("judge_lm", spec.model)}
            return CachedJudge(self.cache, judge_id, factory, name=str(spec), chunk=cfg.batch_size), {
                ("judge_lm", spec.model)}
        judge_id = json.dumps(["openai", spec.model, spec.base_url, template.id, cfg.openai_judge_max_tokens])
        factory = lambda: OpenAIJudge(spec.model, spec.base_url, os.environ[cfg.judge_api_key_env],  # noqa: E731
                                      template, max_tokens=cfg.openai_judge_max_tokens,
                                      concurrency=cfg.judge_concurrency, max_retries=cfg.judge_max_retries,
                                      backoff_s=cfg.judge_backoff_s, timeout_s=cfg.judge_timeout_s)
        if self.cache is None:
            return factory(), set()
        return CachedJudge(self.cache, judge_id, factory, name=str(spec), chunk=max(16, 4 * cfg.judge_concurrency)
                           ), set()

    def stage_judges(self) -> None:
        arms = [a for a in self.cfg.judged if a in self.plan.arms]
        for spec in self.cfg.judge_specs:
            judge, needs = self.make_judge(spec)
            self.judge_independent[judge.name] = judge.independent
            total = sum(len(r.arms.prompts) for r in self.runs) * len(arms)
            with self.bar(f"judge {judge.name}: {', '.join(arms)} vs {BASELINE}, both orders", total) as bar:
                for run in self.runs:
                    self.keep(needs)
                    n, prompts, base = run.arms.n, run.arms.flat_prompts(), run.arms.flat(BASELINE)
                    for arm in arms:
                        answers, verdicts = run.arms.flat(arm), []
                        for a, b in chunk_bounds(len(run.arms.prompts), run.arms.chunk):
                            lo, hi = a * n, b * n
                            verdicts += judge.judge(prompts[lo:hi], answers[lo:hi], base[lo:hi])
                            bar.update(b - a)
                        run.verdicts[(judge.name, arm)] = verdicts
            usage = getattr(getattr(judge, "built", None), "usage", None)
            if usage is not None:
                self.judge_usage[judge.name] = {"calls": usage.calls, "retries": usage.retries, **usage.extra}
        self.keep(set())

    def stage_guard(self) -> None:
        """Every arm's answers scored by ``guard_reward`` against the ORIGINAL x (are they still on topic?)."""
        if not self.cfg.guard_reward:
            return
        guard = self.reward(self.cfg.guard_reward)
        with self.bar(f"guard {self.cfg.guard_reward}: every arm's answers",
                      sum(len(r.arms.prompts) for r in self.runs) * len(self.plan.arms)) as bar:
            for run in self.runs:
                prompts, n = run.arms.flat_prompts(), run.arms.n
                for arm in self.plan.arms:
                    values = guard.score(prompts, run.arms.flat(arm))
                    run.guard[arm] = np.asarray(values, dtype=float).reshape(len(run.arms.prompts), n)
                    bar.update(len(run.arms.prompts))
        self.keep(set())

    # ---------------------------------------------------------------- the run
    def run(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every stage, then the metrics (with ``extra`` added at the top level) written into ``cfg.out``."""
        t0 = time.perf_counter()
        cfg = self.cfg
        n_cells = len(self.plan.cells)
        print(f"alignpro evaluate: {len(cfg.prompter_specs)} prompter(s) x {len(cfg.target_specs)} target(s) x "
              f"{len(cfg.dataset_sources)} dataset(s) x {len(cfg.seeds)} seed(s) = {n_cells} cells; arms "
              f"{self.plan.arms}; judges {cfg.judges}; "
              + (f"cache {cfg.cache_path}" if self.cache is not None else "no cache"))
        for arm, why in self.plan.skipped.items():
            print(f"alignpro evaluate: skipping arm '{arm}': {why} (skip_missing_checkpoints)")
        for cell in self.plan.cells:
            records = self.plan.prompts[cell.dataset]
            self.runs.append(CellRun(cell, ArmRun([r.text for r in records], [r.system for r in records],
                                                  n=cfg.answers_per_prompt, seed=cell.seed, batch_size=cfg.batch_size)))
        try:
            self.stage_arms()
            self.stage_judges()
            self.stage_guard()
            metrics = {**self.metrics(time.perf_counter() - t0), **(extra or {})}
        finally:
            self.pool.retain(set())
            if self.cache is not None:
                self.cache.close()
        from alignpro.evaluate.report import write_outputs

        write_outputs(metrics, self.out, judgments=self.judgment_rows())
        return metrics

    # ---------------------------------------------------------------- metrics
    def metrics(self, wall: float) -> dict[str, Any]:
        cfg = self.cfg
        cells, outcomes, examples_ = [], {}, []
        for run in self.runs:
            c, r = run.cell, run.arms
            report = cell_arm_metrics(r, self.plan.arms, guard=run.guard, checker=self.checkers[c.dataset])
            win_rates = []
            for (judge, arm), verdicts in run.verdicts.items():
                out = [v.outcome for v in verdicts]
                outcomes[(c.pair, c.dataset, c.seed, arm, judge)] = out
                wr = win_rate_from_outcomes(out, arm=arm, baseline=BASELINE, judge=judge).to_dict()
                wr.update(_judge_extras(verdicts, r.flat(arm), r.flat(BASELINE)))
                wr["judge_independent"] = self.judge_independent[judge]
                win_rates.append(wr)
            diagnostics = {a: dict(r.diagnostics[a]) for a in self.plan.arms if a in r.diagnostics}
            for a, kept in report["rewrite_keeps_original_fraction"].items():
                diagnostics.setdefault(a, {})["rewrite_keeps_original_fraction"] = kept
            cells.append({"pair": c.pair, "prompter": c.prompter, "target": c.target, "dataset": c.dataset,
                          "seed": c.seed, "n_prompts": len(r.prompts), "arms": report["arms"],
                          "strongest_baseline": report["strongest_baseline"],
                          "baseline_note": report["baseline_note"], "gap_closed_note": report["gap_closed_note"],
                          "win_rates": win_rates, "diagnostics": diagnostics})
            if c.seed == cfg.seeds[0]:
                examples_.extend(examples(r, cfg.n_examples, report["instruction_first"], pair=c.pair,
                                          dataset=c.dataset, seed=c.seed))
        return {
            "schema_version": SCHEMA_VERSION,
            "alignpro_version": __version__,
            "cells": cells,
            "aggregate": aggregate_cells(cells, outcomes),
            "examples": examples_,
            "pairs": {f"{p}-{t}": {"prompter": ps, "target": ts, "prompter_label": p, "target_label": t}
                      for t, ts in cfg.target_specs.items() for p, ps in cfg.prompter_specs.items()},
            "datasets": dict(cfg.dataset_sources),
            "skipped_arms": self.plan.skipped,
            "usage": {
                "wall_seconds": wall,
                "cache": self.cache.stats() if self.cache is not None else {},
                "model_loads": {f"{role}:{spec}": n for (role, spec), n in self.pool.loads.items()},
                "judges": self.judge_usage,
            },
            "config": config_to_dict(cfg),
        }

    def judgment_rows(self) -> list[dict[str, Any]]:
        rows = []
        for run in self.runs:
            c = run.cell
            prompts = run.arms.flat_prompts()
            for (judge, arm), verdicts in run.verdicts.items():
                a, b = run.arms.flat(arm), run.arms.flat(BASELINE)
                for i, v in enumerate(verdicts):
                    rows.append({"pair": c.pair, "dataset": c.dataset, "seed": c.seed, "judge": judge, "arm": arm,
                                 "baseline": BASELINE, "prompt": prompts[i], "answer_arm": a[i],
                                 "answer_baseline": b[i], "words_arm": words(a[i]), "words_baseline": words(b[i]),
                                 "arm_first": v.ab, "baseline_first": v.ba, "winner": v.winner})
        return rows


def _judge_extras(verdicts: list[Verdict], arm_answers: list[str], base_answers: list[str]) -> dict[str, Any]:
    """Counts beside the win rate: unusable judgments, position consistency, answer lengths (length bias)."""
    la, lb = np.array([words(y) for y in arm_answers]), np.array([words(y) for y in base_answers])
    decisive = [(v.winner, x, y) for v, x, y in zip(verdicts, la, lb) if v.winner != "tie" and x != y]
    longer_won = [(w == "A") == (x > y) for w, x, y in decisive]
    return {
        "invalid": int(sum(v.invalid for v in verdicts)),  # out of 2·n judgments
        "position_consistent": float(np.mean([v.consistent for v in verdicts])),
        "arm_mean_words": float(la.mean()),
        "baseline_mean_words": float(lb.mean()),
        "longer_answer_won": float(np.mean(longer_won)) if longer_won else None,
        "n_decisive_with_length_difference": len(decisive),
    }


def trained_info(spec: str) -> dict[str, Any]:
    """What ``alignpro train`` recorded about a loaded ``hf:`` checkpoint or adapter (algo, steps, final KL)."""
    from alignpro.train.policy import TRAIN_INFO

    path = Path(spec[3:]) if spec.startswith("hf:") else None
    if path is None or not (path / TRAIN_INFO).is_file():
        return {}
    info = json.loads((path / TRAIN_INFO).read_text())
    return {k: info[k] for k in ("algo", "steps", "final_kl", "reward", "prompts") if k in info}


def check_run(cfg: EvaluateConfig, out: Path, *, cached: bool = True) -> None:
    """Whether the run may write into ``out`` (then :class:`Evaluation` writes its ``OUT/config.yaml``): a cached
    run into a folder that already holds an evaluation's settings continues only with ``cfg.resume``, and then only
    with settings that differ from the saved ones where :func:`alignpro.config.check_resume` allows. An uncached
    run (the demo) has nothing to continue: it writes over what is there."""
    saved = out / CONFIG_FILE
    if cached and cfg.resume:
        if not saved.is_file():
            raise ConfigError(f"setting 'resume': '{out}' holds no evaluation (no {CONFIG_FILE}); start a new one "
                              f"with --out {out}")
        check_resume(load_yaml(saved), config_to_dict(cfg), EvaluateConfig, saved)
    elif cached and saved.is_file():
        raise ConfigError(f"'{out}' already holds an evaluation ({CONFIG_FILE}); pass --resume {out} to continue it "
                          "through its cache, or choose another --out")


def run_evaluation(cfg: EvaluateConfig, *, loader: Loader | None = None) -> dict[str, Any]:
    """Run the grid and write the outputs into ``cfg.out``; returns the metrics. ``loader`` builds backends
    from (role, spec) (tests pass fakes); bad configs raise ConfigError before anything is generated."""
    return Evaluation(cfg, loader).run()
