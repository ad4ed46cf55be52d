"""Bad inputs a new user gives: each is one clear error on stderr (naming the input and what would be valid) and
exit status 2 from the CLI, never a traceback and never a silently wrong number."""

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from alignpro.backends.options import local_or_hub
from alignpro.cli import main
from alignpro.diskcache import DiskCache
from alignpro.errors import AlignProError, ConfigError
from alignpro.fileio import check_run_folder, make_run_folder
from alignpro.specs import make_reward

FAKES = ["--prompter", "fake", "--target", "fake", "--reward", "fake"]
DEMO = ["demo", "--target", "fake", "--prompter", "fake", "--trained-prompter", "", "--oracle", "",
        "--guard-reward", "", "--n-prompts", "4", "--k", "2", "--m", "1", "--n-fresh", "1"]
ME = "tests.test_bad_inputs"


def _fails(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI: it must exit 2 with one error line on stderr (after any progress bars), no traceback; returns
    that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert "Traceback" not in err and [line for line in lines if line.startswith("alignpro ")] == lines[-1:]
    assert lines[-1].startswith(f"alignpro {argv[0]}: error: ")
    return lines[-1]


def _pairs(tmp_path: Path, prompts: list[str]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": "A kind, helpful answer.", "rejected": "No."}) + "\n"
                            for p in prompts))
    return path


# ---------------------------------------------------------------------------------------------------------------
# A file where the run folder (--out) must be
# ---------------------------------------------------------------------------------------------------------------


def _out_argv(command: str, tmp_path: Path) -> list[str]:
    return {
        "demo": DEMO + ["--reward", "fake"],
        "evaluate": ["evaluate", "--prompters", "fake", "--targets", "fake", "--reward", "fake", "--n", "2",
                     "--no-progress"],
        "train": ["train", "--target", "fake", "--reward", "fake", "--steps", "1"],
        "reward train": ["reward", "train", "--pairs", str(_pairs(tmp_path, ["a?", "b?", "c?"]))],
    }[command]


@pytest.mark.parametrize("command", ["demo", "evaluate", "train", "reward train"])
def test_a_file_as_out_is_one_error_naming_the_setting(command: str, tmp_path: Path, capsys) -> None:
    file = tmp_path / "results.txt"
    file.write_text("not a folder")
    argv = _out_argv(command, tmp_path)
    name = command.split()[0]
    assert _fails(argv + ["--out", str(file)], capsys) == (
        f"alignpro {name}: error: setting 'out': '{file}' is a file; --out must name a folder: an existing one or a "
        "new path (it is created)")
    assert _fails(argv + [f"--out={file / 'run'}"], capsys) == (
        f"alignpro {name}: error: setting 'out': '{file}' is a file, so '{file / 'run'}' cannot be a folder; --out "
        "must name a folder: an existing one or a new path (it is created)")
    assert file.read_text() == "not a folder"


def test_run_folder_helpers(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    assert make_run_folder(tmp_path / "new" / "run").is_dir()
    assert check_run_folder(tmp_path / "new") == tmp_path / "new"
    with pytest.raises(ConfigError, match=r"^setting 'model_dir': '.*/f' is a file, so '.*/f/a/b' cannot be a "
                                          r"folder; --model-dir must name a folder"):
        make_run_folder(tmp_path / "f" / "a" / "b", "model_dir")
    assert not (tmp_path / "f").is_dir()


def test_a_file_error_not_from_a_setting_is_reported_without_naming_one(tmp_path: Path, capsys, monkeypatch) -> None:
    """A folder the command makes from no flag (here a fixed one inside the run folder) that a file blocks."""
    import alignpro.demo

    blocked = tmp_path / "elsewhere"
    blocked.write_text("")

    def run_demo(cfg, **kw):
        (blocked / "x").mkdir(parents=True)

    monkeypatch.setattr(alignpro.demo, "run_demo", run_demo)
    assert _fails(DEMO + ["--reward", "fake", "--out", str(tmp_path / "run")], capsys) == (
        f"alignpro demo: error: '{blocked}' is a file, so '{blocked / 'x'}' cannot be a folder; give a folder: an "
        "existing one or a new path (it is created)")


def test_only_a_folder_being_made_is_reported_as_one(tmp_path: Path, monkeypatch) -> None:
    """Reading a path through a file is not a folder setting's fault: that error is not relabelled."""
    import alignpro.demo

    blocked = tmp_path / "elsewhere"
    blocked.write_text("")
    monkeypatch.setattr(alignpro.demo, "run_demo", lambda cfg, **kw: (blocked / "x.jsonl").read_text())
    with pytest.raises(NotADirectoryError):
        main(DEMO + ["--reward", "fake", "--out", str(blocked / "x.jsonl")])


# ---------------------------------------------------------------------------------------------------------------
# evaluate --cache that is not a cache
# ---------------------------------------------------------------------------------------------------------------


def _other_db(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir() or p, "is a folder"),
    (lambda p: p.write_text("key,value\n") and p, "is not a sqlite cache file (file is not a database)"),
    (_other_db, "is a sqlite database but not an alignpro cache (its tables: ['users'])"),
])
def test_evaluate_cache_that_is_not_a_cache(make, message: str, tmp_path: Path, capsys) -> None:
    cache = make(tmp_path / "cache.db")
    argv = _out_argv("evaluate", tmp_path) + ["--out", str(tmp_path / "run"), "--cache", str(cache)]
    assert _fails(argv, capsys) == (f"alignpro evaluate: error: setting 'cache': '{cache}' {message}; give a cache "
                                    "file written by alignpro, or a new file path (it is created)")


def test_a_cache_alignpro_wrote_reopens_with_its_values(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "sub" / "cache.sqlite")
    cache.put("answers", "k", {"text": "hi"})
    cache.close()
    again = DiskCache(tmp_path / "sub" / "cache.sqlite")
    assert again.get("answers", "k") == {"text": "hi"} and len(again) == 1
    again.close()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"'.*/file' is a file, so '.*/file/c.sqlite' cannot be made inside it"):
        DiskCache(tmp_path / "file" / "c.sqlite")


# ---------------------------------------------------------------------------------------------------------------
# python: rewards of the wrong shape, and NaN/inf from any reward
# ---------------------------------------------------------------------------------------------------------------


def one_argument(prompts):
    return [0.0] * len(prompts)


def three_arguments(prompts, answers, extra):
    return [0.0] * len(prompts)


def strings(prompts, answers):
    return ["good"] * len(answers)


def one_number(prompts, answers):
    return 1.0


def too_few(prompts, answers):
    return [1.0]


def nan_reward(prompts, answers):
    return [float("nan")] * len(answers)


def inf_on_b(prompts, answers):
    return [float("inf") if p == "b" else 1.0 for p in prompts]


EXPECTED = ("(prompts: list[str], answers: list[str]) -> list[float]: one finite number per (prompt, answer) pair, "
            "in order")


@pytest.mark.parametrize("function, message", [
    ("one_argument", "'one_argument(prompts)' cannot be called with (prompts, answers); a python: reward must be"),
    ("three_arguments", "'three_arguments(prompts, answers, extra)' cannot be called with (prompts, answers); a "
                        "python: reward must be"),
])
def test_python_reward_with_the_wrong_signature_is_refused_when_built(function: str, message: str) -> None:
    with pytest.raises(AlignProError) as err:
        make_reward(f"python:{ME}:{function}")
    assert str(err.value) == f"reward 'python:{ME}:{function}': {message} {EXPECTED}"


@pytest.mark.parametrize("function, message", [
    ("strings", "returned str 'good' at index 0; it must be"),
    ("one_number", "returned a float; it must be"),
    ("too_few", "returned 1 scores for 2 pairs; it must be"),
])
def test_python_reward_returning_the_wrong_thing_says_what_it_returned(function: str, message: str) -> None:
    reward = make_reward(f"python:{ME}:{function}")
    with pytest.raises(AlignProError) as err:
        reward.score(["a", "b"], ["x", "y"])
    assert str(err.value) == f"reward 'python:{ME}:{function}' {message} {EXPECTED}"


def test_python_reward_errors_through_the_cli(capsys) -> None:
    assert _fails(["score", "--reward", f"python:{ME}:one_argument", "--prompt", "hi", "--answer", "yo"],
                  capsys).endswith(EXPECTED)
    assert _fails(["score", "--reward", f"python:{ME}:strings", "--prompt", "hi", "--answer", "yo"],
                  capsys) == f"alignpro score: error: reward 'python:{ME}:strings' returned str 'good' at index 0; " \
                             f"it must be {EXPECTED}"


def test_nan_reward_through_score_is_an_error_naming_the_reward_and_the_pair(capsys) -> None:
    assert _fails(["score", "--reward", f"python:{ME}:nan_reward", "--prompt", "hi", "--answer", "yo"], capsys) == (
        f"alignpro score: error: reward 'python:{ME}:nan_reward' gave nan for pair 0 of 1 (prompt 'hi'); a reward "
        "must be a finite number")


def test_nan_reward_in_the_demo_is_an_error_not_a_nan_report(tmp_path: Path, capsys) -> None:
    err = _fails(DEMO + ["--reward", f"python:{ME}:nan_reward", "--out", str(tmp_path / "demo")], capsys)
    assert err.startswith(f"alignpro demo: error: reward 'python:{ME}:nan_reward' gave nan for pair 0 of ")
    assert err.endswith("; a reward must be a finite number")
    assert not (tmp_path / "demo" / "metrics.json").exists()


def test_every_term_of_a_mix_is_checked_and_named() -> None:
    reward = make_reward(f"0.5*fake+0.5*python:{ME}:inf_on_b")
    with pytest.raises(AlignProError) as err:
        reward.score(["a", "b"], ["x", "y"])
    assert str(err.value) == (f"reward 'python:{ME}:inf_on_b' gave inf for pair 1 of 2 (prompt 'b'); a reward must "
                              "be a finite number")
    assert make_reward(f"python:{ME}:inf_on_b").score(["a", "c"], ["x", "y"]) == [1.0, 1.0]  # finite: unchanged


# ---------------------------------------------------------------------------------------------------------------
# hf: paths that do not exist
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["/nonexistent", "./runs/none", "../none", "~/no-such-alignpro-folder",
                                 "runs/train/final"])
def test_a_path_that_does_not_exist_is_no_such_folder(ref: str) -> None:
    with pytest.raises(AlignProError) as err:
        local_or_hub(ref)
    assert str(err.value) == (f"no such folder: '{ref}' (a model given by path must be an existing folder; a Hugging "
                              "Face hub id looks like org/name)")


def test_hub_ids_and_existing_folders_pass(tmp_path: Path) -> None:
    assert local_or_hub("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert local_or_hub(str(tmp_path)) == str(tmp_path)


def test_hf_nonexistent_through_the_cli(capsys) -> None:
    assert _fails(["rewrite", "--prompter", "hf:/nonexistent", "hello"], capsys) == (
        "alignpro rewrite: error: no such folder: '/nonexistent' (a model given by path must be an existing folder; "
        "a Hugging Face hub id looks like org/name)")


# ---------------------------------------------------------------------------------------------------------------
# reward train with nothing to hold out
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompts", [["Why?"], ["Why?", "Why?", "Why?"]])
def test_reward_train_with_one_prompt_refuses_to_hold_out_nothing(prompts: list[str], tmp_path: Path, capsys
                                                                  ) -> None:
    pairs = _pairs(tmp_path, prompts)
    assert _fails(["reward", "train", "--pairs", str(pairs), "--out", str(tmp_path / "rm")], capsys) == (
        f"alignpro reward: error: {pairs}: {len(prompts)} pair(s) of 1 distinct prompt(s) leave nothing to hold out "
        "(setting 'heldout_fraction' = 0.2): the held-out split needs pairs of at least 2 distinct prompts; add "
        "pairs, or pass --heldout-fraction 0 to train on all of them with no held-out measure")
    assert not (tmp_path / "rm").exists()


# ---------------------------------------------------------------------------------------------------------------
# serve on a port in use
# ---------------------------------------------------------------------------------------------------------------


def test_serve_on_a_port_in_use_is_one_error(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _fails(["serve", "--prompter", "fake", "--target", "fake", "--port", str(port)], capsys) == (
            f"alignpro serve: error: setting 'port': port {port} on 127.0.0.1 is already in use; choose another "
            "--port (0 = any free port) or stop the server holding it")
