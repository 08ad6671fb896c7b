"""Bytes per token and encode/decode throughput of each tokenizer kind on a slice of the stdlib corpus.

    python benchmarks/tokenizer_compression.py [--corpus stdlib|english|PATH] [--max-bytes 4000000]
                                               [--train-bytes 2000000] [--vocab-size 4096]

Trains byte, bpe, unigram, bytepiece (vocab --vocab-size), gzip and static-ac (8- and 16-bit tokens) on the
first --train-bytes of the corpus's training documents, then measures every kind on the first --max-bytes of the
whole corpus (so the training text is part of the measured text). Prints one JSON line: {kind: {...}, ...}.

`--corpus english` is English prose that ships with every CPython: the reference-manual topics of
`pydoc_data.topics` (about 0.47 MB, 79 topics, one document each), written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

KINDS = {
    "byte": ["--kind", "byte"],
    "bpe": ["--kind", "bpe", "--vocab-size", "{V}", "--set", "train_bytes={T}"],
    "unigram": ["--kind", "unigram", "--vocab-size", "{V}", "--set", "train_bytes={T}"],
    "bytepiece": ["--kind", "bytepiece", "--vocab-size", "{V}", "--set", "train_bytes={T}"],
    "gzip8": ["--kind", "gzip", "--token-bits", "8"],
    "gzip16": ["--kind", "gzip", "--token-bits", "16"],
    "static-ac8": ["--kind", "static-ac", "--token-bits", "8"],
    "static-ac16": ["--kind", "static-ac", "--token-bits", "16"],
}


def write_english(folder: Path) -> Path:
    """pydoc_data's topics, one .txt document each (UTF-8), in sorted topic order."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True)
    for i, name in enumerate(sorted(topics)):
        (folder / f"{i:03d}_{name}.txt").write_bytes(topics[name].encode("utf-8"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="stdlib")
    parser.add_argument("--max-bytes", type=int, default=4_000_000)
    parser.add_argument("--train-bytes", type=int, default=2_000_000)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    results = {"corpus": args.corpus, "max_bytes": args.max_bytes, "train_bytes": args.train_bytes}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = str(write_english(Path(tmp) / "english")) if args.corpus == "english" else args.corpus
        for name, flags in KINDS.items():
            out = Path(tmp) / name
            flags = [f.format(V=args.vocab_size, T=args.train_bytes) for f in flags]
            trained = json.loads(subprocess.run(
                ["isoflop", "tokenizer", "train", *flags, "--corpus", corpus, "--out", str(out), "--json"],
                check=True, capture_output=True, text=True).stdout)
            stats = json.loads(subprocess.run(
                ["isoflop", "tokenizer", "stats", str(out), "--corpus", corpus, "--max-bytes",
                 str(args.max_bytes), "--json"], check=True, capture_output=True, text=True).stdout)
            results[name] = {"train_s": trained["train_s"], **stats}
            print(f"{name}: {stats['bytes_per_token']:.3f} bytes/token", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
