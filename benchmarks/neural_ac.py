"""Neural arithmetic-coding tokenizers (`ac`, `equalinfo-ac`) against static-ac and gzip, on Python source.

Trains M1 (a byte-level run, `isoflop tokenizer train --kind ac`, `--m1-steps` steps, the kind's default shape)
on the first `--train-mib` MiB of the `stdlib` corpus, then measures on the next `--kib` KiB of documents
(held out from M1 and from static-ac's counts): bytes per token of each kind, encode and decode bytes/s
(wall clock, batched over the documents), and EqualInfoAC's lossless window rule against Lester et al.'s
greedy look-ahead ("paper") rule: bytes/token of each and the paper rule's failure rate (windows decoded
wrongly, every window decoded alone). Prints one JSON line.

    python benchmarks/neural_ac.py [--kib 64] [--train-mib 2] [--m1-steps 300] [--paper-kib 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from isoflop.cli import main as cli
from isoflop.data.config import DataConfig
from isoflop.data.corpus import iter_documents
from isoflop.data.tokenizers import load_saved_tokenizer
from isoflop.data.tokenizers.equalinfo import EqualInfoACTokenizer
from isoflop.data.tokenizers.gzip import GzipTokenizer
from isoflop.data.tokenizers.neural_ac import ACTokenizer
from isoflop.data.tokenizers.static_ac import StaticACTokenizer


def split_corpus(train_bytes: int, eval_bytes: int) -> tuple[list[bytes], list[bytes]]:
    """The documents of the first `train_bytes` bytes, then whole documents up to `eval_bytes` (each cut to
    4 KiB so one long file does not dominate and the 16 M1 rows stay busy)."""
    train, held, size = [], [], 0
    for doc in iter_documents(DataConfig(corpus="stdlib")):
        if size < train_bytes:
            train.append(doc)
            size += len(doc)
        elif sum(map(len, held)) < eval_bytes:
            held.append(doc[:4096])
        else:
            break
    return train, held


def measure(tok, docs: list[bytes]) -> dict[str, float]:
    n_bytes = sum(map(len, docs))
    start = time.perf_counter()
    ids = tok.encode_batch(docs)
    encode_s = time.perf_counter() - start
    stream = np.concatenate([np.append(i, tok.eot_id) for i in ids])
    start = time.perf_counter()
    back = tok.decode(stream)
    decode_s = time.perf_counter() - start
    assert back == b"".join(docs), f"{tok.kind} round trip failed"
    n_tokens = sum(i.size for i in ids)
    return {"bytes_per_token": round(n_bytes / n_tokens, 4), "encode_bytes_per_s": round(n_bytes / encode_s, 1),
            "decode_bytes_per_s": round(n_bytes / decode_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--train-mib", type=float, default=2.0)
    parser.add_argument("--m1-steps", type=int, default=300)
    parser.add_argument("--paper-kib", type=int, default=16, help="text for the paper rule's failure count")
    args = parser.parse_args()
    train_bytes = int(args.train_mib * 2**20)
    train, held = split_corpus(train_bytes, args.kib * 1024)
    n_bytes = sum(map(len, held))
    result: dict[str, object] = {"bench": "neural_ac", "eval_bytes": n_bytes, "eval_documents": len(held),
                                 "m1_steps": args.m1_steps}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rc = cli(["tokenizer", "train", "--kind", "ac", "--corpus", "stdlib", "--max-bytes", str(train_bytes),
                  "--out", f"{tmp}/ac", "--set", f"m1_steps={args.m1_steps}"])
        assert rc == 0
        result["m1_train_s"] = round(time.perf_counter() - start, 1)
        ac = load_saved_tokenizer(Path(tmp) / "ac")
    assert isinstance(ac, ACTokenizer)
    m1 = ac.m1
    result["m1"] = ac.meta()["m1"]
    result["ac_info_bits_per_byte"] = round(sum(ac.information_bits(held)) / n_bytes, 4)
    result["ac_v256"] = measure(ac, held)
    result["ac_v65k_bytes_per_token"] = round(
        n_bytes / sum(i.size for i in ACTokenizer(m1, token_bits=16).encode_batch(held)), 4)
    for w in (16, 32):
        eq = EqualInfoACTokenizer(m1, window_bits=w, token_bits=16)
        result[f"equalinfo_b{w}_v65k"] = measure(eq, held)
    # The lossless rule against the paper's greedy rule (same M1, W=16, N=16).
    lossless = EqualInfoACTokenizer(m1, window_bits=16, token_bits=16)
    paper = EqualInfoACTokenizer(m1, window_bits=16, token_bits=16, decoding="paper")
    ids_l, stats_l = lossless.encode_with_stats(held)
    ids_p, stats_p = paper.encode_with_stats(held)
    sub, size = [], 0
    for doc in held:
        if size >= args.paper_kib * 1024:
            break
        sub.append(doc)
        size += len(doc)
    failures = paper.paper_rule_failures(sub)
    result["window_rule_b16_v65k"] = {
        "lossless_bytes_per_token": round(n_bytes / sum(i.size for i in ids_l), 4),
        "paper_greedy_bytes_per_token": round(n_bytes / sum(i.size for i in ids_p), 4),
        "lossless_windows_kept_over_greedy_symbols": round(stats_l["kept_symbols"] / stats_l["greedy_symbols"], 4),
        "paper_failures": failures["failures"], "paper_windows": failures["windows"],
        "paper_failure_rate": round(failures["failures"] / max(failures["windows"], 1), 4),
        "paper_failure_text_bytes": size,
    }
    static = {n: StaticACTokenizer.train(train, token_bits=n, train_bytes=train_bytes) for n in (8, 16)}
    result["static_ac_v256"] = measure(static[8], held)
    result["static_ac_v65k_bytes_per_token"] = measure(static[16], held)["bytes_per_token"]
    result["gzip_v256_bytes_per_token"] = measure(GzipTokenizer(token_bits=8, level=6), held)["bytes_per_token"]
    result["gzip_v65k_bytes_per_token"] = measure(GzipTokenizer(token_bits=16, level=6), held)["bytes_per_token"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
