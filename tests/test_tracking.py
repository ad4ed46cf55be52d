"""``report_to``: the training curves in RUN/metrics.jsonl and in TensorBoard / trackio (:mod:`alignpro.train.tracking`)."""

import importlib.machinery
import json
import sys
import types

import pytest

from alignpro.train.tracking import RunLog, scalars


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_are_the_numeric_values_but_step():
    row = {"step": 3, "loss": 0.5, "n": 4, "flag": True, "name": "x", "nan": float("nan"), "none": None}
    assert scalars(row) == {"loss": 0.5, "n": 4.0}


def test_tensorboard_gets_every_scalar_and_a_resume_purges_the_steps_it_reruns(tmp_path):
    pytest.importorskip("tensorboard")
    log = RunLog(tmp_path, ["tensorboard"], prefix="sft", config={})
    for step, loss in ((1, 2.0), (2, 1.5), (3, 1.25)):
        log.log({"step": step, "loss": loss, "samples_per_s": 10.0 * step})
    log.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert _events(tmp_path / "tensorboard") == {"sft/loss": [(1, 2.0), (2, 1.5), (3, 1.25)],
                                                 "sft/samples_per_s": [(1, 10.0), (2, 20.0), (3, 30.0)]}
    resumed = RunLog(tmp_path, ["tensorboard"], prefix="sft", config={}, first_step=3)  # from checkpoint 2
    resumed.log({"step": 3, "loss": 1.0, "samples_per_s": 5.0})
    resumed.close()
    assert _events(tmp_path / "tensorboard")["sft/loss"] == [(1, 2.0), (2, 1.5), (3, 1.0)]


def test_trackio_is_given_the_run_its_settings_and_every_step(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("trackio")
    fake.__spec__ = importlib.machinery.ModuleSpec("trackio", None)
    fake.init = lambda **kw: calls.append(("init", kw))
    fake.log = lambda values, step: calls.append(("log", values, step))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, "trackio", fake)
    log = RunLog(tmp_path / "my-run", ["trackio"], prefix="reward", config={"lr": 0.1})
    (tmp_path / "my-run").mkdir()
    log.log({"step": 1, "loss": 0.7, "template": "chat"})
    log.close()
    assert calls == [("init", {"project": "alignpro", "name": "my-run", "config": {"lr": 0.1}, "resume": "allow"}),
                     ("log", {"reward/loss": 0.7}, 1), ("finish",)]
    assert not (tmp_path / "my-run" / "tensorboard").exists()


def test_a_disabled_log_writes_nothing(tmp_path):
    log = RunLog(tmp_path, ["tensorboard"], prefix="train", config={}, enabled=False)
    log.log({"step": 1, "loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_real_trackio_stores_every_step_locally(tmp_path, monkeypatch):
    """With trackio installed (not a dependency: `pip install trackio`), the run's steps land in its local
    database, no hub needed (checked with trackio 0.43.0)."""
    import sqlite3

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    if "trackio" in sys.modules:
        pytest.skip("trackio was imported before TRACKIO_DIR could be set")
    pytest.importorskip("trackio")
    (tmp_path / "my-run").mkdir()
    log = RunLog(tmp_path / "my-run", ["trackio"], prefix="train", config={"lr": 0.1})
    for step in (1, 2):
        log.log({"step": step, "loss": 1.0 / step})
    log.close()
    (db,) = (tmp_path / "trackio").glob("alignpro.db")
    rows = sqlite3.connect(db).execute("select run_name, step, metrics from metrics order by step").fetchall()
    assert [(name, step, json.loads(m)) for name, step, m in rows] == [
        ("my-run", 1, {"train/loss": 1.0}), ("my-run", 2, {"train/loss": 0.5})]
