"""One helper each: rendering a conversation, the pad-token fix, and the teacher-forced forward pass that both the
training loop and `alignpro theory estimate` use."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from alignpro.backends.chat import ensure_pad_token, plain_chat_text, render_chat, user_turn
from alignpro.errors import AlignProError


class _Tok:
    def __init__(self, template: str | None = None, pad=None, eos="</s>", unk="<unk>") -> None:
        self.chat_template, self.eos_token, self.unk_token = template, eos, unk
        self.pad_token = pad
        self.calls: list[bool] = []

    @property
    def pad_token_id(self):
        return {None: None, "</s>": 2, "<unk>": 0, "<pad>": 1}[self.pad_token]

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        self.calls.append(add_generation_prompt)
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt
                                                                           else "")


def test_a_finished_conversation_renders_without_the_assistant_prompt() -> None:
    conv = user_turn("x?", "sys") + [{"role": "assistant", "content": "y."}]
    assert plain_chat_text(conv, add_generation_prompt=False) == "system: sys\nuser: x?\nassistant: y.\n"
    assert render_chat(_Tok(), conv, add_generation_prompt=False) == "system: sys\nuser: x?\nassistant: y.\n"
    tok = _Tok("{{ tpl }}")
    assert render_chat(tok, conv, add_generation_prompt=False) == "<system>sys<user>x?<assistant>y."
    assert render_chat(tok, user_turn("x?")) == "<user>x?<assistant>" and tok.calls == [False, True]


def test_the_hf_reward_renders_its_pair_with_the_one_renderer() -> None:
    from alignpro.rewards.hf import HFReward

    rm = HFReward.__new__(HFReward)  # render needs only the tokenizer
    rm.tokenizer = _Tok()
    assert rm.render("x?", "y.") == "user: x?\nassistant: y.\n"
    rm.tokenizer = _Tok("{{ tpl }}")
    assert rm.render("x?", "y.") == "<user>x?<assistant>y." and rm.tokenizer.calls == [False]


def test_the_pad_fix_pads_with_eos_then_unk_and_tells_the_classifier() -> None:
    tok, config = _Tok(), SimpleNamespace(pad_token_id=None)
    ensure_pad_token(tok, config)
    assert tok.pad_token == "</s>" and config.pad_token_id == 2
    tok = _Tok(eos=None)
    ensure_pad_token(tok)
    assert tok.pad_token == "<unk>"
    tok, config = _Tok(pad="<pad>"), SimpleNamespace(pad_token_id=7)
    ensure_pad_token(tok, config)  # both already set: untouched
    assert tok.pad_token == "<pad>" and config.pad_token_id == 7
    with pytest.raises(AlignProError, match="no pad, eos or unk token"):
        ensure_pad_token(_Tok(eos=None, unk=None))


class _Logits(torch.nn.Module):
    """A causal 'LM' whose logits at position t are a fixed function of (token t, position t)."""

    def forward(self, input_ids, attention_mask, position_ids, use_cache, output_hidden_states, logits_to_keep):
        logits = torch.stack([input_ids.float(), position_ids.float(), attention_mask.float()], dim=-1)  # (B, L, 3)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:], hidden_states=None)


def test_response_forward_after_last_adds_the_final_position() -> None:
    from alignpro.train.policy import response_forward

    ids = torch.tensor([[0, 5, 6, 7, 8], [4, 5, 6, 7, 9]])  # (B, L), row 0 left-padded by one
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    plain, _ = response_forward(_Logits(), ids, mask, 2, share_prefix=False)
    last, _ = response_forward(_Logits(), ids, mask, 2, share_prefix=False, after_last=True)
    assert plain.shape == (2, 2, 3) and last.shape == (2, 3, 3)
    assert torch.equal(last[:, :-1], plain)  # positions 2, 3 predict the 2 response tokens
    assert last[:, :, 0].tolist() == [[6, 7, 8], [6, 7, 9]]  # ... and position 4 what follows them
    assert last[:, :, 1].tolist() == [[1, 2, 3], [2, 3, 4]]  # position ids skip the left padding
