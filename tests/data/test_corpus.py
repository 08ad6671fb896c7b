"""Corpus reading (files, folders, .jsonl, stdlib), its fingerprint, and DataConfig's checks."""

from __future__ import annotations

import dataclasses
import json
import os
import sysconfig
from pathlib import Path

import pytest

from isoflop.config import ConfigError, field_docs
from isoflop.data.config import BPETokenizerConfig, DataConfig
from isoflop.data.corpus import corpus_files, corpus_fingerprint, iter_documents


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_folder_documents_sorted_by_relative_path(tmp_path: Path) -> None:
    _write(tmp_path / "b.txt", "bee")
    _write(tmp_path / "a" / "z.txt", b"\xffzed\x00")
    _write(tmp_path / "a.txt", "ay\n\nsecond paragraph stays in the same document")
    _write(tmp_path / "empty.txt", "")
    _write(tmp_path / "skip.md", "not matched by the glob")
    cfg = DataConfig(corpus=str(tmp_path))
    assert [f.rel for f in corpus_files(cfg)] == ["a.txt", "a/z.txt", "b.txt", "empty.txt"]
    assert list(iter_documents(cfg)) == [b"ay\n\nsecond paragraph stays in the same document",
                                         b"\xffzed\x00", b"bee"]
    assert list(iter_documents(DataConfig(corpus=str(tmp_path), glob="*.md"))) == [b"not matched by the glob"]


def test_single_file_is_one_document(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.txt", b"line 1\nline 2\n\n\xc3")
    assert list(iter_documents(DataConfig(corpus=str(path)))) == [b"line 1\nline 2\n\n\xc3"]


def test_jsonl_one_document_per_line(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "héllo", "id": 1}), "", json.dumps({"text": ""}),
             json.dumps({"body": "x", "text": "lone \ud800 surrogate"})]
    path = _write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    docs = list(iter_documents(DataConfig(corpus=str(path))))
    assert docs == ["héllo".encode(), "lone \ud800 surrogate".encode("utf-8", "surrogatepass")]


def test_jsonl_text_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"body": "a"}\n{"body": "b"}\n')
    assert list(iter_documents(DataConfig(corpus=str(path), text_field="body"))) == [b"a", b"b"]


@pytest.mark.parametrize("bad, problem", [
    ('{"text": "ok"', "not valid JSON"),
    ('{"other": "x"}', "no string field 'text'"),
    ('{"text": 3}', "no string field 'text'"),
    ('["text"]', "no string field 'text'"),
])
def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    path = _write(tmp_path / "sub" / "bad.jsonl", '{"text": "fine"}\n\n' + bad + "\n")
    cfg = DataConfig(corpus=str(tmp_path), glob="**/*.jsonl")
    with pytest.raises(ConfigError) as err:
        list(iter_documents(cfg))
    assert err.value.key == "data.corpus"
    assert str(path) in str(err.value) and "line 3" in str(err.value) and problem in str(err.value)


def test_missing_corpus_is_a_config_error(tmp_path: Path) -> None:
    cfg = DataConfig(corpus=str(tmp_path / "nope"))  # building the config does not look at the disk
    with pytest.raises(ConfigError) as err:
        list(iter_documents(cfg))
    assert err.value.key == "data.corpus" and "no such file or folder" in str(err.value)
    with pytest.raises(ConfigError, match="data.corpus"):
        corpus_fingerprint(cfg)


def test_folder_without_matching_files(tmp_path: Path) -> None:
    _write(tmp_path / "x.md", "x")
    with pytest.raises(ConfigError, match="data.corpus.*no files match"):
        corpus_files(DataConfig(corpus=str(tmp_path)))


def test_max_bytes_keeps_whole_documents(tmp_path: Path) -> None:
    for i, n in enumerate([3, 4, 5, 1]):
        _write(tmp_path / f"{i}.txt", b"x" * n)
    docs = lambda m: [len(d) for d in iter_documents(DataConfig(corpus=str(tmp_path), max_bytes=m))]  # noqa: E731
    assert docs(None) == [3, 4, 5, 1]
    assert docs(7) == [3, 4]
    assert docs(11) == [3, 4]  # stops before the 5-byte one, does not skip ahead to the 1-byte one
    assert docs(2) == []


def test_stdlib_corpus_is_sorted_python_files() -> None:
    cfg = DataConfig(max_bytes=300_000)
    files = corpus_files(cfg)
    rels = [f.rel for f in files]
    assert rels == sorted(rels) and len(rels) > 100
    assert all(r.endswith(".py") for r in rels)
    assert not any(part in ("site-packages", "dist-packages") for r in rels for part in r.split("/"))
    root = Path(sysconfig.get_paths()["stdlib"])
    assert all(f.path == root / f.rel for f in files[:50])
    docs = list(iter_documents(cfg))
    assert 0 < sum(map(len, docs)) <= 300_000
    expected = [f.path.read_bytes() for f in files if f.size > 0][: len(docs)]
    assert docs == expected


def test_fingerprint_tracks_files_and_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.txt", "abc")
    cfg = DataConfig(corpus=str(tmp_path))
    fp = corpus_fingerprint(cfg)
    assert corpus_fingerprint(cfg) == fp
    assert corpus_fingerprint(dataclasses.replace(cfg, seq_len=8)) == fp  # not a document-selecting field
    assert corpus_fingerprint(dataclasses.replace(cfg, max_bytes=2)) != fp
    _write(tmp_path / "b.txt", "new file")
    assert corpus_fingerprint(cfg) != fp
    os.remove(tmp_path / "b.txt")
    path.write_text("abcd")
    assert corpus_fingerprint(cfg) != fp
    assert corpus_fingerprint(DataConfig()) == corpus_fingerprint(DataConfig())


@pytest.mark.parametrize("kwargs, key", [
    ({"seq_len": 0}, "seq_len"), ({"val_fraction": 0.0}, "val_fraction"), ({"val_fraction": 1.0}, "val_fraction"),
    ({"max_bytes": 0}, "max_bytes"), ({"corpus": ""}, "corpus"), ({"glob": ""}, "glob"),
])
def test_data_config_checks(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        DataConfig(**kwargs)
    assert err.value.key == key


def test_data_config_dicts_and_docs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = DataConfig.from_dict({"corpus": "x.jsonl", "seq_len": 64, "tokenizer": {"kind": "bpe", "vocab_size": 512}})
    assert isinstance(cfg.tokenizer, BPETokenizerConfig) and cfg.tokenizer.vocab_size == 512
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as err:
        DataConfig.from_dict({"tokenizer": {"kind": "bpe", "vocab_size": 10}})
    assert err.value.key == "tokenizer.vocab_size"
    for klass in (DataConfig, BPETokenizerConfig):
        assert set(field_docs(klass)) == {f.name for f in dataclasses.fields(klass)}
    monkeypatch.setenv("ISOFLOP_CACHE", str(tmp_path / "env"))
    assert DataConfig().cache_root() == tmp_path / "env"
    assert DataConfig(cache_dir=str(tmp_path / "c")).cache_root() == tmp_path / "c"
    monkeypatch.delenv("ISOFLOP_CACHE")
    assert DataConfig().cache_root() == Path.home() / ".cache" / "isoflop"
