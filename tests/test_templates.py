import pytest

from alignpro.errors import AlignProError
from alignpro.templates import load_rewrite_template


def test_default_template_frames_the_verbatim_prompt():
    t = load_rewrite_template()
    msgs = t.messages("how do i x")
    assert msgs[0]["role"] == "system" and msgs[-1]["content"].endswith("how do i x\nOpening line:")
    assert len(msgs) == 1 + 2 * len(t.examples) + 1
    assert t.parse("Hi! Please help me with this:\n\nmore text", "how do i x") == (
        "Hi! Please help me with this: how do i x", True)
    # the model repeated the prompt: only the framing before it is kept
    assert t.parse("Hello! how do i x", "how do i x") == ("Hello! how do i x", True)
    assert t.parse("Opening line: Hi!", "q") == ("Hi! q", True)
    # an answer-length output is not a framing: fall back to x itself, flagged
    assert t.parse("Sure. " + "a" * 300, "q") == ("q", False)
    assert t.parse("", "q") == ("q", False)


def test_free_form_template_parses_first_paragraph_and_quotes():
    t = load_rewrite_template("rewrite-clarify")
    assert t.parse('Improved prompt: "How do I fix a flat tire?"\n\nSure, here is...', "fix tire") == (
        "How do I fix a flat tire?", True)


def test_template_errors(tmp_path):
    with pytest.raises(AlignProError, match="builtin rewrite templates"):
        load_rewrite_template("nope")
    bad = tmp_path / "t.yaml"
    bad.write_text("system: hi\nuser: no placeholder\n")
    with pytest.raises(AlignProError, match="prompt"):
        load_rewrite_template(str(bad))
    bad.write_text("user: '{prompt}'\n")
    with pytest.raises(AlignProError, match="system"):
        load_rewrite_template(str(bad))
