"""What every chat backend shares: the conversation for a prompt, its rendering, where a reply stops, its seed.

- :func:`user_turn`: ``[system] + [user]``, the conversation a target answers (and a reward model scores);
- :func:`render_chat`: a tokenizer's chat template, ready for the assistant's turn, or the plain-text fallback of a
  base model without one (:func:`plain_chat_text`);
- :func:`ensure_pad_token`: the one fix for a tokenizer without a pad token;
- :func:`stop_token_ids`: the tokens that end a sampled reply;
- :func:`request_seed`: the seed of sample ``j`` of a prompt, for backends that take one seed per request.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

from alignpro.errors import AlignProError

Message = dict[str, str]


def user_turn(prompt: str, system: str | None = None) -> list[Message]:
    """The conversation ``[system] + [user]`` (no system message when ``system`` is empty or None)."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def user_turns(prompts: Sequence[str], systems: Sequence[str | None] | None = None) -> list[list[Message]]:
    """:func:`user_turn` for each prompt; ``systems`` (one per prompt, or None for none) must match in length."""
    if systems is None:
        return [user_turn(p) for p in prompts]
    if len(systems) != len(prompts):
        raise ValueError(f"got {len(systems)} system prompts for {len(prompts)} prompts")
    return [user_turn(p, s) for p, s in zip(prompts, systems)]


def plain_chat_text(messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """A conversation as plain ``role: content`` lines (a model without a template), ending with ``assistant:``
    when ``add_generation_prompt`` (the assistant's turn comes next)."""
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + "assistant:" if add_generation_prompt else text


def render_chat(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """``messages`` rendered by the tokenizer's chat template, or :func:`plain_chat_text`: ready for the assistant's
    turn when ``add_generation_prompt``, else as a finished conversation (a reward model scoring an answer)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return plain_chat_text(messages, add_generation_prompt)


def ensure_pad_token(tokenizer: Any, model_config: Any = None) -> None:
    """Batches need padding: a tokenizer without a pad token pads with its EOS token (or its UNK token when it has
    no EOS); a sequence-classifier's ``model_config`` without a pad id gets the tokenizer's (the model finds each
    row's last real token by it)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None and tokenizer.unk_token is None:
            raise AlignProError("the tokenizer has no pad, eos or unk token to pad batches with; give it a pad token")
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if model_config is not None and model_config.pad_token_id is None:
        model_config.pad_token_id = tokenizer.pad_token_id


def stop_token_ids(tokenizer: Any, model: Any, *, pad: bool) -> set[int]:
    """The tokens that end a reply: the tokenizer's EOS and the model's generation config's EOS, and with ``pad``
    the pad token too.

    Two callers differ on ``pad``, on purpose until one of them changes its samples: answers and rewrites
    (:meth:`HFCausalLM.sample`) stop on pad as well; training rollouts (``alignpro.train``) on EOS only. For a
    model whose pad token is its EOS (SmolLM2, and every tokenizer :class:`HFCausalLM` gives the EOS as pad) the
    two sets are equal.
    """
    ids = {tokenizer.eos_token_id}
    if pad:
        ids.add(tokenizer.pad_token_id)
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update([gc_eos] if isinstance(gc_eos, int) else (gc_eos or []))
    return {i for i in ids if i is not None}


def request_seed(seed: int, sample: int) -> int:
    """The seed sent for sample ``sample`` of a prompt: distinct per sample, so n answers are n draws."""
    digest = hashlib.sha256(f"{seed}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
