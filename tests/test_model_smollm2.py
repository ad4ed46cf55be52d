"""Tier 3: a few real runs of the embedded SmolLM2-135M-Instruct on tiny inputs."""

import json

import pytest
import torch

from alignpro.backends.base import GenerationConfig
from alignpro.backends.hf import HFCausalLM, HFPrompter, HFTarget
from alignpro.cli import main
from alignpro.templates import load_rewrite_template

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def lm(smollm2_path):
    return HFCausalLM(smollm2_path, batch_size=4)


def test_target_is_frozen_and_answers_in_batches(lm):
    assert not any(p.requires_grad for p in lm.model.parameters())
    target = HFTarget(lm, GenerationConfig(max_new_tokens=8))
    out = target.answer(["What is 2+2?", "Name a color.", "Say hi."], n=2, seed=0)
    assert [len(r) for r in out] == [2, 2, 2]
    assert all(a.text and 0 < a.n_tokens <= 8 for r in out for a in r)
    assert out == target.answer(["What is 2+2?", "Name a color.", "Say hi."], n=2, seed=0)  # seeded


def test_left_padding_does_not_change_greedy_output(lm):
    greedy = GenerationConfig(max_new_tokens=6, do_sample=False)
    convs = [[{"role": "user", "content": "Hi"}],
             [{"role": "user", "content": "Explain photosynthesis to a child in one short sentence please."}]]
    batched = lm.sample(convs, greedy)
    alone = lm.sample(convs[:1], greedy)
    assert batched.token_ids[0] == alone.token_ids[0]


def test_prompter_logprobs_match_a_forward_pass(lm):
    tpl = load_rewrite_template()
    pr = HFPrompter(lm, tpl, GenerationConfig(max_new_tokens=10, temperature=1.0, top_p=1.0, top_k=0))
    (rs,) = pr.rewrite(["how to sleep better"], 2, seed=1)
    assert len(rs.rewrites) == 2
    rw = rs.rewrites[0]
    ids = lm.tokenizer(lm.chat_prompt(tpl.messages("how to sleep better")), add_special_tokens=False,
                       return_tensors="pt")["input_ids"]
    gen_ids = lm.tokenizer(rw.raw, add_special_tokens=False)["input_ids"]
    # recompute log ρ(a_t | x, a_<t) of the sampled tokens by a forward pass (first tokens, before decoding drift)
    n = min(3, len(rw.token_logprobs))
    full = torch.cat([ids, torch.tensor([gen_ids[:n]])], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(full).logits[0, ids.shape[1] - 1:-1].float(), -1)
    recomputed = logp.gather(-1, torch.tensor(gen_ids[:n]).unsqueeze(-1)).squeeze(-1)
    assert recomputed.tolist() == pytest.approx(list(rw.token_logprobs[:n]), abs=1e-3)
    assert rw.logprob == pytest.approx(sum(rw.token_logprobs))


def test_quick_commands(capsys, tmp_path):
    assert main(["rewrite", "--k", "2", "--json", "how do i learn to cook"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rewrites"]) == 2 and all("logprob" in r for r in out["rewrites"])
    assert main(["answer", "--max-new-tokens", "8", "--json", "--prompter", "smollm2", "Name a fruit."]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] and out["rewrite"]
    assert main(["score", "--prompt", "How do I boil an egg?", "--answer", "Boil it for nine minutes."]) == 0
    assert 0 <= float(capsys.readouterr().out) <= 1
    assert main(["answer", "--target", "openai-ish", "hi"]) == 2
    assert "valid forms" in capsys.readouterr().err


def test_demo_tiny_real_run(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-prompts", "2", "--k", "2", "--m", "1", "--n-fresh", "1",
                 "--answer-max-new-tokens", "12"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    arms = m["cells"][0]["arms"]  # the demo is one cell of the evaluation
    assert set(arms) >= {"no_ft", "align_pro_closed_form"}
    assert all(s["n"] == 2 for s in arms.values())
    assert (out / "examples.md").read_text().count("**Original prompt:**") == 2
