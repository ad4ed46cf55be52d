"""One config dataclass per command; one parser reads CLI flags and a YAML file into it.

Every dataclass field is both a CLI flag (``--field-name``) and a YAML key (``field_name``). CLI flags given
explicitly override the YAML file, which overrides the dataclass defaults. Cross-field validation lives in the
dataclass's ``__post_init__`` and raises :class:`ConfigError` naming the setting.

Field help comes from ``field(metadata={"help": ...})`` (use :func:`setting`).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from alignpro.errors import ConfigError

T = TypeVar("T")


def setting(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with a help line (shown by ``--help``)."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls``; defaults are suppressed so only explicit flags are seen.

    Fields named in ``positional`` become optional positional arguments instead of flags.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in positional:
            parser.add_argument(f.name, nargs="?", default=argparse.SUPPRESS, help=f.metadata.get("help", ""))
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if default is not None and default != "":
            help_text = f"{help_text} (default: {default.value if isinstance(default, enum.Enum) else default})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        origin = typing.get_origin(tp)
        if tp is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif origin is list:
            (item,) = typing.get_args(tp) or (str,)
            parser.add_argument(_flag(f.name), nargs="+", type=item, metavar=f.name.upper(), **kw)
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            parser.add_argument(_flag(f.name), choices=[m.value for m in tp], **kw)
        elif origin is typing.Literal:
            parser.add_argument(_flag(f.name), choices=list(typing.get_args(tp)), **kw)
        else:
            parser.add_argument(_flag(f.name), type=tp if tp in (int, float, str) else str,
                                metavar=f.name.upper(), **kw)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"setting '{name}' must not be empty")
    origin = typing.get_origin(tp)
    try:
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return value if isinstance(value, tp) else tp(value)
        if origin is typing.Literal:
            if value not in typing.get_args(tp):
                raise ValueError
            return value
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if tp is Path:
            return Path(value)
        if origin is list:
            (item,) = typing.get_args(tp) or (str,)
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_coerce(name, item, v) for v in value]
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)
        if tp is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is str and isinstance(value, (str, int, float)):
            return str(value)
        if tp is Any:
            return value
    except (ValueError, TypeError):
        pass
    else:
        if tp not in (float, int, str):
            return value
    valid = ([m.value for m in tp] if isinstance(tp, type) and issubclass(tp, enum.Enum)
             else list(typing.get_args(tp)) if origin is typing.Literal
             else getattr(tp, "__name__", str(tp)))
    raise ConfigError(f"setting '{name}' has invalid value {value!r}; expected {valid}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of settings, got {type(data).__name__}")
    return data


def build_config(cls: type[T], values: dict[str, Any], source: str = "settings") -> T:
    """Make ``cls`` from a mapping, rejecting unknown keys and coercing types; ``__post_init__`` validates."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in {source}; valid settings: {sorted(names)}")
    kwargs = {k: _coerce(k, hints[k], v) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{source}: {exc}") from None


def parse_config(cls: type[T], argv: list[str] | None, prog: str, description: str = "",
                 positional: tuple[str, ...] = ()) -> T:
    """Parse ``argv`` (flags and an optional ``--config FILE.yaml``) into a validated ``cls``."""
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip())
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file whose keys are the settings below; flags given here override it")
    add_dataclass_arguments(parser, cls, positional)
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    values: dict[str, Any] = load_yaml(config_path) if config_path else {}
    values.update(args)
    return build_config(cls, values, source=f"config '{config_path}'" if config_path else "command line")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON/YAML-safe dict of a config dataclass (enums as values, paths as strings)."""
    def plain(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def parse_resumable_config(cls: type[T], argv: list[str] | None, prog: str, resumable: tuple[str, ...],
                           run_kind: str = "run folder") -> T:
    """Like :func:`parse_config`, for a command with ``--resume RUN``: the run's ``RUN/config.yaml`` is reused, and
    the flags/YAML given with it may change only the settings named in ``resumable`` (else one error naming them)."""
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip())
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file whose keys are the settings below; flags given here override it")
    add_dataclass_arguments(parser, cls)
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    values: dict[str, Any] = load_yaml(config_path) if config_path else {}
    values.update(args)  # only the flags given explicitly
    source = f"config '{config_path}'" if config_path else "command line"
    if not values.get("resume"):
        return build_config(cls, values, source=source)
    run = Path(values["resume"])
    saved_file = run / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"setting 'resume': '{run}' is not a {run_kind} (no config.yaml)")
    saved = load_yaml(saved_file)
    saved_cfg = config_to_dict(build_config(cls, saved, source=str(saved_file)))
    asked = config_to_dict(build_config(cls, {**saved, **values}, source=source))
    changed = sorted(k for k in asked if asked[k] != saved_cfg[k] and k not in resumable + ("out",))
    if changed:
        raise ConfigError(f"setting(s) {changed} differ from the run's {saved_file}; a resumed run may only "
                          f"change {list(resumable)} (start a new run with --out for the others)")
    return build_config(cls, {**saved, **values}, source=source)
