"""Backend options written after ``?`` in a model spec (``openai:m@http://host/v1?no_key=true&concurrency=4``,
``smollm2?engine=ct2``).

The one parser of spec options: every backend with options declares them as a dataclass of
:func:`~alignpro.config.setting` fields and reads them with :func:`spec_options`; a local model's are
:class:`LocalOptions`. This module imports no backend
and not :mod:`alignpro.specs`, so backends and the spec resolver never import each other.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

from alignpro.backends.registry import DEFAULT_ENGINE, engine
from alignpro.config import build_config, setting
from alignpro.errors import AlignProError, ConfigError

T = TypeVar("T")

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def spec_options(cls: type[T], query: str, spec: str) -> T:
    """The options ``query`` (``a=1&b=true``, the part after ``?``) as the dataclass ``cls``; errors name ``spec``."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise AlignProError(f"spec '{spec}': options after '?' must look like name=value&name=value") from None
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    for name, value in pairs:
        if name in values:
            raise AlignProError(f"spec '{spec}': option '{name}' is given twice")
        if hints.get(name) is bool:
            if value.lower() not in _TRUE + _FALSE:
                raise AlignProError(f"spec '{spec}': option '{name}' must be true or false, got '{value}'")
            values[name] = value.lower() in _TRUE
        else:
            values[name] = value
    try:
        return build_config(cls, values, source="its options")
    except ConfigError as exc:
        raise ConfigError(f"spec '{spec}': {exc}") from None


def local_or_hub(ref: str) -> str:
    """``ref`` as an expanded local path when it exists, else as written (a Hugging Face hub id). A ``ref`` that
    can only be a path (``/x``, ``./x``, ``../x``, ``~/x``, or more than one ``/``, unlike a hub id ``org/name``)
    and does not exist is an error: "no such folder"."""
    local = Path(ref).expanduser()
    if local.exists():
        return str(local)
    if ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1 or \
            (os.sep != "/" and os.sep in ref):
        raise AlignProError(f"no such folder: '{ref}' (a model given by path must be an existing folder; a "
                            "Hugging Face hub id looks like org/name)")
    return ref


#: CTranslate2 compute types offered on CPU (int8: the measured one; see docs/benchmarks.md)
CT2_COMPUTE_TYPES = ("int8", "int8_float32", "float32")


@dataclass
class LocalOptions:
    """Options of a local model spec (``smollm2``, ``hf:``), written after ``?``:
    ``smollm2?engine=ct2&inter_threads=2``.
    They choose how π_F's answers and ρ's rewrites are generated; training always runs the torch model."""

    engine: str = setting(DEFAULT_ENGINE, "torch (the reference) | ct2 (CTranslate2, CPU) | vllm (a CUDA GPU)")
    compute_type: str = setting("int8", "ct2: weights' type, one of " + ", ".join(CT2_COMPUTE_TYPES))
    inter_threads: int = setting(1, "ct2: batches decoded in parallel (one model replica each)")
    intra_threads: int = setting(0, "ct2: threads per batch; 0 = all cores divided by inter_threads")

    def __post_init__(self) -> None:
        engine(self.engine)  # a ConfigError naming the valid engines
        if self.compute_type not in CT2_COMPUTE_TYPES:
            raise ConfigError(f"option 'compute_type' must be one of {', '.join(CT2_COMPUTE_TYPES)}, "
                              f"got '{self.compute_type}'")
        if self.inter_threads < 1 or self.intra_threads < 0:
            raise ConfigError(f"options 'inter_threads' must be >= 1 and 'intra_threads' >= 0, got "
                              f"{self.inter_threads} and {self.intra_threads}")


def local_options(query: str, spec: str) -> LocalOptions:
    """The options after ``?`` of the local model spec ``spec``."""
    return spec_options(LocalOptions, query, spec)
