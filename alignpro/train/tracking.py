"""Training curves where users look for them: ``RUN/metrics.jsonl`` always, and TensorBoard and/or trackio when the
run's ``report_to`` asks (as TRL's ``report_to``). Used by ``alignpro train``, ``sft`` and ``reward train``.

- ``tensorboard``: event files in ``RUN/tensorboard`` (``torch.utils.tensorboard.SummaryWriter``; view them with
  ``tensorboard --logdir RUN``). A resumed run purges the events of the steps it re-runs, as it drops their rows
  from ``metrics.jsonl``.
- ``trackio``: ``trackio.init(project="alignpro", name=<run folder name>, config=<the run's settings>)``, then one
  ``trackio.log`` per step (its local dashboard: ``trackio show``).

Every numeric value of a metrics row but ``step`` is logged as the scalar ``<prefix>/<name>`` at that step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from alignpro.config import check_trackers
from alignpro.train.checkpoint import append_jsonl

TENSORBOARD_DIR = "tensorboard"


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics row, ``step`` left out (it is the x axis)."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class RunLog:
    """Appends each step's metrics row to ``RUN/metrics.jsonl`` (fsync'd) and sends its scalars to the trackers of
    ``report_to``. ``first_step``: the first step this invocation logs (a resumed run's events from it on are
    purged). ``enabled`` False (processes other than 0): nothing is written."""

    def __init__(self, run: Path, report_to: Sequence[str], *, prefix: str, config: dict[str, Any],
                 first_step: int = 1, metrics_file: str = "metrics.jsonl", enabled: bool = True) -> None:
        self.path, self.prefix, self.enabled = Path(run) / metrics_file, prefix, enabled
        self.tensorboard: Any = None
        self.trackio: Any = None
        if not enabled:
            return
        check_trackers(report_to)
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(Path(run) / TENSORBOARD_DIR), purge_step=first_step)
        if "trackio" in report_to:
            import trackio

            trackio.init(project="alignpro", name=Path(run).name, config=config, resume="allow")
            self.trackio = trackio

    def log(self, row: dict[str, Any], *, series: str | None = None) -> None:
        """Write one step's row (it must hold ``step``); ``series``: another curve of the run, written to
        ``RUN/<series>.jsonl`` and logged as ``<series>/<name>`` (e.g. ``heldout``)."""
        if not self.enabled:
            return
        append_jsonl(self.path if series is None else self.path.with_name(f"{series}.jsonl"), row)
        values, prefix = scalars(row), series or self.prefix
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(f"{prefix}/{name}", value, row["step"])
            self.tensorboard.flush()
        if self.trackio is not None:
            self.trackio.log({f"{prefix}/{name}": value for name, value in values.items()}, step=row["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.trackio is not None:
            self.trackio.finish()
            self.trackio = None
