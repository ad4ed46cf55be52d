"""The one disk cache: a sqlite file of key -> JSON value, shared by the evaluation grid and the API targets.

One file per cache (``evaluate``: ``OUT/cache.sqlite``; ``openai:`` targets: ``$ALIGNPRO_HOME/cache/openai/
answers.sqlite``), in WAL mode, so several processes and threads can read and write it at once; every
:meth:`DiskCache.put_many` is committed, so an interrupted run keeps what it paid for. Keys are content hashes
(:func:`cache_key`), so a hit is always the answer to the same question.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from alignpro.errors import ConfigError
from alignpro.fileio import blocking_file

_COLUMNS = ("key", "stage", "value", "created")
_VALID_CACHE = "give a cache file written by alignpro, or a new file path (it is created)"


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts`` (sorted keys, no whitespace; dataclasses as dicts)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return hashlib.sha256(blob.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot put {type(value).__name__} into a cache key")


class DiskCache:
    """sqlite key -> JSON value, with hit/miss counts per stage. Safe to share between threads."""

    def __init__(self, path: str | Path, *, setting: str = "cache") -> None:
        """Open (or create) the cache file ``path``; a path that is not one is a :class:`ConfigError` naming
        ``setting``."""
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(f"setting '{setting}': '{path}' is a folder; {_VALID_CACHE}")
        blocker = blocking_file(self.path.parent)
        if blocker is not None:
            raise ConfigError(f"setting '{setting}': '{blocker}' is a file, so '{path}' cannot be made inside it; "
                              f"{_VALID_CACHE}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = tuple(row[1] for row in self.db.execute("PRAGMA table_info(cache)"))
        except sqlite3.DatabaseError as exc:  # not a sqlite file at all ("file is not a database")
            self.db.close()
            raise ConfigError(f"setting '{setting}': '{path}' is not a sqlite cache file ({exc}); "
                              f"{_VALID_CACHE}") from None
        if tables - {"cache"} or (tables and columns != _COLUMNS):  # someone else's database: leave it alone
            self.db.close()
            raise ConfigError(f"setting '{setting}': '{path}' is a sqlite database but not an alignpro cache "
                              f"(its tables: {sorted(tables)}); {_VALID_CACHE}")
        self.db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, stage TEXT, value TEXT, "
                        "created REAL)")
        self.db.commit()
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    def get_many(self, stage: str, keys: Sequence[str]) -> dict[str, Any]:
        """{key: value} of the keys present; counts hits and misses under ``stage``."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(unique), 500):
                chunk = unique[i:i + 500]
                rows = self.db.execute(f"SELECT key, value FROM cache WHERE key IN ({','.join('?' * len(chunk))})",
                                       chunk).fetchall()
                found.update((k, json.loads(v)) for k, v in rows)
            self.hits[stage] += sum(k in found for k in keys)
            self.misses[stage] += sum(k not in found for k in keys)
        return found

    def put_many(self, stage: str, items: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            self.db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)",
                                [(k, stage, json.dumps(v, ensure_ascii=False), now) for k, v in items.items()])
            self.db.commit()

    def get(self, stage: str, key: str) -> Any | None:
        """The value of one key, or None."""
        return self.get_many(stage, [key]).get(key)

    def put(self, stage: str, key: str, value: Any) -> None:
        self.put_many(stage, {key: value})

    def __len__(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM cache").fetchone()[0]

    def stats(self) -> dict[str, dict[str, int]]:
        stages = sorted(set(self.hits) | set(self.misses))
        return {s: {"hits": self.hits[s], "misses": self.misses[s]} for s in stages}

    def close(self) -> None:
        with self._lock:
            self.db.close()
