"""Reward learning (eq 1): the Bradley–Terry math, preference loaders (JSONL, hh-rlhf, ultrafeedback_binarized),
training on minilm and on tiny hf: models, resume, rm:DIR as a reward, labelling from a gold reward, the CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from alignpro.backends.fake import FakeReward, FakeTarget
from alignpro.cli import main as alignpro_main
from alignpro.config import build_config, parse_config
from alignpro.data import load_prompts
from alignpro.data.preferences import (PreferencePair, load_hf_pairs, load_pair_file, load_pairs, pair_to_row,
                                       render_conversation, split_pairs_by_prompt)
from alignpro.errors import AlignProError, ConfigError
from alignpro.reward_model.bt import (bradley_terry_loss, calibration_bins, expected_calibration_error,
                                      pairwise_accuracy, preference_probability)
from alignpro.reward_model.config import RewardLabelConfig, RewardTrainConfig
from alignpro.reward_model.label import label_pairs, progress_path
from alignpro.reward_model.model import RewardScorer
from alignpro.reward_model.train import total_steps, train_reward_model
from alignpro.specs import check_reward_spec, make_reward
from alignpro.train.checkpoint import read_jsonl

DATA = Path(__file__).parent / "data"
TIMING = ("seconds", "elapsed_seconds", "samples_per_s", "tokens_per_s")


# ---------------------------------------------------------------------------------------------------------------
# Eq (1) and the measures: exact
# ---------------------------------------------------------------------------------------------------------------


def test_bradley_terry_loss_and_gradient_match_a_hand_computation() -> None:
    r_w = torch.tensor([2.0, 0.0, -1.0], requires_grad=True)
    r_l = torch.tensor([1.0, 0.0, 1.0], requires_grad=True)
    loss = bradley_terry_loss(r_w, r_l)
    # Δ = 1, 0, −2: −log σ(Δ) = log(1 + e^−Δ)
    hand = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(2))) / 3
    assert loss.item() == pytest.approx(hand, abs=1e-6)
    assert hand == pytest.approx(1.044446, abs=1e-6)
    loss.backward()
    sigma = [1 / (1 + math.exp(-d)) for d in (1.0, 0.0, -2.0)]
    assert r_w.grad.tolist() == pytest.approx([-(1 - s) / 3 for s in sigma], abs=1e-6)  # ∂/∂r_w = −(1 − σ(Δ))/B
    assert r_l.grad.tolist() == pytest.approx([(1 - s) / 3 for s in sigma], abs=1e-6)
    big = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))  # no log(0)
    assert math.isfinite(big.item()) and big.item() == pytest.approx(400.0)


def test_preference_probability_accuracy_and_its_standard_error() -> None:
    assert preference_probability([0.0, math.log(3), -math.log(3), 800.0, -800.0]).tolist() == pytest.approx(
        [0.5, 0.75, 0.25, 1.0, 0.0])
    acc = pairwise_accuracy([1.0, 2.0, -1.0, 0.0])  # scores 1, 1, 0, ½
    s = np.array([1, 1, 0, 0.5])
    assert (acc.accuracy, acc.n, acc.correct, acc.ties) == (pytest.approx(0.625), 4, 2, 1)
    assert acc.stderr == pytest.approx(s.std(ddof=1) / 2)
    assert acc.mean_margin == pytest.approx(0.5)
    assert "0.625 ± " in str(acc) and "n = 4" in str(acc)
    with pytest.raises(ValueError):
        pairwise_accuracy([])


def test_calibration_bins_count_each_pair_in_both_orders() -> None:
    margins = [math.log(3)] * 4  # σ = 0.75 each: a calibrated model would be right 75 % of the time
    bins = calibration_bins(margins, n_bins=10)
    assert [b.count for b in bins] == [0, 0, 4, 0, 0, 0, 0, 4, 0, 0]
    assert (bins[7].predicted, bins[7].observed, bins[2].predicted, bins[2].observed) == pytest.approx(
        (0.75, 1.0, 0.25, 0.0))
    assert bins[7].stderr == 0.0 and math.isnan(bins[0].observed) and bins[0].to_dict()["observed"] is None
    assert expected_calibration_error(bins) == pytest.approx(0.25)  # always right but only 75 % sure
    assert expected_calibration_error(calibration_bins([0.0] * 6)) == pytest.approx(0.0)  # p = ½, observed ½
    assert expected_calibration_error(calibration_bins([50.0, 60.0])) == pytest.approx(0.0, abs=1e-12)


def test_learning_rate_schedule_and_step_count() -> None:
    from alignpro.config import OptimizerSettings

    assert [OptimizerSettings(schedule="linear").lr_factor(s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [OptimizerSettings(warmup_steps=2).lr_factor(s, 4) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert [OptimizerSettings(schedule="linear", warmup_steps=2).lr_factor(s, 4) for s in range(4)] == [
        0.5, 1.0, 1.0, 0.5]
    cfg = build_config(RewardTrainConfig, {"pairs": "p.jsonl", "epochs": 3, "batch_size": 4})
    assert total_steps(cfg, 10) == 9 and total_steps(build_config(RewardTrainConfig, {"pairs": "p.jsonl",
                                                                                      "steps": 5}), 10) == 5


# ---------------------------------------------------------------------------------------------------------------
# Preference data
# ---------------------------------------------------------------------------------------------------------------


def _pair(i: int, prompt: str | None = None) -> PreferencePair:
    return PreferencePair(id=str(i), prompt=prompt or f"prompt {i}", chosen=f"good {i}", rejected=f"bad {i}")


def test_split_by_prompt_keeps_a_prompts_pairs_together_and_is_order_free() -> None:
    pairs = [_pair(i, f"prompt {i % 10}") for i in range(40)]  # 10 prompts, 4 pairs each
    train, held = split_pairs_by_prompt(pairs, 0.2, seed=0)
    assert len({p.prompt for p in held}) == 2 and len(held) == 8 and len(train) == 32
    assert not {p.prompt for p in held} & {p.prompt for p in train}
    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    assert {p.prompt for p in split_pairs_by_prompt(shuffled, 0.2, seed=0)[1]} == {p.prompt for p in held}
    assert {p.prompt for p in split_pairs_by_prompt(pairs, 0.2, seed=1)[1]} != {p.prompt for p in held}
    assert split_pairs_by_prompt(pairs, 0.0)[1] == [] and len(split_pairs_by_prompt(pairs[:2], 0.01)[1]) == 1
    with pytest.raises(AlignProError, match="heldout_fraction"):
        split_pairs_by_prompt(pairs, 1.0)


def _write(tmp_path: Path, rows: list, name: str = "pairs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_pairs_system_scores_and_round_trip(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": " Hi? ", "chosen": " Hello! ", "rejected": "Go away.", "system": "Be nice.",
             "chosen_score": 1, "rejected_score": 0.5, "instruction_id_list": ["punctuation:no_comma"]},
            {"prompt": "Q", "chosen": "A", "rejected": "B", "system": ""}]
    result = load_pairs(str(_write(tmp_path, rows + [""])))
    a, b = result.pairs
    assert (a.id, a.prompt, a.chosen, a.rejected, a.system, a.chosen_score, a.rejected_score, a.line) == (
        "a", "Hi?", "Hello!", "Go away.", "Be nice.", 1.0, 0.5, 1)
    assert (b.id, b.system, b.chosen_score) == ("pairs:2", None, None) and result.summary() == "2 pairs"
    again = load_pair_file(_write(tmp_path, [pair_to_row(p) for p in result.pairs], "again.jsonl")).pairs
    assert [(p.prompt, p.chosen, p.rejected, p.system, p.chosen_score) for p in again] == [
        (p.prompt, p.chosen, p.rejected, p.system, p.chosen_score) for p in result.pairs]


GOOD = {"prompt": "Q", "chosen": "A", "rejected": "B"}


@pytest.mark.parametrize("line, reason, fragment", [
    ("{not json", "invalid_json", "not valid JSON"),
    ("[1, 2]", "not_an_object", "expected a JSON object"),
    (json.dumps({"prompt": "Q", "chosen": "A"}), "missing_field", "field 'rejected' is missing"),
    (json.dumps({"chosen": "A", "rejected": "B"}), "missing_field", "field 'prompt' is missing"),
    (json.dumps({**GOOD, "prompt": 3}), "not_a_string", "field 'prompt' must be a string"),
    (json.dumps({**GOOD, "chosen": "  "}), "empty", "field 'chosen' is empty"),
    (json.dumps({**GOOD, "rejected": "A"}), "identical", "the same answer"),
    (json.dumps({**GOOD, "chosen_score": "high"}), "bad_score", "chosen_score"),
    (json.dumps({**GOOD, "system": 5}), "bad_system", "field 'system'"),
    (json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nHuman: b"}),
     "bad_transcript", "does not end with an 'Assistant:' turn"),
    (json.dumps({"chosen": [{"role": "user", "content": "q"}], "rejected": [{"role": "user", "content": "q"}]}),
     "bad_messages", "must end with an assistant message"),
    (json.dumps({"chosen": "A", "rejected": ["B"], "prompt": "Q"}), "not_a_string", "both be strings"),
])
def test_each_bad_pair_row_names_file_and_line_or_is_counted(tmp_path: Path, line: str, reason: str,
                                                             fragment: str) -> None:
    path = _write(tmp_path, [GOOD, line, {**GOOD, "chosen": "C"}])
    with pytest.raises(AlignProError) as err:
        load_pairs(str(path))
    assert f"{path}, line 2: " in str(err.value) and fragment in str(err.value) and "--skip-bad" in str(err.value)
    result = load_pairs(str(path), skip_bad=True)
    assert len(result.pairs) == 2 and result.skipped == 1 and result.skipped_reasons == {reason: 1}
    assert f"{reason}=1" in result.summary()


def test_hh_rlhf_transcripts_from_local_data_files(tmp_path: Path) -> None:
    source = DATA / "hh_rlhf_sample.jsonl"
    with pytest.raises(AlignProError, match=r"row 2: 'chosen' and 'rejected' differ before their last"):
        load_pairs("hf:Anthropic/hh-rlhf", data_files=[str(source)], cache_dir=tmp_path)
    result = load_hf_pairs("Anthropic/hh-rlhf", data_files=str(source), skip_bad=True, cache_dir=tmp_path)
    assert result.skipped_reasons == {"prompt_mismatch": 1, "identical": 1}
    first, multi, last = result.pairs
    assert (first.prompt, first.chosen, first.rejected) == (
        "What is a good way to keep bread fresh?",
        "Store it in a paper bag at room temperature, or freeze slices you won't eat within two days.",
        "Bread goes stale.")
    assert multi.prompt == ("User: I want to learn chess.\n\nAssistant: Great! Do you know how the pieces move?"
                            "\n\nUser: Yes, roughly.")
    assert (multi.chosen, multi.rejected) == ("Then play short games online and review each loss with an engine.",
                                              "Chess is hard.")
    assert (last.id, last.line, last.source) == ("Anthropic/hh-rlhf:4", 4, "Anthropic/hh-rlhf")
    # the same rows in a plain JSONL file are recognised as transcripts too
    assert [p.prompt for p in load_pairs(str(source), skip_bad=True).pairs] == [p.prompt for p in result.pairs]


def test_ultrafeedback_binarized_messages_from_local_data_files(tmp_path: Path) -> None:
    source = DATA / "ultrafeedback_binarized_sample.jsonl"
    with pytest.raises(AlignProError, match=r"row 2: 'rejected'\[1\] has role 'bot'"):
        load_hf_pairs("HuggingFaceH4/ultrafeedback_binarized", data_files={"train_prefs": [str(source)]},
                      cache_dir=tmp_path)
    result = load_pairs("hf:HuggingFaceH4/ultrafeedback_binarized", data_files=[str(source)], skip_bad=True,
                        cache_dir=tmp_path)
    assert result.skipped_reasons == {"bad_messages": 1}
    plants, capital, cat = result.pairs
    assert (plants.prompt, plants.chosen, plants.rejected, plants.system) == (
        "Give three tips for keeping houseplants alive in winter.", "Water less, add light, avoid cold drafts.",
        "Plants need water.", None)
    assert (capital.system, capital.prompt, capital.chosen) == ("You are a concise assistant.",
                                                                "What is the capital of Australia?", "Canberra.")
    assert cat.prompt == render_conversation([("user", "Suggest a name for a cat."), ("assistant", "Miso."),
                                              ("user", "Another one?")])
    assert (cat.chosen, cat.rejected) == ("Pepper.", "Dog.")


def test_pair_source_errors(tmp_path: Path) -> None:
    with pytest.raises(AlignProError, match="unknown preference source 'pairs.csv'; valid forms"):
        load_pairs("pairs.csv")
    with pytest.raises(AlignProError, match="preference file not found"):
        load_pairs(str(tmp_path / "none.jsonl"))
    with pytest.raises(AlignProError, match="split does not apply"):
        load_pairs(str(_write(tmp_path, [GOOD])), split="train")
    with pytest.raises(AlignProError, match=r"has no column\(s\) \['rejected'\]; columns are: prompt, chosen"):
        load_pairs("hf:me/prefs", data_files=[str(_write(tmp_path, [{"prompt": "Q", "chosen": "A"}], "x.jsonl"))],
                   cache_dir=tmp_path)
    with pytest.raises(AlignProError, match="no usable preference pairs"):
        load_pairs(str(_write(tmp_path, [{**GOOD, "rejected": "A"}], "y.jsonl")), skip_bad=True)


# ---------------------------------------------------------------------------------------------------------------
# Training on minilm: make test's requirement, rm:DIR, resume
# ---------------------------------------------------------------------------------------------------------------

TOPICS = ["tea", "bikes", "python", "gardens", "chess", "bread", "rain", "music", "maps", "stars", "boats", "clocks"]


def _tiny_pairs(tmp_path: Path) -> Path:
    """36 pairs over 12 topics: a helpful answer preferred to a curt one."""
    rng = random.Random(0)
    rows = [{"prompt": f"Tell me something about {t} ({j}).",
             "chosen": f"Here is a kind and helpful note about {t}: it is great.",
             "rejected": f"No. {rng.choice(['whatever', 'go away', 'ugh'])}."} for t in TOPICS for j in range(3)]
    return _write(tmp_path, rows, "tiny_pairs.jsonl")


def _train_values(pairs: Path, out: Path, **kw) -> dict:
    values = dict(pairs=str(pairs), out=str(out), batch_size=4, steps=4, max_length=32, save_every=2,
                  num_threads=1, progress=False, device="cpu")
    values.update(kw)
    return values


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("rm")
    threads = torch.get_num_threads()
    result = train_reward_model(build_config(RewardTrainConfig, _train_values(_tiny_pairs(tmp), tmp / "run")))
    torch.set_num_threads(threads)
    return result


def test_make_test_trains_loads_as_a_reward_and_checks_eq1_by_hand(minilm_run) -> None:
    """`make test`'s requirement: a tiny pair set trains, DIR loads as the reward rm:DIR, and eq (1)'s loss on
    the held-out pairs, recomputed by hand from rm:DIR's scores, is the one the run recorded."""
    run = minilm_run.run
    record = json.loads((run / "reward_model.json").read_text())
    heldout = load_pair_file(run / "heldout.jsonl").pairs
    assert record["data"]["heldout_pairs"] == len(heldout) == 7 and record["data"]["train_pairs"] == 29
    reward = make_reward(f"rm:{run}")
    assert reward.name == f"rm:{run}" and reward.r_max is None
    r_w = reward.score([p.prompt for p in heldout], [p.chosen for p in heldout])
    r_l = reward.score([p.prompt for p in heldout], [p.rejected for p in heldout])
    hand = sum(math.log(1 + math.exp(-(w - l))) for w, l in zip(r_w, r_l)) / len(heldout)
    assert record["heldout"]["loss"] == pytest.approx(hand, abs=1e-5)
    assert record["heldout"]["n"] == 7
    assert record["heldout"]["accuracy"] == pytest.approx(sum(w > l for w, l in zip(r_w, r_l)) / 7)
    assert all(math.isfinite(x) for x in r_w + r_l)
    assert reward.score(["x"], ["y"]) == pytest.approx(make_reward(f"rm:{run / 'model'}").score(["x"], ["y"]))
    scores = [json.loads(line) for line in (run / "heldout_scores.jsonl").read_text().splitlines()]
    assert [s["r_chosen"] for s in scores] == pytest.approx(r_w, abs=1e-5)


def test_training_moves_the_weights_lowers_the_loss_and_writes_the_run(minilm_run) -> None:
    run = minilm_run.run
    fresh = RewardScorer.from_base("minilm", max_length=32, device="cpu")
    trained = dict(minilm_run.scorer.net.named_parameters())
    for name, p in fresh.net.named_parameters():
        if name.startswith("encoder.encoder.layer.0.attention"):
            assert not torch.equal(p, trained[name]), name  # the base is fine-tuned too
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert [r["lr"] for r in rows] == pytest.approx([3e-5 * f for f in (0.75, 0.5, 0.25, 0.0)])
    assert all(r["samples_per_s"] == pytest.approx(4 / r["seconds"]) for r in rows)  # 4 pairs per step
    assert all(r["tokens_per_s"] * r["seconds"] == pytest.approx(round(r["tokens_per_s"] * r["seconds"]))
               and 8 < r["tokens_per_s"] * r["seconds"] <= 8 * 32 for r in rows)  # 2×4 encodings of <= 32 tokens
    for name in ("calibration.png", "config.yaml", "model/template.json", "model/head.safetensors",
                 "model/tokenizer_config.json", "checkpoints/step-000004/COMPLETE"):
        assert (run / name).is_file(), name
    assert (run / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((run / "reward_model.json").read_text())
    assert record["base"] == "minilm" and record["template"] == {"kind": "text_pair", "max_length": 32,
                                                                  "format": None}
    assert record["config"]["pairs"].endswith("tiny_pairs.jsonl") and record["training"]["steps"] == 4
    assert set(record["heldout"]) >= {"accuracy", "stderr", "n", "loss", "ece", "calibration"}
    all_prompts = {p["prompt"] for p in map(json.loads, Path(record["config"]["pairs"]).read_text().splitlines())}
    held = {p.prompt for p in load_pair_file(run / "heldout.jsonl").pairs}
    assert held < all_prompts and len(held) == 7  # 7 of the 36 prompts held out, whole


def test_interrupted_then_resumed_run_equals_a_straight_run(tmp_path: Path, monkeypatch, minilm_run) -> None:
    import alignpro.train.tracking as train_module  # where a step's metrics row is appended

    pairs = Path(minilm_run.record["config"]["pairs"])
    real_append = train_module.append_jsonl

    def crash_after_step_3(path, row):  # a kill between step 3's log row and its (absent) checkpoint
        real_append(path, row)
        if row.get("step") == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "append_jsonl", crash_after_step_3)
    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(build_config(RewardTrainConfig, _train_values(pairs, tmp_path / "cut")))
    monkeypatch.setattr(train_module, "append_jsonl", real_append)
    assert [r["step"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")] == [1, 2, 3]
    assert not (tmp_path / "cut" / "model").exists()
    with pytest.raises(AlignProError, match="already holds a run; pass --resume"):
        train_reward_model(build_config(RewardTrainConfig, _train_values(pairs, tmp_path / "cut")))
    resumed = train_reward_model(build_config(RewardTrainConfig, {**_train_values(pairs, tmp_path / "cut"),
                                                                  "resume": str(tmp_path / "cut")}))
    torch.set_num_threads(threads)
    assert [r["step"] for r in resumed.rows] == [3, 4]  # step 3 re-run from checkpoint 2
    straight = read_jsonl(minilm_run.run / "metrics.jsonl")
    cut = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in cut] == [
        {k: v for k, v in r.items() if k not in TIMING} for r in straight]  # dropout masks and data order too
    a, b = dict(minilm_run.scorer.net.state_dict()), dict(resumed.scorer.net.state_dict())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.record["heldout"] == minilm_run.record["heldout"]


def test_freeze_base_trains_only_the_head(tmp_path: Path, minilm_run) -> None:
    pairs = Path(minilm_run.record["config"]["pairs"])
    threads = torch.get_num_threads()
    result = train_reward_model(build_config(RewardTrainConfig, _train_values(
        pairs, tmp_path / "frozen", steps=2, freeze_base=True, heldout_fraction=0.0, n_train=8)))
    torch.set_num_threads(threads)
    fresh = dict(RewardScorer.from_base("minilm", max_length=32, device="cpu").net.named_parameters())
    trained = dict(result.scorer.net.named_parameters())
    assert all(torch.equal(fresh[n], trained[n]) for n in fresh if n.startswith("encoder."))
    assert result.record["heldout"] is None and result.record["data"]["train_pairs"] == 8
    assert result.record["data"]["train_pairs_available"] == 36
    assert not (tmp_path / "frozen" / "calibration.png").exists()


# ---------------------------------------------------------------------------------------------------------------
# hf: bases (tiny random models)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bases(tmp_path_factory: pytest.TempPathFactory, smollm2_path):
    """A 1-layer Llama causal LM with SmolLM2's tokenizer (chat template), and a 1-layer BERT classifier with
    MiniLM's tokenizer, saved to folders."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from alignpro.assets import minilm_folder

    root = tmp_path_factory.mktemp("tiny-bases")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(smollm2_path))
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok),
                                         max_position_embeddings=256, pad_token_id=tok.pad_token_id))
    llama.save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    btok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    bert = BertForSequenceClassification(BertConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, vocab_size=btok.vocab_size,
                                                    max_position_embeddings=128, num_labels=1))
    bert.save_pretrained(root / "bert")
    btok.save_pretrained(root / "bert")
    return root


@pytest.mark.parametrize("name, template, kind, new_head", [
    ("llama", "auto", "chat", True),  # a causal LM: a new one-label `score` head on the last token
    ("bert", "Q: {prompt} A: {answer}", "format", False),  # already a one-label classifier
])
def test_hf_base_trains_saves_and_loads_as_rm(tmp_path: Path, tiny_bases: Path, minilm_run, name: str,
                                               template: str, kind: str, new_head: bool) -> None:
    pairs = Path(minilm_run.record["config"]["pairs"])
    base = f"hf:{tiny_bases / name}"
    threads = torch.get_num_threads()
    result = train_reward_model(build_config(RewardTrainConfig, _train_values(
        pairs, tmp_path / name, base=base, template=template, steps=2, lr=1e-3, max_length=64)))
    torch.set_num_threads(threads)
    net = result.scorer.net
    assert result.scorer.template.kind == kind and net.kind == "sequence_classification"
    assert (net.new_parameters == {"model.score.weight"}) if new_head else not net.new_parameters
    fresh = RewardScorer.from_base(base, template, 64, "cpu")
    moved = [n for n, p in fresh.net.named_parameters() if not torch.equal(p, dict(net.named_parameters())[n])]
    assert moved and all(math.isfinite(r["loss"]) for r in result.rows)
    reward = make_reward(f"rm:{result.run}")
    assert reward.scorer.template == result.scorer.template
    xs, ys = ["What is tea?", "Name a boat."], ["A drink.", "The Mary Rose."]
    assert reward.score(xs, ys) == pytest.approx(result.scorer.score(xs, ys).tolist(), abs=1e-5)
    if kind == "chat":  # the chat template renders both turns
        text = result.scorer.template.texts(result.scorer.tokenizer, ["hi"], ["yo"], [None])[0][0]
        assert "hi" in text and "yo" in text and "assistant" in text


# ---------------------------------------------------------------------------------------------------------------
# Labelling pairs with a gold reward
# ---------------------------------------------------------------------------------------------------------------


def _label_values(out: Path, **kw) -> dict:
    values = dict(prompts="builtin:train", n_prompts=24, target="fake", gold="fake", out=str(out), batch_size=5,
                  progress=False)
    values.update(kw)
    return values


def test_accuracy_stderr_clustered_by_prompt_by_hand() -> None:
    # prompts a, a, b, c: scores 1, 1, 0, 1 (mean 3/4); cluster sums of (s − 3/4): a 1/2, b −3/4, c 1/4
    acc = pairwise_accuracy([0.5, 2.0, -1.0, 0.1], ["a", "a", "b", "c"])
    assert acc.prompts == 3
    assert acc.stderr_by_prompt == pytest.approx(math.sqrt(3 / 2 * (0.25 + 0.5625 + 0.0625)) / 4)
    one_each = pairwise_accuracy([0.5, -2.0, 1.0], ["a", "b", "c"])  # one pair per prompt: the plain s.e.
    assert one_each.stderr_by_prompt == pytest.approx(one_each.stderr)
    assert pairwise_accuracy([0.5, -2.0]).stderr_by_prompt is None


def test_label_with_fake_target_and_reward_writes_loadable_pairs(tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    counts = label_pairs(build_config(RewardLabelConfig, _label_values(out)))
    assert counts.prompts == 24 and counts.pairs + counts.ties + counts.empty_answer == 24 and counts.pairs > 0
    pairs = load_pairs(str(out)).pairs
    assert len(pairs) == counts.pairs
    gold = FakeReward()
    for p in pairs:
        assert p.chosen_score > p.rejected_score
        assert gold.score([p.prompt, p.prompt], [p.chosen, p.rejected]) == pytest.approx(
            [p.chosen_score, p.rejected_score])
    record = json.loads(progress_path(out).read_text())
    assert record["complete"] and record["counts"]["ties"] == counts.ties and record["prompts_done"] == 24
    with pytest.raises(AlignProError, match="already complete"):
        label_pairs(build_config(RewardLabelConfig, _label_values(out)))


def test_label_with_n_answers_writes_every_untied_pair_of_them(tmp_path: Path) -> None:
    out = tmp_path / "pairs4.jsonl"
    counts = label_pairs(build_config(RewardLabelConfig, _label_values(out, answers_per_prompt=4, n_prompts=6)))
    assert counts.prompts == 6 and counts.pairs + counts.ties + counts.empty_answer == 6 * 6  # C(4, 2) per prompt
    gold = FakeReward()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == counts.pairs
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], []).append(r)
    for prompt, prompt_rows in by_prompt.items():
        # each prompt's rows are the pairs of its 4 answers with different gold scores, the higher one chosen
        answers = {a for r in prompt_rows for a in (r["chosen"], r["rejected"])}
        assert len(answers) <= 4 and len(prompt_rows) <= 6
        for r in prompt_rows:
            assert gold.score([prompt] * 2, [r["chosen"], r["rejected"]]) == [r["chosen_score"], r["rejected_score"]]
            assert r["chosen_score"] > r["rejected_score"]
    assert sum(len(v) for v in by_prompt.values()) > len(by_prompt)  # some prompt gave more than one pair
    with pytest.raises(ConfigError, match="answers_per_prompt' must be >= 2"):
        build_config(RewardLabelConfig, _label_values(tmp_path / "x.jsonl", answers_per_prompt=1))


def test_label_resume_after_an_interruption_equals_a_straight_run(tmp_path: Path) -> None:
    straight = tmp_path / "straight.jsonl"
    label_pairs(build_config(RewardLabelConfig, _label_values(straight)))

    class CrashingGold(FakeReward):
        calls = 0

        def score(self, prompts, answers):
            CrashingGold.calls += 1
            if CrashingGold.calls == 3:
                raise KeyboardInterrupt
            return super().score(prompts, answers)

    cut = tmp_path / "cut.jsonl"
    with pytest.raises(KeyboardInterrupt):
        label_pairs(build_config(RewardLabelConfig, _label_values(cut)), gold=CrashingGold())
    assert json.loads(progress_path(cut).read_text())["prompts_done"] == 10
    with pytest.raises(AlignProError, match="interrupted labelling run"):
        label_pairs(build_config(RewardLabelConfig, _label_values(cut)))
    with pytest.raises(AlignProError, match=r"setting\(s\) \['seed'\] differ"):
        label_pairs(build_config(RewardLabelConfig, _label_values(cut, resume=True, seed=1)))
    with pytest.raises(ConfigError, match=r"setting\(s\) \['seed'\] differ from the run's .*cut.config.yaml"):
        parse_config(RewardLabelConfig, ["--resume", str(cut), "--seed", "1"], "alignpro reward label")
    resumed = parse_config(RewardLabelConfig, ["--out", str(cut), "--resume"], "alignpro reward label")  # the CLI's
    assert (resumed.resume, resumed.n_prompts, resumed.batch_size) == (str(cut), 24, 5)  # its saved settings
    label_pairs(resumed)
    assert cut.read_text() == straight.read_text()


def test_label_with_the_ifeval_gold_keeps_the_instructions(tmp_path: Path) -> None:
    out = tmp_path / "ifeval.jsonl"
    counts = label_pairs(build_config(RewardLabelConfig, _label_values(
        out, prompts="builtin-ifeval:train", n_prompts=16, gold="ifeval", batch_size=8)))
    assert counts.pairs >= 1 and counts.ties >= 1 and counts.prompts == 16
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["instruction_id_list"] and r["gold"] == "ifeval" for r in rows)
    records = load_prompts(str(out)).records  # a pair file is a prompt file with the IFEval instructions
    gold = make_reward("ifeval", records)
    for r in rows:
        assert gold.score([r["prompt"]] * 2, [r["chosen"], r["rejected"]]) == [r["chosen_score"], r["rejected_score"]]
        assert 0 <= r["rejected_score"] < r["chosen_score"] <= 1


def test_label_with_only_ties_is_an_error(tmp_path: Path) -> None:
    class Flat(FakeReward):
        def score(self, prompts, answers):
            return [0.5] * len(prompts)

    with pytest.raises(AlignProError, match="every prompt gave a tie"):
        label_pairs(build_config(RewardLabelConfig, _label_values(tmp_path / "flat.jsonl", n_prompts=4)),
                    target=FakeTarget(), gold=Flat())


# ---------------------------------------------------------------------------------------------------------------
# The command line, settings and specs
# ---------------------------------------------------------------------------------------------------------------


def test_cli_eval_prints_accuracy_with_its_standard_error(minilm_run, tmp_path: Path, capsys) -> None:
    figure = tmp_path / "cal.png"
    code = alignpro_main(["reward", "eval", "--model", str(minilm_run.run), "--pairs",
                          str(minilm_run.run / "heldout.jsonl"), "--figure", str(figure), "--num-threads", "1"])
    out = capsys.readouterr().out
    acc = minilm_run.record["heldout"]
    assert code == 0 and figure.is_file()
    assert f"pairwise accuracy   {acc['accuracy']:.4f} ± {acc['stderr']:.4f}  (n = 7;" in out
    assert alignpro_main(["reward", "eval", "--model", str(minilm_run.run), "--pairs",
                          str(minilm_run.run / "heldout.jsonl"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] == pytest.approx(acc["accuracy"]) and result["n"] == 7


@pytest.mark.parametrize("argv, fragment", [
    (["reward"], "usage: alignpro reward"),
    (["reward", "fit"], "unknown sub-command 'fit' of 'alignpro reward'; valid: train, label, eval"),
    (["reward", "train"], "setting 'pairs' is required: pass --pairs"),
    (["reward", "train", "--pairs", "p.jsonl", "--base", "bert"], "invalid base 'bert'; valid forms: minilm"),
    (["reward", "train", "--pairs", "p.jsonl", "--template", "{answer} only"], "setting 'template'"),
    (["reward", "train", "--pairs", "p.jsonl", "--heldout-fraction", "1"], "setting 'heldout_fraction'"),
    (["reward", "train", "--pairs", "p.jsonl", "--resume", "/nonexistent/run"], "not a reward-model run folder"),
    (["reward", "train", "--pairs", "missing.jsonl", "--out", "{tmp}/r"], "missing.jsonl: preference file not found"),
    (["reward", "label"], "setting 'out' is required: pass --out pairs.jsonl"),
    (["reward", "label", "--out", "p.jsonl", "--gold", "judge"], "invalid reward spec 'judge'"),
    (["reward", "label", "--out", "p.csv"], "setting 'out' must be a .jsonl path"),
    (["reward", "eval", "--pairs", "p.jsonl"], "setting 'model' is required"),
    (["reward", "eval", "--model", "{tmp}", "--pairs", "p.jsonl"], "is not a reward model of `alignpro reward train`"),
])
def test_cli_errors_name_the_setting(argv: list[str], fragment: str, tmp_path: Path, capsys) -> None:
    code = alignpro_main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    captured = capsys.readouterr()
    assert code == 2 and fragment in captured.out + captured.err


def test_resume_may_change_only_runtime_settings(minilm_run, capsys) -> None:
    run = str(minilm_run.run)
    assert alignpro_main(["reward", "train", "--resume", run, "--lr", "0.1"]) == 2
    assert "setting(s) ['lr'] differ from the run's" in capsys.readouterr().err


def test_rm_reward_spec_form() -> None:
    assert check_reward_spec("rm:runs/reward") == "rm:runs/reward"
    assert check_reward_spec("0.5*rm:runs/a+0.5*ifeval") == "0.5*rm:runs/a+0.5*ifeval"
    with pytest.raises(AlignProError, match="rm:<folder of alignpro reward train>"):
        check_reward_spec("rm:")
    with pytest.raises(AlignProError, match="does not exist; train one with `alignpro reward train"):
        make_reward("rm:/nonexistent/reward-run")
    with pytest.raises(ConfigError, match="setting 'base'"):
        build_config(RewardTrainConfig, {"pairs": "p.jsonl", "base": "hf:"})


def test_hf_base_truncates_to_the_models_positions_not_only_the_tokenizers_limit(tiny_bases: Path) -> None:
    """The BERT here has 128 positions while MiniLM's tokenizer allows 512: a long answer is cut to 128 tokens, not
    passed on to crash the position embeddings."""
    scorer = RewardScorer.from_base(f"hf:{tiny_bases / 'bert'}", "Q: {prompt} A: {answer}", 0, "cpu")
    assert scorer.template.max_length == 128
    assert scorer.encode(["Describe tea."], ["tea " * 400])["input_ids"].shape[1] == 128
    assert len(scorer.score(["Describe tea."], ["tea " * 400])) == 1
