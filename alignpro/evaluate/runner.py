"""The evaluation grid, stage by stage: generate every arm in every cell, score, judge, aggregate, write.

A cell is (prompter ρ, target π_F, dataset, seed). The arms of a cell (same prompts x, answers always scored
against the ORIGINAL x):

- ``no_ft``: π_F answers x;
- ``align_pro_closed_form``: eq (3) sampled by :func:`alignpro.method.composed_rollout` (K rewrites + x itself
  with prior α, M answers each → R̂(x, x′)), ρ* of eq (10) by :func:`optimal_prompter_weights`, one x′ drawn
  by :func:`sample_candidates`, then FRESH π_F answers to x′ (the answers that estimated R̂ are never reused);
- ``align_pro``: a trained prompter checkpoint writes one x′, fresh π_F answers;
- ``oracle``: an RLHF-tuned target checkpoint answers x.

Stages run over the whole grid, one progress bar each, cells ordered by target then prompter so each model is
loaded once per stage; every generation, score and judgment goes through the disk cache (see ``cache.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from alignpro import __version__
from alignpro.config import config_to_dict
from alignpro.evaluate.aggregate import aggregate_cells
from alignpro.evaluate.cache import (CachedJudge, CachedPrompter, CachedReward, CachedTarget, DiskCache, Loader,
                                     ModelPool)
from alignpro.evaluate.config import (BASELINE, SCHEMA_VERSION, Arm, Cell, EvaluateConfig, JudgeSpec,
                                      checkpoint_fingerprint, preflight)
from alignpro.evaluate.judges import (LLMJudge, OpenAIJudge, PairwiseJudge, RewardJudge, Verdict,
                                      load_judge_template)
from alignpro.method import composed_rollout, kl_to_prior, optimal_prompter_weights, sample_candidates
from alignpro.metrics import arm_stats, win_rate_from_outcomes
from alignpro.templates import load_rewrite_template

#: seed offsets per stage, so that no two stages share a random stream
SEED_OFFSET = {"no_ft": 100, "fresh_closed_form": 200, "align_pro_rewrite": 300, "align_pro": 400,
               "oracle": 500, "rollout": 1000}


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
    """Everything generated for one cell. Shapes: N prompts, n = answers_per_prompt."""

    cell: Cell
    prompts: list[str]  #: (N,) original prompts x
    systems: list[str | None]  #: (N,) their system prompts (Orca has some)
    n: int  #: answers per prompt and arm
    answers: dict[str, list[list[str]]] = field(default_factory=dict)  #: arm -> (N, n) answer texts
    tokens: dict[str, list[list[int]]] = field(default_factory=dict)  #: arm -> (N, n) answer lengths in tokens
    rewards: dict[str, np.ndarray] = field(default_factory=dict)  #: arm -> (N, n) r(x, y)
    rewrites: dict[str, list[str]] = field(default_factory=dict)  #: arm -> (N,) the x′ that π_F answered
    diagnostics: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[tuple[str, str], list[Verdict]] = field(default_factory=dict)  #: (judge, arm) -> (N·n,)

    def flat(self, arm: str) -> list[str]:
        return [y for row in self.answers[arm] for y in row]

    def flat_prompts(self) -> list[str]:
        """(N·n,) the original prompt of every answer, in the order of :meth:`flat`."""
        return [x for x in self.prompts for _ in range(self.n)]


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def _words(text: str) -> int:
    return len(text.split())


class Evaluation:
    """One run of the grid; :meth:`run` does everything and returns the metrics."""

    def __init__(self, cfg: EvaluateConfig, loader: Loader | None = None) -> None:
        self.cfg = cfg
        self.plan = preflight(cfg)  # raises before anything is generated
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = DiskCache(cfg.cache_path)
        self.pool = ModelPool(loader or default_loader(cfg, [r for rs in self.plan.prompts.values() for r in rs]))
        self.fp: dict[str, str] = {}
        self.runs: list[CellRun] = []
        self.judge_usage: dict[str, dict] = {}
        self.judge_independent: dict[str, bool] = {}
        needs_rewrites = any(a in cfg.arm_specs for a in (Arm.CLOSED_FORM.value, Arm.ALIGN_PRO.value))
        tpl = load_rewrite_template(cfg.template) if needs_rewrites else None
        self.template_id = json.dumps([tpl.system, tpl.user, tpl.examples, tpl.strip_prefixes,
                                       tpl.max_chars_ratio]) if tpl else ""

    # ---------------------------------------------------------------- helpers
    def fingerprint(self, spec: str) -> str:
        if spec not in self.fp:
            self.fp[spec] = checkpoint_fingerprint(spec)
        return self.fp[spec]

    def target(self, spec: str, stage: str) -> CachedTarget:
        return CachedTarget(self.cache, self.pool, spec, self.cfg.answer_gen, stage,
                            fingerprint=self.fingerprint(spec), batch_size=self.cfg.batch_size)

    def prompter(self, spec: str) -> CachedPrompter:
        return CachedPrompter(self.cache, self.pool, spec, self.cfg.rewrite_gen, self.template_id,
                              fingerprint=self.fingerprint(spec), batch_size=self.cfg.batch_size)

    def reward(self) -> CachedReward:
        spec = self.cfg.reward
        fp = self.fingerprint(spec) if spec.startswith("hf:") else ""
        return CachedReward(self.cache, self.pool, spec, fingerprint=fp, batch_size=max(self.cfg.batch_size, 32))

    def bar(self, desc: str, total: int):
        return tqdm(total=total, desc=desc, unit="prompt", disable=not self.cfg.progress, dynamic_ncols=True)

    def _answer_arm(self, run: CellRun, arm: str, target: CachedTarget, to_answer: list[str], seed: int,
                    bar) -> None:
        """Fresh answers to ``to_answer`` (x or x′), scored against the original x, stored under ``arm``."""
        n, reward = self.cfg.answers_per_prompt, self.reward()
        texts, tokens, scores = [], [], []
        for a, b in _chunks(len(to_answer), max(1, self.cfg.batch_size // n)):
            rows = target.bound(run.systems[a:b], run.prompts[a:b]).answer(to_answer[a:b], n=n, seed=seed)
            t = [[ans.text for ans in row] for row in rows]
            s = reward.score([x for x in run.prompts[a:b] for _ in range(n)], [y for row in t for y in row])
            texts.extend(t)
            tokens.extend([[ans.n_tokens for ans in row] for row in rows])
            scores.extend(np.asarray(s, dtype=float).reshape(b - a, n).tolist())
            bar.update(b - a)
        run.answers[arm], run.tokens[arm], run.rewards[arm] = texts, tokens, np.asarray(scores)

    # ---------------------------------------------------------------- stages
    def stage_no_ft(self) -> None:
        with self.bar("no_ft: π_F answers x", sum(len(r.prompts) for r in self.runs)) as bar:
            for run in self.runs:
                c = run.cell
                self.pool.retain({("target", c.target), ("reward", self.cfg.reward)})
                self._answer_arm(run, BASELINE, self.target(c.target, "no_ft"), run.prompts,
                                 c.seed + SEED_OFFSET["no_ft"], bar)

    def stage_closed_form(self) -> None:
        cfg = self.cfg
        c_count = cfg.k + (1 if cfg.identity_prior > 0 else 0)
        chunk = max(1, cfg.batch_size // (c_count * cfg.m))
        with self.bar("align_pro_closed_form: K rewrites, M answers each → R̂", sum(len(r.prompts) for r in self.runs)
                      ) as bar:
            for run in self.runs:
                c = run.cell
                self.pool.retain({("prompter", c.prompter), ("target", c.target), ("reward", cfg.reward)})
                prompter, target, reward = self.prompter(c.prompter), self.target(c.target, "rhat"), self.reward()
                rollouts = []
                for a, b in _chunks(len(run.prompts), chunk):
                    # composed_rollout asks π_F for the N·C candidates in prompt order: bind their x and system
                    systems = [s for s in run.systems[a:b] for _ in range(c_count)]
                    origins = [x for x in run.prompts[a:b] for _ in range(c_count)]
                    rollouts.append(composed_rollout(run.prompts[a:b], prompter, target.bound(systems, origins), reward,
                                                     k=cfg.k, m=cfg.m, identity_prior=cfg.identity_prior,
                                                     seed=c.seed + SEED_OFFSET["rollout"]))
                    bar.update(b - a)
                candidates = [x for r in rollouts for x in r.candidates]  # (N, C)
                r_hat = np.concatenate([r.r_hat for r in rollouts])  # (N, C)
                log_prior = rollouts[0].log_prior  # (C,)
                w = optimal_prompter_weights(r_hat, log_prior, cfg.lam)  # (N, C) ρ*(x′|x), eq (10)
                rng = np.random.default_rng([c.seed, int(hashlib.sha256(c.id.encode()).hexdigest()[:8], 16)])
                idx = sample_candidates(w, rng)  # (N,)
                run.rewrites[Arm.CLOSED_FORM.value] = [candidates[i][j] for i, j in enumerate(idx)]
                sets = [s for r in rollouts for s in r.rewrite_sets]
                n_rw = sum(len(s.rewrites) for s in sets)
                run.diagnostics[Arm.CLOSED_FORM.value] = {
                    "kl_rho_star_to_rho_sft": float(kl_to_prior(w, log_prior).mean()),
                    "chose_original_fraction": float((idx == 0).mean()) if cfg.identity_prior > 0 else 0.0,
                    "rewrites_parsed_fraction": sum(rw.parsed for s in sets for rw in s.rewrites) / max(1, n_rw),
                    "selection_biased_r_hat_of_chosen": float(r_hat[np.arange(len(idx)), idx].mean()),
                    "selection_biased_note": "mean R̂ of the chosen x′ on the answers that chose them: biased upward "
                                             "(best-of-K), NOT a result; the arm's reward uses fresh answers",
                }
        with self.bar("align_pro_closed_form: fresh answers to x′", sum(len(r.prompts) for r in self.runs)) as bar:
            for run in self.runs:
                c = run.cell
                self.pool.retain({("target", c.target), ("reward", cfg.reward)})
                self._answer_arm(run, Arm.CLOSED_FORM.value, self.target(c.target, "fresh/align_pro_closed_form"),
                                 run.rewrites[Arm.CLOSED_FORM.value], c.seed + SEED_OFFSET["fresh_closed_form"], bar)

    def stage_align_pro(self) -> None:
        arm = Arm.ALIGN_PRO.value
        with self.bar("align_pro: trained ρ rewrites x once, π_F answers", sum(len(r.prompts) for r in self.runs)
                      ) as bar:
            for run in self.runs:
                c, ckpt = run.cell, run.cell.checkpoint(arm)
                self.pool.retain({("prompter", ckpt), ("target", c.target), ("reward", self.cfg.reward)})
                sets = self.prompter(ckpt).rewrite(run.prompts, 1, seed=c.seed + SEED_OFFSET["align_pro_rewrite"])
                run.rewrites[arm] = [s.rewrites[0].text for s in sets]
                run.diagnostics[arm] = {"checkpoint": ckpt, "rewrites_parsed_fraction":
                                        float(np.mean([s.rewrites[0].parsed for s in sets]))}
                self._answer_arm(run, arm, self.target(c.target, "fresh/align_pro"), run.rewrites[arm],
                                 c.seed + SEED_OFFSET["align_pro"], bar)

    def stage_oracle(self) -> None:
        arm = Arm.ORACLE.value
        with self.bar("oracle: RLHF-tuned target answers x", sum(len(r.prompts) for r in self.runs)) as bar:
            for run in self.runs:
                ckpt = run.cell.checkpoint(arm)
                self.pool.retain({("target", ckpt), ("reward", self.cfg.reward)})
                run.diagnostics[arm] = {"checkpoint": ckpt}
                self._answer_arm(run, arm, self.target(ckpt, "oracle"), run.prompts,
                                 run.cell.seed + SEED_OFFSET["oracle"], bar)

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
            return CachedJudge(self.cache, judge_id, factory, name=str(spec), chunk=cfg.batch_size), {
                ("judge_lm", spec.model)}
        judge_id = json.dumps(["openai", spec.model, spec.base_url, template.id, cfg.openai_judge_max_tokens])
        factory = lambda: OpenAIJudge(spec.model, spec.base_url, os.environ[cfg.judge_api_key_env],  # noqa: E731
                                      template, max_tokens=cfg.openai_judge_max_tokens,
                                      concurrency=cfg.judge_concurrency, max_retries=cfg.judge_max_retries,
                                      backoff_s=cfg.judge_backoff_s, timeout_s=cfg.judge_timeout_s)
        return CachedJudge(self.cache, judge_id, factory, name=str(spec), chunk=max(16, 4 * cfg.judge_concurrency)
                           ), set()

    def stage_judges(self) -> None:
        arms = [a for a in self.cfg.judged if a in self.plan.arms]
        for spec in self.cfg.judge_specs:
            judge, needs = self.make_judge(spec)
            self.judge_independent[judge.name] = judge.independent
            total = sum(len(r.prompts) for r in self.runs) * len(arms)
            with self.bar(f"judge {judge.name}: {', '.join(arms)} vs {BASELINE}, both orders", total) as bar:
                for run in self.runs:
                    self.pool.retain(needs)
                    n, prompts, base = run.n, run.flat_prompts(), run.flat(BASELINE)
                    for arm in arms:
                        answers, verdicts = run.flat(arm), []
                        for a, b in _chunks(len(run.prompts), max(1, self.cfg.batch_size // n)):
                            lo, hi = a * n, b * n
                            verdicts += judge.judge(prompts[lo:hi], answers[lo:hi], base[lo:hi])
                            bar.update(b - a)
                        run.verdicts[(judge.name, arm)] = verdicts
            usage = getattr(getattr(judge, "built", None), "usage", None)
            if usage is not None:
                self.judge_usage[judge.name] = {"calls": usage.calls, "retries": usage.retries, **usage.extra}
        self.pool.retain(set())

    # ---------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg = self.cfg
        n_cells = len(self.plan.cells)
        print(f"alignpro evaluate: {len(cfg.prompter_specs)} prompter(s) x {len(cfg.target_specs)} target(s) x "
              f"{len(cfg.dataset_sources)} dataset(s) x {len(cfg.seeds)} seed(s) = {n_cells} cells; arms "
              f"{self.plan.arms}; judges {cfg.judges}; cache {cfg.cache_path}")
        for arm, why in self.plan.skipped.items():
            print(f"alignpro evaluate: skipping arm '{arm}': {why} (skip_missing_checkpoints)")
        for cell in self.plan.cells:
            records = self.plan.prompts[cell.dataset]
            self.runs.append(CellRun(cell, [r.text for r in records], [r.system for r in records],
                                     cfg.answers_per_prompt))
        try:
            if BASELINE in self.plan.arms:
                self.stage_no_ft()
            if Arm.CLOSED_FORM.value in self.plan.arms:
                self.stage_closed_form()
            if Arm.ALIGN_PRO.value in self.plan.arms:
                self.stage_align_pro()
            if Arm.ORACLE.value in self.plan.arms:
                self.stage_oracle()
            self.stage_judges()
            metrics = self.metrics(time.perf_counter() - t0)
        finally:
            self.pool.retain(set())
            self.cache.close()
        from alignpro.evaluate.report import write_outputs

        write_outputs(metrics, self.out, judgments=self.judgment_rows())
        return metrics

    # ---------------------------------------------------------------- metrics
    def metrics(self, wall: float) -> dict[str, Any]:
        cfg = self.cfg
        cells, outcomes, examples = [], {}, []
        for run in self.runs:
            c = run.cell
            arms = {}
            for arm in self.plan.arms:
                st = arm_stats(run.rewards[arm].ravel()).to_dict()
                st["mean_answer_words"] = float(np.mean([_words(y) for y in run.flat(arm)]))
                st["mean_answer_tokens"] = float(np.mean([t for row in run.tokens[arm] for t in row]))
                arms[arm] = st
            win_rates = []
            for (judge, arm), verdicts in run.verdicts.items():
                out = [v.outcome for v in verdicts]
                outcomes[(c.pair, c.dataset, c.seed, arm, judge)] = out
                wr = win_rate_from_outcomes(out, arm=arm, baseline=BASELINE, judge=judge).to_dict()
                wr.update(_judge_extras(verdicts, run.flat(arm), run.flat(BASELINE)))
                wr["judge_independent"] = self.judge_independent[judge]
                win_rates.append(wr)
            cells.append({"pair": c.pair, "prompter": c.prompter, "target": c.target, "dataset": c.dataset,
                          "seed": c.seed, "n_prompts": len(run.prompts), "arms": arms, "win_rates": win_rates,
                          "diagnostics": run.diagnostics})
            if c.seed == cfg.seeds[0]:
                examples.extend(_examples(run, cfg))
        return {
            "schema_version": SCHEMA_VERSION,
            "alignpro_version": __version__,
            "cells": cells,
            "aggregate": aggregate_cells(cells, outcomes),
            "examples": examples,
            "pairs": {f"{p}-{t}": {"prompter": ps, "target": ts, "prompter_label": p, "target_label": t}
                      for t, ts in cfg.target_specs.items() for p, ps in cfg.prompter_specs.items()},
            "datasets": dict(cfg.dataset_sources),
            "skipped_arms": self.plan.skipped,
            "usage": {
                "wall_seconds": wall,
                "cache": self.cache.stats(),
                "model_loads": {f"{role}:{spec}": n for (role, spec), n in self.pool.loads.items()},
                "judges": self.judge_usage,
            },
            "config": config_to_dict(cfg),
        }

    def judgment_rows(self) -> list[dict[str, Any]]:
        rows = []
        for run in self.runs:
            c = run.cell
            prompts = run.flat_prompts()
            for (judge, arm), verdicts in run.verdicts.items():
                a, b = run.flat(arm), run.flat(BASELINE)
                for i, v in enumerate(verdicts):
                    rows.append({"pair": c.pair, "dataset": c.dataset, "seed": c.seed, "judge": judge, "arm": arm,
                                 "baseline": BASELINE, "prompt": prompts[i], "answer_arm": a[i],
                                 "answer_baseline": b[i], "words_arm": _words(a[i]), "words_baseline": _words(b[i]),
                                 "arm_first": v.ab, "baseline_first": v.ba, "winner": v.winner})
        return rows


def _judge_extras(verdicts: list[Verdict], arm_answers: list[str], base_answers: list[str]) -> dict[str, Any]:
    """Counts beside the win rate: unusable judgments, position consistency, answer lengths (length bias)."""
    la, lb = np.array([_words(y) for y in arm_answers]), np.array([_words(y) for y in base_answers])
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


def _examples(run: CellRun, cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """A few prompts of the cell, preferring those whose rewrite differs from x (like the paper's Appendix C)."""
    rewritten = next((a for a in (Arm.ALIGN_PRO.value, Arm.CLOSED_FORM.value) if a in run.rewrites), None)
    order = list(range(len(run.prompts)))
    if rewritten:
        order.sort(key=lambda i: run.rewrites[rewritten][i] == run.prompts[i])
    out = []
    for i in order[:cfg.n_examples]:
        out.append({
            "pair": run.cell.pair, "dataset": run.cell.dataset, "seed": run.cell.seed, "prompt": run.prompts[i],
            "system": run.systems[i],
            "rewrites": {arm: xs[i] for arm, xs in run.rewrites.items()},
            "answers": {arm: ys[i][0] for arm, ys in run.answers.items()},
            "rewards": {arm: float(r[i, 0]) for arm, r in run.rewards.items()},
        })
    return out


def run_evaluation(cfg: EvaluateConfig, *, loader: Loader | None = None) -> dict[str, Any]:
    """Run the grid and write the outputs into ``cfg.out``; returns the metrics. ``loader`` builds backends
    from (role, spec) (tests pass fakes); bad configs raise ConfigError before anything is generated."""
    return Evaluation(cfg, loader).run()
