"""The paper's evaluation: prompter/target pairs x datasets x arms x seeds, rewards and judged win rates.

Modules: ``config`` (settings and the checks that run before any generation), ``cache`` (the disk cache and
cached backends), ``judges`` (pairwise judges: reward, local LLM, OpenAI-compatible API), ``runner`` (the grid,
stage by stage), ``aggregate`` (over seeds, 95% CIs), ``report`` (table.md, figures, examples.md), ``cli``.
See docs/evaluation.md.
"""
