"""Bytes per token and encode/decode throughput of each tokenizer kind on a slice of the stdlib corpus.

    python benchmarks/tokenizer_compression.py [--max-bytes 4000000] [--train-bytes 2000000] [--vocab-size 4096]

Trains byte, bpe, unigram, bytepiece (vocab --vocab-size) and gzip 8/16-bit on the first --train-bytes of the
corpus's training documents, then measures every kind on the first --max-bytes of the whole corpus (so the
training text is part of the measured text). Prints one JSON line: {kind: {bytes_per_token, ...}, ...}.
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
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="stdlib")
    parser.add_argument("--max-bytes", type=int, default=4_000_000)
    parser.add_argument("--train-bytes", type=int, default=2_000_000)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    results = {"corpus": args.corpus, "max_bytes": args.max_bytes, "train_bytes": args.train_bytes}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in KINDS.items():
            out = Path(tmp) / name
            flags = [f.format(V=args.vocab_size, T=args.train_bytes) for f in flags]
            trained = json.loads(subprocess.run(
                ["isoflop", "tokenizer", "train", *flags, "--corpus", args.corpus, "--out", str(out), "--json"],
                check=True, capture_output=True, text=True).stdout)
            stats = json.loads(subprocess.run(
                ["isoflop", "tokenizer", "stats", str(out), "--corpus", args.corpus, "--max-bytes",
                 str(args.max_bytes), "--json"], check=True, capture_output=True, text=True).stdout)
            results[name] = {"train_s": trained["train_s"], **stats}
            print(f"{name}: {stats['bytes_per_token']:.3f} bytes/token", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
