"""records: run directories and tables in, (N, D, C, L) points and loss curves out; one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from isoflop.science.records import (
    Curve,
    RecordsError,
    load_cost_curves,
    load_curves,
    load_records,
    parse_columns,
)


def make_run(folder, *, n_total=1_000_000, n_non_embedding=800_000, tokens_per_step=1024, flops_per_token=None,
             steps=10, val_loss=3.0, complete=True, world_size=1):
    """A fabricated run directory with the fields train/run.py writes (run_record) and metrics.jsonl records."""
    flops_per_token = flops_per_token or 6 * n_total
    folder.mkdir(parents=True)
    plan = {"steps": steps, "world_size": world_size, "tokens_per_step": tokens_per_step,
            "tokens": steps * tokens_per_step, "flops_per_token": flops_per_token,
            "flops": float(steps * tokens_per_step * flops_per_token),
            "params": {"total": n_total, "non_embedding": n_non_embedding, "embedding": n_total - n_non_embedding,
                       "active": n_total}}
    (folder / "config.json").write_text("{}")
    (folder / "plan.json").write_text(json.dumps(plan))
    lines = []
    for step in range(1, steps + 1):
        lines.append({"kind": "train", "step": step, "loss": 5.0 / step ** 0.3, "lr": 1e-3,
                      "tokens": step * tokens_per_step, "flops": step * tokens_per_step * flops_per_token,
                      "tokens_per_s": 1e4, "elapsed_s": 2.0 * step})
        if step % 5 == 0:
            lines.append({"kind": "eval", "step": step, "val_loss": 5.1 / step ** 0.3, "val_bpb": 1.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if complete:
        record = {"N_total": n_total, "N_active": n_total, "N_non_embedding": n_non_embedding,
                  "N_embedding": n_total - n_non_embedding, "D_tokens": plan["tokens"], "D_bytes": 4 * plan["tokens"],
                  "flops": plan["flops"], "flops_per_token": flops_per_token, "steps": steps, "seq_len": 32,
                  "val_loss": val_loss, "val_bpb": 1.2, "wall_time_s": 2.0 * steps, "world_size": world_size,
                  "device": "cpu", "tokenizer": "byte", "vocab_size": 256, "torch": "2.5"}
        (folder / "run.json").write_text(json.dumps(record))
    return folder


# ---------------------------------------------------------------------------------------------- points


def test_run_directory_point(tmp_path):
    run = make_run(tmp_path / "r1", flops_per_token=7_000_000)
    r = load_records([run])
    assert len(r) == 1 and r.run == ("r1",)
    assert r.N[0] == 1_000_000 and r.D[0] == 10 * 1024 and r.L[0] == 3.0
    assert r.C[0] == 10 * 1024 * 7_000_000  # the recorded FLOPs, not 6ND
    assert load_records([run], n_key="N_non_embedding").N[0] == 800_000
    assert load_records([run], columns="N=N_non_embedding,L=val_bpb").L[0] == 1.2


def test_sweep_folder_reads_complete_runs(tmp_path):
    for i, n in enumerate([1e6, 2e6, 4e6]):
        make_run(tmp_path / "sweep" / f"run{i}", n_total=int(n), val_loss=3.0 - i / 10)
    r = load_records([tmp_path / "sweep"], min_points=3)
    assert r.run == ("run0", "run1", "run2")
    np.testing.assert_allclose(r.L, [3.0, 2.9, 2.8])


def test_csv_with_mapping_derives_D(tmp_path):
    path = tmp_path / "epoch.csv"
    path.write_text("x,Model Size,Training FLOP,loss\n1,1e8,6e18,3.0\n2,2e8,1.2e19,2.9\n")
    r = load_records([path], columns="N=Model Size,C=Training FLOP,L=loss")
    np.testing.assert_allclose(r.D, r.C / (6 * r.N))
    np.testing.assert_allclose(r.D, [1e10, 1e10])
    assert r.run == ("epoch.csv:2", "epoch.csv:3")  # FILE:LINE when there is no run column


def test_jsonl_defaults_derive_C(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"N": 1e8, "D": 2e9, "Loss": 3.1, "run": "a"}\n\n{"N": 3e8, "D": 6e9, "Loss": 2.9, "run": "b"}\n')
    r = load_records([path])  # L falls back to a 'loss' column, case-insensitively
    np.testing.assert_allclose(r.C, 6 * r.N * r.D)
    assert r.run == ("a", "b") and r.L.tolist() == [3.1, 2.9]
    assert len(r.select(r.N > 2e8)) == 1


def test_tsv_and_byte_order_mark(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes("\ufeffN\tC\tL\n1e8\t6e18\t3\n".encode())
    assert load_records([path]).N.tolist() == [1e8]


def one_line_error(paths, *fragments, **kwargs):
    with pytest.raises(RecordsError) as info:
        load_records(paths, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_errors_name_the_problem(tmp_path):
    one_line_error([tmp_path / "nope.csv"], "nope.csv", "no such file")
    table = tmp_path / "t.csv"
    table.write_text("size,flop,loss\n1e8,6e18,3.0\n")
    one_line_error([table], "t.csv", "'N'", "columns: size, flop, loss")
    one_line_error([table], "'Model Size'", "columns: size, flop, loss", columns="N=Model Size,C=flop")
    one_line_error([table], "--columns", "'X'", columns="X=size")
    one_line_error([table], "--columns", "KEY=COLUMN", columns="N")
    nod = tmp_path / "nod.csv"
    nod.write_text("N,L\n1e8,3.0\n")
    one_line_error([nod], "nod.csv", "D (tokens) or C (FLOPs)")
    bad = tmp_path / "bad.csv"
    for body, fragments in [("1e8,6e18,abc", ("line 3", "'L'", "'abc'", "not a number")),
                            ("1e8,6e18,", ("line 3", "'L'", "empty")),
                            ("-1e8,6e18,3", ("line 3", "'N'", "not positive")),
                            ("1e8,0,3", ("line 3", "'C'", "not positive")),
                            ("1e8,nan,3", ("line 3", "'C'", "not finite")),
                            ("1e8,inf,3", ("line 3", "'C'", "not finite"))]:
        bad.write_text(f"N,C,L\n1e8,6e18,3.0\n{body}\n")
        one_line_error([bad], "bad.csv", *fragments)
    bad.write_text("N,C,L\n")
    one_line_error([bad], "no data rows")
    one_line_error([table], "1 points", "at least 3", columns="N=size,C=flop", min_points=3)
    odd = tmp_path / "t.xlsx"
    odd.write_text("")
    one_line_error([odd], "t.xlsx", "unknown table format")
    js = tmp_path / "t.jsonl"
    js.write_text('{"N": 1, "C": 6, "L": 3}\n{"N": 1, "C": true, "L": 3}\n')
    one_line_error([js], "t.jsonl line 2", "'C'", "not a number")
    js.write_text('{"N": 1, "C": 6, "L": 3}\n{"N": 1,\n')
    one_line_error([js], "t.jsonl line 2", "not valid JSON")
    one_line_error([], "no input")


def test_run_directory_errors(tmp_path):
    incomplete = make_run(tmp_path / "inc", complete=False)
    one_line_error([incomplete], "inc", "not complete")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error([empty], "empty", "not a run directory")
    run = make_run(tmp_path / "r")
    one_line_error([run], "run.json", "'N_foo'", "keys: N_total", n_key="N_foo")
    one_line_error([run], "disagree", n_key="N_total", columns="N=N_active")
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(record | {"val_loss": float("nan")}))
    one_line_error([run], "run.json", "'val_loss'", "not finite")
    (run / "run.json").write_text("{not json")
    one_line_error([run], "run.json", "not valid JSON")


def test_parse_columns():
    assert parse_columns("N=Model Size, C = Training FLOP,L=loss") == {
        "N": "Model Size", "C": "Training FLOP", "L": "loss"}
    assert parse_columns(None) == {}
    with pytest.raises(RecordsError, match="given twice"):
        parse_columns("N=a,N=b")


# ---------------------------------------------------------------------------------------------- curves


def test_train_and_val_curves(tmp_path):
    run = make_run(tmp_path / "r", world_size=4)
    (curve,) = load_curves([run])
    assert curve.name == "r" and curve.N == 1_000_000
    assert curve.cost["step"].tolist() == list(range(1, 11))
    np.testing.assert_allclose(curve.loss, 5.0 / np.arange(1, 11) ** 0.3)
    np.testing.assert_allclose(curve.cost["gpu_hours"], 4 * 2.0 * np.arange(1, 11) / 3600)
    (val,) = load_curves([run], which="val", n_key="N_non_embedding")
    assert val.N == 800_000 and val.cost["step"].tolist() == [5, 10]
    np.testing.assert_allclose(val.cost["tokens"], [5 * 1024, 10 * 1024])
    np.testing.assert_allclose(val.cost["elapsed_s"], [10.0, 20.0])
    np.testing.assert_allclose(val.loss, 5.1 / np.array([5, 10]) ** 0.3)


def test_curve_of_a_running_and_resumed_run(tmp_path):
    run = make_run(tmp_path / "r", complete=False)  # no run.json yet: N comes from plan.json
    with (run / "metrics.jsonl").open("a") as f:  # a resumed run re-logs step 10: the last record wins
        f.write(json.dumps({"kind": "train", "step": 10, "loss": 1.0, "tokens": 10240, "flops": 6.1e10,
                            "elapsed_s": 30.0}) + "\n")
    (curve,) = load_curves([tmp_path])  # a folder of runs
    assert curve.N == 1_000_000 and curve.loss[-1] == 1.0 and curve.cost["step"].size == 10


def test_curve_errors(tmp_path):
    with pytest.raises(RecordsError, match="no such run directory"):
        load_curves([tmp_path / "missing"])
    run = make_run(tmp_path / "r")
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 1, "val_loss": 3}) + "\n")
    with pytest.raises(RecordsError, match="no training records"):
        load_curves([run])
    curve = Curve("c", None, np.ones(2), {"tokens": np.ones(2)})
    with pytest.raises(RecordsError, match="no cost axis 'flops'"):
        curve.x("flops")  # tokens alone give flops only with N
    assert Curve("c", 2.0, np.ones(2), {"tokens": np.array([1.0, 2.0])}).x("flops").tolist() == [12.0, 24.0]


def test_cost_tables(tmp_path):
    small = tmp_path / "llama-7b.tsv"
    small.write_text("Hours\tLoss\n100\t2.2\n200\t2.0\n")
    big = tmp_path / "llama-65b.tsv"
    big.write_text("Hours\tLoss\n300\t2.1\n600\t1.8\n")
    curves = load_cost_curves([small, big], columns="cost=Hours,L=Loss")
    assert [c.name for c in curves] == ["llama-7b", "llama-65b"] and curves[0].N is None
    assert curves[1].cost["cost"].tolist() == [300.0, 600.0]
    long = tmp_path / "long.csv"
    long.write_text("model,N,cost,loss\na,1e6,1,3\nb,1e7,1,3.5\na,1e6,2,2.8\n")
    a, b = load_cost_curves([long])
    assert (a.name, a.N, a.loss.tolist()) == ("a", 1e6, [3.0, 2.8]) and b.N == 1e7
    with pytest.raises(RecordsError, match="no column 'Hours'"):
        load_cost_curves([long], columns="cost=Hours")
    with pytest.raises(RecordsError, match="more than one table"):
        load_cost_curves([small, small], columns="cost=Hours,L=Loss")
