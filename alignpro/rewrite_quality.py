"""How often is a rewrite x′ still a prompt with the same intent as x (rather than an answer, or a drift)?

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

import re
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
