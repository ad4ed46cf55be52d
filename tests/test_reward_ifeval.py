"""The ``ifeval`` reward and reward mixes: IFEval's own checkers, instructions from the ORIGINAL x's record."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from alignpro.data import Instruction, PromptRecord
from alignpro.errors import AlignProError
from alignpro.specs import check_reward_spec, make_reward, reward_needs_records


def _rec(text: str, *instructions: tuple[str, dict], rid: str = "r1") -> PromptRecord:
    return PromptRecord(id=rid, text=text, instructions=tuple(
        Instruction(i, json.dumps(kw, sort_keys=True)) for i, kw in instructions))


NO_COMMA = ("punctuation:no_comma", {})
LOWER = ("change_case:english_lowercase", {})
END = ("startend:end_checker", {"end_phrase": "Any other questions?"})
BULLETS = ("detectable_format:number_bullet_lists", {"num_bullets": 2})


def test_fraction_followed_by_hand():
    x = "Tell me about cats. Use no commas. Answer in lowercase."
    reward = make_reward("ifeval", [_rec(x, NO_COMMA, LOWER)])
    assert reward.r_max == 1.0
    both = "cats are small furry animals that love to sleep in the sun and they purr when they are happy."
    one = "Cats are small furry animals that love to sleep in the sun and they purr when they are happy."
    neither = "Cats, in short, are small furry animals that love to sleep in the sun."
    assert reward.score([x, x, x, x], [both, one, neither, "   "]) == [1.0, 0.5, 0.0, 0.0]
    verdicts = reward.results([x], [one])[0]
    assert [(v.id, v.followed) for v in verdicts] == [("punctuation:no_comma", True),
                                                      ("change_case:english_lowercase", False)]


def test_loose_mode_and_kwargs():
    x = "Give two tips. End with: Any other questions?"
    reward = make_reward("ifeval", [_rec(x, BULLETS, END)])
    answer = "Here you go:\n* Sleep well\n* Drink water\nAny other questions?"
    assert reward.score([x], [answer]) == [1.0]
    # loose mode: a markdown-bold end phrase still passes (asterisks removed); four bullets fail even without
    # the first or last line (loose mode's other variants), so one of the two instructions is followed
    assert reward.score([x], ["* a\n* b\n* c\n* d\n**Any other questions?**"]) == [0.5]
    assert reward.score([x], ["* a\n* b\n* c\n* d\nAny other questions? Bye."]) == [0.0]


def test_instructions_come_from_the_original_record_only():
    x = "Tell me about dogs. Use no commas."
    reward = make_reward("ifeval", [_rec(x, NO_COMMA)])
    with pytest.raises(AlignProError, match="no instructions for the prompt"):
        reward.score([x + " Also answer in lowercase."], ["dogs are loyal"])  # a rewrite is never looked up


def test_errors_name_the_problem():
    with pytest.raises(AlignProError, match="none of the prompts has any"):
        make_reward("ifeval", [PromptRecord(id="a", text="hello")])
    with pytest.raises(AlignProError, match="needs the prompt records"):
        make_reward("ifeval")
    with pytest.raises(AlignProError, match="appears twice with different instructions"):
        make_reward("ifeval", [_rec("same", NO_COMMA), _rec("same", LOWER, rid="r2")])
    with pytest.raises(AlignProError, match="unknown instruction ids"):
        make_reward("ifeval", [_rec("x", ("no:such_type", {}))])


def test_types_needing_nltk_data_are_named(monkeypatch):
    import nltk

    def missing(resource, *a, **k):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", missing)
    rec = _rec("Write 3 sentences.", ("length_constraints:number_sentences",
                                       {"num_sentences": 3, "relation": "less than"}))
    with pytest.raises(AlignProError, match=r"length_constraints:number_sentences.*nltk.downloader punkt"):
        make_reward("ifeval", [rec])


def test_lowercase_checker_is_deterministic():
    x = "Say hi. Answer in lowercase."
    reward = make_reward("ifeval", [_rec(x, LOWER)])
    ans = ["hi there friend how are you today"] * 20
    assert len(set(reward.score([x] * 20, ans))) == 1


def test_mix_specs():
    assert check_reward_spec("ifeval+builtin") == "ifeval+builtin"
    assert check_reward_spec("0.75*ifeval+0.25*fake")
    assert reward_needs_records("ifeval+builtin") and not reward_needs_records("builtin")
    for bad, msg in (("ifeval+", "empty term"), ("0.7*ifeval+0.7*fake+builtin", "leaving nothing"),
                     ("0.5*ifeval+0.2*fake", "must sum to 1"), ("0.7*ifeval+0.7*fake", "must sum to 1"), ("x*ifeval+fake", "not a weight"),
                     ("ifeval+nope", "invalid reward spec")):
        with pytest.raises(AlignProError, match=msg):
            check_reward_spec(bad)


def test_mix_is_the_weighted_sum():
    from alignpro.backends.fake import FakeReward

    x = "Tell me about cats. Use no commas."
    reward = make_reward("0.25*ifeval+fake", [_rec(x, NO_COMMA)])
    answers = ["cats purr", "cats, mostly, purr"]
    expected = 0.25 * np.array([1.0, 0.0]) + 0.75 * np.array(FakeReward().score([x, x], answers))
    np.testing.assert_allclose(reward.score([x, x], answers), expected)
    assert set(reward.components([x], ["cats purr"])) == {"ifeval", "fake"}


def test_score_command_takes_the_instructions(capsys):
    from alignpro.cli import main

    assert main(["score", "--reward", "ifeval", "--prompt", "Cats? End with Bye.", "--answer", "cats purr. Bye.",
                 "--instruction-id-list", "punctuation:no_comma,startend:end_checker",
                 "--kwargs", '[{}, {"end_phrase": "Bye."}]', "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"reward": 1.0}
    assert main(["score", "--reward", "ifeval", "--prompt", "x", "--answer", "y",
                 "--instruction-id-list", "punctuation:no_comma", "--kwargs", "[{}, {}]"]) != 0
    assert "one per id" in capsys.readouterr().err


def test_strict_and_loose_verdicts_per_instruction():
    """Google's strict mode checks the answer as it is; loose mode also tries it without its first line, its last
    line, both, and without '*': a bold end phrase and a leading chatty line pass loose only."""
    x = "Give two tips. End with: Any other questions?"
    reward = make_reward("ifeval", [_rec(x, BULLETS, END)])
    both = [(v.id, v.strict, v.followed) for v in reward.results([x], ["* a\n* b\n**Any other questions?**"])[0]]
    assert both == [("detectable_format:number_bullet_lists", True, True), ("startend:end_checker", False, True)]
    plain = [(v.strict, v.followed) for v in reward.results([x], ["* a\n* b\nAny other questions?"])[0]]
    assert plain == [(True, True), (True, True)]
    empty = [(v.strict, v.followed) for v in reward.results([x], [""])[0]]
    assert empty == [(False, False), (False, False)]


def test_a_kwarg_the_checker_would_draw_at_random_gets_one_verdict_per_answer():
    # Google's IFEval has "letter": "!" (prompt 1129): IFEval's checker then picks a random letter on each check
    x = "Write a pitch. Contain 6 or more exclamation marks in your response."
    reward = make_reward("ifeval", [_rec(x, ("keywords:letter_frequency",
                                            {"let_frequency": 6, "let_relation": "at least", "letter": "!"}))])
    answers = ["".join(random.Random(i).choice("abcdefghijklmnopqrstuvwxyz     ") for _ in range(80))
               for i in range(12)]
    first = reward.score([x] * len(answers), answers)
    assert 0 < sum(first) < len(answers)  # the drawn letter passes some answers and fails others
    for k in range(8):
        random.seed(k)  # whatever state the caller's random is in
        before = random.getstate()
        assert reward.score([x] * len(answers), answers[::-1])[::-1] == first
        assert random.getstate() == before  # and the caller's stream is left where it was
