"""The lean sampling loop (alignpro.backends.decode): exact math against transformers' warpers, and real runs of
the embedded model against ``generate`` and against a plain forward pass."""

import pytest
import torch
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from alignpro.backends.base import GenerationConfig
from alignpro.backends.decode import (decode, inverse_cdf, plan_prefix, row_uniforms, sample_next, token_logprob,
                                     warp_top_k_top_p)


def _hf_probs(logits, temperature, top_k, top_p):
    chain = [TemperatureLogitsWarper(temperature)]
    if top_k:
        chain.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p))
    return torch.softmax(LogitsProcessorList(chain)(None, logits.clone()), dim=-1)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.5, 20, 0.6), (0.8, 50, 0.95), (1.0, None, 0.9),
                                                     (1.0, 5, None), (0.7, None, None), (2.0, 1, 0.5)])
def test_warper_gives_transformers_distribution(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 300, generator=g) * 3
    logits[0, 7] = 30.0  # one dominant token: top-p keeps only it
    # (no exact ties: at a tie on the k-th logit transformers keeps every tied token, topk keeps k of them)
    expected = _hf_probs(logits, temperature, top_k, top_p)
    log_w, ids = warp_top_k_top_p(logits, temperature, top_k, top_p)
    ours = torch.zeros_like(expected).scatter(1, ids, torch.softmax(log_w, dim=-1))
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


def test_sampling_frequencies_follow_the_warped_distribution():
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.2, -1.0, -3.0]]).repeat(20000, 1)
    gen = GenerationConfig(temperature=1.5, top_k=4, top_p=0.8)
    torch.manual_seed(0)
    tokens = sample_next(logits, gen)
    freq = torch.bincount(tokens, minlength=6).float() / len(tokens)
    expected = _hf_probs(logits[:1], 1.5, 4, 0.8)[0]
    assert freq[expected == 0].sum() == 0  # never a token the chain removes
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_inverse_cdf_gives_each_token_exactly_its_probability():
    """On a fine grid of uniforms the inverse CDF returns each kept token on a share of the grid equal to its
    probability (to the grid's resolution), and never a token the chain removes."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.2, -1.0, -3.0], [0.0, 0.0, 5.0, 1.0, -2.0, 0.5]])
    log_w, ids = warp_top_k_top_p(logits, 1.5, 4, 0.8)
    probs = torch.softmax(log_w, -1)  # (2, 4), zeros where the nucleus cut
    G = 200_000
    u = (torch.arange(G, dtype=torch.float64) + 0.5) / G
    for b in range(2):
        idx = inverse_cdf(probs[b:b + 1].expand(G, -1), u.float())
        share = torch.bincount(idx, minlength=probs.shape[1]).double() / G
        torch.testing.assert_close(share, probs[b].double(), atol=2.0 / G, rtol=0)
    # the largest uniform below 1 still lands on a kept token (rounding never picks a removed one)
    top = inverse_cdf(probs, torch.full((2,), 1 - 2 ** -24))
    assert top.tolist() == [int((probs[b] > 0).sum()) - 1 for b in range(2)]
    assert inverse_cdf(probs, torch.zeros(2)).tolist() == [0, 0]


def test_per_row_uniform_sampling_follows_the_warped_distribution():
    """sample_next with each row's own uniform: the distribution of the multinomial path (same test as above)."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.2, -1.0, -3.0]]).repeat(20000, 1)
    gen = GenerationConfig(temperature=1.5, top_k=4, top_p=0.8)
    tokens = sample_next(logits, gen, uniforms=row_uniforms(range(20000), 1)[:, 0])
    freq = torch.bincount(tokens, minlength=6).float() / len(tokens)
    expected = _hf_probs(logits[:1], 1.5, 4, 0.8)[0]
    assert freq[expected == 0].sum() == 0
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_row_uniforms_belong_to_the_row_not_the_batch():
    alone = row_uniforms([7], 5)
    batch = row_uniforms([3, 11, 7, 2], 5)
    assert torch.equal(batch[2], alone[0])
    assert torch.equal(alone[0], torch.rand(5, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(batch[0], batch[1])


def test_greedy_and_logprob_helpers():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    assert sample_next(logits, GenerationConfig(do_sample=False)).tolist() == [1, 0]
    lp = token_logprob(logits, torch.tensor([2, 0]))
    torch.testing.assert_close(lp, torch.log_softmax(logits, -1)[[0, 1], [2, 0]])


def test_plan_prefix_shares_the_common_prefix_and_deduplicates():
    shared = list(range(100, 120))
    rows = [shared + [1, 2], shared + [3], shared + [1, 2], shared + [4, 5, 6]]
    plan = plan_prefix(rows)
    assert plan.shared == shared
    assert plan.unique == [[1, 2], [3], [4, 5, 6]]
    assert plan.row_of == [0, 1, 0, 2]
    # every row keeps at least one token; a short common prefix is not worth a separate pass
    assert plan_prefix([shared, shared]).shared == shared[:-1]
    assert plan_prefix([[1, 2, 3], [1, 2, 4]]).shared == []
    with pytest.raises(ValueError):
        plan_prefix([[1], []])


@pytest.fixture(scope="module")
def lm(smollm2_path):
    from alignpro.backends.hf import HFCausalLM

    return HFCausalLM(smollm2_path, batch_size=8)


def _rows(lm, convs):
    return [lm.tokenizer(lm.chat_prompt(c), add_special_tokens=False)["input_ids"] for c in convs]


SYSTEM = "You are a careful assistant. Answer in one short sentence, kindly and precisely, for a curious reader."
CONVS = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": u}]
         for u in ["Hi", "Explain photosynthesis to a child.", "Hi", "Name a color."]]


@pytest.mark.model
def test_greedy_decode_equals_generate(lm):
    """Shared prefix + deduplicated rows + row compaction give generate's own tokens."""
    gen = GenerationConfig(max_new_tokens=10, do_sample=False)
    rows = _rows(lm, CONVS)
    eos = lm.stop_ids()
    d = decode(lm.model, rows, gen, eos_ids=eos, pad_id=lm.tokenizer.pad_token_id)
    assert plan_prefix(rows).shared  # the system prompt really is shared here
    for i, r in enumerate(rows):
        ref = lm.model.generate(input_ids=torch.tensor([r]), max_new_tokens=10, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=sorted(eos))
        ref_ids = [t for t in ref[0, len(r):].tolist()]
        n = next((j for j, t in enumerate(ref_ids) if t in eos), len(ref_ids))
        assert d.ids[i, :int(d.lengths[i])].tolist() == ref_ids[:n]


@pytest.mark.model
def test_sampled_logprobs_match_a_plain_forward_pass(lm):
    gen = GenerationConfig(max_new_tokens=12, temperature=1.5, top_p=0.6, top_k=20)
    rows = _rows(lm, CONVS)
    torch.manual_seed(3)
    d = decode(lm.model, rows, gen, eos_ids=lm.stop_ids(), pad_id=lm.tokenizer.pad_token_id, with_logprobs=True)
    for i, r in enumerate(rows):
        n = int(d.lengths[i]) + int(d.ended[i])  # the EOS itself was sampled too
        new = d.ids[i, :n].tolist()
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([r + new])).logits[0, len(r) - 1:-1]
        ref = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(new).unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(d.logprobs[i, :n], ref, atol=2e-4, rtol=0)
        assert torch.all(d.logprobs[i, n:] == 0)


@pytest.mark.model
def test_seeded_sampling_uses_its_own_generator(lm):
    """HFCausalLM.sample(seed=s) draws from a generator of its own: the same seed gives the same answers, the
    global RNG is left as it was, and the draws equal those of torch's global RNG seeded with s (CPU)."""
    gen = GenerationConfig(max_new_tokens=12, temperature=1.5, top_p=0.6, top_k=20)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = lm.sample(CONVS, gen, seed=7, with_logprobs=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert lm.sample(CONVS, gen, seed=7, with_logprobs=False).token_ids == a.token_ids
    assert lm.sample(CONVS, gen, seed=8, with_logprobs=False).token_ids != a.token_ids
    torch.manual_seed(7)  # the generator's stream is the global one's for the same seed
    rows = _rows(lm, [CONVS[i] for i in sorted(range(len(CONVS)), key=lambda i: len(lm.chat_prompt(CONVS[i])))])
    d = decode(lm.model, rows, gen, eos_ids=lm.stop_ids(), pad_id=lm.tokenizer.pad_token_id)
    order = sorted(range(len(CONVS)), key=lambda i: len(lm.chat_prompt(CONVS[i])))
    for row, i in enumerate(order):
        assert d.ids[row, :int(d.lengths[row])].tolist() == a.token_ids[i]


@pytest.mark.model
def test_keyed_answers_do_not_depend_on_the_batch(lm):
    """HFTarget.answer(keys=...): answer j to a key is the same alone (batch 1) and at another position inside a
    batch of 16 with other prompts; the same prompt under another seed differs."""
    from alignpro.backends.hf import HFTarget

    target = HFTarget(lm, GenerationConfig(max_new_tokens=12))
    others = [f"Name {w} animal." for w in ("a big", "a small", "a fast", "a slow", "a green", "a loud", "a tiny")]
    prompt, key = "Write one short sentence about the sea.", "the-sea"
    alone = target.answer([prompt], n=2, seed=5, keys=[key])
    batch_prompts = others + [prompt]
    inside = target.answer(batch_prompts, n=2, seed=5, keys=[f"o{i}" for i in range(len(others))] + [key])
    assert len(batch_prompts) * 2 == 16 and inside[7] == alone[0]
    assert target.answer([prompt], n=2, seed=6, keys=[key])[0] != alone[0]


@pytest.mark.model
def test_two_prompts_with_one_key_share_their_uniforms(lm):
    """One key, one stream: the same x′ in two batches of other prompts, at other positions, gets the same
    answers (so two arms showing π_F the same x′ agree exactly, and different x′ share their uniforms)."""
    from alignpro.backends.hf import HFTarget

    target = HFTarget(lm, GenerationConfig(max_new_tokens=8))
    x = "Tell me a fact about cats."
    first = target.answer([x, "Hello"], n=3, seed=1, keys=["k", "h"])[0]
    second = target.answer(["Name a color.", "Count to three.", x], n=3, seed=1, keys=["c", "t", "k"])[2]
    assert first == second
