"""`isoflop tokenizer train|encode|decode|stats`: round trips through files, stats keys, bad input exits 2."""

from __future__ import annotations

import json

import pytest

from isoflop.cli import main
from isoflop.data.tokenizers import load_saved_tokenizer


@pytest.mark.parametrize("kind,flags", [("gzip", ["--token-bits", "16"]),
                                        ("unigram", ["--vocab-size", "500", "--set", "train_bytes=30000"]),
                                        ("bytepiece", ["--vocab-size", "400", "--set", "data.tokenizer.train_bytes=30000"])])
def test_train_encode_decode_stats(kind, flags, tmp_path, corpus_dir, capsys) -> None:
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", kind, "--corpus", str(corpus_dir), "--out", str(out), *flags]) == 0
    tok = load_saved_tokenizer(out)
    assert tok.kind == kind
    source = tmp_path / "in.bin"
    source.write_bytes(b"def return self\n\xff\x00 naive caf\xc3\xa9 \xe2\x96\x81" * 30)
    assert main(["tokenizer", "encode", str(out), "--in", str(source), "--out", str(tmp_path / "t.npy")]) == 0
    assert main(["tokenizer", "decode", str(out), "--in", str(tmp_path / "t.npy"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o").read_bytes() == source.read_bytes()
    capsys.readouterr()
    assert main(["tokenizer", "stats", str(out), "--corpus", str(corpus_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    for key in ("bytes_per_token", "bits_per_token", "vocab_size", "n_tokens", "n_bytes", "encode_bytes_per_s",
                "decode_bytes_per_s"):
        assert key in stats
    assert stats["vocab_size"] == tok.vocab_size and stats["lossless"] is True
    assert stats["bytes_per_token"] == pytest.approx(stats["n_bytes"] / stats["n_tokens"])
    # BytePiece learns little on this twelve-word synthetic corpus: its n-gram pre-segmentation makes whole
    # lines into pieces, too long to keep (see tests/data/test_tokenizers_compressed.py for real text).
    assert stats["bytes_per_token"] > (1.0 if kind == "bytepiece" else 1.5)


@pytest.mark.parametrize("argv,names", [
    (["train", "--kind", "byte", "--vocab-size", "300"], "--vocab-size"),
    (["train", "--kind", "unigram", "--token-bits", "8"], "--token-bits"),
    (["train", "--kind", "gzip", "--set", "nonsense=1"], "nonsense"),
    (["train", "--kind", "gzip", "--set", "token_bits=12"], "token_bits"),
    (["train", "--kind", "nosuchkind"], "--kind"),
])
def test_bad_train_options_exit_2(argv, names, tmp_path, corpus_dir, capsys) -> None:
    out = tmp_path / "tok"
    assert main(["tokenizer", *argv, "--corpus", str(corpus_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing half-written


def test_bad_files_exit_2(tmp_path, capsys) -> None:
    assert main(["tokenizer", "train", "--kind", "gzip", "--corpus", "stdlib", "--out", str(tmp_path / "g")]) == 0
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    for argv in (["encode", str(tmp_path / "g"), "--in", str(tmp_path / "missing"), "--out", str(tmp_path / "x")],
                 ["decode", str(tmp_path / "g"), "--in", str(tmp_path / "junk.npy"), "--out", str(tmp_path / "x")],
                 ["stats", str(tmp_path / "nothing"), "--corpus", "stdlib"]):
        assert main(["tokenizer", *argv]) == 2
    assert not (tmp_path / "x").exists()


class _Stop(Exception):
    """Raised by the stand-in trainer once it has seen M1's run config."""


def _m1_run_config(argv: list[str], corpus_dir, tmp_path, monkeypatch) -> object:
    """The ExperimentConfig `tokenizer train` would train M1 with (training itself stubbed out)."""
    import isoflop.train.run

    seen = []

    def record(cfg, run_dir, **kw):
        seen.append(cfg)
        raise _Stop

    monkeypatch.setattr(isoflop.train.run, "run_training", record)
    with pytest.raises(_Stop):
        main(["tokenizer", "train", "--corpus", str(corpus_dir), "--out", str(tmp_path / "tok"), *argv])
    assert not (tmp_path / "tok").exists()
    return seen[0]


def test_m1_is_trained_with_the_documented_defaults(tmp_path, corpus_dir, monkeypatch) -> None:
    from isoflop.cli.tokenizer import M1Training

    run = _m1_run_config(["--kind", "equalinfo-ac", "--max-bytes", "9000"], corpus_dir, tmp_path, monkeypatch)
    defaults = M1Training()
    assert (defaults.steps, defaults.d_model, defaults.n_layers, defaults.seq_len, defaults.batch_size,
            defaults.lr) == (300, 128, 2, 256, 16, 0.003)  # the values the docstrings document
    assert (run.train.horizon.steps, run.train.batch_size, run.optim.lr) == (300, 16, 0.003)
    assert (run.model.d_model, run.model.n_layers, run.model.n_heads, run.data.seq_len) == (128, 2, 2, 256)
    assert (run.data.tokenizer.kind, run.data.corpus, run.data.max_bytes) == ("byte", str(corpus_dir), 9000)


def test_m1_options_are_set_with_the_m1_prefix(tmp_path, corpus_dir, monkeypatch) -> None:
    run = _m1_run_config(["--kind", "ac", "--set", "m1_steps=7", "--set", "data.tokenizer.m1_lr=0.01",
                          "--set", "m1_d_model=64", "--set", "rows=2"], corpus_dir, tmp_path, monkeypatch)
    assert (run.train.horizon.steps, run.optim.lr, run.model.d_model, run.model.n_heads) == (7, 0.01, 64, 1)
    assert run.train.batch_size == 16  # the rest keep their defaults


@pytest.mark.parametrize("argv,names", [
    (["--kind", "ac", "--set", "m1_stepz=5"], "did you mean 'm1_steps'"),
    (["--kind", "ac", "--set", "m1_steps=0"], "m1_steps"),
    (["--kind", "equalinfo-ac", "--set", "m1_lr=-1"], "m1_lr"),
    (["--kind", "gzip", "--set", "m1_steps=5"], "apply only to the kinds ac and equalinfo-ac"),
])
def test_bad_m1_options_exit_2(argv, names, tmp_path, corpus_dir, capsys) -> None:
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", *argv, "--corpus", str(corpus_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and len(err.splitlines()) == 1 and not out.exists()
