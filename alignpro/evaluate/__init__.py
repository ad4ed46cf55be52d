"""The paper's evaluation: prompter/target pairs x datasets x arms x seeds, rewards and judged win rates.

Modules: ``config`` (settings and their checks), ``judge_specs`` (the judges' forms), ``plan`` (the checks against
the world and the grid, before any generation), ``cache`` (the disk cache and cached backends), ``judges``
(pairwise judges: reward, local LLM, OpenAI-compatible API), ``runner`` (the grid, stage by stage, running the
arms of :mod:`alignpro.arms`), ``aggregate`` (over seeds, 95% CIs), ``report`` (table.md, figures, examples.md),
``cli``. See docs/evaluation.md.
"""
