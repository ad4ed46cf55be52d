import math

import numpy as np
import pytest

from alignpro.metrics import arm_stats, reward_win_rate, win_rate_from_outcomes


def test_arm_stats_exact():
    s = arm_stats([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.n == 4
    assert s.variance == pytest.approx(5 / 3)
    assert s.stderr == pytest.approx(math.sqrt(5 / 3 / 4))


def test_arm_stats_empty_rejected():
    with pytest.raises(ValueError):
        arm_stats([])


def test_win_rate_counts_and_stderr():
    w = win_rate_from_outcomes([1, 1, 0.5, 0], arm="a", baseline="b", judge="j")
    assert (w.wins, w.ties, w.losses, w.n) == (2, 1, 1, 4)
    assert w.win_rate == pytest.approx(0.625)
    sd = math.sqrt(sum((x - 0.625) ** 2 for x in [1, 1, 0.5, 0]) / 3)
    assert w.stderr == pytest.approx(sd / 2)


def test_reward_judge_tie_margin_and_label():
    w = reward_win_rate([0.5, 0.52, 0.3], [0.505, 0.5, 0.4], arm="a", baseline="b", tie_margin=0.01)
    assert (w.wins, w.ties, w.losses) == (1, 1, 1)
    assert "reward" in w.judge and "0.01" in w.judge
    with pytest.raises(ValueError):
        reward_win_rate([1.0], [1.0, 2.0], arm="a", baseline="b")


def test_paired_gain_by_hand_and_the_share_of_rewrites_keeping_x() -> None:
    from alignpro.metrics import keeps_original_fraction, paired_gain

    arm = np.array([[1.0, 0.0], [1.0, 1.0], [0.5, 0.5]])  # 3 prompts x 2 answers
    base = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    g = paired_gain(arm, base)  # per-prompt differences 0.5, 0.5, 0
    assert g["n"] == 3 and g["mean"] == pytest.approx(1 / 3)
    assert g["stderr"] == pytest.approx(np.std([0.5, 0.5, 0.0], ddof=1) / np.sqrt(3))
    assert keeps_original_fraction([" a b ", "c", "d"], ["x a b y", "c!", "e"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        keeps_original_fraction(["a"], ["a", "b"])


def test_ifeval_four_accuracies_by_hand() -> None:
    """Three answers with 2, 1 and 3 instructions. Prompt level: answers following ALL their instructions; instruction
    level: followed / instructions pooled over answers (6 here), not the mean of per-answer fractions."""
    from alignpro.metrics import ifeval_accuracies, instruction_level_accuracy, prompt_level_accuracy

    strict = [[True, False], [True], [False, False, True]]
    loose = [[True, True], [True], [True, False, True]]
    assert prompt_level_accuracy(strict) == pytest.approx(1 / 3)
    assert instruction_level_accuracy(strict) == pytest.approx(3 / 6)  # mean of fractions would be 0.611
    assert ifeval_accuracies(strict, loose) == pytest.approx(
        {"prompt_strict": 1 / 3, "prompt_loose": 2 / 3, "instruction_strict": 3 / 6, "instruction_loose": 5 / 6})
    with pytest.raises(ValueError):
        instruction_level_accuracy([[], []])


def test_standard_error_is_zero_below_two_values() -> None:
    from alignpro.metrics import standard_error

    assert standard_error([]) == 0.0 and standard_error([3.0]) == 0.0
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3 / 4))


def test_gap_closed_only_when_the_oracle_gain_is_resolved() -> None:
    from alignpro.metrics import gap_closed, oracle_gain_resolved

    oracle = {"mean": 0.02, "stderr": 0.008}  # 2.5 s.e.
    assert oracle_gain_resolved(oracle) is None
    assert gap_closed({"mean": 0.05, "stderr": 0.01}, oracle) == pytest.approx(2.5)
    noisy = {"mean": 0.010, "stderr": 0.046}
    assert oracle_gain_resolved(noisy) == "oracle gain +0.010 ± 0.046 not resolved (< 2 s.e.): gap closed not shown"
    assert gap_closed({"mean": 0.05, "stderr": 0.01}, noisy) is None
    assert gap_closed({"mean": 0.05, "stderr": 0.01}, {"mean": 0.02, "stderr": 0.0101}) is None  # 1.98 s.e.
    assert "not positive" in oracle_gain_resolved({"mean": 0.0, "stderr": 0.0})
    assert gap_closed({"mean": 0.05, "stderr": 0.0}, {"mean": 0.0, "stderr": 0.0}) is None  # never a division by 0
