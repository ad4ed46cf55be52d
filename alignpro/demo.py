"""``alignpro demo``: no fine-tuning vs Align-Pro on the instruction-following task's eval prompts.

Arms: ``no_ft`` (π_F answers x), ``align_pro_closed_form`` (eq 10 over ρ_sft's rewrites) and its rewrites-only
variant, ``align_pro`` (the trained prompter rewrites x once; by default the LoRA adapter shipped in
``alignpro/adapters``), the closed form over the trained prompter, and ``oracle`` (π_F itself trained on the same
reward; shipped adapter too). ``--config configs/demo-helpfulness.yaml`` runs the earlier helpfulness task.

The demo is a preset of the arm runner :mod:`alignpro.arms` (the one `alignpro evaluate` runs; its docstring
states the method: fresh answers, common random numbers, system prompts, one seed scheme) on plain backends, with
a report of its own: paired gains, the fraction of the no_ft → oracle gap closed, instructions followed per type,
a guard reward, and the selection-biased R̂ of the chosen x′ shown apart, labelled as such.

Stages: (1) π_F answers each original x (arm ``no_ft``); (2) ρ_sft samples K rewrites per x, π_F answers each
candidate M times and the reward scores them against x, giving R̂(x, x′); (3) ρ* (eq 10) is formed from R̂ and a
rewrite is sampled from it; (4) the chosen x′ is answered AFRESH and those answers are scored; (5) the trained
arms, when set.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from alignpro.arms import (BASELINE_FORMS, Arm, ArmRun, ClosedFormConfig, answer_arm, answer_baselines, answer_oracle,
                           parse_baseline, propose_closed_form, rewrite_once)
from alignpro.backends.base import AnswerSettings
from alignpro.config import config_to_dict, load_yaml, parse_config, setting
from alignpro.errors import ConfigError
from alignpro.metrics import arm_stats, keeps_original_fraction, paired_gain, reward_win_rate

#: ``trained_prompter``/``oracle`` value meaning the adapter shipped with alignpro (reproduced by the recipe named)
SHIPPED = "shipped"
ADAPTERS = Path(__file__).resolve().parent / "adapters"
SHIPPED_ADAPTERS = {"trained_prompter": ("ifeval-prompter", "configs/train-prompter-distill-ifeval.yaml"),
                    "oracle": ("ifeval-oracle", "configs/train-oracle-distill-ifeval.yaml")}


@dataclass
class DemoConfig(AnswerSettings, ClosedFormConfig):
    """Settings of `alignpro demo` (every flag is also a YAML key)."""

    quick: bool = setting(False, "a ~2-minute run: 8 prompts, K=2, M=1, 2 fresh answers, ≤40-token answers, no "
                                 "closed form over the trained prompter")
    out: str = setting("runs/demo", "output folder for metrics.json and report.md")
    seed: int = setting(0, "random seed for every sampling stage")
    prompter: str = setting("smollm2", "prompter ρ_sft model spec: smollm2 | hf:<id or path> | fake")
    target: str = setting("smollm2", "frozen target π_F model spec: smollm2 | hf:<id or path> | fake")
    reward: str = setting("ifeval", "reward spec: ifeval | builtin | hf:<id or path> | python:<module>:<fn> | fake "
                                    "| a mix such as ifeval+builtin")
    template: str = setting("rewrite-restate", "rewrite template: builtin name or YAML file")
    prompts: str = setting("builtin-ifeval:eval", "prompt source: builtin-ifeval:eval | builtin:eval | file.jsonl | "
                                                  "file.csv | hf:<id> | ...")
    field: str = setting("", "prompt field of a .jsonl/.csv file or dataset ('' = the source's default)")
    skip_bad: bool = setting(False, "skip and count bad prompt rows instead of stopping at the first one")
    max_prompt_tokens: int = setting(1024, "prompts longer than this (target tokenizer) are bad rows")
    n_prompts: int = setting(24, "a seeded sample of N prompts, kept in source order (0 = all; --quick takes at most 8)")
    n_fresh: int = setting(4, "fresh answers per prompt used to score each arm (the s.e. falls as 1/√n_fresh)")
    trained_prompter: str = setting(SHIPPED, "a trained prompter spec (e.g. hf:runs/distill-ifeval/final-adapter): "
                                             "adds the arm 'align_pro' (one rewrite per prompt, fresh answers of "
                                             "π_F); 'shipped' = the LoRA adapter in alignpro/adapters/"
                                             "ifeval-prompter; '' = no such arm")
    oracle: str = setting(SHIPPED, "an RLHF-trained target spec (e.g. hf:runs/oracle-ifeval/final-adapter): adds the "
                                   "arm 'oracle'; 'shipped' = the adapter in alignpro/adapters/ifeval-oracle; '' = none")
    train: bool = setting(False, "train the align_pro prompter and the oracle now, from the two recipes below, into "
                                 "OUT/train-prompter and OUT/train-oracle; then evaluate both")
    train_prompter_config: str = setting("configs/train-prompter-distill-ifeval.yaml",
                                         "--train: the prompter's recipe (YAML); its own 'prompter' (ρ_sft, e.g. "
                                         "the shipped SFT prompter) is kept, else the demo's 'prompter'")
    train_oracle_config: str = setting("configs/train-oracle-distill-ifeval.yaml", "--train: the oracle's recipe (YAML)")
    train_steps: int = setting(0, "--train: override the recipes' steps (0 = the recipes' own)")
    closed_form_over_trained: bool = setting(True, "with a trained prompter: also the closed form (eq 10) with the "
                                                   "trained prompter as its proposal (arm "
                                                   "'align_pro_closed_form_trained', same K, M, λ, α)")
    baselines: list[str] = setting(["suffix", "repeat", "answer_rewrite"], "no-learning baseline arms, any of "
                                   + " | ".join(BASELINE_FORMS) + " (best_suffix reads the line recorded by "
                                   "`python -m alignpro.baselines.choose`); [] = none")
    guard_reward: str = setting("builtin", "also score every arm's answers with this reward (are they still on "
                                           "topic?) and report it per arm; '' = off, skipped when it is the reward")
    tie_margin: float = setting(0.01, "reward judge: |Δr| at or below this is a tie")
    batch_size: int = setting(128, "generation batch size")
    n_examples: int = setting(6, "examples shown in report.md")

    def __post_init__(self) -> None:
        if self.quick:
            self.n_prompts = min(self.n_prompts or 8, 8)  # at most 8 prompts (the default sample is 24)
            self.k, self.m, self.n_fresh = min(self.k, 2), 1, min(self.n_fresh, 2)
            self.closed_form_over_trained = False
            self.answer_max_new_tokens = min(self.answer_max_new_tokens, 40)
        for name in ("k", "m", "n_fresh", "batch_size", "answer_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"setting '{name}' must be >= 1, got {getattr(self, name)}")
        if self.n_prompts < 0:
            raise ConfigError(f"setting 'n_prompts' must be >= 0 (0 = all), got {self.n_prompts}")
        self.closed_form_settings(), [parse_baseline(b) for b in self.baselines]  # ConfigError on a bad setting
        from alignpro.specs import check_reward_spec, parse_model_spec

        parse_model_spec(self.prompter), parse_model_spec(self.target), check_reward_spec(self.reward)
        if self.guard_reward:
            check_reward_spec(self.guard_reward)
        for name in ("trained_prompter", "oracle"):
            if getattr(self, name) == SHIPPED:  # --train replaces the shipped adapters with models trained now
                folder = ADAPTERS / SHIPPED_ADAPTERS[name][0]
                if not self.train and not (folder / "adapter_config.json").is_file():
                    raise ConfigError(f"setting '{name}': the shipped adapter is missing ({folder}); reinstall "
                                      f"alignpro, retrain it with `alignpro train --config {SHIPPED_ADAPTERS[name][1]}`, "
                                      "or set it to '' (no such arm) or to a model spec")
                setattr(self, name, "" if self.train else f"hf:{folder}")
            if getattr(self, name):
                parse_model_spec(getattr(self, name))
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


def _bar(desc: str, total: int):
    return tqdm(total=total, desc=desc, unit="prompt")


def run_demo(cfg: DemoConfig, *, prompter=None, target=None, reward=None) -> dict[str, Any]:
    """Run the demo and write ``metrics.json`` and ``report.md`` into ``cfg.out``; returns the metrics."""
    from alignpro.data import load_prompts
    from alignpro.specs import make_prompter, make_reward, make_target

    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    target = target or make_target(cfg.target, cfg.answer_gen, batch_size=cfg.batch_size)
    tokenizer = getattr(getattr(target, "lm", None), "tokenizer", None)
    count_tokens = (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])) if tokenizer else None
    loaded = load_prompts(cfg.prompts, field=cfg.field or None, skip_bad=cfg.skip_bad, n=cfg.n_prompts or None,
                          seed=cfg.seed, max_tokens=cfg.max_prompt_tokens if count_tokens else None,
                          count_tokens=count_tokens)
    records = loaded.records
    prompts = [r.text for r in records]
    print(f"alignpro demo: {len(prompts)} prompts from {cfg.prompts} ({loaded.skipped} bad rows skipped); "
          f"K={cfg.k}, M={cfg.m}, λ={cfg.lam}, α={cfg.identity_prior}; writing {out}")
    prompter = prompter or make_prompter(cfg.prompter, cfg.template, batch_size=cfg.batch_size)
    reward = reward or make_reward(cfg.reward, records)
    run = ArmRun(prompts, [r.system for r in records], n=cfg.n_fresh, seed=cfg.seed, batch_size=cfg.batch_size)
    settings = cfg.closed_form_settings()
    n = len(prompts)

    # ---- (1) no fine-tuning: π_F answers x --------------------------------------------------------------
    with _bar("no_ft answers", n) as bar:
        answer_arm(run, Arm.NO_FT, target, reward, prompts, bar.update)

    # ---- (2)+(3) the composed system (eq 3): K rewrites, M answers each, R̂(x, x′); ρ* (eq 10), x′ drawn -----
    with _bar("rewrites + R̂", n) as bar:
        propose_closed_form(run, Arm.CLOSED_FORM, prompter, target, reward, settings, bar.update)

    # ---- (4) fresh answers to the chosen x′, scored against the ORIGINAL x (common random numbers) ---------
    for arm in (Arm.CLOSED_FORM, Arm.CLOSED_FORM_REWRITES_ONLY):
        if arm.value in run.closed_forms:
            with _bar(f"{arm.value} answers", n) as bar:
                answer_arm(run, arm, target, reward, run.closed_forms[arm.value].chosen, bar.update)

    # ---- (5) optional trained arms: the PPO prompter (eq 9) + π_F, and the RLHF oracle (eq 2) alone ------------
    trained_arms = {}
    if cfg.train:
        trained_arms = train_now(cfg, out)
        cfg.trained_prompter, cfg.oracle = (trained_arms[Arm.ALIGN_PRO.value]["spec"],
                                            trained_arms[Arm.ORACLE.value]["spec"])
    else:
        trained_arms = {arm.value: {"source": "loaded", "spec": spec, **_trained_info(spec)} for arm, spec in
                        ((Arm.ALIGN_PRO, cfg.trained_prompter), (Arm.ORACLE, cfg.oracle)) if spec}
    if cfg.trained_prompter:
        trained = make_prompter(cfg.trained_prompter, cfg.template, batch_size=cfg.batch_size)
        with _bar("align_pro rewrites + answers", 2 * n) as bar:
            answer_arm(run, Arm.ALIGN_PRO, target, reward, rewrite_once(run, trained, bar.update), bar.update)
        if cfg.closed_form_over_trained:  # eq (10) with the trained ρ as the proposal (and its prior)
            with _bar("trained rewrites + R̂", n) as bar:
                propose_closed_form(run, Arm.CLOSED_FORM_TRAINED, trained, target, reward, settings, bar.update)
            with _bar(f"{Arm.CLOSED_FORM_TRAINED.value} answers", n) as bar:
                answer_arm(run, Arm.CLOSED_FORM_TRAINED, target, reward,
                           run.closed_forms[Arm.CLOSED_FORM_TRAINED.value].chosen, bar.update)
    if cfg.oracle:
        oracle = make_target(cfg.oracle, cfg.answer_gen, batch_size=cfg.batch_size)
        with _bar("oracle answers", n) as bar:
            answer_oracle(run, oracle, reward, bar.update)
    answer_baselines(run, cfg.baselines, target, reward, lambda arm: _bar(f"{arm} answers", n))  # ---- (6) ----

    # ---- metrics ----------------------------------------------------------------------------------------
    no_ft, cf, align_pro, oracle_arm = Arm.NO_FT.value, Arm.CLOSED_FORM.value, Arm.ALIGN_PRO.value, Arm.ORACLE.value
    arm_rewards, arm_texts, chosen = run.rewards, run.answers, run.rewrites
    base_r, base_texts = arm_rewards[no_ft], arm_texts[no_ft]
    rho = run.closed_forms[cf]
    arms = {a: arm_stats(r.ravel()).to_dict() for a, r in arm_rewards.items()}
    breakdown = instruction_breakdown(reward, prompts, arm_texts)
    compared = [a for a in arm_rewards if a != no_ft]
    win_rates = [reward_win_rate(arm_rewards[a].ravel(), base_r.ravel(), arm=a, baseline=no_ft,
                                 tie_margin=cfg.tie_margin).to_dict() for a in compared]
    gap = {}
    if oracle_arm in arms:  # the fraction of the no_ft → oracle gap an arm closes
        span = arms[oracle_arm]["mean"] - arms[no_ft]["mean"]
        gap = {a: (arms[a]["mean"] - arms[no_ft]["mean"]) / span if span else None
               for a in compared if a != oracle_arm}
    # per-prompt paired difference (same prompts; common fresh answers where two arms show π_F the same x′)
    paired = {a: paired_gain(arm_rewards[a], base_r) for a in compared}
    examples = []
    for i in range(len(prompts)):
        examples.append({
            "prompt": prompts[i], "rewrite": chosen[cf][i],
            **({"rewrite_align_pro": chosen[align_pro][i], "answer_trained": arm_texts[align_pro][i][0],
                "reward_trained": float(arm_rewards[align_pro][i, 0])} if align_pro in chosen else {}),
            **({"followed_no_ft": breakdown["answers"][no_ft][i],
                **({"followed_align_pro": breakdown["answers"][align_pro][i]} if align_pro in chosen else {})}
               if breakdown else {}),
            "kept_original": chosen[cf][i] == prompts[i],
            "candidates": rho.candidates[i], "r_hat": [round(v, 4) for v in rho.r_hat[i].tolist()],
            "answer_no_ft": base_texts[i][0], "reward_no_ft": float(base_r[i, 0]),
            "answer_align_pro": arm_texts[cf][i][0],
            "reward_align_pro": float(arm_rewards[cf][i, 0]),
        })
    guard = {}
    if cfg.guard_reward and cfg.guard_reward.strip() != cfg.reward.strip():
        guard_model = make_reward(cfg.guard_reward, records)
        guard_r = {a: np.asarray(guard_model.score([x for x in prompts for _ in range(len(t[0]))],
                                                   [y for row in t for y in row]), dtype=float).reshape(len(prompts), -1)
                   for a, t in arm_texts.items()}
        guard = {"reward": cfg.guard_reward,
                 "arms": {a: arm_stats(r.ravel()).to_dict() for a, r in guard_r.items()},
                 "paired_vs_no_ft": {a: paired_gain(guard_r[a], guard_r[no_ft]) for a in guard_r if a != no_ft}}
    kept = {a: keeps_original_fraction(prompts, shown) for a, shown in chosen.items()}
    metrics = {
        "arms": arms,
        "instruction_following": breakdown,
        "guard": guard,
        "win_rates": win_rates,
        "examples": examples,
        "diagnostics": {
            "selection_biased_r_hat_of_chosen": rho.selection_biased_r_hat,
            "selection_biased_note": "mean R̂ of the chosen candidates on the answers that selected them; "
                                     "biased upward (best-of-K), NOT a result",
            "paired_gain_vs_no_ft": paired,
            "gap_closed_fraction": gap,
            "paired_gain_note": "mean over prompts of (arm − no_ft) per-prompt mean reward, ± its standard error; "
                                "arms that show π_F the same x′ for a prompt share its fresh answers",
            "kl_rho_star_to_rho_sft": {a: c.kl for a, c in run.closed_forms.items()},
            "rewrites_parsed_fraction": rho.rewrites_parsed_fraction,
            "rewrite_keeps_original_fraction": kept,
            "chose_original_fraction": rho.chose_original_fraction,
            "trained_arms": trained_arms,
            "wall_seconds": time.perf_counter() - t_start,
            "prompts_skipped": loaded.skipped,
            "prompts_skipped_reasons": loaded.skipped_reasons,
        },
        "config": config_to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(render_report(metrics, cfg))
    print(render_table(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'} in {metrics['diagnostics']['wall_seconds']:.0f} s")
    return metrics


def _trained_info(spec: str) -> dict[str, Any]:
    """What ``alignpro train`` recorded about a loaded ``hf:`` checkpoint or adapter (algo, steps, final KL)."""
    from alignpro.train.policy import TRAIN_INFO

    path = Path(spec[3:]) if spec.startswith("hf:") else None
    if path is None or not (path / TRAIN_INFO).is_file():
        return {}
    info = json.loads((path / TRAIN_INFO).read_text())
    return {k: info[k] for k in ("algo", "steps", "final_kl", "reward", "prompts") if k in info}


def _ifeval_part(reward):
    """The ``ifeval`` reward inside ``reward`` (itself, or a term of a mix), or None."""
    from alignpro.rewards.ifeval import IFEvalReward

    if isinstance(reward, IFEvalReward):
        return reward
    return next((r for _, r in getattr(reward, "terms", []) if isinstance(r, IFEvalReward)), None)


def instruction_breakdown(reward, prompts: list[str], arm_texts: dict[str, list[list[str]]]) -> dict[str, Any]:
    """When the reward checks IFEval instructions: per arm, the fraction of instructions followed (per answer and
    paired by prompt against no_ft) and the rate per instruction type; ``answers`` keeps each prompt's first
    answer's verdicts for the examples. Empty when the reward has no instruction part."""
    from alignpro.rewards.ifeval import fraction_followed

    ifeval = _ifeval_part(reward)
    if ifeval is None:
        return {}
    per_type: dict[str, dict[str, dict[str, float]]] = {}
    overall, answers = {}, {}
    for arm, texts in arm_texts.items():
        verdicts = [[ifeval.results([x], [y])[0] for y in row] for x, row in zip(prompts, texts)]  # (N, n)
        overall[arm] = np.array([[fraction_followed(v) for v in row] for row in verdicts])  # (N, n)
        counts: dict[str, list[int]] = {}
        for row in verdicts:
            for v in (r for ans in row for r in ans):
                c = counts.setdefault(v.id, [0, 0])
                c[0] += v.followed
                c[1] += 1
        per_type[arm] = {t: {"followed": f, "n": n, "rate": f / n} for t, (f, n) in sorted(counts.items())}
        answers[arm] = [[[r.id, r.followed] for r in row[0]] for row in verdicts]
    return {"followed": {a: arm_stats(v.ravel()).to_dict() for a, v in overall.items()},
            "paired_vs_no_ft": {a: paired_gain(v, overall[Arm.NO_FT.value])
                                for a, v in overall.items() if a != Arm.NO_FT.value},
            "per_type": per_type, "answers": answers}


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


def render_table(metrics: dict[str, Any]) -> str:
    lines = ["| arm | mean reward ± s.e. | variance | n |", "|---|---|---|---|"]
    for arm, s in metrics["arms"].items():
        lines.append(f"| {arm} | {s['mean']:.4f} ± {s['stderr']:.4f} | {s['variance']:.4f} | {s['n']} |")
    lines += ["", "| arm vs baseline | judge | wins / ties / losses | win rate ± s.e. |", "|---|---|---|---|"]
    for w in metrics["win_rates"]:
        lines.append(f"| {w['arm']} vs {w['baseline']} | {w['judge']} | {w['wins']} / {w['ties']} / {w['losses']} "
                     f"| {w['win_rate']:.3f} ± {w['stderr']:.3f} |")
    return "\n".join(lines)


def render_report(metrics: dict[str, Any], cfg: DemoConfig) -> str:
    d = metrics["diagnostics"]
    base, ap = metrics["arms"][Arm.NO_FT.value], metrics["arms"][Arm.CLOSED_FORM.value]
    diff = ap["mean"] - base["mean"]
    se = math.sqrt(ap["stderr"] ** 2 + base["stderr"] ** 2)
    parts = [
        "# alignpro demo", "",
        f"Prompts: {cfg.prompts} ({len(metrics['examples'])}); prompter `{cfg.prompter}`, target `{cfg.target}`, "
        f"reward `{cfg.reward}`; K={cfg.k}, M={cfg.m}, λ={cfg.lam}, identity prior α={cfg.identity_prior}; "
        f"answers: temperature {cfg.temperature}, top_p {cfg.top_p}, top_k {cfg.top_k}, "
        f"≤{cfg.answer_max_new_tokens} tokens; {cfg.n_fresh} fresh answers per prompt per arm; seed {cfg.seed}.", "",
        render_table(metrics), "",
        f"Align-Pro (closed form) − no_ft: {diff:+.4f} (= {diff / se if se else float('nan'):+.2f} standard errors, "
        "unpaired).", "",
        "Paired by prompt (mean per-prompt difference ± s.e. over prompts): " + "; ".join(
            f"{a} {v['mean']:+.4f} ± {v['stderr']:.4f} ({v['mean'] / v['stderr'] if v['stderr'] else float('nan'):+.2f} s.e.)"
            for a, v in d["paired_gain_vs_no_ft"].items()) + ".", "",
        *([f"Fraction of the no_ft → oracle gap closed: " + ", ".join(
            f"{a} {v:+.2f}" if v is not None else f"{a} undefined (oracle = no_ft)"
            for a, v in d["gap_closed_fraction"].items()) + ".", ""]
          if d.get("gap_closed_fraction") else []),
        *([f"Trained arms: " + "; ".join(
            f"{a} = `{v['spec']}`, {v['source']}" + (f" from {v['recipe']}, {v['steps']} steps in "
                                                     f"{v['train_seconds'] / 60:.1f} min, last KL {v['final_kl']:.2f}"
                                                     if v["source"] != "loaded" and v.get("final_kl") is not None
                                                     else f" ({v.get('algo')}, {v.get('steps')} steps, KL to its "
                                                          f"reference {v['final_kl']:.2f} nats at the end of training)"
                                                     if v.get("final_kl") is not None else "")
            for a, v in d["trained_arms"].items()) + ".", ""] if d.get("trained_arms") else []),
        *render_instruction_section(metrics),
        "The win rates are judged by the reward itself (not independent of the optimisation target).", "",
        f"Selection-biased figure (NOT a result): mean R̂ of the chosen candidates on the very answers that chose "
        f"them = {d['selection_biased_r_hat_of_chosen']:.4f}. The table uses fresh answers instead.", "",
        f"KL(ρ* ‖ ρ_sft) on the candidates: " + ", ".join(f"{a} {v:.3f}" for a, v in d["kl_rho_star_to_rho_sft"].items())
        + f"; rewrites parsed: {d['rewrites_parsed_fraction']:.0%}; ρ* kept the original prompt for "
        f"{d['chose_original_fraction']:.0%} of prompts. Wall time {d['wall_seconds']:.0f} s.", "",
        "## Examples (like the paper's Appendix C)", "",
    ]
    exs = sorted(metrics["examples"], key=lambda e: e["kept_original"])[:cfg.n_examples]
    def verdicts(e: dict, arm: str) -> str:
        v = e.get(f"followed_{arm}")
        return (" — " + ", ".join(f"{t} {'✓' if ok else '✗'}" for t, ok in v)) if v else ""

    for e in exs:
        parts += [f"**Original prompt:** {e['prompt']}", "",
                  f"**Rewrite (ρ*):** {e['rewrite']}" + (" *(kept the original)*" if e["kept_original"] else ""), "",
                  f"**Answer to the rewrite** (reward {e['reward_align_pro']:.3f}): {e['answer_align_pro']}", ""]
        if "rewrite_align_pro" in e:
            parts += [f"**Rewrite (trained prompter, align_pro):** {e['rewrite_align_pro']}", "",
                      f"**Answer to it** (reward {e['reward_trained']:.3f}{verdicts(e, 'align_pro')}): "
                      f"{e['answer_trained']}", ""]
        parts += [f"**Answer to the original** (no_ft, reward {e['reward_no_ft']:.3f}{verdicts(e, 'no_ft')}): "
                  f"{e['answer_no_ft']}", "", "---", ""]
    return "\n".join(parts)


def render_instruction_section(metrics: dict[str, Any]) -> list[str]:
    """Instructions followed per arm and per type, and the guard reward per arm (markdown lines)."""
    lines: list[str] = []
    b = metrics.get("instruction_following") or {}
    if b:
        arms = list(b["followed"])
        lines += ["## Instructions followed (IFEval's checkers, loose mode)", "",
                  "| arm | followed ± s.e. | paired vs no_ft ± s.e. (by prompt) | n answers |", "|---|---|---|---|"]
        for a in arms:
            f, p = b["followed"][a], b["paired_vs_no_ft"].get(a)
            lines.append(f"| {a} | {f['mean']:.3f} ± {f['stderr']:.3f} | "
                         + (f"{p['mean']:+.3f} ± {p['stderr']:.3f} ({p['mean'] / p['stderr'] if p['stderr'] else float('nan'):+.1f} s.e., {p['n']} prompts)"
                            if p else "—") + f" | {f['n']} |")
        types = sorted({t for a in arms for t in b["per_type"][a]})
        lines += ["", "| instruction type | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for t in types:
            cells = [(lambda c: f"{c['rate']:.2f} ({c['n']})" if c else "—")(b["per_type"][a].get(t)) for a in arms]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
    g = metrics.get("guard") or {}
    if g:
        lines += [f"Guard reward `{g['reward']}` (are the answers still on topic?): " + "; ".join(
            f"{a} {v['mean']:.4f} ± {v['stderr']:.4f}" + (
                f" (paired vs no_ft {g['paired_vs_no_ft'][a]['mean']:+.4f} ± {g['paired_vs_no_ft'][a]['stderr']:.4f})"
                if a in g["paired_vs_no_ft"] else "") for a, v in g["arms"].items()) + ".", ""]
    keep = metrics["diagnostics"].get("rewrite_keeps_original_fraction") or {}
    if keep:
        lines += ["Rewrites that keep the original prompt verbatim (so its instructions are still there): "
                  + ", ".join(f"{a} {v:.0%}" for a, v in keep.items()) + ".", ""]
    return lines


def main(argv: list[str]) -> int:
    cfg = parse_config(DemoConfig, argv, prog="alignpro demo")
    run_demo(cfg)
    return 0
