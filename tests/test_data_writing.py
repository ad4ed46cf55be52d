"""The builtin-writing set: base writing prompts, the instructions woven into them by
scripts/make_builtin_writing.py, its split, its loader source and its distance from IFEval's prompts."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from alignpro.data import Instruction, PromptRecord, load_prompts
from alignpro.data.writing import (
    WritingBase,
    base_id,
    builtin_writing_prompts,
    eval_base_ids,
    writing_bases,
)
from alignpro.errors import AlignProError
from alignpro.rewards.ifeval import IFEvalReward
from tests.shipped_sets import assert_check_flag, assert_fresh_generation, assert_named_source, import_script

REPO = Path(__file__).parent.parent
SHIPPED = REPO / "alignpro" / "data" / "builtin_writing.jsonl"
CATEGORIES = {"essay", "poem", "letter", "email", "pitch", "summary", "rewrite", "itinerary", "story", "speech",
              "review", "ad", "blog", "cover_letter", "recipe", "dialogue", "song", "riddle", "faq", "social"}
#: IFEval's input_data.jsonl (a test set: only the automated overlap check reads it); the shared data folder
#: beside the checkout, or ALIGNPRO_IFEVAL_INPUT
IFEVAL_INPUT = Path(os.environ.get("ALIGNPRO_IFEVAL_INPUT", REPO.parent / "shared/data/ifeval/input_data.jsonl"))


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return import_script("make_builtin_writing")


def shipped_rows() -> list[dict]:
    return [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# The base prompts
# ---------------------------------------------------------------------------------------------------------------


def test_bases_are_440_new_prompts_in_20_categories() -> None:
    bases = writing_bases()
    assert len(bases) == 440
    assert [b.id for b in bases] == [f"w{i:03d}" for i in range(1, 441)]
    assert Counter(b.category for b in bases) == {category: 22 for category in CATEGORIES}
    assert len({b.request for b in bases}) == 440
    with_text = Counter(b.category for b in bases if b.given is not None)
    assert with_text == {"summary": 22, "rewrite": 22}  # each summary and rewrite comes with its own text
    assert all(b.text == f"{b.request}\n\n{b.given}" for b in bases if b.given)


# ---------------------------------------------------------------------------------------------------------------
# The generated set
# ---------------------------------------------------------------------------------------------------------------


def test_shipped_file_equals_a_fresh_generation(script: ModuleType) -> None:
    assert_fresh_generation(script, SHIPPED)


def test_check_flag_fails_on_a_stale_file(script: ModuleType, tmp_path: Path) -> None:
    copy = assert_check_flag(script, SHIPPED, b"w001-v0", b"w001-vX", tmp_path)
    assert script.main(["--check", "--out", str(copy.with_name("copy2.jsonl")), "--ifeval",
                        str(tmp_path / "none.jsonl")]) == 2


def test_three_variants_of_every_base_in_ifeval_schema() -> None:
    rows, bases = shipped_rows(), writing_bases()
    assert len(rows) == 3 * 440 == 1320
    assert [row["key"] for row in rows] == [f"{b.id}-v{v}" for b in bases for v in range(3)]
    for row, base in zip(rows, (b for b in bases for _ in range(3))):
        assert set(row) == {"key", "base_id", "category", "prompt", "instruction_id_list", "kwargs"}
        assert (row["base_id"], row["category"]) == (base.id, base.category)
        assert 1 <= len(row["instruction_id_list"]) == len(row["kwargs"]) <= 3
        assert row["prompt"].startswith(base.request.rstrip(".?!"))
        if base.given is not None:
            assert row["prompt"].endswith(f"\n\n{base.given}")
    assert Counter(len(row["instruction_id_list"]) for row in rows) == {1: 491, 2: 556, 3: 273}
    records = builtin_writing_prompts()
    assert [r.id for r in records] == [row["key"] for row in rows]
    assert len({r.text for r in records}) == 1320
    assert all(r.source == "builtin-writing" and r.category == row["category"] for r, row in zip(records, rows))


def test_instructions_are_allowed_compatible_and_differ_between_variants(script: ModuleType) -> None:
    ifeval = script.ifeval_set
    types_per_base: dict[str, list[frozenset[str]]] = {}
    bases = {b.id: b for b in writing_bases()}
    for record in builtin_writing_prompts():
        drawn = [ifeval.Drawn(i.id, i.kwargs, "") for i in record.instructions]
        for instruction in drawn:
            assert instruction.id in script.TYPES, (record.id, instruction.id)
            if instruction.id != script.REPEAT_PROMPT:
                assert ifeval.ALLOWED[instruction.id](instruction.kwargs), (record.id, instruction)
        for i, a in enumerate(drawn):
            for b in drawn[i + 1:]:
                assert a.id != b.id and not ifeval.registry_conflict(a.id, b.id), record.id
                assert ifeval.clash(a, b) is None, record.id
        types_per_base.setdefault(base_id(record.id), []).append(frozenset(i.id for i in drawn))
        if script.REPEAT_PROMPT in (i.id for i in drawn):
            base = bases[base_id(record.id)]
            assert base.given is None and len(base.request.split()) <= script.REPEAT_MAX_WORDS
            assert drawn[-1].id == script.REPEAT_PROMPT
    assert all(len(set(sets)) == 3 for sets in types_per_base.values())
    used = Counter(i.id for r in builtin_writing_prompts() for i in r.instructions)
    assert set(used) == set(script.TYPES)  # every type is drawn
    assert "detectable_format:constrained_response" not in used
    assert set(script.TYPES) | set(script.EXCLUDED_HERE) == set(ifeval.ALLOWED)


def test_each_instruction_is_stated_by_one_of_its_phrasings_and_each_type_has_several(script: ModuleType) -> None:
    """The prompt holds a phrasing rendered from the stored kwargs (so the words state what is checked), and
    every type is phrased at least two ways across the set."""
    seen: dict[str, set[int]] = {}
    for record in builtin_writing_prompts():
        for instruction in record.instructions:
            texts = [p.text for p in script.phrasings(instruction.id, instruction.kwargs)]
            found = [i for i, text in enumerate(texts) if text in record.text]
            assert len(found) == 1, (record.id, instruction.id)
            seen.setdefault(instruction.id, set()).update(found)
            if instruction.id == script.REPEAT_PROMPT:
                before = instruction.kwargs["prompt_to_repeat"]
                assert record.text == f"{before} {texts[found[0]]}", record.id
    assert set(seen) == set(script.TYPES)
    assert {t: len(s) >= 2 for t, s in seen.items()} == {t: True for t in script.TYPES}


def test_weave_puts_clauses_in_the_last_sentence_and_sentences_after(script: ModuleType) -> None:
    clause, sentence = script.Phrase("clause", "all in lowercase letters"), script.Phrase("sentence", "No commas.")
    other = script.Phrase("clause", "in fewer than 120 words")
    assert script.weave("Write a poem about rain.", [clause]) == "Write a poem about rain, all in lowercase letters."
    assert script.weave("Can you write one?", [clause, other, sentence]) == \
        "Can you write one, all in lowercase letters and in fewer than 120 words? No commas."
    assert script.weave("caption for my dog pls", [sentence]) == "caption for my dog pls. No commas."
    assert script.weave("caption for my dog pls", []) == "caption for my dog pls"


def test_kwargs_in_each_phrasing(script: ModuleType) -> None:
    """Numbers and words of the kwargs appear in the phrasing exactly, relation included."""
    at_least = script.phrasings("keywords:frequency", {"keyword": "tide", "frequency": 3, "relation": "at least"})
    assert [p.text for p in at_least][0] == 'using the word "tide" at least three times'
    fewer = script.phrasings("keywords:frequency", {"keyword": "tide", "frequency": 2, "relation": "less than"})
    assert [p.text for p in fewer] == ['using the word "tide" fewer than twice',
                                       'The word "tide" may appear at most once.']
    never = script.phrasings("keywords:frequency", {"keyword": "tide", "frequency": 1, "relation": "less than"})
    assert [p.text for p in never] == ['without ever using the word "tide"',
                                       'Do not use the word "tide" even once.']
    sections = script.phrasings("detectable_format:multiple_sections",
                                {"num_sections": 3, "section_spliter": "SECTION"})
    assert sections[2].text == 'Give it three sections under the headings "SECTION 1", "SECTION 2" and "SECTION 3".'
    nth = script.phrasings("length_constraints:nth_paragraph_first_word",
                           {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "harbour"})
    assert nth[1].text == ('Use exactly three paragraphs separated by empty lines, and begin paragraph 2 with the '
                           'word "harbour".')


# ---------------------------------------------------------------------------------------------------------------
# Scored by the project's ifeval reward
# ---------------------------------------------------------------------------------------------------------------


def _first_with_only(instruction_id: str) -> PromptRecord:
    return next(r for r in builtin_writing_prompts() if [i.id for i in r.instructions] == [instruction_id])


POEM = "the kettle sings at dawn and the window fogs with steam while the cat waits by the door for the day to begin"


def _answers(instruction: Instruction) -> tuple[str, str]:
    """A hand-written (compliant, non-compliant) answer pair for one instruction of the set."""
    a = instruction.kwargs
    if instruction.id == "change_case:english_lowercase":
        return POEM + ".", POEM.capitalize() + "."
    if instruction.id == "change_case:english_capital":
        return POEM.upper() + ".", POEM + "."
    if instruction.id == "punctuation:no_comma":
        return POEM + ".", POEM.replace(" and ", ", and ") + "."
    if instruction.id == "length_constraints:number_words":
        return POEM + ".", " ".join([POEM] * (a["num_words"] // 20 + 1)) + "."
    if instruction.id == "detectable_content:postscript":
        return f"{POEM}.\n\n{a['postscript_marker']} Bring a scarf.", f"{POEM}.\n\nBring a scarf."
    if instruction.id == "detectable_format:title":
        return f"<<Morning>>\n\n{POEM}.", f"Morning\n\n{POEM}."
    if instruction.id == "startend:end_checker":
        return f"{POEM}. {a['end_phrase']}", f"{a['end_phrase']} {POEM}."
    if instruction.id == "keywords:existence":
        first, second = a["keywords"]
        return f"{POEM} with {first} and {second}.", f"{POEM} with {first}."
    if instruction.id == "startend:quotation":
        return f'"{POEM}."', f"{POEM}."
    if instruction.id == "combination:two_responses":
        return f"{POEM}.\n******\nThe kettle is quiet tonight.", f"{POEM}."
    raise AssertionError(f"no answers written for {instruction.id}")


@pytest.mark.parametrize("instruction_id", [
    "change_case:english_lowercase", "change_case:english_capital", "punctuation:no_comma",
    "length_constraints:number_words", "detectable_content:postscript", "detectable_format:title",
    "startend:end_checker", "keywords:existence", "startend:quotation", "combination:two_responses",
])
def test_the_ifeval_reward_scores_a_compliant_and_a_non_compliant_answer(instruction_id: str) -> None:
    record = _first_with_only(instruction_id)
    reward = IFEvalReward([record])
    good, bad = _answers(record.instructions[0])
    assert reward.score([record.text, record.text], [good, bad]) == [1.0, 0.0]


def test_the_ifeval_reward_accepts_every_record() -> None:
    """Every record's instructions are known to the registry and checkable offline (no nltk data); the reward
    indexes all 1320 distinct prompts, and scores an empty answer 0."""
    records = builtin_writing_prompts()
    reward = IFEvalReward(records)
    assert len(reward.instructions) == 1320
    assert reward.score([records[5].text], [""]) == [0.0]


# ---------------------------------------------------------------------------------------------------------------
# The split and the loader source
# ---------------------------------------------------------------------------------------------------------------


def test_split_is_by_base_stratified_and_disjoint() -> None:
    bases = writing_bases()
    held_out = eval_base_ids(bases)
    assert len(held_out) == 60 and Counter(b.category for b in bases if b.id in held_out) == \
        {category: 3 for category in CATEGORIES}
    train, evaluation = builtin_writing_prompts("train"), builtin_writing_prompts("eval")
    train_bases, eval_bases = {base_id(r.id) for r in train}, {base_id(r.id) for r in evaluation}
    assert eval_bases == held_out and not train_bases & eval_bases
    assert (len(train), len(evaluation), len(train_bases)) == (1140, 180, 380)
    assert {r.id for r in train} | {r.id for r in evaluation} == {r.id for r in builtin_writing_prompts()}
    given = {b.given for b in bases if b.id in held_out and b.given}
    assert not given & {b.given for b in bases if b.id in train_bases}


def test_eval_base_ids_depend_only_on_ids_and_categories() -> None:
    bases = [WritingBase(f"x{i}", "poem" if i % 2 else "essay", "Write.") for i in range(20)]
    chosen = eval_base_ids(bases)
    assert len(chosen) == 4 and chosen == eval_base_ids(list(reversed(bases)))
    assert Counter(b.category for b in bases if b.id in chosen) == {"poem": 2, "essay": 2}
    assert eval_base_ids([WritingBase("solo", "song", "Sing.")]) == frozenset()


def test_load_prompts_builtin_writing_sources_and_sampling() -> None:
    sample = assert_named_source("builtin-writing", builtin_writing_prompts, 1320)
    assert all(r.source == "builtin-writing" and r.instructions for r in sample)
    result = load_prompts("builtin-writing", max_chars=200, skip_bad=True)
    assert result.skipped == 1320 - len(result.records) > 0 and set(result.skipped_reasons) == {"too_long"}


@pytest.mark.parametrize(("source", "kwargs", "fragment"), [
    ("builtin-writing:test", {}, "unknown builtin-writing split 'test'; valid forms: builtin-writing, builtin-writing:train"),
    ("builtin-writing:eval", {"split": "train"}, "give the split once"),
    ("builtin-writing", {"field": "text"}, "field does not apply"),
    ("builtin-writing", {"data_files": "x.jsonl"}, "data_files does not apply"),
    ("builtin-writing", {"n": 0}, "n must be a positive integer"),
    ("builtin-writing", {"max_chars": 10}, r"builtin_writing\.jsonl, line 1: field 'prompt' has \d+ characters"),
])
def test_builtin_writing_source_errors(source: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(AlignProError, match=fragment):
        load_prompts(source, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# No overlap with IFEval's prompts
# ---------------------------------------------------------------------------------------------------------------


def test_overlap_measures_shared_ngrams_and_jaccard(script: ModuleType) -> None:
    reference = ["Write a cheerful letter to the baker on the corner about the bread she sold me today."]
    copied = script.overlap([("a", reference[0].upper())], reference)
    assert (copied.shared_ngrams, copied.max_jaccard, copied.ok) == (10, 1.0, False)  # 17 words
    fresh = script.overlap([("b", "Compose a sonnet about snow on a quiet railway platform.")], reference)
    assert fresh.shared_ngrams == 0 and fresh.max_jaccard == pytest.approx(3 / 21)  # a, about, on and fresh.ok
    near = script.overlap([("c", "a letter to the baker on the corner about the bread she sold")], reference)
    assert near.shared_ngrams == 5 and not near.ok


@pytest.mark.skipif(not IFEVAL_INPUT.is_file(), reason=f"IFEval's input_data.jsonl not at {IFEVAL_INPUT} "
                                                       "(set ALIGNPRO_IFEVAL_INPUT)")
def test_no_prompt_or_base_overlaps_ifeval(script: ModuleType) -> None:
    found = script.ifeval_overlap(IFEVAL_INPUT, shipped_rows(), writing_bases())
    assert found.shared_ngrams == 0, found
    assert found.max_jaccard < script.MAX_JACCARD == 0.5, found
