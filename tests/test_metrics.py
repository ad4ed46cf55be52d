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
