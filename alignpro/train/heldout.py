"""The prompter's learning curve on held-out TRAIN prompts, measured as the evaluation measures an arm.

``heldout: N`` removes whole prompt groups (a base prompt with all its instruction variants, :func:`prompt_group`)
holding at least N of the training prompts from training, chosen by a seeded shuffle, before the first step. Before
the first step, every ``heldout_every`` steps and after the last, the current ρ rewrites each held-out prompt once
(sampled at the rollout settings from a fixed stream per prompt, so two rows differ by the weights alone), π_F answers x′
``heldout_answers`` times on the evaluation's coupled streams (seed + :data:`alignpro.arms.FRESH_SEED`, keyed by x
and j), and each answer is scored against x. π_F's answers to x itself (no_ft) and to the fixed-prompt no-learning
baselines (``suffix``, ``best_suffix``, ``repeat``) are drawn once, on the same streams; each row of
``RUN/heldout.jsonl`` holds the prompter's mean reward and its paired gains (mean ± s.e. over the held-out prompts,
:func:`alignpro.metrics.paired_gain`) over x and over every baseline, and the share of x′ that keep x verbatim.
The prompts are training-source prompts never trained on: choose recipes on this curve, never on an eval split.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from alignpro import baselines
from alignpro.arms import FRESH_SEED, Arm, parse_baseline
from alignpro.backends.base import GenerationConfig, RewardModel, Target, stream_seed
from alignpro.data import PromptRecord
from alignpro.data.builtin import IFEVAL_VARIANT_MARK
from alignpro.data.writing import VARIANT_MARK
from alignpro.errors import ConfigError
from alignpro.metrics import keeps_original_fraction, paired_gain
from alignpro.templates import RewriteTemplate
from alignpro.train.roles import record_key

HELDOUT_FILE = "heldout.jsonl"
HELDOUT_REWRITE_SEED = 900  #: the held-out rewrites' stream: seed + this, the same at every measurement
FIXED_PROMPT_BASELINES = (Arm.SUFFIX, Arm.BEST_SUFFIX, Arm.REPEAT)  #: baselines that are one prompt per x
#: a variant's id: its base prompt's id, a set's variant mark, a number (w001-v2, p001-if3)
_VARIANT = re.compile(rf"^(.+)(?:{re.escape(VARIANT_MARK)}|{re.escape(IFEVAL_VARIANT_MARK)})\d+$")


def prompt_group(record_id: str) -> str:
    """The base prompt a record is a variant of (``w001`` for ``w001-v2``, ``p001`` for ``p001-if3``), else its id."""
    match = _VARIANT.match(record_id)
    return match.group(1) if match else record_id


def split_heldout(records: Sequence[PromptRecord], n: int, seed: int) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(training records, held-out records): whole groups, in a seeded order, until at least ``n`` are held out;
    both lists keep the source order. ``n`` = 0 holds out nothing."""
    if n <= 0:
        return list(records), []
    count = Counter(prompt_group(r.id) for r in records)
    groups = sorted(count)
    held: set[str] = set()
    for i in np.random.default_rng(seed).permutation(len(groups)):
        if sum(count[g] for g in held) >= n:
            break
        held.add(groups[i])
    train = [r for r in records if prompt_group(r.id) not in held]
    if not train:
        raise ConfigError(f"setting 'heldout' ({n}) leaves no training prompt of the {len(records)} loaded; hold "
                          "out fewer, or train on a larger source")
    return train, [r for r in records if prompt_group(r.id) in held]


def check_heldout_baselines(entries: Sequence[str]) -> None:
    """ConfigError unless every entry is a fixed-prompt baseline (``suffix[=TEXT]``, ``best_suffix``, ``repeat``)."""
    for entry in entries:
        arm, _ = parse_baseline(entry)
        if arm not in FIXED_PROMPT_BASELINES:
            raise ConfigError(f"setting 'heldout_baselines': '{entry}' is not a fixed-prompt baseline; valid: "
                              + ", ".join(a.value for a in FIXED_PROMPT_BASELINES) + " (suffix=TEXT for another line)")


class HeldoutCurve:
    """Measures the current prompter on the held-out prompts (see the module docstring)."""

    def __init__(self, records: Sequence[PromptRecord], *, chat_prompt: Callable[[list[dict[str, str]]], str],
                 template: RewriteTemplate, target: Target, reward: RewardModel, answers: int, seed: int,
                 baseline_entries: Sequence[str]) -> None:
        self.records, self.template, self.target, self.reward = list(records), template, target, reward
        self.answers, self.seed = answers, seed
        self.queries = [chat_prompt(template.messages(r.text)) for r in self.records]
        self.keys = [record_key(r) for r in self.records]
        self.originals = [r.text for r in self.records]
        self.baseline_entries = list(baseline_entries)
        self._fixed: dict[str, np.ndarray] | None = None  # no_ft and the baselines: drawn once

    def answer_rewards(self, shown: Sequence[str]) -> np.ndarray:
        """(N, answers) rewards against x of π_F's coupled answers to ``shown``."""
        rows = self.target.answer(list(shown), n=self.answers, seed=self.seed + FRESH_SEED,
                                  systems=[r.system for r in self.records], keys=self.keys)
        flat = self.reward.score([x for x in self.originals for _ in range(self.answers)],
                                 [a.text for row in rows for a in row])
        return np.asarray(flat, dtype=float).reshape(len(self.records), self.answers)

    def fixed_arms(self) -> dict[str, np.ndarray]:
        """no_ft's and each baseline's (N, answers) rewards, drawn the first time they are asked for."""
        if self._fixed is None:
            self._fixed = {Arm.NO_FT.value: self.answer_rewards(self.originals)}
            for entry in self.baseline_entries:
                arm, line = parse_baseline(entry)
                self._fixed[entry] = self.answer_rewards(baselines.shown_prompts(arm.value, self.originals, line))
        return self._fixed

    def rewrites(self, sample: Callable[[list[str], list[int]], list[str]], chunk: int) -> list[str]:
        """One x′ per held-out prompt: ``sample(queries, row_seeds)`` gives raw rewrites (each from its prompt's own
        stream, the same at every measurement), parsed by the template."""
        seeds = [stream_seed(self.seed + HELDOUT_REWRITE_SEED, key, 0) for key in self.keys]
        raw: list[str] = []
        for start in range(0, len(self.queries), chunk):
            raw += sample(self.queries[start:start + chunk], seeds[start:start + chunk])
        return [self.template.parse(text, x)[0] for text, x in zip(raw, self.originals, strict=True)]

    def measure(self, step: int, sample: Callable[[list[str], list[int]], list[str]], chunk: int
                ) -> dict[str, Any]:
        """The curve's row at ``step``: the prompter's reward, its paired gains, keeps-x, sizes and seconds."""
        t0 = time.perf_counter()
        fixed = self.fixed_arms()
        shown = self.rewrites(sample, chunk)
        mine = self.answer_rewards(shown)
        row: dict[str, Any] = {"step": step, "prompts": len(self.records), "answers": self.answers,
                               "reward": float(mine.mean()), "keeps_x": keeps_original_fraction(self.originals, shown)}
        for name, rewards in fixed.items():
            gain = paired_gain(mine, rewards)
            label = "x" if name == Arm.NO_FT.value else name
            row[f"{label}_reward"] = float(rewards.mean())
            row[f"gain_vs_{label}"], row[f"gain_vs_{label}_se"] = gain["mean"], gain["stderr"]
        row["seconds"] = time.perf_counter() - t0
        return row


def policy_sampler(lm, tokenizer, gen: GenerationConfig, eos_ids, pad_id, device
                   ) -> Callable[[list[str], list[int]], list[str]]:
    """``sample(queries, row_seeds)`` for :class:`HeldoutCurve`: the policy's raw rewrites at ``gen``."""
    from alignpro.train.policy import sample_responses

    def sample(queries: list[str], row_seeds: list[int]) -> list[str]:
        enc = tokenizer(queries, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        ids, mask = sample_responses(lm, enc["input_ids"], enc["attention_mask"], gen, eos_ids, pad_id,
                                     row_seeds=row_seeds)
        return [tokenizer.decode(i[m.bool()], skip_special_tokens=True).strip() for i, m in zip(ids, mask)]

    return sample
