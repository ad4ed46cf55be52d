"""Model and reward specs, resolved in one place.

Model specs (prompter ρ and target π_F); the kinds and what each can do are the table of
:mod:`alignpro.backends.registry`:
  - ``smollm2``                 the embedded SmolLM2-135M-Instruct (converted once into $ALIGNPRO_HOME)
  A local model (``smollm2``, ``hf:``) takes options after ``?``, its engine: ``smollm2?engine=ct2`` answers
  and rewrites with CTranslate2 int8 (alignpro.backends.options.LocalOptions; training always uses torch).
  - ``hf:<hub id or local path>`` any transformers causal LM (hub ids need internet the first time), or a LoRA
                                adapter folder written by ``alignpro train --lora`` (RUN/final-adapter: base + adapter)
  - ``fake``                    the deterministic test double
  - ``openai:<model>@<base_url>`` (target) any OpenAI-compatible API (see alignpro.backends.openai_backend)
  - ``vllm:<hub id or path>``   (target) in-process vLLM on a GPU; extra ``alignpro[vllm]``
  - ``gguf:<path>``             (target) llama-cpp-python on CPU; extra ``alignpro[gguf]``
  The last three take backend options after ``?``: ``openai:m@http://127.0.0.1:8001/v1?no_key=true&concurrency=32``
  (read by :func:`alignpro.backends.options.spec_options`).
Reward specs (parsed once, by :func:`parse_reward_spec`):
  - ``builtin``                 MiniLM relevance + VADER tone, in [0, 1] (see alignpro.rewards.builtin)
  - ``ifeval``                  fraction of the original prompt's IFEval instructions followed (alignpro.rewards.ifeval);
                                needs the prompt records (instruction_id_list, kwargs)
  - ``A+B``, ``0.75*A+0.25*B``  a weighted sum of the above (alignpro.rewards.mix), e.g. ``ifeval+builtin``
  - ``hf:<hub id or local path>`` a sequence-classification reward model
  - ``rm:<run folder>``          a Bradley–Terry reward model trained by ``alignpro reward train`` (its RUN/model:
                                weights, tokenizer and the (x, y) template used in training)
  - ``python:<module>:<function>`` any callable (prompts, answers) -> list[float]
  - ``fake``                    the deterministic test double
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from alignpro.backends.adapter import adapter_base, is_adapter_folder, merge_adapter
from alignpro.backends.base import GenerationConfig
from alignpro.backends.options import local_options, local_or_hub
from alignpro.backends.registry import (DEFAULT_ENGINE, LOCAL_LM_KINDS, KINDS, MODEL_SPEC_FORMS, TARGET_ONLY_KINDS,
                                        engine)
from alignpro.errors import AlignProError

__all__ = ["DEFAULT_REWRITE_CONFIG", "LOCAL_LM_KINDS", "MODEL_SPEC_FORMS", "REWARD_KINDS", "REWARD_SPEC_FORMS",
           "RECORD_REWARDS", "TARGET_ONLY_KINDS", "ModelSpec", "RewardSpec", "check_prompter_spec", "check_reward_spec",
           "load_causal_lm", "make_prompter", "make_reward", "make_target", "model_path", "model_spec_help",
           "parse_model_spec", "parse_reward_spec", "reward_needs_records", "reward_spec_help"]

#: reward kind -> how a spec of it is written (:data:`REWARD_BUILDERS` has one builder per kind)
REWARD_KINDS = {"ifeval": "ifeval", "builtin": "builtin", "hf": "hf:<hub id or local path>",
                "rm": "rm:<folder of alignpro reward train>", "python": "python:<module>:<function>", "fake": "fake"}
REWARD_SPEC_FORMS = (*REWARD_KINDS.values(), "a weighted sum such as ifeval+builtin or 0.75*ifeval+0.25*builtin")
#: rewards that score an answer against the prompt's record (its instructions), not only its text
RECORD_REWARDS = ("ifeval",)

#: Sampling config for the prompter's rewrites (a rewrite should stay close to the prompt; answers use the paper's).
DEFAULT_REWRITE_CONFIG = GenerationConfig(max_new_tokens=48, temperature=0.8, top_p=0.95, top_k=50)


# ---------------------------------------------------------------------------------------------------------------
# Model specs
# ---------------------------------------------------------------------------------------------------------------
#: which model kinds a setting accepts, by the role of its model (see :func:`model_spec_help`)
_ROLE_KINDS = {"target": lambda k: True, "prompter": lambda k: k.token_logprobs, "trainable": lambda k: k.trainable}


def model_spec_help(role: str) -> str:
    """The spec forms a model setting accepts, for its help text, from the registry's table of kinds: ``target``
    (π_F: every kind), ``prompter`` (ρ: kinds with token log-probs) or ``trainable`` (a local causal LM whose
    weights we hold: a policy to train, a reference, a base to fine-tune)."""
    accepts = _ROLE_KINDS[role]
    return " | ".join(k.form for k in KINDS.values() if accepts(k))


def reward_spec_help() -> str:
    """The reward spec forms (:func:`parse_reward_spec` reads exactly these), for a setting's help text."""
    return " | ".join(REWARD_SPEC_FORMS)



@dataclass(frozen=True)
class ModelSpec:
    kind: str  #: a kind of alignpro.backends.registry.KINDS: "smollm2" | "hf" | "fake" | "openai" | "vllm" | "gguf"
    ref: str = ""  #: hub id or path for "hf"; everything after "<kind>:" for the target-only kinds
    options: str = ""  #: a local model's options after ``?`` (alignpro.backends.options.LocalOptions)

    def __str__(self) -> str:
        return (f"{self.kind}:{self.ref}" if self.ref else self.kind) + (f"?{self.options}" if self.options else "")


def parse_model_spec(spec: str) -> ModelSpec:
    """``kind`` or ``kind:ref``; an answer-only kind's reference and options are validated now, not at first use."""
    spec = spec.strip()
    name, colon, ref = spec.partition(":")
    kind = KINDS.get(name.partition("?")[0])
    query = ""
    if kind is not None and kind.trainable:  # a local model: its options follow '?'
        body, _, query = spec.partition("?")
        name, colon, ref = body.partition(":")
        local_options(query, spec)
    if kind is not None and name == kind.name and (ref.strip() if kind.takes_ref else not colon):
        if kind.answer_only:
            kind.target_class().parse_ref(ref.strip())
        return ModelSpec(name, ref.strip(), query)
    raise AlignProError(f"invalid model spec '{spec}'; valid forms: {', '.join(MODEL_SPEC_FORMS)}")


def check_prompter_spec(spec: str | ModelSpec) -> ModelSpec:
    """The spec of a model that can be a prompter: an AlignProError when its kind can only answer."""
    ms = parse_model_spec(spec) if isinstance(spec, str) else spec
    if KINDS[ms.kind].answer_only:
        local = ", ".join(k.form for k in KINDS.values() if not k.answer_only)
        raise AlignProError(f"'{spec}' can only be a target: a prompter needs a local model with token log-probs "
                            f"({local})")
    return ms


def model_path(spec: ModelSpec) -> str:
    """A local folder (or hub id) that transformers can load."""
    if spec.kind == "smollm2":
        from alignpro.assets import smollm2_folder

        return str(smollm2_folder())
    if spec.kind == "hf":
        return local_or_hub(spec.ref)
    raise AlignProError(f"model spec '{spec}' has no weights to load")


def load_causal_lm(spec: str | ModelSpec, *, trainable: bool = False, batch_size: int = 16,
                   device: str | None = None):
    """A fresh :class:`HFCausalLM` instance for ``spec`` (each call loads its own copy)."""
    from alignpro.backends.hf import HFCausalLM

    ms = parse_model_spec(spec) if isinstance(spec, str) else spec
    path = model_path(ms)
    if ms.kind == "hf" and is_adapter_folder(path):  # a LoRA adapter of alignpro train: its base + the adapter
        lm = load_causal_lm(adapter_base(path), trainable=True, batch_size=batch_size, device=device)
        return merge_adapter(lm, path, trainable=trainable)
    return HFCausalLM(path, trainable=trainable, batch_size=batch_size, device=device)


def make_target(spec: str, gen: GenerationConfig | None = None, *, batch_size: int = 16):
    """π_F for ``spec``; its weights are frozen (eval mode, no gradients)."""
    ms = parse_model_spec(spec)
    kind = KINDS[ms.kind]
    if kind.answer_only:
        return kind.target_class().from_spec(ms.ref, gen or GenerationConfig())
    if not kind.trainable:  # the fake
        return kind.target_class()()
    options = local_options(ms.options, spec)
    if options.engine != DEFAULT_ENGINE:
        return engine(options.engine).target_class().from_folder(model_path(ms), gen or GenerationConfig(), options,
                                                                 name=spec, batch_size=batch_size)
    return kind.target_class()(load_causal_lm(ms, batch_size=batch_size), gen or GenerationConfig(), name=spec)


def make_prompter(spec: str, template: str = "rewrite-default", gen: GenerationConfig | None = None, *,
                  batch_size: int = 16):
    """ρ_sft for ``spec``: the LM plus the rewrite template (a builtin name or a YAML path)."""
    ms = check_prompter_spec(spec)
    kind = KINDS[ms.kind]
    if not kind.trainable:  # the fake
        return kind.prompter_class()()
    from alignpro.templates import load_rewrite_template

    tpl = load_rewrite_template(template)
    if gen is None:
        gen = DEFAULT_REWRITE_CONFIG.with_(max_new_tokens=tpl.max_new_tokens or DEFAULT_REWRITE_CONFIG.max_new_tokens)
    options = local_options(ms.options, spec)
    if options.engine != DEFAULT_ENGINE:
        return engine(options.engine).prompter_class().from_folder(model_path(ms), tpl, gen, options, name=spec,
                                                                   batch_size=batch_size)
    return kind.prompter_class()(load_causal_lm(ms, batch_size=batch_size), tpl, gen, name=spec)


# ---------------------------------------------------------------------------------------------------------------
# Reward specs
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardSpec:
    """One reward of a (possibly weighted-sum) reward spec."""

    kind: str  #: "builtin" | "ifeval" | "fake" | "hf" | "rm" | "python"
    ref: str = ""  #: hf: hub id or path; rm: run folder; python: "<module>:<function>"
    weight: float = 1.0  #: its weight in the sum (1 for a single reward)

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}" if self.ref else self.kind

    @property
    def needs_records(self) -> bool:
        """It looks up each prompt's record (its IFEval instructions)."""
        return self.kind in RECORD_REWARDS

    @property
    def module(self) -> str:
        """python: the module to import."""
        return self.ref.split(":")[0] if self.kind == "python" else ""

    @property
    def function(self) -> str:
        """python: the function in :attr:`module`."""
        return self.ref.split(":")[1] if self.kind == "python" else ""


_BARE_REWARDS = tuple(kind for kind, form in REWARD_KINDS.items() if ":" not in form)


def _parse_one(term: str, weight: float, whole: str) -> RewardSpec:
    kind, colon, ref = term.partition(":")
    if kind in _BARE_REWARDS and not colon:
        return RewardSpec(kind, weight=weight)
    if kind in ("hf", "rm") and ref.strip():
        return RewardSpec(kind, ref.strip(), weight)
    parts = term.split(":")
    if kind == "python" and len(parts) == 3 and parts[1] and parts[2]:
        return RewardSpec(kind, ref, weight)
    raise AlignProError(f"invalid reward spec '{whole}'; valid forms: {', '.join(REWARD_SPEC_FORMS)}")


def parse_reward_spec(spec: str) -> tuple[RewardSpec, ...]:
    """The rewards of ``spec``: one for a single reward, one per term (with its weight) for a weighted sum."""
    from alignpro.rewards.mix import parse_mix

    spec = spec.strip()
    if "+" not in spec:
        return (_parse_one(spec, 1.0, spec),)
    return tuple(_parse_one(t.spec, t.weight, spec) for t in parse_mix(spec))


def check_reward_spec(spec: str) -> str:
    """Validate the form of a reward spec without loading anything; returns it stripped."""
    parse_reward_spec(spec)
    return spec.strip()


def reward_needs_records(spec: str) -> bool:
    """Whether the reward looks up each prompt's record (its IFEval instructions)."""
    return any(t.needs_records for t in parse_reward_spec(spec))


def _builtin(t: RewardSpec, records: Any):
    from alignpro.rewards.builtin import BuiltinReward

    return BuiltinReward()


def _ifeval(t: RewardSpec, records: Any):
    from alignpro.rewards.ifeval import IFEvalReward

    if records is None:
        raise AlignProError("reward 'ifeval' needs the prompt records it will score (their IFEval "
                            "instructions); this command does not pass prompt records to its reward")
    return IFEvalReward(records)


def _fake(t: RewardSpec, records: Any):
    from alignpro.backends.fake import FakeReward

    return FakeReward()


def _hf(t: RewardSpec, records: Any):
    from alignpro.rewards.hf import HFReward

    return HFReward(local_or_hub(t.ref))


def _rm(t: RewardSpec, records: Any):
    from alignpro.reward_model.model import BradleyTerryReward

    return BradleyTerryReward(t.ref)


def _python(t: RewardSpec, records: Any):
    from alignpro.rewards.python import PythonReward

    return PythonReward(t.module, t.function)


#: reward kind -> its builder (the reward spec, the prompt records) -> reward
REWARD_BUILDERS: dict[str, Callable[[RewardSpec, Any], Any]] = {
    "builtin": _builtin, "ifeval": _ifeval, "fake": _fake, "hf": _hf, "rm": _rm, "python": _python}


def make_reward(spec: str, records=None):
    """The reward for ``spec``; ``records`` (the prompt records it will score) are needed by ``ifeval``. Every
    reward (each term of a sum) refuses to return a NaN or infinite value (:func:`alignpro.rewards.finite_rewards`)."""
    from alignpro.rewards import finite_rewards

    terms = parse_reward_spec(spec)
    built = [finite_rewards(REWARD_BUILDERS[t.kind](t, records), str(t)) for t in terms]
    if len(terms) == 1:
        return built[0]
    from alignpro.rewards.mix import MixedReward

    return MixedReward([(t.weight, r) for t, r in zip(terms, built)], name=spec.strip())
