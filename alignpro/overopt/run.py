"""``alignpro overopt``: does a prompter exploit a learned reward less than RLHF does? (Gao et al. 2023's study, with
a gold reward nobody here wrote.)

Stages, each written into the run folder and skipped (or resumed) when the command is run again:

    1. pairs      RUN/pairs-train.jsonl   π_F answers each train prompt n times, the gold reward labels every
                                          untied pair (``alignpro reward label``)
    2. proxies    RUN/rm-<N>/             a Bradley–Terry reward model (eq 1) on N of those pairs, one per N
                                          (``alignpro reward train``; loads as rm:RUN/rm-<N>)
    3. training   RUN/prompter-<N>/       ρ trained on proxy N (eq 9; the prompter recipe), every checkpoint kept
                  RUN/oracle-<N>/         π_F trained on proxy N (eq 2; the oracle recipe), every checkpoint kept
    4. measure    RUN/measure/            on the EVAL prompts: the closed form's pool (K rewrites + x, M answers
                                          that choose, n_fresh answers that are measured), and n_fresh answers of
                                          every measured checkpoint, each scored by the gold and by every proxy
    5. report     RUN/overopt.{json,md,png}

The KL of a point is that of the optimised policy to its start: KL(ρ*_λ ‖ ρ_sft) on the candidates (closed form),
KL(ρ_θ ‖ ρ_sft) over rewrites (prompter), KL(π_θ ‖ π_F) over answers (oracle), in nats per prompt.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alignpro.config import build_config, config_to_dict, load_yaml, parse_config
from alignpro.data import PromptRecord, load_prompts
from alignpro.errors import AlignProError
from alignpro.fileio import atomic_write_text
from alignpro.method import candidate_log_prior
from alignpro.overopt.config import OveroptConfig
from alignpro.overopt.curves import CurvePoint, closed_form_curve, make_point, stderr, summarise_curve

PAIRS = "pairs-train.jsonl"
MEASURE = "measure"
POOL = "closed-form-pool.json"
GOLD = "gold"  #: the gold reward's key among the scores
METHODS = ("closed_form", "prompter", "oracle")
_POOL_SEED, _CHECKPOINT_SEED, _ANSWER_SEED = 1_000, 2_000, 3_000


# ---------------------------------------------------------------------------------------------------------------
# Stages 1-3: pairs, proxies, training runs (each an existing command's function, skipped when complete)
# ---------------------------------------------------------------------------------------------------------------


def _check_same(saved: dict[str, Any], wanted: dict[str, Any], ignore: Sequence[str], where: Path) -> None:
    changed = sorted(k for k, v in wanted.items() if k not in ignore and saved.get(k) != v)
    if changed:
        raise AlignProError(f"{where} was made with other settings ({changed} differ from this config's); use "
                            "another --out, or delete that folder to redo the stage")


def stage_pairs(cfg: OveroptConfig) -> Path:
    """Stage 1: the gold-labelled pairs of the train prompts."""
    from alignpro.reward_model.config import RewardLabelConfig
    from alignpro.reward_model.label import RESUMABLE_CHANGES, label_pairs, progress_path

    out = Path(cfg.out) / PAIRS
    label = build_config(RewardLabelConfig, dict(
        prompts=cfg.train_prompts, n_prompts=cfg.n_label_prompts, target=cfg.target, gold=cfg.gold, out=str(out),
        seed=cfg.seed,
        answers_per_prompt=cfg.answers_per_prompt, max_new_tokens=cfg.label_max_new_tokens,
        batch_size=cfg.label_batch_size, progress=cfg.progress))
    record = progress_path(out)
    if record.is_file():
        saved = json.loads(record.read_text())
        _check_same(saved["config"], config_to_dict(label), RESUMABLE_CHANGES, record)
        if saved.get("complete"):
            print(f"alignpro overopt: stage 1 done: {saved['counts']['pairs']} pairs in {out}", flush=True)
            return out
        label.resume = True
    label_pairs(label)
    return out


def proxy_dir(cfg: OveroptConfig, n: int) -> Path:
    return Path(cfg.out) / f"rm-{n}"


def stage_proxies(cfg: OveroptConfig, pairs: Path) -> dict[int, dict[str, Any]]:
    """Stage 2: one Bradley–Terry proxy per N; returns N -> its reward_model.json record."""
    from alignpro.reward_model.config import RESUMABLE_CHANGES, RewardTrainConfig
    from alignpro.reward_model.train import CONFIG, RECORD, train_reward_model

    records = {}
    for n in cfg.n_pairs:
        run = proxy_dir(cfg, n)
        values = dict(pairs=str(pairs), n_train=n, base=cfg.rm_base, epochs=cfg.rm_epochs, lr=cfg.rm_lr,
                      batch_size=cfg.rm_batch_size, out=str(run), seed=cfg.seed, progress=cfg.progress,
                      num_threads=cfg.num_threads)
        if (run / CONFIG).is_file():
            _check_same(load_yaml(run / CONFIG), config_to_dict(build_config(RewardTrainConfig, values)),
                        RESUMABLE_CHANGES, run / CONFIG)
            if not (run / RECORD).is_file():
                values["resume"] = str(run)
        if not (run / RECORD).is_file():
            train_reward_model(build_config(RewardTrainConfig, values))
        records[n] = json.loads((run / RECORD).read_text())
        print(f"alignpro overopt: stage 2: proxy rm:{run} on {records[n]['data']['train_pairs']} pairs",
              flush=True)
    return records


def train_dir(cfg: OveroptConfig, role: str, n: int) -> Path:
    return Path(cfg.out) / f"{role}-{n}"


def train_values(cfg: OveroptConfig, role: str, n: int) -> dict[str, Any]:
    """The recipe of ``role`` with what the study sets: the proxy, the prompts, the steps, every checkpoint kept,
    and the study's sampling of π_F (prompter: its answers; oracle: its own rollouts)."""
    recipe = cfg.prompter_recipe if role == "prompter" else cfg.oracle_recipe
    values = {**load_yaml(recipe), "reward": f"rm:{proxy_dir(cfg, n)}", "prompts": cfg.train_prompts,
              "steps": cfg.train_steps, "save_every": cfg.checkpoint_every, "keep_checkpoints": cfg.train_steps,
              "out": str(train_dir(cfg, role, n)), "seed": cfg.seed, "target": cfg.target, "progress": cfg.progress,
              "num_threads": cfg.num_threads, "time_limit_minutes": cfg.train_time_limit_minutes}
    gen = cfg.answer_gen
    if role == "prompter":
        values.update(prompter=cfg.prompter, answer_max_new_tokens=gen.max_new_tokens,
                      answer_temperature=gen.temperature, answer_top_p=gen.top_p, answer_top_k=gen.top_k)
    else:
        values.update(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
                      top_k=gen.top_k)
    if values.get("role") != role:
        raise AlignProError(f"setting '{role}_recipe': {recipe} trains role '{values.get('role')}', not '{role}'")
    return values


def reached_step(run: Path) -> int:
    """The step a finished training run reached (its time limit may have ended it before ``steps``)."""
    from alignpro.train.policy import TRAIN_INFO

    return int(json.loads((run / "final" / TRAIN_INFO).read_text())["steps"])


def stage_train(cfg: OveroptConfig, role: str, n: int) -> Path:
    """Stage 3: ``role`` trained on proxy N (skipped if done; resumed if interrupted or if its time limit stopped
    it before ``train_steps``, so each run of the study trains it for up to another time limit)."""
    from alignpro.train.config import RESUMABLE_CHANGES, TrainConfig
    from alignpro.train.loop import CONFIG, train
    from alignpro.train.policy import TRAIN_INFO

    run, values = train_dir(cfg, role, n), train_values(cfg, role, n)
    if (run / CONFIG).is_file():
        _check_same(load_yaml(run / CONFIG), config_to_dict(build_config(TrainConfig, values)),
                    (*RESUMABLE_CHANGES, "resume", "out"), run / CONFIG)
        if (run / "final" / TRAIN_INFO).is_file() and reached_step(run) >= cfg.train_steps:
            return run
        values["resume"] = str(run)  # interrupted, or stopped by its time limit: it continues
    train(build_config(TrainConfig, values))
    return run


# ---------------------------------------------------------------------------------------------------------------
# Stage 4: measurement on the eval prompts
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Scorers:
    """The gold reward and the proxies, each scoring (x, y) against the ORIGINAL x."""

    rewards: dict[str, Any]  #: GOLD and each proxy label -> RewardModel

    def fill(self, entries: Sequence[dict[str, Any]], originals: Sequence[str]) -> bool:
        """Score each entry's ``answers`` (a nested list; entry i answers ``originals[i]``) with every reward the
        entry has no ``scores`` of yet: a new entry, or a proxy added after it was measured. True if any was."""
        scored = False
        for name, reward in self.rewards.items():
            todo = [(e, x) for e, x in zip(entries, originals) if name not in e["scores"]]
            if not todo:
                continue
            shaped = [np.asarray(e["answers"], dtype=object) for e, _ in todo]
            got = np.asarray(reward.score([x for (_, x), a in zip(todo, shaped) for _ in range(a.size)],
                                          [str(y) for a in shaped for y in a.ravel()]), dtype=float)
            at = 0
            for (e, _), a in zip(todo, shaped):
                e["scores"][name] = got[at:at + a.size].reshape(a.shape).tolist()
                at += a.size
            scored = True
        return scored


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, ensure_ascii=False) + "\n")


#: the settings a measurement file depends on (a file made with others is refused, naming them)
_POOL_SETTINGS = ("seed", "target", "prompter", "k", "m", "n_fresh", "identity_prior", "answer_max_new_tokens",
                  "answer_temperature", "answer_top_p", "answer_top_k", "prompter_recipe")
_CHECKPOINT_SETTINGS = ("seed", "target", "n_fresh", "rewrites_per_prompt", "answer_max_new_tokens",
                        "answer_temperature", "answer_top_p", "answer_top_k")


def _open_measurement(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """A measurement file: ``settings`` and one entry per eval prompt id (``prompts``), so a larger (or another)
    ``n_eval_prompts`` measures only the prompts not there yet, and a smaller one reads a subset."""
    if not path.is_file():
        return {"settings": settings, "prompts": {}}
    got = json.loads(path.read_text())
    if "prompts" not in got or "settings" not in got:
        raise AlignProError(f"{path} is not a measurement file of this version; delete it to measure again")
    _check_same(got["settings"], settings, (), path)
    return got


def _selected(entries: dict[str, dict[str, Any]], records: Sequence[PromptRecord], names: Sequence[str],
              ) -> dict[str, Any]:
    """The eval prompts' entries in ``records`` order: their ids and every reward's scores."""
    rows = [entries[r.id] for r in records]
    return {"ids": [r.id for r in records], "scores": {name: [e["scores"][name] for e in rows] for name in names}}


def measure_pool(cfg: OveroptConfig, records: list[PromptRecord], target: Any, prompter: Any,
                 scorers: Scorers) -> dict[str, Any]:
    """The closed form's pool: K rewrites of ρ_sft + x per prompt, m + n_fresh answers each, every answer scored.
    One entry per prompt id, written after each chunk of prompts (a rerun continues; more prompts extend it)."""
    from tqdm.auto import tqdm

    path = Path(cfg.out) / MEASURE / POOL
    pool = _open_measurement(path, {k: getattr(cfg, k) for k in _POOL_SETTINGS})
    entries: dict[str, dict[str, Any]] = pool["prompts"]
    todo = [r for r in records if r.id not in entries]
    n_ans = cfg.m + cfg.n_fresh
    per_call = max(1, cfg.batch_size // (cfg.k + 1))  # prompts per chunk: ~batch_size candidates, n answers each
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="closed-form pool", unit="prompt",
               disable=not cfg.progress, dynamic_ncols=True)
    for a in range(0, len(todo), per_call):
        chunk, offset = todo[a:a + per_call], len(entries)  # seeds follow the entries already measured
        sets = prompter.rewrite([r.text for r in chunk], cfg.k, seed=cfg.seed + _POOL_SEED + offset)
        cands = [([r.text] if cfg.identity_prior > 0 else []) + s.texts for r, s in zip(chunk, sets)]
        c = len(cands[0])
        flat = [x for row in cands for x in row]
        systems = [r.system for r in chunk for _ in range(c)]
        rows = target.answer(flat, n=n_ans, seed=cfg.seed + _POOL_SEED + 500_000 + offset, systems=systems)
        texts = [[y.text for y in row] for row in rows]  # (b·C, m + n_fresh)
        for i, r in enumerate(chunk):
            entries[r.id] = {"candidates": cands[i], "answers": texts[i * c:(i + 1) * c], "scores": {}}
        scorers.fill([entries[r.id] for r in chunk], [r.text for r in chunk])
        _save(path, pool)
        bar.update(len(chunk))
    bar.close()
    if scorers.fill([entries[r.id] for r in records], [r.text for r in records]):  # a proxy added later
        _save(path, pool)
    return _selected(entries, records, list(scorers.rewards))


def measure_checkpoint(cfg: OveroptConfig, role: str, run: Path, step: int, records: list[PromptRecord],
                       target: Any, scorers: Scorers, name: str) -> dict[str, Any]:
    """A checkpoint's samples on the eval prompts with their KL, π_F's answers (prompter) and every score; one
    entry per prompt id in ``RUN/measure/<name>.json`` (more prompts extend it)."""
    from alignpro.overopt.policies import CheckpointPolicy
    from alignpro.templates import load_rewrite_template

    path = Path(cfg.out) / MEASURE / f"{name}.json"
    got = _open_measurement(path, {"role": role, "run": str(run), "step": step,
                                   **{k: getattr(cfg, k) for k in _CHECKPOINT_SETTINGS}})
    entries: dict[str, dict[str, Any]] = got["prompts"]
    todo = [r for r in records if r.id not in entries]
    if todo:
        t0, offset = time.perf_counter(), len(entries)  # seeds follow the entries already measured
        policy = CheckpointPolicy(run, step, device=cfg.torch_device)
        seed = cfg.seed + _CHECKPOINT_SEED + offset
        rewrites: list[list[str]] | None = None
        if role == "prompter":
            r_n = cfg.rewrites_per_prompt
            samples = policy.sample(todo, r_n, seed=seed, batch_size=cfg.batch_size)
            template = load_rewrite_template(policy.cfg.template)
            shown = [template.parse(raw, rec.text)[0] for rec, row in zip(todo, samples.texts) for raw in row]
            rows = target.answer(shown, n=cfg.n_fresh // r_n, seed=cfg.seed + _ANSWER_SEED + offset,
                                 systems=[rec.system for rec in todo for _ in range(r_n)])
            answers = [[y.text for j in range(r_n) for y in rows[i * r_n + j]] for i in range(len(todo))]
            rewrites = [shown[i * r_n:(i + 1) * r_n] for i in range(len(todo))]
        else:
            samples = policy.sample(todo, cfg.n_fresh, seed=seed, batch_size=cfg.batch_size)
            answers = samples.texts
        del policy
        for i, r in enumerate(todo):
            entries[r.id] = {"kl": samples.kl[i].tolist(), "kl_k3": samples.kl_k3[i].tolist(),
                             "rewrites": None if rewrites is None else rewrites[i], "answers": answers[i],
                             "scores": {}}
        got["seconds"] = got.get("seconds", 0.0) + time.perf_counter() - t0
    if scorers.fill([entries[r.id] for r in records], [r.text for r in records]) or todo:
        _save(path, got)
    return {"step": step, "kl_k3": [entries[r.id]["kl_k3"] for r in records],
            **_selected(entries, records, list(scorers.rewards))}


def _per_prompt(values: list[float], n_prompts: int) -> np.ndarray:
    return np.asarray(values, dtype=float).reshape(n_prompts, -1).mean(axis=1)  # (P,)


def checkpoint_points(method: str, proxy: str, measured: list[dict[str, Any]]) -> list[CurvePoint]:
    """One point per measured checkpoint (step 0 first): per-prompt means of KL (the k3 estimate: unbiased like
    k1 and never negative, so √KL exists for every point; k1 is kept in the measurement files), gold and this
    proxy's reward."""
    P = len(measured[0]["ids"])
    start = _per_prompt(measured[0]["scores"][GOLD], P)
    return [make_point(method, proxy, f"step {m['step']}", np.asarray(m["kl_k3"]).mean(axis=1),
                       _per_prompt(m["scores"][GOLD], P), _per_prompt(m["scores"][proxy], P), start,
                       int(np.asarray(m["scores"][GOLD]).size)) for m in measured]


def pool_points(cfg: OveroptConfig, proxy: str, pool: dict[str, Any]) -> list[CurvePoint]:
    gold = np.asarray(pool["scores"][GOLD], dtype=float)  # (P, C, m + n_fresh)
    prox = np.asarray(pool["scores"][proxy], dtype=float)
    log_prior = candidate_log_prior(cfg.k, cfg.identity_prior)
    return closed_form_curve(proxy, cfg.lams, prox[..., :cfg.m].mean(axis=-1), log_prior, gold[..., cfg.m:],
                             prox[..., cfg.m:])


# ---------------------------------------------------------------------------------------------------------------
# Stage 5: the report
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class OveroptResult:
    run: Path
    points: list[CurvePoint]
    summaries: list[dict[str, Any]]
    proxies: dict[str, dict[str, Any]]  #: label -> the proxy's held-out measures and data
    no_ft: dict[str, float]  #: π_F on x at the study's sampling (the oracle's step 0)
    stopped_early: dict[str, int]  #: training run -> the step it reached, for runs its time limit ended early


def plot(result: OveroptResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result.proxies)
    fig, axes = plt.subplots(len(labels), 2, figsize=(11, 4 * len(labels)), squeeze=False)
    style = {"closed_form": ("tab:blue", "o", "closed form (λ sweep)"),
             "prompter": ("tab:green", "s", "trained prompter (checkpoints)"),
             "oracle": ("tab:red", "^", "RLHF oracle (checkpoints)")}
    for row, label in enumerate(labels):
        for col, (attr, err, name) in enumerate((("gold", "gold_stderr", "gold reward"),
                                                 ("proxy_reward", "proxy_stderr", "proxy reward r_φ"))):
            ax = axes[row][col]
            for method in METHODS:
                pts = sorted((p for p in result.points if p.proxy == label and p.method == method), key=lambda p: p.kl)
                if pts:
                    color, marker, legend = style[method]
                    ax.errorbar([p.sqrt_kl for p in pts], [getattr(p, attr) for p in pts],
                                yerr=[getattr(p, err) for p in pts], color=color, marker=marker, capsize=3,
                                label=legend)
            if attr == "gold":
                ax.axhline(result.no_ft["gold"], color="gray", ls="--", lw=1, label="no_ft (π_F on x)")
            ax.set_xlabel("√KL (nats^½) to the method's start")
            ax.set_ylabel(name)
            acc = result.proxies[label]["heldout"]
            ax.set_title(f"proxy {label} (held-out acc {acc['accuracy']:.2f} ± {acc['stderr']:.2f}): {name}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _pm(v: float | None, se: float | None) -> str:
    return "—" if v is None else f"{v:.3f} ± {_f(se)}"


def report_markdown(cfg: OveroptConfig, result: OveroptResult) -> str:
    lines = [f"# Over-optimisation: gold `{cfg.gold}` vs Bradley–Terry proxies", "",
             f"Eval prompts: {result.points[0].n_prompts} of `{cfg.eval_prompts}`; π_F `{cfg.target}` at temperature "
             f"{cfg.answer_temperature}, top_p {cfg.answer_top_p}, top_k {cfg.answer_top_k}, ≤ "
             f"{cfg.answer_max_new_tokens} tokens. no_ft (π_F on x): gold {result.no_ft['gold']:.3f} ± "
             f"{result.no_ft['gold_stderr']:.3f}. Standard errors are over prompts; gains are paired by prompt "
             "against the method's start (ρ_sft at λ = ∞, or step 0)." + "".join(
                 f" Run `{name}` was stopped by its time limit ({cfg.train_time_limit_minutes:g} min) after step "
                 f"{steps} of {cfg.train_steps}: it is measured up to step {steps}." for name, steps in
                 result.stopped_early.items()), "", "## Proxies", "",
             "| proxy | training pairs | held-out pairs | held-out accuracy | eq (1) loss |", "|---|---|---|---|---|"]
    for label, rec in result.proxies.items():
        h = rec["heldout"]
        lines.append(f"| {label} | {rec['train_pairs']} | {h['n']} | {h['accuracy']:.3f} ± {h['stderr']:.3f} | "
                     f"{h['loss']:.3f} ± {h['loss_stderr']:.3f} |")
    lines += ["", "## Where each curve peaks", "",
              "| proxy | method | start gold | peak at | √KL | peak gold | last point | √KL | last gold | gold lost "
              "after the peak | KL after the peak | gold lost per nat |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result.summaries:
        lines.append(f"| {s['proxy']} | {s['method']} | {_f(s['start_gold'])} | {s['peak_setting']} | "
                     f"{_f(s['peak_sqrt_kl'], 2)} | {_f(s['peak_gold'])} ± {_f(s['peak_gold_stderr'])} | "
                     f"{s['last_setting']} | {_f(s['last_sqrt_kl'], 2)} | {_f(s['last_gold'])} ± "
                     f"{_f(s['last_gold_stderr'])} | {_pm(s['gold_drop_after_peak'], s['gold_drop_stderr'])} | "
                     f"{_f(s['kl_after_peak'], 2)} | {_pm(s['gold_lost_per_nat'], s['gold_lost_per_nat_stderr'])} |")
    lines += ["", "The peak is the best of a few noisy points, so its gold and the drop after it lean high; the "
              "drop's ± is the paired per-prompt standard error (the peak and the last point share their prompts) "
              "and leaves that selection out. KL after the peak is taken as known.", "", "## Every point", "",
              "| proxy | method | setting | KL | √KL | gold | Δ gold vs start | proxy r_φ | prompts | answers |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result.points:
        lines.append(f"| {p.proxy} | {p.method} | {p.setting} | {p.kl:.3f} ± {p.kl_stderr:.3f} | {p.sqrt_kl:.2f} | "
                     f"{p.gold:.3f} ± {p.gold_stderr:.3f} | {p.gold_gain:+.3f} ± {p.gold_gain_stderr:.3f} | "
                     f"{p.proxy_reward:.3f} ± {p.proxy_stderr:.3f} | {p.n_prompts} | {p.n_answers} |")
    lines += ["", "Closed form: R̂_proxy on the m answers that choose; gold and proxy on the n_fresh other answers, "
              "weighted by ρ*_λ (no selection bias); its KL is exact on the candidates. Checkpoints: their own "
              "samples, KL = the mean over them of Σ_t k3(log π_θ, log π_ref) (Schulman's unbiased, non-negative "
              "estimator).", ""]
    return "\n".join(lines)


def run_overopt(cfg: OveroptConfig, *, target: Any = None, prompter: Any = None) -> OveroptResult:
    """All stages of ``cfg`` (skipping what is done); ``target``/``prompter`` override the specs (tests)."""
    import torch

    from alignpro.specs import make_prompter, make_reward, make_target
    from alignpro.train.config import TrainConfig

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "config.yaml", json.dumps(config_to_dict(cfg), indent=1, default=str) + "\n")
    pairs = stage_pairs(cfg)
    rm_records = stage_proxies(cfg, pairs)
    runs = {(role, n): stage_train(cfg, role, n) for n in cfg.n_pairs for role in ("prompter", "oracle")}

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
    for role in ("prompter", "oracle"):
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
    no_ft_gold = _per_prompt(start["scores"][GOLD], len(records))
    no_ft = {"gold": float(no_ft_gold.mean()), "gold_stderr": stderr(no_ft_gold)}
    proxies = {labels[n]: {"n_pairs_setting": n, "train_pairs": rm_records[n]["data"]["train_pairs"],
                           "heldout": rm_records[n]["heldout"], "folder": str(proxy_dir(cfg, n))}
               for n in cfg.n_pairs}
    stopped = {f"{role}-{n}": steps for (role, n), steps in reached.items() if steps < cfg.train_steps}
    result = OveroptResult(run, points, summaries, proxies, no_ft, stopped)
    atomic_write_text(run / "overopt.json", json.dumps({
        "config": config_to_dict(cfg), "no_ft": no_ft, "proxies": proxies, "summaries": summaries,
        "runs_stopped_early": stopped,
        "points": [p.to_dict() for p in points]}, indent=1, default=str) + "\n")
    atomic_write_text(run / "overopt.md", report_markdown(cfg, result))
    plot(result, run / "overopt.png")
    print(report_markdown(cfg, result), flush=True)
    print(f"alignpro overopt: wrote {run / 'overopt.md'}, {run / 'overopt.json'}, {run / 'overopt.png'}", flush=True)
    return result


def main(argv: list[str]) -> int:
    run_overopt(parse_config(OveroptConfig, argv, "alignpro overopt"))
    return 0
