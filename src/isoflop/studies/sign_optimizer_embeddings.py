"""sign-optimizer-embeddings: under Lion / Tiger the input-embedding row of a rare token drifts to ±1/λ (Su,
kexue.fm 9736; the fixed point of a sign step against decoupled decay: θ = sign(m)/λ), and the remedies keep it
bounded.

The study writes its own corpus (so nothing is downloaded): documents of random words over a small alphabet,
with one byte (RARE_BYTE) that occurs exactly once, early in one training document. With the byte tokenizer
that byte is a token seen once per epoch. Once seen, its row's momentum stays non-zero; sign(m) = ±1 moves the
row a full step every step while the token is absent, towards the fixed point θ* = -sign(m)/λ of
θ <- θ - η(sign(m) + λθ), which it approaches on a time scale of 1/(ηλ) steps. Weight decay λ and lr are set so
that 1/(ηλ) is a fraction of the run: λ = 0.1 (θ* = 10), η = 1e-2, so 1/(ηλ) = 1000 steps of 2000.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isoflop.recipes.baseline import tiny
from isoflop.rundir import RunDir
from isoflop.studies import Study
from isoflop.train.spec import ExperimentConfig

RARE_BYTE = ord("~")
"""The rare token: '~' never occurs in the generated words, so with the byte tokenizer its id is 126."""
WEIGHT_DECAY = 0.1
SIGN_LR = 1e-2
ADAMW_LR = 3e-3  # the `tiny` recipe's AdamW lr
VAL_FRACTION = 0.05
#: (name, optimizer kind, optim.embeddings, tied): the plain rule, both remedies, tying, and AdamW.
RUNS = (
    ("lion", "lion", "sign", False), ("lion_lazy", "lion", "lazy", False), ("lion_adamw_emb", "lion", "adamw", False),
    ("lion_tied", "lion", "sign", True),
    ("tiger", "tiger", "sign", False), ("tiger_lazy", "tiger", "lazy", False),
    ("tiger_adamw_emb", "tiger", "adamw", False), ("tiger_tied", "tiger", "sign", True),
    ("adamw", "adamw", None, False),
)
WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "it",
         "an", "be", "this", "are", "or", "his", "her", "which", "they", "one", "had", "not", "but", "what")


def write_corpus(folder: Path, *, n_docs: int, doc_bytes: int, seed: int = 0) -> Path:
    """Documents of Zipf-weighted random words; RARE_BYTE once, early in the first training document."""
    from isoflop.data.shards import is_val_document

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    rare_doc = next(i for i in range(n_docs) if not is_val_document(i, VAL_FRACTION))
    for i in range(n_docs):
        words, size = [], 0
        while size < doc_bytes:
            word = rng.choices(WORDS, weights)[0]
            words.append(word + ("." if rng.random() < 0.1 else ""))
            size += len(words[-1]) + 1
        if i == rare_doc:
            words.insert(3, chr(RARE_BYTE))
        (folder / f"doc_{i:04d}.txt").write_text(" ".join(words) + "\n")
    return folder


def _base(corpus: Path, smoke: bool) -> ExperimentConfig:
    from isoflop.config import apply_overrides

    shape = (["model.d_model=32", "data.seq_len=32", "train.horizon.steps=20", "train.batch_size=8",
              "checkpoint.every=5", "eval.every=0", "eval.batches=2", "log.every=5"] if smoke else
             ["model.d_model=32", "data.seq_len=32", "train.horizon.steps=2000", "train.batch_size=8",
              "checkpoint.every=100", "eval.every=1000", "eval.batches=4", "log.every=100"])
    overrides = [f"data.corpus={corpus}", "data.tokenizer.kind=byte", "data.max_bytes=null",
                 f"data.val_fraction={VAL_FRACTION}", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
                 "schedule.kind=constant", "checkpoint.keep=1000", *shape]
    return ExperimentConfig.from_dict(apply_overrides(tiny().to_dict(), overrides, ExperimentConfig))


def rare_row_trace(run_dir: str | Path | RunDir, token_id: int) -> list[dict[str, float]]:
    """max |θ| and mean |θ| of the input-embedding row `token_id` at every checkpoint of the run."""
    from isoflop.train import checkpoint

    run, out = RunDir(run_dir), []
    for step in run.checkpoint_steps():
        state, _, _ = checkpoint.load(run.step_dir(step), with_optimizer=False)
        row = state["embed.weight"][token_id].abs()
        out.append({"step": step, "max_abs": float(row.max()), "mean_abs": float(row.mean())})
    return out


def frequent_rows(run_dir: str | Path | RunDir, token_ids: list[int]) -> tuple[float, float]:
    """(mean over `token_ids` of each final input-embedding row's max |θ|, mean |θ| over those rows): what a
    frequent token's row looks like."""
    from isoflop.train import checkpoint

    state, _, _ = checkpoint.load(RunDir(run_dir).checkpoint(), with_optimizer=False)
    rows = state["embed.weight"][token_ids].abs()
    return float(rows.amax(dim=1).mean()), float(rows.mean())


class SignOptimizerEmbeddings(Study):
    name = "sign-optimizer-embeddings"
    description = "a rare token's embedding row drifts to ±1/λ under Lion/Tiger; lazy rows, AdamW or tying fix it"
    claim = ("With a sign optimizer (Lion, Tiger) and weight decay λ, the input-embedding components of a rarely "
             "seen token settle at ±1/λ; updating only present rows (lazy), AdamW for the embedding, or tied "
             "embeddings keep them bounded (Su, kexue.fm 9736).")

    def prepare_inputs(self, out: Path, *, smoke: bool, progress: Callable[[str], None] | None = None) -> None:
        from isoflop.rundir.atomic import build_dir

        folder = out / "corpus"
        if not folder.is_dir():  # written once: the runs' shards are keyed by its contents
            n_docs, size = (16, 1500) if smoke else (48, 2700)  # full: ~128 kB, an epoch is ~500 steps
            build_dir(folder, lambda tmp: write_corpus(tmp, n_docs=n_docs, doc_bytes=size))

    def runs(self, out: Path, *, smoke: bool) -> dict[str, ExperimentConfig]:
        from isoflop.config import apply_overrides

        base = _base((out / "corpus").resolve(), smoke)
        runs = {}
        for name, kind, embeddings, tied in RUNS:
            o = [f"optim.kind={kind}", f"optim.weight_decay={WEIGHT_DECAY}", f"model.tie_embeddings={tied}"]
            o.append(f"optim.lr={ADAMW_LR if kind == 'adamw' else SIGN_LR}")
            if embeddings is not None:
                o.append(f"optim.embeddings={embeddings}")
            runs[name] = ExperimentConfig.from_dict(apply_overrides(base.to_dict(), o, ExperimentConfig))
        return runs

    def measure(self, run_dirs: dict[str, RunDir], *, smoke: bool) -> dict[str, Any]:
        import numpy as np

        from isoflop.data.shards import prepare_shards
        from isoflop.train.artifacts import load_config

        cfg = load_config(run_dirs[RUNS[0][0]].path)
        train_tokens = prepare_shards(cfg.data).tokens("train")
        counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=257)
        frequent = [int(i) for i in np.argsort(counts)[::-1][:20] if counts[i] > 0 and i != RARE_BYTE]
        bound = 1 / WEIGHT_DECAY
        rows, series, mean_series, traces = [], [], [], {}
        for name, kind, embeddings, tied in RUNS:
            run = run_dirs[name]
            trace = rare_row_trace(run, RARE_BYTE)
            traces[name] = trace
            final = trace[-1]
            frequent_max, frequent_mean = frequent_rows(run, frequent)
            rows.append({"run": name, "optimizer": kind, "embeddings": embeddings or "-", "tied": tied,
                         "lr": load_config(run.path).optim.lr, "bound": bound, "rare_max": final["max_abs"],
                         "rare_mean": final["mean_abs"], "rare_max_over_bound": final["max_abs"] / bound,
                         "frequent_max": frequent_max, "frequent_mean": frequent_mean,
                         "val_loss": run.read_record().val_loss})
            style = "-" if kind != "adamw" else "k--"
            series.append({"label": name, "x": [t["step"] for t in trace], "y": [t["max_abs"] for t in trace],
                           "style": style})
            mean_series.append({"label": name, "x": [t["step"] for t in trace], "y": [t["mean_abs"] for t in trace],
                                "style": style})
        drifted = [r["run"] for r in rows if r["rare_max_over_bound"] > 0.5]
        plain = [r for r in rows if r["embeddings"] == "sign" and not r["tied"]]
        findings = [
            f"The rare token ('~', id {RARE_BYTE}) occurs {int(counts[RARE_BYTE])} time(s) in the "
            f"{len(train_tokens):,}-token training split, i.e. about once per epoch.",
            "Plain sign rule, untied: " + ", ".join(f"{r['run']} max|θ| = {r['rare_max']:.2f} "
                                                   f"({r['rare_max_over_bound']:.0%} of 1/λ = {bound:g}), mean|θ| = "
                                                   f"{r['rare_mean']:.2f}" for r in plain) + ".",
            "Runs whose rare row passed half of 1/λ: " + (", ".join(drifted) or "none") + ".",
            "Remedies that kept the rare row below 0.1/λ: " + (", ".join(
                r["run"] for r in rows if r["optimizer"] != "adamw" and r["rare_max_over_bound"] < 0.1) or "none")
            + "; tied embeddings " + ("did" if all(r["rare_max_over_bound"] < 0.1 for r in rows if r["tied"])
                                      else "did NOT") + " keep it bounded here (the tied row's output-side gradient, "
            "which pushes an unseen token's logit down, has a steady sign, so sign(m) stays fixed as well).",
            "`frequent row` columns: the same statistics for the 20 most frequent tokens, for scale; the anomaly "
            "is a row whose *mean* |θ| approaches 1/λ (every component at ±1/λ).",
        ]
        m = cfg.model
        setting = (f"{'SMOKE (seconds-long, not a measurement): ' if smoke else ''}a generated corpus (random words, "
                   f"'~' once), byte tokenizer, d_model {m.d_model}, {m.n_layers} layers, seq_len "
                   f"{cfg.data.seq_len}, batch {cfg.train.batch_size}, {cfg.train.horizon.steps} steps at a constant "
                   f"lr (Lion/Tiger η = {SIGN_LR:g}, Tiger's relative to each row's RMS; AdamW {ADAMW_LR:g}), weight "
                   f"decay λ = {WEIGHT_DECAY:g} for every rule (so θ* = ±{bound:g}, 1/(ηλ) = "
                   f"{1 / (SIGN_LR * WEIGHT_DECAY):.0f} steps); `adamw` embeddings use AdamW at the same lr.")
        return {
            "study": self.name, "title": "Rare-token embedding rows under sign optimizers", "claim": self.claim,
            "setting": setting, "findings": findings,
            "columns": [{"key": "run", "label": "run", "format": "s"},
                        {"key": "optimizer", "label": "optimizer", "format": "s"},
                        {"key": "embeddings", "label": "embedding rule", "format": "s"},
                        {"key": "tied", "label": "tied", "format": ""},
                        {"key": "bound", "label": "1/λ", "format": "g"},
                        {"key": "rare_max", "label": "rare max|θ|", "format": ".3f"},
                        {"key": "rare_mean", "label": "rare mean|θ|", "format": ".3f"},
                        {"key": "rare_max_over_bound", "label": "max|θ| λ", "format": ".3f"},
                        {"key": "frequent_max", "label": "frequent row max|θ|", "format": ".3f"},
                        {"key": "frequent_mean", "label": "frequent row mean|θ|", "format": ".3f"},
                        {"key": "val_loss", "label": "val loss", "format": ".4f"}],
            "rows": rows,
            "plot": {"title": "sign-optimizer-embeddings: the rare token's row", "panels": [
                {"title": f"max |θ| of the '~' embedding row (λ = {WEIGHT_DECAY:g})", "xlabel": "step",
                 "ylabel": "max |θ|", "yscale": "log", "series": series,
                 "hlines": [{"y": bound, "label": f"1/λ = {bound:g}"}]},
                {"title": "mean |θ| of the '~' embedding row", "xlabel": "step", "ylabel": "mean |θ|",
                 "yscale": "log", "series": mean_series, "hlines": [{"y": bound, "label": f"1/λ = {bound:g}"}]}]},
            "data": {"rare_token_id": RARE_BYTE, "rare_count_train": int(counts[RARE_BYTE]), "traces": traces,
                     "frequent_ids": frequent},
        }
