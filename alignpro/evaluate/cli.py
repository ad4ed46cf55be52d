"""``alignpro evaluate --config FILE.yaml``: the paper's evaluation grid (flags mirror the YAML keys)."""

from __future__ import annotations

from alignpro.config import parse_config


def main(argv: list[str]) -> int:
    from alignpro.evaluate.config import EvaluateConfig
    from alignpro.evaluate.report import OUTPUTS, render_table
    from alignpro.report import render_arm_sections
    from alignpro.evaluate.runner import run_evaluation

    cfg = parse_config(EvaluateConfig, argv, prog="alignpro evaluate")
    metrics = run_evaluation(cfg)
    print(render_table(metrics).split("# Rewards")[0].rstrip())
    print("\n".join(render_arm_sections(metrics)).rstrip())
    cache = metrics["usage"]["cache"]
    hits, misses = sum(v["hits"] for v in cache.values()), sum(v["misses"] for v in cache.values())
    print(f"\ncache: {hits} hits, {misses} misses ({cfg.cache_path}); wall time "
          f"{metrics['usage']['wall_seconds']:.0f} s")
    print(f"wrote {', '.join(OUTPUTS)} and judgments.jsonl into {cfg.out}")
    return 0
