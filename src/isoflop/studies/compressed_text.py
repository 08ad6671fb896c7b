"""compressed-text: one corpus tokenized every way, the same small model (M2) trained on each (Lester et al. 2024,
"Training LLMs over Neurally Compressed Text", Tables 12, 15, 16).

`prepare_inputs` builds, in order, each step skipped when its output exists (so an interrupted report resumes):
  corpus/    `stdlib` files in a fixed pseudo-random order (a hash of the path), cut into examples of at most
             EXAMPLE_BYTES (the paper's 10,240-byte examples, §3.1); the first `m1_bytes` go to corpus/m1 (M1's
             training text), the next `m2_bytes` to corpus/m2 (every M2 run's text, train and validation).
             M1 never sees M2's text.
  m1/        M1, a byte-level run on corpus/m1 (isoflop's own trainer).
  tokenizers/<method>   the M1-driven tokenizers (`ac`, `equalinfo-ac`), M1's weights inside.
  shards     the neural methods' token shards (in the cache), two processes at a time: M1 runs on one
             thread (tokenizers/m1.py), so a 2-core machine codes two corpora at once.
Runs: the M2 shape on corpus/m2 with each method's tokenizer (the subword and static kinds learn theirs from
M2's training documents inside the run). Measure: each M2 scored on the whole validation split (the same text
for every method), bytes/token of that split, bits/byte, FLOPs/byte, next to the paper's figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isoflop.config import ConfigError, apply_overrides
from isoflop.rundir import RunDir
from isoflop.rundir.atomic import build_dir
from isoflop.studies import Study
from isoflop.train.spec import ExperimentConfig

EXAMPLE_BYTES = 10_240  # Lester et al. §3.1: M1 compresses examples of 10,240 bytes


@dataclass(frozen=True)
class Method:
    """One tokenization of the corpus: its run name, the paper's row, tokenizer settings, the paper's figures."""

    name: str
    label: str
    tokenizer: dict[str, Any]
    """`data.tokenizer` keys; a "path" of "tokenizers/<name>" is made by `prepare_inputs` with M1."""
    paper_bytes_per_token: float | None = None
    """Table 12, v=256 (the SentencePiece row for unigram)."""
    paper_bpb_25m: float | None = None
    """Tables 15/16, the 25m M2 (v=256 rows)."""


def methods(vocab: int) -> tuple[Method, ...]:
    return (
        Method("bytes", "Bytes", {"kind": "byte"}, 1.0, 1.29),
        Method("bpe", f"BPE {vocab}", {"kind": "bpe", "vocab_size": vocab}),
        Method("unigram", f"SentencePiece unigram {vocab}", {"kind": "unigram", "vocab_size": vocab}, 4.28, 1.12),
        Method("bytepiece", f"BytePiece {vocab}", {"kind": "bytepiece", "vocab_size": vocab}),
        Method("gzip", "GZip v256", {"kind": "gzip", "token_bits": 8}, 2.23, 2.34),
        Method("static_ac", "StaticAC v256", {"kind": "static-ac", "token_bits": 8}, 1.73, 4.61),
        Method("ac", "AC v256", {"kind": "ac", "token_bits": 8, "path": "tokenizers/ac"}, 5.49, 1.46),
        # the "cell" window rule: lossless and 1.3-2.2x the bytes a window of the first-match rule (LOG.md)
        Method("equalinfo_w16_cell", "EqualInfoAC b16 v256", _equalinfo(16, "cell"), 2.66, 1.47),
        Method("equalinfo_w32_cell", "EqualInfoAC b32 v256", _equalinfo(32, "cell"), 3.49, 2.05),
    )


def _equalinfo(window_bits: int, decoding: str) -> dict[str, Any]:
    name = f"equalinfo_w{window_bits}" + ("_cell" if decoding == "cell" else "")
    return {"kind": "equalinfo-ac", "token_bits": 8, "window_bits": window_bits, "decoding": decoding,
            "path": f"tokenizers/{name}"}


@dataclass(frozen=True)
class Sizes:
    """How big each part is (full study or smoke)."""

    example_bytes: int
    m1_bytes: int
    m2_bytes: int
    vocab: int
    m1: list[str]
    """Overrides of the M1 run (a byte-level ExperimentConfig)."""
    m2: list[str]
    """Overrides of every M2 run (on the `tiny` recipe)."""


FULL = Sizes(EXAMPLE_BYTES, 4_000_000, 1_500_000, 2048,
             # Lester et al.'s M1 is 3 layers at d_model 256 (§3.2); ours is narrower to code ~10 KB/s per core
             m1=["model.d_model=128", "model.n_layers=3", "model.n_heads=2", "model.n_kv_heads=2",
                 "data.seq_len=256", "train.batch_size=16", "train.horizon.steps=2000", "optim.lr=3e-3",
                 "eval.every=500", "eval.batches=8", "checkpoint.every=500"],
             # the `tiny` shape; every method sees 400 x 16 x 256 = 1.6M tokens, as the paper matches tokens (§3.5)
             m2=["train.horizon.steps=400", "eval.every=100", "eval.batches=4", "checkpoint.every=200"])
SMOKE = Sizes(2048, 60_000, 40_000, 600,
              m1=["model.d_model=32", "model.n_layers=1", "model.n_heads=1", "model.n_kv_heads=1", "data.seq_len=64",
                  "train.batch_size=4", "train.horizon.steps=10", "eval.every=5", "eval.batches=2",
                  "checkpoint.every=0"],
              m2=["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "data.seq_len=32",
                  "train.batch_size=4", "train.horizon.steps=8", "eval.every=4", "eval.batches=2",
                  "checkpoint.every=0", "log.every=4"])


def _config(base: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    return ExperimentConfig.from_dict(apply_overrides(base.to_dict(), overrides, ExperimentConfig))


def m1_config(out: Path, sizes: Sizes) -> ExperimentConfig:
    from isoflop.recipes.baseline import tiny

    data = [f"data.corpus={(out / 'corpus' / 'm1').resolve()}", "data.max_bytes=null", "data.val_fraction=0.02",
            "data.tokenizer.kind=byte"]
    return _config(tiny(), data + sizes.m1)


def m2_config(out: Path, sizes: Sizes, method: Method) -> ExperimentConfig:
    from isoflop.recipes.baseline import tiny

    data = [f"data.corpus={(out / 'corpus' / 'm2').resolve()}", "data.max_bytes=null", "data.val_fraction=0.1"]
    base = _config(tiny(), data + sizes.m2).to_dict()
    tok = dict(method.tokenizer)
    if "path" in tok:  # before `prepare_inputs` has made the folder: the planned config, good for checking overrides
        folder = out / tok.pop("path")
        if (folder / "tokenizer_meta.json").is_file():
            tok["path"] = str(folder.resolve())
    base["data"]["tokenizer"] = tok
    return ExperimentConfig.from_dict(base)


class CompressedText(Study):
    name = "compressed-text"
    description = "bytes, subwords, gzip, static/neural AC, EqualInfoAC: the same model on each, bits/byte and FLOPs/byte"
    claim = ("Text arithmetic-coded under a small byte LM (AC) compresses best but an LM trained on it learns nothing "
             "beyond uniform; cutting the coding into equal-information windows (EqualInfoAC) makes it learnable, "
             "though below subword tokens at equal model size; GZip and StaticAC are poor (Lester et al. 2024, "
             "Tables 12, 15, 16).")

    def prepare_inputs(self, out: Path, *, smoke: bool, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _m: None)
        sizes = SMOKE if smoke else FULL
        _write_corpus(out, sizes, say)
        m1_run = RunDir(out / "m1")
        if not m1_run.is_complete():
            from isoflop.train.run import run_training

            say(f"training M1 into {m1_run.path}")
            run_training(m1_config(out, sizes), m1_run.path, resume=m1_run.is_run())
        neural = [m for m in methods(sizes.vocab) if "path" in m.tokenizer]
        for method in neural:
            _build_neural_tokenizer(out, method, say)
        say(f"coding corpus/m2 with {', '.join(m.name for m in neural)} (M1 runs once per byte)")
        jobs = [(m2_config(out, sizes, m).data, _Prefixed(progress, f"{m.name}: ") if progress else None)
                for m in neural]
        if smoke:
            for job in jobs:
                _prepare_shards(job)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
                list(pool.map(_prepare_shards, jobs))

    def runs(self, out: Path, *, smoke: bool) -> dict[str, ExperimentConfig]:
        sizes = SMOKE if smoke else FULL
        return {m.name: m2_config(out, sizes, m) for m in methods(sizes.vocab)}

    def measure(self, run_dirs: dict[str, RunDir], *, smoke: bool) -> dict[str, Any]:
        from isoflop.nn.counting import param_groups
        from isoflop.train.artifacts import load_config

        sizes = SMOKE if smoke else FULL
        out = next(iter(run_dirs.values())).path.parent.parent
        m1_cfg = load_config(out / "m1")
        m1_non_embedding = param_groups(m1_cfg.resolved_model).non_embedding
        rows, points, curves = [], [], {}
        for method in methods(sizes.vocab):
            run = run_dirs[method.name]
            cfg, record = load_config(run.path), run.read_record()
            score = score_validation(run.path)
            n_params = param_groups(cfg.resolved_model).non_embedding
            runs_m1 = "path" in method.tokenizer
            flops = 2 * n_params / score["bytes_per_token"] + (2 * m1_non_embedding if runs_m1 else 0)
            rows.append({"method": method.label, "vocab": score["vocab_size"],
                         "bytes_per_token": score["bytes_per_token"], "paper_bytes_per_token": method.paper_bytes_per_token,
                         "uniform_bpb": score["uniform_bpb"], "val_bpb": score["val_bpb"],
                         "paper_bpb": method.paper_bpb_25m, "flops_per_byte": flops,
                         "epochs": record.D_tokens / score["train_tokens"],
                         "train_bytes": record.D_tokens * score["bytes_per_token"]})
            points.append({"label": method.label, "x": [flops], "y": [score["val_bpb"]], "style": "o"})
            evals = run.metrics.eval_records()
            per_step = run.read_plan()["tokens_per_step"]
            curves[method.name] = {"tokens": [e["step"] * per_step for e in evals], "val_bpb": [e["val_bpb"] for e in evals]}
        m1_bpb = score_m1(out / "m1", run_dirs["bytes"].path)
        return {
            "study": self.name, "title": "Training over compressed text: the same M2 on every tokenization",
            "claim": self.claim, "setting": _setting(out, sizes, m1_cfg, m1_non_embedding, m1_bpb, smoke),
            "findings": findings(rows, m1_bpb),
            "columns": [{"key": "method", "label": "method", "format": "s"},
                        {"key": "vocab", "label": "vocab", "format": "d"},
                        {"key": "bytes_per_token", "label": "bytes/token", "format": ".2f"},
                        {"key": "paper_bytes_per_token", "label": "paper (Table 12)", "format": ".2f"},
                        {"key": "val_bpb", "label": "bits/byte", "format": ".3f"},
                        {"key": "uniform_bpb", "label": "uniform bits/byte", "format": ".3f"},
                        {"key": "paper_bpb", "label": "paper 25m (Tables 15-16)", "format": ".2f"},
                        {"key": "flops_per_byte", "label": "FLOPs/byte", "format": ".3g"},
                        {"key": "epochs", "label": "epochs of M2's text", "format": ".1f"}],
            "rows": rows,
            "plot": {"title": "compressed-text: one M2 shape on every tokenization of the same text", "panels": [
                {"title": "bits/byte against inference FLOPs/byte (M1 included)", "xlabel": "FLOPs/byte",
                 "ylabel": "validation bits/byte", "xscale": "log", "series": points,
                 "hlines": [{"y": m1_bpb, "label": f"M1 ({m1_bpb:.2f})"}]},
                {"title": "validation during training", "xlabel": "training tokens", "ylabel": "bits/byte",
                 "series": [{"label": m.label, "x": curves[m.name]["tokens"],
                                              "y": curves[m.name]["val_bpb"], "style": "o-"}
                                             for m in methods(sizes.vocab)]}]},
            "data": {"curves": curves, "m1_bpb": m1_bpb, "m1_non_embedding_params": m1_non_embedding},
        }


def score_validation(run: Path) -> dict[str, float]:
    """The run's final model on its whole validation split (every full window, fp32): loss, bits/byte, and the
    split's bytes per content token; uniform_bpb is what a model guessing uniformly over the content ids scores;
    train_tokens is the size of the training split (the run may repeat it)."""
    import math

    from isoflop.data.shards import prepare_shards
    from isoflop.train.artifacts import load_config, load_model

    cfg = load_config(run)
    data = prepare_shards(cfg.data)
    result = _score_whole_split(load_model(run), data, cfg.data.seq_len)
    split = data.meta["splits"]["val"]
    bytes_per_token = split["n_bytes"] / max(split["n_tokens"] - split["n_documents"], 1)
    vocab = int(data.tokenizer.vocab_size)
    return {"val_bpb": result["val_bpb"], "val_loss": result["val_loss"], "bytes_per_token": bytes_per_token,
            "vocab_size": vocab, "uniform_bpb": math.log2(vocab - 1) / bytes_per_token,
            "train_tokens": data.n_tokens("train")}


def score_m1(m1_run: Path, bytes_run: Path) -> float:
    """M1's bits/byte on the byte-level validation split of M2's corpus (text M1 never trained on)."""
    from isoflop.data.shards import prepare_shards
    from isoflop.train.artifacts import load_config, load_model

    data = prepare_shards(load_config(bytes_run).data)
    return float(_score_whole_split(load_model(m1_run), data, load_config(m1_run).data.seq_len)["val_bpb"])


def _score_whole_split(model: Any, data: Any, seq_len: int) -> dict[str, float]:
    """The evaluation over every full `seq_len` window of the validation split, batches of 16, fp32."""
    import torch

    from isoflop.train.evaluate import EvalSet, evaluate_run

    return evaluate_run(model, EvalSet.of(data, model.cfg.vocab_size), seq_len=seq_len, batch_size=16, batches=None,
                        device=torch.device("cpu"))


def findings(rows: list[dict[str, Any]], m1_bpb: float) -> list[str]:
    """Sentences computed from the table: both orderings against the paper's, and who learns beyond uniform."""
    by = {r["method"]: r for r in rows}
    paired = [r for r in rows if r["paper_bytes_per_token"] is not None]
    ours = [r["method"] for r in sorted(paired, key=lambda r: -r["bytes_per_token"])]
    paper = [r["method"] for r in sorted(paired, key=lambda r: -r["paper_bytes_per_token"])]
    ours_bpb = [r["method"] for r in sorted(paired, key=lambda r: r["val_bpb"])]
    paper_bpb = [r["method"] for r in sorted(paired, key=lambda r: r["paper_bpb"])]
    out = [f"Compression (bytes/token, best first): ours {' > '.join(ours)}; paper (C4, Table 12) "
           f"{' > '.join(paper)}: " + ("the same order." if ours == paper else f"{_swaps(ours, paper)} of "
                                       f"{len(paired) * (len(paired) - 1) // 2} pairs differ."),
           f"Bits/byte (best first): ours {' < '.join(ours_bpb)}; paper at 25m {' < '.join(paper_bpb)}: "
           + ("the same order." if ours_bpb == paper_bpb else f"{_swaps(ours_bpb, paper_bpb)} pairs differ.")]
    flat = [r["method"] for r in rows if r["val_bpb"] > r["uniform_bpb"] - 0.02 * r["uniform_bpb"]]
    out.append("Within 2 % of the uniform-guess bits/byte (learned next to nothing): "
               + (", ".join(flat) if flat else "none") + ".")
    coded = [r for r in rows if r["method"].startswith(("EqualInfo", "AC", "GZip", "StaticAC"))]
    out.append("Compressed kinds against a uniform guess over their tokens: " + ", ".join(
        f"{r['method']} {r['val_bpb']:.3f} vs {r['uniform_bpb']:.3f} ({r['val_bpb'] / r['uniform_bpb'] - 1:+.1%})"
        for r in coded) + ".")
    ac = next((r for r in rows if r["method"].startswith("AC")), None)
    if ac is not None:
        out.append(f"AC: M2 scores {ac['val_bpb']:.3f} bits/byte against M1's {m1_bpb:.3f} on the same text and "
                   f"{ac['uniform_bpb']:.3f} for a uniform guess over AC tokens (the code's length): the paper "
                   "finds M2 cannot get below the code's length.")
    best = min(rows, key=lambda r: r["val_bpb"])
    out.append(f"Lowest bits/byte: {best['method']} ({best['val_bpb']:.3f}); FLOPs/byte counts 2 x non-embedding "
               "parameters per token over bytes/token, plus M1's 2 x non-embedding parameters per byte for the "
               "methods that run M1 (Lester et al. App. D.4).")
    if "Bytes" in by and any(r["method"].startswith("SentencePiece") for r in rows):
        sp = next(r for r in rows if r["method"].startswith("SentencePiece"))
        out.append(f"Subword vs bytes at the same M2 and tokens: {sp['val_bpb']:.3f} vs {by['Bytes']['val_bpb']:.3f} "
                   "bits/byte; the subword run also read {:.1f}x the bytes.".format(
                       sp["train_bytes"] / max(by["Bytes"]["train_bytes"], 1)))
    return out


def _swaps(a: list[str], b: list[str]) -> int:
    """Pairs ordered one way in `a` and the other in `b` (Kendall distance)."""
    pos = {m: i for i, m in enumerate(b)}
    return sum(1 for i in range(len(a)) for j in range(i + 1, len(a)) if pos[a[i]] > pos[a[j]])


def _setting(out: Path, sizes: Sizes, m1_cfg: ExperimentConfig, m1_params: int, m1_bpb: float, smoke: bool) -> str:
    m = m1_cfg.model
    return (f"{'SMOKE (seconds-long, not a measurement): ' if smoke else ''}the `stdlib` corpus (Python source, "
            f"not the paper's English C4), its files in a fixed hashed order, cut into examples of at most "
            f"{sizes.example_bytes:,} bytes: the first {sizes.m1_bytes / 1e6:g} MB train M1, the next "
            f"{sizes.m2_bytes / 1e6:g} MB are M2's text (10 % of its documents held out for validation). M1: byte-level, d_model {m.d_model}, {m.n_layers} layers, "
            f"{m1_params:,} non-embedding parameters, {m1_cfg.train.horizon.steps} steps of "
            f"{m1_cfg.train.batch_size} x {m1_cfg.data.seq_len} bytes; {m1_bpb:.3f} bits/byte on M2's validation "
            f"text (the paper's M1: 1.457 on C4). M2: one shape for every method (overrides {sizes.m2} of `tiny`), "
            "so every method sees the same number of tokens (as in the paper) and so a different amount of text, "
            "repeating M2's training text as often as the last column says; subword vocabularies "
            f"{sizes.vocab} (the paper's SentencePiece: 32k). Compressed kinds use 8-bit tokens (v=256), precision "
            "14, EqualInfoAC with the cell window rule (lossless). Bits/byte is measured on the whole validation split, "
            "the same text for every method.")


def _write_corpus(out: Path, sizes: Sizes, say: Callable[[str], None]) -> None:
    """corpus/m1 and corpus/m2: numbered .txt examples (bytes as stored), written once, atomically."""
    folder = out / "corpus"
    if folder.is_dir():
        return
    import hashlib

    from isoflop.data.config import DataConfig
    from isoflop.data.corpus import corpus_files, iter_documents

    say(f"writing the corpus: {sizes.m1_bytes:,} bytes for M1, {sizes.m2_bytes:,} for M2")
    cfg = DataConfig(corpus="stdlib")
    # Files in a fixed pseudo-random order, not path order: the first few MB in path order are mostly the
    # generated codec tables of encodings/ (LOG.md 2026-11-22), which a model learns to 0.3 bits/byte.
    files = sorted(corpus_files(cfg), key=lambda f: hashlib.sha256(f.rel.encode()).digest())

    def fill(tmp: Path) -> None:
        for part in ("m1", "m2"):
            (tmp / part).mkdir(parents=True)
        budgets, part, written, index = {"m1": sizes.m1_bytes, "m2": sizes.m2_bytes}, "m1", 0, 0
        for doc in iter_documents(cfg, files):
            for start in range(0, len(doc), sizes.example_bytes):
                example = doc[start:start + sizes.example_bytes]
                if written + len(example) > budgets[part]:
                    if part == "m2":
                        return
                    part, written = "m2", 0
                (tmp / part / f"{index:06d}.txt").write_bytes(example)
                written, index = written + len(example), index + 1
        raise ConfigError("data.corpus", f"the stdlib corpus holds fewer than {sizes.m1_bytes + sizes.m2_bytes:,} bytes")

    build_dir(folder, fill)


def _build_neural_tokenizer(out: Path, method: Method, say: Callable[[str], None]) -> None:
    from isoflop.data.config import TokenizerConfig
    from isoflop.train.artifacts import load_model

    folder = out / method.tokenizer["path"]
    if folder.is_dir():
        return
    say(f"saving the {method.name} tokenizer with M1 in {folder}")
    cfg = TokenizerConfig.from_dict({k: v for k, v in method.tokenizer.items() if k != "path"})
    tok = cfg.build_with_m1(load_model(out / "m1"))
    build_dir(folder, tok.save)


class _Prefixed:
    """`progress` with a prefix, picklable (a worker process's progress goes to the CLI's reporter)."""

    def __init__(self, progress: Callable[[str], None], prefix: str):
        self.progress, self.prefix = progress, prefix

    def __call__(self, message: str) -> None:
        self.progress(self.prefix + message)


def _prepare_shards(job: tuple[Any, _Prefixed | None]) -> None:
    """Code M2's corpus with a saved tokenizer into the shard cache (a worker process's job)."""
    from isoflop.data.shards import prepare_shards

    data_cfg, progress = job
    prepare_shards(data_cfg, progress=progress)
