"""Dense Llama-style baselines on the built-in `stdlib` corpus. Other recipes derive from these.

Sizes are set so `tiny` trains in about a minute and `small` in about 15 minutes on 2 CPU cores
(throughput measured in LOG.md, 2026-11-22).
"""

from __future__ import annotations

from isoflop.data.config import BPETokenizerConfig, DataConfig
from isoflop.nn.config import ModelConfig
from isoflop.optim.config import AdamWConfig
from isoflop.optim.schedules import CosineSchedule
from isoflop.train.spec import (
    CheckpointConfig,
    EvalConfig,
    ExperimentConfig,
    HorizonConfig,
    LogConfig,
    TrainConfig,
)


def tiny() -> ExperimentConfig:
    """A 1.05M-parameter model, BPE 2048, 256-token context: about a minute on a laptop CPU."""
    return ExperimentConfig(
        model=ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, tie_embeddings=True),
        data=DataConfig(corpus="stdlib", seq_len=256, max_bytes=4_000_000, val_fraction=0.05,
                        tokenizer=BPETokenizerConfig(vocab_size=2048, train_bytes=2_000_000)),
        train=TrainConfig(horizon=HorizonConfig(steps=240), batch_size=16),
        optim=AdamWConfig(lr=3e-3, weight_decay=0.1),
        schedule=CosineSchedule(warmup=0.05, floor=0.1),
        eval=EvalConfig(every=80, batches=10),
        checkpoint=CheckpointConfig(every=80, keep=2),
        log=LogConfig(every=10),
    )


def small() -> ExperimentConfig:
    """5.5M parameters, BPE 4096, 512-token context: about 15 minutes on a laptop CPU."""
    return ExperimentConfig(
        model=ModelConfig(d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, tie_embeddings=True),
        data=DataConfig(corpus="stdlib", seq_len=512,
                        tokenizer=BPETokenizerConfig(vocab_size=4096, train_bytes=8_000_000)),
        train=TrainConfig(horizon=HorizonConfig(steps=400), batch_size=16),
        optim=AdamWConfig(lr=2e-3, weight_decay=0.1),
        schedule=CosineSchedule(warmup=0.03, floor=0.1),
        eval=EvalConfig(every=100, batches=20),
        checkpoint=CheckpointConfig(every=100, keep=2),
        log=LogConfig(every=10),
    )


def gpt2_124m() -> ExperimentConfig:
    """GPT-2 small's shape (124M parameters with tied embeddings) as a Llama: a GPU recipe, bf16 + compile,
    0.5M tokens per step, Chinchilla's 20 tokens per parameter."""
    return ExperimentConfig(
        model=ModelConfig(d_model=768, n_layers=12, n_heads=12, ffn_hidden=3072, vocab_size=50304,
                          tie_embeddings=True),
        data=DataConfig(corpus="stdlib", seq_len=1024,
                        tokenizer=BPETokenizerConfig(vocab_size=50257, train_bytes=100_000_000)),
        train=TrainConfig(horizon=HorizonConfig(tokens_per_param=20), batch_size=512, micro_batch_size=32,
                          precision="bf16", compile=True),
        optim=AdamWConfig(lr=6e-4, weight_decay=0.1),
        schedule=CosineSchedule(warmup=0.01, floor=0.1),
        eval=EvalConfig(every=500, batches=20),
        checkpoint=CheckpointConfig(every=1000, keep=2),
        log=LogConfig(every=10, peak_flops=989e12),  # H100 SXM dense bf16 (NVIDIA datasheet)
    )
