"""`alignpro evaluate` settings, and the checks of the settings on their own.

Two levels of checking (lesson 2 of STYLE.md):

- :class:`EvaluateConfig.__post_init__` checks the settings on their own (forms of arms, judges, labels, ranges);
- :func:`alignpro.evaluate.plan.preflight` checks them against the world without generating anything: checkpoint
  folders exist, the judge's API key is in the environment, every dataset loads and has its prompt field, the
  templates load.

Every problem found is reported at once, in one :class:`ConfigError`. The arms are :class:`alignpro.arms.Arm`;
the judges' forms are parsed by :mod:`alignpro.evaluate.judge_specs`.
"""

from __future__ import annotations

import importlib.util
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path

from alignpro.arms import BASELINE, Arm, ClosedFormConfig, ClosedFormSettings
from alignpro.backends.base import AnswerSettings
from alignpro.config import ResumeSettings, check_at_least, setting
from alignpro.errors import AlignProError, ConfigError
from alignpro.evaluate.judge_specs import JudgeSpec, parse_judge_spec
from alignpro.specs import DEFAULT_REWRITE_CONFIG, model_spec_help, parse_model_spec, reward_spec_help

#: the evaluation's metrics.json schema; bump when its shape changes
SCHEMA_VERSION = 1

#: how each arm is written in the setting 'arms'
ARM_FORMS = tuple(a.form for a in Arm)
#: placeholders a checkpoint spec may use; they are filled per grid cell
CHECKPOINT_FIELDS = ("prompter", "target", "pair", "dataset")
DATASET_OPTION_KEYS = ("field", "system_field", "split", "data_files", "cache_dir", "skip_bad")
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class EvaluateConfig(AnswerSettings, ClosedFormConfig, ResumeSettings):
    """Settings of `alignpro evaluate`: prompter/target pairs x datasets x arms x seeds, judged pairwise.

    A run writes its settings to ``OUT/config.yaml``; ``--resume`` continues it through its answer cache, and may
    change only the settings that no cached result depends on (marked 'may change on --resume')."""

    out: str = setting("runs/evaluate", "output folder: metrics.json, table.md, fig_reward_mean.png, "
                                        "fig_reward_variance.png, examples.md (and judgments.jsonl)")
    prompters: list[str] = setting(["smollm2"], f"prompter ρ_sft model specs ({model_spec_help('prompter')}), "
                                                "optionally labelled 'P1=hf:microsoft/Phi-3.5-mini-instruct'")
    targets: list[str] = setting(["smollm2"], f"frozen target π_F model specs ({model_spec_help('target')}), "
                                              "optionally labelled 'F1=<spec>'; every prompter is paired with "
                                              "every target")
    reward: str = setting("builtin", "reward spec: " + reward_spec_help())
    datasets: list[str] = setting(["builtin:eval"], "prompt sources, optionally labelled 'name=source': "
                                                    "builtin:eval | ultrafeedback | helpsteer | orca | FILE.jsonl | "
                                                    "hf:<hub id>")
    dataset_options: list[str] = setting([], "per-dataset loader options 'name.key=value', key one of field | "
                                             "system_field | split | data_files (local copy of a hub dataset) | "
                                             "cache_dir (of `datasets`) | skip_bad (true: skip and count bad rows)")
    n: int = setting(100, "prompts sampled per dataset (paper: 100; 0 = all)")
    data_seed: int = setting(0, "seed of the prompt sample: the same prompts for every seed, pair and arm")
    seeds: list[int] = setting([0], "generation seeds; results are aggregated over them with 95-percent confidence intervals")
    arms: list[str] = setting(["no_ft", "align_pro_closed_form"],
                              "arms (alignpro.arms.Arm): " + " | ".join(ARM_FORMS) + "; checkpoint specs may use "
                              "{prompter} {target} {pair} {dataset}")
    skip_missing_checkpoints: bool = setting(False, "drop a checkpoint arm (with a notice) when its checkpoint "
                                                    "folders do not exist, instead of failing")
    judges: list[str] = setting(["reward"], "pairwise judges: reward | llm:<model spec> | "
                                            "openai:<model>@<base_url>")
    judged_arms: list[str] = setting([], "arms the judges compare with no_ft ([] = every arm but no_ft)")
    judge_template: str = setting("judge-pairwise", "judge prompt template: builtin name or YAML file")
    judge_api_key_env: str = setting("OPENAI_API_KEY", "environment variable holding the key of openai: judges",
                                     resumable=True)
    judge_concurrency: int = setting(4, "openai: judges: requests in flight at once", resumable=True)
    judge_max_retries: int = setting(5, "openai: judges: retries of one request on 429 / 5xx / connection errors",
                                     resumable=True)
    judge_backoff_s: float = setting(2.0, "openai: judges: first retry delay in seconds (doubles, capped at 60)",
                                     resumable=True)
    judge_timeout_s: float = setting(120.0, "openai: judges: timeout of one request in seconds", resumable=True)
    openai_judge_max_tokens: int = setting(1024, "openai: judges: max tokens of the judgment (explanation first)")
    llm_judge_max_new_tokens: int = setting(8, "llm: judges: max new tokens of the judgment (greedy)")
    llm_judge_prefill: str = setting("My final verdict is [[", "llm: judges: their reply is forced to start with "
                                     "this, so the verdict comes first (small models need it; '' lets them explain "
                                     "first, as MT-Bench's GPT-4 does)")
    guard_reward: str = setting("", "also score every arm's answers with this reward spec (e.g. builtin: are they "
                                    "still on topic?): its mean per arm and paired gain over no_ft; '' = off")
    tie_margin: float = setting(0.01, "reward judge: |Δr| at or below this is a tie")
    template: str = setting("rewrite-default", "rewrite template of the prompters: builtin name or YAML file")
    lam: float = setting(0.02, "λ of eq (10) (0 = argmax, inf = ρ_sft); evaluate's default suits the builtin "
                               "reward's scale (the demo's 0.1, the instruction task's)")
    answers_per_prompt: int = setting(1, "fresh answers per prompt and arm that are scored and judged (paper: 1)")
    rewrite_max_new_tokens: int = setting(DEFAULT_REWRITE_CONFIG.max_new_tokens, "max new tokens of a rewrite")
    rewrite_temperature: float = setting(DEFAULT_REWRITE_CONFIG.temperature, "prompters' sampling temperature")
    batch_size: int = setting(16, "generation batch size (also the unit of work saved to the cache; the "
                                      "closed forms' rewrites are seeded per chunk of it)")
    cache: str = setting("", "cache file shared by runs ('' = <out>/cache.sqlite)")
    n_examples: int = setting(3, "examples per pair and dataset in examples.md", resumable=True)
    progress: bool = setting(True, "show a progress bar per stage", resumable=True)

    def __post_init__(self) -> None:
        if self.resume:  # a resumed run writes into the run it continues
            self.out = self.resume
        problems: list[str] = []
        check_at_least(self, 1, "k", "m", "answers_per_prompt", "batch_size", "answer_max_new_tokens",
                       "rewrite_max_new_tokens", "judge_concurrency", "openai_judge_max_tokens",
                       "llm_judge_max_new_tokens", problems=problems)
        check_at_least(self, 0, "n", "n_examples", "judge_max_retries", problems=problems)
        if self.lam < 0 or math.isnan(self.lam):
            problems.append(f"setting 'lam' must be >= 0 (0 = argmax, inf = no optimisation), got {self.lam}")
        if not 0 <= self.identity_prior < 1:
            problems.append(f"setting 'identity_prior' must be in [0, 1), got {self.identity_prior}")
        if self.tie_margin < 0:
            problems.append(f"setting 'tie_margin' must be >= 0, got {self.tie_margin}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"setting 'seeds' must list distinct seeds, got {self.seeds}")
        try:
            self.answer_gen = self.answer_config()
            self.rewrite_gen = DEFAULT_REWRITE_CONFIG.with_(max_new_tokens=self.rewrite_max_new_tokens,
                                                            temperature=self.rewrite_temperature)
        except ConfigError as exc:
            problems.append(str(exc))
        self.prompter_specs = _labelled(self.prompters, "prompters", "P", problems, _check_local_lm)
        self.target_specs = _labelled(self.targets, "targets", "F", problems, _check_model_spec)
        self.dataset_sources = _labelled(self.datasets, "datasets", "", problems, None, default_label=_dataset_label)
        self.arm_specs = _parse_arms(self.arms, problems)
        self.loader_options = _parse_dataset_options(self.dataset_options, self.dataset_sources, problems)
        self.judge_specs: list[JudgeSpec] = []
        for j in self.judges:
            try:
                self.judge_specs.append(parse_judge_spec(j))
            except ConfigError as exc:
                problems.append(str(exc))
        if len(set(self.judges)) != len(self.judges):
            problems.append(f"setting 'judges' lists a judge twice: {self.judges}")
        unknown = [a for a in self.judged_arms if a not in self.arm_specs or a == BASELINE]
        if unknown:
            problems.append(f"setting 'judged_arms' names {unknown}, which are not among the non-baseline arms "
                            f"{[a for a in self.arm_specs if a != BASELINE]}")
        if self.judges and BASELINE not in self.arm_specs:
            problems.append(f"the judges compare arms with '{BASELINE}'; add '{BASELINE}' to 'arms' or set judges: []")
        _check_reward_spec(self.reward, problems)
        if self.guard_reward:
            _check_reward_spec(self.guard_reward, problems)
        if problems:
            raise ConfigError(one_message(problems))

    # ---------------------------------------------------------------- derived
    @property
    def judged(self) -> list[str]:
        """Arms compared with no_ft by every judge."""
        return list(self.judged_arms) or [a for a in self.arm_specs if a != BASELINE]

    @property
    def needs_rewrites(self) -> bool:
        """Whether an arm shows π_F rewrites (so the prompters and their template are needed)."""
        return any(Arm(a).rewrites for a in self.arm_specs)

    @property
    def closed_form(self) -> ClosedFormSettings:
        return self.closed_form_settings()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.out) / "cache.sqlite"


# ---------------------------------------------------------------------------------------------------------------
# Parsing the list settings
# ---------------------------------------------------------------------------------------------------------------


def one_message(problems: list[str]) -> str:
    """One error message for every problem found (a list when there are several)."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the evaluation config:\n  - " + "\n  - ".join(problems)


def _split_label(entry: str) -> tuple[str | None, str]:
    """'P1=hf:x' -> ('P1', 'hf:x'); 'hf:x' -> (None, 'hf:x'). A label is a plain word before the first '='."""
    head, sep, tail = entry.partition("=")
    if sep and _LABEL.match(head.strip()) and ":" not in head:
        return head.strip(), tail.strip()
    return None, entry.strip()


def _dataset_label(source: str, i: int) -> str:
    from alignpro.data import PAPER_DATASETS

    if source in PAPER_DATASETS or source.startswith("builtin"):
        return source
    if source.startswith("hf:"):
        return source[3:].rsplit("/", 1)[-1]
    return Path(source).stem or f"D{i + 1}"


def _check_model_spec(spec: str) -> str | None:
    try:
        parse_model_spec(spec)
    except AlignProError as exc:
        return str(exc)
    return None


def _check_local_lm(spec: str) -> str | None:
    """A prompter (or local judge) must be a causal LM we hold: not an answer-only backend."""
    from alignpro.specs import check_prompter_spec

    if err := _check_model_spec(spec):
        return err
    try:
        check_prompter_spec(spec)
    except AlignProError as exc:
        return str(exc)
    return None


def _labelled(entries: list[str], name: str, prefix: str, problems: list[str], check, *,
              default_label=None) -> dict[str, str]:
    """{label: spec} of a list setting whose entries may be labelled 'label=spec'."""
    out: dict[str, str] = {}
    if not entries:
        problems.append(f"setting '{name}' must not be empty")
    for i, entry in enumerate(entries):
        label, spec = _split_label(str(entry))
        if not spec:
            problems.append(f"setting '{name}': entry {entry!r} has no spec")
            continue
        label = label or (default_label(spec, i) if default_label else f"{prefix}{i + 1}")
        if label in out:
            problems.append(f"setting '{name}': label '{label}' is used twice; label entries as 'name=spec'")
        if check and (err := check(spec)):
            problems.append(f"setting '{name}': {err}")
        out[label] = spec
    return out


def _parse_arms(entries: list[str], problems: list[str]) -> dict[str, str | None]:
    """{arm: checkpoint spec (suffix: its line) or None}, in the order given."""
    valid = [a.value for a in Arm]
    arms: dict[str, str | None] = {}
    for entry in entries:
        name, sep, spec = str(entry).partition("=")
        name, spec = name.strip(), spec.strip()
        if name not in valid:
            problems.append(f"unknown arm '{entry}'; valid arms: {', '.join(ARM_FORMS)}")
            continue
        if name in arms:
            problems.append(f"arm '{name}' is listed twice")
            continue
        role = Arm(name).checkpoint_role
        if role:
            if not spec:
                problems.append(f"arm '{name}' needs a {role} checkpoint: write '{name}=hf:<checkpoint folder>' "
                                f"(a transformers folder saved by training)")
                continue
            bad = [f for _, f, _, _ in string.Formatter().parse(spec) if f is not None and f not in CHECKPOINT_FIELDS]
            if bad:
                problems.append(f"arm '{name}': checkpoint spec '{spec}' uses unknown placeholder(s) {bad}; "
                                f"valid: {', '.join('{' + f + '}' for f in CHECKPOINT_FIELDS)}")
                continue
            check = _check_local_lm if role == "prompter" else _check_model_spec
            if err := check(spec.format(prompter="P", target="F", pair="P-F", dataset="D")):
                problems.append(f"arm '{name}': {err}")
                continue
        elif sep and Arm(name) is not Arm.SUFFIX:  # suffix=<line>: the line it appends
            problems.append(f"arm '{name}' takes no checkpoint (got '{entry}')")
            continue
        arms[name] = spec or None
    if not arms and not any("unknown arm" in p for p in problems):
        problems.append("setting 'arms' must not be empty")
    return arms


def _parse_dataset_options(entries: list[str], datasets: dict[str, str], problems: list[str]) -> dict[str, dict]:
    opts: dict[str, dict] = {label: {} for label in datasets}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        label, dot, option = key.strip().rpartition(".")
        if not sep or not dot or label not in datasets or option not in DATASET_OPTION_KEYS:
            problems.append(f"dataset option '{entry}' must read 'name.key=value' with name one of "
                            f"{list(datasets)} and key one of {', '.join(DATASET_OPTION_KEYS)}")
            continue
        value = value.strip()
        if option == "skip_bad":
            if value.lower() not in ("true", "false"):
                problems.append(f"dataset option '{entry}': skip_bad must be true or false")
                continue
            opts[label][option] = value.lower() == "true"
        else:
            opts[label][option] = value
    return opts


def _check_reward_spec(spec: str, problems: list[str]) -> None:
    from alignpro.specs import parse_reward_spec

    try:
        terms = parse_reward_spec(spec)
    except AlignProError as exc:
        problems.append(str(exc))
        return
    for term in terms:
        module = term.ref.split(":")[0]
        if term.kind == "python" and importlib.util.find_spec(module) is None:
            problems.append(f"reward '{term}': module '{module}' cannot be found")


