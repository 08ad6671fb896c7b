"""`isoflop plan`: one JSON object with the contract's keys, a readable table, a plot, and exit 2 with one line
for each bad input (run in-process through `isoflop.cli.main`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from isoflop.cli import main
from isoflop.science.laws import PRESETS

KEYS = {"flops", "N_opt", "D_opt", "tokens_per_param", "loss"}


def run(capsys, *args):
    """(exit code, stdout, stderr) of `isoflop plan ARGS`, argparse's own exits included."""
    try:
        code = main(["plan", *map(str, args)])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def plan_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one object: json.loads rejects anything after it


@pytest.fixture
def fit_file(tmp_path):
    law = PRESETS.get("epoch")
    rng = np.random.default_rng(0)
    theta = np.array([math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta])
    sd = np.array([0.25, 0.5, 0.014, 0.015, 0.02])
    cov = np.diag(sd**2)
    cov[0, 3] = cov[3, 0] = 0.9 * sd[0] * sd[3]
    cov[1, 4] = cov[4, 1] = 0.95 * sd[1] * sd[4]
    samples = [dict(E=math.exp(t[2]), A=math.exp(t[0]), B=math.exp(t[1]), alpha=t[3], beta=t[4])
               for t in rng.multivariate_normal(theta, cov, size=200)]
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({**law.to_dict(), "a": law.a, "b": law.b, "objective": 1e-3, "success": True,
                                "n_points": 240, "samples": samples}))
    return path


def test_json_has_the_contract_keys(capsys):
    out = plan_json(capsys, "--flops", "5.88e23")
    assert KEYS <= set(out) and out["flops"] == 5.88e23
    assert out["law"]["name"] == "epoch" and out["tokens_per_param"] == pytest.approx(18.3, abs=0.1)
    assert 6 * out["N_opt"] * out["D_opt"] == pytest.approx(out["flops"], rel=1e-12)


def test_gpu_hours_budget_and_every_section(capsys):
    out = plan_json(capsys, "--gpu-hours", 1e6, "--mfu", 0.4, "--peak-flops", 989e12, "--law", "hoffmann-tex",
                    "--inference-tokens", 2e12, "--loss", 2.0, "--unique-tokens", 1e11, "--overhead", "--shape")
    assert out["flops"] == pytest.approx(1e6 * 3600 * 989e12 * 0.4)
    assert out["budget"] == {"gpu_hours": 1e6, "mfu": 0.4, "peak_flops": 989e12}
    assert out["inference_aware"]["N"] < out["inference_aware"]["chinchilla_N"]
    assert out["data_constrained"]["epochs"] > 1
    assert len(out["overhead"]["rows"]) >= 5 and out["overhead"]["k_N_min"] > 0
    assert abs(out["shape"]["params"]["total"] / out["N_opt"] - 1) <= 0.05


def test_custom_law_and_overhead_values(capsys):
    out = plan_json(capsys, "--flops", 1e22, "--law", "E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28",
                    "--overhead", "0.5,0.05")
    half, tiny = out["overhead"]["rows"]
    assert half["k_D"] == pytest.approx(2.416, abs=1e-3) and tiny["overhead"] is None


def test_fit_with_bootstrap_gives_intervals_and_a_plot(capsys, fit_file, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "plan.png"
    out = plan_json(capsys, "--flops", 5.88e23, "--fit", fit_file, "--plot", png)
    iv = out["intervals"]
    assert iv["method"] == "mvn" and iv["level"] == 0.8
    for key in KEYS - {"flops"}:
        assert iv[key][0] < out[key] < iv[key][1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out["plot"] == str(png)


def test_human_table(capsys, fit_file):
    code, out, err = run(capsys, "--flops", 1e21, "--fit", fit_file, "--overhead", "--inference-tokens", 1e12,
                         "--loss", 2.3, "--unique-tokens", 1e10, "--shape", "--vocab-size", 50_000)
    assert code == 0, err
    for text in ("N_opt (params)", "tokens/param", "80% interval", "inference-aware", "data-constrained",
                 "smaller and longer", "model shape", "--set model.d_model="):
        assert text in out


BAD = [
    (["--flops", "-1e20"], "--flops"),
    (["--flops", "0"], "--flops"),
    (["--flops", "inf"], "--flops"),
    (["--flops", "lots"], "--flops"),
    ([], "--flops"),
    (["--gpu-hours", "100", "--mfu", "1.5", "--peak-flops", "1e15"], "--mfu"),
    (["--gpu-hours", "100", "--mfu", "0", "--peak-flops", "1e15"], "--mfu"),
    (["--gpu-hours", "100", "--mfu", "0.4"], "--peak-flops"),
    (["--gpu-hours", "-3", "--mfu", "0.4", "--peak-flops", "1e15"], "--gpu-hours"),
    (["--flops", "1e22", "--gpu-hours", "100"], "--flops"),
    (["--flops", "1e22", "--law", "chinchila"], "chinchila"),
    (["--flops", "1e22", "--law", "E=1.7,A=400,B=400,alpha=0.3"], "beta"),
    (["--flops", "1e22", "--fit", "/no/such/fit.json"], "/no/such/fit.json"),
    (["--flops", "1e22", "--inference-tokens", "1e12"], "--loss"),
    (["--flops", "1e22", "--loss", "2.0"], "--inference-tokens"),
    (["--flops", "1e22", "--inference-tokens", "1e12", "--loss", "1.5"], "--loss"),
    (["--flops", "1e22", "--unique-tokens", "-5"], "--unique-tokens"),
    (["--flops", "1e22", "--overhead", "half"], "--overhead"),
    (["--flops", "1e22", "--law", "kaplan", "--overhead"], "--overhead"),
    (["--flops", "1e12", "--shape"], "--shape"),
    (["--flops", "1e22", "--plot", "/no/such/dir/plan.png"], "/no/such/dir/plan.png"),
    (["--flops", "1e22", "--level", "1.5"], "--level"),
]


@pytest.mark.parametrize("args,named", BAD)
def test_bad_input_exits_2_with_one_line(capsys, args, named):
    code, out, err = run(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("content,named", [("{not json", "cannot read"), ('{"E": 1.8}', "A: missing"),
                                           ('{"E": 1.8, "A": 480, "B": 2000, "alpha": 0.3}', "beta")])
def test_bad_fit_file(capsys, tmp_path, content, named):
    path = tmp_path / "fit.json"
    path.write_text(content)
    code, out, err = run(capsys, "--flops", 1e22, "--fit", path)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and named in err and str(path) in err
    code, _, err = run(capsys, "--flops", 1e22, "--fit", path, "--law", "epoch")
    assert code == 2 and "--law or --fit" in err


def test_entry_point():
    result = subprocess.run([sys.executable, "-m", "isoflop", "plan", "--flops", "1e21", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert KEYS <= set(json.loads(result.stdout))


def test_help_names_the_default_law(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan", "--help"])
    assert e.value.code == 0 and "Epoch AI" in capsys.readouterr().out


def test_inference_aware_question_needs_no_budget(capsys):
    # the model of least lifetime compute reaching a loss depends on no training budget (Sardana et al.'s
    # README example: N* = 2.418e10, D* = 2.657e12)
    law = "E=1.69,A=406.4,B=410.7,alpha=0.336,beta=0.283"
    out = plan_json(capsys, "--loss", 1.947, "--inference-tokens", 2e12, "--law", law)
    assert not KEYS & set(out) and out["law"]["name"] == law
    assert out["inference_aware"]["N"] == pytest.approx(2.418e10, rel=1e-3)
    assert out["inference_aware"]["D"] == pytest.approx(2.657e12, rel=1e-3)
    code, text, err = run(capsys, "--loss", 1.947, "--inference-tokens", 2e12, "--law", law)
    assert code == 0 and "inference-aware" in text and "compute-optimal" not in text and "budget" not in text


@pytest.mark.parametrize("extra,named", [(["--unique-tokens", "1e10"], "--unique-tokens"),
                                         (["--overhead"], "--overhead"), (["--shape"], "--shape")])
def test_other_questions_still_need_a_budget(capsys, extra, named):
    code, out, err = run(capsys, "--loss", 2.0, "--inference-tokens", 1e12, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and named in lines[0] and "budget" in lines[0]
