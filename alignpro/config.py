"""One config dataclass per command; one parser reads CLI flags and a YAML file into it.

Every dataclass field is both a CLI flag (``--field-name``) and a YAML key (``field_name``). CLI flags given
explicitly override the YAML file, which overrides a preset (:func:`setting`'s ``preset``), which overrides the
dataclass defaults. Cross-field validation lives in the dataclass's ``__post_init__`` and raises
:class:`ConfigError` naming the setting (:func:`check_at_least` for the common "must be >= N").

Field help comes from ``field(metadata={"help": ...})`` (use :func:`setting`). Settings shared by several commands
are declared once, in a setting group that the commands' dataclasses inherit: π_F's answer sampling
(:class:`alignpro.backends.base.AnswerSettings`, or a renamed copy from :func:`renamed_group`), the optimiser
(:class:`OptimizerSettings`) and the run folder (:class:`RunSettings`).

Resume, the one contract: a command whose config has a ``resume`` setting (:class:`ResumeSettings`) continues
the run named by ``--resume RUN`` (``--resume`` alone: the run in ``--out``). The run's saved settings
(``RUN/config.yaml``, written by :func:`write_run_config`) are reused; flags and YAML given with ``--resume`` may
change only the settings declared ``setting(..., resumable=True)``; :func:`check_resume` names any other.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from alignpro.errors import ConfigError
from alignpro.fileio import atomic_write_text

T = TypeVar("T")


def setting(default: Any = dataclasses.MISSING, help: str = "", *, resumable: bool = False,  # noqa: A002
            preset: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a help line (shown by ``--help``).

    ``resumable``: a run continued with ``--resume`` may change it (:func:`check_resume`). ``preset`` (a bool
    setting): when it is true, these values replace the defaults of the settings named, unless those are given
    explicitly (a flag or a YAML key): explicit settings win, and are validated like any other.
    """
    metadata = {"help": help, "resumable": resumable, **({"preset": dict(preset)} if preset else {})}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def check_at_least(cfg: Any, minimum: float, *names: str, problems: list[str] | None = None,
                   kind: str = "setting") -> None:
    """Each setting ``names`` of ``cfg`` must be a number >= ``minimum``: a :class:`ConfigError` naming the first
    that is not, or, given a ``problems`` list, one line per such setting appended to it. ``kind`` names what they
    are in the message (a model spec's ``?a=1`` values are options)."""
    for name in names:
        value = getattr(cfg, name)
        if not value >= minimum:  # NaN fails too
            message = f"{kind} '{name}' must be >= {minimum}, got {value}"
            if problems is None:
                raise ConfigError(message)
            problems.append(message)


def renamed_group(group: type, names: dict[str, str], doc: str = "", omit: tuple[str, ...] = ()) -> type:
    """A copy of the setting group ``group`` whose fields named in ``names`` are renamed (defaults, help and
    resumability kept), for a command where the group's own names mean something else (``alignpro train``: a bare
    ``temperature`` is the rollouts') or whose flags are older than the group; without the settings in ``omit``,
    for a command that has them otherwise (``alignpro overopt`` sweeps λ instead of the closed form's one ``lam``).
    The group's methods work on the copy (they read the values under the group's own names; one that reads an
    omitted setting cannot be used)."""
    hints = typing.get_type_hints(group)
    unknown = sorted((set(names) | set(omit)) - {f.name for f in dataclasses.fields(group)})
    if unknown:
        raise TypeError(f"{group.__name__} has no setting(s) {unknown}")
    kept = [f for f in dataclasses.fields(group) if f.name not in omit]
    new_fields = []
    for f in kept:
        new = dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata)
        new_fields.append((names.get(f.name, f.name), hints[f.name], new))

    def on_group_names(fn):
        def method(self, *args, **kwargs):
            view = types.SimpleNamespace(**{f.name: getattr(self, names.get(f.name, f.name)) for f in kept})
            return fn(view, *args, **kwargs)
        method.__name__, method.__doc__ = fn.__name__, fn.__doc__
        return method

    methods = {k: on_group_names(v) for k, v in vars(group).items() if callable(v) and not k.startswith("__")}
    return dataclasses.make_dataclass(f"{group.__name__}As", new_fields,
                                      namespace={**methods, "__doc__": doc or group.__doc__})


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

    Fields named in ``positional`` become optional positional arguments instead of flags. In a command with a
    ``resume`` setting, ``--resume`` takes an optional RUN and the help of every resumable setting says so. The
    command's own settings come first, in the order its class declares them, then those of its setting groups.
    """
    hints = typing.get_type_hints(cls)
    resumes = "resume" in {f.name for f in dataclasses.fields(cls)}
    own = list(vars(cls).get("__annotations__", {}))
    for f in sorted(dataclasses.fields(cls), key=lambda f: own.index(f.name) if f.name in own else len(own)):
        if not f.init:
            continue
        if f.name in positional:
            parser.add_argument(f.name, nargs="?", default=argparse.SUPPRESS, help=f.metadata.get("help", ""))
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if default is not None and default != "" and default != []:
            help_text = f"{help_text} (default: {default.value if isinstance(default, enum.Enum) else default})"
        if resumes and f.metadata.get("resumable") and f.name != "resume":
            help_text += " [may change on --resume]"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        origin = typing.get_origin(tp)
        if f.name == "resume":
            parser.add_argument(_flag(f.name), nargs="?", const=True, metavar="RUN", **kw)
        elif tp is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif origin is list:
            (item,) = typing.get_args(tp) or (str,)
            parser.add_argument(_flag(f.name), nargs="+", type=item if item in (int, float, str) else str,
                                metavar=f.name.upper(), **kw)
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


def _field_default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _with_presets(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus the values of every preset that is on, for the settings not given explicitly."""
    out = dict(values)
    for f in dataclasses.fields(cls):
        if f.metadata.get("preset") and values.get(f.name, f.default) is True:
            for name, value in f.metadata["preset"].items():
                out.setdefault(name, value)
    return out


def _resolve_resume(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``resume: true`` (or a bare ``--resume``) names the run in ``out``; ``false`` is no resume."""
    if "resume" in values and isinstance(values["resume"], bool):
        out = values.get("out", _field_default(cls, "out") if "out" in cls.__dataclass_fields__ else None)
        if values["resume"] and not out:
            raise ConfigError("setting 'resume' without a run: pass --resume RUN (or --out RUN --resume)")
        return {**values, "resume": str(out) if values["resume"] else None}
    return values


def build_config(cls: type[T], values: dict[str, Any], source: str = "settings") -> T:
    """Make ``cls`` from a mapping, rejecting unknown keys and coercing types; ``__post_init__`` validates."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in {source}; valid settings: {sorted(names)}")
    values = _resolve_resume(cls, _with_presets(cls, values))
    kwargs = {k: _coerce(k, hints[k], v) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{source}: {exc}") from None


def parse_config(cls: type[T], argv: list[str] | None, prog: str, description: str = "",
                 positional: tuple[str, ...] = ()) -> T:
    """Parse ``argv`` (flags and an optional ``--config FILE.yaml``) into a validated ``cls``; with ``--resume``,
    over the saved settings of the run it continues (:func:`resumed_values`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip())
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML file whose keys are the settings below; flags given here override it")
    add_dataclass_arguments(parser, cls, positional)
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    values: dict[str, Any] = load_yaml(config_path) if config_path else {}
    values.update(args)  # only the flags given explicitly
    source = f"config '{config_path}'" if config_path else "command line"
    if "resume" in values:
        values = _resolve_resume(cls, values)
        if values["resume"]:
            values = resumed_values(cls, values, source)
    return build_config(cls, values, source=source)


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


# ---------------------------------------------------------------------------------------------------------------
# Resume: one contract for every command that continues a run
# ---------------------------------------------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"


def resumable_settings(cls: type) -> tuple[str, ...]:
    """The settings of ``cls`` declared ``setting(..., resumable=True)``: a resumed run may change them."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))


def run_config_file(cls: type, run: str | Path) -> Path:
    """Where a run of ``cls`` keeps its settings: ``RUN/config.yaml``, or ``cls.config_file(run)`` for a command
    whose run is one file (``alignpro reward label``: ``PAIRS.config.yaml`` beside ``PAIRS.jsonl``)."""
    custom = getattr(cls, "config_file", None)
    return Path(custom(run)) if custom else Path(run) / CONFIG_FILE


def write_run_config(cfg: Any, path: str | Path | None = None) -> Path:
    """Write the settings of ``cfg`` as YAML to ``path`` (default: :func:`run_config_file` of its ``out``), with
    ``resume`` left empty: what :func:`resumed_values` reads back."""
    values = config_to_dict(cfg)
    if "resume" in values:
        values["resume"] = None
    path = Path(path) if path is not None else run_config_file(type(cfg), cfg.out)
    atomic_write_text(path, yaml.safe_dump(values, sort_keys=False, allow_unicode=True))
    return path


def check_resume(saved: dict[str, Any], current: dict[str, Any], cls: type, where: str | Path = "") -> None:
    """A :class:`ConfigError` naming every setting of ``current`` (a :func:`config_to_dict`) whose value differs
    from the run's ``saved`` settings (read from ``where``) and that is not resumable (:func:`resumable_settings`;
    the run's location, ``out``/``resume``, is never a difference)."""
    try:
        saved_now = config_to_dict(build_config(cls, {**saved, "resume": None} if "resume" in current else saved,
                                                source=str(where)))
    except ConfigError as exc:
        raise ConfigError(f"the run's settings in {where} are not valid for this command ({exc}); start a new run "
                          "with another --out") from None
    free = set(resumable_settings(cls)) | {"out", "resume"}
    changed = sorted(k for k in current if k not in free and current[k] != saved_now.get(k))
    if changed:
        diffs = "; ".join(f"{k}: {saved_now.get(k)!r} there, {current[k]!r} here" for k in changed)
        raise ConfigError(f"setting(s) {changed} differ from the run's {where} ({diffs}); a resumed run may change "
                          f"only {sorted(free - {'out', 'resume'})}: start a new run with another --out to change "
                          "the others")


def resumed_values(cls: type, values: dict[str, Any], source: str = "settings") -> dict[str, Any]:
    """``values`` (settings given with ``resume: RUN``) over the saved settings of RUN, checked by
    :func:`check_resume`: what a resumed run is built from."""
    run = values["resume"]
    saved_file = run_config_file(cls, run)
    if not saved_file.is_file():
        raise ConfigError(f"setting 'resume': '{run}' is not a {getattr(cls, 'run_kind', 'run folder')} (no "
                          f"{saved_file.name}); start a new run with --out {run}")
    saved = load_yaml(saved_file)
    merged = {**saved, **values}
    check_resume(saved, config_to_dict(build_config(cls, merged, source=source)), cls, saved_file)
    return merged


# ---------------------------------------------------------------------------------------------------------------
# Setting groups shared by the training commands (train, sft, reward train)
# ---------------------------------------------------------------------------------------------------------------
#: where ``report_to`` can send the training curves (besides RUN/metrics.jsonl, always written)
REPORT_TARGETS = ("tensorboard", "trackio", "none")
#: report target -> (the package it needs, how to install it)
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard (or pip install 'alignpro[tensorboard]')"),
                    "trackio": ("trackio", "pip install trackio")}


def check_trackers(report_to: list[str]) -> None:
    """A :class:`ConfigError` for a ``report_to`` target whose package is not installed, naming what to install."""
    import importlib.util

    for target in report_to:
        package, install = TRACKER_PACKAGES.get(target, ("", ""))
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"setting 'report_to': '{target}' needs the {package} package, which is not "
                              f"installed: {install}; or drop '{target}' (RUN/metrics.jsonl is always written)")


@dataclasses.dataclass
class ResumeSettings:
    """The one way to continue a run."""

    resume: str | None = setting(None, "continue the run RUN (--resume alone: the run in --out) from where it "
                                       "stopped; its saved settings are reused, and only those marked "
                                       "'may change on --resume' may be given differently", resumable=True)


@dataclasses.dataclass
class RunSettings(ResumeSettings):
    """The run folder of a training command: where it writes, how it checkpoints and reports, its runtime."""

    out: str = setting("runs/run", "run folder")
    seed: int = setting(0, "seed of the data order and of every sampling stage")
    save_every: int = setting(10, "write a checkpoint every N steps (and at the last step)", resumable=True)
    keep_checkpoints: int = setting(2, "keep only the newest N checkpoints", resumable=True)
    report_to: list[str] = setting([], "also log the training curves (with samples/s and tokens/s) to: "
                                       "tensorboard (RUN/tensorboard; `tensorboard --logdir RUN`) | trackio | none; "
                                       "RUN/metrics.jsonl is always written", resumable=True)
    progress: bool = setting(True, "show a progress bar", resumable=True)
    num_threads: int = setting(0, "torch CPU threads (0 = torch's default)", resumable=True)

    def check_run_settings(self) -> None:
        """Validate the group (the command's ``__post_init__`` calls it); a resumed run writes into RUN."""
        if self.resume:
            self.out = self.resume
        if not self.out:
            raise ConfigError("setting 'out' (the run folder) must not be empty")
        check_at_least(self, 1, "save_every", "keep_checkpoints")
        check_at_least(self, 0, "num_threads")
        bad = [t for t in self.report_to if t not in REPORT_TARGETS]
        if bad:
            raise ConfigError(f"setting 'report_to': unknown {bad}; valid: {' | '.join(REPORT_TARGETS)}")
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ConfigError(f"setting 'report_to': 'none' cannot be combined with others, got {self.report_to}")
        check_trackers(self.report_to)


@dataclasses.dataclass
class OptimizerSettings:
    """AdamW and its learning-rate schedule (a command overrides a default in one line, with its reason)."""

    lr: float = setting(1e-5, "AdamW learning rate")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this (0 = off)")
    schedule: Literal["constant", "linear"] = setting("constant", "learning-rate schedule after warmup (linear: to "
                                                                  "0 at the last step)")
    warmup_steps: int = setting(0, "linear warmup steps")

    def check_optimizer_settings(self) -> None:
        """Validate the group (the command's ``__post_init__`` calls it)."""
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"setting 'lr' must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "max_grad_norm"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"setting '{name}' must be a finite number >= 0, got {getattr(self, name)}")
        check_at_least(self, 0, "warmup_steps")

    def lr_factor(self, step: int, steps: int) -> float:
        """Multiplier of ``lr`` after ``step`` optimizer steps (0-based) of ``steps``: linear warmup, then constant
        or a linear decay that reaches 0 after the last step."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "linear":
            return max(0.0, (steps - step) / max(1, steps - self.warmup_steps))
        return 1.0
