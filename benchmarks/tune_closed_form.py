"""Choose K, λ and the identity prior α for the closed-form prompter on the TRAIN split (never on eval).

    .venv/bin/python benchmarks/tune_closed_form.py --n 32 --k 6 --m 4 --json

One rollout: K rewrites (+ the identity) per train prompt, M answers per candidate. The M answers are split in
two halves: the first half estimates R̂ and selects x′ ~ ρ* (eq 10); the second half, never seen by the
selection, scores the choice (an unbiased stand-in for fresh answers). Every (K' ≤ K, λ, α) is evaluated on the
same rollout by re-weighting, with the no_ft baseline = the identity candidate's held-out answers.

It also prints how far apart the candidates of one prompt really are (the spread of R(x, x′) net of answer noise)
and how the argmax's gain grows with the answers behind R̂. ``--save FILE.npy`` keeps the (N, 1+K, M) rewards;
``--load FILE.npy`` re-analyses them without sampling:

    .venv/bin/python benchmarks/tune_closed_form.py --n 32 --k 8 --m 16 --batch-size 128 --save r.npy
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
    ap.add_argument("--save", default="", help="also write the (N, 1+K, M) reward array to this .npy file")
    ap.add_argument("--load", default="", help="analyse a reward array written by --save instead of sampling")
    args = ap.parse_args()

    from alignpro.backends.base import GenerationConfig
    from alignpro.data import builtin_prompts
    from alignpro.method import composed_rollout, optimal_prompter_weights
    from alignpro.specs import make_prompter, make_reward, make_target

    if args.load:
        rewards = np.load(args.load)
        args.k, args.m = rewards.shape[1] - 1, rewards.shape[2]
    else:
        prompts = [r.text for r in builtin_prompts("train")][: args.n]
        target = make_target("smollm2", GenerationConfig(max_new_tokens=args.max_new_tokens),
                             batch_size=args.batch_size)
        prompter = make_prompter("smollm2", args.template, batch_size=args.batch_size)
        reward = make_reward("builtin")
        rewards = composed_rollout(prompts, prompter, target, reward, k=args.k, m=args.m, identity_prior=0.5,
                                   seed=args.seed).rewards
    if args.save:
        np.save(args.save, rewards)
    h = args.m // 2
    sel, held = rewards[:, :, :h].mean(-1), rewards[:, :, h:]  # (N, C), (N, C, M-h)
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
    spread = candidate_spread(rewards)
    by_m = argmax_gain_by_selection_answers(rewards)
    print(f"candidate spread per prompt: sd of the true R(x, x′) ≈ {spread['true_sd']:.4f} "
          f"(observed {spread['observed_sd']:.4f}, noise {spread['noise_sd']:.4f})")
    for r in by_m:
        print(f"argmax over x + {args.k} rewrites, R̂ from {r['m_select']} answers: gain {r['gain']:+.4f} ± "
              f"{r['stderr']:.4f} (scored on {r['m_score']} other answers)")
    print(json.dumps({"n": rewards.shape[0], "no_ft_mean": float(base.mean()), "best": rows[0],
                      "candidate_spread": spread, "argmax_gain_by_m": by_m, "all": rows}))


def candidate_spread(rewards: np.ndarray) -> dict[str, float]:
    """How different are the candidates' true values R(x, x′) within a prompt? One-way random effects on the
    (N, C, M) rewards: the variance of the C candidate means minus the answer noise σ²/M, averaged over prompts."""
    m = rewards.shape[2]
    observed = rewards.mean(-1).var(-1, ddof=1).mean()
    noise = rewards.var(-1, ddof=1).mean() / m
    return {"observed_sd": float(np.sqrt(observed)), "noise_sd": float(np.sqrt(noise)),
            "true_sd": float(np.sqrt(max(observed - noise, 0.0)))}


def argmax_gain_by_selection_answers(rewards: np.ndarray, reps: int = 200, seed: int = 0) -> list[dict]:
    """Gain of the argmax of R̂ (eq 10 at λ = 0) over x, with R̂ from m_select answers per candidate and the
    choice scored on M/2 of the other answers (the same number for every m_select), averaged over ``reps`` random
    splits of the M answers; stderr over prompts."""
    n, _, m = rewards.shape
    m_score = m // 2
    rng = np.random.default_rng(seed)
    out = []
    for m_select in [s for s in (1, 2, 4, 6, 8, 12) if s + m_score <= m]:
        gains = np.zeros((reps, n))
        for rep in range(reps):
            perm = rng.permutation(m)
            pick = rewards[:, :, perm[:m_select]].mean(-1).argmax(-1)  # (N,)
            held = rewards[:, :, perm[m_select:m_select + m_score]].mean(-1)  # (N, C)
            gains[rep] = held[np.arange(n), pick] - held[:, 0]
        g = gains.mean(0)
        out.append({"m_select": m_select, "m_score": m_score, "gain": float(g.mean()),
                    "stderr": float(g.std(ddof=1) / math.sqrt(n))})
    return out


if __name__ == "__main__":
    main()
