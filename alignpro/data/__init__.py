"""Prompt data: the builtin prompt sets, local prompt files and the paper's Hugging Face datasets.

Modules: ``records`` (:class:`PromptRecord`, :class:`LoadResult`), ``rules`` (the bad-row rules and IFEval
instruction checks every loader applies), ``files``, ``builtin`` and ``hub`` (the sources), ``prompts`` (the Hugging
Face prompt datasets and the one resolver of source strings, :func:`load_prompts`), ``preferences`` (preference
pairs for reward learning).

Importing this package imports neither ``datasets`` nor IFEval's checkers (``if_verifiable``): only
:func:`load_hf_prompts` (and :func:`load_prompts` on a Hugging Face source) imports ``datasets``, and only rows
that carry IFEval instructions import ``if_verifiable``.
"""

from alignpro.data.builtin import BUILTIN_EVAL_FRACTION, builtin_ifeval_prompts, builtin_prompts
from alignpro.data.files import PROMPT_FILE_SUFFIXES, load_prompt_file
from alignpro.data.prompts import NAMED_SOURCES, PAPER_DATASETS, DatasetSpec, NamedSource, load_hf_prompts, load_prompts
from alignpro.data.records import Instruction, LoadResult, PromptRecord

__all__ = [
    "BUILTIN_EVAL_FRACTION",
    "NAMED_SOURCES",
    "PAPER_DATASETS",
    "PROMPT_FILE_SUFFIXES",
    "DatasetSpec",
    "Instruction",
    "LoadResult",
    "NamedSource",
    "PromptRecord",
    "builtin_ifeval_prompts",
    "builtin_prompts",
    "load_hf_prompts",
    "load_prompt_file",
    "load_prompts",
]
