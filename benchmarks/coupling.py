"""How much coupled answers (common random numbers) shrink paired standard errors, on TRAIN prompts.

    python benchmarks/coupling.py --n-prompts 48 --n 4 --rhat-prompts 24 --k 3 --m 4

Two measurements, each made twice on the same prompts and the same rewrites, once with coupled answers (answer j
to x and to every x′ of x from one stream keyed by x, as every command now draws them) and once with independent
answers (each x′ its own streams: the key salted with the x′ shown):

1. the paired s.e. of (align_pro − no_ft) at n answers per prompt: the shipped trained prompter's one rewrite per
   prompt, π_F's answers to it and to x, the s.e. of the mean over prompts of the per-prompt difference
   (:func:`alignpro.metrics.paired_gain`);
2. the s.e. of R̂ differences between a prompt's candidates: ρ_sft's K rewrites and x itself, M answers each
   (:func:`alignpro.method.composed_rollout`); for every pair of distinct candidates of a prompt the s.e. of
   R̂(x, x′_a) − R̂(x, x′_b) from its M answer pairs, sd(r_a,j − r_b,j)/√M; reported as the root mean square over
   pairs.

Prompts: builtin-ifeval:train (never the eval split). Writes a JSON of the numbers (``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from alignpro.arms import FRESH_SEED, REWRITE_SEED, answer_and_score
from alignpro.backends.base import prompt_keys
from alignpro.metrics import paired_gain
from alignpro.method import composed_rollout


class Independent:
    """π_F with each x′ on streams of its own: the key salted with the prompt shown (no common random numbers)."""

    def __init__(self, target) -> None:
        self.target, self.name = target, target.name

    def answer(self, prompts, *, n=1, seed=None, systems=None, keys=None):
        salted = [f"{k}\x1f{p}" for k, p in zip(keys, prompts)]
        return self.target.answer(prompts, n=n, seed=seed, systems=systems, keys=salted)


def rhat_difference_se(rewards: np.ndarray, candidates: list[list[str]]) -> tuple[float, int]:
    """(N, C, M) rewards → RMS over pairs of distinct candidates of a prompt of sd(r_a − r_b)/√M, and the pairs."""
    m = rewards.shape[-1]
    var = [np.var(rewards[i, a] - rewards[i, b], ddof=1) / m for i, cands in enumerate(candidates)
           for a, b in itertools.combinations(range(len(cands)), 2) if cands[a] != cands[b]]
    return float(np.sqrt(np.mean(var))), len(var)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", default="builtin-ifeval:train")
    ap.add_argument("--n-prompts", type=int, default=48)
    ap.add_argument("--n", type=int, default=4, help="answers per prompt and arm")
    ap.add_argument("--rhat-prompts", type=int, default=24)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--target", default="smollm2")
    ap.add_argument("--reward", default="ifeval")
    ap.add_argument("--prompter", default="smollm2", help="ρ_sft, the proposal of the R̂ candidates")
    ap.add_argument("--trained", default="shipped", help="the trained prompter (shipped = the shipped adapter)")
    ap.add_argument("--part", choices=("all", "paired", "rhat"), default="all", help="both measurements or one")
    ap.add_argument("--out", default="coupling.json")
    args = ap.parse_args(argv)
    if "eval" in args.prompts.split(":")[-1]:
        ap.error("measure on train prompts only")

    from alignpro.backends.base import PAPER_ANSWER_CONFIG
    from alignpro.data import load_prompts
    from alignpro.specs import make_reward, make_target

    t0 = time.perf_counter()
    log = lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True)  # noqa: E731
    records = load_prompts(args.prompts, n=args.n_prompts, seed=args.seed).records
    x, systems = [r.text for r in records], [r.system for r in records]
    keys = prompt_keys(x, systems)
    reward = make_reward(args.reward, records)
    target = make_target(args.target, PAPER_ANSWER_CONFIG.with_(max_new_tokens=args.max_new_tokens),
                         batch_size=args.batch_size)
    chunk = max(1, args.batch_size // args.n)
    result = {"command": "python benchmarks/coupling.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "prompts": args.prompts, "n_prompts": len(x), "n": args.n}

    out = Path(args.out)
    # ---- 1. paired s.e. of (align_pro − no_ft) -------------------------------------------------------------
    if args.part in ("all", "paired"):
        paired_se(args, result, x, systems, keys, target, reward, chunk, log)
        out.write_text(json.dumps(result, indent=1) + "\n")
    # ---- 2. s.e. of R̂ differences between a prompt's candidates --------------------------------------------
    if args.part in ("all", "rhat"):
        rhat_se(args, result, x, keys, target, reward, log)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out}")
    return 0


def paired_se(args, result, x, systems, keys, target, reward, chunk, log) -> None:
    """Measurement 1 into ``result``."""
    from alignpro.demo import ADAPTERS
    from alignpro.specs import make_prompter

    spec = f"hf:{ADAPTERS / 'ifeval-prompter'}" if args.trained == "shipped" else args.trained
    trained = make_prompter(spec, "rewrite-restate", batch_size=args.batch_size)
    shown = [s.rewrites[0].text for s in trained.rewrite(x, 1, seed=args.seed + REWRITE_SEED)]
    del trained
    log(f"{len(x)} rewrites; {sum(a == b for a, b in zip(shown, x))} keep x")
    seed = args.seed + FRESH_SEED
    no_ft = answer_and_score(target, reward, x, x, systems, keys, n=args.n, seed=seed, chunk=chunk)
    log(f"no_ft {no_ft.rewards.mean():.4f}")
    arm = {}
    for mode, t in (("coupled", target), ("independent", Independent(target))):
        arm[mode] = answer_and_score(t, reward, shown, x, systems, keys, n=args.n, seed=seed, chunk=chunk)
        g = paired_gain(arm[mode].rewards, no_ft.rewards)
        corr = float(np.corrcoef(arm[mode].rewards.mean(1), no_ft.rewards.mean(1))[0, 1])
        result[f"align_pro_vs_no_ft_{mode}"] = {**g, "per_prompt_correlation": corr}
        log(f"align_pro − no_ft ({mode}): {g['mean']:+.4f} ± {g['stderr']:.4f}, correlation {corr:.3f}")


def rhat_se(args, result, x, keys, target, reward, log) -> None:
    """Measurement 2 into ``result``."""
    from alignpro.specs import make_prompter

    prompter = make_prompter(args.prompter, "rewrite-restate", batch_size=args.batch_size)
    px, pk = x[:args.rhat_prompts], keys[:args.rhat_prompts]
    for mode, t in (("coupled", target), ("independent", Independent(target))):
        ro = composed_rollout(px, prompter, t, reward, k=args.k, m=args.m, identity_prior=0.5,
                              seed=args.seed + 1000, keys=pk)
        se, pairs = rhat_difference_se(ro.rewards, ro.candidates)
        result[f"rhat_difference_se_{mode}"] = {"rms_se": se, "pairs": pairs, "k": args.k, "m": args.m,
                                                "n_prompts": len(px)}
        log(f"R̂ difference s.e. ({mode}): {se:.4f} over {pairs} pairs")


if __name__ == "__main__":
    raise SystemExit(main())
