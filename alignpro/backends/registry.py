"""Model kinds: the first word of a model spec, the backend classes that serve it, and what it can do.

=========  =============================  =========  ==============  ===========
kind       spec                           trainable  token log-probs answer-only
=========  =============================  =========  ==============  ===========
smollm2    ``smollm2``                    yes        yes             no
hf         ``hf:<hub id or local path>``  yes        yes             no
fake       ``fake``                       no         yes             no
openai     ``openai:<model>@<base_url>``  no         no              yes
vllm       ``vllm:<hub id or path>``      no         no              yes
gguf       ``gguf:<path>``                no         no              yes
=========  =============================  =========  ==============  ===========

- *trainable*: a local causal LM whose weights we hold (:class:`~alignpro.backends.hf.HFCausalLM`): it can be
  trained, be a reference ρ_sft, a local judge, or have its log-probs taken under teacher forcing;
- *token log-probs*: it can be a prompter ρ (a rewrite comes with log ρ(x′|x));
- *answer-only*: it can only be a target π_F. The answer-only kinds take options after ``?``
  (:func:`alignpro.backends.options.spec_options`) and validate their reference with ``parse_ref``.

Backend classes are named as ``module:Class`` and imported on first use, so this table imports no backend (and
no heavy package); :mod:`alignpro.specs` resolves specs through it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from alignpro.errors import AlignProError


@dataclass(frozen=True)
class BackendKind:
    name: str  #: the spec's first word
    form: str  #: how a spec of this kind is written (for error messages and help)
    trainable: bool  #: a local causal LM whose weights we hold
    token_logprobs: bool  #: returns the log-probs of what it samples (can be a prompter)
    target: str  #: ``module:Class`` of its target (π_F) backend
    prompter: str = ""  #: ``module:Class`` of its prompter (ρ) backend; "" for an answer-only kind

    @property
    def answer_only(self) -> bool:
        """It can only answer (π_F): no token log-probs to train or sample a prompter with."""
        return not self.token_logprobs

    @property
    def takes_ref(self) -> bool:
        """Its spec is ``<kind>:<ref>`` (else the bare kind)."""
        return ":" in self.form

    def target_class(self) -> type:
        return _load(self.target)

    def prompter_class(self) -> type:
        """Its prompter class (check :attr:`answer_only` first: an answer-only kind has none)."""
        if not self.prompter:
            raise AlignProError(f"'{self.name}' has no prompter backend")
        return _load(self.prompter)


def _load(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


_HF_TARGET, _HF_PROMPTER = "alignpro.backends.hf:HFTarget", "alignpro.backends.hf:HFPrompter"

#: every model kind, in the order shown to users
KINDS: dict[str, BackendKind] = {k.name: k for k in (
    BackendKind("smollm2", "smollm2", True, True, _HF_TARGET, _HF_PROMPTER),
    BackendKind("hf", "hf:<hub id or local path>", True, True, _HF_TARGET, _HF_PROMPTER),
    BackendKind("fake", "fake", False, True, "alignpro.backends.fake:FakeTarget",
                "alignpro.backends.fake:FakePrompter"),
    BackendKind("openai", "openai:<model>@<base_url>[?options]", False, False,
                "alignpro.backends.openai_backend:OpenAITarget"),
    BackendKind("vllm", "vllm:<hub id or path>[?options]", False, False, "alignpro.backends.vllm_backend:VLLMTarget"),
    BackendKind("gguf", "gguf:<path>[?options]", False, False, "alignpro.backends.gguf_backend:GGUFTarget"),
)}

MODEL_SPEC_FORMS = tuple(k.form for k in KINDS.values())
#: kinds that are local causal LMs whose weights we hold (trainable; a reference ρ_sft; a local judge)
LOCAL_LM_KINDS = tuple(k.name for k in KINDS.values() if k.trainable)
#: kinds that can only answer (π_F): they give no token log-probs to train a prompter with
TARGET_ONLY_KINDS = tuple(k.name for k in KINDS.values() if k.answer_only)
