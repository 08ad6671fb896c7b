"""studies/compressed_text: the corpus split, the runs (one M2 shape, one tokenization each), the
measurements against an independent recount of the validation text, and the ordering statements; end to end
through `isoflop report compressed-text --smoke`."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from isoflop.cli import main
from isoflop.data.config import DataConfig
from isoflop.data.corpus import iter_documents
from isoflop.data.shards import is_val_document
from isoflop.studies.compressed_text import SMOKE, _swaps, findings, methods, score_validation
from isoflop.train.artifacts import load_config, load_tokenizer


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """One smoke report (about a minute on 2 cores), shared by the checks below."""
    root = tmp_path_factory.mktemp("compressed_text")
    mp = pytest.MonkeyPatch()
    mp.setenv("ISOFLOP_CACHE", str(root / "cache"))
    try:
        assert main(["report", "compressed-text", "--out", str(root / "out"), "--smoke"]) == 0
        yield root / "out"
    finally:
        mp.undo()


def test_swaps_is_the_kendall_distance():
    for perm in itertools.permutations("abcde"):
        naive = sum(1 for x, y in itertools.combinations("abcde", 2) if perm.index(x) > perm.index(y))
        assert _swaps(list(perm), list("abcde")) == naive


def test_findings_state_the_orderings():
    rows = [{"method": m, "bytes_per_token": b, "paper_bytes_per_token": pb, "val_bpb": v, "paper_bpb": pv,
             "uniform_bpb": u, "train_bytes": 1.0}
            for m, b, pb, v, pv, u in [("Bytes", 1.0, 1.0, 2.0, 1.29, 8.0), ("AC v256", 3.0, 5.49, 2.65, 1.46, 2.67),
                                       ("GZip v256", 2.0, 2.23, 3.0, 2.34, 4.0)]]
    text = findings(rows, m1_bpb=2.5)
    assert text[0].startswith("Compression (bytes/token, best first): ours AC v256 > GZip v256 > Bytes")
    assert text[0].endswith("the same order.")
    assert "Bytes < AC v256 < GZip v256" in text[1] and text[1].endswith("the same order.")
    assert "learned next to nothing): AC v256." in text[2]  # 2.65 is within 2 % of 2.67


def test_the_corpus_parts_are_disjoint_and_cut_to_examples(smoke_report):
    m1 = sorted((smoke_report / "corpus" / "m1").iterdir())
    m2 = sorted((smoke_report / "corpus" / "m2").iterdir())
    assert m1 and m2 and not {p.name for p in m1} & {p.name for p in m2}
    assert max(p.name for p in m1) < min(p.name for p in m2)  # M2's text comes after M1's
    assert all(p.stat().st_size <= SMOKE.example_bytes for p in m1 + m2)
    assert sum(p.stat().st_size for p in m1) <= SMOKE.m1_bytes
    assert sum(p.stat().st_size for p in m2) <= SMOKE.m2_bytes
    stdlib = b"\0".join(iter_documents(DataConfig(corpus="stdlib")))
    assert all(p.read_bytes() in stdlib for p in m1 + m2)  # every example is a piece of one stdlib file
    first_in_path_order = b"".join(itertools.islice(iter_documents(DataConfig(corpus="stdlib")), 40))
    assert b"".join(p.read_bytes() for p in m1) not in first_in_path_order  # files are drawn across the library


def test_every_run_trains_the_same_model_on_its_own_tokens(smoke_report):
    runs = smoke_report / "runs"
    shapes, kinds = set(), []
    for method in methods(SMOKE.vocab):
        cfg = load_config(runs / method.name)
        shapes.add(json.dumps({**cfg.model.to_dict(), "vocab_size": None}, sort_keys=True))
        assert cfg.train.horizon.steps == 8 and cfg.data.corpus == str((smoke_report / "corpus" / "m2").resolve())
        kinds.append(cfg.data.tokenizer.kind)
        if "path" in method.tokenizer:  # M1-driven kinds use the folder prepare made, M1's weights inside
            assert cfg.data.tokenizer.path == str((smoke_report / method.tokenizer["path"]).resolve())
    assert len(shapes) == 1
    assert kinds == ["byte", "bpe", "unigram", "bytepiece", "gzip", "static-ac", "ac"] + ["equalinfo-ac"] * 2


@pytest.mark.parametrize("name", ["bytes", "gzip", "ac"])
def test_bytes_per_token_match_a_recount_of_the_validation_documents(smoke_report, name):
    run = smoke_report / "runs" / name
    cfg, tok = load_config(run), load_tokenizer(run)
    docs = [d for i, d in enumerate(iter_documents(cfg.data)) if is_val_document(i, cfg.data.val_fraction)]
    n_tokens = sum(len(tok.encode(d)) for d in docs)
    score = score_validation(run)
    assert score["bytes_per_token"] == pytest.approx(sum(map(len, docs)) / n_tokens, rel=1e-12)
    assert score["uniform_bpb"] == pytest.approx(8 / score["bytes_per_token"], rel=1e-12)
    assert math.isfinite(score["val_bpb"]) and score["val_bpb"] > 0


def test_report_rows_and_plot(smoke_report):
    results = json.loads((smoke_report / "results.json").read_text())
    assert (smoke_report / "compressed-text.png").read_bytes()[:4] == b"\x89PNG"
    rows = {r["method"]: r for r in results["rows"]}
    assert list(rows) == [m.label for m in methods(SMOKE.vocab)]
    assert rows["Bytes"]["bytes_per_token"] == 1.0 and rows["Bytes"]["uniform_bpb"] == 8.0
    m1 = load_config(smoke_report / "m1").resolved_model
    from isoflop.nn.counting import param_groups

    m2 = param_groups(load_config(smoke_report / "runs" / "bytes").resolved_model).non_embedding
    for method in methods(SMOKE.vocab):  # FLOPs/byte: 2N per token over bytes/token (+ 2 N_M1 per byte)
        row = rows[method.label]
        expected = 2 * m2 / row["bytes_per_token"] + ("path" in method.tokenizer) * 2 * param_groups(m1).non_embedding
        assert row["flops_per_byte"] == pytest.approx(expected, rel=1e-12)
    from isoflop.data.shards import prepare_shards

    bytes_run = smoke_report / "runs" / "bytes"
    trained = json.loads((bytes_run / "run.json").read_text())["D_tokens"]
    assert rows["Bytes"]["epochs"] == pytest.approx(trained / prepare_shards(load_config(bytes_run).data).n_tokens("train"))
    assert math.isfinite(results["data"]["m1_bpb"])
    assert "SMOKE" in results["setting"]
