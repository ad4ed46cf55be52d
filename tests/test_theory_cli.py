"""Tier 3 (end-to-end CLI, in-process): ``alignpro theory verify | analyse | sweep``."""

import csv
import json
import math

import pytest

from alignpro.cli import main

LN2, LN3 = math.log(2), math.log(3)
# The hand instance of test_theory_tabular.py: at λ = 1/(2 ln 3), β = 1/ln 3 its gap is 1/16, its bound
# ln 2/(2 ln 3) − 1/16, ρ*(·|x) = (1/4, 3/4).
HAND = {"P": [0.25, 0.75], "rho_sft": [[0.5, 0.5], [0.5, 0.5]], "pi_F": [[0.5, 0.5], [0.0, 1.0]],
        "r": [[0.0, 1.0], [0.0, 1.0]], "r_max": 1.0}
# Frozen answers that suit the *other* prompt, and a ρ_sft that rarely swaps: the bound is vacuous for small and
# large λ and informative in between.
SWAP = {"P": [0.5, 0.5], "rho_sft": [[0.95, 0.05], [0.05, 0.95]], "pi_F": [[0.99, 0.01], [0.01, 0.99]],
        "r": [[0.0, 1.0], [1.0, 0.0]], "r_max": 1.0}


def write(tmp_path, data, name="instance.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_verify_json_reports_and_passes(capsys):
    code = main(["theory", "verify", "--instances", "60", "--seed", "3", "--optimiser-instances", "4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"] is True
    assert {"instances", "max_gap_minus_bound", "max_decomposition_error", "lemma1_violations"} <= set(report)
    assert report["instances"] == 60 and report["lemma1_violations"] == 0
    assert report["lemma1_optimiser_instances"] == 4 and report["lemma1_perturbation_instances"] == 60
    assert report["max_gap_minus_bound"] <= 1e-9 * 10  # r_max ≤ 10
    assert report["max_decomposition_error"] < 1e-12


def test_verify_text(capsys):
    assert main(["theory", "verify", "--instances", "20", "--optimiser-instances", "0"]) == 0
    out = capsys.readouterr().out
    assert "max(gap − bound)" in out and "violations 0 / 20" in out and "PASS" in out
    assert "SciPy" not in out  # no optimiser instances asked for


def test_verify_bad_setting_is_a_clear_error(capsys):
    assert main(["theory", "verify", "--instances", "0"]) == 2
    assert "setting 'instances' must be ≥ 1" in capsys.readouterr().err


def test_analyse_text_and_json(tmp_path, capsys):
    path = write(tmp_path, HAND)
    lam, beta = str(1 / (2 * LN3)), str(1 / LN3)
    assert main(["theory", "analyse", "--instance", path, "--lam", lam, "--beta", beta]) == 0
    out = capsys.readouterr().out
    for key in ("gap", "delta1", "delta2", "term1", "term2", "term3", "bound", "objective", "rho_star"):
        assert key in out
    assert "Theorem 1 holds" in out and "x=0: 0.25 0.75" in out
    assert main(["theory", "analyse", "--instance", path, "--lam", lam, "--beta", beta, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["gap"] == pytest.approx(1 / 16, abs=1e-12)
    assert (d["delta1"], d["delta2"]) == pytest.approx((1 / 16, 0.0), abs=1e-12)
    assert (d["term1"], d["term2"]) == pytest.approx((1 / 16, 1 / 4), abs=1e-12)
    assert d["term3"] == pytest.approx(-3 / 8 + LN2 / (2 * LN3), abs=1e-12)
    assert d["bound"] == pytest.approx(LN2 / (2 * LN3) - 1 / 16, abs=1e-12)
    assert d["objective"] == pytest.approx(0.5 + LN2 / (2 * LN3), abs=1e-12)
    assert [v for row in d["rho_star"] for v in row] == pytest.approx([0.25, 0.75, 0.25, 0.75], abs=1e-12)


def test_analyse_reads_a_yaml_config(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"instance: {write(tmp_path, HAND)}\nlam: 2.0\njson: true\n")
    assert main(["theory", "analyse", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["lam"] == 2.0


@pytest.mark.parametrize("change, message", [
    ({"rho_sft": [[0.5, 0.4], [0.5, 0.5]]}, "row 0 of 'rho_sft' sums to 0.9, not 1"),
    ({"pi_F": [[1.5, -0.5], [0.0, 1.0]]}, "'pi_F' has a negative entry -0.5"),
    ({"r": [[0.0, 2.0], [0.0, 1.0]]}, "r[0][1] = 2 outside [0, r_max] = [0, 1]"),
    ({"rho_sft": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}, "'rho_sft' must have shape (n, n) = (2, 2)"),
    ({"r": [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]}, "'r' must have the shape of 'pi_F' (2, 2)"),
    ({"r_max": None}, "'r_max' must be a number"),
])
def test_analyse_invalid_instance_one_clear_error(tmp_path, capsys, change, message):
    path = write(tmp_path, {**HAND, **change})
    assert main(["theory", "analyse", "--instance", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignpro theory: error: instance file") and message in err
    assert len(err.splitlines()) == 1  # one line, no traceback


def test_analyse_file_problems(tmp_path, capsys):
    missing_key = write(tmp_path, {k: v for k, v in HAND.items() if k != "P"}, "m.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    for argv, message in (
        (["--instance", missing_key], "missing ['P']"),
        (["--instance", str(bad_json)], "is not valid JSON"),
        (["--instance", str(tmp_path / "none.json")], "does not exist"),
        ([], "setting 'instance' is required"),
        (["--instance", missing_key, "--lam", "0"], "setting 'lam' must be a finite number > 0"),
    ):
        assert main(["theory", "analyse", *argv]) == 2
        assert message in capsys.readouterr().err


def test_sweep_writes_png_and_csv(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["theory", "sweep", "--instance", write(tmp_path, SWAP), "--out", str(out), "--beta", "0.1",
            "--points", "41"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "vacuous" in text
    png = (out / "sweep.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    with (out / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 41
    assert list(rows[0]) == ["lam", "gap", "delta1", "delta2", "term1", "term2", "term3", "bound", "kl",
                             "objective", "vacuous"]
    lams = [float(r["lam"]) for r in rows]
    assert lams[0] == pytest.approx(1e-4) and lams[-1] == pytest.approx(1e4)
    assert all(float(r["gap"]) <= float(r["bound"]) + 1e-12 for r in rows)
    vacuous = [r["vacuous"] == "1" for r in rows]
    assert vacuous[0] and vacuous[-1] and not all(vacuous)  # vacuous at both ends, informative in between
    assert all((float(r["bound"]) >= 1.0) == v for r, v in zip(rows, vacuous))


def test_sweep_bad_range(tmp_path, capsys):
    argv = ["theory", "sweep", "--instance", write(tmp_path, HAND), "--out", str(tmp_path), "--lam-min", "10",
            "--lam-max", "1"]
    assert main(argv) == 2
    assert "'lam_max' (1) must be greater than 'lam_min' (10)" in capsys.readouterr().err


def test_theory_usage(capsys):
    assert main(["theory"]) == 2
    assert main(["theory", "--help"]) == 0
    assert "verify" in capsys.readouterr().out
    assert main(["theory", "prove"]) == 2
    assert "unknown sub-command 'prove'" in capsys.readouterr().err
