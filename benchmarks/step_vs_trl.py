"""One training step of the Align-Pro loop vs trl's GRPOTrainer, prompter role, same workload, same process.

    .venv/bin/pip install -e '.[bench]'                     # trl, for this benchmark only
    .venv/bin/python benchmarks/step_vs_trl.py --json
    .venv/bin/python benchmarks/step_vs_trl.py --epochs 4   # the paper's 4 PPO epochs (trl: num_iterations=4)

Workload of one step: B training prompts (builtin train split) → K rewrites each, sampled from the prompter ρ
(SmolLM2-135M, the default rewrite template, ``DEFAULT_REWRITE_CONFIG`` sampling) → each rewrite parsed to x′ →
the frozen target π_F (SmolLM2-135M) answers x′ M times (the paper's sampling) → reward = the builtin r(x, y)
against the ORIGINAL x, mean over the M → one policy update (``--epochs`` passes over the B·K rollouts, one
minibatch each). Full fine-tuning, fp32, lr 1.41e-5, a frozen reference model for the KL term, on CPU.

- ours: ``alignpro.train.train`` with algo ppo and grpo (``--algos``); the stage split comes from
  RUN/metrics.jsonl (rollout_seconds, answer_seconds, score_seconds, update_seconds, seconds).
- trl: ``GRPOTrainer`` on the same prompts in the same order, the same chat-templated rewrite request, and a
  reward callable that parses, answers and scores with the same target and reward objects as ours. A step
  (``--epochs`` trainer steps when > 1: trl reuses one generation for num_iterations optimizer steps) is timed
  with a TrainerCallback; the split times ``GRPOTrainer._generate`` (rewrite) and the inside of the callable.

Stage names: rewrite (sample the rewrites, tokenize/decode), answer (π_F's B·K·M answers), score (r(x, y)),
update (everything after the rewards: policy/reference log-probs, advantages, the optimizer passes; for trl also
the Trainer's bookkeeping), other (the rest: parsing, logging). Each stage is the median over the timed steps,
so the stages need not add up to the median step. The first step of each trainer is a warm-up and is discarded.

Both trainers run in one process, so ``peak_rss_mb`` is a high-water mark: ``after_ours`` is ours alone,
``after_trl`` is the larger of the two. The last line printed is one JSON object.
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

from common import peak_rss_mb  # noqa: E402

STAGES = ("rewrite", "answer", "score", "update", "other")


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(steps: list[dict[str, float]], warmup: int = 1) -> dict:
    """Median step seconds and per-stage medians over ``steps`` after the first ``warmup``."""
    timed = steps[warmup:] or steps  # a 1-step run has nothing left: report the warm-up step itself
    out = {"step_seconds": median([s["seconds"] for s in timed]), "steps_timed": len(timed),
           "step_seconds_all": [round(s["seconds"], 3) for s in steps],
           "stages": {k: median([s[k] for s in timed]) for k in STAGES}}
    for key in ("rewrite_tokens", "answer_tokens"):
        out[key] = median([s[key] for s in timed])
    return out


def train_config(args, algo: str, out: Path):
    """Our TrainConfig for the workload; checkpoints only at the last step (after its timing has ended)."""
    from alignpro.specs import DEFAULT_REWRITE_CONFIG
    from alignpro.train.advantages import Algo
    from alignpro.train.config import Role, TrainConfig

    rw = DEFAULT_REWRITE_CONFIG
    return TrainConfig(role=Role.PROMPTER, algo=Algo(algo), steps=args.steps, out=str(out), seed=0,
                       prompter="smollm2", target="smollm2", reward="builtin", template="rewrite-default",
                       prompts="builtin:train", batch_size=args.batch, k=args.k, m=args.m,
                       max_new_tokens=args.rewrite_tokens, temperature=rw.temperature, top_p=rw.top_p,
                       top_k=rw.top_k, answer_max_new_tokens=args.answer_tokens, lr=1.41e-5,
                       epochs=args.epochs, num_minibatches=1, lora=False, save_every=10**9,
                       keep_checkpoints=1, device="cpu", mixed_precision="no", num_threads=args.threads,
                       progress=False)


def run_ours(args, algo: str, out: Path, target, reward) -> dict:
    """``train`` for ``args.steps`` steps; the split is read back from RUN/metrics.jsonl."""
    from alignpro.train.loop import train

    train(train_config(args, algo, out), target=target, reward=reward)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = []
    for r in rows:
        s = {"seconds": r["seconds"], "rewrite": r["rollout_seconds"], "answer": r["answer_seconds"],
             "score": r["score_seconds"], "update": r["update_seconds"],
             "rewrite_tokens": r["response_tokens"], "answer_tokens": r["answer_tokens"]}
        s["other"] = s["seconds"] - s["rewrite"] - s["answer"] - s["score"] - s["update"]
        steps.append(s)
    for sub in ("checkpoints", "final"):  # ~2 GB of weights and optimizer state, not needed here
        shutil.rmtree(out / sub, ignore_errors=True)
    return summarize(steps)


def trl_dataset(args):
    """The prompts our loop visits, in its order (step 1's B prompts first), as a conversational dataset."""
    from datasets import Dataset

    from alignpro.data import load_prompts
    from alignpro.templates import load_rewrite_template
    from alignpro.train.loop import batch_indices

    records = load_prompts("builtin:train").records
    template = load_rewrite_template("rewrite-default")
    order = [i for step in range(1, args.steps + 1) for i in batch_indices(step, len(records), args.batch, 0)]
    return Dataset.from_list([{"prompt": template.messages(records[i].text), "original": records[i].text,
                               "system": records[i].system or ""} for i in order]), template


class StageClock:
    """Accumulates the seconds of each stage of the trl step in progress."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.current[stage] = self.current.get(stage, 0.0) + seconds

    def take(self) -> dict[str, float]:
        out, self.current = self.current, {}
        return out


def make_reward_func(template, target, reward, m: int, clock: StageClock):
    """trl's reward callable: parse each completion to x′, π_F answers it M times, r(x, y) against the original x."""
    import numpy as np

    from alignpro.train.loop import step_seed

    calls = [0]

    def rewrite_reward(prompts, completions, original, system=None, completion_ids=None, **kw) -> list[float]:
        t0 = time.perf_counter()
        calls[0] += 1
        raws = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        rewrites = [template.parse(raw, x)[0] for raw, x in zip(raws, original, strict=True)]
        t1 = time.perf_counter()
        answers = target.answer(rewrites, n=m, seed=step_seed(0, calls[0], 0, 1),
                                systems=[s or None for s in (system or [None] * len(rewrites))])  # (B·K, M)
        t2 = time.perf_counter()
        flat = reward.score([x for x in original for _ in range(m)], [a.text for row in answers for a in row])
        t3 = time.perf_counter()
        clock.add("answer", t2 - t1)
        clock.add("score", t3 - t2)
        clock.add("reward_call", t3 - t0)
        clock.add("answer_tokens", float(np.mean([a.n_tokens for row in answers for a in row])))
        if completion_ids is not None:
            clock.add("rewrite_tokens", float(np.mean([len(ids) for ids in completion_ids])))
        return np.asarray(flat, dtype=float).reshape(len(rewrites), m).mean(axis=1).tolist()

    return rewrite_reward


def run_trl(args, out: Path, target, reward, kl_coef: float) -> dict:
    """GRPOTrainer for ``args.steps`` of our steps (× ``args.epochs`` trainer steps), timed by a callback."""
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from alignpro.assets import smollm2_folder
    from alignpro.specs import DEFAULT_REWRITE_CONFIG

    rw = DEFAULT_REWRITE_CONFIG
    dataset, template = trl_dataset(args)
    clock = StageClock()
    trainer_steps: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            trainer_steps.append({"seconds": time.perf_counter() - self.t0, **clock.take()})

    # trl turns activation (gradient) checkpointing on by default; ours is off. transformers 5 renamed the flag.
    renamed = "activation_checkpointing" in GRPOConfig.__dataclass_fields__
    no_checkpointing = {"activation_checkpointing" if renamed else "gradient_checkpointing": False}
    config = GRPOConfig(
        output_dir=str(out), max_steps=args.steps * args.epochs, seed=0,
        # generation_batch_size = this × steps_per_generation (= gradient_accumulation_steps = 1) = B·K rollouts,
        # which trl requires to be a multiple of num_generations = K: one step = our step's B prompts × K
        per_device_train_batch_size=args.batch * args.k,
        gradient_accumulation_steps=1, num_generations=args.k, num_iterations=args.epochs,
        max_completion_length=args.rewrite_tokens, temperature=rw.temperature, top_p=rw.top_p, top_k=rw.top_k,
        learning_rate=1.41e-5, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
        beta=kl_coef, epsilon=0.2, shuffle_dataset=False, disable_dropout=True,
        model_init_kwargs={"dtype": "float32"}, **no_checkpointing,
        use_cpu=True, bf16=False, fp16=False, report_to="none", logging_strategy="no", save_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False)
    trainer = GRPOTrainer(model=str(smollm2_folder()), args=config, train_dataset=dataset,
                          reward_funcs=make_reward_func(template, target, reward, args.m, clock),
                          callbacks=[StepTimer()])
    generate = trainer._generate

    def timed_generate(prompts):  # the rewrites: tokenize, sample, decode
        t0 = time.perf_counter()
        try:
            return generate(prompts)
        finally:
            clock.add("rewrite", time.perf_counter() - t0)

    trainer._generate = timed_generate
    trainer.train()

    steps = []  # one of our steps = `epochs` trainer steps sharing one generation
    for i in range(0, len(trainer_steps), args.epochs):
        group = trainer_steps[i:i + args.epochs]
        s = {k: sum(t.get(k, 0.0) for t in group)
             for k in ("seconds", "rewrite", "answer", "score", "reward_call", "rewrite_tokens", "answer_tokens")}
        s["update"] = s["seconds"] - s["rewrite"] - s["reward_call"]
        s["other"] = s["reward_call"] - s["answer"] - s["score"]
        steps.append(s)
    del trainer
    return summarize(steps)


def print_table(result: dict) -> None:
    rows = [(f"ours {algo}", r) for algo, r in result["ours"].items()] + [("trl grpo", result["trl"])]
    print(f"{'':10s} {'step s':>8s} " + " ".join(f"{s:>8s}" for s in STAGES) + f" {'rw tok':>7s} {'ans tok':>7s}")
    for name, r in rows:
        print(f"{name:10s} {r['step_seconds']:8.2f} " + " ".join(f"{r['stages'][s]:8.2f}" for s in STAGES)
              + f" {r['rewrite_tokens']:7.1f} {r['answer_tokens']:7.1f}")
    w = result["workload"]
    print(f"B={w['batch']} K={w['k']} M={w['m']} rewrite≤{w['rewrite_tokens']} answer≤{w['answer_tokens']} tokens, "
          f"epochs={w['epochs']}, {result['threads']} threads; medians of {result['trl']['steps_timed']} "
          f"timed steps after 1 warm-up")
    for key in ("step_ratio_vs_trl", "step_ratio_grpo_vs_trl"):
        if result.get(key) is not None:
            print(f"{key} = {result[key]:.2f}")
    print(f"peak RSS: {result['peak_rss_mb']['after_ours']:.0f} MB after ours, "
          f"{result['peak_rss_mb']['after_trl']:.0f} MB after trl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4, help="B: prompts per step")
    ap.add_argument("--k", type=int, default=2, help="K: rewrites per prompt (trl: num_generations, >= 2)")
    ap.add_argument("--m", type=int, default=2, help="M: answers of π_F per rewrite")
    ap.add_argument("--rewrite-tokens", type=int, default=48, help="max new tokens of a rewrite")
    ap.add_argument("--answer-tokens", type=int, default=64, help="max new tokens of an answer")
    ap.add_argument("--steps", type=int, default=3, help="steps per trainer; the first is a warm-up")
    ap.add_argument("--epochs", type=int, default=1,
                    help="update passes per step (ours: epochs; trl: num_iterations, whose default is 1)")
    ap.add_argument("--algos", default="ppo,grpo", help="our algorithms to time (ppo, grpo, rloo)")
    ap.add_argument("--out", default=None, help="work folder (default: a new temporary folder)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    if args.k < 2:
        ap.error("--k must be >= 2 (trl's GRPO needs at least 2 generations per prompt)")

    import torch
    import transformers
    import trl

    if args.threads:
        torch.set_num_threads(args.threads)
    from alignpro.specs import DEFAULT_REWRITE_CONFIG, make_reward, make_target

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="step_vs_trl-"))
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    cfg = train_config(args, algos[0] if algos else "grpo", out)
    target = make_target("smollm2", cfg.answer_gen, batch_size=cfg.generation_batch_size)  # π_F, shared
    reward = make_reward("builtin")  # shared too

    ours = {algo: run_ours(args, algo, out / f"ours-{algo}-{stamp}", target, reward) for algo in algos}
    rss_ours = peak_rss_mb()
    trl_result = run_trl(args, out / f"trl-{stamp}", target, reward, cfg.kl_coef)
    rss_trl = peak_rss_mb()

    def ratio(algo: str) -> float | None:
        return ours[algo]["step_seconds"] / trl_result["step_seconds"] if algo in ours else None

    rw = DEFAULT_REWRITE_CONFIG
    result = {
        "step_ratio_vs_trl": ratio("ppo"),
        "step_ratio_grpo_vs_trl": ratio("grpo"),
        "ours": ours,
        "trl": trl_result,
        "workload": {"batch": args.batch, "k": args.k, "m": args.m, "rewrite_tokens": args.rewrite_tokens,
                     "answer_tokens": args.answer_tokens, "steps": args.steps, "epochs": args.epochs,
                     "rollouts_per_step": args.batch * args.k, "answers_per_step": args.batch * args.k * args.m,
                     "model": "smollm2", "lr": cfg.lr, "kl_coef": cfg.kl_coef, "dtype": "float32",
                     "rewrite_sampling": {"temperature": rw.temperature, "top_p": rw.top_p, "top_k": rw.top_k},
                     "answer_sampling": {"temperature": cfg.answer_temperature, "top_p": cfg.answer_top_p,
                                         "top_k": cfg.answer_top_k}},
        "threads": torch.get_num_threads(),
        "peak_rss_mb": {"after_ours": rss_ours, "after_trl": rss_trl},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "out": str(out),
    }
    if not args.json:
        print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
