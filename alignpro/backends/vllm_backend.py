"""π_F generated in-process by vLLM on a GPU: ``vllm:<hub id or path>[?option=value&...]``.

An optional extra: ``pip install 'alignpro[vllm]'`` (needs a CUDA GPU). ``vllm`` is imported only when a target
is built, so this module imports everywhere. Options are the fields of :class:`VLLMOptions`, e.g.
``vllm:Qwen/Qwen2.5-7B-Instruct?tensor_parallel_size=2&gpu_memory_utilization=0.8``.

For a target shared by several jobs, or on other machines, run a vLLM *server* instead and use an
``openai:<model>@http://host:port/v1?no_key=true`` target (see docs/deployment.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from alignpro.backends.base import Answer, GenerationConfig, Usage, stream_seed
from alignpro.backends.chat import render_chat, user_turns
from alignpro.backends.options import local_or_hub, spec_options
from alignpro.config import setting
from alignpro.errors import AlignProError, ConfigError

INSTALL_HINT = "pip install 'alignpro[vllm]' (vLLM needs a CUDA GPU)"


@dataclass
class VLLMOptions:
    """Options of a ``vllm:`` target, written after ``?`` in its spec."""

    tensor_parallel_size: int = setting(1, "GPUs to shard the target over")
    gpu_memory_utilization: float = setting(0.45, "share of each GPU's memory vLLM may take (vLLM's own default "
                                                  "is 0.9; 0.45 leaves room for a prompter trained alongside)")
    dtype: str = setting("auto", "weights dtype: auto | bfloat16 | float16 | float32")
    max_model_len: int = setting(0, "context length; 0 = the model's")
    enforce_eager: bool = setting(False, "disable CUDA graphs (slower, starts faster, less memory)")

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"option 'tensor_parallel_size' must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"option 'gpu_memory_utilization' must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len < 0:
            raise ConfigError(f"option 'max_model_len' must be >= 0, got {self.max_model_len}")


def parse_vllm_ref(ref: str) -> tuple[str, VLLMOptions]:
    """``<hub id or path>[?options]`` → (model, options); a local path is expanded when it exists."""
    model, _, query = ref.strip().partition("?")
    model = model.strip()
    if not model:
        raise AlignProError(f"invalid spec 'vllm:{ref}'; expected vllm:<hub id or path>[?options]")
    return local_or_hub(model), spec_options(VLLMOptions, query, f"vllm:{ref}")


def import_vllm(spec: str):
    """The ``vllm`` module, or an AlignProError telling which extra to install."""
    try:
        import vllm
    except ImportError as exc:
        raise AlignProError(f"target '{spec}' needs vLLM, which is not installed ({exc}); {INSTALL_HINT}") from None
    return vllm


class VLLMTarget:
    """π_F on vLLM: chat-templated prompts, ``n`` samples per prompt in one request (SamplingParams.n)."""

    parse_ref = staticmethod(parse_vllm_ref)

    def __init__(self, model: str, gen: GenerationConfig | None = None, options: VLLMOptions | None = None, *,
                 name: str | None = None) -> None:
        self.name = name or f"vllm:{model}"
        vllm = import_vllm(self.name)
        self.options = options or VLLMOptions()
        self.gen = gen or GenerationConfig()
        o = self.options
        self.llm = vllm.LLM(model=model, tensor_parallel_size=o.tensor_parallel_size,
                            gpu_memory_utilization=o.gpu_memory_utilization, dtype=o.dtype,
                            max_model_len=o.max_model_len or None, enforce_eager=o.enforce_eager)
        self.tokenizer = self.llm.get_tokenizer()
        self._sampling_params = vllm.SamplingParams
        self.usage = Usage()

    @classmethod
    def from_spec(cls, ref: str, gen: GenerationConfig | None = None) -> "VLLMTarget":
        model, options = parse_vllm_ref(ref)
        return cls(model, gen, options, name=f"vllm:{ref.strip()}")

    @classmethod
    def from_folder(cls, folder, gen: GenerationConfig, options, *, name: str, batch_size: int = 0) -> "VLLMTarget":
        """A local model spec with ``?engine=vllm`` (a LoRA adapter merged first); vLLM's options at their defaults."""
        from alignpro.assets import merged_folder

        return cls(str(merged_folder(folder)), gen, name=name)

    def _prompt_ids(self, conv: list[dict[str, str]]) -> list[int]:
        return list(self.tokenizer(render_chat(self.tokenizer, conv), add_special_tokens=False).input_ids)

    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        """With ``keys``, answer j to prompt i is its own request seeded by its stream (seed, keys[i], j)."""
        convs = user_turns(prompts, systems)
        g = self.gen
        params = lambda n_, seed_: self._sampling_params(  # noqa: E731
            n=n_, max_tokens=g.max_new_tokens, seed=seed_,
            temperature=g.temperature if g.do_sample else 0.0, top_p=g.top_p if g.do_sample else 1.0,
            top_k=(g.top_k or -1) if g.do_sample else -1)
        inputs = [{"prompt_token_ids": self._prompt_ids(c)} for c in convs]
        if keys is None:
            outs = self.llm.generate(inputs, params(n, seed), use_tqdm=False)
        else:  # one request per (prompt, j): the same per-request seed gives vLLM's sampler the same draws
            outs = self.llm.generate([x for x in inputs for _ in range(n)],
                                     [params(1, stream_seed(seed or 0, key, j) & 0x7FFFFFFF) for key in keys
                                      for j in range(n)], use_tqdm=False)
        self.usage.calls += 1
        flat = [Answer(o.text.strip(), len(o.token_ids)) for out in outs for o in out.outputs]
        self.usage.generated_tokens += sum(a.n_tokens for a in flat)
        return [flat[i * n:(i + 1) * n] for i in range(len(convs))]
