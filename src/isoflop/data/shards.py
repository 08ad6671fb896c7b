"""Token shards on disk: one pass from corpus to `train.bin` / `val.bin` (memmapped) and `meta.json`.

A cache entry is `<cache_dir>/shards/<key>/{tokenizer/, train.bin, val.bin, meta.json}`, where `key` hashes
what decides the tokens: the corpus fingerprint (files and the fields that select documents), the
validation fraction and the tokenizer config. Shards are little-endian uint16 (vocab <= 65536) or uint32;
each document's tokens are followed by the end-of-text id.

Crash and concurrency safety: an entry is built in a fresh temporary sibling (`.tmp-<key>-*`) and moved into
place with one `os.replace`, so a reader never sees a half-written entry, and an entry is trusted only if
its meta matches and its files have the sizes the meta says. Two preparers racing (e.g. two torchrun ranks)
both build; the first rename wins and the second finds the entry there, checks it and uses it.

Memory is bounded by one document (read whole) plus one batch of text pieces and their tokens (a few MB of
text; ~300 MB inside the BPE library) plus the tokenizer: neither the corpus nor its tokens are held whole.
Huge documents are encoded in pieces cut where the tokenizer says the cut changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from isoflop.config import ConfigError
from isoflop.data.config import DataConfig
from isoflop.data.corpus import CorpusFile, corpus_files, corpus_fingerprint, corpus_size, iter_documents
from isoflop.data.tokenizers.base import Tokenizer, load_saved_tokenizer

Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")
FORMAT = 1  # bump when the layout or the document/split rules change: old entries are then rebuilt
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"
_BATCH_BYTES = 4 << 20  # bytes tokenized per batch: enough for the library's threads, small in RAM
_BATCH_DOCS = 8192
# Huge documents are tokenized in pieces of about this size (see Tokenizer.pieces): a byte-level BPE batch
# needs ~70 bytes of RAM per input byte in the `tokenizers` library, and 4 pieces keep 4 threads busy.
_PIECE_BYTES = 1 << 20
_PROGRESS_EVERY_S = 2.0
_IN_BATCH_PROGRESS_EVERY_S = 20.0  # slow coders: a line every 20 s, not hundreds over a report
_STALE_TMP_S = 24 * 3600.0  # a temporary dir untouched this long is a crashed preparer's: remove it


@dataclass(frozen=True)
class PreparedData:
    """A finished cache entry: its folder, its tokenizer and its meta.json."""

    directory: Path
    tokenizer: Tokenizer
    meta: dict[str, Any]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"]).newbyteorder("<")

    def tokens(self, split: Split) -> np.ndarray:
        """The split's tokens, shape (n_tokens,), memory-mapped read-only."""
        n = self.n_tokens(split)
        if n == 0:
            return np.zeros(0, dtype=self.dtype)  # mmap cannot map an empty file
        return np.memmap(self.directory / f"{split}.bin", dtype=self.dtype, mode="r", shape=(n,))

    def n_tokens(self, split: Split) -> int:
        return int(self.meta["splits"][split]["n_tokens"])

    def n_bytes(self, split: Split) -> int:
        """Original bytes of the split's documents (end-of-text adds none): the denominator of bits/byte."""
        return int(self.meta["splits"][split]["n_bytes"])

    def byte_share(self, split: Split) -> float:
        """Original bytes per content (non-end-of-text) token of the split: what a token of a tokenizer without
        exact byte lengths stands for in bits per byte (tokenizers/base.py)."""
        s = self.meta["splits"][split]
        return s["n_bytes"] / max(s["n_tokens"] - s["n_documents"], 1)


def shard_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def is_val_document(index: int, val_fraction: float) -> bool:
    """Whether document `index` (0-based, corpus order) is held out: a hash of the index, not of the
    content, so the split is stable however the documents are read."""
    digest = hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2.0**64


def prepare_shards(cfg: DataConfig, *, progress: Callable[[str], None] | None = None) -> PreparedData:
    """Tokenize the corpus of `cfg` into a cache entry (or reuse the finished one) and check it is usable
    for `cfg.seq_len`. `progress` gets short human messages every few seconds."""
    say = progress or (lambda _msg: None)
    files = corpus_files(cfg)
    saved = None
    if cfg.tokenizer.path is not None:
        saved = load_saved_tokenizer(Path(cfg.tokenizer.path).expanduser())
    inputs = entry_inputs(cfg, files, saved)
    key = entry_key(inputs)
    shards_dir = cfg.cache_root() / "shards"
    final = shards_dir / key

    data = open_entry(final, inputs)
    if data is not None:
        say(f"using cached shards {final}")
    else:
        tmp = shards_dir / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            shards_dir.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()  # unlike mkdtemp's 0700, honours the umask: a shared cache stays readable
        except OSError as e:
            raise ConfigError("data.cache_dir", f"cannot write the cache at {shards_dir}: {e.strerror or e}") from None
        _remove_stale(shards_dir)
        try:
            _build(cfg, files, inputs, key, tmp, say, saved)
            data = _publish(tmp, final, inputs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
        say(f"wrote shards {final}")
    _check_usable(data, cfg)
    return data


def entry_inputs(cfg: DataConfig, files: list[CorpusFile], saved: Tokenizer | None) -> dict[str, Any]:
    """What decides a cache entry's tokens: the layout version, the corpus, the split and the tokenizer (with
    `saved`, the tokenizer loaded from `cfg.tokenizer.path`). Held in meta.json and hashed into the key."""
    return {"format": FORMAT, "corpus": corpus_fingerprint(cfg, files), "val_fraction": cfg.val_fraction,
            "tokenizer": cfg.tokenizer.shard_key(saved)}


def entry_key(inputs: dict[str, Any]) -> str:
    """The cache entry's folder name: 24 hex digits of the sha256 of its inputs. Stable on purpose: a changed
    key rebuilds every user's shards."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def open_entry(directory: Path, inputs: dict[str, Any]) -> PreparedData | None:
    """The entry at `directory` if it is complete and was made from `inputs`, else None."""
    try:
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format") != FORMAT or meta.get("inputs") != inputs:
            return None
        tokenizer = load_saved_tokenizer(directory / TOKENIZER_DIR)
        if tokenizer.fingerprint() != meta["tokenizer"]["fingerprint"]:
            return None
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            if (directory / f"{split}.bin").stat().st_size != meta["splits"][split]["n_tokens"] * itemsize:
                return None
    except Exception:  # missing, truncated or foreign files of any kind: the entry is not trusted
        return None
    return PreparedData(directory=directory, tokenizer=tokenizer, meta=meta)


def _publish(tmp: Path, final: Path, inputs: dict[str, Any]) -> PreparedData:
    """Move the built entry into place; if another preparer got there first, use theirs."""
    for _ in range(3):
        try:
            os.replace(tmp, final)  # atomic; fails if `final` exists and is not empty
        except OSError:
            if not final.exists():
                raise  # not a lost race: a real error (permissions, another filesystem)
            existing = open_entry(final, inputs)
            if existing is not None:
                return existing
            # A broken entry (damaged after it was published, or made by hand): set it aside and retry.
            trash = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex[:8]}")
            try:
                os.replace(final, trash)
            except FileNotFoundError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
            continue
        data = open_entry(final, inputs)
        if data is None:
            raise RuntimeError(f"the shard entry {final} did not verify right after it was written")
        return data
    raise RuntimeError(f"could not move the shard entry into {final}")


def _build(cfg: DataConfig, files: list[CorpusFile], inputs: dict[str, Any], key: str, out: Path,
           say: Callable[[str], None], saved: Tokenizer | None = None) -> None:
    """Train the tokenizer if needed (or use `saved`), then stream the corpus into out/{train,val}.bin and
    meta.json."""
    tok_cfg = cfg.tokenizer
    if saved is not None:
        tokenizer = saved
    elif tok_cfg.needs_training:
        budget = getattr(tok_cfg, "train_bytes", None)
        say(f"training {tok_cfg.kind} tokenizer"
            + (f" on up to {budget / 1e6:.1f} MB of training documents" if budget else ""))
        tokenizer = tok_cfg.build(_train_documents(cfg, files))
    else:
        tokenizer = tok_cfg.build(None)
    tokenizer.save(out / TOKENIZER_DIR)
    dtype = shard_dtype(tokenizer.vocab_size)
    writers = {s: _SplitWriter(out / f"{s}.bin", dtype, tokenizer) for s in SPLITS}

    total, done, last = corpus_size(cfg, files), 0, time.monotonic()

    def within_batch(coded: int) -> None:  # slow tokenizers report inside a batch
        nonlocal last
        if time.monotonic() - last > _IN_BATCH_PROGRESS_EVERY_S:
            say(f"tokenizing: {(done + coded) / 1e6:.2f} MB / {total / 1e6:.1f} MB")
            last = time.monotonic()

    n_documents = 0
    try:
        for batch in _batches(_pieces(iter_documents(cfg, files), tokenizer)):
            ids_per_piece = tokenizer.encode_batch([piece for piece, _ in batch], progress=within_batch)
            for (piece, doc_bytes), ids in zip(batch, ids_per_piece, strict=True):
                split = "val" if is_val_document(n_documents, cfg.val_fraction) else "train"
                writers[split].add(ids)
                if doc_bytes is not None:  # the document's last piece
                    writers[split].end_document(doc_bytes)
                    n_documents += 1
                done += len(piece)
            for w in writers.values():
                w.flush()
            if time.monotonic() - last > _PROGRESS_EVERY_S:
                say(f"tokenizing: {done / 1e6:.1f} MB / {total / 1e6:.1f} MB")
                last = time.monotonic()
        if n_documents == 0:
            raise ConfigError("data.corpus", "the corpus has no documents"
                              + (f" within data.max_bytes={cfg.max_bytes}" if cfg.max_bytes else ""))
        if writers["val"].n_documents == 0:
            # No document's hash fell under val_fraction (a tiny corpus): validation gets the last one.
            writers["train"].move_last_document(writers["val"])
    finally:
        for w in writers.values():
            w.close()
    say(f"tokenizing: {done / 1e6:.1f} MB / {total / 1e6:.1f} MB")

    meta = {
        "format": FORMAT,
        "key": key,
        "inputs": inputs,
        "corpus": cfg.corpus,
        "corpus_fingerprint": inputs["corpus"],
        "tokenizer": {"kind": tokenizer.kind, "fingerprint": tokenizer.fingerprint(),
                      "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id},
        "dtype": dtype.name,
        "n_documents": n_documents,
        "splits": {s: w.summary() for s, w in writers.items()},
    }
    # meta.json is written last and fsynced: its presence with matching sizes is what marks a whole entry.
    with open(out / META_FILE, "w") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _train_documents(cfg: DataConfig, files: list[CorpusFile]) -> Iterator[bytes]:
    """Training documents in corpus order, lazily: the tokenizer takes only the first few MB."""
    for i, doc in enumerate(iter_documents(cfg, files)):
        if not is_val_document(i, cfg.val_fraction):
            yield doc


def _pieces(docs: Iterable[bytes], tokenizer: Tokenizer) -> Iterator[tuple[bytes, int | None]]:
    """Each document as pieces of about _PIECE_BYTES, the last tagged with the document's length."""
    for doc in docs:
        pieces = tokenizer.pieces(doc, _PIECE_BYTES)
        previous = next(pieces)
        for piece in pieces:
            yield previous, None
            previous = piece
        yield previous, len(doc)


def _batches(pieces: Iterable[tuple[bytes, int | None]]) -> Iterator[list[tuple[bytes, int | None]]]:
    batch: list[tuple[bytes, int | None]] = []
    size = 0
    for item in pieces:
        batch.append(item)
        size += len(item[0])
        if size >= _BATCH_BYTES or len(batch) >= _BATCH_DOCS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _SplitWriter:
    """Appends documents' tokens, each followed by end-of-text, to one .bin file; counts what it wrote."""

    def __init__(self, path: Path, dtype: np.dtype, tokenizer: Tokenizer):
        self._fh: BinaryIO = open(path, "w+b")  # closed by close(); read back by move_last_document
        self._dtype = dtype
        self._vocab = tokenizer.vocab_size
        self._eot = np.array([tokenizer.eot_id], dtype=np.int64)
        self._parts: list[np.ndarray] = []
        self.n_tokens = self.n_bytes = self.n_documents = 0
        self._doc_start = 0  # token offset where the current (unfinished) document starts
        self._last: tuple[int, int] | None = None  # (token offset, bytes) of the last finished document

    def add(self, ids: np.ndarray) -> None:
        """Tokens of (a piece of) the current document."""
        self._parts.append(ids)
        self.n_tokens += len(ids)

    def end_document(self, n_bytes: int) -> None:
        self._parts.append(self._eot)
        self.n_tokens += 1
        self.n_bytes += n_bytes
        self.n_documents += 1
        self._last = (self._doc_start, n_bytes)
        self._doc_start = self.n_tokens

    def flush(self) -> None:
        if not self._parts:
            return
        ids = np.concatenate(self._parts)  # (n,) int64
        self._parts = []
        if len(ids) and (ids.min() < 0 or ids.max() >= self._vocab):  # a tokenizer bug must not wrap silently
            raise RuntimeError(f"token id out of range 0..{self._vocab - 1}: {int(ids.min())}..{int(ids.max())}")
        self._fh.write(ids.astype(self._dtype).tobytes())

    def move_last_document(self, other: _SplitWriter) -> None:
        """Move the last finished document to `other`, in bounded memory."""
        assert self._last is not None and self._doc_start == self.n_tokens, "no finished last document"
        self.flush()
        start, n_bytes = self._last
        itemsize = self._dtype.itemsize
        self._fh.seek(start * itemsize)
        remaining = (self.n_tokens - 1 - start) * itemsize  # the document's tokens, not its end-of-text
        while remaining > 0:
            chunk = self._fh.read(min(remaining, _BATCH_BYTES))
            remaining -= len(chunk)
            other.add(np.frombuffer(chunk, dtype=self._dtype).astype(np.int64))
            other.flush()
        other.end_document(n_bytes)
        self._fh.truncate(start * itemsize)
        self._fh.seek(0, os.SEEK_END)
        self.n_tokens, self.n_bytes, self.n_documents = start, self.n_bytes - n_bytes, self.n_documents - 1
        self._doc_start, self._last = start, None

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            self.flush()
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()

    def summary(self) -> dict[str, int]:
        return {"n_tokens": self.n_tokens, "n_bytes": self.n_bytes, "n_documents": self.n_documents}


def _check_usable(data: PreparedData, cfg: DataConfig) -> None:
    need = cfg.seq_len + 1
    n_train, n_val = data.n_tokens("train"), data.n_tokens("val")
    short = f"fewer than data.seq_len + 1 = {need}"
    if data.meta["n_documents"] == 1:
        raise ConfigError("data.corpus", "the corpus is a single document, and the train/validation split is "
                          "by document: use a folder of files or a .jsonl file with one document per line")
    if n_train < need:
        raise ConfigError("data.corpus", f"the training split has {n_train} tokens, {short}; "
                          "use a bigger corpus or a smaller data.seq_len")
    if n_val < need:
        raise ConfigError("data.val_fraction", f"the validation split has {n_val} tokens, {short}; "
                          f"raise data.val_fraction (now {cfg.val_fraction}) or use a bigger corpus")


def _remove_stale(shards_dir: Path) -> None:
    """Delete temporary and trash dirs left by preparers that crashed more than a day ago."""
    now = time.time()
    for entry in shards_dir.iterdir():
        if not entry.name.startswith((".tmp-", ".trash-")) or not entry.is_dir():
            continue
        try:
            newest = max([entry.stat().st_mtime] + [p.stat().st_mtime for p in entry.rglob("*")])
        except OSError:
            continue  # removed meanwhile by its owner
        if now - newest > _STALE_TMP_S:
            shutil.rmtree(entry, ignore_errors=True)


__all__ = ["PreparedData", "entry_inputs", "entry_key", "is_val_document", "open_entry", "prepare_shards",
           "shard_dtype"]
