"""The three reward kinds: builtin (real MiniLM + VADER), hf: (a tiny random classifier), python:."""

import json
from pathlib import Path

import numpy as np
import pytest

from alignpro.errors import AlignProError
from alignpro.specs import make_reward

TRIPLES = [json.loads(line) for line in (Path(__file__).parent / "data" / "preference_triples.jsonl").open()]


def test_builtin_pairwise_accuracy_on_triples(builtin_reward):
    better = builtin_reward.score([t["prompt"] for t in TRIPLES], [t["better"] for t in TRIPLES])
    worse = builtin_reward.score([t["prompt"] for t in TRIPLES], [t["worse"] for t in TRIPLES])
    acc = float(np.mean(np.array(better) > np.array(worse)))
    assert len(TRIPLES) >= 30
    assert acc >= 0.85, f"pairwise accuracy {acc:.3f} on {len(TRIPLES)} triples"  # measured 0.90 (36/40)


def test_builtin_bounded_deterministic_and_empty_is_zero(builtin_reward):
    prompts = ["How do I boil an egg?"] * 4
    answers = ["Boil water, add the egg, cook 9 minutes. Enjoy!", "You are an idiot.", "", "   "]
    a = builtin_reward.score(prompts, answers)
    assert a == builtin_reward.score(prompts, answers)
    assert all(0.0 <= v <= builtin_reward.r_max for v in a)
    assert a[2] == 0.0 and a[3] == 0.0
    assert a[0] > a[1]


def test_builtin_scores_against_the_prompt_it_is_given(builtin_reward):
    y = "Preheat the oven, knead the dough, let it rise, and bake the bread for 30 minutes."
    on, off = builtin_reward.score(["How do I bake bread?", "What is the capital of Peru?"], [y, y])
    assert on > off


def test_hf_reward_tiny_random_classifier(tmp_path, smollm2_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tok.eos_token_id)
    import torch

    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    rm = make_reward(f"hf:{tmp_path / 'rm'}")
    # (x, y) is rendered with the reward model's own tokenizer's chat template (here SmolLM2's, saved with it) ...
    assert rm.render("hi there", "hello") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n")
    s = rm.score(["a", "a longer prompt here", "b"], ["x", "y y y", "z"])
    assert len(s) == 3 and all(np.isfinite(s))
    assert s == rm.score(["a", "a longer prompt here", "b"], ["x", "y y y", "z"])
    # batching with left/right padding must not change a sequence's score
    alone = rm.score(["a longer prompt here"], ["y y y"])
    assert alone[0] == pytest.approx(s[1], abs=1e-5)
    # ... and as plain "User:/Assistant:" turns by a tokenizer without one
    rm.tokenizer.chat_template = None
    assert rm.render("hi there", "hello") == "user: hi there\nassistant: hello\n"  # the one renderer's fallback


def test_hf_reward_missing_path_is_clear(tmp_path):
    with pytest.raises(AlignProError, match=f"^no such folder: '{tmp_path / 'missing'}'"):
        make_reward(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignProError, match="could not load a sequence-classification reward model from"):
        make_reward(f"hf:{tmp_path / 'empty'}")


def length_reward(prompts, answers):
    return [float(len(a)) for a in answers]


def test_python_reward():
    r = make_reward("python:tests.test_rewards:length_reward")
    assert r.score(["x", "y"], ["ab", "abcd"]) == [2.0, 4.0]
    with pytest.raises(AlignProError, match="cannot import"):
        make_reward("python:no_such_module_xyz:f")
    with pytest.raises(AlignProError, match="no callable"):
        make_reward("python:tests.test_rewards:nope")


@pytest.mark.parametrize("bad", ["", "magic", "python:onlymodule", "hf:"])
def test_bad_reward_specs_list_valid_forms(bad):
    with pytest.raises(AlignProError, match="valid forms"):
        make_reward(bad)
