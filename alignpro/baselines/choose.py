"""Choose best_suffix's line: every line of the catalog scored on TRAIN prompts by paired reward against x.

    python -m alignpro.baselines.choose --n-prompts 64 --n 2

π_F answers x (n answers per prompt) and x + each catalog line (the same n, coupled: answer j to x and to every
x + line draws from one stream keyed by x, :func:`alignpro.backends.base.stream_seed`); each line's paired gain
(mean over prompts of its mean reward minus x's, ± s.e.) is computed against x's answers, and the line with the
largest gain is the choice. ``best_suffix.json`` records the choice, every line's gain, the prompts, the settings
and the command; ``best_suffix_answers.jsonl.gz`` every answer and reward. Only train prompts may be used: the
choice must not see the prompts arms are evaluated on.
"""

from __future__ import annotations

import gzip
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


from alignpro.backends.base import AnswerSettings, RewardModel, Target
from alignpro.baselines import CATALOG, CHOICE, load_catalog, with_line
from alignpro.config import config_to_dict, parse_config, setting
from alignpro.errors import ConfigError
from alignpro.metrics import paired_gain


@dataclass
class ChooseConfig(AnswerSettings):
    """Settings of the best_suffix choice (every flag is also a YAML key)."""

    target: str = setting("smollm2", "frozen target π_F model spec")
    reward: str = setting("ifeval", "reward spec (scored against the original x)")
    prompts: str = setting("builtin-ifeval:train", "TRAIN prompt source (an eval split is refused)")
    n_prompts: int = setting(64, "a seeded sample of this many prompts (0 = all)")
    n: int = setting(2, "answers per prompt and line (coupled across lines)")
    seed: int = setting(0, "seed of the prompt sample and of the answer streams")
    batch_size: int = setting(64, "generation batch size")
    catalog: str = setting(str(CATALOG), "YAML file of candidate lines")
    out: str = setting(str(CHOICE), "the recorded choice (JSON; the answers go beside it, .jsonl.gz)")
    lines: str = setting("", "score only the catalog's lines [a:b] (e.g. 0:4) into 'out', to split the work over "
                             "processes: coupled answers make the shards' answers to x identical")
    merge: list[str] = setting([], "merge these shard files (JSON) into 'out' instead of scoring (their answers "
                                   "to x must agree)")

    def __post_init__(self) -> None:
        for name in ("n", "batch_size", "answer_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"setting '{name}' must be >= 1, got {getattr(self, name)}")
        if self.n_prompts < 0:
            raise ConfigError(f"setting 'n_prompts' must be >= 0 (0 = all), got {self.n_prompts}")
        if "eval" in self.prompts.split(":")[-1]:
            raise ConfigError(f"setting 'prompts': the choice is made on train prompts only, got '{self.prompts}' "
                              "(e.g. builtin-ifeval:train)")
        self.answer_gen = self.answer_config()


def score_lines(prompts: Sequence[str], systems: Sequence[str | None], lines: Sequence[str], target: Target,
                reward: RewardModel, *, n: int, seed: int, batch_size: int,
                log: Callable[[str], Any] = lambda _: None) -> dict[str, Any]:
    """Each line's paired gain over x on coupled answers, the best line, and every answer: {'choice', 'lines':
    [{'line', 'paired_vs_x': {mean, stderr, n}, 'mean'}], 'x_mean', 'answers': {line or '': (N, n) texts},
    'rewards': {line or '': (N, n)}}."""
    from alignpro.arms import Arm, ArmRun, answer_arm

    run = ArmRun(list(prompts), list(systems), n=n, seed=seed, batch_size=batch_size)
    answer_arm(run, Arm.NO_FT, target, reward, run.prompts)
    log(f"x: mean reward {run.rewards[Arm.NO_FT.value].mean():.4f}")
    answers, rewards, rows = {"": run.answers[Arm.NO_FT.value]}, {"": run.rewards[Arm.NO_FT.value]}, []
    for line in lines:  # every line on the same keyed streams as x (no_ft's): coupled
        answer_arm(run, Arm.SUFFIX, target, reward, [with_line(x, line) for x in run.prompts])
        answers[line], rewards[line] = run.answers[Arm.SUFFIX.value], run.rewards[Arm.SUFFIX.value]
        rows.append({"line": line, "mean": float(rewards[line].mean()),
                     "paired_vs_x": paired_gain(rewards[line], rewards[""])})
        log(f"{rows[-1]['paired_vs_x']['mean']:+.4f} ± {rows[-1]['paired_vs_x']['stderr']:.4f}  {line}")
    best = max(rows, key=lambda r: r["paired_vs_x"]["mean"])
    return {"choice": best["line"], "lines": rows, "x_mean": float(rewards[""].mean()), "answers": answers,
            "rewards": rewards}


def _portable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with the package's own files named relative to the repository (no machine's paths)."""
    root = CATALOG.parents[2]
    return {k: (str(Path(v).relative_to(root)) if k in ("catalog", "out") and Path(v).is_relative_to(root) else v)
            for k, v in settings.items()}


def merge_shards(paths: Sequence[str], out: Path, command: str) -> dict[str, Any]:
    """One record from shard records (each scored some lines on the same prompts, seed and answers to x)."""
    shards = [json.loads(Path(p).read_text()) for p in paths]
    first = shards[0]
    for s in shards[1:]:
        if (s["prompt_ids"], s["x_mean"], s["settings"]["seed"]) != (first["prompt_ids"], first["x_mean"],
                                                                      first["settings"]["seed"]):
            raise ConfigError(f"shards {paths} were not scored on the same prompts and answers to x")
    rows = sorted((r for s in shards for r in s["lines"]), key=lambda r: -r["paired_vs_x"]["mean"])
    answers_file = out.with_name(out.stem + "_answers.jsonl.gz")
    seen_x = False
    with gzip.open(answers_file, "wt", encoding="utf-8") as f:
        for p, s in zip(paths, shards):
            with gzip.open(Path(p).with_name(s["answers_file"]), "rt", encoding="utf-8") as g:
                for row in g:
                    if json.loads(row)["line"] == "" and seen_x:
                        continue  # x's answers: the same in every shard (checked by x_mean above)
                    f.write(row)
            seen_x = True
    settings = {**first["settings"], "lines": "", "merge": [], "out": first["settings"]["out"]}
    record = {**first, "choice": rows[0]["line"], "lines": rows, "answers_file": answers_file.name,
              "command": command, "shards": [{"command": s["command"], "wall_seconds": s["wall_seconds"]}
                                             for s in shards], "settings": settings}
    record.pop("wall_seconds", None)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(ChooseConfig, argv, "python -m alignpro.baselines.choose")
    command = "python -m alignpro.baselines.choose " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None
                                                                              else argv))
    if cfg.merge:
        record = merge_shards(cfg.merge, Path(cfg.out), command.strip())
        print(f"chosen: {record['choice']!r} of {len(record['lines'])} lines; wrote {cfg.out}")
        return 0
    from alignpro.data import load_prompts
    from alignpro.specs import make_reward, make_target

    t0 = time.perf_counter()
    records = load_prompts(cfg.prompts, n=cfg.n_prompts or None, seed=cfg.seed).records
    target = make_target(cfg.target, cfg.answer_gen, batch_size=cfg.batch_size)
    a, _, b = cfg.lines.partition(":")
    catalog = load_catalog(Path(cfg.catalog))[int(a or 0):int(b) if b else None]
    got = score_lines([r.text for r in records], [r.system for r in records], catalog,
                      target, make_reward(cfg.reward, records), n=cfg.n, seed=cfg.seed, batch_size=cfg.batch_size,
                      log=lambda s: print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True))
    out = Path(cfg.out)
    answers_file = out.with_name(out.stem + "_answers.jsonl.gz")
    record = {"choice": got["choice"], "command": command.strip(), "x_mean": got["x_mean"],
              "lines": sorted(got["lines"], key=lambda r: -r["paired_vs_x"]["mean"]),
              "prompt_ids": [r.id for r in records], "answers_file": answers_file.name,
              "wall_seconds": round(time.perf_counter() - t0, 1), "settings": _portable(config_to_dict(cfg))}
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    with gzip.open(answers_file, "wt", encoding="utf-8") as f:
        for line, texts in got["answers"].items():
            for r, row, scores in zip(records, texts, got["rewards"][line]):
                f.write(json.dumps({"line": line, "id": r.id, "answers": row, "rewards": scores.tolist()},
                                   ensure_ascii=False) + "\n")
    for row in record["lines"]:
        g = row["paired_vs_x"]
        print(f"{g['mean']:+.4f} ± {g['stderr']:.4f}  {row['line']}")
    print(f"chosen: {got['choice']!r} ({record['wall_seconds']} s); wrote {out} and {answers_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
