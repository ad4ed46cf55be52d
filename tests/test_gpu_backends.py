"""``vllm:`` and ``gguf:`` targets: spec parsing and the missing-extra errors everywhere; real generation only
where the optional package (and, for vLLM, a CUDA GPU) is present."""

from __future__ import annotations

import importlib.util

import pytest

from alignpro.backends.base import GenerationConfig
from alignpro.backends.gguf_backend import GGUFOptions, GGUFTarget, parse_gguf_ref
from alignpro.backends.vllm_backend import VLLMOptions, VLLMTarget, parse_vllm_ref
from alignpro.errors import AlignProError
from alignpro.specs import make_prompter, make_target

HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def test_vllm_spec_options() -> None:
    model, opts = parse_vllm_ref("Qwen/Qwen2.5-0.5B-Instruct?tensor_parallel_size=2&enforce_eager=true")
    assert model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (opts.tensor_parallel_size, opts.enforce_eager, opts.gpu_memory_utilization) == (2, True, 0.45)
    assert parse_vllm_ref("org/m")[1] == VLLMOptions()


def test_gguf_spec_options(tmp_path) -> None:
    path, opts = parse_gguf_ref(f"{tmp_path}/m.gguf?n_threads=4&chat_format=chatml")
    assert path == tmp_path / "m.gguf" and (opts.n_threads, opts.chat_format) == (4, "chatml")
    assert parse_gguf_ref("~/m.gguf")[1] == GGUFOptions()


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed: the missing-extra error cannot happen")
def test_vllm_missing_says_which_extra() -> None:
    with pytest.raises(AlignProError, match=r"pip install 'alignpro\[vllm\]'"):
        make_target("vllm:HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.mark.skipif(HAS_LLAMA_CPP, reason="llama-cpp-python is installed: the missing-extra error cannot happen")
def test_gguf_missing_says_which_extra(tmp_path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(AlignProError, match=r"pip install 'alignpro\[gguf\]'"):
        make_target(f"gguf:{model}")


def test_gguf_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(AlignProError, match="no GGUF file at"):
        make_target(f"gguf:{tmp_path}/absent.gguf")


@pytest.mark.parametrize("spec", ["vllm:org/m", "gguf:m.gguf"])
def test_target_only_kinds_are_not_prompters(spec: str) -> None:
    with pytest.raises(AlignProError, match="can only be a target"):
        make_prompter(spec)


# ---------------------------------------------------------------------------------------------- real generation
@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM: pip install 'alignpro[vllm]'")
def test_vllm_target_answers(smollm2_path) -> None:
    target = make_target(f"vllm:{smollm2_path}?gpu_memory_utilization=0.3&enforce_eager=true&dtype=bfloat16",
                         GenerationConfig(max_new_tokens=24))
    assert isinstance(target, VLLMTarget)
    rows = target.answer(["What is the capital of France?", "Name a colour."], n=3, seed=0,
                         systems=["Answer in one sentence.", None])
    assert [len(r) for r in rows] == [3, 3]
    assert all(a.text and 0 < a.n_tokens <= 24 for row in rows for a in row)
    again = target.answer(["What is the capital of France?", "Name a colour."], n=3, seed=0,
                          systems=["Answer in one sentence.", None])
    assert [[a.text for a in r] for r in again] == [[a.text for a in r] for r in rows]  # seeded = reproducible


@pytest.mark.model
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="needs llama-cpp-python: pip install 'alignpro[gguf]'")
def test_gguf_target_answers_with_the_embedded_smollm2() -> None:
    from alignpro.assets import smollm2_gguf_path

    target = make_target(f"gguf:{smollm2_gguf_path()}?n_ctx=512&n_threads=1", GenerationConfig(max_new_tokens=16))
    assert isinstance(target, GGUFTarget)
    rows = target.answer(["What is the capital of France?"], n=2, seed=1)
    assert len(rows[0]) == 2 and all(a.text for a in rows[0])
    assert target.answer(["What is the capital of France?"], n=2, seed=1) == rows  # seeded = reproducible
