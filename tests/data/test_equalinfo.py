"""The `equalinfo-ac` tokenizer: lossless on arbitrary bytes, windows of exactly W bits that each decode alone
(M1 and the coder reset), every window of real and highly predictable text decoded right by the first-match
and the cell rules, the paper's look-ahead rule measured failing, the cell rule's exact intervals and its
compression against the first-match rule, save/load, config, and the CLI path."""

from __future__ import annotations

import inspect
import json
import os
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from isoflop.cli import main
from isoflop.config import ConfigError
from isoflop.data.config import EqualInfoACTokenizerConfig, TokenizerConfig
from isoflop.data.tokenizers import load_saved_tokenizer
from isoflop.data.tokenizers.arithmetic import BitString, Decoder, Encoder, quantize_cdf
from isoflop.data.tokenizers.equalinfo import EqualInfoACTokenizer
from isoflop.data.tokenizers.equalinfo_cell import coding_interval
from isoflop.data.tokenizers.m1 import M1, M1Stepper, deterministic
from isoflop.data.tokenizers.neural_ac import END
from isoflop.nn.config import ModelConfig

SAMPLE = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOILERPLATE = b"# Copyright (c) the authors. All rights reserved.\n" * 40
SOURCE = textwrap.dedent(inspect.getsource(json.decoder)).encode()[:4000]  # real text: a stdlib source file


@pytest.fixture(scope="module")
def m1() -> M1:
    """A tiny M1 trained a few seconds on predictable text, so runs of 'a' cost far under a bit a byte and
    windows hold bytes that add only zero bits (the case the window-end rule is about)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny GEMMs: one thread is fastest, and a shared CPU makes two much slower
    model = ModelConfig(vocab_size=320, d_model=32, n_layers=1, n_heads=2, train_length=64).build()
    text = np.frombuffer(b"a" * 3000 + BOILERPLATE + SOURCE, dtype=np.uint8).astype(np.int64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(80):
        starts = rng.integers(0, text.size - 65, 16)
        batch = torch.from_numpy(np.stack([text[s:s + 65] for s in starts]))
        loss = torch.nn.functional.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return M1(model)


@pytest.fixture(scope="module")
def tok(m1: M1) -> EqualInfoACTokenizer:
    """The first-match rule (most tests here were written for it; `cell` is the default)."""
    return EqualInfoACTokenizer(m1, window_bits=16, token_bits=8, rows=8, decoding="first-match")


@pytest.fixture(scope="module")
def cell(m1: M1) -> EqualInfoACTokenizer:
    return EqualInfoACTokenizer(m1, window_bits=16, token_bits=8, rows=8, decoding="cell")


@SAMPLE
@given(st.binary(max_size=60))
@example(b"")
@example(b"\x00")
@example(bytes(range(256)))
@example(b"a" * 200)
@example(b"\xff\xfe\xc3(\x80 not utf-8")
def test_round_trip_arbitrary_bytes(tok: EqualInfoACTokenizer, data: bytes) -> None:
    ids = tok.encode(data)
    assert ids.size % 2 == 0 and ids.max() < tok.eot_id  # whole windows: 16 bits = two 8-bit tokens
    assert tok.decode(ids) == data


@SAMPLE
@given(st.binary(max_size=60))
@example(b"")
@example(b"\x00")
@example(bytes(range(256)))
@example(b"a" * 2000)
@example(b"\xff\xfe\xc3(\x80 not utf-8")
def test_cell_rule_round_trip_arbitrary_bytes(cell: EqualInfoACTokenizer, data: bytes) -> None:
    ids = cell.encode(data)
    assert ids.size % 2 == 0 and ids.max() < cell.eot_id
    assert cell.decode(ids) == data


@pytest.mark.parametrize("decoding", ["first-match", "cell"])
def test_batch_equals_alone(m1: M1, decoding: str) -> None:
    tok = EqualInfoACTokenizer(m1, window_bits=16, token_bits=8, rows=8, decoding=decoding)
    docs = [b"", b"x", b"a" * 300, BOILERPLATE[:200], SOURCE[:300], bytes(range(40))]
    reported: list[int] = []
    batch = tok.encode_batch(docs, progress=reported.append)
    # progress: bytes coded so far, rising, once per round of windows, ending at all of them
    assert len(reported) > 1 and reported == sorted(reported) and reported[-1] == sum(map(len, docs))
    for doc, ids in zip(docs, batch, strict=True):
        assert np.array_equal(ids, tok.encode(doc))
    assert tok.decode(np.concatenate([np.append(i, tok.eot_id) for i in batch])) == b"".join(docs)


def window_alone(tok: EqualInfoACTokenizer, symbols: list[int]) -> bytes:
    """A window's W bits from its symbols alone: a fresh M1 context and a fresh coder (the reference)."""
    enc, stepper = Encoder(precision=tok.precision), M1Stepper(tok.m1, rows=tok.rows, capacity=tok.max_window_bytes)
    with deterministic():
        logits = stepper.start()
        for i, s in enumerate(symbols):
            enc.encode(s, tok._cdfs(logits)[0])
            if i + 1 < len(symbols):
                logits = stepper.step(np.array([s] + [0] * (tok.rows - 1)))
    return tok._pad(enc.finish())


def windows_and_symbols(tok: EqualInfoACTokenizer, text: bytes) -> tuple[list[tuple[bytes, list[int]]], dict]:
    """Each window's W bits with the symbols it holds (by the encoder's count), and the encoder's stats."""
    ids, stats = tok.encode_with_stats([text])
    windows = tok._to_bytes(ids[0])
    counts = stats["window_counts"][0]
    assert len(windows) == 2 * len(counts) and sum(counts) == len(text) + 1  # exactly W bits each; END once
    symbols = np.append(np.frombuffer(text, dtype=np.uint8), END).tolist()
    cases, start = [], 0
    for i, count in enumerate(counts):
        cases.append((windows[2 * i:2 * i + 2], symbols[start:start + count]))
        start += count
    return cases, stats


def assert_each_window_decodes_alone(tok: EqualInfoACTokenizer, cases: list[tuple[bytes, list[int]]]) -> None:
    for b in range(0, len(cases), tok.rows):  # every window decoded alone by the tokenizer's rule
        part = cases[b:b + tok.rows]
        got = tok._decode_windows(M1Stepper(tok.m1, rows=tok.rows, capacity=tok.max_window_bytes),
                                  {r: w for r, (w, _) in enumerate(part)})
        for r, (_, truth) in enumerate(part):
            syms, saw_end = got[r]
            assert syms + [END] * saw_end == truth


@pytest.mark.parametrize("text", [SOURCE, b"a" * 5000, BOILERPLATE], ids=["source", "a5000", "boilerplate"])
def test_every_window_is_w_bits_decodes_alone_and_equals_its_bytes_coded_alone(tok, text) -> None:
    cases, stats = windows_and_symbols(tok, text)
    assert_each_window_decodes_alone(tok, cases)
    for window, truth in cases[:: max(1, len(cases) // 12)]:  # reset of M1 and coder: coded alone, same bits
        assert window_alone(tok, truth) == window
    if text != SOURCE:  # predictable text: bytes adding only zero bits were moved on (the rule is exercised)
        assert stats["kept_symbols"] < stats["greedy_symbols"]


@pytest.mark.parametrize("text", [SOURCE[:2000], b"a" * 2000, BOILERPLATE[:1000]], ids=["source", "a2000", "boiler"])
def test_cell_rule_every_window_is_w_bits_and_decodes_alone_to_its_symbols(cell, text) -> None:
    cases, _ = windows_and_symbols(cell, text)
    assert_each_window_decodes_alone(cell, cases)


def test_cell_rule_compresses_predictable_text_and_source_better_than_the_first_match_rule(tok, cell) -> None:
    a_cell, _ = windows_and_symbols(cell, b"a" * 1000)
    a_lossless, _ = windows_and_symbols(tok, b"a" * 1000)
    assert len(a_lossless) > 900 and len(a_cell) <= 10  # one byte a window vs the 128-byte cap (8 windows)
    src_cell, _ = windows_and_symbols(cell, SOURCE[:2000])
    src_lossless, _ = windows_and_symbols(tok, SOURCE[:2000])
    assert len(src_cell) < len(src_lossless)  # measured on SOURCE (4000 bytes): 2076 vs 2259 windows


def point_decodes_to(numerator: int, d: int, cdf: np.ndarray, symbols: list[int]) -> bool:
    """Whether the point numerator / 2^d (a d-bit message) decodes, under static `cdf`, to `symbols`."""
    if not 0 <= numerator < 1 << d:
        return False
    message = BitString((numerator << (-d % 8)).to_bytes((d + 7) // 8, "big"), d)
    return Decoder(message, precision=14).decode_many(cdf, len(symbols)).tolist() == symbols


def test_coding_interval_is_exactly_what_the_decoder_follows() -> None:
    """The interval read off the encoder's state (the cell rule rests on it) against the decoder: the points
    A / 2^D and (A + R - 1) / 2^D decode to the symbols, A - 1 and A + R to others; intervals nest."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        k = int(rng.integers(2, 40))
        cdf = quantize_cdf(rng.dirichlet(np.full(k, 0.3)), 14)
        symbols = rng.choice(k, size=int(rng.integers(1, 30)), p=np.diff(cdf) / cdf[-1]).tolist()
        enc, (pa, pr, pd) = Encoder(precision=14), (0, 1, 0)
        for n, s in enumerate(symbols, start=1):
            enc.encode(s, cdf)
            a, r, d = coding_interval(enc)
            assert pa << (d - pd) <= a and a + r <= (pa + pr) << (d - pd)  # nested in the previous interval
            pa, pr, pd = a, r, d
            assert point_decodes_to(a, d, cdf, symbols[:n]) and point_decodes_to(a + r - 1, d, cdf, symbols[:n])
            assert not point_decodes_to(a - 1, d, cdf, symbols[:n]) and not point_decodes_to(a + r, d, cdf,
                                                                                              symbols[:n])


@pytest.mark.parametrize("decoding", ["first-match", "cell"])
@pytest.mark.parametrize(("window_bits", "token_bits"), [(24, 8), (32, 16), (128, 16)])
def test_other_window_sizes(m1: M1, window_bits: int, token_bits: int, decoding: str) -> None:
    tok = EqualInfoACTokenizer(m1, window_bits=window_bits, token_bits=token_bits, rows=4, decoding=decoding)
    ids = tok.encode(SOURCE[:500])
    assert ids.size % (window_bits // token_bits) == 0 and tok.decode(ids) == SOURCE[:500]


def test_save_load_and_foreign_ids(tok: EqualInfoACTokenizer, tmp_path) -> None:
    tok.save(tmp_path / "t")
    loaded = load_saved_tokenizer(tmp_path / "t")
    assert isinstance(loaded, EqualInfoACTokenizer) and loaded.fingerprint() == tok.fingerprint()
    assert np.array_equal(loaded.encode(SOURCE[:200]), tok.encode(SOURCE[:200]))
    with pytest.raises(ValueError, match="whole windows"):
        tok.decode([1, 2, 3])
    with pytest.raises(ValueError):
        tok.decode([0, 0])  # zero bits: NUL bytes with no window end and no END


def test_config(m1: M1) -> None:
    cfg = TokenizerConfig.from_dict({"kind": "equalinfo-ac", "window_bits": 32})
    assert isinstance(cfg, EqualInfoACTokenizerConfig) and cfg.vocab_size == 65537
    cell = TokenizerConfig.from_dict({"kind": "equalinfo-ac", "decoding": "cell", "token_bits": 8})
    assert cell.build_with_m1(m1.model).decoding == "cell"  # every rule is reachable from the config
    for bad in ({"window_bits": 20}, {"window_bits": 24, "token_bits": 16}, {"decoding": "greedy"},
                {"max_window_bytes": 0}):
        with pytest.raises(ConfigError):
            TokenizerConfig.from_dict({"kind": "equalinfo-ac", **bad})


def test_cli_trains_m1_and_round_trips(tmp_path, corpus_dir, cache_dir, capsys) -> None:
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", "equalinfo-ac", "--corpus", str(corpus_dir), "--out", str(out),
                 "--window-bits", "16", "--token-bits", "16", "--max-bytes", "8000", "--set", "m1_steps=20",
                 "--set", "m1_d_model=32", "--set", "m1_seq_len=64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["m1_config.json", "m1_model.safetensors", "tokenizer_meta.json"]
    source = next(corpus_dir.glob("*.txt"))
    tokens, back = tmp_path / "t.npy", tmp_path / "back.txt"
    assert main(["tokenizer", "encode", str(out), "--in", str(source), "--out", str(tokens)]) == 0
    assert main(["tokenizer", "decode", str(out), "--in", str(tokens), "--out", str(back)]) == 0
    assert back.read_bytes() == source.read_bytes()
    capsys.readouterr()
    assert main(["tokenizer", "stats", str(out), "--corpus", str(source), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["kind"] == "equalinfo-ac" and stats["bits_per_token"] == 16 and stats["bytes_per_token"] > 0


@pytest.mark.parametrize(("kind", "m1_dir"), [("equalinfo-ac", "not-a-run"), ("gzip", "not-a-run"),
                                              ("ac", "gzip-run")])
def test_cli_bad_m1_exits_2_with_one_line(tmp_path, corpus_dir, capsys, kind, m1_dir) -> None:
    (tmp_path / "gzip-run").mkdir()  # a run directory whose model reads gzip tokens, not bytes
    (tmp_path / "gzip-run" / "config.json").write_text(json.dumps({"data": {"tokenizer": {"kind": "gzip"}}}))
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", kind, "--corpus", str(corpus_dir), "--out", str(out),
                 "--m1", str(tmp_path / m1_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--m1" in err and len(err.splitlines()) == 1 and not out.exists()


def test_cli_takes_m1_from_a_run_and_the_folder_fixes_its_shape(tmp_path, corpus_dir, cache_dir, capsys) -> None:
    from isoflop.cli.common import load_experiment
    from isoflop.data.config import DataConfig
    from isoflop.train.run import run_training
    from tests.conftest import tiny_overrides

    overrides = [*tiny_overrides(corpus_dir, steps=2), "eval.every=0", "model.d_model=48", "model.n_layers=1",
                 "data.seq_len=24"]  # none of them the m1_* defaults
    with open(os.devnull, "w") as devnull:
        run_training(load_experiment("tiny", overrides), tmp_path / "m1_run", stream=devnull)
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", "ac", "--corpus", str(corpus_dir), "--out", str(out),
                 "--m1", str(tmp_path / "m1_run"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    shape = {"d_model": 48, "n_layers": 1, "train_length": 24}
    assert {k: printed["m1"][k] for k in shape} == shape
    assert printed["config"]["context"] == 24  # an ac context defaults to the run's M1's training length
    data = DataConfig.from_dict({"corpus": str(corpus_dir), "tokenizer": {"kind": "ac", "path": str(out)}})
    m1 = load_saved_tokenizer(out).m1
    assert (m1.model.cfg.d_model, m1.model.cfg.n_layers, m1.train_length) == (48, 1, 24)  # the folder fixes M1
    assert data.tokenizer.context == 24
    assert not any(k.startswith("m1_") for k in data.tokenizer.to_dict())  # how M1 trained is not a run's knob
