"""The backend registry, spec options, reward specs, the shared chat helpers, the retry policy, the one disk cache
and atomic writes: the pieces every backend shares."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from alignpro.backends.chat import plain_chat_text, render_chat, request_seed, stop_token_ids, user_turn, user_turns
from alignpro.backends.options import LocalOptions, local_options
from alignpro.backends.registry import (DEFAULT_ENGINE, ENGINES, KINDS, LOCAL_LM_KINDS, MODEL_SPEC_FORMS,
                                        TARGET_ONLY_KINDS, engine)
from alignpro.backends.retry import RetryPolicy
from alignpro.diskcache import DiskCache
from alignpro.errors import AlignProError, ConfigError
from alignpro.fileio import atomic_write_dir, atomic_write_text
from alignpro.specs import (RewardSpec, check_prompter_spec, make_prompter, make_target, parse_model_spec,
                            parse_reward_spec, reward_needs_records)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the registry
def test_registry_capabilities() -> None:
    caps = {k.name: (k.trainable, k.token_logprobs, k.answer_only) for k in KINDS.values()}
    assert caps == {"smollm2": (True, True, False), "hf": (True, True, False), "fake": (False, True, False),
                    "openai": (False, False, True), "vllm": (False, False, True), "gguf": (False, False, True)}
    assert LOCAL_LM_KINDS == ("smollm2", "hf") and TARGET_ONLY_KINDS == ("openai", "vllm", "gguf")
    assert MODEL_SPEC_FORMS[0] == "smollm2[?options]" and all(f.startswith(k) for f, k in zip(MODEL_SPEC_FORMS, KINDS))


def test_registry_classes_match_their_capabilities() -> None:
    for kind in KINDS.values():
        target = kind.target_class()
        assert callable(getattr(target, "answer", None)), kind.name
        if kind.answer_only:  # validated from the spec, built from it, never a prompter
            assert callable(target.parse_ref) and callable(target.from_spec) and not kind.prompter
            with pytest.raises(AlignProError, match="has no prompter"):
                kind.prompter_class()
        else:
            assert callable(getattr(kind.prompter_class(), "rewrite", None)), kind.name


def test_engines_of_a_local_model() -> None:
    assert list(ENGINES) == ["torch", "ct2", "vllm"] and DEFAULT_ENGINE == "torch" == LocalOptions().engine
    assert engine("torch").target_class().__name__ == "HFTarget"  # the reference: the kind's own classes
    assert engine("torch").prompter_class().__name__ == "HFPrompter"
    for name in ("ct2", "vllm"):  # the others are built from the model's folder
        assert callable(engine(name).target_class().from_folder), name
    assert callable(engine("ct2").prompter_class().from_folder)
    with pytest.raises(AlignProError, match="engine 'vllm' can only answer.*engines of a prompter: torch, ct2"):
        engine("vllm").prompter_class()
    with pytest.raises(ConfigError, match="unknown engine 'onnx'; valid engines: torch, ct2, vllm"):
        engine("onnx")


def test_local_options() -> None:
    assert local_options("", "smollm2") == LocalOptions()
    o = local_options("engine=ct2&inter_threads=2&intra_threads=1&compute_type=int8_float32", "s")
    assert (o.engine, o.inter_threads, o.intra_threads, o.compute_type) == ("ct2", 2, 1, "int8_float32")
    for bad, match in (("engine=onnx", "valid engines"), ("inter_threads=0", "inter_threads"),
                       ("compute_type=int4", "compute_type"), ("threads=2", "valid settings")):
        with pytest.raises(ConfigError, match=match):
            local_options(bad, "smollm2?" + bad)
    ms = parse_model_spec("smollm2?engine=ct2")
    assert (ms.kind, ms.ref, ms.options) == ("smollm2", "", "engine=ct2")
    assert parse_model_spec("openai:m@http://h/v1?no_key=true").options == ""  # its options are its ref's


@pytest.mark.parametrize("spec", ["openai:m@http://127.0.0.1:9/v1?no_key=true", "vllm:org/model", "gguf:m.gguf"])
def test_answer_only_kinds_are_refused_as_prompters(spec: str) -> None:
    with pytest.raises(AlignProError, match="can only be a target"):
        check_prompter_spec(spec)
    with pytest.raises(AlignProError, match="can only be a target"):
        make_prompter(spec)


def test_model_spec_forms() -> None:
    assert parse_model_spec(" smollm2 ") == parse_model_spec("smollm2")
    assert str(parse_model_spec("hf: org/m ")) == "hf:org/m"
    for bad in ("smollm2:x", "fake:", "hf", "hf: ", "llama:x", "openai:"):
        with pytest.raises(AlignProError, match="valid forms"):
            parse_model_spec(bad)
    assert type(make_target("fake")).__name__ == "FakeTarget"
    assert type(make_prompter("fake")).__name__ == "FakePrompter"


# ---------------------------------------------------------------------------------------------- no import cycle
SPEC_SIDE = ["alignpro/specs.py"]
BACKEND_SIDE = ["alignpro/backends/openai_backend.py", "alignpro/backends/vllm_backend.py",
                "alignpro/backends/ct2_backend.py",
                "alignpro/backends/gguf_backend.py", "alignpro/backends/openai_client.py",
                "alignpro/backends/registry.py", "alignpro/backends/options.py", "alignpro/backends/chat.py",
                "alignpro/backends/retry.py", "alignpro/backends/adapter.py", "alignpro/diskcache.py",
                "alignpro/config.py"]


def _imports(path: str) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    tree = ast.parse((ROOT / path).read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_specs_and_the_target_backends_do_not_import_each_other() -> None:
    for path in BACKEND_SIDE:
        assert not {m for m in _imports(path) if m == "alignpro.specs" or m.startswith("alignpro.specs.")}, path
    backends = {"alignpro.backends.openai_backend", "alignpro.backends.vllm_backend", "alignpro.backends.gguf_backend",
                "alignpro.backends.ct2_backend"}
    assert not _imports("alignpro/specs.py") & backends  # specs reaches them through the registry only


def test_specs_imports_nothing_of_train() -> None:
    """alignpro.train builds on specs (load_causal_lm, make_target): specs never reaches back into train (a LoRA
    adapter folder loads through alignpro.backends.adapter), nor does that module reach specs or train."""
    assert not {m for m in _imports("alignpro/specs.py") if m == "alignpro.train" or m.startswith("alignpro.train.")}
    adapter = _imports("alignpro/backends/adapter.py")
    assert not {m for m in adapter if m.split(".")[:2] in (["alignpro", "specs"], ["alignpro", "train"])}
    code = ("import sys\nimport alignpro.specs\n"
            "assert not [m for m in sys.modules if m.startswith('alignpro.train')], 'specs imported alignpro.train'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_backend_modules_import_and_parse_specs_without_specs() -> None:
    code = ("import sys\n"
            "from alignpro.backends.openai_backend import parse_openai_ref\n"
            "from alignpro.backends.vllm_backend import parse_vllm_ref\n"
            "from alignpro.backends.gguf_backend import parse_gguf_ref\n"
            "parse_openai_ref('m@http://x/v1?no_key=true'); parse_vllm_ref('org/m?enforce_eager=true')\n"
            "parse_gguf_ref('m.gguf?n_threads=2')\n"
            "assert 'alignpro.specs' not in sys.modules, 'a backend imported alignpro.specs'\n"
            "assert 'torch' not in sys.modules and 'openai' not in sys.modules, 'a heavy import at parse time'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------------------------- reward specs
def test_reward_specs_parse_once_into_terms() -> None:
    assert parse_reward_spec(" builtin ") == (RewardSpec("builtin"),)
    terms = parse_reward_spec("0.5*rm:runs/a + 0.25*python:pkg.mod:fn+hf: org/rm ")
    assert [(t.kind, t.ref, t.weight) for t in terms] == [("rm", "runs/a", 0.5), ("python", "pkg.mod:fn", 0.25),
                                                          ("hf", "org/rm", 0.25)]
    assert (terms[1].module, terms[1].function) == ("pkg.mod", "fn") and str(terms[2]) == "hf:org/rm"
    assert reward_needs_records("0.5*ifeval+0.5*fake") and not reward_needs_records("fake")
    for bad in ("builtin:x", "python:m", "python:m:", "rm: ", "magic", "ifeval+"):
        with pytest.raises(AlignProError):
            parse_reward_spec(bad)


# ---------------------------------------------------------------------------------------------- chat helpers
class _Tok:
    def __init__(self, template: str | None, eos=2, pad=None) -> None:
        self.chat_template, self.eos_token_id, self.pad_token_id = template, eos, pad

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_user_turns_and_rendering() -> None:
    assert user_turn("x") == [{"role": "user", "content": "x"}]
    assert user_turn("x", "") == user_turn("x", None) == user_turn("x")
    assert user_turn("x", "be brief")[0] == {"role": "system", "content": "be brief"}
    assert user_turns(["a", "b"], ["s", None]) == [user_turn("a", "s"), user_turn("b")]
    with pytest.raises(ValueError, match="2 system prompts for 1 prompts"):
        user_turns(["a"], ["s", "t"])
    conv = user_turn("hi", "sys")
    assert plain_chat_text(conv) == "system: sys\nuser: hi\nassistant:"
    assert render_chat(_Tok(None), conv) == plain_chat_text(conv)
    assert render_chat(_Tok("{{ tpl }}"), conv) == "<system>sys<user>hi<assistant>"


def test_stop_tokens_with_and_without_pad() -> None:
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2, 7]))
    assert stop_token_ids(_Tok(None, eos=2, pad=0), model, pad=True) == {0, 2, 7}
    assert stop_token_ids(_Tok(None, eos=2, pad=0), model, pad=False) == {2, 7}
    bare = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=5))
    assert stop_token_ids(_Tok(None, eos=None, pad=None), bare, pad=True) == {5}
    assert stop_token_ids(_Tok(None, eos=2, pad=2), object(), pad=True) == stop_token_ids(
        _Tok(None, eos=2, pad=2), object(), pad=False) == {2}  # pad == EOS: the two rules agree


def test_request_seed_is_per_sample_and_stable() -> None:
    assert request_seed(3, 0) == request_seed(3, 0) != request_seed(3, 1)
    assert 0 <= request_seed(10**12, 5) < 2**31


# ---------------------------------------------------------------------------------------------- retry policy
def test_retry_policy_backs_off_exponentially_and_honours_retry_after_as_a_minimum() -> None:
    p = RetryPolicy(max_retries=5, backoff_s=0.5, max_backoff_s=4.0)
    top = lambda lo, hi: hi  # noqa: E731  (no jitter: the upper end)
    assert [p.delay(a, jitter=top) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert p.delay(0, 3.0, jitter=top) == 3.0  # the server asks for more than the backoff: wait that long
    assert p.delay(2, 0.1, jitter=top) == 2.0  # ... never less than the backoff
    assert p.delay(0, 600.0, jitter=top) == 4.0  # capped by max_backoff_s
    assert all(0.25 <= p.delay(0) <= 0.5 for _ in range(50))  # jitter in [0.5, 1] of the backoff


# ---------------------------------------------------------------------------------------------- one disk cache
def test_the_api_answer_cache_is_the_evaluation_cache(tmp_path: Path) -> None:
    from alignpro.backends.openai_backend import AnswerCache
    from alignpro.evaluate.cache import DiskCache as EvaluationCache

    assert EvaluationCache is DiskCache
    cache = AnswerCache(tmp_path)
    assert isinstance(cache.db, DiskCache) and cache.db.path == tmp_path / "answers.sqlite"


def test_json_answers_of_earlier_versions_still_hit(tmp_path: Path) -> None:
    from alignpro.backends.openai_backend import AnswerCache

    key = AnswerCache.key("m", [{"role": "user", "content": "x"}], {"temperature": 1.5}, 0, 1)
    legacy = tmp_path / key[:2] / f"{key}.json"
    legacy.parent.mkdir()
    legacy.write_text('{"text": "old answer", "n_tokens": 2, "model": "m"}')
    cache = AnswerCache(tmp_path)
    assert len(cache) == 0 and cache.get(key) == {"text": "old answer", "n_tokens": 2, "model": "m"}
    legacy.unlink()
    assert len(cache) == 1 and AnswerCache(tmp_path).get(key)["text"] == "old answer"  # copied into sqlite
    assert AnswerCache(tmp_path).get("0" * 64) is None


def test_disk_cache_is_shared_by_threads(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c.sqlite")

    def write(i: int) -> None:
        for j in range(20):
            cache.put("s", f"{i}-{j}", {"v": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 80 and cache.get("s", "3-19") == {"v": 19}
    assert cache.stats() == {"s": {"hits": 1, "misses": 0}}


# ---------------------------------------------------------------------------------------------- atomic writes
def test_atomic_write_text(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.json", "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_dir_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "final"
    atomic_write_dir(final, lambda d: (d / "w.txt").write_text("v1"))
    atomic_write_dir(final, lambda d: (d / "w.txt").write_text("v2"))
    assert (final / "w.txt").read_text() == "v2"

    def fails(d: Path) -> None:
        (d / "w.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_dir(final, fails)
    assert (final / "w.txt").read_text() == "v2" and [p.name for p in tmp_path.iterdir()] == ["final"]


def test_request_fields_are_the_installed_clients() -> None:
    import inspect

    from openai.resources.chat.completions import AsyncCompletions

    from alignpro.backends.openai_client import request_fields

    fields = request_fields()
    assert {"temperature", "top_p", "max_tokens", "seed", "stop", "extra_body"} <= fields
    assert not fields & {"self", "model", "messages", "stream", "timeout", "top_k"}  # passed by acreate / extra_body
    assert fields == set(inspect.signature(AsyncCompletions.create).parameters) - {
        "self", "model", "messages", "stream", "timeout"}
