"""EqualInfoAC's window-end rules side by side under one M1: bytes per window of "cell", "first-match" and Lester et
al.'s "paper" rule (with its failure rate: windows that decode to other bytes than they hold), per window size.

M1 comes from a saved neural tokenizer folder (`ac` or `equalinfo-ac`, e.g. a compressed-text report's
`tokenizers/equalinfo_w16`); the text is the first `--kib` KiB of `--corpus` documents, each cut to 4 KiB so the
M1 rows stay busy. Round trips of the lossless rules are checked. Prints one JSON line.

    python benchmarks/equalinfo_rules.py --tokenizer DIR --corpus PATH [--kib 32] [--windows 16,32]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from isoflop.data.config import DataConfig
from isoflop.data.corpus import iter_documents
from isoflop.data.tokenizers import load_saved_tokenizer
from isoflop.data.tokenizers.equalinfo import EqualInfoACTokenizer


def documents(corpus: str, n_bytes: int) -> list[bytes]:
    out: list[bytes] = []
    for doc in iter_documents(DataConfig(corpus=corpus)):
        if sum(map(len, out)) >= n_bytes:
            break
        out.append(doc[:4096])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a saved ac / equalinfo-ac folder (its M1 is used)")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--kib", type=int, default=32)
    parser.add_argument("--windows", default="16,32")
    args = parser.parse_args()
    m1 = load_saved_tokenizer(args.tokenizer).m1
    docs = documents(args.corpus, args.kib * 1024)
    n_bytes = sum(map(len, docs))
    result: dict[str, object] = {"bench": "equalinfo_rules", "bytes": n_bytes, "documents": len(docs),
                                 "m1_params": int(sum(p.numel() for p in m1.model.parameters()))}
    for w in (int(x) for x in args.windows.split(",")):
        for rule in ("cell", "first-match", "paper"):
            tok = EqualInfoACTokenizer(m1, window_bits=w, token_bits=8, decoding=rule)
            start = time.perf_counter()
            ids, stats = tok.encode_with_stats(docs)
            seconds = time.perf_counter() - start
            entry = {"bytes_per_window": n_bytes / stats["windows"], "bytes_per_token": n_bytes / sum(map(len, ids)),
                     "greedy_bytes_per_window": stats["greedy_symbols"] / stats["windows"],
                     "encode_bytes_per_s": n_bytes / seconds}
            if rule == "paper":
                entry.update(tok.paper_rule_failures(docs))
            else:
                stream = np.concatenate([np.append(i, tok.eot_id) for i in ids])
                entry["lossless"] = tok.decode(stream) == b"".join(docs)
            result[f"w{w}_{rule}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
