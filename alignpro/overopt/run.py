"""``alignpro overopt``: does a prompter exploit a learned reward less than RLHF does? (Gao et al. 2023's study, with
a gold reward nobody here wrote.)

Stages, each written into the run folder and skipped (or resumed) when the study is continued with ``--resume RUN``
(``RUN/config.yaml`` holds its settings; only those marked resumable may change):

    1. pairs      RUN/pairs-train.jsonl   gold-labelled pairs of π_F's answers          (:mod:`.stages`)
    2. proxies    RUN/rm-<N>/             a Bradley–Terry proxy (eq 1) per N             (:mod:`.stages`)
    3. training   RUN/prompter-<N>/       ρ trained on proxy N (eq 9)                     (:mod:`.stages`)
                  RUN/oracle-<N>/         π_F trained on proxy N (eq 2)
    4. measure    RUN/measure/            on the EVAL prompts: the closed form's pool (K rewrites + x, M answers
                                          that choose, n_fresh answers that are measured), and n_fresh answers of
                                          every measured checkpoint, each scored by the gold and by every proxy
                                          (:mod:`.measure`)
    5. report     RUN/overopt.{json,md,png}                                              (:mod:`.report`)

The KL of a point is that of the optimised policy to its start: KL(ρ*_λ ‖ ρ_sft) on the candidates (closed form),
KL(ρ_θ ‖ ρ_sft) over rewrites (prompter), KL(π_θ ‖ π_F) over answers (oracle), in nats per prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignpro.config import (CONFIG_FILE, build_config, check_resume, config_to_dict, load_yaml, parse_config,
                             write_run_config)
from alignpro.data import load_prompts
from alignpro.errors import ConfigError
from alignpro.overopt.config import OveroptConfig
from alignpro.overopt.curves import CurvePoint, stderr, summarise_curve
from alignpro.overopt.measure import (GOLD, Scorers, checkpoint_points, measure_checkpoint, measure_pool,
                                      per_prompt, pool_points)
from alignpro.overopt.report import METHODS, OveroptResult, write_report
from alignpro.overopt.stages import (ROLES, proxy_dir, reached_step, stage_pairs, stage_proxies, stage_train,
                                     train_values)


def open_study(cfg: OveroptConfig, run: Path) -> None:
    """Write ``RUN/config.yaml`` for a new study, or check a resumed one's settings against it (a study written
    before it was YAML kept them as JSON, which YAML reads): a folder already there is continued only with
    ``--resume``."""
    saved = run / CONFIG_FILE
    if cfg.resume:
        if not saved.is_file():
            raise ConfigError(f"setting 'resume': '{run}' is not an overopt study folder (no {CONFIG_FILE}); start "
                              f"a new study with --out {run}")
        check_resume(load_yaml(saved), config_to_dict(cfg), OveroptConfig, saved)
    elif run.exists() and any(run.iterdir()):
        raise ConfigError(f"'{run}' already holds a study (or other files); pass --resume {run} to continue it, "
                          "or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    write_run_config(cfg, saved)


def run_overopt(cfg: OveroptConfig, *, target: Any = None, prompter: Any = None) -> OveroptResult:
    """All stages of ``cfg`` (skipping what is done); ``target``/``prompter`` override the specs (tests)."""
    import torch

    from alignpro.specs import make_prompter, make_reward, make_target
    from alignpro.train.config import TrainConfig

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run = Path(cfg.out)
    open_study(cfg, run)
    pairs = stage_pairs(cfg)
    rm_records = stage_proxies(cfg, pairs)
    runs = {(role, n): stage_train(cfg, role, n) for n in cfg.n_pairs for role in ROLES}

    # ---- stage 4
    records = load_prompts(cfg.eval_prompts, n=cfg.n_eval_prompts or None, seed=cfg.seed).records
    labels = {n: f"N={rm_records[n]['data']['train_pairs']}" for n in cfg.n_pairs}
    scorers = Scorers({GOLD: make_reward(cfg.gold, records),
                       **{labels[n]: make_reward(f"rm:{proxy_dir(cfg, n)}", records) for n in cfg.n_pairs}})
    target = target or make_target(cfg.target, cfg.answer_gen, batch_size=cfg.batch_size)
    recipe = build_config(TrainConfig, train_values(cfg, "prompter", cfg.n_pairs[0]))
    prompter = prompter or make_prompter(cfg.prompter, recipe.template, recipe.rollout_gen, batch_size=cfg.batch_size)
    print(f"alignpro overopt: stage 4: measuring on {len(records)} prompts of {cfg.eval_prompts}", flush=True)
    pool = measure_pool(cfg, records, target, prompter, scorers)
    measured: dict[tuple[str, int], list[dict[str, Any]]] = {}
    reached = {key: reached_step(path) for key, path in runs.items()}
    for role in ROLES:
        first = runs[(role, cfg.n_pairs[0])]
        start = measure_checkpoint(cfg, role, first, 0, records, target, scorers, f"{role}-start")
        for n in cfg.n_pairs:
            measured[(role, n)] = [start] + [
                measure_checkpoint(cfg, role, runs[(role, n)], s, records, target, scorers, f"{role}-{n}-step-{s}")
                for s in cfg.steps_measured_up_to(reached[(role, n)]) if s > 0]

    # ---- stage 5
    points: list[CurvePoint] = []
    summaries = []
    for n in cfg.n_pairs:
        label = labels[n]
        curves = {"closed_form": pool_points(cfg, label, pool),
                  "prompter": checkpoint_points("prompter", label, measured[("prompter", n)]),
                  "oracle": checkpoint_points("oracle", label, measured[("oracle", n)])}
        for method in METHODS:
            points.extend(curves[method])
            summaries.append(summarise_curve(curves[method]).to_dict())
    start = measured[("oracle", cfg.n_pairs[0])][0]
    no_ft_gold = per_prompt(start["scores"][GOLD], len(records))
    no_ft = {"gold": float(no_ft_gold.mean()), "gold_stderr": stderr(no_ft_gold)}
    proxies = {labels[n]: {"n_pairs_setting": n, "train_pairs": rm_records[n]["data"]["train_pairs"],
                           "heldout": rm_records[n]["heldout"], "folder": str(proxy_dir(cfg, n))}
               for n in cfg.n_pairs}
    stopped = {f"{role}-{n}": steps for (role, n), steps in reached.items() if steps < cfg.train_steps}
    result = OveroptResult(run, points, summaries, proxies, no_ft, stopped)
    write_report(cfg, result)
    return result


def main(argv: list[str]) -> int:
    run_overopt(parse_config(OveroptConfig, argv, "alignpro overopt"))
    return 0
