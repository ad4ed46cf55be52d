"""``alignpro sft``: demonstrations from IFEval records, their checks, and a run on a tiny random Llama that learns
its demonstration and becomes the ρ_sft of a distillation run."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from alignpro.config import build_config
from alignpro.data import builtin_ifeval_prompts
from alignpro.errors import AlignProError, ConfigError
from alignpro.templates import load_rewrite_template
from alignpro.train.sft import SFTConfig, instruction_demo, load_demos, sft, sft_loss

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def test_instruction_demo_restates_exactly_what_the_builtin_set_appended():
    records = builtin_ifeval_prompts("train")
    for r in records:
        restated = instruction_demo(r, "{instructions}", styled=False)
        assert "\n" not in restated
        assert " ".join(r.text.split()).endswith(restated), r.id
    multi = next(r for r in records if len(r.instructions) == 2)
    assert instruction_demo(multi).startswith("IMPORTANT: ")


def test_a_styled_demo_follows_the_instructions_it_restates():
    from alignpro.rewards.ifeval import follows

    records = builtin_ifeval_prompts("train")
    for iid in ("change_case:english_lowercase", "change_case:english_capital", "punctuation:no_comma",
                "startend:quotation"):
        r = next(r for r in records if [i.id for i in r.instructions] == [iid])
        assert instruction_demo(r) != instruction_demo(r, styled=False)
        line = instruction_demo(r, "{instructions}")  # without the label, as an answer would be
        assert [v.followed for v in follows(r.text, r.instructions, line)] == [True], (iid, line)
    quoted = next(r for r in records if [i.id for i in r.instructions] == ["startend:quotation"])
    assert re.fullmatch(r'IMPORTANT: ".+"', instruction_demo(quoted))
    plain = next(r for r in records if [i.id for i in r.instructions] == ["keywords:existence"])
    assert instruction_demo(plain) == instruction_demo(plain, styled=False)


def test_restate_template_parses_every_train_demo_whole():
    tpl = load_rewrite_template("rewrite-restate")
    for r in builtin_ifeval_prompts("train"):
        demo = instruction_demo(r)
        assert tpl.parse(demo, r.text) == (f"{r.text}\n\n{demo}", True), r.id
    assert tpl.max_new_tokens == 112


def test_sft_loss_is_the_mean_token_nll():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.125, 0.9, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected = -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.25)) + torch.log(torch.tensor(0.125))) / 3
    assert torch.isclose(sft_loss(logp, mask), expected)


@pytest.mark.parametrize("values, match", [
    ({"demo_format": "IMPORTANT:"}, "demo_format"),
    ({"demos": "demos.txt"}, "'demos' must be"),
    ({"epochs": 0}, "epochs"),
])
def test_sft_config_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        build_config(SFTConfig, values)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_demos_file_errors_name_the_line(tmp_path):
    records = builtin_ifeval_prompts("train")[:2]
    cfg = lambda f: build_config(SFTConfig, {"demos": f})  # noqa: E731
    with pytest.raises(AlignProError, match="does not exist"):
        load_demos(cfg(str(tmp_path / "none.jsonl")), records)
    with pytest.raises(AlignProError, match="line 2: its prompt is not among"):
        load_demos(cfg(_write(tmp_path / "a.jsonl", [{"prompt": records[0].text, "rewrite": "IMPORTANT: x"},
                                                     {"prompt": "something else", "rewrite": "y"}])), records)
    with pytest.raises(AlignProError, match="line 1: needs a 'prompt' and a non-empty 'rewrite'"):
        load_demos(cfg(_write(tmp_path / "b.jsonl", [{"prompt": records[0].text, "rewrite": " "}])), records)
    pairs = load_demos(cfg(_write(tmp_path / "c.jsonl", [{"prompt": records[1].text, "rewrite": "IMPORTANT: z"}])),
                       records)
    assert [(r.id, d) for r, d in pairs] == [(records[1].id, "IMPORTANT: z")]


def test_sft_refuses_demonstrations_the_template_would_cut(tiny_model, tmp_path):
    rec = builtin_ifeval_prompts("train")[0]
    demos = _write(tmp_path / "d.jsonl", [{"prompt": rec.text, "rewrite": "IMPORTANT: line one\nline two"}])
    with pytest.raises(AlignProError, match="parses whole"):
        sft(build_config(SFTConfig, {"prompter": f"hf:{tiny_model}", "demos": demos, "out": str(tmp_path / "r"),
                                     "progress": False}))
    assert not (tmp_path / "r").exists()


def test_sft_with_skip_bad_leaves_out_the_demonstrations_the_template_would_cut(tiny_model, tmp_path, capsys):
    good, bad = builtin_ifeval_prompts("train")[:2]
    rows = [{"prompt": bad.text, "rewrite": "IMPORTANT: line one\nline two"},
            {"prompt": good.text, "rewrite": "IMPORTANT: z"}]
    settings = {"prompter": f"hf:{tiny_model}", "demos": _write(tmp_path / "d.jsonl", rows), "epochs": 1,
                "batch_size": 1, "progress": False, "num_threads": 1, "skip_bad": True}
    run = sft(build_config(SFTConfig, settings | {"out": str(tmp_path / "r")}))
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # one demonstration, one step
    out = capsys.readouterr().out
    assert f"left out 1 of 2 demonstrations the template would cut (--skip-bad), e.g. ['{bad.id}']" in out
    with pytest.raises(AlignProError, match="every demonstration is one template 'rewrite-restate' would cut"):
        sft(build_config(SFTConfig, settings | {"out": str(tmp_path / "r2"),
                                                "demos": _write(tmp_path / "e.jsonl", rows[:1])}))


def test_sft_learns_its_demonstration_and_is_the_reference_of_a_distillation_run(tiny_model, tmp_path):
    from alignpro.specs import make_prompter
    from alignpro.train.config import TrainConfig
    from alignpro.train.loop import train

    rec = builtin_ifeval_prompts("train")[0]
    demo = "IMPORTANT: be brief."
    run = sft(build_config(SFTConfig, {
        "prompter": f"hf:{tiny_model}", "demos": _write(tmp_path / "d.jsonl", [{"prompt": rec.text, "rewrite": demo}]),
        "out": str(tmp_path / "sft"), "epochs": 40, "batch_size": 1, "lr": 1e-2, "lora": False, "progress": False,
        "num_threads": 1, "report_to": ["tensorboard"] if HAS_TENSORBOARD else []}))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert len(losses) == 40 and losses[-1] < 0.1 * losses[0]
    assert all(r["lr"] == 1e-2 and r["samples_per_s"] == pytest.approx(1 / r["seconds"]) for r in rows)
    if HAS_TENSORBOARD:  # the optional extra alignpro[tensorboard]
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        assert {"sft/loss", "sft/samples_per_s", "sft/tokens_per_s"} <= set(events.Tags()["scalars"])
        assert [e.value for e in events.Scalars("sft/loss")] == pytest.approx(losses, rel=1e-6)
    info = json.loads((run / "final" / "alignpro-train.json").read_text())
    assert info["algo"] == "sft" and info["template"] == "rewrite-restate" and info["role"] == "prompter"
    prompter = make_prompter(f"hf:{run / 'final'}", "rewrite-restate")
    assert prompter.gen.max_new_tokens == 112  # the template's own budget
    prompter.gen = prompter.gen.with_(do_sample=False)
    (rs,) = prompter.rewrite([rec.text], 1, seed=0)
    assert rs.rewrites[0].raw.strip() == demo and rs.rewrites[0].text == f"{rec.text}\n\n{demo}"

    # ρ_sft of a distillation run: a fresh LoRA on the SFT'd weights, whose reference (adapter off) is the SFT model
    values = dict(prompter=f"hf:{run / 'final'}", target="fake", reward="fake", out=str(tmp_path / "distill"),
                  template="rewrite-restate", algo="distill", steps=1, batch_size=2, k=2, max_new_tokens=8, epochs=1,
                  lr=1e-3, lora=True, lora_r=4, kl_control="fixed", num_threads=1, progress=False)
    result = train(build_config(TrainConfig, values))
    assert result.rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # step 1 samples ρ_θ = ρ_sft: no KL yet
    adapter_info = json.loads((result.run / "final-adapter" / "alignpro-train.json").read_text())
    assert adapter_info["base_spec"] == f"hf:{run / 'final'}"
    assert re.search(r"^algo: distill$", (result.run / "config.yaml").read_text(), flags=re.M)


class _Stopped(Exception):
    """The crash a test injects into a step."""


def _stop_in_step(monkeypatch, step):
    """Make the ``step``-th SFT loss of the next run raise :class:`_Stopped` (before that step's update)."""
    import alignpro.train.sft as sft_module

    real, calls = sft_module.sft_loss, []

    def loss(logprobs, mask):
        calls.append(1)
        if len(calls) == step:
            raise _Stopped(f"stopped in step {step}")
        return real(logprobs, mask)

    monkeypatch.setattr(sft_module, "sft_loss", loss)
    return real


def test_an_interrupted_sft_run_resumes_to_the_uninterrupted_result(tiny_model, tmp_path, monkeypatch,
                                                                    capsys):
    """6 steps (5 demos, batch 2, 2 epochs), a checkpoint every 4: a run stopped before its first checkpoint starts
    again at step 0; one stopped in step 6 continues after step 4 (mid-epoch) and ends with the uninterrupted run's
    losses and trained weights, every step logged once, only the newest checkpoint kept."""
    import alignpro.train.sft as sft_module

    records = builtin_ifeval_prompts("train")[:5]
    demos = _write(tmp_path / "d.jsonl", [{"prompt": r.text, "rewrite": f"IMPORTANT: answer {i}."}
                                          for i, r in enumerate(records)])
    values = {"prompter": f"hf:{tiny_model}", "demos": demos, "epochs": 2, "batch_size": 2, "lr": 1e-2,
              "lora_r": 4, "save_every": 4, "progress": False, "num_threads": 1}
    straight = sft(build_config(SFTConfig, {**values, "out": str(tmp_path / "straight")}))
    split = tmp_path / "split"
    cfg = build_config(SFTConfig, {**values, "out": str(split)})
    rows = lambda run: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    ckpts = lambda run: sorted(d.name for d in (run / "checkpoints").iterdir())  # noqa: E731

    resumed = build_config(SFTConfig, {**values, "out": str(split), "resume": str(split)})

    _stop_in_step(monkeypatch, 2)
    with pytest.raises(_Stopped):
        sft(cfg)
    assert [r["step"] for r in rows(split)] == [1] and not (split / "checkpoints").exists()
    with pytest.raises(AlignProError, match=f"already holds an SFT run; pass --resume {split} to continue it"):
        sft(cfg)  # the one way to continue a run is --resume
    real = _stop_in_step(monkeypatch, 6)
    with pytest.raises(_Stopped):
        sft(resumed)  # no checkpoint yet: from step 0, the old row dropped
    assert [r["step"] for r in rows(split)] == [1, 2, 3, 4, 5] and ckpts(split) == ["step-000004"]
    assert "resuming" not in capsys.readouterr().out
    monkeypatch.setattr(sft_module, "sft_loss", real)
    sft(resumed)
    assert "alignpro sft: resuming after step 4 of 6 in " in capsys.readouterr().out

    assert [r["step"] for r in rows(split)] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in rows(split)] == [1, 1, 1, 2, 2, 2]
    for a, b in zip(rows(straight), rows(split), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
    assert ckpts(straight) == ckpts(split) == ["step-000006"]
    last = lambda run: run / "checkpoints" / "step-000006"  # noqa: E731
    state = lambda run: json.loads((last(run) / "trainer_state.json").read_text())  # noqa: E731
    assert state(split)["step"] == 6 and state(split)["data_position"] == state(straight)["data_position"] == 10
    want, got = (torch.load(last(run) / "policy.pt") for run in (straight, split))
    assert sorted(got) == sorted(want) and all("lora_" in name for name in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)
    assert (split / "final-adapter").is_dir() and (split / "final").is_dir()
    assert json.loads((split / "final" / "alignpro-train.json").read_text())["steps"] == 6


def test_sft_refuses_a_run_folder_with_other_settings_or_a_finished_run(tmp_path):
    """Checked before any model is loaded: --resume with other settings names every differing setting (the
    resumable ones are not differences); a run there without --resume, a finished run, or --resume of a folder with
    no run are errors that say what to do."""
    from alignpro.config import write_run_config
    from alignpro.train.sft import resume_point

    run = tmp_path / "run"
    run.mkdir()
    saved = build_config(SFTConfig, {"out": str(run), "lr": 1e-3, "epochs": 3})
    write_run_config(saved, run / "config.yaml")
    log = '{"step": 1, "epoch": 1, "loss": 2.0}\n'
    (run / "metrics.jsonl").write_text(log)
    with pytest.raises(ConfigError) as err:
        sft(build_config(SFTConfig, {"out": str(run), "resume": str(run)}))
    message = str(err.value)
    assert message.startswith(f"setting(s) ['epochs', 'lr'] differ from the run's {run / 'config.yaml'}")
    assert "lr: 0.001 there, 0.0002 here" in message and "epochs: 3 there, 2 here" in message
    assert message.count(" there, ") == 2 and "start a new run with another --out" in message
    with pytest.raises(AlignProError, match=f"already holds an SFT run; pass --resume {run} to continue it"):
        sft(build_config(SFTConfig, {"out": str(run), "lr": 1e-3, "epochs": 3}))
    assert (run / "metrics.jsonl").read_text() == log  # untouched

    same = build_config(SFTConfig, {"lr": 1e-3, "epochs": 3, "resume": str(tmp_path / "." / "run"),
                                    "progress": False, "num_threads": 1, "save_every": 3, "keep_checkpoints": 2,
                                    "report_to": ["none"]})
    assert resume_point(same, run) is None  # no checkpoint: it would start again at step 0

    (run / "final").mkdir()
    with pytest.raises(AlignProError, match=r"already holds a finished SFT run .*; choose another --out"):
        sft(same)
    (run / "final").rmdir()
    (run / "config.yaml").unlink()
    with pytest.raises(AlignProError, match="no SFT run there \\(no config.yaml\\), so it cannot be continued"):
        sft(same)


def test_a_shipped_adapter_as_base_resolves_outside_the_repository(tmp_path, monkeypatch):
    from alignpro.backends.adapter import adapter_base_spec

    monkeypatch.chdir(tmp_path)
    resolved = adapter_base_spec("hf:alignpro/adapters/ifeval-oracle")
    assert resolved.startswith("hf:/") and (Path(resolved[3:]) / "adapter_config.json").is_file()
    assert adapter_base_spec("hf:alignpro/adapters/no-such-adapter") == "hf:alignpro/adapters/no-such-adapter"
    assert adapter_base_spec("smollm2") == "smollm2"


def test_demo_train_keeps_a_prompter_recipes_own_rho_sft(tmp_path, monkeypatch):
    """`demo --train`: a prompter recipe that names its ρ_sft (the shipped one: the SFT adapter) keeps it; a recipe
    without one gets the demo's prompter, and the oracle recipe always the demo's target (training is stubbed)."""
    import yaml

    import alignpro.train.loop as loop
    from alignpro.demo import DemoConfig, train_now
    from alignpro.train.loop import TrainResult

    seen = {}

    def fake_train(cfg):
        seen[cfg.role.value] = cfg
        return TrainResult(Path(cfg.out), Path(cfg.out) / "final", [], None, None)

    monkeypatch.setattr(loop, "train", fake_train)
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({"role": "prompter", "algo": "distill", "k": 2, "kl_control": "fixed",
                                   "prompter": "hf:alignpro/adapters/ifeval-prompter-sft"}))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"role": "prompter", "algo": "ppo"}))
    oracle = tmp_path / "oracle.yaml"
    oracle.write_text(yaml.safe_dump({"role": "oracle", "algo": "ppo"}))
    for recipe, expected in ((own, "hf:alignpro/adapters/ifeval-prompter-sft"), (plain, "hf:my/rho-sft")):
        cfg = build_config(DemoConfig, dict(prompter="hf:my/rho-sft", target="smollm2", reward="fake", train=True,
                                            train_prompter_config=str(recipe), train_oracle_config=str(oracle)))
        train_now(cfg, tmp_path / recipe.stem)
        assert seen["prompter"].prompter == expected
        assert seen["prompter"].template == "rewrite-restate" and seen["oracle"].target == "smollm2"


def test_sft_leaves_out_the_groups_train_holds_out_for_its_curve(tmp_path, monkeypatch):
    """`heldout: N` with the same prompts and seed: SFT never sees the prompt groups `alignpro train` measures its
    learning curve on (alignpro.train.heldout.split_heldout), so the curve's step-0 row is out of sample."""
    import alignpro.train.sft as sft_module
    from alignpro.data import load_prompts
    from alignpro.train.heldout import prompt_group, split_heldout

    seen = []

    def capture(cfg, records):
        seen.extend(records)
        raise _Stopped("demos captured")

    monkeypatch.setattr(sft_module, "load_demos", capture)
    with pytest.raises(_Stopped):
        sft(build_config(SFTConfig, {"prompts": "builtin-writing:train", "heldout": 30, "seed": 3,
                                     "out": str(tmp_path / "r"), "progress": False}))
    records = load_prompts("builtin-writing:train").records
    kept, held = split_heldout(records, 30, seed=3)
    assert [r.id for r in seen] == [r.id for r in kept] and len(seen) == len(records) - len(held)
    assert not {prompt_group(r.id) for r in seen} & {prompt_group(r.id) for r in held}


def test_restated_types_finds_exactly_each_records_instructions_in_its_demonstration_line() -> None:
    """restated_types: IFEval's wording of an instruction, kwargs left out, found in a restatement line. On every
    record of both builtin sets, the SFT demonstration line (registry wording, styled as the instructions ask, with
    the fixed line after it) names exactly the record's instruction ids; a request without them names none."""
    from alignpro.data import load_prompts
    from alignpro.train.sft import instruction_demo, restated_types

    records = [r for src in ("builtin-writing:all", "builtin-ifeval:all") for r in load_prompts(src).records]
    types = sorted({i.id for r in records for i in r.instructions})
    assert len(types) >= 20
    line = "IMPORTANT: {instructions} Pay close attention to the required format, length, and wording."
    for r in records:
        assert restated_types(instruction_demo(r, line, styled=True), types) == {i.id for i in r.instructions}, r.id
    assert restated_types("Write a short poem about autumn leaves, in all lowercase letters.", types) == set()
    assert restated_types("Include keywords a, b in the response. Do not include keywords c in the response.",
                          types) == {"keywords:existence", "keywords:forbidden_words"}
