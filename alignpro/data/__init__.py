"""Prompt data: the builtin prompt sets, local prompt files and the paper's Hugging Face datasets.

Importing this package imports neither ``datasets`` nor IFEval's checkers (``if_verifiable``): only
:func:`load_hf_prompts` (and :func:`load_prompts` on a Hugging Face source) imports ``datasets``, and only rows
that carry IFEval instructions import ``if_verifiable``.
"""

from alignpro.data.prompts import (
    BUILTIN_EVAL_FRACTION,
    PAPER_DATASETS,
    PROMPT_FILE_SUFFIXES,
    DatasetSpec,
    Instruction,
    LoadResult,
    PromptRecord,
    builtin_ifeval_prompts,
    builtin_prompts,
    load_hf_prompts,
    load_prompt_file,
    load_prompts,
)

__all__ = [
    "BUILTIN_EVAL_FRACTION",
    "PAPER_DATASETS",
    "PROMPT_FILE_SUFFIXES",
    "DatasetSpec",
    "Instruction",
    "LoadResult",
    "PromptRecord",
    "builtin_ifeval_prompts",
    "builtin_prompts",
    "load_hf_prompts",
    "load_prompt_file",
    "load_prompts",
]
