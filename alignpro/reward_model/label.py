"""``alignpro reward label``: preference pairs from a gold reward, so reward learning runs offline.

For each prompt x, π_F answers n times (``answers_per_prompt``, default 2; y_1..y_n ~ π_F(·|x), the paper's
sampling); the gold reward r* scores each against x; every pair (y_i, y_j), i < j, whose gold scores differ by more
than ``tie_margin`` becomes a row, the higher one y_w. Pairs whose gold scores differ by at most ``tie_margin``
carry no preference and are dropped (counted), as are pairs with an empty answer or two answers that are the same
text. With n answers a prompt gives up to n(n−1)/2 pairs; they share their prompt, so ``reward train`` keeps a
prompt's pairs on one side of its held-out split. Prompts are
processed in chunks of ``batch_size``; after each chunk its pairs are appended (fsync'd) to the output and the
progress record ``<out>.label.json`` is replaced atomically, so ``--resume`` continues an interrupted run exactly
(each chunk's sampling seed depends only on the run seed and the chunk's position). The run's settings are
``<out>.config.yaml`` (:func:`alignpro.config.write_run_config`), which ``--resume`` reuses and checks
(:func:`alignpro.config.check_resume`), as every resumable command does.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignpro.config import check_resume, config_to_dict, load_yaml, write_run_config
from alignpro.data import PromptRecord, load_prompts
from alignpro.errors import AlignProError
from alignpro.reward_model.config import RewardLabelConfig
from alignpro.fileio import atomic_write_text
from alignpro.train.checkpoint import append_jsonl
from alignpro.train.loop import step_seed

_LABEL_STAGE = 3  # the sampling stage of step_seed used for π_F's answers here


@dataclass
class LabelCounts:
    """What became of the prompts."""

    prompts: int = 0  #: prompts answered
    pairs: int = 0  #: pairs written
    ties: int = 0  #: pairs with |r*(x, y_i) − r*(x, y_j)| ≤ tie_margin (two identical answers count here too)
    identical: int = 0  #: of the ties: the two answers were the same text
    empty_answer: int = 0  #: pairs dropped because an answer was empty (a pair needs two answers)

    def summary(self) -> str:
        return (f"{self.pairs} pairs from {self.prompts} prompts; dropped {self.ties} tied pairs (|Δ gold| ≤ margin; "
                f"{self.identical} of them identical answers) and {self.empty_answer} with an empty answer")


def progress_path(out: Path) -> Path:
    """``pairs.jsonl`` -> ``pairs.label.json``."""
    return out.with_name(out.name[: -len(".jsonl")] + ".label.json")


def saved_settings(out: Path, progress: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The settings of the labelling run writing ``out`` (whose progress record is ``progress``), and the file they
    were read from: ``PAIRS.config.yaml``, or, for a run labelled before there was one, its progress record."""
    settings_file = RewardLabelConfig.config_file(out)
    if settings_file.is_file():
        return load_yaml(settings_file), settings_file
    return progress["config"], progress_path(out)


def label_row(record: PromptRecord, chosen: str, rejected: str, r_chosen: float, r_rejected: float,
              cfg: RewardLabelConfig) -> dict[str, Any]:
    """One pair in the ``pairs`` schema, with the gold scores; a prompt's IFEval instructions are kept, so the
    pair file is also a prompt file that the ``ifeval`` reward can be built from."""
    row: dict[str, Any] = {"id": record.id, "prompt": record.text}
    if record.system:
        row["system"] = record.system
    row.update(chosen=chosen, rejected=rejected, chosen_score=r_chosen, rejected_score=r_rejected, gold=cfg.gold,
               target=cfg.target)
    if record.instructions:
        row["instruction_id_list"] = [i.id for i in record.instructions]
        row["kwargs"] = [i.kwargs for i in record.instructions]
    return row


def _truncate_lines(path: Path, n: int) -> None:
    """Keep the first ``n`` lines of ``path`` (a kill may have left rows of an unfinished chunk)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    if len(lines) < n:
        raise AlignProError(f"{path}: holds {len(lines)} pairs but its progress record says {n} were written; the "
                            "file was changed, start again with another --out")
    atomic_write_text(path, "".join(lines[:n]))


def label_pairs(cfg: RewardLabelConfig, *, target: Any = None, gold: Any = None) -> LabelCounts:
    """Write the pairs file of ``cfg``; ``target``/``gold`` override the specs (tests)."""
    from tqdm.auto import tqdm

    from alignpro.specs import make_reward, make_target

    # ============================================================================ setup: prompts, output, resume
    loaded = load_prompts(cfg.prompts, n=cfg.n_prompts or None, seed=cfg.seed, field=cfg.field,
                          skip_bad=cfg.skip_bad)
    records = loaded.records
    out, record_file = Path(cfg.out), progress_path(Path(cfg.out))
    settings = {**config_to_dict(cfg), "resume": None}
    settings_file = RewardLabelConfig.config_file(out)
    counts, done = LabelCounts(), 0
    if record_file.is_file():
        saved = json.loads(record_file.read_text())
        if saved.get("complete"):
            raise AlignProError(f"'{out}' is already complete ({saved['counts']['pairs']} pairs); choose another "
                                "--out or delete it and its .label.json")
        if not cfg.resume:
            raise AlignProError(f"'{out}' holds an interrupted labelling run ({record_file}); pass --resume {out} "
                                "to continue it, or choose another --out")
        saved_values, where = saved_settings(out, saved)
        check_resume(saved_values, settings, RewardLabelConfig, where)
        done = saved["prompts_done"]
        counts = LabelCounts(**saved["counts"])
        _truncate_lines(out, counts.pairs)
    elif cfg.resume:
        raise AlignProError(f"--resume: no interrupted labelling run at '{out}' (no {record_file.name}); drop "
                            "--resume to start one")
    elif out.exists():
        raise AlignProError(f"'{out}' already exists; choose another --out or delete it")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("")
        write_run_config(cfg, settings_file)
    n = cfg.answers_per_prompt
    target = target or make_target(cfg.target, cfg.answer_gen, batch_size=n * cfg.batch_size)
    gold = gold or make_reward(cfg.gold, records)
    print(f"alignpro reward label: {loaded.summary()} from {cfg.prompts}; π_F {cfg.target} answers each {n} times, "
          f"gold {cfg.gold} picks; {'resuming after ' + str(done) + ' prompts' if done else 'new run'} -> {out}",
          flush=True)

    # ============================================================ per chunk: n answers, gold scores, pairs
    t0 = time.perf_counter()
    bar = tqdm(total=len(records), initial=done, desc="label pairs", unit="prompt", disable=not cfg.progress,
               dynamic_ncols=True)
    for start in range(done, len(records), cfg.batch_size):
        chunk = records[start:start + cfg.batch_size]
        answers = target.answer([r.text for r in chunk], n=n, systems=[r.system for r in chunk],
                                seed=step_seed(cfg.seed, start // cfg.batch_size, 0, _LABEL_STAGE))  # (b, n)
        texts = [[a.text.strip() for a in row[:n]] for row in answers]
        flat_prompts = [r.text for r in chunk for _ in range(n)]
        scores = gold.score(flat_prompts, [t for row in texts for t in row])  # (n·b,)
        for i, record in enumerate(chunk):
            counts.prompts += 1
            scored = [(texts[i][a], float(scores[n * i + a])) for a in range(n)]
            for a in range(n):
                for b in range(a + 1, n):
                    (y_a, s_a), (y_b, s_b) = scored[a], scored[b]
                    if not y_a or not y_b:
                        counts.empty_answer += 1
                    elif y_a == y_b or abs(s_a - s_b) <= cfg.tie_margin:
                        counts.ties += 1
                        counts.identical += y_a == y_b
                    else:
                        w, l_ = ((y_a, s_a), (y_b, s_b)) if s_a > s_b else ((y_b, s_b), (y_a, s_a))
                        append_jsonl(out, label_row(record, w[0], l_[0], w[1], l_[1], cfg))
                        counts.pairs += 1
        done = start + len(chunk)
        atomic_write_text(record_file, json.dumps({"complete": False, "prompts_done": done,
                                                   "prompts_total": len(records), "counts": asdict(counts),
                                                   "config": settings}, indent=1))
        bar.set_postfix(pairs=counts.pairs, ties=counts.ties, refresh=False)
        bar.update(len(chunk))
    bar.close()

    final = {"complete": True, "prompts_done": done, "prompts_total": len(records), "counts": asdict(counts),
             "prompt_source": {"summary": loaded.summary(), "skipped": loaded.skipped,
                               "skipped_reasons": loaded.skipped_reasons},
             "seconds_this_invocation": time.perf_counter() - t0, "config": settings}
    atomic_write_text(record_file, json.dumps(final, indent=1) + "\n")
    print(f"alignpro reward label: {counts.summary()} -> {out} (record: {record_file})", flush=True)
    if counts.pairs == 0:
        raise AlignProError(f"reward label: every prompt gave a tie or an empty answer ({counts.summary()}); no "
                            "pairs to learn from. Try more prompts, a gold reward with finer scores, or a lower "
                            "tie_margin")
    return counts
