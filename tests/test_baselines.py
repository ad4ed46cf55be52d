"""The best_suffix chooser (alignpro.baselines.choose) on the fakes: each line's paired gain over x on coupled
answers, the choice, train prompts only, and shards that merge into the very record of one run."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from alignpro.backends.fake import FakeReward, FakeTarget
from alignpro.baselines import with_line
from alignpro.baselines.choose import ChooseConfig, main, score_lines
from alignpro.config import build_config
from alignpro.errors import ConfigError

PROMPTS = ["how do I bake bread", "what is rain", "name a grey kitten", "why is the sky blue"]


def test_score_lines_pairs_each_line_with_x_on_coupled_answers() -> None:
    lines = ["Answer briefly.", "Please be kind."]
    got = score_lines(PROMPTS, [None] * 4, lines, FakeTarget(), FakeReward(), n=3, seed=0, batch_size=6)
    for line, row in zip(lines, got["lines"]):
        shown = [with_line(x, line) for x in PROMPTS]
        assert got["answers"][line] == [[a.text for a in r] for r in FakeTarget().answer(
            shown, n=3, seed=100, keys=PROMPTS)]  # seed + FRESH_SEED, keyed by x: the answers to x's streams
        diff = (got["rewards"][line] - got["rewards"][""]).mean(axis=1)
        assert row["paired_vs_x"]["mean"] == pytest.approx(diff.mean())
        assert row["paired_vs_x"]["stderr"] == pytest.approx(diff.std(ddof=1) / 2)
    assert got["choice"] == "Please be kind."  # the fake target answers warmly when asked kindly
    assert got["lines"][1]["paired_vs_x"]["mean"] > got["lines"][0]["paired_vs_x"]["mean"]


def test_the_choice_is_made_on_train_prompts_only() -> None:
    with pytest.raises(ConfigError, match="train prompts only"):
        build_config(ChooseConfig, {"prompts": "builtin-ifeval:eval"})


def test_shards_merge_into_the_record_of_one_run(tmp_path) -> None:
    common = ["--target", "fake", "--reward", "fake", "--n-prompts", "4"]
    main(common + ["--out", str(tmp_path / "whole.json")])
    main(common + ["--lines", "0:7", "--out", str(tmp_path / "a.json")])
    main(common + ["--lines", "7:", "--out", str(tmp_path / "b.json")])
    main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "merged.json")])
    whole, merged = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "merged"))
    assert merged["choice"] == whole["choice"] and merged["lines"] == whole["lines"] and len(whole["lines"]) == 12
    rows = lambda n: sorted(gzip.open(tmp_path / f"{n}_answers.jsonl.gz", "rt").read().splitlines())  # noqa: E731
    assert rows("merged") == rows("whole") and len(rows("whole")) == 13 * 4
    assert np.isclose(merged["x_mean"], whole["x_mean"])
    main(common + ["--n-prompts", "3", "--lines", "0:2", "--out", str(tmp_path / "c.json")])
    with pytest.raises(ConfigError, match="same prompts"):
        main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--out", str(tmp_path / "bad.json")])
