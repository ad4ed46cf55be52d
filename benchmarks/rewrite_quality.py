"""How often does a rewrite template give a rewrite that is still a prompt with the same intent?

    .venv/bin/python benchmarks/rewrite_quality.py --template rewrite-default --n 0 --k 2 --json

Samples K rewrites of each builtin TRAIN prompt with the prompter and applies the automatic criteria of
``alignpro.rewrite_quality`` (parsed; reads as a request, not an answer; MiniLM cosine to x ≥ 0.6). Prints a
few examples and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--template", default="rewrite-default")
    ap.add_argument("--prompter", default="smollm2")
    ap.add_argument("--n", type=int, default=0, help="first N train prompts (0 = all)")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--show", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from alignpro.data import builtin_prompts
    from alignpro.rewards.builtin import BuiltinReward
    from alignpro.rewrite_quality import judge_rewrites, unrelated_similarity
    from alignpro.specs import make_prompter

    prompts = [r.text for r in builtin_prompts("train")]
    prompts = prompts[:args.n] if args.n else prompts
    prompter = make_prompter(args.prompter, args.template, batch_size=args.batch_size)
    t0 = time.perf_counter()
    sets = prompter.rewrite(prompts, args.k, seed=args.seed)
    seconds = time.perf_counter() - t0
    xs = [s.prompt for s in sets for _ in s.rewrites]
    rws = [r for s in sets for r in s.rewrites]
    encoder = BuiltinReward().encoder
    verdicts = judge_rewrites(xs, [r.text for r in rws], [r.parsed for r in rws], encoder)
    control = unrelated_similarity(prompts, encoder)
    good = np.array([v.good for v in verdicts])
    rng = np.random.default_rng(0)
    for i in rng.choice(len(xs), size=min(args.show, len(xs)), replace=False):
        v = verdicts[i]
        print(f"[{'GOOD' if v.good else 'bad '}] sim={v.similarity:.2f} req={v.is_request} | {xs[i]!r} -> {rws[i].text!r}")
    result = {
        "template": args.template, "prompts": len(prompts), "k": args.k, "rewrites": len(rws),
        "good_fraction": float(good.mean()),
        "good_stderr": float(good.std(ddof=1) / np.sqrt(len(good))),
        "parsed_fraction": float(np.mean([v.parsed for v in verdicts])),
        "request_fraction": float(np.mean([v.is_request for v in verdicts])),
        "same_intent_fraction": float(np.mean([v.same_intent for v in verdicts])),
        "mean_similarity": float(np.mean([v.similarity for v in verdicts])),
        "unrelated_similarity_p95": float(np.quantile(control, 0.95)),
        "identical_to_prompt_fraction": float(np.mean([r.text.strip() == x.strip() for r, x in zip(rws, xs)])),
        "seconds": seconds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
