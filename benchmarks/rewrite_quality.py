"""How often does a rewrite template give a rewrite that is still a prompt with the same intent?

    .venv/bin/python benchmarks/rewrite_quality.py --template rewrite-default --n 0 --k 2 --json

Samples K rewrites of each builtin TRAIN prompt with the prompter and applies the automatic criteria below
(parsed; reads as a request, not an answer; MiniLM cosine to x ≥ 0.6). Prints a few examples and, last, one JSON
line.

Automatic criteria, applied to each (x, x′):

- ``parsed``: the template's parser found a rewrite at all;
- ``is_request``: x′ reads as a request: it contains a question mark, or its first word is a request verb or
  question word (write, explain, how, what, ...), or it says please — and it is at most ``max_len_ratio`` times
  as long as x (plus 80 characters): a long text is an answer, not a prompt;
- ``same_intent``: the MiniLM cosine between x and x′ is at least ``min_similarity``.

A rewrite is *good* when all three hold. The threshold is calibrated against a negative control: the cosine
between x and an unrelated prompt of the same set (reported alongside).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: first words of an imperative request; question words count only with a question mark
REQUEST_VERBS = {
    "write", "explain", "describe", "give", "list", "compare", "help", "tell", "suggest", "plan", "create",
    "make", "draft", "summarize", "summarise", "recommend", "show", "teach", "outline", "provide", "share",
    "please", "find", "design", "rewrite", "translate", "fix", "debug", "convert", "generate", "calculate",
    "choose", "prepare", "build", "offer", "walk", "brainstorm", "compose", "recommend", "review", "name",
}


@dataclass(frozen=True)
class RewriteVerdict:
    parsed: bool
    is_request: bool
    similarity: float
    same_intent: bool

    @property
    def good(self) -> bool:
        return self.parsed and self.is_request and self.same_intent


def looks_like_request(prompt: str, rewrite: str, max_len_ratio: float = 3.0) -> bool:
    """A request (question, imperative, or 'please'), not an answer-length text."""
    text = rewrite.strip()
    if not text or len(text) > max_len_ratio * len(prompt) + 80:
        return False
    if text.endswith(":"):
        return False
    first = re.sub(r"[^a-z']", "", text.split()[0].lower())
    return "?" in text or first in REQUEST_VERBS or bool(re.search(r"\bplease\b", text, re.IGNORECASE))


def judge_rewrites(prompts: Sequence[str], rewrites: Sequence[str], parsed: Sequence[bool], encoder,
                   min_similarity: float = 0.6) -> list[RewriteVerdict]:
    """One verdict per (x, x′); ``encoder`` is a SentenceTransformer."""
    emb = encoder.encode(list(prompts) + list(rewrites), normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
    n = len(prompts)
    sims = np.sum(emb[:n] * emb[n:], axis=1)
    return [RewriteVerdict(bool(ok), looks_like_request(x, xp), float(s), bool(s >= min_similarity))
            for x, xp, ok, s in zip(prompts, rewrites, parsed, sims)]


def unrelated_similarity(prompts: Sequence[str], encoder, seed: int = 0) -> np.ndarray:
    """Negative control: cosine between each prompt and a random OTHER prompt of the set."""
    emb = encoder.encode(list(prompts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    n = len(prompts)
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n, size=n)
    return np.sum(emb * emb[(np.arange(n) + shift) % n], axis=1)


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
