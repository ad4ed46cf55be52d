"""Google's IFEval prompts shipped with alignpro: the file (unchanged, md5), the sources ``ifeval`` and
``ifeval:offline``, ``hf:google/IFEval`` on local copies and without the hub, and the test-set refusal."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from alignpro.data import Instruction, PromptRecord, load_prompts
from alignpro.data import ifeval_google as ig
from alignpro.errors import AlignProError, ConfigError
from alignpro.rewards.ifeval import NEEDS_NLTK_DATA, IFEvalReward, follows

REPO = Path(__file__).parent.parent
SHIPPED = REPO / "alignpro" / "data" / ig.DATA_FOLDER / ig.DATA_FILE
SHARED_README = REPO.parent / "shared" / "data" / "ifeval" / "README.md"  # beside the checkout (CI), not installed


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep `datasets`' cache out of the home directory."""
    return tmp_path_factory.mktemp("hf_cache")


def shipped_rows() -> list[dict]:
    return [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]


def as_tuples(records: list[PromptRecord]) -> list[tuple]:
    return [(r.id, r.text, r.instructions) for r in records]


# ---------------------------------------------------------------------------------------------------------------
# The shipped file
# ---------------------------------------------------------------------------------------------------------------


def test_shipped_file_is_googles_unchanged() -> None:
    md5 = hashlib.md5(SHIPPED.read_bytes()).hexdigest()
    assert md5 == ig.INPUT_DATA_MD5 == "4c2c43252cc2d32969218a4252fc7212"
    assert ig.data_resource().read_bytes() == SHIPPED.read_bytes()
    notice = (SHIPPED.parent / "NOTICE").read_text(encoding="utf-8")
    assert f"md5 {md5}" in notice and "Google Research" in notice and "Apache License, Version 2.0" in notice


@pytest.mark.skipif(not SHARED_README.is_file(), reason=f"no provenance README at {SHARED_README}")
def test_shipped_file_equals_the_shared_copy_and_its_readme_md5() -> None:
    readme_md5 = re.findall(r"md5 ([0-9a-f]{32})", SHARED_README.read_text(encoding="utf-8"))
    assert readme_md5 == [hashlib.md5(SHIPPED.read_bytes()).hexdigest()]
    assert (SHARED_README.parent / "input_data.jsonl").read_bytes() == SHIPPED.read_bytes()


def test_a_changed_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    changed = tmp_path / ig.DATA_FILE
    changed.write_bytes(SHIPPED.read_bytes().replace(b'"key": 1000', b'"key": 9999', 1))
    monkeypatch.setattr(ig, "data_resource", lambda: changed)
    with pytest.raises(AlignProError, match=r"is not Google's file \(md5 [0-9a-f]{32}, expected 4c2c4325"):
        load_prompts("ifeval", n=3)


# ---------------------------------------------------------------------------------------------------------------
# ifeval and ifeval:offline
# ---------------------------------------------------------------------------------------------------------------


def test_ifeval_is_all_541_prompts_with_their_instructions() -> None:
    rows, records = shipped_rows(), load_prompts("ifeval").records
    assert len(records) == len(rows) == 541
    assert as_tuples(records) == as_tuples(load_prompts("ifeval:all").records)
    for row, record in zip(rows, records):
        assert (record.id, record.text, record.source) == (str(row["key"]), row["prompt"].strip(), "ifeval")
        assert [i.id for i in record.instructions] == row["instruction_id_list"]
        assert record.instructions == tuple(Instruction.from_kwargs(i, k)
                                            for i, k in zip(row["instruction_id_list"], row["kwargs"]))
    assert Counter(len(r.instructions) for r in records) == {1: 305, 2: 179, 3: 57}


def test_offline_keeps_the_prompts_without_nltk_data_types() -> None:
    """477 = 541 - 64: 46 prompts use number_sentences (nltk punkt) and 20 capital_word_frequency (punkt_tab),
    2 of them both; every other checker of IFEval's registry runs offline (langdetect ships its profiles)."""
    records = load_prompts("ifeval").records
    offline = load_prompts("ifeval:offline").records
    assert len(offline) == 477
    uses = Counter(t for r in records for t in {i.id for i in r.instructions} & set(NEEDS_NLTK_DATA))
    assert uses == {"length_constraints:number_sentences": 46, "change_case:capital_word_frequency": 20}
    assert [r.id for r in offline] == [r.id for r in records
                                       if not {i.id for i in r.instructions} & set(NEEDS_NLTK_DATA)]
    assert as_tuples(load_prompts("ifeval", split="offline").records) == as_tuples(offline)
    assert as_tuples(ig.ifeval_prompts("offline")) == as_tuples(offline)


def test_offline_is_exactly_what_the_checkers_run_without_nltk_data(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """With nltk's data path empty, a prompt's checkers all run exactly when it is in ifeval:offline."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(nltk.data, "_resource_cache", {})
    answer = "Hello there, World. This is an answer.\n\n***\n\nA SECOND PART, in two lines!\nP.S. done"
    runs = set()
    for record in load_prompts("ifeval").records:
        try:
            for instruction in record.instructions:  # one by one: the library stops at the first failure
                follows(record.text, [instruction], answer)
        except LookupError:
            continue
        runs.add(record.id)
    assert runs == {r.id for r in load_prompts("ifeval:offline").records}


def test_the_reward_scores_the_offline_set() -> None:
    offline = load_prompts("ifeval:offline").records
    reward = IFEvalReward(offline)
    assert len(reward.instructions) == 477
    by_id = {r.id: r for r in offline}
    texts = [by_id["1000"].text, by_id["1001"].text]  # no_comma + 3 highlights + >= 300 words; no_comma
    assert reward.score(texts, ["Plain, short.", "No commas here at all."]) == [0.0, 1.0]


def test_sampling_is_seeded_and_keeps_file_order() -> None:
    sample = load_prompts("ifeval:offline", n=12, seed=5).records
    assert [r.id for r in sample] == [r.id for r in load_prompts("ifeval:offline", n=12, seed=5).records]
    assert [r.id for r in sample] != [r.id for r in load_prompts("ifeval:offline", n=12, seed=6).records]
    order = [r.id for r in load_prompts("ifeval:offline").records]
    assert [order.index(r.id) for r in sample] == sorted(order.index(r.id) for r in sample)
    assert len(sample) == 12


@pytest.mark.parametrize(("source", "kwargs", "fragment"), [
    ("ifeval:train", {}, "unknown ifeval split 'train'; valid forms: ifeval, ifeval:all, ifeval:offline"),
    ("ifeval", {"split": "test"}, "unknown ifeval split 'test'"),
    ("ifeval:offline", {"split": "all"}, "give the split once"),
    ("ifeval", {"field": "text"}, "field does not apply to prompt source 'ifeval'"),
    ("ifeval:offline", {"data_files": "x.jsonl"}, "data_files does not apply"),
    ("ifeval", {"max_chars": 20},
     r"google_ifeval/input_data.jsonl, line 1: field .prompt. has 304 characters, more than max_chars=20"),
])
def test_ifeval_source_errors(source: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(AlignProError, match=fragment):
        load_prompts(source, **kwargs)


def test_bad_row_rules_apply_with_skip_bad() -> None:
    kept = load_prompts("ifeval", max_chars=200, skip_bad=True)
    long = sum(len(row["prompt"].strip()) > 200 for row in shipped_rows())
    assert len(kept.records) == 541 - long and kept.skipped_reasons == {"too_long": long} and long > 0


# ---------------------------------------------------------------------------------------------------------------
# hf:google/IFEval
# ---------------------------------------------------------------------------------------------------------------


def write_hub_parquet(folder: Path) -> Path:
    """The 541 rows as the hub's parquet (kwargs become structs of every kwarg name, null where unused)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train-00000-of-00001.parquet"
    datasets.Dataset.from_list(shipped_rows()).to_parquet(str(path))
    return path


def test_hf_google_ifeval_on_local_copies_equals_the_shipped_source(tmp_path: Path, hf_cache: Path) -> None:
    shipped = as_tuples(load_prompts("ifeval").records)
    parquet = write_hub_parquet(tmp_path / "IFEval" / "data")
    for data_files in (parquet, SHIPPED):
        result = load_prompts("hf:google/IFEval", data_files=data_files, cache_dir=hf_cache)
        assert as_tuples(result.records) == shipped
        assert {r.source for r in result.records} == {"google/IFEval"}
    # a dataset folder in the hub's layout, read by the same hub code path (no data_files)
    folder = load_prompts(f"hf:{tmp_path / 'IFEval'}", cache_dir=hf_cache)
    assert as_tuples(folder.records) == shipped
    sample = load_prompts("hf:google/IFEval", data_files=parquet, cache_dir=hf_cache, n=7, seed=2).records
    assert len(sample) == 7 and set(as_tuples(sample)) <= set(shipped)


def test_hf_google_ifeval_without_the_hub_suggests_the_shipped_source(tmp_path: Path) -> None:
    code = ("from alignpro.data import load_prompts\n"
            f"load_prompts('hf:google/IFEval', cache_dir={str(tmp_path)!r})\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and last.startswith("alignpro.errors.AlignProError: could not load google/IFEval")
    assert "ConnectionError" in last and "use the prompt source 'ifeval' (or 'ifeval:offline')" in last


def test_hf_google_ifeval_with_bad_data_files_gets_no_hint(tmp_path: Path, hf_cache: Path) -> None:
    with pytest.raises(AlignProError, match="could not load google/IFEval data_files") as caught:
        load_prompts("hf:google/IFEval", data_files=tmp_path / "missing.jsonl", cache_dir=hf_cache)
    assert "prompt source 'ifeval'" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# A test set: never trained on
# ---------------------------------------------------------------------------------------------------------------


def test_test_set_is_recognised_by_name_and_by_content(tmp_path: Path) -> None:
    copy = tmp_path / "mine.jsonl"
    copy.write_bytes(SHIPPED.read_bytes())
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(SHIPPED.read_bytes().replace(b"Write", b"write", 1))
    for source in ("ifeval", "ifeval:offline", "ifeval:all", " hf:google/IFEval ", "hf:GOOGLE/ifeval", str(copy)):
        assert ig.is_test_set(source), source
    for source in ("builtin-ifeval:train", "builtin-writing:train", "builtin", "hf:google/IFEval-x", "ifeval.jsonl",
                   str(edited), str(tmp_path / "missing.jsonl"), str(SHIPPED.parent)):
        assert not ig.is_test_set(source), source


def test_refuse_test_set_names_the_source_the_setting_and_the_alternative() -> None:
    with pytest.raises(ConfigError) as caught:
        ig.refuse_test_set("ifeval:offline", "alignpro train")
    assert str(caught.value) == (
        "setting 'prompts' of alignpro train is 'ifeval:offline', Google's IFEval: a test set, never trained, tuned "
        "or chosen on. Train on builtin-ifeval:train or builtin-writing:train, and measure on 'ifeval:offline' "
        "with alignpro evaluate")
    with pytest.raises(ConfigError, match="setting 'pairs_from' of alignpro reward label is 'hf:google/IFEval'"):
        ig.refuse_test_set("hf:google/IFEval", "alignpro reward label", setting="pairs_from")
    assert ig.refuse_test_set("builtin-ifeval:train", "alignpro sft") is None


# fake models and the fewest prompts, so that a command that did not refuse would stop at once (train: a fake policy
# is an error; overopt: no proxies is one) or finish in a moment, and fail the test
@pytest.mark.parametrize("argv, setting, source", [
    (["train", "--prompts", "ifeval", "--prompter", "fake", "--target", "fake"], "prompts", "ifeval"),
    (["sft", "--prompts", "ifeval:offline", "--prompter", "fake"], "prompts", "ifeval:offline"),
    (["reward", "label", "--prompts", "hf:google/IFEval", "--target", "fake", "--gold", "builtin", "--n-prompts",
      "2"], "prompts", "hf:google/IFEval"),
    (["overopt", "--train-prompts", "ifeval:all", "--target", "fake", "--prompter", "fake", "--gold", "builtin",
      "--n-pairs", "0"], "train_prompts", "ifeval:all"),
])
def test_training_commands_refuse_googles_ifeval(argv, setting, source, tmp_path: Path, capsys) -> None:
    from alignpro.cli import main

    out = tmp_path / ("pairs.jsonl" if argv[1] == "label" else "run")
    assert main([*argv, "--out", str(out)]) == 2
    command = "alignpro " + " ".join(argv[:2] if argv[0] == "reward" else argv[:1])
    assert capsys.readouterr().err == (
        f"alignpro {argv[0]}: error: setting '{setting}' of {command} is '{source}', Google's IFEval: a test set, "
        f"never trained, tuned or chosen on. Train on builtin-ifeval:train or builtin-writing:train, and measure on "
        f"'{source}' with alignpro evaluate\n")
    assert not out.exists()

