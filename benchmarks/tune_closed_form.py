"""Choose K, λ and the identity prior α for the closed-form prompter on the TRAIN split (never on eval).

    .venv/bin/python benchmarks/tune_closed_form.py --n 32 --k 6 --m 4 --json

One rollout: K rewrites (+ the identity) per train prompt, M answers per candidate. The M answers are split in
two halves: the first half estimates R̂ and selects x′ ~ ρ* (eq 10); the second half, never seen by the
selection, scores the choice (an unbiased stand-in for fresh answers). Every (K' ≤ K, λ, α) is evaluated on the
same rollout by re-weighting, with the no_ft baseline = the identity candidate's held-out answers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--template", default="rewrite-default")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from alignpro.backends.base import GenerationConfig
    from alignpro.data import builtin_prompts
    from alignpro.method import composed_rollout, optimal_prompter_weights
    from alignpro.specs import make_prompter, make_reward, make_target

    prompts = [r.text for r in builtin_prompts("train")][: args.n]
    target = make_target("smollm2", GenerationConfig(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size)
    prompter = make_prompter("smollm2", args.template, batch_size=args.batch_size)
    reward = make_reward("builtin")
    ro = composed_rollout(prompts, prompter, target, reward, k=args.k, m=args.m, identity_prior=0.5, seed=args.seed)
    h = args.m // 2
    sel, held = ro.rewards[:, :, :h].mean(-1), ro.rewards[:, :, h:]  # (N, C), (N, C, M-h)
    base = held[:, 0].ravel()
    rows = []
    for k, lam, alpha in itertools.product([1, 2, 3, 4, 6, 8], [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, math.inf], [0.0, 0.25, 0.5]):
        if k > args.k:
            continue
        cols = ([0] if alpha > 0 else []) + list(range(1, 1 + k))
        prior = np.log(([alpha] if alpha > 0 else []) + [(1 - alpha) / k] * k)
        w = optimal_prompter_weights(sel[:, cols], prior, lam)  # (N, C')
        expected = (w[:, :, None] * held[:, cols]).sum(1)  # E_{x'~ρ*} of the held-out rewards, (N, M-h)
        d = (expected - held[:, 0]).ravel()
        rows.append({"k": k, "lam": lam, "alpha": alpha, "mean": float(expected.mean()),
                     "gain_vs_no_ft": float(d.mean()), "gain_stderr": float(d.std(ddof=1) / math.sqrt(d.size))})
    rows.sort(key=lambda r: -r["gain_vs_no_ft"])
    for r in rows[:12]:
        print(r)
    print(json.dumps({"n": len(prompts), "no_ft_mean": float(base.mean()), "best": rows[0],
                      "all": rows}))


if __name__ == "__main__":
    main()
