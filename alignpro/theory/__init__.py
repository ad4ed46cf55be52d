"""Exact tabular Align-Pro theory: Lemma 1 (eq 10), the gap decomposition (eq 7) and Theorem 1 (eq 11).

The pure functions live in :mod:`alignpro.theory.tabular`; experiments (``verify``, ``sweep``) in
:mod:`alignpro.theory.sweep`; the ``alignpro theory`` command in :mod:`alignpro.theory.cli`. See docs/theory.md.
"""

from alignpro.theory.tabular import (
    Analysis, GapDecomposition, InvalidInstanceError, TabularInstance, Theorem1Bound, analyse, composed_policy,
    expected_reward, frozen_reward, gap_decomposition, kl_divergence, optimal_policy, optimal_prompter,
    optimal_prompter_kl, prompter_log_partition, prompter_objective, prompter_objective_per_prompt,
    random_instance, suboptimality_gap, theorem1_bound, tv_distance,
)

__all__ = [
    "Analysis", "GapDecomposition", "InvalidInstanceError", "TabularInstance", "Theorem1Bound", "analyse",
    "composed_policy", "expected_reward", "frozen_reward", "gap_decomposition", "kl_divergence", "optimal_policy",
    "optimal_prompter", "optimal_prompter_kl", "prompter_log_partition", "prompter_objective",
    "prompter_objective_per_prompt", "random_instance", "suboptimality_gap", "theorem1_bound", "tv_distance",
]
