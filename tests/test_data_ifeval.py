"""IFEval instructions on prompt records: IFEval's schema in files and datasets, bad instruction rows, and the
builtin-ifeval set made by scripts/make_builtin_ifeval.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

from alignpro.data import (
    Instruction,
    PromptRecord,
    builtin_ifeval_prompts,
    builtin_prompts,
    load_prompt_file,
    load_prompts,
)
from alignpro.errors import AlignProError
from tests.shipped_sets import assert_check_flag, assert_fresh_generation, assert_named_source, import_script

REPO = Path(__file__).parent.parent
SAMPLE = Path(__file__).parent / "data" / "ifeval" / "ifeval_sample.jsonl"
SHIPPED = REPO / "alignpro" / "data" / "builtin_ifeval.jsonl"


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep `datasets`' cache out of the home directory."""
    return tmp_path_factory.mktemp("hf_cache")


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return import_script("make_builtin_ifeval")


def sample_rows() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


def instructions_by_id(records: list[PromptRecord]) -> dict[str, tuple[Instruction, ...]]:
    return {r.id: r.instructions for r in records}


def rebuilt(instruction: Instruction) -> tuple[str, dict]:
    """(description, kwargs) that IFEval's checker builds from the stored kwargs, nulls dropped."""
    checker = INSTRUCTION_DICT[instruction.id](instruction.id)
    description = checker.build_description(**instruction.kwargs)
    args = checker.get_instruction_args() or {}
    return description, {k: v for k, v in args.items() if v is not None}


# ---------------------------------------------------------------------------------------------------------------
# Instruction
# ---------------------------------------------------------------------------------------------------------------


def test_instruction_from_kwargs_drops_nulls_sorts_keys_and_is_hashable() -> None:
    made = Instruction.from_kwargs("length_constraints:number_words",
                                   {"relation": "less than", "num_words": 120, "keywords": None})
    assert made == Instruction("length_constraints:number_words", '{"num_words": 120, "relation": "less than"}')
    assert made.kwargs == {"num_words": 120, "relation": "less than"}
    assert Instruction.from_kwargs("punctuation:no_comma", None).kwargs == {}
    record = PromptRecord("a", "hi", instructions=(made,))
    assert record in {record} and record.instructions[0] is made


@pytest.mark.parametrize("kwargs_json", ["[1]", "not json", '"{}"'])
def test_instruction_rejects_kwargs_json_that_is_not_an_object(kwargs_json: str) -> None:
    with pytest.raises(AlignProError, match="kwargs_json must be a JSON object"):
        Instruction("punctuation:no_comma", kwargs_json)


def test_importing_alignpro_data_does_not_import_the_checkers() -> None:
    code = "import sys, alignpro.data; print('if_verifiable' in sys.modules, 'datasets' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------------------------------
# IFEval's schema in local files and Hugging Face datasets
# ---------------------------------------------------------------------------------------------------------------


def test_ifeval_jsonl_loads_with_instructions_and_key_as_id() -> None:
    records = load_prompt_file(SAMPLE).records
    assert [r.id for r in records] == ["1001", "1002", "1003", "1004", "1005"]
    by_id = {r.id: r for r in records}
    assert by_id["1001"].instructions == (Instruction("punctuation:no_comma"), Instruction("startend:quotation"))
    assert by_id["1002"].instructions[2] == Instruction("keywords:existence",
                                                        '{"keywords": ["sunlight", "humidity"]}')
    assert by_id["1004"].instructions[0].kwargs == {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "sunlight"}
    assert by_id["1004"].instructions[0].kwargs_json == \
        '{"first_word": "sunlight", "nth_paragraph": 2, "num_paragraphs": 3}'
    assert [i.id for i in by_id["1005"].instructions] == ["keywords:frequency"] * 2  # IFEval repeats types too
    assert by_id["1003"].instructions[0].kwargs["prompt_to_repeat"].startswith("Write an email to my landlord")
    for row, record in zip(sample_rows(), records):
        assert record.text == row["prompt"].strip()
        assert [i.id for i in record.instructions] == row["instruction_id_list"]
        assert [i.kwargs for i in record.instructions] == row["kwargs"]


def test_rows_without_instruction_fields_have_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text('{"id": "a", "prompt": "hello"}\n{"prompt": "bye", "instruction_id_list": null}\n',
                    encoding="utf-8")
    records = load_prompt_file(path).records
    assert [r.instructions for r in records] == [(), ()]
    assert records[0].id == "a" and records[1].id == "plain:2"


def test_null_kwargs_as_datasets_writes_them_are_dropped(tmp_path: Path) -> None:
    """google/IFEval through `datasets` lists every kwarg name in every dict, null where unused."""
    rows = sample_rows()
    names = sorted({k for row in rows for kwargs in row["kwargs"] for k in kwargs})
    path = tmp_path / "nulls.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            full = [{name: kwargs.get(name) for name in names} for kwargs in row["kwargs"]]
            handle.write(json.dumps({**row, "kwargs": full}) + "\n")
    assert instructions_by_id(load_prompt_file(path).records) == instructions_by_id(load_prompt_file(SAMPLE).records)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_hf_path_gives_the_same_instructions(tmp_path: Path, hf_cache: Path, fmt: str) -> None:
    if fmt == "jsonl":
        data_file = SAMPLE
    else:
        import datasets

        data_file = tmp_path / "ifeval.parquet"
        datasets.Dataset.from_list(sample_rows()).to_parquet(str(data_file))
        stored = datasets.Dataset.from_parquet(str(data_file), cache_dir=str(hf_cache))[0]["kwargs"][0]
        assert stored and all(value is None for value in stored.values())  # the structs-with-None case
    result = load_prompts("hf:google/IFEval", data_files=data_file, cache_dir=hf_cache)
    local = load_prompt_file(SAMPLE).records
    assert instructions_by_id(result.records) == instructions_by_id(local)
    assert [r.text for r in result.records] == [r.text for r in local]
    assert all(r.source == "google/IFEval" for r in result.records)


def test_loading_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    """A checker given no kwargs draws them from `random`; loading must not move the caller's stream."""
    path = tmp_path / "draws.jsonl"
    path.write_text('{"prompt": "Describe rain.", "instruction_id_list": ["length_constraints:number_words"], '
                    '"kwargs": [{}]}\n', encoding="utf-8")
    random.seed(11)
    expected = random.random()
    random.seed(11)
    assert load_prompt_file(path).records[0].instructions == (Instruction("length_constraints:number_words"),)
    assert random.random() == expected


BAD_INSTRUCTIONS = [  # (second line of a JSONL file, message fragment)
    ('{"prompt": "x", "instruction_id_list": "punctuation:no_comma", "kwargs": [{}]}',
     "'instruction_id_list' must be a list of IFEval instruction ids, got str"),
    ('{"prompt": "x", "instruction_id_list": ["punctuation:no_comma"]}', "'kwargs' must be a list with one dict"),
    ('{"prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": {}}',
     "'kwargs' must be a list with one dict per instruction id .* got dict"),
    ('{"prompt": "x", "instruction_id_list": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}]}',
     "'instruction_id_list' has 2 ids but 'kwargs' has 1 entries"),
    ('{"prompt": "x", "instruction_id_list": ["punctuation:no_commas"], "kwargs": [{}]}',
     r"'instruction_id_list'\[0\] is 'punctuation:no_commas', not an instruction of IFEval's registry "
     r"\(if_verifiable\.ifeval\.instructions_registry\.INSTRUCTION_DICT\); valid ids: .*punctuation:no_comma"),
    ('{"prompt": "x", "instruction_id_list": ["startend:quotation", 7], "kwargs": [{}, {}]}',
     r"'instruction_id_list'\[1\] is 7, not an instruction"),
    ('{"prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": ["{}"]}',
     r"'kwargs'\[0\] \(for punctuation:no_comma\) must be a dict .* got str"),
    ('{"prompt": "x", "instruction_id_list": ["length_constraints:number_words"], '
     '"kwargs": [{"num_words": 50, "relation": "at most"}]}',
     r"IFEval's length_constraints:number_words checker rejects 'kwargs'\[0\] .*ValueError"),
    ('{"prompt": "x", "instruction_id_list": ["detectable_format:title"], "kwargs": [{"title": "t"}]}',
     r"IFEval's detectable_format:title checker rejects 'kwargs'\[0\] .*TypeError"),
    ('{"prompt": "x", "instruction_id_list": ["combination:repeat_prompt"], "kwargs": [{"prompt_to_repeat": null}]}',
     r"IFEval's combination:repeat_prompt checker rejects 'kwargs'\[0\] \{\} "
     r"\(ValueError: prompt_to_repeat must be set"),
]


@pytest.mark.parametrize(("line", "fragment"), BAD_INSTRUCTIONS, ids=range(len(BAD_INSTRUCTIONS)))
def test_each_bad_instructions_row_errors_naming_file_and_line_or_is_counted(tmp_path: Path, line: str,
                                                                             fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"prompt": "ok", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}'
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(AlignProError, match=rf"bad\.jsonl, line 2: {fragment}"):
        load_prompt_file(path)
    result = load_prompt_file(path, skip_bad=True)
    assert [r.line for r in result.records] == [1]
    assert (result.skipped, result.skipped_reasons) == (1, {"bad_instructions": 1})


def test_hf_bad_instructions_row_names_the_row_or_is_counted(tmp_path: Path, hf_cache: Path) -> None:
    rows = sample_rows()
    rows[2]["instruction_id_list"] = ["combination:repeat_prompts", "detectable_format:title"]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(AlignProError, match=r"google/IFEval data_files .* split 'train', row 2: "
                                            r"'instruction_id_list'\[0\] is 'combination:repeat_prompts'"):
        load_prompts("hf:google/IFEval", data_files=path, cache_dir=hf_cache)
    result = load_prompts("hf:google/IFEval", data_files=path, skip_bad=True, cache_dir=hf_cache)
    assert [r.id for r in result.records] == ["1001", "1002", "1004", "1005"]
    assert result.skipped_reasons == {"bad_instructions": 1}


# ---------------------------------------------------------------------------------------------------------------
# The builtin-ifeval set
# ---------------------------------------------------------------------------------------------------------------


def test_builtin_ifeval_has_four_variants_of_every_builtin_prompt() -> None:
    records, bases = builtin_ifeval_prompts(), builtin_prompts()
    assert len(records) == 4 * len(bases) == 4 * 229
    assert [r.id for r in records] == [f"{b.id}-if{v}" for b in bases for v in range(4)]
    for record, base in zip(records, (b for b in bases for _ in range(4))):
        assert record.category == base.category and record.source == "builtin-ifeval"
        assert record.text.startswith(base.text + " ")
    assert len({r.text for r in records}) == len(records)


def test_builtin_ifeval_split_follows_the_base_prompt() -> None:
    base_eval = {r.id for r in builtin_prompts("eval")}
    train, evaluation = builtin_ifeval_prompts("train"), builtin_ifeval_prompts("eval")
    train_bases = {r.id.split("-if")[0] for r in train}
    eval_bases = {r.id.split("-if")[0] for r in evaluation}
    assert eval_bases == base_eval and not train_bases & eval_bases
    assert train_bases == {r.id for r in builtin_prompts("train")}
    assert (len(train), len(evaluation)) == (4 * len(train_bases), 4 * len(eval_bases))
    assert {r.id for r in train} | {r.id for r in evaluation} == {r.id for r in builtin_ifeval_prompts("all")}


def test_shipped_rows_name_their_base_prompt() -> None:
    rows = [json.loads(line) for line in (REPO / "alignpro/data/builtin_ifeval.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"{row['base_id']}-if{i % 4}" for i, row in enumerate(rows)]
    assert [row["id"] for row in rows] == [r.id for r in builtin_ifeval_prompts()]


def test_builtin_ifeval_instructions_are_allowed_compatible_and_fit_the_budget(script: ModuleType) -> None:
    records = builtin_ifeval_prompts()
    base_text = {b.id: b.text for b in builtin_prompts()}
    counts = Counter(len(r.instructions) for r in records)
    assert set(counts) == {1, 2} and min(counts.values()) > 0.4 * len(records)
    for record in records:
        drawn = [script.Drawn(i.id, i.kwargs, "") for i in record.instructions]
        for instruction in drawn:
            assert instruction.id in script.ALLOWED, (record.id, instruction.id)
            assert script.ALLOWED[instruction.id](instruction.kwargs), (record.id, instruction)
        if len(drawn) == 2:
            assert drawn[0].id != drawn[1].id
            assert not script.registry_conflict(drawn[0].id, drawn[1].id), record.id
            assert script.clash(*drawn) is None, record.id
        base = record.id.split("-if")[0]
        for instruction in record.instructions:
            if instruction.id == "combination:repeat_prompt":
                assert instruction.kwargs == {"prompt_to_repeat": base_text[base]}
    types = Counter(i.id for r in records for i in r.instructions)
    assert set(types) == set(script.ALLOWED)  # every allowed type is used


def test_builtin_ifeval_kwargs_round_trip_to_the_prompt_text() -> None:
    """Each stored kwargs dict rebuilds itself and the description in the prompt: base + " " + descriptions."""
    base_text = {b.id: b.text for b in builtin_prompts()}
    for record in builtin_ifeval_prompts():
        descriptions = []
        for instruction in record.instructions:
            description, kwargs = rebuilt(instruction)
            assert kwargs == instruction.kwargs, (record.id, instruction)
            descriptions.append(description)
        assert record.text == " ".join([base_text[record.id.split("-if")[0]], *descriptions]), record.id


def test_allowed_and_excluded_cover_the_registry(script: ModuleType) -> None:
    assert set(script.ALLOWED) | set(script.EXCLUDED) == set(INSTRUCTION_DICT)
    assert not set(script.ALLOWED) & set(script.EXCLUDED)
    assert {"length_constraints:number_sentences", "change_case:capital_word_frequency",
            "language:response_language"} <= set(script.EXCLUDED)


def test_clash_catches_what_the_registry_misses(script: ModuleType) -> None:
    drawn = script.Drawn
    forbid_help = drawn("keywords:forbidden_words", {"forbidden_words": ["help", "potato"]}, "")
    end = drawn("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}, "")
    sections = drawn("detectable_format:multiple_sections", {"num_sections": 2, "section_spliter": "Section"}, "")
    upper_sections = drawn("detectable_format:multiple_sections", {"num_sections": 2, "section_spliter": "SECTION"},
                           "")
    capital, lower = drawn("change_case:english_capital", {}, ""), drawn("change_case:english_lowercase", {}, "")
    assert not script.registry_conflict(forbid_help.id, end.id) and script.clash(forbid_help, end)
    assert script.clash(capital, sections) and script.clash(lower, upper_sections)
    assert script.clash(capital, upper_sections) is None
    assert script.clash(drawn("combination:repeat_prompt", {"prompt_to_repeat": "x"}, ""),
                        drawn("punctuation:no_comma", {}, ""))
    assert script.clash(capital, drawn("detectable_format:json_format", {}, ""))  # listed under json_format only


def test_shipped_file_equals_a_fresh_generation(script: ModuleType) -> None:
    assert_fresh_generation(script, SHIPPED)


def test_check_flag_fails_on_a_stale_file(script: ModuleType, tmp_path: Path) -> None:
    assert_check_flag(script, SHIPPED, b"p001-if0", b"p001-ifX", tmp_path)


def test_load_prompts_builtin_ifeval_sources_and_sampling() -> None:
    assert_named_source("builtin-ifeval", builtin_ifeval_prompts, 916)


@pytest.mark.parametrize(("source", "kwargs", "fragment"), [
    ("builtin-ifeval:test", {}, "unknown builtin-ifeval split 'test'; valid forms: builtin-ifeval, builtin-ifeval:train"),
    ("builtin-ifeval:eval", {"split": "train"}, "give the split once"),
    ("builtin-ifeval", {"field": "text"}, "field does not apply"),
    ("nonsense", {}, "valid forms: .*builtin-ifeval, builtin-ifeval:train, builtin-ifeval:eval"),
])
def test_builtin_ifeval_source_errors(source: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(AlignProError, match=fragment):
        load_prompts(source, **kwargs)
