"""The CLI contract: verbs, --json output, exit codes, one-line errors for bad input, the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import isoflop
from isoflop.cli import build_parser, main
from isoflop.rundir import RunDir
from tests.conftest import tiny_overrides


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "isoflop", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    env = {"ISOFLOP_CACHE": str(root / "cache")}
    result = cli("train", "tiny", "--out", run, *_sets(tiny_overrides(corpus_dir)), env=env)
    assert result.returncode == 0, result.stderr
    assert "bits/byte" in result.stdout
    return run, env


def test_every_verb_has_help():
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) == {"train", "info", "eval", "sample", "export", "fit", "plan", "frontier", "report", "tokenizer", "upcycle", "expand",
                           "sweep"}
    for verb in verbs:
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0


def test_info_json_is_one_object(capsys):
    assert main(["info", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["params"]) >= {"total", "embedding", "non_embedding", "active"}
    assert out["flops_per_token"]["training"] == 3 * out["flops_per_token"]["forward"]
    assert out["plan"]["steps"] > 0


def _info(recipe: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["info", recipe, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_reports_conditional_compute_savings(capsys: pytest.CaptureFixture[str]) -> None:
    """What `info` shows for the sparse recipes: moe-tiny's tokens pass through 2 of 8 experts, so its active
    parameters are below its total; mod-tiny's routed blocks see 12.5 % of the tokens, so a token's training
    FLOPs are below tiny's at the same seq_len. An info that printed total as active, or dense FLOPs, fails."""
    moe = _info("moe-tiny", capsys)
    assert moe["params"]["active"] < moe["params"]["total"]
    mod, tiny = _info("mod-tiny", capsys), _info("tiny", capsys)
    assert mod["flops_per_token"]["seq_len"] == tiny["flops_per_token"]["seq_len"]
    assert mod["flops_per_token"]["training"] < tiny["flops_per_token"]["training"]


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, capsys):
    assert main(["train", "tiny", "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "tokens/step" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


BAD_INPUTS = [
    (["--set", "model.d_modle=64"], "model.d_modle"),
    (["--set", "model.d_model=wide"], "model.d_model"),
    (["--set", "model.n_heads=3"], "model.n_heads"),
    (["--set", "optim.lr=-0.1"], "optim.lr"),
    (["--set", "data.corpus=/no/such/corpus"], "/no/such/corpus"),
    (["--set", "train.horizon.tokens=5"], "train.horizon"),
]


@pytest.mark.parametrize("extra,named", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(tmp_path, extra, named):
    result = cli("train", "tiny", "--out", tmp_path / "r", *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_unknown_recipe_and_resume_without_checkpoint(tmp_path):
    result = cli("train", "tinyy", "--out", tmp_path / "r")
    assert result.returncode == 2 and "did you mean 'tiny'" in result.stderr
    result = cli("train", "tiny", "--out", tmp_path / "r", "--resume")
    assert result.returncode == 2 and "--resume" in result.stderr and len(result.stderr.splitlines()) == 1


def test_out_dir_holding_another_run_is_refused(trained_run):
    run, env = trained_run
    before = sorted(p.name for p in run.rglob("*"))
    result = cli("train", "tiny", "--out", run, env=env)
    assert result.returncode == 2 and "already holds a run" in result.stderr
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing lost or rewritten


def test_eval_json(trained_run):
    run, env = trained_run
    result = cli("eval", run, "--json", env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    recorded = json.loads((run / "run.json").read_text())
    assert out["val_loss"] == pytest.approx(recorded["val_loss"], rel=1e-6)
    assert out["val_bpb"] == pytest.approx(recorded["val_bpb"], rel=1e-6)


def test_sample_is_seeded_and_cache_free_path_agrees(trained_run):
    run, env = trained_run
    args = ("sample", run, "--prompt", "def ", "--max-new-tokens", "40", "--seed", "3")
    a, b, c = cli(*args, env=env), cli(*args, env=env), cli(*args, "--no-cache", env=env)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout == c.stdout and a.stdout.startswith("def ")


def test_python_api(trained_run):
    run, _ = trained_run
    model = isoflop.load_model(run)
    tokenizer = isoflop.load_tokenizer(run)
    assert not model.training
    tokens = torch.as_tensor(tokenizer.encode(b"import self"), dtype=torch.long).view(1, -1)
    logits = model(tokens)
    assert logits.shape == (1, tokens.shape[1], model.cfg.vocab_size)
    assert tokenizer.decode(tokens[0].tolist()) == b"import self"


def test_export_loads_in_transformers(trained_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    run, env = trained_run
    result = cli("export", run, "--format", "hf", "--out", tmp_path / "hf", env=env)
    assert result.returncode == 0, result.stderr
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model = isoflop.load_model(run)
    tokens = torch.randint(0, 257, (2, 20))
    with torch.no_grad():
        assert torch.allclose(hf(tokens).logits, model(tokens), atol=1e-4)


def test_resume_without_a_recipe_reads_the_runs_config(trained_run):
    run, env = trained_run
    result = cli("train", "--out", run, "--resume", env=env)  # already complete: reports it, changes nothing
    assert result.returncode == 0, result.stderr
    assert f"{json.loads((run / 'run.json').read_text())['val_bpb']:.4f} bits/byte" in result.stdout


def test_init_from_bad_input_exits_2_with_one_line(trained_run, tmp_path, capsys):
    run, _ = trained_run
    new = tmp_path / "new"
    cases = [
        (["--init-from", str(tmp_path / "nothing")], "not a run directory"),
        (["--init-from", f"{run}@5"], "no checkpoint at step 5 (has [8, 12])"),
        (["--init-from", f"{run}@x5"], "expected RUN or RUN@STEP"),
        (["--init-data"], "--init-data: needs --init-from RUN[@STEP]"),
    ]
    for extra, named in cases:
        assert main(["train", "tiny", "--out", str(new), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], err
        assert not new.exists()


def test_init_from_a_run_at_a_step(trained_run, tmp_path, corpus_dir, cache_dir, capsys):
    run, _ = trained_run
    new = tmp_path / "new"
    args = ["train", "tiny", "--out", str(new), "--init-from", f"{run}@8", "--init-optimizer", "--init-data",
            *_sets(tiny_overrides(corpus_dir, 12))]
    assert main(args) == 0
    init = RunDir(new).read_init()
    assert (init["step"], init["optimizer"], init["data"]) == (8, True, True)
    # from the run's own step 8 with everything: the same steps 9..12 as the run itself
    losses = [{r["step"]: r["loss"] for r in RunDir(p).metrics.train_records()} for p in (run, new)]
    assert losses[0] == losses[1]
