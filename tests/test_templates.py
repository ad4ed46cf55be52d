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


def test_template_id_covers_every_field_that_shapes_the_rewrite():
    """RewriteTemplate.id keys cached rewrites: changing any field (compose and max_chars included, which the
    earlier hand-listed key left out) changes it; where the template was read from does not."""
    from dataclasses import fields, replace

    from alignpro.templates import RewriteTemplate

    base = RewriteTemplate(system="s", user="U: {prompt}", examples=(("a", "b"),), strip_prefixes=("P:",))
    changed = {"system": "t", "user": "V: {prompt}", "examples": (("a", "c"),), "strip_prefixes": ("Q:",),
               "max_chars_ratio": 3.0, "compose": "{rewrite} {prompt}", "max_chars": 80, "max_new_tokens": 64}
    assert set(changed) == {f.name for f in fields(RewriteTemplate)} - {"source", "extra"}
    ids = {name: replace(base, **{name: value}).id for name, value in changed.items()}
    assert len(set(ids.values()) | {base.id}) == len(changed) + 1  # every field changes the key
    assert replace(base, source="elsewhere.yaml").id == base.id
