"""Is π_F on another engine the same π_F? Paired rewards of two target specs on the same IFEval prompts.

    .venv/bin/python benchmarks/engine_equivalence.py --n-prompts 200 --m 2 --json runs/engine-eq.json

Both targets answer the same N builtin-ifeval TRAIN prompts (a seeded sample) M times each at the paper's sampling
(PAPER_ANSWER_CONFIG: temperature 1.5, top_p 0.6, top_k 20, ≤ 128 tokens). Each answer is scored by the ``ifeval``
reward (the share of the prompt's instructions it follows) and the ``builtin`` reward; per prompt, the mean over its
M answers of the candidate minus the reference's is one paired difference, and the report is their mean ± s.e.
over N prompts (:func:`alignpro.metrics.paired_gain`). The two engines' random numbers are not shared, so the
s.e. includes the sampling noise of both.

"Equivalent" here means: for both rewards, |Δ| ≤ 2 s.e. (the 95 % interval holds 0). That is a test of no detected
difference at this N, not a proof of none: the printed s.e. says how large a difference could have gone unseen.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def answer_rewards(spec: str, records, m: int, seed: int, batch_size: int, rewards: dict) -> dict:
    """The (N, M) rewards of ``spec``'s answers, per reward name, and its tokens/s."""
    from alignpro.backends.base import PAPER_ANSWER_CONFIG
    from alignpro.specs import make_target

    target = make_target(spec, PAPER_ANSWER_CONFIG, batch_size=batch_size)
    prompts = [r.text for r in records]
    t0 = time.perf_counter()
    answers = target.answer(prompts, n=m, seed=seed, systems=[r.system for r in records])
    seconds = time.perf_counter() - t0
    flat_prompts = [p for p in prompts for _ in range(m)]
    flat_answers = [a.text for row in answers for a in row]
    tokens = sum(a.n_tokens for row in answers for a in row)
    out = {name: np.asarray(r.score(flat_prompts, flat_answers), dtype=float).reshape(len(prompts), m)
           for name, r in rewards.items()}
    return {"rewards": out, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "mean_tokens": tokens / (len(prompts) * m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", default="smollm2", help="the reference target spec (torch)")
    ap.add_argument("--candidate", default="smollm2?engine=ct2", help="the target spec compared with it")
    ap.add_argument("--n-prompts", type=int, default=200, help="builtin-ifeval TRAIN prompts (a seeded sample)")
    ap.add_argument("--m", type=int, default=2, help="answers per prompt per engine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default; 1 is much faster "
                                                           "than 2 on a machine busy with other jobs)")
    ap.add_argument("--json", default="", help="also write the result to this file")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from alignpro.data import load_prompts
    from alignpro.metrics import arm_stats, paired_gain
    from alignpro.specs import make_reward

    records = load_prompts("builtin-ifeval:train", n=args.n_prompts, seed=args.seed).records
    rewards = {"ifeval": make_reward("ifeval", records), "builtin": make_reward("builtin")}
    runs = {spec: answer_rewards(spec, records, args.m, args.seed, args.batch_size, rewards)
            for spec in (args.reference, args.candidate)}
    ref, cand = runs[args.reference], runs[args.candidate]
    result = {"reference": args.reference, "torch_threads": args.threads, "candidate": args.candidate, "n_prompts": len(records), "m": args.m,
              "seed": args.seed, "prompts": "builtin-ifeval:train", "rewards": {}, "engines": {}}
    for name in rewards:
        gain = paired_gain(cand["rewards"][name], ref["rewards"][name])
        gain["within_2se"] = abs(gain["mean"]) <= 2 * gain["stderr"]
        result["rewards"][name] = {"delta": gain, "reference": arm_stats(ref["rewards"][name]).to_dict(),
                                   "candidate": arm_stats(cand["rewards"][name]).to_dict()}
    for spec, run in runs.items():
        result["engines"][spec] = {k: run[k] for k in ("tokens", "seconds", "tokens_per_s", "mean_tokens")}
    result["equivalent"] = all(r["delta"]["within_2se"] for r in result["rewards"].values())

    print(f"{len(records)} builtin-ifeval:train prompts × {args.m} answers per engine, seed {args.seed}")
    for name, r in result["rewards"].items():
        d = r["delta"]
        print(f"{name:8s} reference {r['reference']['mean']:.4f}  candidate {r['candidate']['mean']:.4f}  "
              f"Δ = {d['mean']:+.4f} ± {d['stderr']:.4f} (n = {d['n']} prompts)  "
              f"{'within' if d['within_2se'] else 'OUTSIDE'} 2 s.e.")
    for spec, e in result["engines"].items():
        print(f"{spec:40s} {e['tokens']:6d} tokens in {e['seconds']:.1f} s = {e['tokens_per_s']:.1f} tok/s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
