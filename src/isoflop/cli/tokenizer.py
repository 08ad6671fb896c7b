"""`isoflop tokenizer train|encode|decode|stats`: make a tokenizer folder, use it on files, measure it.

    isoflop tokenizer train --kind K --corpus PATH --out DIR [--vocab-size V] [--token-bits N] [--window-bits W]
                            [--max-bytes B] [--m1 RUN_DIR] [--set key=value ...]
    isoflop tokenizer encode DIR --in FILE --out TOKENS.npy
    isoflop tokenizer decode DIR --in TOKENS.npy --out FILE
    isoflop tokenizer stats DIR --corpus PATH [--max-bytes B] [--json]

`train` builds the kind's config (`data.tokenizer.*` in a run config) from `--kind`, the shorthand flags and
`--set` (keys of that kind, with or without the `data.tokenizer.` prefix), so a new kind needs no CLI change;
a flag the kind has no field for is bad input. It learns from the corpus's training documents (those a run
with the default `data.val_fraction` trains on). A run then uses the folder with
`--set data.tokenizer.kind=K --set data.tokenizer.path=DIR`. The neural AC kinds (`ac`, `equalinfo-ac`) need
M1, a byte-level model: `--m1 RUN_DIR` takes a finished byte-tokenizer run's model, else `train` first trains
one on the same corpus in a temporary run directory, as `--set m1_<field>=VALUE` says (the fields of
`M1Training`: m1_steps, m1_d_model, m1_n_layers, m1_seq_len, m1_batch_size, m1_lr); M1's weights go into the
tokenizer folder, which fixes M1 for every run that uses it. Every output is written to a temporary sibling
and renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

from isoflop.cli.common import print_json
from isoflop.config import Config, ConfigError, config, require
from isoflop.rundir import atomic

# shorthand flag -> the config field it sets, where the kind has that field
_SHORTHANDS = {"vocab_size": "--vocab-size", "token_bits": "--token-bits", "window_bits": "--window-bits"}
M1_PREFIX = "m1_"  # `--set m1_steps=1000` sets M1Training.steps


@config
class M1Training(Config):
    """How `train` trains M1 for a neural AC kind when no `--m1 RUN_DIR` is given: a byte-tokenizer run on the
    same corpus (AdamW, the trainer's default schedule, 5% of the documents held out). Set with
    `--set m1_<field>=VALUE`. The defaults make a small M1 that trains in minutes on a CPU; Lester et al.
    2024 (§3.2, Table 4) trained a 3-layer, d_model 256 M1 on 1,024-byte contexts."""

    steps: int = 300
    """Training steps."""
    d_model: int = 128
    """Width (Lester et al.'s M1: 256); heads of 64 dimensions."""
    n_layers: int = 2
    """Blocks (Lester et al.'s M1: 3)."""
    seq_len: int = 256
    """Training context in bytes (Lester et al.: 1024): also the default `context` of an `ac` tokenizer."""
    batch_size: int = 16
    """Batch, in sequences."""
    lr: float = 0.003
    """Peak learning rate."""

    def __post_init__(self) -> None:
        for name in ("steps", "d_model", "n_layers", "seq_len", "batch_size"):
            require(getattr(self, name) >= 1, name, f"must be positive, got {getattr(self, name)}")
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")

    def run_config(self, corpus: str, max_bytes: int | None) -> dict[str, Any]:
        """The byte-level run that trains M1, as an ExperimentConfig dict."""
        return {
            "data": {"corpus": corpus, "max_bytes": max_bytes, "seq_len": self.seq_len,
                     "tokenizer": {"kind": "byte"}, "val_fraction": 0.05},  # a val split of a few seq_len at least
            "model": {"d_model": self.d_model, "n_layers": self.n_layers, "n_heads": max(1, self.d_model // 64)},
            "train": {"horizon": {"steps": self.steps}, "batch_size": self.batch_size},
            "optim": {"lr": self.lr}, "eval": {"batches": 4}, "log": {"every": max(1, self.steps // 10)},
        }


def add_tokenizer_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    train = sub.add_parser("train", help="learn (or just configure) a tokenizer and save it in --out DIR")
    train.add_argument("--kind", required=True, help="byte, bpe, unigram, bytepiece, gzip, ...")
    train.add_argument("--corpus", required=True, help='a file, a folder, or "stdlib"')
    train.add_argument("--out", required=True, metavar="DIR", help="the tokenizer folder to create")
    train.add_argument("--vocab-size", type=int, default=None)
    train.add_argument("--token-bits", type=int, default=None)
    train.add_argument("--window-bits", type=int, default=None)
    train.add_argument("--max-bytes", type=int, default=None, help="read at most this many corpus bytes")
    train.add_argument("--m1", default=None, metavar="RUN_DIR",
                       help="ac / equalinfo-ac: a byte-tokenizer run whose model is M1 (default: train one)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a knob of the kind, e.g. --set train_bytes=1000000, or of M1's training "
                            "(ac / equalinfo-ac without --m1), e.g. --set m1_steps=1000 (repeatable)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    for name, help_text in (("encode", "tokenize a file into a .npy array of ids"),
                            ("decode", "turn a .npy array of ids back into bytes")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("dir", metavar="DIR", help="a saved tokenizer folder")
        p.add_argument("--in", dest="input", required=True, metavar="FILE")
        p.add_argument("--out", required=True, metavar="FILE")
    stats = sub.add_parser("stats", help="bytes per token and throughput on a corpus")
    stats.add_argument("dir", metavar="DIR", help="a saved tokenizer folder")
    stats.add_argument("--corpus", required=True, help='a file, a folder, or "stdlib"')
    stats.add_argument("--max-bytes", type=int, default=None, help="read at most this many corpus bytes")
    stats.add_argument("--json", action="store_true", help="print one JSON object")


def tokenizer(args: argparse.Namespace) -> int:
    return {"train": _train, "encode": _encode, "decode": _decode, "stats": _stats}[args.action](args)


def tokenizer_config(kind: str, flags: dict[str, Any], overrides: list[str]) -> Any:
    """The kind's TokenizerConfig from the shorthand flags (field -> value, None = not given) and `--set`
    (its `m1_*` overrides aside: see `split_overrides`)."""
    from isoflop.config import apply_overrides
    from isoflop.data.config import TokenizerConfig

    try:
        cls = TokenizerConfig.variant_class(kind)
    except ConfigError as e:
        raise ConfigError("--kind", e.problem) from None
    fields = set(cls.__dataclass_fields__)
    data: dict[str, Any] = {"kind": kind}
    for name, value in flags.items():
        if value is None:
            continue
        if name not in fields:
            raise ConfigError(_SHORTHANDS[name], f"does not apply to kind {kind!r}")
        data[name] = value
    prefix = "data.tokenizer."
    stripped = [o[len(prefix):] if o.startswith(prefix) else o for o in overrides]
    if any(o.partition("=")[0].strip() in ("kind", "path") for o in stripped):
        raise ConfigError("--set", "kind is given by --kind, and path is for runs loading a saved tokenizer")
    data = apply_overrides(data, stripped, TokenizerConfig)
    return TokenizerConfig.from_dict(data)


def split_overrides(overrides: list[str]) -> tuple[list[str], M1Training]:
    """`--set` items as (the kind's, without the `data.tokenizer.` prefix; M1Training from the `m1_*` ones)."""
    from isoflop.config import apply_overrides
    from isoflop.registry import did_you_mean

    items = [o.removeprefix("data.tokenizer.") for o in overrides]
    m1_items = [o for o in items if o.startswith(M1_PREFIX)]
    options = [M1_PREFIX + f.name for f in dataclasses.fields(M1Training)]
    for item in m1_items:
        key = item.partition("=")[0].strip()
        if key not in options:
            raise ConfigError(key, f"is not an M1 training option{did_you_mean(key, options)}; "
                              f"choose from {', '.join(options)}")
    try:
        m1 = M1Training.from_dict(apply_overrides({}, [o[len(M1_PREFIX):] for o in m1_items], M1Training))
    except ConfigError as e:
        raise ConfigError(M1_PREFIX + e.key, e.problem) from None
    return [o for o in items if not o.startswith(M1_PREFIX)], m1


def _train(args: argparse.Namespace) -> int:
    from isoflop.data.config import DataConfig
    from isoflop.data.corpus import corpus_files, iter_documents
    from isoflop.data.shards import is_val_document

    flags = {"vocab_size": args.vocab_size, "token_bits": args.token_bits, "window_bits": args.window_bits}
    overrides, m1_training = split_overrides(args.overrides)
    cfg = tokenizer_config(args.kind, flags, overrides)
    if not cfg.needs_m1 and len(overrides) < len(args.overrides):
        raise ConfigError("--set", f"m1_* options apply only to the kinds ac and equalinfo-ac, not {args.kind!r}")
    out = Path(args.out)
    try:
        atomic.check_empty_or_absent(out)
    except ConfigError as e:
        raise ConfigError("--out", f"{out} {e.problem}") from None
    try:
        data_cfg = DataConfig(corpus=args.corpus, max_bytes=args.max_bytes)
    except ConfigError as e:
        raise ConfigError("--max-bytes" if e.key == "max_bytes" else "--corpus", e.problem) from None
    files = corpus_files(data_cfg)
    val_fraction = data_cfg.val_fraction
    docs = (d for i, d in enumerate(iter_documents(data_cfg, files)) if not is_val_document(i, val_fraction))
    start = time.perf_counter()
    if cfg.needs_m1:  # the neural AC kinds: M1 first (data cannot import train)
        tok = cfg.build_with_m1(_m1_model(args, m1_training, data_cfg))
    elif args.m1 is not None:
        raise ConfigError("--m1", f"applies only to the kinds ac and equalinfo-ac, not {args.kind!r}")
    else:
        tok = cfg.build(docs if cfg.needs_training else None)
    seconds = time.perf_counter() - start
    cfg = dataclasses.replace(cfg, **cfg.saved_knobs(tok.meta()))  # e.g. an ac context from M1's length
    _atomic_dir(out, tok.save)
    result = {"kind": tok.kind, "out": str(out), "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint(),
              "train_s": round(seconds, 3), "config": cfg.to_dict()}
    if cfg.needs_m1:
        result["m1"] = tok.meta()["m1"]  # M1's shape (m1.describe), as the folder's meta holds it
    if args.json:
        print_json(result)
    else:
        print(f"saved {tok.kind} tokenizer (vocabulary {tok.vocab_size}) in {out} after {seconds:.1f} s; "
              f"train with --set data.tokenizer.kind={tok.kind} --set data.tokenizer.path={out}")
    return 0


def _m1_model(args: argparse.Namespace, training: M1Training, data_cfg: Any) -> Any:
    """M1 for a neural AC kind: the model of the byte-level run `--m1`, or one trained now on the corpus."""
    import tempfile

    from isoflop.train.artifacts import load_config, load_model

    if args.m1 is not None:
        try:
            run_cfg = load_config(args.m1)
        except ConfigError as e:
            raise ConfigError("--m1", f"{args.m1}: {e.problem}") from None
        kind = run_cfg.data.tokenizer.kind
        if kind != "byte":
            raise ConfigError("--m1", f"{args.m1} is a {kind!r} run; M1 must be byte-level (data.tokenizer.kind=byte)")
        try:
            return load_model(args.m1)
        except ConfigError as e:
            raise ConfigError("--m1", f"{args.m1}: {e.problem}") from None
    from isoflop.train.run import run_training
    from isoflop.train.spec import ExperimentConfig

    run = ExperimentConfig.from_dict(training.run_config(data_cfg.corpus, data_cfg.max_bytes))
    with tempfile.TemporaryDirectory(prefix="isoflop-m1-") as tmp:
        run_training(run, Path(tmp) / "m1_run")
        return load_model(Path(tmp) / "m1_run")


def _encode(args: argparse.Namespace) -> int:
    import numpy as np

    tok = _load(args.dir)
    data = _read(args.input, "--in")
    ids = tok.encode(data)
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    _atomic_file(Path(args.out), lambda fh: np.save(fh, ids.astype(dtype), allow_pickle=False))
    print(f"{len(data):,} bytes -> {len(ids):,} tokens in {args.out}", file=sys.stderr)
    return 0


def _decode(args: argparse.Namespace) -> int:
    import numpy as np

    tok = _load(args.dir)
    try:
        ids = np.load(args.input, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError("--in", f"{args.input}: no such file") from None
    except (OSError, ValueError) as e:
        raise ConfigError("--in", f"{args.input}: not a .npy array of ids ({e})") from None
    if ids.dtype.kind not in "iu":
        raise ConfigError("--in", f"{args.input}: holds {ids.dtype} values, not integer ids")
    try:
        data = tok.decode(ids)
    except ValueError as e:
        raise ConfigError("--in", f"{args.input}: {e}") from None
    _atomic_file(Path(args.out), lambda fh: fh.write(data))
    print(f"{ids.size:,} tokens -> {len(data):,} bytes in {args.out}", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:
    import numpy as np

    from isoflop.data.config import DataConfig
    from isoflop.data.corpus import corpus_files, iter_documents

    tok = _load(args.dir)
    try:
        data_cfg = DataConfig(corpus=args.corpus, max_bytes=args.max_bytes)
    except ConfigError as e:
        raise ConfigError("--max-bytes" if e.key == "max_bytes" else "--corpus", e.problem) from None
    docs = list(iter_documents(data_cfg, corpus_files(data_cfg)))
    n_bytes = sum(len(d) for d in docs)
    if n_bytes == 0:
        raise ConfigError("--corpus", "holds no bytes to measure")
    tok.decode(tok.encode(b"warm-up\n"))  # one-time set-up (numba loading its compiled kernels) is not throughput
    last_said = start = time.perf_counter()

    def encoding(coded: int) -> None:  # the neural kinds code a few KB/s: show that they are moving
        nonlocal last_said
        if time.perf_counter() - last_said > 5.0:
            print(f"isoflop tokenizer stats: encoded {coded / 1e6:.2f} of {n_bytes / 1e6:.2f} MB", file=sys.stderr,
                  flush=True)
            last_said = time.perf_counter()

    encoded = tok.encode_batch(docs, progress=encoding)
    encode_s = time.perf_counter() - start
    stream = np.concatenate([np.append(ids, tok.eot_id) for ids in encoded])  # as shards hold them
    start = time.perf_counter()
    decoded = tok.decode(stream)  # one call: the neural kinds decode documents side by side
    decode_s = time.perf_counter() - start
    n_tokens = sum(len(ids) for ids in encoded)
    bits_per_token = math.log2(tok.vocab_size - 1)  # the content ids (all but end-of-text) a token names
    result = {
        "kind": tok.kind, "vocab_size": tok.vocab_size, "n_documents": len(docs), "n_bytes": n_bytes,
        "n_tokens": n_tokens, "bytes_per_token": n_bytes / max(n_tokens, 1), "bits_per_token": bits_per_token,
        "bit_compression": 8 * n_bytes / max(n_tokens * bits_per_token, 1e-9),
        "encode_bytes_per_s": n_bytes / max(encode_s, 1e-9), "decode_bytes_per_s": n_bytes / max(decode_s, 1e-9),
        "lossless": decoded == b"".join(docs),
    }
    if args.json:
        print_json(result)
    else:
        documents = f"{len(docs):,} document" + ("s" if len(docs) != 1 else "")
        print(f"{tok.kind} (vocabulary {tok.vocab_size}): {n_bytes:,} bytes in {documents} -> "
              f"{n_tokens:,} tokens, {result['bytes_per_token']:.3f} bytes/token, {bits_per_token:.2f} bits/token; "
              f"encode {_rate(result['encode_bytes_per_s'])}, decode {_rate(result['decode_bytes_per_s'])}")
    return 0


def _rate(bytes_per_s: float) -> str:
    """MB/s, or KB/s for the neural kinds' few thousand bytes a second (0.00 MB/s says nothing)."""
    return f"{bytes_per_s / 1e6:.2f} MB/s" if bytes_per_s >= 1e5 else f"{bytes_per_s / 1e3:.2f} KB/s"


def _load(directory: str) -> Any:
    from isoflop.data.tokenizers.base import load_saved_tokenizer

    return load_saved_tokenizer(directory)


def _read(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(option, f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(option, f"{path}: cannot read ({e.strerror or e})") from None


def _atomic_file(path: Path, write: Any) -> None:
    """Write through `write(fh)` (into memory), then replace `path` atomically; an OSError names --out."""
    buffer = io.BytesIO()
    write(buffer)
    try:
        atomic.write_bytes(path, buffer.getvalue())
    except OSError as e:
        raise ConfigError("--out", f"{path}: cannot write ({e.strerror or e})") from None


def _atomic_dir(path: Path, save: Any) -> None:
    """`save(folder)` into a folder that appears at `path` whole or not at all; an OSError names --out."""
    try:
        atomic.build_dir(path, save)
    except OSError as e:
        raise ConfigError("--out", f"{path}: cannot write ({e.strerror or e})") from None


__all__ = ["M1Training", "add_tokenizer_args", "split_overrides", "tokenizer", "tokenizer_config"]
