"""Prompt data: the builtin prompt set, local prompt files and the paper's Hugging Face datasets.

Importing this package does not import ``datasets``; only :func:`load_hf_prompts` (and :func:`load_prompts`
on a Hugging Face source) does.
"""

from alignpro.data.prompts import (
    BUILTIN_EVAL_FRACTION,
    PAPER_DATASETS,
    PROMPT_FILE_SUFFIXES,
    DatasetSpec,
    LoadResult,
    PromptRecord,
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
    "LoadResult",
    "PromptRecord",
    "builtin_prompts",
    "load_hf_prompts",
    "load_prompt_file",
    "load_prompts",
]
