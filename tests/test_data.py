"""Prompt data: builtin set and split, local file loaders, Hugging Face loaders (local data_files), resolver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from alignpro.data import (
    PAPER_DATASETS,
    LoadResult,
    PromptRecord,
    builtin_prompts,
    load_hf_prompts,
    load_prompt_file,
    load_prompts,
)
from alignpro.errors import AlignProError

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
CATEGORIES = {"advice", "explanation", "how-to", "writing", "coding", "planning", "comparison",
              "health-and-fitness", "cooking", "travel", "finance", "learning"}


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep `datasets`' cache out of the home directory."""
    return tmp_path_factory.mktemp("hf_cache")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Builtin prompts and their split
# ---------------------------------------------------------------------------------------------------------------


def test_builtin_prompts_are_many_unique_and_cover_all_categories() -> None:
    records = builtin_prompts()
    assert len(records) >= 200
    assert all(isinstance(r, PromptRecord) and r.source == "builtin" for r in records)
    assert len({r.id for r in records}) == len(records)
    assert len({r.text.lower() for r in records}) == len(records)
    counts = Counter(r.category for r in records)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 15
    assert all(5 <= len(r.text.split()) <= 40 for r in records)


def test_builtin_split_is_disjoint_complete_stratified_and_deterministic() -> None:
    train, evaluation, everything = builtin_prompts("train"), builtin_prompts("eval"), builtin_prompts("all")
    train_ids, eval_ids = {r.id for r in train}, {r.id for r in evaluation}
    assert not train_ids & eval_ids
    assert train_ids | eval_ids == {r.id for r in everything}
    assert {r.category for r in train} == CATEGORIES == {r.category for r in evaluation}
    assert 0.15 <= len(evaluation) / len(everything) <= 0.25
    assert [r.id for r in builtin_prompts("eval")] == [r.id for r in evaluation]


def test_builtin_split_is_the_same_in_other_processes() -> None:
    code = "from alignpro.data import builtin_prompts; print(','.join(r.id for r in builtin_prompts('eval')))"
    here = ",".join(r.id for r in builtin_prompts("eval"))
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here


def test_builtin_unknown_split_is_an_error() -> None:
    with pytest.raises(AlignProError, match="'train', 'eval' or 'all'"):
        builtin_prompts("test")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------------------------------


def test_jsonl_custom_fields_and_skip_bad() -> None:
    result = load_prompt_file(DATA / "prompts.jsonl", field="query", system_field="sys", skip_bad=True)
    assert [r.id for r in result.records] == ["q1", "q2", "prompts:3", "q5"]
    assert [r.line for r in result.records] == [1, 2, 3, 5]
    assert result.records[0].system == "You are a gardening expert."
    assert result.records[1].system is None and result.records[2].system is None  # absent and ""
    assert (result.skipped, result.skipped_reasons) == (1, {"empty": 1})
    assert result.summary() == "4 prompts (skipped 1: empty=1)"


def test_jsonl_bad_row_without_skip_names_file_line_and_field() -> None:
    with pytest.raises(AlignProError, match=r"prompts\.jsonl, line 4: field 'query' is empty"):
        load_prompt_file(DATA / "prompts.jsonl", field="query")


def test_csv_rows_quoted_cells_and_line_numbers() -> None:
    result = load_prompt_file(DATA / "prompts.csv", field="question", skip_bad=True)
    assert [r.id for r in result.records] == ["c1", "c2", "c4", "c5"]
    assert [r.line for r in result.records] == [2, 3, 5, 7]  # c4's cell spans lines 5-6
    assert result.records[1].text == "Write a two-line poem about rain, please."
    assert "\n" in result.records[2].text
    assert result.skipped_reasons == {"empty": 1}
    with pytest.raises(AlignProError, match=r"prompts\.csv, line 4: field 'question' is empty"):
        load_prompt_file(DATA / "prompts.csv", field="question")


def test_csv_missing_column_lists_the_columns() -> None:
    with pytest.raises(AlignProError, match=r"no column 'prompt'.*columns are: id, question, notes"):
        load_prompt_file(DATA / "prompts.csv")


def _count_words(text: str) -> int:
    return len(text.split())


BAD_ROWS = [  # (second line of a JSONL file, extra kwargs, reason, message fragment)
    ('{"other": "x"}', {}, "missing_field", "field 'prompt' is missing (fields in this row: other)"),
    ('{"prompt": null}', {}, "missing_field", "field 'prompt' is null"),
    ('{"prompt": 42}', {}, "not_a_string", "field 'prompt' must be a string, got int"),
    ('{"prompt": ["a"]}', {}, "not_a_string", "field 'prompt' must be a string, got list"),
    ('{"prompt": " \\t "}', {}, "empty", "field 'prompt' is empty or whitespace only"),
    ('{"prompt": "' + "x" * 30 + '"}', {"max_chars": 20}, "too_long", "30 characters, more than max_chars=20"),
    ('{"prompt": "one two three four"}', {"max_tokens": 3, "count_tokens": _count_words}, "too_many_tokens",
     "field 'prompt' has 4 tokens, more than max_tokens=3"),
    ('{"prompt": "ok", "sys": 7}', {"system_field": "sys"}, "bad_system", "system field 'sys' must be a string"),
    ('{"prompt": "unterminated', {}, "invalid_json", "not valid JSON"),
    ('["prompt", "x"]', {}, "not_an_object", "expected a JSON object"),
]


@pytest.mark.parametrize(("line", "kwargs", "reason", "fragment"), BAD_ROWS, ids=[b[2] for b in BAD_ROWS])
def test_each_bad_row_kind_errors_or_is_counted(tmp_path: Path, line: str, kwargs: dict, reason: str,
                                                fragment: str) -> None:
    path = write(tmp_path, "bad.jsonl", '{"prompt": "A fine prompt.", "sys": "s"}\n' + line + "\n")
    with pytest.raises(AlignProError) as info:
        load_prompt_file(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}, line 2: ")
    assert fragment in message
    result = load_prompt_file(path, skip_bad=True, **kwargs)
    assert [r.text for r in result.records] == ["A fine prompt."]
    assert (result.skipped, result.skipped_reasons) == (1, {reason: 1})


def test_length_limits_apply_to_the_stripped_text(tmp_path: Path) -> None:
    path = write(tmp_path, "p.jsonl", '{"prompt": "  1234567890  "}\n')
    assert load_prompt_file(path, max_chars=10).records[0].text == "1234567890"


def test_blank_lines_are_ignored_and_categories_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "p.jsonl", '\n{"prompt": "a b", "category": "misc", "id": 7}\n\n')
    (record,) = load_prompt_file(path).records
    assert (record.id, record.line, record.category) == ("7", 2, "misc")


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(AlignProError, match=r"unsupported prompt file type '\.txt'; valid suffixes are \.jsonl, \.csv"):
        load_prompt_file(write(tmp_path, "p.txt", "hello"))
    with pytest.raises(AlignProError, match="prompt file not found"):
        load_prompt_file(tmp_path / "missing.jsonl")
    with pytest.raises(AlignProError, match="no usable prompts"):
        load_prompt_file(write(tmp_path, "empty.jsonl", "\n"))
    with pytest.raises(AlignProError, match="no usable prompts.*skipped 1: empty=1"):
        load_prompt_file(write(tmp_path, "allbad.jsonl", '{"prompt": ""}\n'), skip_bad=True)
    with pytest.raises(AlignProError, match="no row has the system field 'system'"):
        load_prompt_file(write(tmp_path, "nosys.jsonl", '{"prompt": "a b"}\n'), system_field="system")
    with pytest.raises(AlignProError, match="not UTF-8"):
        bad = tmp_path / "latin.jsonl"
        bad.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
        load_prompt_file(bad)


def test_option_errors_name_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "p.jsonl", '{"prompt": "a b"}\n')
    with pytest.raises(AlignProError, match="max_tokens needs count_tokens"):
        load_prompt_file(path, max_tokens=5)
    with pytest.raises(AlignProError, match="count_tokens was given without max_tokens"):
        load_prompt_file(path, count_tokens=len)
    with pytest.raises(AlignProError, match="max_chars must be a positive integer"):
        load_prompt_file(path, max_chars=0)
    with pytest.raises(AlignProError, match="n must be a positive integer"):
        load_prompt_file(path, n=0)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face datasets, read from local files in the same column format
# ---------------------------------------------------------------------------------------------------------------


def test_paper_dataset_table() -> None:
    assert {k: (s.hub_id, s.field, s.system_field) for k, s in PAPER_DATASETS.items()} == {
        "ultrafeedback": ("openbmb/UltraFeedback", "instruction", None),
        "helpsteer": ("nvidia/HelpSteer", "prompt", None),
        "orca": ("Open-Orca/OpenOrca", "question", "system_prompt"),
    }


@pytest.mark.parametrize(("name", "bad_row", "reason", "kept", "duplicates"), [
    ("ultrafeedback", 4, "empty", 6, 1),
    ("helpsteer", 3, "missing_field", 7, 0),
    ("orca", 4, "empty", 7, 0),
])
def test_hf_fixture_good_path_bad_row_and_skip(hf_cache: Path, name: str, bad_row: int, reason: str, kept: int,
                                              duplicates: int) -> None:
    files = DATA / f"{name}_sample.jsonl"
    spec = PAPER_DATASETS[name]
    with pytest.raises(AlignProError) as info:
        load_hf_prompts(name, data_files=files, cache_dir=hf_cache)
    assert f"{files}" in str(info.value) and f"row {bad_row}: field '{spec.field}'" in str(info.value)
    result = load_hf_prompts(name, data_files=files, skip_bad=True, cache_dir=hf_cache)
    assert isinstance(result, LoadResult)
    assert len(result.records) == kept
    assert (result.skipped, result.skipped_reasons, result.duplicates) == (1, {reason: 1}, duplicates)
    assert all(r.source == spec.hub_id for r in result.records)
    lines = [r.line for r in result.records]
    assert lines == sorted(lines) and bad_row not in lines
    assert len({r.text for r in result.records}) == kept


def test_orca_keeps_system_prompts_and_ids(hf_cache: Path) -> None:
    result = load_hf_prompts("orca", data_files=DATA / "orca_sample.jsonl", skip_bad=True, cache_dir=hf_cache)
    first, second = result.records[:2]
    assert first.id == "niv.1001" and first.system is not None and first.system.startswith("You are")
    assert second.system is None  # "" in the data
    ultra = load_hf_prompts("ultrafeedback", data_files=DATA / "ultrafeedback_sample.jsonl", skip_bad=True,
                            cache_dir=hf_cache)
    assert ultra.records[0].id == "ultrafeedback:0" and ultra.records[0].system is None


def test_hf_sample_is_seeded_and_in_dataset_order(hf_cache: Path) -> None:
    def lines(seed: int) -> list[int]:
        result = load_hf_prompts("helpsteer", n=3, seed=seed, data_files=DATA / "helpsteer_sample.jsonl",
                                 skip_bad=True, cache_dir=hf_cache)
        return [r.line for r in result.records]

    assert lines(0) == lines(0)
    assert len(lines(0)) == 3 and lines(0) == sorted(lines(0))
    assert len({tuple(lines(seed)) for seed in range(6)}) > 1
    everything = load_hf_prompts("helpsteer", n=100, data_files=DATA / "helpsteer_sample.jsonl", skip_bad=True,
                                 cache_dir=hf_cache)
    assert len(everything.records) == 7


def test_hf_missing_column_lists_columns(hf_cache: Path) -> None:
    with pytest.raises(AlignProError, match=r"has no column 'prompt'; columns are: id, system_prompt, question, "
                                            r"response\. Set field"):
        load_hf_prompts("helpsteer", data_files=DATA / "orca_sample.jsonl", cache_dir=hf_cache)
    with pytest.raises(AlignProError, match="has no column 'sys'.*Set system_field"):
        load_hf_prompts("orca", system_field="sys", data_files=DATA / "orca_sample.jsonl", cache_dir=hf_cache)


def test_hf_parquet_split_dict_and_length_limit(tmp_path: Path, hf_cache: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pa.table({"instruction": ["Short one.", "A much longer instruction than allowed.", "Short one."],
                      "source": ["a", "b", "c"]})
    path = tmp_path / "uf.parquet"
    pq.write_table(table, path)
    result = load_hf_prompts("openbmb/UltraFeedback", split="test", data_files={"test": str(path)}, max_chars=15,
                             skip_bad=True, cache_dir=hf_cache)
    assert [r.text for r in result.records] == ["Short one."]
    assert (result.skipped_reasons, result.duplicates) == ({"too_long": 1}, 1)


def test_hf_data_file_errors(tmp_path: Path, hf_cache: Path) -> None:
    with pytest.raises(AlignProError, match=r"unsupported data file type '\.txt'"):
        load_hf_prompts("helpsteer", data_files=str(write(tmp_path, "x.txt", "")), cache_dir=hf_cache)
    with pytest.raises(AlignProError, match="could not load .*nope.jsonl"):
        load_hf_prompts("helpsteer", data_files=str(tmp_path / "nope.jsonl"), cache_dir=hf_cache)


def test_hf_hub_call_uses_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([{"instruction": "Plan a trip.", "models": ["m"]},
                                           {"instruction": "Write a poem.", "models": ["m"]}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    result = load_prompts("hf:openbmb/UltraFeedback")
    assert calls[0][0] == ("openbmb/UltraFeedback",) and calls[0][1]["split"] == "train"
    assert [r.text for r in result.records] == ["Plan a trip.", "Write a poem."]

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(AlignProError, match=r"could not load nvidia/HelpSteer split 'train'.*pass data_files="):
        load_prompts("helpsteer")


# ---------------------------------------------------------------------------------------------------------------
# Resolver
# ---------------------------------------------------------------------------------------------------------------


def test_resolver_builtin_forms() -> None:
    assert [r.id for r in load_prompts("builtin").records] == [r.id for r in builtin_prompts()]
    assert [r.id for r in load_prompts("builtin:eval").records] == [r.id for r in builtin_prompts("eval")]
    assert [r.id for r in load_prompts("builtin", split="train").records] == [r.id for r in builtin_prompts("train")]
    sample = load_prompts("builtin:train", n=10, seed=3).records
    assert [r.id for r in sample] == [r.id for r in load_prompts("builtin:train", n=10, seed=3).records]
    assert len(sample) == 10 and [r.id for r in sample] == sorted(r.id for r in sample)


def test_resolver_files_and_hf(hf_cache: Path) -> None:
    assert len(load_prompts(str(DATA / "prompts.csv"), field="question", skip_bad=True).records) == 4
    assert len(load_prompts(str(DATA / "prompts.jsonl"), field="query", skip_bad=True, n=2).records) == 2
    paper = load_prompts("orca", data_files=DATA / "orca_sample.jsonl", skip_bad=True, cache_dir=hf_cache)
    hub = load_prompts("hf:Open-Orca/OpenOrca", data_files=DATA / "orca_sample.jsonl", skip_bad=True,
                       cache_dir=hf_cache)
    assert paper.records == hub.records and paper.records[0].system is not None


@pytest.mark.parametrize(("source", "kwargs", "fragment"), [
    ("foo", {}, "unknown prompt source 'foo'; valid forms: builtin, builtin:train"),
    ("prompts.json", {}, "valid forms: .*a path ending in .jsonl or .csv"),
    ("", {}, "non-empty string"),
    ("hf:", {}, "no hub id after 'hf:'"),
    ("builtin:test", {}, "unknown builtin split 'test'"),
    ("builtin:eval", {"split": "train"}, "give the split once"),
    ("builtin", {"field": "text"}, "field does not apply to prompt source 'builtin'"),
    ("tests/data/prompts.csv", {"split": "train"}, "split does not apply"),
])
def test_resolver_errors(source: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(AlignProError, match=fragment):
        load_prompts(source, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Preference triples fixture (for reward-model tests elsewhere)
# ---------------------------------------------------------------------------------------------------------------


def test_preference_triples_fixture_is_well_formed() -> None:
    rows = [json.loads(line) for line in (DATA / "preference_triples.jsonl").read_text().splitlines() if line]
    assert len(rows) >= 36
    for row in rows:
        assert {"prompt", "better", "worse"} <= set(row)
        assert all(isinstance(row[k], str) and row[k].strip() for k in ("prompt", "better", "worse"))
        assert row["better"] != row["worse"]
    assert Counter(row["kind"] for row in rows) == {"off_topic": 10, "rude": 10, "non_answer": 10,
                                                    "more_helpful": 10}


# ---------------------------------------------------------------------------------------------------------------
# The bad-row hint, and the registry of named sources
# ---------------------------------------------------------------------------------------------------------------


def test_the_first_bad_row_names_the_skip_bad_flag_not_a_python_argument(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", '{"prompt": "fine"}\n{"prompt": "  "}\n')
    with pytest.raises(AlignProError) as err:
        load_prompts(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}, line 2: field 'prompt' is empty or whitespace only")
    assert "--skip-bad" in message and "skip_bad=True" not in message and "Fix or remove the row" in message
    assert [r.text for r in load_prompts(str(path), skip_bad=True).records] == ["fine"]


def test_a_named_source_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from alignpro.data import NAMED_SOURCES, NamedSource
    from alignpro.data.records import LoadResult

    def load(split: str, rules, skip_bad: bool) -> LoadResult:
        texts = {"train": ["t1", "t2", "t3"], "eval": ["e1"]}[split]
        rows = [{"prompt": t} for t in texts] + [{"prompt": ""}]
        kept = [PromptRecord(f"toy:{i}", rules.extract(row)[0], source="toy") for i, row in enumerate(rows)
                if row["prompt"]]
        return LoadResult(records=kept)

    monkeypatch.setitem(NAMED_SOURCES, "toy", NamedSource(load, splits=("train", "eval"), default_split="train"))
    assert [r.text for r in load_prompts("toy").records] == ["t1", "t2", "t3"]
    assert [r.text for r in load_prompts("toy:eval").records] == ["e1"]
    assert [r.text for r in load_prompts("toy", split="train", n=2, seed=0).records] == ["t2", "t3"]  # seeded, in order
    with pytest.raises(AlignProError, match=r"unknown toy split 'all'; valid forms: toy, toy:train, toy:eval"):
        load_prompts("toy:all")
    with pytest.raises(AlignProError, match=r"valid forms: builtin, .*; toy, toy:train, toy:eval; a path"):
        load_prompts("nope")
