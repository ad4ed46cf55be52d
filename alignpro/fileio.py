"""Atomic writes: a reader sees the old content or the new one, never a half-written file or folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from alignpro.errors import ConfigError


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it and one rename (``os.replace``).

    The temporary name holds the process id, so concurrent writers of the same path never share one; with
    ``fsync`` the data and the rename are flushed to disk before returning (a crash leaves old or new).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding=encoding) as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if fsync:
        fsync_dir(path.parent)
    return path


def atomic_write_dir(final: str | Path, write: Callable[[Path], object], *, fsync: bool = True) -> Path:
    """Fill a fresh temporary folder with ``write(folder)``, then put it at ``final`` (replacing what was there).

    The temporary folder sits beside ``final`` (``.NAME.tmp-<pid>``, so on the same file system) and is removed
    if ``write`` fails. With ``fsync`` every file written is flushed before the rename.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if fsync:
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if fsync:
        fsync_dir(final.parent)
    return final


def blocking_file(path: str | Path) -> Path | None:
    """``path`` or its nearest ancestor that exists, when that is not a folder (so no folder can be made at
    ``path``); None when ``path`` is a folder or could be created as one."""
    for p in (Path(path), *Path(path).parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def not_a_folder_message(path: str | Path, blocker: Path, setting: str | None = "out") -> str:
    """The one error for a folder setting that names a file (or a path through a file)."""
    what = f"'{path}' is a file" if Path(path) == blocker else f"'{blocker}' is a file, so '{path}' cannot be a folder"
    if setting:
        return (f"setting '{setting}': {what}; --{setting.replace('_', '-')} must name a folder: an existing one or a "
                "new path (it is created)")
    return f"{what}; give a folder: an existing one or a new path (it is created)"


def check_run_folder(path: str | Path, setting: str = "out") -> Path:
    """``path`` when a folder can be there; else a :class:`ConfigError` naming ``setting`` (a file stands in the
    way). Commands call it before loading anything, so a bad ``--out`` fails at once."""
    blocker = blocking_file(path)
    if blocker is not None:
        raise ConfigError(not_a_folder_message(path, blocker, setting))
    return Path(path)


def make_run_folder(path: str | Path, setting: str = "out") -> Path:
    """Create the folder ``path`` (with its parents), after :func:`check_run_folder`."""
    check_run_folder(path, setting).mkdir(parents=True, exist_ok=True)
    return Path(path)
