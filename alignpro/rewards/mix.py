"""A weighted sum of rewards: ``0.75*ifeval+0.25*builtin``, or ``ifeval+builtin`` for equal weights.

r(x, y) = Σ_i w_i · r_i(x, y), with r_max = Σ_i w_i · r_max_i (each term scored against the ORIGINAL x). Weights
without a ``w*`` prefix share what the written weights leave of 1 equally, so ``ifeval+builtin`` is
0.5 · ifeval + 0.5 · builtin: the instruction-following score, guarded by relevance and tone (an answer that
follows the format but drifts off topic loses the builtin half).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from alignpro.errors import AlignProError


@dataclass(frozen=True)
class MixTerm:
    weight: float
    spec: str


def parse_mix(spec: str) -> list[MixTerm]:
    """The terms of a ``[w*]reward+[w*]reward...`` spec; weights are > 0 and, when all given, sum to 1."""
    terms: list[tuple[float | None, str]] = []
    for part in spec.split("+"):
        part = part.strip()
        head, star, tail = part.partition("*")
        weight: float | None = None
        if star:
            try:
                weight = float(head)
            except ValueError:
                raise AlignProError(f"reward spec '{spec}': '{head}' in '{part}' is not a weight; write "
                                    "w*reward, e.g. 0.75*ifeval+0.25*builtin") from None
            part = tail.strip()
            if not weight > 0:
                raise AlignProError(f"reward spec '{spec}': weight {weight} of '{part}' must be > 0")
        if not part:
            raise AlignProError(f"reward spec '{spec}' has an empty term; e.g. ifeval+builtin")
        terms.append((weight, part))
    given = sum(w for w, _ in terms if w is not None)
    free = [s for w, s in terms if w is None]
    if free and given >= 1:
        raise AlignProError(f"reward spec '{spec}': the written weights sum to {given:g}, leaving nothing for "
                            f"{free}")
    if not free and abs(given - 1) > 1e-9:
        raise AlignProError(f"reward spec '{spec}': the weights sum to {given:g}; they must sum to 1")
    share = (1 - given) / len(free) if free else 0.0
    return [MixTerm(share if w is None else w, s) for w, s in terms]


class MixedReward:
    """Σ_i w_i · r_i(x, y) over already-built rewards."""

    def __init__(self, terms: Sequence[tuple[float, object]], name: str) -> None:
        self.terms = list(terms)
        self.name = name
        maxes = [getattr(r, "r_max", None) for _, r in self.terms]
        self.r_max = None if any(m is None for m in maxes) else float(sum(w * m for (w, _), m in zip(self.terms, maxes)))

    def components(self, prompts: Sequence[str], answers: Sequence[str]) -> dict[str, np.ndarray]:
        """Each term's own reward, (N,) per term name."""
        return {getattr(r, "name", str(i)): np.asarray(r.score(prompts, answers), dtype=float)
                for i, (_, r) in enumerate(self.terms)}

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        total = np.zeros(len(prompts))
        for w, r in self.terms:
            total += w * np.asarray(r.score(prompts, answers), dtype=float)
        return total.tolist()
