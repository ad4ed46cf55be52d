"""Screen fixed framings of the prompt on the TRAIN split: how does π_F's reward (against the ORIGINAL x) move
when x is wrapped as a given x′? Used to choose the few-shot examples of the default rewrite template (the
framings the LM prompter learns to imitate); never run on the eval split.

    .venv/bin/python benchmarks/screen_framings.py --n 32 --m 4 --json

Every framing is a format string with ``{prompt}``; the first is always ``{prompt}`` itself (no_ft). The gain of a
framing is the paired difference of per-prompt mean rewards against no_ft, with its standard error over prompts.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

FRAMINGS = [
    "{prompt}",
    "Hi! I'd really appreciate your help with this: {prompt}",
    "Thank you so much for your help! {prompt}",
    "Hello! I'm excited to learn about this: {prompt}",
    "Hi there! Could you kindly help me with a clear, friendly answer? {prompt}",
    "{prompt} Thanks so much, I really appreciate it!",
    "{prompt} Please keep your answer short and focused.",
    "Question: {prompt}",
    "I love learning new things! {prompt}",
    "{prompt} (Please start your answer by restating my question.)",
    "Please give a positive, encouraging and on-topic answer. {prompt}",
    "Hi! Quick question: {prompt}",
    "I'd be so grateful for your friendly advice! {prompt}",
    "Good morning! Hope you're having a wonderful day. {prompt}",
    "Hello! Please help me with this great question: {prompt}",
    "{prompt} Explain it simply and kindly.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="train prompts")
    ap.add_argument("--m", type=int, default=4, help="answers per (prompt, framing)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--framings", default="", help="a JSON file with a list of framings (default: the list above)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from alignpro.backends.base import GenerationConfig
    from alignpro.data import builtin_prompts
    from alignpro.specs import make_reward, make_target

    framings = json.load(open(args.framings)) if args.framings else FRAMINGS
    if framings[0] != "{prompt}":
        framings = ["{prompt}"] + framings
    prompts = [r.text for r in builtin_prompts("train")][: args.n]
    target = make_target("smollm2", GenerationConfig(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size)
    reward = make_reward("builtin")
    xs = [f.format(prompt=p) for f in framings for p in prompts]
    answers = target.answer(xs, n=args.m, seed=args.seed)
    originals = [p for _ in framings for p in prompts for _ in range(args.m)]
    flat = [a.text for row in answers for a in row]
    comp = reward.components(originals, flat)
    r = np.array(reward.score(originals, flat)).reshape(len(framings), len(prompts), args.m).mean(-1)  # (F, N)
    rel = np.clip(comp["relevance"], 0, 1).reshape(len(framings), len(prompts), args.m).mean((-1, -2))
    tone = comp["tone"].reshape(len(framings), len(prompts), args.m).mean((-1, -2))
    rows = []
    for f in range(len(framings)):
        d = r[f] - r[0]
        rows.append({"framing": framings[f], "mean": float(r[f].mean()), "gain": float(d.mean()),
                     "gain_stderr": float(d.std(ddof=1) / math.sqrt(len(d))) if f else 0.0,
                     "relevance": float(rel[f]), "tone": float(tone[f])})
    if not args.json:
        for row in sorted(rows, key=lambda x: -x["gain"]):
            print(f"{row['gain']:+.3f} ± {row['gain_stderr']:.3f}  rel {row['relevance']:.3f} tone {row['tone']:.3f}"
                  f"  {row['framing']}")
    print(json.dumps({"n": len(prompts), "m": args.m, "framings": rows}))


if __name__ == "__main__":
    main()
