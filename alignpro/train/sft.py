"""``alignpro sft``: supervised fine-tuning of the prompter on demonstrations, the paper's ρ_sft.

The paper starts Align-Pro from ρ_sft, a prompter already fine-tuned to rewrite prompts, and regularises toward it
(eq 9). A chat LM asked by a template to rewrite is one ρ_sft; this command makes a better one by maximising the
log-likelihood of demonstrated rewrites (BPO's recipe): −(1/#tokens) Σ log ρ_θ(x′_demo | template(x)).

Demonstrations come from a JSONL file (``prompt`` and ``rewrite`` per line: the prompter's raw output for that
prompt, e.g. the line of ``rewrite-restate``) or, with ``demos: ifeval-instructions``, from each prompt
record's own IFEval instructions: :func:`instruction_demo` restates them as rebuilt by IFEval's registry
(``build_description`` with the record's kwargs). Only the prompts given (the train split) are ever seen; at
inference the prompter sees x alone and must find the instructions in its text.

The result is written like ``alignpro train``'s (``RUN/final-adapter`` with LoRA, ``RUN/final``), so it loads as
the prompter spec ``hf:RUN/final-adapter`` and can be the ρ_sft (policy init and KL reference) of
``alignpro train --prompter hf:RUN/final-adapter``.

A run is resumable: every ``save_every`` steps (and at the last) the trained tensors, the AdamW state and the step
go into an atomic checkpoint (``RUN/checkpoints/step-000010`` for step 10: :mod:`alignpro.train.checkpoint`'s
layout, less the RNG states SFT has no use for; the learning rate is a pure function of the step).
``alignpro sft --resume RUN`` continues an unfinished run from its newest complete checkpoint (:func:`resume_point`),
as ``alignpro train --resume RUN`` does: its config.yaml is reused, the metrics rows after the checkpoint are
dropped and those steps re-run in the same order (a pure function of (seed, epoch); dropout is off), so the result
equals an uninterrupted run's. A finished run (``RUN/final``) or other settings (beyond the resumable ones) are
refused, and so is a new run into a folder that holds one.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from alignpro.config import (OptimizerSettings, RunSettings, check_at_least, check_resume, config_to_dict,
                             load_yaml, parse_config, setting, write_run_config)
from alignpro.data import PromptRecord
from alignpro.data.ifeval_google import refuse_test_set
from alignpro.errors import AlignProError, ConfigError
from alignpro.specs import model_spec_help
from alignpro.train.checkpoint import (TrainerState, begin_checkpoint, finish_checkpoint, latest_checkpoint,
                                       load_trainable_state, prune_checkpoints, torch_save, trainable_state,
                                       truncate_jsonl)
from alignpro.train.heldout import split_heldout
from alignpro.train.tracking import RunLog

INSTRUCTION_DEMOS = "ifeval-instructions"
METRICS, CONFIG = "metrics.jsonl", "config.yaml"


@dataclass
class SFTConfig(RunSettings, OptimizerSettings):
    """Supervised fine-tuning of the prompter ρ on demonstrated rewrites (the paper's ρ_sft)."""

    prompter: str = setting("smollm2", "the model to fine-tune: " + model_spec_help("trainable"))
    template: str = setting("rewrite-restate", "rewrite template: the demonstrations are its raw outputs")
    prompts: str = setting("builtin-ifeval:train", "the prompts x: builtin-ifeval:train | file.jsonl | hf:<id>")
    demos: str = setting(INSTRUCTION_DEMOS, f"{INSTRUCTION_DEMOS}: restate each record's IFEval instructions "
                                            "(demo_format); or a JSONL file with 'prompt' and 'rewrite' per line "
                                            "(the prompts must be among 'prompts')")
    demo_format: str = setting("IMPORTANT: {instructions}", f"{INSTRUCTION_DEMOS}: the demonstrated output, with "
                                                            "{instructions} = the instructions' descriptions")
    demo_styled: bool = setting(True, f"{INSTRUCTION_DEMOS}: write the restatement the way its instructions ask "
                                      "(lowercase, capitals, no commas, in quotes), as π_F imitates its prompt")
    out: str = setting("runs/sft", "run folder: config.yaml, metrics.jsonl, checkpoints/, final/, final-adapter/")
    epochs: int = setting(2, "passes over the demonstrations")
    batch_size: int = setting(8, "demonstrations per optimizer step")
    lr: float = setting(2.0e-4, "AdamW learning rate (LoRA's usual order; the group's 1e-5 suits full weights)")
    max_grad_norm: float = setting(0.0, "clip the gradient norm to this (0 = off: the shipped SFT prompter was "
                                        "trained unclipped)")
    lora: bool = setting(True, "train a LoRA adapter (a few MB) instead of all weights")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha")
    lora_target_modules: list[str] = setting(["q_proj", "k_proj", "v_proj", "o_proj"], "modules LoRA adapts")
    seed: int = setting(0, "seed of the demonstration order (and of the held-out groups)")
    skip_bad: bool = setting(False, "leave out (and count) demonstrations the template would cut or drop, instead "
                                    "of refusing the run")
    heldout: int = setting(0, "leave out the prompt groups `alignpro train` holds out for its learning curve with "
                              "the same prompts, heldout and seed (alignpro.train.heldout.split_heldout); 0 = none")
    keep_checkpoints: int = setting(1, "keep only the newest N checkpoints (1: an SFT checkpoint is only for "
                                       "resuming)", resumable=True)

    def __post_init__(self) -> None:
        refuse_test_set(self.prompts, "alignpro sft")
        self.check_run_settings()
        self.check_optimizer_settings()
        check_at_least(self, 1, "epochs", "batch_size")
        check_at_least(self, 0, "heldout")
        if self.demos == INSTRUCTION_DEMOS and "{instructions}" not in self.demo_format:
            raise ConfigError(f"setting 'demo_format' must contain '{{instructions}}', got {self.demo_format!r}")
        if self.demos != INSTRUCTION_DEMOS and not self.demos.endswith(".jsonl"):
            raise ConfigError(f"setting 'demos' must be '{INSTRUCTION_DEMOS}' or a .jsonl file with 'prompt' and "
                              f"'rewrite' per line, got {self.demos!r}")


def instruction_descriptions(record: PromptRecord) -> list[str]:
    """Each IFEval instruction of ``record`` in words, rebuilt by IFEval's own registry from the record's kwargs
    (what the builtin set appended to the request). Seeded: a checker draws any kwarg the record leaves out."""
    from alignpro.rewards.ifeval import registry

    checkers, out = registry(), []
    state = random.getstate()
    try:
        for i, ins in enumerate(record.instructions):
            random.seed(f"{record.id}:{i}")
            out.append(checkers[ins.id](ins.id).build_description(**ins.kwargs).strip())
    finally:
        random.setstate(state)
    return out


def _words(text: str) -> str:
    """``text`` as lowercase letters and digits separated by single spaces, padded by one space on each side
    (the styling a demonstration may carry, case, commas and quotes, is gone)."""
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


@functools.cache
def instruction_phrases(types: tuple[str, ...], draws: int = 16) -> dict[str, tuple[str, ...]]:
    """For each IFEval instruction id, the runs of words (in order) that ``draws`` of IFEval's own random
    descriptions of it all share: its wording with the kwargs left out (seeded; :func:`restated_types` looks for
    them, in order, with at most ``GAP`` words between two runs)."""
    from alignpro.rewards.ifeval import registry

    checkers, out = registry(), {}
    state = random.getstate()
    try:
        for t in types:
            descs = []
            for i in range(draws):
                random.seed(f"phrase:{t}:{i}")
                kwargs = {"prompt_to_repeat": f"request number {i} {'x' * i}"} if t == "combination:repeat_prompt" \
                    else {}
                descs.append(_words(checkers[t](t).build_description(**kwargs)).split())
            keep, breaks = [True] * len(descs[0]), set()  # words of the first shared by all; run ends
            for d in descs[1:]:
                at = {a + k: b + k for a, b, size in difflib.SequenceMatcher(None, descs[0], d, autojunk=False)
                      .get_matching_blocks() for k in range(size)}  # word of the first -> the same word in d
                keep = [k and i in at for i, k in enumerate(keep)]
                breaks |= {i for i in at if i + 1 in at and at[i + 1] != at[i] + 1}  # d has words in between
            runs, run = [], []
            for i, (word, kept) in enumerate(zip(descs[0], keep)):
                if kept:
                    run.append(word)
                if run and (not kept or i in breaks):
                    runs, run = runs + [" ".join(run)], []
            out[t] = tuple(runs + ([" ".join(run)] if run else []))
    finally:
        random.setstate(state)
    return out


GAP = 12  #: at most this many words (kwargs: keywords, numbers, phrases) between two runs of an instruction's wording


def restated_types(text: str, types: Sequence[str]) -> set[str]:
    """The instruction ids among ``types`` whose wording (:func:`instruction_phrases`) ``text`` contains, longest
    wording first, each match removed before the next is looked for (so "do not include keywords … in the
    response" is not also "include keywords … in the response")."""
    words, found = _words(text), set()
    phrases = instruction_phrases(tuple(sorted(types)))
    for t in sorted(phrases, key=lambda t: (-sum(len(r.split()) for r in phrases[t]), t)):
        pattern = " " + f"(?: [a-z0-9]+){{0,{GAP}}}? ".join(map(re.escape, phrases[t])) + " "
        if match := re.search(pattern, words):
            found.add(t)
            words = words[:match.start()] + " | " + words[match.end():]
    return found


def _quoted(text: str) -> str:
    """``text`` in double quotes after its label ("IMPORTANT: "), since a template's parser strips quotes that wrap
    a whole output."""
    label, sep, rest = text.partition(": ")
    return f'{label}{sep}"{rest}"' if sep and " " not in label else f'"{text}"'


#: instruction type -> how a line that itself follows it is written (:func:`follow_in_style`)
STYLES = {
    "change_case:english_lowercase": str.lower,
    "change_case:english_capital": str.upper,
    "punctuation:no_comma": lambda text: text.replace(",", ""),
    "startend:quotation": _quoted,
}


def follow_in_style(text: str, instruction_ids: Sequence[str]) -> str:
    """``text`` written the way the instructions ask of the answer, where a line can show it: in lowercase, in
    capitals, without commas, wrapped in double quotes (:data:`STYLES`, applied in that order). SmolLM2 imitates
    the style of its prompt: on train prompts a lowercase reminder took the lowercase rate from 0.01 to 0.77
    (docs/instruction-following.md)."""
    for iid, style in STYLES.items():
        if iid in instruction_ids:
            text = style(text)
    return text


def instruction_demo(record: PromptRecord, demo_format: str = "IMPORTANT: {instructions}",
                     styled: bool = True) -> str:
    """The demonstrated rewrite of ``record``: its instructions restated in ``demo_format``, on one line (a
    description's own line breaks, as in the bullet-list example, become spaces); with ``styled``, the line itself
    follows the instructions it restates (:func:`follow_in_style`)."""
    if not record.instructions:
        raise AlignProError(f"demos '{INSTRUCTION_DEMOS}': the prompt {record.id} has no IFEval instructions to "
                            "restate; use builtin-ifeval, hf:google/IFEval or a JSONL file in IFEval's schema")
    line = demo_format.format(instructions=" ".join(" ".join(instruction_descriptions(record)).split()))
    return follow_in_style(line, [i.id for i in record.instructions]) if styled else line


def load_demos(cfg: SFTConfig, records: Sequence[PromptRecord]) -> list[tuple[PromptRecord, str]]:
    """(x, demonstrated raw output) pairs, in the records' order."""
    if cfg.demos == INSTRUCTION_DEMOS:
        return [(r, instruction_demo(r, cfg.demo_format, cfg.demo_styled)) for r in records]
    by_text = {r.text: r for r in records}
    pairs = []
    path = Path(cfg.demos)
    if not path.is_file():
        raise AlignProError(f"demos file '{path}' does not exist")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AlignProError(f"demos file '{path}' line {n}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(
                row.get("rewrite"), str) or not row["rewrite"].strip():
            raise AlignProError(f"demos file '{path}' line {n}: needs a 'prompt' and a non-empty 'rewrite' text")
        if row["prompt"].strip() not in by_text:
            raise AlignProError(f"demos file '{path}' line {n}: its prompt is not among the prompts of "
                                f"'{cfg.prompts}' ({row['prompt'][:60]!r})")
        pairs.append((by_text[row["prompt"].strip()], row["rewrite"].strip()))
    if not pairs:
        raise AlignProError(f"demos file '{path}' holds no demonstrations")
    return pairs


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The SFT objective: the mean negative log-likelihood per demonstrated token. ``logprobs``, ``mask`` (B, T)."""
    return -(logprobs * mask).sum() / mask.sum().clamp(min=1)


def encode_demos(tokenizer, queries: Sequence[str], demos: Sequence[str], eos_id: int, pad_id: int,
                 device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded queries (B, Q) and right-padded responses = demo tokens + EOS (B, T), with their masks."""
    enc = tokenizer(list(queries), return_tensors="pt", padding=True, add_special_tokens=False)
    rows = [tokenizer(d, add_special_tokens=False)["input_ids"] + [eos_id] for d in demos]
    T = max(map(len, rows))
    resp = torch.full((len(rows), T), pad_id, dtype=torch.long)
    resp_mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, ids in enumerate(rows):
        resp[i, :len(ids)] = torch.tensor(ids)
        resp_mask[i, :len(ids)] = 1
    return enc["input_ids"].to(device), enc["attention_mask"].to(device), resp.to(device), resp_mask.to(device)


def resume_point(cfg: SFTConfig, run: Path) -> tuple[int, Path] | None:
    """Where :func:`sft` starts in ``run``: with ``cfg.resume``, the newest complete checkpoint ``(step, folder)``
    of the unfinished run there (None when it stopped before its first checkpoint: it starts again at step 0 and
    its log is dropped, as ``alignpro train --resume`` does); without, None for a folder with no run. Errors: a
    finished run (``final/``); a run there without ``--resume``; with it, no run there, or settings that differ
    beyond the resumable ones (:func:`alignpro.config.check_resume`)."""
    if (run / "final").exists():
        raise AlignProError(f"run folder '{run}' already holds a finished SFT run ({run / 'final'}); "
                            "choose another --out")
    latest = latest_checkpoint(run)
    logged = (run / METRICS).is_file() and (run / METRICS).stat().st_size > 0
    if not cfg.resume:
        if latest is not None or logged or (run / CONFIG).is_file():
            raise AlignProError(f"run folder '{run}' already holds an SFT run; pass --resume {run} to continue it, "
                                "or choose another --out")
        return None
    if not (run / CONFIG).is_file():
        raise AlignProError(f"--resume {run}: no SFT run there (no {CONFIG}), so it cannot be continued; start one "
                            f"with --out {run}")
    check_resume(load_yaml(run / CONFIG), config_to_dict(cfg), SFTConfig, run / CONFIG)
    return latest


def save_sft_checkpoint(run: Path, state: TrainerState, policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        keep: int) -> Path:
    """Write the checkpoint of ``state.step`` atomically (:mod:`alignpro.train.checkpoint`), then keep only the
    newest ``keep``: ``policy.pt`` (the trained tensors), ``optimizer.pt`` and ``trainer_state.json``, as
    ``alignpro train`` names them. No RNG states (the demonstration order is a pure
    function of (seed, epoch) and dropout is off) and no schedule (the learning rate is constant)."""
    tmp = begin_checkpoint(run, state.step)
    torch_save(trainable_state(policy), tmp / "policy.pt")
    torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(state.to_json())
    final = finish_checkpoint(tmp, run, state.step)
    prune_checkpoints(run, keep)
    return final


def restore_sft_checkpoint(ckpt: Path, policy: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainerState:
    """Load :func:`save_sft_checkpoint`'s folder ``ckpt`` into ``policy`` and ``optimizer``; returns its
    :class:`TrainerState` (step, elapsed seconds, demonstrations seen)."""
    device = next(policy.parameters()).device
    load_trainable_state(policy, torch.load(ckpt / "policy.pt", map_location=device))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device))
    return TrainerState.from_json((ckpt / "trainer_state.json").read_text())


def sft(cfg: SFTConfig) -> Path:
    """Fine-tune the prompter on the demonstrations, or continue the unfinished run in ``cfg.out``
    (:func:`resume_point`); returns RUN."""
    from tqdm.auto import tqdm

    from alignpro.data import load_prompts
    from alignpro.specs import check_prompter_spec, load_causal_lm
    from alignpro.templates import load_rewrite_template
    from alignpro.train.losses import logprobs_from_logits
    from alignpro.train.policy import PolicyWithValueHead, apply_lora, disable_dropout, export_final

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run = Path(cfg.out)
    resume_from = resume_point(cfg, run)
    check_prompter_spec(cfg.prompter)
    template = load_rewrite_template(cfg.template)
    records, _ = split_heldout(load_prompts(cfg.prompts).records, cfg.heldout, cfg.seed)
    pairs = load_demos(cfg, records)
    unparsed = [r.id for r, d in pairs
                if template.parse(d, r.text) != (template.compose_rewrite(d, r.text), True)]
    if unparsed and not cfg.skip_bad:
        raise AlignProError(f"{len(unparsed)} demonstrations are not outputs that template '{cfg.template}' parses "
                            f"whole (too long, several lines where it takes one, or empty), e.g. {unparsed[:3]}: "
                            "the prompter would learn outputs that are cut or dropped; pass --skip-bad to leave "
                            "them out")
    if unparsed:
        pairs = [(r, d) for r, d in pairs if r.id not in set(unparsed)]
        print(f"alignpro sft: left out {len(unparsed)} of {len(pairs) + len(unparsed)} demonstrations the template "
              f"would cut (--skip-bad), e.g. {unparsed[:3]}")
        if not pairs:
            raise AlignProError(f"every demonstration is one template '{cfg.template}' would cut or drop: nothing "
                                "to train on")
    run.mkdir(parents=True, exist_ok=True)
    write_run_config(cfg, run / CONFIG)
    truncate_jsonl(run / METRICS, resume_from[0] if resume_from else 0)  # those steps are (re-)run
    torch.manual_seed(cfg.seed)
    base = load_causal_lm(cfg.prompter, trainable=True)
    tokenizer, lm = base.tokenizer, base.model
    if cfg.lora:
        lm = apply_lora(lm, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules)
    policy = PolicyWithValueHead(lm, value_head=False)
    disable_dropout(policy)
    eos_id = tokenizer.eos_token_id  # the end of a demonstrated reply, as rollouts end (stop_token_ids)
    queries = [base.chat_prompt(template.messages(r.text)) for r, _ in pairs]
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    state = TrainerState()
    if resume_from:
        state = restore_sft_checkpoint(resume_from[1], policy, optimizer)
        print(f"alignpro sft: resuming after step {state.step} of {total} in {run}")
    start_step, elapsed_before = state.step, state.elapsed_seconds
    metrics_log = RunLog(run, cfg.report_to, prefix="sft", config=config_to_dict(cfg), first_step=start_step + 1,
                         metrics_file=METRICS)
    bar = tqdm(total=total, initial=start_step, desc="sft prompter", unit="step", disable=not cfg.progress,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    policy.train()
    for epoch in range(cfg.epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(pairs))
        for n, chunk in enumerate(np.array_split(order, steps_per_epoch)):
            step = epoch * steps_per_epoch + n + 1
            if step <= start_step:  # done before the checkpoint, in this same order
                continue
            t_step = time.perf_counter()
            q_ids, q_mask, r_ids, r_mask = encode_demos(tokenizer, [queries[i] for i in chunk],
                                                        [pairs[i][1] for i in chunk], eos_id,
                                                        tokenizer.pad_token_id, lm.device)
            T = r_ids.shape[1]
            logits, _ = policy(torch.cat([q_ids, r_ids], 1), torch.cat([q_mask, r_mask], 1), T)
            loss = sft_loss(logprobs_from_logits(logits, r_ids, 1.0), r_mask.float())
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            for group in optimizer.param_groups:  # the schedule is a pure function of the step (resume-exact)
                group["lr"] = cfg.lr * cfg.lr_factor(step - 1, total)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step, state.data_position = step, state.data_position + len(chunk)
            state.elapsed_seconds = elapsed_before + time.perf_counter() - t0
            seconds = time.perf_counter() - t_step
            metrics_log.log({"step": step, "epoch": epoch + 1, "loss": loss.item(), "demos": len(chunk),
                             "lr": optimizer.param_groups[0]["lr"], "samples_per_s": len(chunk) / seconds,
                             "tokens_per_s": float(r_mask.sum()) / seconds, "seconds": seconds,
                             "elapsed_seconds": state.elapsed_seconds})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if step % cfg.save_every == 0 or step == total:
                save_sft_checkpoint(run, state, policy, optimizer, cfg.keep_checkpoints)
    bar.close()
    metrics_log.close()
    from_records = cfg.demos == INSTRUCTION_DEMOS
    info = {"role": "prompter", "algo": "sft", "base_spec": cfg.prompter, "lora": cfg.lora,
            "template": cfg.template, "steps": total, "epochs": cfg.epochs, "run": str(run), "reward": None,
            "prompts": cfg.prompts, "demos": cfg.demos, "demo_format": cfg.demo_format if from_records else None,
            "demo_styled": cfg.demo_styled if from_records else None, "final_kl": None}
    export_final(policy, tokenizer, run, info)
    print(f"alignpro sft: {len(pairs)} demonstrations × {cfg.epochs} epochs in "
          f"{time.perf_counter() - t0:.0f} s; wrote {run / 'final'} (prompter spec 'hf:{run / 'final-adapter'}' "
          f"or 'hf:{run / 'final'}')")
    return run


def main(argv: list[str]) -> int:
    sft(parse_config(SFTConfig, argv, "alignpro sft"))
    return 0
