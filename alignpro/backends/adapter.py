"""A LoRA adapter folder written by ``alignpro train`` (``RUN/final-adapter``, or a shipped one under
``alignpro/adapters/``) as a model: the base model its ``alignpro-train.json`` names, with the adapter merged in.

:func:`alignpro.specs.load_causal_lm` loads the base (itself possibly an adapter) and calls
:func:`merge_adapter`; this module never imports :mod:`alignpro.specs` or :mod:`alignpro.train`.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignpro.errors import AlignProError

#: written next to the weights of ``RUN/final`` and ``RUN/final-adapter``: how they were trained.
TRAIN_INFO = "alignpro-train.json"


def is_adapter_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a LoRA adapter (``adapter_config.json``) rather than full weights."""
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base_spec(base_spec: str) -> str:
    """An adapter's base model spec, with a relative ``hf:alignpro/adapters/...`` path (an adapter trained on top of
    a shipped one, e.g. the distilled prompter on the SFT prompter) resolved against the installed package when it
    is not a folder relative to the working directory."""
    if base_spec.startswith("hf:alignpro/adapters/") and not Path(base_spec[3:]).is_dir():
        shipped = Path(__file__).resolve().parents[2] / base_spec[3:]
        if shipped.is_dir():
            return f"hf:{shipped}"
    return base_spec


def adapter_base(adapter_dir: str | Path) -> str:
    """The model spec of the base an adapter folder was trained on (from its ``alignpro-train.json``)."""
    adapter_dir = Path(adapter_dir)
    info_file = adapter_dir / TRAIN_INFO
    if not is_adapter_folder(adapter_dir) or not info_file.is_file():
        raise AlignProError(f"'{adapter_dir}' is not a LoRA adapter folder written by alignpro train "
                            f"(needs adapter_config.json and {TRAIN_INFO})")
    return adapter_base_spec(json.loads(info_file.read_text())["base_spec"])


def merge_adapter(lm, adapter_dir: str | Path, *, trainable: bool = False):
    """``lm`` (an :class:`HFCausalLM` of the adapter's base, loaded trainable) with the adapter of ``adapter_dir``
    merged into its weights; frozen (eval mode, no gradients) unless ``trainable``."""
    from peft import PeftModel

    lm.model = PeftModel.from_pretrained(lm.model, str(adapter_dir)).merge_and_unload()
    if not trainable:
        lm.model.eval().requires_grad_(False)
    return lm
