"""`isoflop tokenizer train|encode|decode|stats`: round trips through files, stats keys, bad input exits 2."""

from __future__ import annotations

import json

import pytest

from isoflop.cli import main
from isoflop.data.tokenizers import load_tokenizer


@pytest.mark.parametrize("kind,flags", [("gzip", ["--token-bits", "16"]),
                                        ("unigram", ["--vocab-size", "500", "--set", "train_bytes=30000"]),
                                        ("bytepiece", ["--vocab-size", "400", "--set", "data.tokenizer.train_bytes=30000"])])
def test_train_encode_decode_stats(kind, flags, tmp_path, corpus_dir, capsys) -> None:
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", kind, "--corpus", str(corpus_dir), "--out", str(out), *flags]) == 0
    tok = load_tokenizer(out)
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
