"""The plan of `alignpro evaluate`: its settings checked against the world before anything is generated.

:func:`preflight` loads every dataset (and so checks its fields), checks that the checkpoint folders exist and the
judge's API key is in the environment and that the templates load, and lays out the grid cells; every problem
found is reported at once, in one :class:`ConfigError`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from alignpro.arms import Arm
from alignpro.baselines import load_choice
from alignpro.errors import AlignProError, ConfigError
from alignpro.evaluate.config import EvaluateConfig, one_message
from alignpro.specs import parse_model_spec


@dataclass(frozen=True)
class Cell:
    """One grid cell: a prompter/target pair on one dataset with one seed."""

    prompter_label: str
    prompter: str  #: model spec
    target_label: str
    target: str  #: model spec
    dataset: str  #: dataset label
    seed: int
    checkpoints: tuple[tuple[str, str], ...] = ()  #: ((arm, resolved checkpoint spec), ...)

    @property
    def pair(self) -> str:
        return f"{self.prompter_label}-{self.target_label}"

    @property
    def id(self) -> str:
        return f"{self.pair}/{self.dataset}/seed{self.seed}"

    def checkpoint(self, arm: str) -> str:
        return dict(self.checkpoints)[arm]


@dataclass
class Plan:
    """What `alignpro evaluate` will do: the prompts of each dataset and the grid cells."""

    prompts: dict[str, list] = field(default_factory=dict)  #: dataset label -> [PromptRecord]
    cells: list[Cell] = field(default_factory=list)
    arms: list[str] = field(default_factory=list)  #: the arms that run (config order)
    skipped: dict[str, str] = field(default_factory=dict)  #: arm -> why it was dropped (skip_missing_checkpoints)
    judge_template: object = None


def checkpoint_fingerprint(spec: str) -> str:
    """A short digest of a local checkpoint folder's files (names, sizes, mtimes), '' for other specs.

    It goes into every cache key that involves the checkpoint, so retraining into the same folder is never
    served stale generations.
    """
    ms = parse_model_spec(spec)
    if ms.kind != "hf":
        return ""
    folder = Path(ms.ref).expanduser()
    if not folder.is_dir():
        return ""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _load_dataset(cfg: EvaluateConfig, label: str, source: str):
    from alignpro.data import load_prompts

    opts = dict(cfg.loader_options.get(label, {}))
    is_hf = source.startswith("hf:") or source in _paper_names()
    for hf_only in ("data_files", "cache_dir"):
        if opts.get(hf_only) and not is_hf:
            raise AlignProError(f"option {hf_only} applies to Hugging Face datasets only, not '{source}'")
    kwargs = {k: v for k, v in opts.items() if v}
    return load_prompts(source, n=cfg.n or None, seed=cfg.data_seed, **kwargs).records


def _paper_names() -> tuple[str, ...]:
    from alignpro.data import PAPER_DATASETS

    return tuple(PAPER_DATASETS)


def preflight(cfg: EvaluateConfig) -> Plan:
    """Check the config against the world and build the plan; raises one :class:`ConfigError` listing every
    problem (missing checkpoint folders, API key, datasets or fields, templates). Generates nothing."""
    from alignpro.evaluate.judges import load_judge_template
    from alignpro.templates import load_rewrite_template

    problems: list[str] = []
    plan = Plan()
    # ---- templates ----
    if cfg.needs_rewrites:
        try:
            load_rewrite_template(cfg.template)
        except AlignProError as exc:
            problems.append(str(exc))
    if any(j.kind in ("llm", "openai") for j in cfg.judge_specs):
        try:
            plan.judge_template = load_judge_template(cfg.judge_template)
        except AlignProError as exc:
            problems.append(str(exc))
    # ---- API keys ----
    for j in cfg.judge_specs:
        if j.kind == "openai" and not os.environ.get(cfg.judge_api_key_env, "").strip():
            problems.append(f"judge '{j}' needs an API key in the environment variable '{cfg.judge_api_key_env}' "
                            "(setting judge_api_key_env), which is not set")
    if Arm.BEST_SUFFIX.value in cfg.arm_specs:  # the line chosen on train prompts must be recorded
        try:
            load_choice()
        except ConfigError as exc:
            problems.append(str(exc))
    # ---- datasets (their fields are checked while loading) ----
    for label, source in cfg.dataset_sources.items():
        try:
            plan.prompts[label] = _load_dataset(cfg, label, source)
        except AlignProError as exc:
            problems.append(f"dataset '{label}': {exc}")
    # ---- the grid, with each cell's checkpoints resolved and checked ----
    missing: dict[str, list[str]] = {}  # arm -> checkpoint folders that do not exist
    for t_label, t_spec in cfg.target_specs.items():
        for p_label, p_spec in cfg.prompter_specs.items():
            for d_label in cfg.dataset_sources:
                ckpts = []
                for arm, template in cfg.arm_specs.items():
                    if template is None or not Arm(arm).checkpoint_role:  # suffix=<line> is no checkpoint
                        continue
                    spec = template.format(prompter=p_label, target=t_label, pair=f"{p_label}-{t_label}",
                                           dataset=d_label)
                    ms = parse_model_spec(spec)
                    if ms.kind == "hf" and not Path(ms.ref).expanduser().is_dir():
                        if ms.ref not in missing.setdefault(arm, []):
                            missing[arm].append(ms.ref)
                    ckpts.append((arm, spec))
                for seed in cfg.seeds:
                    plan.cells.append(Cell(p_label, p_spec, t_label, t_spec, d_label, seed, tuple(ckpts)))
    for arm, folders in missing.items():
        shown = ", ".join(f"'{f}'" for f in folders[:4]) + (f" and {len(folders) - 4} more" if len(folders) > 4 else "")
        what = (f"checkpoint folder{'s' if len(folders) > 1 else ''} {shown} "
                f"do{'' if len(folders) > 1 else 'es'} not exist")
        if cfg.skip_missing_checkpoints:
            plan.skipped[arm] = what
        else:
            problems.append(f"arm '{arm}': {what}; train {'them' if len(folders) > 1 else 'it'} first, fix the "
                            "path, or drop the arm (or set skip_missing_checkpoints)")
    plan.arms = [a for a in cfg.arm_specs if a not in plan.skipped]
    if cfg.judged_arms and not any(a in plan.arms for a in cfg.judged_arms) and cfg.judges:
        problems.append(f"none of the judged arms {cfg.judged_arms} can run ({plan.skipped})")
    if problems:
        raise ConfigError(one_message(problems))
    if plan.skipped:
        for cell_i, cell in enumerate(plan.cells):
            plan.cells[cell_i] = Cell(cell.prompter_label, cell.prompter, cell.target_label, cell.target,
                                      cell.dataset, cell.seed, tuple(c for c in cell.checkpoints if c[0] in plan.arms))
    return plan
