"""Model kinds: the first word of a model spec, the backend classes that serve it, and what it can do.

=========  =============================  =========  ==============  ===========
kind       spec                           trainable  token log-probs answer-only
=========  =============================  =========  ==============  ===========
smollm2    ``smollm2[?options]``          yes        yes             no
hf         ``hf:<hub id or path>[?opts]`` yes        yes             no
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

A local model (``smollm2``, ``hf:``) answers and rewrites through one of the :data:`ENGINES`, chosen by its spec's
``engine`` option (``smollm2?engine=ct2``, :class:`alignpro.backends.options.LocalOptions`): ``torch`` (the
transformers model and alignpro's decoder, the reference; training always uses it), ``ct2`` (CTranslate2 on CPU,
int8) or ``vllm`` (a GPU).

Backend classes are named as ``module:Class`` and imported on first use, so this table imports no backend (and
no heavy package); :mod:`alignpro.specs` resolves specs through it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from alignpro.errors import AlignProError, ConfigError


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
    BackendKind("smollm2", "smollm2[?options]", True, True, _HF_TARGET, _HF_PROMPTER),
    BackendKind("hf", "hf:<hub id or local path>[?options]", True, True, _HF_TARGET, _HF_PROMPTER),
    BackendKind("fake", "fake", False, True, "alignpro.backends.fake:FakeTarget",
                "alignpro.backends.fake:FakePrompter"),
    BackendKind("openai", "openai:<model>@<base_url>[?options]", False, False,
                "alignpro.backends.openai_backend:OpenAITarget"),
    BackendKind("vllm", "vllm:<hub id or path>[?options]", False, False, "alignpro.backends.vllm_backend:VLLMTarget"),
    BackendKind("gguf", "gguf:<path>[?options]", False, False, "alignpro.backends.gguf_backend:GGUFTarget"),
)}



@dataclass(frozen=True)
class Engine:
    """How a local model's weights are run to answer (π_F) and to rewrite (ρ)."""

    name: str  #: the value of the spec option ``engine``
    about: str  #: one line for help and errors
    target: str  #: ``module:Class`` of its target; other than torch's, built by ``from_folder(folder, gen, options)``
    prompter: str = ""  #: ``module:Class`` of its prompter (built the same way); "" for an answer-only engine

    def target_class(self) -> type:
        return _load(self.target)

    def prompter_class(self) -> type:
        if not self.prompter:
            raise AlignProError(f"engine '{self.name}' can only answer (no token log-probs to be a prompter with); "
                                f"engines of a prompter: {', '.join(n for n, e in ENGINES.items() if e.prompter)}")
        return _load(self.prompter)


#: the engines of a local model, the default (the reference) first
ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine("torch", "transformers + alignpro's decoder (the reference; fp32 on CPU)", _HF_TARGET, _HF_PROMPTER),
    Engine("ct2", "CTranslate2, int8 on CPU (converted once into $ALIGNPRO_HOME; extra alignpro[ct2])",
           "alignpro.backends.ct2_backend:CT2Target", "alignpro.backends.ct2_backend:CT2Prompter"),
    Engine("vllm", "vLLM on a CUDA GPU (extra alignpro[vllm])", "alignpro.backends.vllm_backend:VLLMTarget"),
)}
DEFAULT_ENGINE = "torch"


def engine(name: str) -> Engine:
    """The engine called ``name``; a ConfigError names the valid ones."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown engine '{name}'; valid engines: {', '.join(ENGINES)}") from None


MODEL_SPEC_FORMS = tuple(k.form for k in KINDS.values())
#: kinds that are local causal LMs whose weights we hold (trainable; a reference ρ_sft; a local judge)
LOCAL_LM_KINDS = tuple(k.name for k in KINDS.values() if k.trainable)
#: kinds that can only answer (π_F): they give no token log-probs to train a prompter with
TARGET_ONLY_KINDS = tuple(k.name for k in KINDS.values() if k.answer_only)
