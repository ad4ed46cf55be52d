"""π_F answered on CPU by llama.cpp: ``gguf:<path to a .gguf file>[?option=value&...]``.

An optional extra: ``pip install 'alignpro[gguf]'`` installs llama-cpp-python, which compiles llama.cpp from
source (about 14 minutes on a laptop); it is never part of the default install. ``llama_cpp`` is imported only
when a target is built. Options are the fields of :class:`GGUFOptions`, e.g. ``gguf:model.gguf?n_threads=8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from alignpro.backends.base import Answer, GenerationConfig, Usage
from alignpro.backends.base import stream_seed
from alignpro.backends.chat import request_seed, user_turns
from alignpro.backends.options import spec_options
from alignpro.config import check_at_least, setting
from alignpro.errors import AlignProError

INSTALL_HINT = "pip install 'alignpro[gguf]' (compiles llama.cpp from source, ~14 min)"


@dataclass
class GGUFOptions:
    """Options of a ``gguf:`` target, written after ``?`` in its spec."""

    n_ctx: int = setting(2048, "context length in tokens")
    n_threads: int = setting(0, "CPU threads; 0 = llama.cpp's default")
    n_gpu_layers: int = setting(0, "layers to offload to a GPU (a CUDA/Metal build of llama-cpp-python)")
    chat_format: str = setting("", "llama-cpp-python chat format; empty = the template in the GGUF metadata")

    def __post_init__(self) -> None:
        check_at_least(self, 0, "n_ctx", "n_threads", "n_gpu_layers", kind="option")


def parse_gguf_ref(ref: str) -> tuple[Path, GGUFOptions]:
    """``<path>[?options]`` → (path, options). The file's existence is checked when the target is built."""
    path, _, query = ref.strip().partition("?")
    if not path.strip():
        raise AlignProError(f"invalid spec 'gguf:{ref}'; expected gguf:<path to a .gguf file>[?options]")
    return Path(path.strip()).expanduser(), spec_options(GGUFOptions, query, f"gguf:{ref}")


class GGUFTarget:
    """π_F on llama.cpp: one chat completion per (prompt, sample), seeded per sample when ``seed`` is given."""

    parse_ref = staticmethod(parse_gguf_ref)

    def __init__(self, path: str | Path, gen: GenerationConfig | None = None, options: GGUFOptions | None = None,
                 *, name: str | None = None) -> None:
        path = Path(path).expanduser()
        self.name = name or f"gguf:{path}"
        if not path.is_file():
            raise AlignProError(f"target '{self.name}': no GGUF file at '{path}'")
        try:
            import llama_cpp
        except ImportError as exc:
            raise AlignProError(f"target '{self.name}' needs llama-cpp-python, which is not installed ({exc}); "
                                f"{INSTALL_HINT}") from None
        self.gen = gen or GenerationConfig()
        self.options = o = options or GGUFOptions()
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=o.n_ctx, n_threads=o.n_threads or None,
                                   n_gpu_layers=o.n_gpu_layers, chat_format=o.chat_format or None, verbose=False)
        self.usage = Usage()

    @classmethod
    def from_spec(cls, ref: str, gen: GenerationConfig | None = None) -> "GGUFTarget":
        path, options = parse_gguf_ref(ref)
        return cls(path, gen, options, name=f"gguf:{ref.strip()}")

    def answer(self, prompts: Sequence[str], *, n: int = 1, seed: int | None = None,
               systems: Sequence[str | None] | None = None,
               keys: Sequence[str] | None = None) -> list[list[Answer]]:
        g = self.gen
        rows = []
        for i, conv in enumerate(user_turns(prompts, systems)):
            row = []
            for j in range(n):  # keyed: the request seed of answer j is its stream's (coupled answers)
                req = request_seed(seed, j) if keys is None and seed is not None else (
                    None if keys is None else stream_seed(seed or 0, keys[i], j) & 0x7FFFFFFF)
                out = self.llm.create_chat_completion(
                    messages=conv, max_tokens=g.max_new_tokens,
                    temperature=g.temperature if g.do_sample else 0.0, top_p=g.top_p if g.do_sample else 1.0,
                    top_k=g.top_k if g.do_sample else 1, seed=req)
                text = (out["choices"][0]["message"].get("content") or "").strip()
                n_tokens = int((out.get("usage") or {}).get("completion_tokens", 0))
                self.usage.calls += 1
                self.usage.generated_tokens += n_tokens
                row.append(Answer(text, n_tokens))
            rows.append(row)
        return rows
