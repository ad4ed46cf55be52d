"""The training forward pass that encodes the shared query prefix once (alignpro.train.policy.response_forward):
the same logits, hidden states and gradients as the plain pass over every full row."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignpro.train.policy import PolicyWithValueHead, response_forward, shared_prefix_length, split_shared_prefix


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=101,
                                        max_position_embeddings=256, pad_token_id=0))


def _batch():
    """Left-padded queries sharing 20 tokens, then responses right-padded after their end (mask 0)."""
    g = torch.Generator().manual_seed(1)
    shared = torch.randint(5, 100, (20,), generator=g).tolist()
    queries = [shared + torch.randint(5, 100, (n,), generator=g).tolist() for n in (3, 7, 1, 5)]
    Q = max(len(q) for q in queries)
    ids = torch.zeros((4, Q + 6), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, q in enumerate(queries):
        ids[i, Q - len(q):Q] = torch.tensor(q)
        mask[i, Q - len(q):Q] = 1
    ids[:, Q:] = torch.randint(5, 100, (4, 6), generator=g)
    mask[:, Q:] = 1
    mask[1, Q + 3:] = 0  # row 1's response ended early
    ids[1, Q + 3:] = 0
    return ids, mask


def test_prefix_is_found_and_split_right_aligned():
    ids, mask = _batch()
    assert shared_prefix_length(ids, mask, keep=7) == 20
    assert shared_prefix_length(ids, mask, keep=7, min_shared=21) == 0
    assert shared_prefix_length(ids[:1], mask[:1], keep=7) == 0  # one row: nothing to share
    prefix, suffix, smask = split_shared_prefix(ids, mask, 20)
    lead = (mask.cumsum(1) == 0).sum(1)
    assert prefix[0].tolist() == ids[0, lead[0]:lead[0] + 20].tolist()
    assert torch.equal(suffix[:, -6:], ids[:, -6:]) and torch.equal(smask[:, -6:], mask[:, -6:])
    for i in range(4):  # each row's own tokens after the prefix, nothing else unmasked
        assert suffix[i][smask[i].bool()].tolist() == ids[i][mask[i].bool()][20:].tolist()


@pytest.mark.parametrize("hidden", [False, True])
def test_shared_prefix_forward_equals_the_plain_one_with_gradients(model, hidden):
    ids, mask = _batch()
    policy = PolicyWithValueHead(model, value_head=hidden)
    results = []
    for share in (False, True):
        model.zero_grad()
        policy.zero_grad()
        logits, h = response_forward(model, ids, mask, 6, hidden=hidden, share_prefix=share)
        loss = (logits.log_softmax(-1)[..., 7] * mask[:, -6:]).sum() + (h.sum() if hidden else 0)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logits.detach(), None if h is None else h.detach(), grads))
    (l0, h0, g0), (l1, h1, g1) = results
    torch.testing.assert_close(l1, l0, atol=2e-5, rtol=1e-4)
    if hidden:
        torch.testing.assert_close(h1, h0, atol=2e-5, rtol=1e-4)
    assert g0.keys() == g1.keys() and len(g0) > 5
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=5e-5, rtol=1e-3, msg=n)
