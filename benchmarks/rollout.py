"""Rollout throughput: the prompter's rewrites and the target's answers for SmolLM2-135M on this machine.

    .venv/bin/python benchmarks/rollout.py --json
    .venv/bin/python benchmarks/rollout.py --batch-size 8 --json      # the "before" configuration

Reports tokens/s per stage and in aggregate, achieved GFLOP/s and the fraction of the roofline
(measured GEMM peak ÷ FLOPs per token). The last line printed is one JSON object.
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
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
