"""The exact arithmetic coder: lossless with static and per-step models, code length within 2 bits of the
quantised model's information, the shortest message, `finished_bits`, quantisation invariants, and the
compiled kernels equal to their interpreted source."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from isoflop.data.tokenizers import arithmetic
from isoflop.data.tokenizers.arithmetic import (
    BitString,
    Decoder,
    Encoder,
    cdf_from_logits,
    decode_symbols,
    encode_symbols,
    portable_exp,
    quantize_cdf,
)

SAMPLE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_cdf(rng: np.random.Generator, k: int, precision: int = 14) -> np.ndarray:
    """A skewed random model over k symbols, some of them at the minimum frequency 1."""
    p = rng.random(k) ** 6
    p[rng.random(k) < 0.3] = 0.0
    return quantize_cdf(p + (p.sum() == 0), precision)


def exact_bound_holds(n_bits: int, symbols: np.ndarray, cdfs: np.ndarray, slack: int, precision: int = 14) -> bool:
    """n_bits <= ⌈Σ -log2 q(x_t)⌉ + slack, decided with integers: ⌈I⌉ is the least m with 2^m Π f >= T^n."""
    rows = np.broadcast_to(cdfs, (symbols.size, cdfs.shape[-1])) if cdfs.ndim == 1 else cdfs
    freqs = rows[np.arange(symbols.size), symbols + 1] - rows[np.arange(symbols.size), symbols]
    prod = _product([int(f) for f in freqs])
    target = 1 << (precision * symbols.size)
    m = max(0, target.bit_length() - prod.bit_length() - 1)
    while (prod << m) < target:
        m += 1
    return n_bits <= m + slack


def _product(values: list[int]) -> int:
    """Π values by a product tree (fast for 10^5 factors, unlike a left-to-right product)."""
    while len(values) > 1:
        values = [math.prod(values[i:i + 2]) for i in range(0, len(values), 2)]
    return values[0] if values else 1


# --- lossless -----------------------------------------------------------------------------------------------

byte_strings = st.one_of(
    st.binary(max_size=400),
    st.tuples(st.binary(min_size=1, max_size=2), st.integers(1, 2000)).map(lambda t: t[0] * t[1]),
)


@SAMPLE
@given(data=byte_strings, seed=st.integers(0, 2**32 - 1), state_bits=st.sampled_from([16, 24, 32, 48]))
@example(data=b"", seed=0, state_bits=48)
@example(data=b"\x00", seed=1, state_bits=48)
@example(data=bytes(range(256)), seed=2, state_bits=16)
@example(data=b"\xff" * 5000, seed=3, state_bits=48)
def test_static_round_trip(data: bytes, seed: int, state_bits: int) -> None:
    cdf = random_cdf(np.random.default_rng(seed), 256)
    symbols = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    message = encode_symbols(symbols, cdf, state_bits=state_bits)
    np.testing.assert_array_equal(decode_symbols(message, cdf, symbols.size, state_bits=state_bits), symbols)


@SAMPLE
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), k=st.integers(2, 300),
       precision=st.sampled_from([9, 14, 16]), state_bits=st.sampled_from([0, 32, 46]))
def test_per_step_round_trip(seed: int, n: int, k: int, precision: int, state_bits: int) -> None:
    """Seeded random logits each step; symbols drawn uniformly, so many sit at the minimum probability."""
    if k > 1 << precision:
        k = 1 << precision
    state_bits = state_bits or precision + 2  # the smallest state the coder allows
    rng = np.random.default_rng(seed)
    cdfs = cdf_from_logits(rng.normal(size=(n, k)) * rng.uniform(0, 20), precision)
    symbols = rng.integers(0, k, size=n)
    message = encode_symbols(symbols, cdfs, precision=precision, state_bits=state_bits)
    dec = Decoder(message, precision=precision, state_bits=state_bits)
    out = [dec.decode(cdfs[t]) for t in range(min(n, 20))]  # one step at a time, then the rest at once
    out += dec.decode_many(cdfs[len(out):]).tolist()
    assert out == symbols.tolist()


def test_minimum_probability_symbols_only() -> None:
    """Every symbol coded is one of frequency 1 (probability 2^-14): 14 bits each, still lossless."""
    cdf = quantize_cdf([1e9, 0, 0, 1e9, 0])
    symbols = np.array([1, 2, 4, 1, 1, 2] * 300)
    assert (np.diff(cdf)[symbols] == 1).all()
    message = encode_symbols(symbols, cdf)
    np.testing.assert_array_equal(decode_symbols(message, cdf, symbols.size), symbols)
    assert exact_bound_holds(len(message), symbols, cdf, 2)


def test_hundred_thousand_random_bytes() -> None:
    rng = np.random.default_rng(7)
    symbols = rng.integers(0, 256, size=100_000)
    cdf = quantize_cdf(np.ones(256))
    message = encode_symbols(symbols, cdf)
    np.testing.assert_array_equal(decode_symbols(message, cdf, symbols.size), symbols)
    assert exact_bound_holds(len(message), symbols, cdf, 2) and len(message) >= 800_000 - 20


def test_decoding_reads_zeros_past_the_end() -> None:
    """Zero bits appended to a message (token padding) decode to the same symbols."""
    rng = np.random.default_rng(3)
    cdf = random_cdf(rng, 40)
    symbols = rng.integers(0, 40, size=500)
    message = encode_symbols(symbols, cdf)
    padded = BitString.from_bits(np.concatenate([message.bits(), np.zeros(37, dtype=np.uint8)]))
    np.testing.assert_array_equal(decode_symbols(padded, cdf, symbols.size), symbols)


# --- code length ----------------------------------------------------------------------------------------------

@SAMPLE
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 2000), k=st.integers(2, 257), static=st.booleans())
def test_code_length_within_two_bits_of_the_information(seed: int, n: int, k: int, static: bool) -> None:
    rng = np.random.default_rng(seed)
    if static:
        cdfs = random_cdf(rng, k)
        p = np.diff(cdfs) / cdfs[-1]
        symbols = rng.choice(k, size=n, p=p) if rng.random() < 0.5 else rng.integers(0, k, size=n)
    else:
        cdfs = cdf_from_logits(rng.normal(size=(n, k)) * 4)
        symbols = rng.integers(0, k, size=n)
    message = encode_symbols(symbols, cdfs)
    assert exact_bound_holds(len(message), symbols, cdfs, 2)


@SAMPLE
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200))
def test_finished_bits_reported_after_every_symbol(seed: int, n: int) -> None:
    """After each symbol, finished_bits() == len(finish()), and that message decodes to the prefix."""
    rng = np.random.default_rng(seed)
    cdfs = cdf_from_logits(rng.normal(size=(n, 7)) * 3)
    symbols = rng.integers(0, 7, size=n)
    enc = Encoder()
    assert enc.finished_bits() == len(enc.finish()) == 0
    for t in range(n):
        enc.encode(int(symbols[t]), cdfs[t])
        message = enc.finish()
        assert enc.finished_bits() == len(message)
        if t % 17 == 0 or t == n - 1:
            np.testing.assert_array_equal(decode_symbols(message, cdfs[: t + 1]), symbols[: t + 1])
    other = enc.copy()
    other.encode(0, cdfs[0])
    assert enc.finish() == encode_symbols(symbols, cdfs)  # the copy went on alone


def test_message_is_the_shortest_that_decodes() -> None:
    """Brute force: no bit string shorter than the message decodes to the same symbols (the sequences of a
    given length partition [0, 1), so the shortest point inside the final interval is the shortest message)."""
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(300):
        k, n = int(rng.integers(2, 5)), int(rng.integers(1, 6))
        cdf = quantize_cdf(rng.random(k) + 0.05, 9)
        symbols = rng.integers(0, k, size=n)
        message = encode_symbols(symbols, cdf, precision=9, state_bits=16)
        if len(message) > 10:
            continue
        checked += 1
        for length in range(len(message)):
            for bits in itertools.product([0, 1], repeat=length):
                other = decode_symbols(BitString.from_bits(bits), cdf, n, precision=9, state_bits=16)
                assert not np.array_equal(other, symbols), (symbols, message.bits(), bits)
    assert checked > 100


# --- quantisation -------------------------------------------------------------------------------------------

weights = st.lists(st.one_of(st.just(0.0), st.floats(0, 1e6), st.floats(0, 1e-300)), min_size=1, max_size=300)


@SAMPLE
@given(w=weights, precision=st.integers(9, 20))
def test_quantized_cdf_invariants(w: list[float], precision: int) -> None:
    if sum(w) == 0:
        w[0] = 1.0
    cdf = quantize_cdf(w, precision)
    freq = np.diff(cdf)
    assert cdf.dtype == np.int64 and cdf[0] == 0 and cdf[-1] == 1 << precision and (freq >= 1).all()
    # each frequency is 1 plus its share of the rest, up to the floor of the two cuts around it
    p = np.asarray(w) / np.sum(w)
    assert (np.abs(freq - 1 - p * ((1 << precision) - len(w))) <= 1 + 1e-6 * (1 << precision)).all()


@SAMPLE
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 12), k=st.integers(1, 300))
def test_quantization_is_row_wise_and_dtype_blind(seed: int, rows: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    logits32 = (rng.normal(size=(rows, k)) * 5).astype(np.float32)
    batch = cdf_from_logits(logits32)
    for r in range(rows):
        np.testing.assert_array_equal(cdf_from_logits(logits32[r]), batch[r])
        np.testing.assert_array_equal(cdf_from_logits(logits32[r].astype(np.float64)), batch[r])
    probs16 = rng.random((rows, k)).astype(np.float16)  # a low-precision dtype, as bf16 logits would be
    np.testing.assert_array_equal(quantize_cdf(probs16), quantize_cdf(probs16.astype(np.float64)))
    np.testing.assert_array_equal(quantize_cdf(probs16), np.stack([quantize_cdf(p) for p in probs16]))


def test_bf16_logits_cast_identically() -> None:
    torch = pytest.importorskip("torch")
    logits = torch.randn(4, 256, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16) * 8
    via_fp32 = cdf_from_logits(logits.float().numpy())
    via_fp64 = cdf_from_logits(logits.double().numpy())
    np.testing.assert_array_equal(via_fp32, via_fp64)


def test_portable_exp_matches_exp() -> None:
    x = np.concatenate([-np.logspace(-12, 2.8, 2000), [0.0, -700.0, -np.inf]])
    np.testing.assert_allclose(portable_exp(x), np.exp(x), rtol=1e-16 * 700, atol=0)  # x * log2(e) rounds
    assert portable_exp(np.array([-np.inf]))[0] == 0.0


def test_quantization_by_hand() -> None:
    # T = 1024, K = 4: c[i] = i + floor(cumsum[i-1] * 1020), cumsum = .5, .75, .875, 1
    np.testing.assert_array_equal(quantize_cdf([0.5, 0.25, 0.125, 0.125], 10), [0, 511, 767, 895, 1024])
    logits = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
    assert np.abs(cdf_from_logits(logits, 10) - [0, 511, 767, 895, 1024]).max() <= 1
    np.testing.assert_array_equal(np.diff(cdf_from_logits([0.0, -np.inf, 0.0], 4)), [7, 1, 8])


@pytest.mark.parametrize("bad, match", [
    ([], "cannot each get"), ([1.0, -1.0], "non-negative"), ([np.nan, 1.0], "finite"), ([0.0, 0.0], "positive"), ([1e308, 1e308], "finite total"),
    (np.ones(20000), "cannot each get"),
])
def test_quantize_rejects(bad, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        quantize_cdf(np.asarray(bad, dtype=np.float64))


def test_coder_rejects_bad_input() -> None:
    cdf = quantize_cdf([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="symbols must be in"):
        encode_symbols([3], cdf)
    with pytest.raises(ValueError, match="strictly increase"):
        encode_symbols([0], np.array([0, 5, 5, 1 << 14]))
    with pytest.raises(ValueError, match="per-step CDFs"):
        encode_symbols([0, 1], np.stack([cdf] * 3))
    with pytest.raises(ValueError, match="state_bits"):
        Encoder(precision=14, state_bits=15)
    with pytest.raises(ValueError, match="no end symbol"):
        Decoder(BitString.from_bits([0] * 8)).decode_until(cdf, 2, max_symbols=1000)  # zeros: symbol 0 forever


# --- compiled == interpreted ------------------------------------------------------------------------------------

def test_compiled_kernels_equal_their_python_source(monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = arithmetic._kernels()
    if not kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed: only the interpreted kernels exist")
    rng = np.random.default_rng(5)
    cdf = random_cdf(rng, 257)
    symbols = rng.integers(0, 257, size=3000)
    per_step = cdf_from_logits(rng.normal(size=(300, 20)) * 6)
    steps = rng.integers(0, 20, size=300)
    compiled = encode_symbols(symbols, cdf), encode_symbols(steps, per_step)
    interpreted = SimpleNamespace(**{name: getattr(kernels, name).py_func
                                     for name in ("encode_kernel", "decoder_start", "decode_kernel")})
    monkeypatch.setattr(arithmetic, "_kernels", lambda: interpreted)
    assert (encode_symbols(symbols, cdf), encode_symbols(steps, per_step)) == compiled
    np.testing.assert_array_equal(decode_symbols(compiled[0], cdf, symbols.size), symbols)
    np.testing.assert_array_equal(decode_symbols(compiled[1], per_step), steps)
