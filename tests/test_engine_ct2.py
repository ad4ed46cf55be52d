"""The CTranslate2 engine (``smollm2?engine=ct2``): the same conversation, stop tokens, sampling settings and seeds
as the torch path, its conversion cached and keyed by the weights, and one clear error for an unknown engine.

SmolLM2-135M is converted once per test session into a temporary $ALIGNPRO_HOME (≈ 25 s on the 2-core build
machine); the cache tests convert a one-layer random model of the same vocabulary (≈ 1 s).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ct2 = pytest.importorskip("ctranslate2", reason="CTranslate2 is not installed (pip install 'alignpro[ct2]')")

from alignpro.backends import base  # noqa: E402
from alignpro.backends.base import GenerationConfig  # noqa: E402
from alignpro.backends.chat import user_turn  # noqa: E402
from alignpro.backends.options import LocalOptions  # noqa: E402
from alignpro.errors import AlignProError, ConfigError  # noqa: E402
from alignpro.specs import make_prompter, make_target, parse_model_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER = GenerationConfig()
PROMPTS = ["Name three colors.", "Write a haiku about the sea."]


@pytest.fixture(scope="module")
def ct2_home(smollm2_path, tmp_path_factory):
    """A fresh $ALIGNPRO_HOME for this module; its SmolLM2 folder is a link to the one in the user's cache."""
    home = tmp_path_factory.mktemp("alignpro-home")
    (home / "models").mkdir()
    (home / "models" / Path(smollm2_path).name).symlink_to(smollm2_path)
    old = os.environ.get("ALIGNPRO_HOME")
    os.environ["ALIGNPRO_HOME"] = str(home)
    yield home
    if old is None:
        del os.environ["ALIGNPRO_HOME"]
    else:
        os.environ["ALIGNPRO_HOME"] = old


@pytest.fixture(scope="module")
def lm(ct2_home, smollm2_path):
    from alignpro.backends.ct2_backend import CT2LM

    return CT2LM(smollm2_path, LocalOptions(engine="ct2"), batch_size=4)


@pytest.fixture(scope="module")
def torch_lm(smollm2_path):
    from alignpro.backends.hf import HFCausalLM

    return HFCausalLM(smollm2_path, device="cpu")


@pytest.fixture
def streams(monkeypatch):
    """``base.stream_seed`` as specified for coupled answers, where this tree does not define it yet."""
    if not hasattr(base, "stream_seed"):
        def stream_seed(seed: int, key: str, j: int) -> int:
            digest = hashlib.blake2b(f"{int(seed)}\x1f{key}\x1f{int(j)}".encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") >> 1

        monkeypatch.setattr(base, "stream_seed", stream_seed, raising=False)
    return base.stream_seed


class _Spy:
    """A model replica that records what each generate_batch call was given."""

    def __init__(self, replica, calls: list) -> None:
        self.replica, self.calls = replica, calls

    def generate_batch(self, tokens, **kwargs):
        self.calls.append((tokens, kwargs))
        return self.replica.generate_batch(tokens, **kwargs)


@pytest.fixture
def spied(lm, monkeypatch):
    calls: list = []
    real = type(lm)._replica
    monkeypatch.setattr(type(lm), "_replica", lambda self, *a, **k: _Spy(real(self, *a, **k), calls))
    monkeypatch.setattr(lm, "_unseeded", None)
    return calls


def _target(lm, gen: GenerationConfig = PAPER):
    from alignpro.backends.ct2_backend import CT2Target

    return CT2Target(lm, gen, name="smollm2?engine=ct2")


# ---------------------------------------------------------------------------------------------- the same inputs
def test_token_ids_fed_are_the_torch_paths_with_system_prompts(lm, torch_lm, spied) -> None:
    convs = [user_turn(PROMPTS[0], "Answer in French."), user_turn(PROMPTS[1])]
    torch_ids = [torch_lm.tokenizer(torch_lm.chat_prompt(c), add_special_tokens=False)["input_ids"] for c in convs]
    assert lm.prompt_ids(convs) == torch_ids
    assert "Answer in French." in torch_lm.tokenizer.decode(torch_ids[0])
    _target(lm, PAPER.with_(max_new_tokens=2)).answer(PROMPTS, seed=0, systems=["Answer in French.", None])
    fed = [t for tokens, _ in spied for t in tokens]
    assert sorted(fed) == sorted(lm.tokenizer.convert_ids_to_tokens(ids) for ids in torch_ids)


def test_stop_tokens_are_the_torch_paths(lm, torch_lm) -> None:
    assert lm.stop_ids() == torch_lm.stop_ids() == {torch_lm.tokenizer.eos_token_id}


def test_sampling_settings_and_stop_tokens_are_passed_through(lm, spied) -> None:
    _target(lm, PAPER.with_(max_new_tokens=7)).answer(PROMPTS[:1], seed=1)
    _target(lm, GenerationConfig(max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=0)).answer(PROMPTS[:1], seed=1)
    _target(lm, PAPER.with_(do_sample=False, max_new_tokens=3)).answer(PROMPTS[:1], seed=1)
    asked = [kw for _, kw in spied if kw["max_length"] > 1]  # not the seeding draws
    picked = [(k["sampling_temperature"], k["sampling_topp"], k["sampling_topk"], k["max_length"]) for k in asked]
    assert picked == [(1.5, 0.6, 20, 7), (0.7, 0.9, 0, 5), (1.0, 1, 1, 3)]
    assert all(k["end_token"] == [2] and k["include_prompt_in_result"] is False for k in asked)


def test_max_new_tokens_and_stops_are_honoured(lm) -> None:
    short = _target(lm, PAPER.with_(max_new_tokens=6)).answer(PROMPTS, n=3, seed=2)
    assert max(a.n_tokens for row in short for a in row) == 6
    greedy = lm.sample([user_turn("Say hello.")], GenerationConfig(max_new_tokens=40, do_sample=False),
                       with_logprobs=False)
    assert 0 < len(greedy.token_ids[0]) < 40 and 2 not in greedy.token_ids[0]  # it stopped, the EOS not kept


# ---------------------------------------------------------------------------------------------- seeds
def test_same_prompt_and_seed_give_the_same_answers(lm) -> None:
    t = _target(lm, PAPER.with_(max_new_tokens=24))
    a = t.answer(PROMPTS, n=2, seed=5)
    assert t.answer(PROMPTS, n=2, seed=5) == a
    assert t.answer(PROMPTS, n=2, seed=6) != a
    assert a[0][0] != a[0][1]  # n answers are n draws


def test_two_replicas_are_seeded_too(lm, smollm2_path) -> None:
    from alignpro.backends.ct2_backend import CT2LM

    two = CT2LM(smollm2_path, LocalOptions(engine="ct2", inter_threads=2, intra_threads=1), batch_size=1)
    t = _target(two, PAPER.with_(max_new_tokens=16))
    assert t.answer(PROMPTS, n=2, seed=5) == t.answer(PROMPTS, n=2, seed=5)


def test_keys_give_each_answer_its_own_stream(lm, streams) -> None:
    t = _target(lm, PAPER.with_(max_new_tokens=24))
    both = t.answer(PROMPTS, n=2, seed=9, keys=["colors", "sea"])
    alone = t.answer(PROMPTS[1:], n=2, seed=9, keys=["sea"])
    assert both[1] == alone[0]  # the same stream whatever the batch
    assert t.answer(PROMPTS[1:], n=2, seed=9, keys=["ocean"])[0] != alone[0]
    with pytest.raises(ValueError, match="one per prompt"):
        t.answer(PROMPTS, seed=9, keys=["colors"])


# ---------------------------------------------------------------------------------------------- log-probs
def test_rewrite_logprobs_are_the_models_at_temperature_one(lm, torch_lm) -> None:
    import torch

    conv = [user_turn("Rewrite: name three colors.")]
    g = lm.sample(conv, PAPER.with_(max_new_tokens=12), seed=4)
    prompt = lm.prompt_ids(conv)[0]
    ids = torch.tensor([prompt + g.token_ids[0]])
    with torch.no_grad():
        logits = torch_lm.model(ids).logits[0, len(prompt) - 1:-1]
    ref = logits.log_softmax(-1).gather(1, torch.tensor(g.token_ids[0]).unsqueeze(1)).squeeze(1)
    ours = torch.tensor(g.token_logprobs[0])
    assert len(ours) == len(g.token_ids[0]) >= 8
    err, shifted = (ours - ref).abs().mean(), (ours[1:] - ref[:-1]).abs().mean()
    assert float(err) < 0.3 and float(shifted) > 3 * float(err)  # int8 weights against fp32 (measured 0.17)


def test_prompter_on_ct2(ct2_home) -> None:
    p = make_prompter("smollm2?engine=ct2", gen=GenerationConfig(max_new_tokens=16, temperature=0.8, top_p=0.95,
                                                                  top_k=50))
    sets = p.rewrite(PROMPTS[:1], 2, seed=0)
    assert [s.prompt for s in sets] == PROMPTS[:1] and len(sets[0].rewrites) == 2
    r = sets[0].rewrites[0]
    assert r.logprob == pytest.approx(sum(r.token_logprobs)) and r.logprob < 0 and 0 < len(r.token_logprobs) <= 16


# ---------------------------------------------------------------------------------------------- the conversion
@pytest.fixture
def tiny(tmp_path, smollm2_path):
    """A one-layer random Llama with SmolLM2's tokenizer, saved as a transformers folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2)
    folder = tmp_path / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(smollm2_path).save_pretrained(folder)
    return folder


def test_conversion_is_cached_and_keyed_by_the_weights(ct2_home, tiny, monkeypatch) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from alignpro.backends import ct2_backend

    real = ct2.converters.TransformersConverter
    converted: list[str] = []

    def counting(path, **kw):
        converted.append(path)
        return real(path, **kw)

    monkeypatch.setattr(ct2.converters, "TransformersConverter", counting)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ct2_backend.ct2_folder(tiny))) for _ in range(2)]
    for th in threads:  # two first uses at once: one conversion, one complete folder
        th.start()
    for th in threads:
        th.join()
    first = results[0]
    assert results == [first, first] and converted == [str(tiny)]
    assert first.parent == ct2_home / "ct2" and (first / "model.bin").is_file()
    assert [p.name for p in first.parent.iterdir() if p.name.startswith("tiny")] == [first.name]
    assert ct2_backend.ct2_folder(tiny) == first and len(converted) == 1  # cached
    model = LlamaForCausalLM.from_pretrained(tiny)
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)
    model.save_pretrained(tiny)  # a changed weight file
    second = ct2_backend.ct2_folder(tiny)
    assert second != first and len(converted) == 2 and (second / "model.bin").is_file()
    assert ct2_backend.ct2_folder(tiny, "float32") not in (first, second)


def test_an_adapters_key_follows_its_base(tiny, tmp_path) -> None:
    import json

    from alignpro.assets import weights_key

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "alignpro-train.json").write_text(json.dumps({"base_spec": f"hf:{tiny}"}))
    before = weights_key(adapter)
    (tiny / "config.json").write_text((tiny / "config.json").read_text() + " ")
    assert weights_key(adapter) != before


# ---------------------------------------------------------------------------------------------- specs
def test_engine_option_in_specs() -> None:
    ms = parse_model_spec("hf: org/m ?engine=ct2&inter_threads=2")
    assert (ms.kind, ms.ref, ms.options, str(ms)) == ("hf", "org/m", "engine=ct2&inter_threads=2",
                                                      "hf:org/m?engine=ct2&inter_threads=2")
    assert str(parse_model_spec("smollm2?engine=ct2")) == "smollm2?engine=ct2"
    with pytest.raises(ConfigError, match="unknown engine 'onnx'; valid engines: torch, ct2, vllm"):
        parse_model_spec("smollm2?engine=onnx")
    with pytest.raises(ConfigError, match="compute_type"):
        parse_model_spec("smollm2?engine=ct2&compute_type=int4")
    with pytest.raises(AlignProError, match="valid forms"):
        parse_model_spec("fake?engine=ct2")
    with pytest.raises(AlignProError, match="engine 'vllm' can only answer"):
        make_prompter("smollm2?engine=vllm")
    with pytest.raises(AlignProError, match="engine ct2 converts a local model folder; 'org/none' is none"):
        make_target("hf:org/none?engine=ct2")


def test_an_unknown_engine_exits_2_from_the_cli(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "alignpro", "demo", "--target", "smollm2?engine=onnx", "--out",
                          str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "valid engines: torch, ct2, vllm" in out.stderr
    assert "Traceback" not in out.stderr


def test_make_target_builds_the_ct2_target(ct2_home) -> None:
    from alignpro.backends.ct2_backend import CT2Target

    t = make_target("smollm2?engine=ct2&intra_threads=1", GenerationConfig(max_new_tokens=4), batch_size=3)
    assert isinstance(t, CT2Target) and t.name == "smollm2?engine=ct2&intra_threads=1"
    assert (t.lm.batch_size, t.lm.options.intra_threads, t.gen.max_new_tokens) == (3, 1, 4)
    assert t.lm.path.parent == ct2_home / "ct2"
