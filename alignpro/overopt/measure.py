"""Stage 4 of ``alignpro overopt``: measurement on the EVAL prompts, into ``RUN/measure/``.

- the closed form's pool (``closed-form-pool.json``): the arm ``align_pro_closed_form``'s rollout
  (:func:`alignpro.method.composed_rollout` with the seeds of :data:`alignpro.arms.ROLLOUT_SEED`): K rewrites of
  ρ_sft + x per prompt, m + n_fresh answers each (m choose, n_fresh are measured);
- n_fresh answers of every measured checkpoint (``<role>-<N>-step-<s>.json``; the start, step 0, once per role);

every answer scored by the gold reward and by every proxy, against the ORIGINAL x. A file holds one entry per
eval prompt id, so a larger ``n_eval_prompts`` measures only the prompts not there yet, and a proxy added later
scores the answers already there. Samples and answers are coupled: a checkpoint's response j to x, and π_F's
answers to it, draw from streams keyed by (seed, x, j) (:func:`alignpro.backends.base.stream_seed`), so every
checkpoint, the start included, is measured on the same random numbers and more prompts extend a file exactly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alignpro.arms import ROLLOUT_SEED, Arm, bind
from alignpro.backends.base import prompt_keys
from alignpro.data import PromptRecord
from alignpro.errors import AlignProError
from alignpro.fileio import atomic_write_text
from alignpro.method import candidate_log_prior, composed_rollout
from alignpro.overopt.config import OveroptConfig
from alignpro.overopt.curves import CurvePoint, closed_form_curve, make_point

MEASURE = "measure"
POOL = "closed-form-pool.json"
GOLD = "gold"  #: the gold reward's key among the scores
#: seed offsets of a checkpoint's samples, and of π_F's answers to the trained prompter's rewrites (the study's
#: own: the arms run no checkpoints, and measurement files already made depend on them)
_CHECKPOINT_SEED, _ANSWER_SEED = 2_000, 3_000
#: how a checkpoint's samples and π_F's answers draw their random numbers (kept in each measurement file, so a file
#: measured on the earlier batch-dependent streams is refused rather than mixed with coupled entries)
COUPLED_STREAMS = "keyed by (seed, x, j)"


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
_POOL_SEEDS = "alignpro.arms: ROLLOUT_SEED[align_pro_closed_form]"  #: the pool's seed scheme, recorded in its file
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
    changed = sorted(k for k, v in settings.items() if got["settings"].get(k) != v)
    if changed:
        raise AlignProError(f"{path} was made with other settings ({changed} differ from this study's); use "
                            "another --out, or delete that file to measure again")
    return got


def _selected(entries: dict[str, dict[str, Any]], records: Sequence[PromptRecord], names: Sequence[str],
              ) -> dict[str, Any]:
    """The eval prompts' entries in ``records`` order: their ids and every reward's scores."""
    rows = [entries[r.id] for r in records]
    return {"ids": [r.id for r in records], "scores": {name: [e["scores"][name] for e in rows] for name in names}}


def measure_pool(cfg: OveroptConfig, records: list[PromptRecord], target: Any, prompter: Any,
                 scorers: Scorers) -> dict[str, Any]:
    """The closed form's pool: the arm align_pro_closed_form's rollout (eq 3 sampled: K rewrites of ρ_sft + x per
    prompt, each answered m + n_fresh times with its prompt's system prompt), every answer scored by the gold (in
    the rollout) and by every proxy. A chunk of prompts draws from ``seed + ROLLOUT_SEED[align_pro_closed_form]``
    plus the index of its first prompt among the measured ones (the arms' seed scheme). One entry per prompt id,
    written after each chunk (a rerun continues; more prompts extend it)."""
    from tqdm.auto import tqdm

    path = Path(cfg.out) / MEASURE / POOL
    pool = _open_measurement(path, {**{k: getattr(cfg, k) for k in _POOL_SETTINGS}, "seeds": _POOL_SEEDS})
    entries: dict[str, dict[str, Any]] = pool["prompts"]
    todo = [r for r in records if r.id not in entries]
    c = cfg.k + (1 if cfg.identity_prior > 0 else 0)  # candidates per prompt
    per_call = max(1, cfg.batch_size // (cfg.k + 1))  # prompts per chunk: ~batch_size candidates, n answers each
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="closed-form pool", unit="prompt",
               disable=not cfg.progress, dynamic_ncols=True)
    for a in range(0, len(todo), per_call):
        chunk, offset = todo[a:a + per_call], len(entries)  # seeds follow the entries already measured
        shown_for = [r for r in chunk for _ in range(c)]  # π_F sees the b·C candidates in prompt order
        rollout = composed_rollout([r.text for r in chunk], prompter,
                                   bind(target, [r.system for r in shown_for], [r.text for r in shown_for]),
                                   scorers.rewards[GOLD], k=cfg.k, m=cfg.m + cfg.n_fresh,
                                   identity_prior=cfg.identity_prior,
                                   seed=cfg.seed + ROLLOUT_SEED[Arm.CLOSED_FORM] + offset)
        for i, r in enumerate(chunk):  # answers and gold (C, m + n_fresh)
            entries[r.id] = {"candidates": rollout.candidates[i], "answers": rollout.answers[i],
                             "scores": {GOLD: rollout.rewards[i].tolist()}}
        scorers.fill([entries[r.id] for r in chunk], [r.text for r in chunk])  # the proxies
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
    got = _open_measurement(path, {"role": role, "run": str(run), "step": step, "streams": COUPLED_STREAMS,
                                   **{k: getattr(cfg, k) for k in _CHECKPOINT_SETTINGS}})
    entries: dict[str, dict[str, Any]] = got["prompts"]
    todo = [r for r in records if r.id not in entries]
    if todo:
        t0 = time.perf_counter()  # streams keyed by x: measuring more prompts later gives the same entries
        policy = CheckpointPolicy(run, step, device=cfg.torch_device)
        seed = cfg.seed + _CHECKPOINT_SEED
        rewrites: list[list[str]] | None = None
        if role == "prompter":
            r_n = cfg.rewrites_per_prompt
            samples = policy.sample(todo, r_n, seed=seed, batch_size=cfg.batch_size)
            template = load_rewrite_template(policy.cfg.template)
            shown = [template.parse(raw, rec.text)[0] for rec, row in zip(todo, samples.texts) for raw in row]
            keys = [f"{key}#{j}" for key in prompt_keys([rec.text for rec in todo], [rec.system for rec in todo])
                    for j in range(r_n)]  # π_F's answers to rewrite j of x: one stream per (x, j, answer)
            rows = target.answer(shown, n=cfg.n_fresh // r_n, seed=cfg.seed + _ANSWER_SEED,
                                 systems=[rec.system for rec in todo for _ in range(r_n)], keys=keys)
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


def per_prompt(values: list[float], n_prompts: int) -> np.ndarray:
    """(P,) each prompt's mean of a flat or nested list of scores, prompt by prompt."""
    return np.asarray(values, dtype=float).reshape(n_prompts, -1).mean(axis=1)  # (P,)


def checkpoint_points(method: str, proxy: str, measured: list[dict[str, Any]]) -> list[CurvePoint]:
    """One point per measured checkpoint (step 0 first): per-prompt means of KL (the k3 estimate: unbiased like
    k1 and never negative, so √KL exists for every point; k1 is kept in the measurement files), gold and this
    proxy's reward."""
    P = len(measured[0]["ids"])
    start = per_prompt(measured[0]["scores"][GOLD], P)
    return [make_point(method, proxy, f"step {m['step']}", np.asarray(m["kl_k3"]).mean(axis=1),
                       per_prompt(m["scores"][GOLD], P), per_prompt(m["scores"][proxy], P), start,
                       int(np.asarray(m["scores"][GOLD]).size)) for m in measured]


def pool_points(cfg: OveroptConfig, proxy: str, pool: dict[str, Any]) -> list[CurvePoint]:
    gold = np.asarray(pool["scores"][GOLD], dtype=float)  # (P, C, m + n_fresh)
    prox = np.asarray(pool["scores"][proxy], dtype=float)
    log_prior = candidate_log_prior(cfg.k, cfg.identity_prior)
    return closed_form_curve(proxy, cfg.lams, prox[..., :cfg.m].mean(axis=-1), log_prior, gold[..., cfg.m:],
                             prox[..., cfg.m:])
