"""Backend options written after ``?`` in a model spec (``openai:m@http://host/v1?no_key=true&concurrency=4``).

The one parser of spec options: every backend with options declares them as a dataclass of
:func:`~alignpro.config.setting` fields and reads them with :func:`spec_options`. This module imports no backend
and not :mod:`alignpro.specs`, so backends and the spec resolver never import each other.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

from alignpro.config import build_config
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
