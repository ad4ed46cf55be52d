"""Model and reward specs, resolved in one place.

Model specs (prompter ρ and target π_F):
  - ``smollm2``                 the embedded SmolLM2-135M-Instruct (converted once into $ALIGNPRO_HOME)
  - ``hf:<hub id or local path>`` any transformers causal LM (hub ids need internet the first time), or a LoRA
                                adapter folder written by ``alignpro train --lora`` (RUN/final-adapter: base + adapter)
  - ``fake``                    the deterministic test double
  - ``openai:<model>@<base_url>`` (target) any OpenAI-compatible API (see alignpro.backends.openai_backend)
  - ``vllm:<hub id or path>``   (target) in-process vLLM on a GPU; extra ``alignpro[vllm]``
  - ``gguf:<path>``             (target) llama-cpp-python on CPU; extra ``alignpro[gguf]``
  The last three take backend options after ``?``: ``openai:m@http://127.0.0.1:8001/v1?no_key=true&concurrency=32``.
Reward specs:
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
from pathlib import Path

from alignpro.backends.base import GenerationConfig
from alignpro.errors import AlignProError, ConfigError

MODEL_SPEC_FORMS = ("smollm2", "hf:<hub id or local path>", "fake", "openai:<model>@<base_url>[?options]",
                    "vllm:<hub id or path>[?options]", "gguf:<path>[?options]")
#: kinds that can only answer (π_F): they give no token log-probs to train a prompter with
TARGET_ONLY_KINDS = ("openai", "vllm", "gguf")
REWARD_SPEC_FORMS = ("builtin", "ifeval", "hf:<hub id or local path>", "rm:<folder of alignpro reward train>",
                     "python:<module>:<function>", "fake",
                     "a weighted sum such as ifeval+builtin or 0.75*ifeval+0.25*builtin")
#: rewards that score an answer against the prompt's record (its instructions), not only its text
RECORD_REWARDS = ("ifeval",)

#: Sampling config for the prompter's rewrites (a rewrite should stay close to the prompt; answers use the paper's).
DEFAULT_REWRITE_CONFIG = GenerationConfig(max_new_tokens=48, temperature=0.8, top_p=0.95, top_k=50)


@dataclass(frozen=True)
class ModelSpec:
    kind: str  #: "smollm2" | "hf" | "fake" | "openai" | "vllm" | "gguf"
    ref: str = ""  #: hub id or path for "hf"; everything after "<kind>:" for the target-only kinds

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}" if self.ref else self.kind


def parse_model_spec(spec: str) -> ModelSpec:
    spec = spec.strip()
    if spec in ("smollm2", "fake"):
        return ModelSpec(spec)
    if spec.startswith("hf:") and spec[3:].strip():
        return ModelSpec("hf", spec[3:].strip())
    kind, _, ref = spec.partition(":")
    if kind in TARGET_ONLY_KINDS and ref.strip():
        _target_class(kind).parse_ref(ref.strip())  # validates the form and the options now, not at first use
        return ModelSpec(kind, ref.strip())
    raise AlignProError(f"invalid model spec '{spec}'; valid forms: {', '.join(MODEL_SPEC_FORMS)}")


def _target_class(kind: str):
    """The backend class of a target-only kind (its module imports the heavy package lazily)."""
    if kind == "openai":
        from alignpro.backends.openai_backend import OpenAITarget

        return OpenAITarget
    if kind == "vllm":
        from alignpro.backends.vllm_backend import VLLMTarget

        return VLLMTarget
    from alignpro.backends.gguf_backend import GGUFTarget

    return GGUFTarget


def spec_options(cls: type, query: str, spec: str):
    """The backend options written after ``?`` in a spec (``a=1&b=true``), as the dataclass ``cls``."""
    import typing
    from urllib.parse import parse_qsl

    from alignpro.config import build_config

    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise AlignProError(f"spec '{spec}': options after '?' must look like name=value&name=value") from None
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    for name, value in pairs:
        if name in values:
            raise AlignProError(f"spec '{spec}': option '{name}' is given twice")
        if hints.get(name) is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise AlignProError(f"spec '{spec}': option '{name}' must be true or false, got '{value}'")
            values[name] = value.lower() in ("true", "1", "yes")
        else:
            values[name] = value
    try:
        return build_config(cls, values, source="its options")
    except ConfigError as exc:
        raise ConfigError(f"spec '{spec}': {exc}") from None


def model_path(spec: ModelSpec) -> str:
    """A local folder (or hub id) that transformers can load."""
    if spec.kind == "smollm2":
        from alignpro.assets import smollm2_folder

        return str(smollm2_folder())
    if spec.kind == "hf":
        local = Path(spec.ref).expanduser()
        return str(local) if local.exists() else spec.ref
    raise AlignProError(f"model spec '{spec}' has no weights to load")


def load_causal_lm(spec: str | ModelSpec, *, trainable: bool = False, batch_size: int = 16,
                   device: str | None = None):
    """A fresh :class:`HFCausalLM` instance for ``spec`` (each call loads its own copy)."""
    from alignpro.backends.hf import HFCausalLM

    ms = parse_model_spec(spec) if isinstance(spec, str) else spec
    path = model_path(ms)
    if ms.kind == "hf" and (Path(path) / "adapter_config.json").is_file():  # a LoRA adapter of alignpro train
        from alignpro.train.policy import load_adapter

        lm = load_adapter(path, trainable=trainable, device=device)
        lm.batch_size = batch_size
        return lm
    return HFCausalLM(path, trainable=trainable, batch_size=batch_size, device=device)


def make_target(spec: str, gen: GenerationConfig | None = None, *, batch_size: int = 16):
    """π_F for ``spec``; its weights are frozen (eval mode, no gradients)."""
    ms = parse_model_spec(spec)
    if ms.kind == "fake":
        from alignpro.backends.fake import FakeTarget

        return FakeTarget()
    if ms.kind in TARGET_ONLY_KINDS:
        return _target_class(ms.kind).from_spec(ms.ref, gen or GenerationConfig())
    from alignpro.backends.hf import HFTarget

    return HFTarget(load_causal_lm(ms, batch_size=batch_size), gen or GenerationConfig(), name=spec)


def make_prompter(spec: str, template: str = "rewrite-default", gen: GenerationConfig | None = None, *,
                  batch_size: int = 16):
    """ρ_sft for ``spec``: the LM plus the rewrite template (a builtin name or a YAML path)."""
    ms = parse_model_spec(spec)
    if ms.kind == "fake":
        from alignpro.backends.fake import FakePrompter

        return FakePrompter()
    if ms.kind in TARGET_ONLY_KINDS:
        raise AlignProError(f"'{spec}' can only be a target: a prompter needs a local model with token log-probs "
                            "(smollm2, hf:<hub id or path>, fake)")
    from alignpro.backends.hf import HFPrompter
    from alignpro.templates import load_rewrite_template

    tpl = load_rewrite_template(template)
    return HFPrompter(load_causal_lm(ms, batch_size=batch_size), tpl, gen or DEFAULT_REWRITE_CONFIG, name=spec)


def _check_single_reward(spec: str, whole: str) -> str:
    ok = spec in ("builtin", "fake", "ifeval") or (spec[:3] in ("hf:", "rm:") and spec[3:].strip()) or (
        spec.startswith("python:") and len(spec.split(":")) == 3 and all(spec.split(":")[1:]))
    if not ok:
        raise AlignProError(f"invalid reward spec '{whole}'; valid forms: {', '.join(REWARD_SPEC_FORMS)}")
    return spec


def check_reward_spec(spec: str) -> str:
    """Validate the form of a reward spec without loading anything."""
    spec = spec.strip()
    if "+" in spec:
        from alignpro.rewards.mix import parse_mix

        for term in parse_mix(spec):
            _check_single_reward(term.spec, spec)
        return spec
    return _check_single_reward(spec, spec)


def reward_needs_records(spec: str) -> bool:
    """Whether the reward looks up each prompt's record (its IFEval instructions)."""
    from alignpro.rewards.mix import parse_mix

    return any(t.spec in RECORD_REWARDS for t in parse_mix(check_reward_spec(spec)))


def make_reward(spec: str, records=None):
    """The reward for ``spec``; ``records`` (the prompt records it will score) are needed by ``ifeval``."""
    spec = check_reward_spec(spec)
    if "+" in spec:
        from alignpro.rewards.mix import MixedReward, parse_mix

        return MixedReward([(t.weight, make_reward(t.spec, records)) for t in parse_mix(spec)], name=spec)
    if spec == "builtin":
        from alignpro.rewards.builtin import BuiltinReward

        return BuiltinReward()
    if spec == "ifeval":
        from alignpro.rewards.ifeval import IFEvalReward

        if records is None:
            raise AlignProError("reward 'ifeval' needs the prompt records it will score (their IFEval "
                                "instructions); this command does not pass prompt records to its reward")
        return IFEvalReward(records)
    if spec == "fake":
        from alignpro.backends.fake import FakeReward

        return FakeReward()
    if spec.startswith("hf:") and spec[3:].strip():
        from alignpro.rewards.hf import HFReward

        ref = spec[3:].strip()
        local = Path(ref).expanduser()
        return HFReward(str(local) if local.exists() else ref)
    if spec.startswith("rm:") and spec[3:].strip():
        from alignpro.reward_model.model import BradleyTerryReward

        return BradleyTerryReward(spec[3:].strip())
    if spec.startswith("python:"):
        parts = spec.split(":")
        if len(parts) == 3 and parts[1] and parts[2]:
            from alignpro.rewards.python import PythonReward

            return PythonReward(parts[1], parts[2])
    raise AlignProError(f"invalid reward spec '{spec}'; valid forms: {', '.join(REWARD_SPEC_FORMS)}")
