"""Text sources: a file, a folder of files, or the built-in `stdlib` corpus, streamed as documents of bytes.

A document is `bytes` exactly as stored (a .txt file, a .jsonl line's text field as UTF-8, a .py file), so
the tokenizers see the real byte stream, invalid UTF-8 included. Documents are yielded one at a time and
never gathered: only the list of files (names, sizes, times) is held. Empty documents are skipped.

Errors name `data.corpus` (and the file and line), since the CLI reports a `ConfigError` as one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isoflop.config import ConfigError
from isoflop.data.config import DataConfig

STDLIB = "stdlib"
# Third-party packages live under the stdlib folder but are not part of the built-in corpus.
_STDLIB_EXCLUDED = frozenset({"site-packages", "dist-packages", "__pycache__"})
_FINGERPRINT_VERSION = 1  # bump when the document rules above change


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus, in corpus order."""

    path: Path
    rel: str
    """Path relative to the corpus root, '/'-separated; the sort key."""
    size: int
    mtime_ns: int


def corpus_files(cfg: DataConfig) -> list[CorpusFile]:
    """The files of the corpus in corpus order (sorted relative paths); raises ConfigError if there are none."""
    if cfg.corpus == STDLIB:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = _stdlib_files(root)
        if not files:
            raise ConfigError("data.corpus", f"no .py files found in the standard library at {root}")
        return files
    path = Path(cfg.corpus).expanduser()
    if path.is_file():
        return [_stat(path, path.name)]
    if path.is_dir():
        found = sorted((p.relative_to(path).as_posix(), p) for p in path.glob(cfg.glob) if p.is_file())
        if not found:
            raise ConfigError("data.corpus", f"no files match data.glob={cfg.glob!r} in folder {path}")
        return [_stat(p, rel) for rel, p in found]
    raise ConfigError("data.corpus", f"no such file or folder: {path}")


def _stdlib_files(root: Path) -> list[CorpusFile]:
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_EXCLUDED]  # prune: never walk site-packages
        for name in filenames:
            if name.endswith(".py"):
                p = Path(dirpath, name)
                found.append((p.relative_to(root).as_posix(), p))
    found.sort()
    return [_stat(p, rel) for rel, p in found]


def _stat(path: Path, rel: str) -> CorpusFile:
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError("data.corpus", f"cannot read {path}: {e.strerror or e}") from None
    return CorpusFile(path=path, rel=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)


def iter_documents(cfg: DataConfig, files: list[CorpusFile] | None = None) -> Iterator[bytes]:
    """The corpus's non-empty documents in corpus order, stopping before `cfg.max_bytes` would be exceeded.

    `files` (from `corpus_files(cfg)`) saves listing the corpus again when the caller already has it.
    """
    budget = cfg.max_bytes
    for doc in _all_documents(cfg, corpus_files(cfg) if files is None else files):
        if budget is not None:
            if len(doc) > budget:
                return
            budget -= len(doc)
        yield doc


def _all_documents(cfg: DataConfig, files: list[CorpusFile]) -> Iterator[bytes]:
    for f in files:
        if f.path.suffix == ".jsonl" and cfg.corpus != STDLIB:
            yield from _jsonl_documents(f.path, cfg.text_field)
            continue
        try:
            doc = f.path.read_bytes()
        except OSError as e:
            raise ConfigError("data.corpus", f"cannot read {f.path}: {e.strerror or e}") from None
        if doc:
            yield doc


def _jsonl_documents(path: Path, text_field: str) -> Iterator[bytes]:
    """One document per line: the `text_field` string, UTF-8 encoded. Blank lines are skipped."""
    try:
        with path.open("rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                    raise ConfigError("data.corpus", f"{path}, line {lineno}: not valid JSON ({e})") from None
                text = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise ConfigError("data.corpus", f"{path}, line {lineno}: no string field {text_field!r} "
                                      "(set data.text_field)")
                # surrogatepass: JSON may spell lone surrogates ("\ud800"); keep them as bytes, never fail.
                doc = text.encode("utf-8", "surrogatepass")
                if doc:
                    yield doc
    except OSError as e:
        raise ConfigError("data.corpus", f"cannot read {path}: {e.strerror or e}") from None


def corpus_size(cfg: DataConfig, files: list[CorpusFile]) -> int:
    """Bytes on disk of the corpus files, capped at max_bytes: the denominator of progress messages
    (an estimate for .jsonl, whose JSON syntax is not document bytes)."""
    total = sum(f.size for f in files)
    return total if cfg.max_bytes is None else min(total, cfg.max_bytes)


def corpus_fingerprint(cfg: DataConfig, files: list[CorpusFile] | None = None) -> str:
    """A cheap identity of the documents `iter_documents(cfg)` yields: sha256 of the file list (relative
    path, size, mtime_ns) and the config fields that select documents. Contents are not read, so an edit
    that keeps a file's size and mtime goes unnoticed (as with make)."""
    files = corpus_files(cfg) if files is None else files
    ident: dict[str, object] = {"version": _FINGERPRINT_VERSION, "max_bytes": cfg.max_bytes}
    if cfg.corpus == STDLIB:
        ident["corpus"] = STDLIB
        ident["python"] = sys.version
        ident["root"] = sysconfig.get_paths()["stdlib"]
    else:
        path = Path(cfg.corpus).expanduser().resolve()
        ident["corpus"] = str(path)
        if path.is_dir():
            ident["glob"] = cfg.glob
        if any(f.path.suffix == ".jsonl" for f in files):
            ident["text_field"] = cfg.text_field
    ident["files"] = [[f.rel, f.size, f.mtime_ns] for f in files]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


__all__ = ["CorpusFile", "corpus_files", "corpus_fingerprint", "corpus_size", "iter_documents"]
