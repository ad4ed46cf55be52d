"""Rollout throughput: the prompter's rewrites and the target's answers for SmolLM2-135M on this machine.

    .venv/bin/python benchmarks/rollout.py --json
    .venv/bin/python benchmarks/rollout.py --batch-size 8 --json      # the "before" configuration
    .venv/bin/python benchmarks/rollout.py --engines --json           # π_F's engines compared in one run

Reports tokens/s per stage and in aggregate, achieved GFLOP/s and the fraction of the roofline
(measured GEMM peak ÷ FLOPs per token). With ``--engines``: π_F's answers (``--n-prompts`` 32 train prompts × 4
answers × ≤ 128 tokens at the paper's sampling) on the torch decoder and on CTranslate2 int8 (inter_threads 1 and
2, two batch sizes each), per-row coupled streams on ``--coupled-prompts`` of them, and one prompter training step
with each target; every target is built by ``make_target`` from its spec. The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import decode_flops_per_token, gemm_peak_gflops, peak_rss_mb  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=2, help="rewrites per prompt")
    ap.add_argument("--m", type=int, default=2, help="answers per rewrite")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rewrite-tokens", type=int, default=48)
    ap.add_argument("--answer-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--answers", type=int, default=4, help="--engines: answers per prompt")
    ap.add_argument("--runs", default="", help="--engines: which of ENGINE_RUNS, e.g. 0,1 (default: all)")
    ap.add_argument("--engines", action="store_true", help="compare π_F's engines instead (see the module doc)")
    ap.add_argument("--coupled-prompts", type=int, default=4, help="--engines: prompts answered with per-row streams")
    ap.add_argument("--train-steps", type=int, default=1, help="--engines: prompter training steps per target (0: none)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.engines:
        return compare_engines(args)
    from alignpro.backends.base import GenerationConfig
    from alignpro.data import builtin_prompts
    from alignpro.specs import DEFAULT_REWRITE_CONFIG, make_prompter, make_target

    peak = gemm_peak_gflops()
    prompts = [r.text for r in builtin_prompts("train")][: args.n_prompts]
    prompter = make_prompter("smollm2", gen=DEFAULT_REWRITE_CONFIG.with_(max_new_tokens=args.rewrite_tokens),
                             batch_size=args.batch_size)
    target = make_target("smollm2", GenerationConfig(max_new_tokens=args.answer_tokens), batch_size=args.batch_size)
    flops = decode_flops_per_token(target.lm.model)

    t0 = time.perf_counter()
    sets = prompter.rewrite(prompts, args.k, seed=args.seed)
    t_rewrite = time.perf_counter() - t0
    rewrites = [r.text for s in sets for r in s.rewrites]
    rw_tokens = sum(len(r.token_logprobs) for s in sets for r in s.rewrites)

    t0 = time.perf_counter()
    answers = target.answer(rewrites, n=args.m, seed=args.seed + 1)
    t_answer = time.perf_counter() - t0
    ans_tokens = sum(a.n_tokens for row in answers for a in row)

    total_tokens, total_s = rw_tokens + ans_tokens, t_rewrite + t_answer
    tps = total_tokens / total_s
    result = {
        "tokens_per_s": tps,
        "roofline_fraction": tps * flops / (peak * 1e9),
        "achieved_gflops": tps * flops / 1e9,
        "gemm_peak_gflops": peak,
        "roofline_tokens_per_s": peak * 1e9 / flops,
        "gflop_per_token": flops / 1e9,
        "stages": {
            "rewrite": {"tokens": rw_tokens, "seconds": t_rewrite, "tokens_per_s": rw_tokens / t_rewrite},
            "answer": {"tokens": ans_tokens, "seconds": t_answer, "tokens_per_s": ans_tokens / t_answer},
        },
        "batch_size": args.batch_size, "n_prompts": len(prompts), "k": args.k, "m": args.m,
        "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
    }
    if not args.json:
        for name, st in result["stages"].items():
            print(f"{name:8s} {st['tokens']:6d} tokens in {st['seconds']:.1f} s = {st['tokens_per_s']:.1f} tok/s")
        print(f"aggregate {tps:.1f} tok/s = {result['achieved_gflops']:.1f} GFLOP/s of a measured "
              f"{peak:.1f} GFLOP/s GEMM peak ({result['roofline_fraction']:.0%} of the roofline)")
    print(json.dumps(result))


#: (label, target spec, batch size) of the engine comparison; the first is the reference of the ratios
ENGINE_RUNS = (
    ("torch decoder", "smollm2", 128),
    ("ct2 int8, 1 batch × 2 threads", "smollm2?engine=ct2&intra_threads=2", 128),
    ("ct2 int8, 1 batch × 1 thread", "smollm2?engine=ct2&intra_threads=1", 128),
    ("ct2 int8, 2 batches × 1 thread", "smollm2?engine=ct2&inter_threads=2&intra_threads=1", 64),
    ("ct2 int8, 2 batches × 1 thread", "smollm2?engine=ct2&inter_threads=2&intra_threads=1", 16),
)


def answer_run(spec: str, batch_size: int, prompts: list[str], n: int, seed: int, coupled: bool = False) -> dict:
    """π_F's answers to ``prompts`` (n each, the paper's sampling) by ``spec``: tokens, seconds, tokens/s. With
    ``coupled``, every answer from a random stream of its own (``keys`` when this tree's targets take them, else the
    per-row seeds of the backend's ``sample``); None when the backend offers neither."""
    import inspect

    from alignpro.backends import base
    from alignpro.backends.chat import request_seed, user_turns
    from alignpro.specs import make_target

    target = make_target(spec, base.PAPER_ANSWER_CONFIG, batch_size=batch_size)
    how = "batched, one stream per call"
    t0 = time.perf_counter()
    if not coupled:
        tokens = sum(a.n_tokens for row in target.answer(prompts, n=n, seed=seed) for a in row)
    elif "keys" in inspect.signature(target.answer).parameters and hasattr(base, "stream_seed"):
        how = "keys: stream_seed(seed, key, j) per answer"
        rows = target.answer(prompts, n=n, seed=seed, keys=base.prompt_keys(prompts))
        tokens = sum(a.n_tokens for row in rows for a in row)
    elif "row_seeds" in inspect.signature(target.lm.sample).parameters:
        how = "row_seeds: one seed per answer"
        convs = [c for c in user_turns(prompts) for _ in range(n)]
        g = target.lm.sample(convs, target.gen, with_logprobs=False,
                             row_seeds=[request_seed(seed, i) for i in range(len(convs))])
        tokens = sum(len(ids) for ids in g.token_ids)
    else:
        return {"spec": spec, "batch_size": batch_size, "coupled": True, "how": "not offered by this backend"}
    seconds = time.perf_counter() - t0
    return {"spec": spec, "batch_size": batch_size, "coupled": coupled, "how": how, "answers": len(prompts) * n,
            "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def train_step_run(target: str, steps: int, seed: int) -> dict:
    """``steps`` prompter training steps (rloo, 8 prompts × 4 rewrites, π_F's answers ≤ 128 tokens) with ``target``:
    the mean seconds of a step and of its reward stage (π_F's answers + the reward)."""
    import tempfile

    from alignpro.config import build_config
    from alignpro.train.config import TrainConfig
    from alignpro.train.loop import train

    with tempfile.TemporaryDirectory() as out:
        cfg = build_config(TrainConfig, {"steps": steps, "out": out, "target": target, "algo": "rloo", "k": 4,
                                         "batch_size": 8, "answer_max_new_tokens": 128, "seed": seed,
                                         "generation_batch_size": 32})
        rows = train(cfg).rows
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {"target": target, "steps": len(rows), "step_seconds": mean("seconds"),
            "reward_seconds": mean("reward_seconds"), "rollout_seconds": mean("rollout_seconds"),
            "update_seconds": mean("update_seconds")}


def compare_engines(args) -> None:
    import torch

    from alignpro.data import builtin_prompts

    prompts = [r.text for r in builtin_prompts("train")][: args.n_prompts]
    n, threads = args.answers, torch.get_num_threads()  # (training below sets its own)
    chosen = [ENGINE_RUNS[int(i)] for i in args.runs.split(",")] if args.runs else list(ENGINE_RUNS)
    runs = [dict(answer_run(spec, b, prompts, n, args.seed), label=label) for label, spec, b in chosen]
    few = prompts[: args.coupled_prompts]
    pairs = (ENGINE_RUNS[0], ENGINE_RUNS[3]) if few else ()
    coupled = [dict(answer_run(spec, b, few, n, args.seed, coupled=True), label=label + ", per-row streams")
               for label, spec, b in pairs]
    uncoupled_few = [dict(answer_run(spec, b, few, n, args.seed), label=label) for label, spec, b in pairs]
    ref = runs[0]["tokens_per_s"]
    fast = max(runs[1:], key=lambda r: r["tokens_per_s"])
    steps = ([train_step_run(spec, args.train_steps, args.seed) for spec in (runs[0]["spec"], fast["spec"])]
             if args.train_steps else [])
    result = {"answers": runs, "coupled": coupled, "uncoupled_same_prompts": uncoupled_few, "train_steps": steps,
              "n_prompts": len(prompts), "n": n, "coupled_prompts": len(few), "torch_threads": threads,
              "ratio_best_ct2_to_torch": fast["tokens_per_s"] / ref}
    print(f"π_F's answers: {len(prompts)} train prompts × {n} answers, ≤ 128 tokens, paper sampling; "
          f"torch threads {threads}")
    for r in runs + uncoupled_few + coupled:
        if "tokens_per_s" not in r:
            print(f"{r['label']:50s} {r['how']}")
            continue
        print(f"{r['label']:50s} batch {r['batch_size']:3d}: {r['answers']:4d} answers, {r['tokens']:6d} tokens in "
              f"{r['seconds']:6.1f} s = {r['tokens_per_s']:6.1f} tok/s ({r['tokens_per_s'] / ref:.2f}× torch)")
    for st in steps:
        print(f"train step, target {st['target']:45s} {st['step_seconds']:.1f} s (π_F + reward "
              f"{st['reward_seconds']:.1f} s, rollout {st['rollout_seconds']:.1f} s, update {st['update_seconds']:.1f} s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
