"""Reading a Hugging Face dataset split, from the hub or from local copies (``data_files``), for the prompt and the
preference-pair loaders alike. Only :func:`load_hf_split` imports ``datasets``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from alignpro.errors import AlignProError

_HF_ROW_CHUNK = 4096  # rows pulled from a `datasets.Dataset` per read
_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _data_file_list(data_files: Any) -> list[str]:
    """Every path in ``data_files`` (a path, a list of paths, or a ``{split: paths}`` dict)."""
    if isinstance(data_files, (str, Path)):
        return [str(data_files)]
    if isinstance(data_files, Mapping):
        return [f for files in data_files.values() for f in _data_file_list(files)]
    if isinstance(data_files, Sequence):
        return [str(f) for f in data_files]
    raise AlignProError(f"data_files must be a path, a list of paths or a {{split: paths}} dict, got {data_files!r}")


def _builder_for(files: list[str]) -> str:
    """The ``datasets`` builder (json, parquet, csv) that reads ``files``, all of one format."""
    builders = set()
    for name in files:
        suffix = Path(name).suffix.lower()
        if suffix not in _DATA_FILE_BUILDERS:
            raise AlignProError(f"{name}: unsupported data file type '{suffix or '(none)'}'; valid suffixes are "
                                f"{', '.join(_DATA_FILE_BUILDERS)}")
        builders.add(_DATA_FILE_BUILDERS[suffix])
    if len(builders) != 1:
        raise AlignProError(f"data_files mix formats ({', '.join(sorted(builders)) or 'none given'}); "
                            "pass files of one format")
    return builders.pop()


def iter_rows(dataset: Any, order: list[int], columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row index, row)`` in ``order``, reading ``_HF_ROW_CHUNK`` rows at a time."""
    for start in range(0, len(order), _HF_ROW_CHUNK):
        indices = order[start:start + _HF_ROW_CHUNK]
        batch = dataset[indices]  # dict: column -> list of values
        for offset, index in enumerate(indices):
            yield index, {column: batch[column][offset] for column in columns}


def load_hf_split(hub_id: str, split: str, data_files: Any = None, cache_dir: str | Path | None = None, *,
                  config: str | None = None, data_files_name: str = "data_files=") -> tuple[Any, str]:
    """``(dataset, where)``: the split of ``hub_id`` (its ``config`` if given) as a ``datasets.Dataset``, and how
    messages name it. With ``data_files`` (JSON/JSONL, parquet or CSV paths with the dataset's columns) nothing is
    downloaded: ``datasets.load_dataset("json"|"parquet"|"csv", data_files=...)`` reads them; a plain path or list
    is split ``train``, a ``{split: paths}`` dict names its splits. ``data_files_name`` is how the error of a
    failed download names that option."""
    try:
        import datasets
    except ImportError:
        raise AlignProError("loading Hugging Face datasets needs the 'datasets' package (pip install datasets)"
                            ) from None
    if data_files is not None:
        files = _data_file_list(data_files)
        where = f"{hub_id} data_files ({', '.join(files)})"
        args: tuple[Any, ...] = (_builder_for(files),)
        kwargs: dict[str, Any] = {"data_files": data_files if isinstance(data_files, Mapping) else files}
    else:
        where, args, kwargs = hub_id, (hub_id,) if config is None else (hub_id, config), {}
    try:
        dataset = datasets.load_dataset(*args, split=split, cache_dir=str(cache_dir) if cache_dir else None,
                                        **kwargs)
    except Exception as err:  # noqa: BLE001 - library boundary: network, auth, missing split, bad files
        hint = ("check the paths and that each file has the dataset's columns" if data_files is not None else
                f"without internet access, pass {data_files_name} pointing at local JSON/parquet/CSV copies")
        raise AlignProError(f"could not load {where} split '{split}': {type(err).__name__}: {err}. {hint}") from None
    return dataset, where
