"""Entropy coders and integer tables: exact round trips, code lengths near the ideal, determinism
across thread counts, and corrupt input that never crashes or hangs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from progvc.bench.__main__ import main as bench_main
from progvc.coders import CODERS
from progvc.coders.rans import RansCoder, cdfs_16bit
from progvc.coders.tables import (
    GRID_LIMIT_STEPS,
    GRID_MAGIC,
    GRID_MAGIC_BITS,
    GRID_STEP_BITS,
    GRID_ZERO_BITS,
    exp_table,
    ideal_bits,
    logits_to_freqs,
    logits_to_tables,
    scale_bits,
    tables_to_freqs,
)
from progvc.errors import BitstreamError

CODER_NAMES = ("range", "rans")
#: (alphabet, symbols, logit scale): a peaked 4096-way categorical and bits.
KINDS = {"categorical": (4096, 200, 3.0), "binary": (2, 3000, 4.0)}


def make_case(kind: str, seed: int = 0, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(symbols [N], freqs [N, A])``: symbols sampled from the tables of scaled Gaussian logits."""
    alphabet, default_n, sigma = KINDS[kind]
    n = default_n if n is None else n
    gen = torch.Generator().manual_seed(seed)
    freqs = logits_to_freqs(sigma * torch.randn(n, alphabet, generator=gen))
    symbols = torch.multinomial(freqs.to(torch.float64), 1, generator=gen).squeeze(1)
    return symbols, freqs


# ---------------------------------------------------------------------------------------------
# integer tables


@pytest.mark.parametrize("alphabet", [1, 2, 5, 4096, 1 << 16])
def test_tables_are_positive_bounded_and_peak_at_the_scale(alphabet):
    logits = 5 * torch.randn(2, 3, alphabet)
    freqs = logits_to_freqs(logits)
    assert freqs.dtype == torch.int64 and freqs.shape == logits.shape
    assert int(freqs.min()) >= 1
    assert int(freqs.sum(-1).max()) <= 1 << 30
    assert torch.equal(freqs.amax(-1), torch.full((2, 3), 1 << scale_bits(alphabet)))


def test_tables_are_monotone_in_the_logits():
    logits = 3 * torch.randn(50, 64)
    freqs = logits_to_freqs(logits)
    order = logits.argsort(dim=-1)
    assert bool((freqs.gather(-1, order).diff(dim=-1) >= 0).all())


def test_tables_depend_only_on_logit_differences():
    logits = torch.randint(-400, 400, (20, 300)).float() / 64  # exact in float32, also after the shift
    assert torch.equal(logits_to_freqs(logits), logits_to_freqs(logits + 7.0))
    assert torch.equal(logits_to_freqs(logits), logits_to_freqs(logits.double()))


def test_tables_of_non_finite_logits():
    inf, nan = float("inf"), float("nan")
    freqs = logits_to_freqs(
        torch.tensor([[nan, inf, 0.0, -inf], [nan, nan, nan, nan], [-inf, -inf, -inf, -inf]])
    )
    top = 1 << scale_bits(4)
    assert freqs.tolist() == [[1, top, 1, 1], [top] * 4, [top] * 4]


def test_exp_table_is_the_rounded_exponential():
    table = exp_table(18)
    assert table[0] == 1 << 18 and table[-1] == 1 and min(table) == 1
    assert table[16] == round(2**18 * math.exp(-1))  # one nat below the top
    assert all(a >= b for a, b in zip(table, table[1:]))


def test_ideal_bits_of_uniform_tables():
    freqs = torch.full((10, 8), 3)
    assert ideal_bits(torch.arange(10) % 8, freqs) == pytest.approx(30.0)


# ---------------------------------------------------------------------------------------------
# round trips and code lengths


@pytest.mark.parametrize("name", CODER_NAMES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_shot_round_trip_and_size(name, kind):
    symbols, freqs = make_case(kind)
    coder = CODERS.create(name)
    data = coder.encode(symbols, freqs)
    assert torch.equal(coder.decode(data, freqs), symbols)
    ideal = ideal_bits(symbols, freqs)
    if name == "rans" and kind == "categorical":
        # 16-bit CDFs reserve 1/65536 for each of 4096 symbols: ~0.1 bit per token (docs/coders.md).
        assert 8 * len(data) <= ideal + 0.2 * len(symbols) + 64
    else:
        assert 8 * len(data) <= 1.01 * ideal + 64


@pytest.mark.parametrize("name", CODER_NAMES)
def test_chunked_round_trip_with_mixed_alphabets(name):
    """Chunks of different sizes and alphabets in one segment, decoded in the same chunks."""
    cat_symbols, cat_freqs = make_case("categorical", seed=1)
    bit_symbols, bit_freqs = make_case("binary", seed=2)
    chunks = [
        (cat_symbols[:1], cat_freqs[:1]),
        (bit_symbols[:700], bit_freqs[:700]),
        (cat_symbols[1:150], cat_freqs[1:150]),
        (bit_symbols[700:700], bit_freqs[700:700]),  # an empty chunk
        (bit_symbols[700:], bit_freqs[700:]),
        (cat_symbols[150:], cat_freqs[150:]),
    ]
    coder = CODERS.create(name)
    encoder = coder.encoder()
    for symbols, freqs in chunks:
        encoder.encode(symbols, freqs)
    data = encoder.finish()
    decoder = coder.decoder(data)
    for symbols, freqs in chunks:
        assert torch.equal(decoder.decode(freqs), symbols)
    ideal = sum(ideal_bits(s, f) for s, f in chunks)
    if name == "range":
        assert 8 * len(data) <= 1.01 * ideal + 64


@pytest.mark.parametrize("name", CODER_NAMES)
def test_empty_and_nearly_certain_segments_are_tiny(name):
    coder = CODERS.create(name)
    assert coder.encode(torch.zeros(0, dtype=torch.int64), torch.ones(0, 7, dtype=torch.int64)) == b""
    assert coder.decode(b"", torch.ones(0, 7, dtype=torch.int64)).shape == (0,)
    freqs = logits_to_freqs(torch.tensor([[30.0, 0.0, 0.0]]).repeat(50, 1))  # ideal: ~1e-4 bit in all
    symbols = torch.zeros(50, dtype=torch.int64)
    data = coder.encode(symbols, freqs)
    assert torch.equal(coder.decode(data, freqs), symbols)
    assert len(data) <= (0 if name == "range" else 1 + 4)  # rans: header + the final state


def test_range_segment_flush_costs_about_two_bytes():
    """The trimmed flush: over many small segments, bytes written exceed the ideal by < 3 on average."""
    coder = CODERS.create("range")
    extra = []
    for seed in range(40):
        symbols, freqs = make_case("categorical", seed=seed, n=8)
        data = coder.encode(symbols, freqs)
        assert torch.equal(coder.decode(data, freqs), symbols)
        extra.append(len(data) - ideal_bits(symbols, freqs) / 8)
    assert sum(extra) / len(extra) < 3.0


def test_range_round_trips_when_the_flush_awaits_a_carry():
    """Many small segments, some ending in constriction's "inverted" state (words held back
    for a carry), where the trimmed flush must stay on constriction's side of ``2**64``."""
    coder = CODERS.create("range")
    gen = torch.Generator().manual_seed(5)
    inverted = 0
    for i in range(400):
        n, alphabet = 1 + i % 23, (2, 3, 17)[i % 3]
        freqs = logits_to_freqs(3 * torch.randn(n, alphabet, generator=gen))
        symbols = torch.multinomial(freqs.to(torch.float64), 1, generator=gen).squeeze(1)
        encoder = coder.encoder()
        encoder.encode(symbols, freqs)
        _, (lower, width) = encoder._encoder.pos()  # white box: is the final interval straddling 2**64?
        inverted += lower + width > 1 << 64
        assert torch.equal(coder.decode(encoder.finish(), freqs), symbols)
    assert inverted >= 1


@pytest.mark.parametrize("name", CODER_NAMES)
def test_bad_arguments_raise_value_error(name):
    coder = CODERS.create(name)
    freqs = torch.ones(4, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        coder.encode(torch.tensor([0, 1, 3, 0]), freqs)
    with pytest.raises(ValueError, match="shape"):
        coder.encode(torch.tensor([0, 1]), freqs)
    with pytest.raises(ValueError, match="integer"):
        coder.encode(torch.zeros(4), freqs)
    encoder = coder.encoder()
    encoder.finish()
    with pytest.raises(RuntimeError):
        encoder.encode(torch.zeros(4, dtype=torch.int64), freqs)


def test_rans_refuses_to_read_past_its_symbol_bound():
    """A segment of N symbols declares N < 2**e; asking for 2**e symbols or more is an error."""
    symbols, freqs = make_case("binary")
    coder = RansCoder()
    decoder = coder.decoder(coder.encode(symbols[:10], freqs[:10]))  # 10 < 2**4
    assert torch.equal(decoder.decode(freqs[:10]), symbols[:10])
    decoder.decode(freqs[:5])  # symbols 10..14: within the bound, wrong but in range
    with pytest.raises(BitstreamError, match="ends before"):
        decoder.decode(freqs[:1])
    with pytest.raises(BitstreamError, match="header is corrupt"):
        coder.decoder(b"\xff" + bytes(12))
    with pytest.raises(BitstreamError, match="truncated"):
        coder.decoder(b"\x20\x01")


def test_rans_cdfs_are_16_bit_and_keep_every_symbol():
    freqs = logits_to_freqs(8 * torch.randn(30, 4096))
    cdf = cdfs_16bit(freqs)
    assert cdf.shape == (30, 4098)
    assert bool((cdf[:, 0] == 0).all()) and bool((cdf[:, -2:] == 1 << 16).all())  # escape symbol: no mass
    assert int(cdf[:, 1:-1].diff(dim=1).min()) >= 1


def test_registry_names_precision_and_config():
    assert {"range", "rans"} <= set(CODERS.names())
    assert CODERS.create("range").precision == 24 and CODERS.create("rans").precision == 16
    coder = CODERS.create("range")
    assert type(CODERS.from_config(CODERS.config_of(coder))) is type(coder)


# ---------------------------------------------------------------------------------------------
# determinism across thread counts, and corrupt input (in subprocesses: a crash must not kill pytest)

_CHILD = """
import json, random, sys, traceback
import torch
from progvc.coders import CODERS
from progvc.coders.tables import logits_to_freqs, logits_to_tables
from progvc.errors import BitstreamError


def same_with_one_thread(path):
    case = torch.load(path, weights_only=True)
    freqs = logits_to_freqs(case["logits"])
    assert torch.equal(freqs, case["freqs"]), "tables differ between 1 and 2 threads"
    grid = logits_to_tables(case["logits"])
    assert torch.equal(grid.view(torch.int32), case["grid"].view(torch.int32)), "grid tables differ"
    assert torch.equal(CODERS.create("range").decode(case["grid_stream"], grid), case["symbols"])
    for name, data in case["streams"].items():
        coder = CODERS.create(name)
        assert coder.encode(case["symbols"], freqs) == data, name + ": stream differs"
        assert torch.equal(coder.decode(data, freqs), case["symbols"]), name + ": decode differs"


def corrupt_segments():
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    for alphabet, n in ((300, 60), (2, 600)):
        freqs = logits_to_freqs(3 * torch.randn(n, alphabet, generator=gen))
        symbols = torch.multinomial(freqs.double(), 1, generator=gen).squeeze(1)
        for name in ("range", "rans"):
            coder = CODERS.create(name)
            data = coder.encode(symbols, freqs)
            for case in range(80):
                bad = bytearray(data)
                if case % 4 == 0:  # truncated
                    bad = bad[: rng.randrange(len(bad) + 1)]
                elif case % 4 == 1:  # bit flips
                    for _ in range(rng.randint(1, 8)):
                        if bad:
                            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
                elif case % 4 == 2:  # random bytes
                    bad = bytearray(rng.randbytes(rng.randrange(80)))
                else:  # garbage appended
                    bad += rng.randbytes(rng.randint(1, 16))
                try:
                    decoder = coder.decoder(bytes(bad))
                    out = torch.cat([decoder.decode(freqs[s : s + 25]) for s in range(0, n, 25)])
                except BitstreamError:
                    continue
                assert out.shape == (n,) and 0 <= int(out.min()) and int(out.max()) < alphabet, name


report = {}
for check, args in ((same_with_one_thread, sys.argv[1:]), (corrupt_segments, ())):
    try:
        check(*args)
        report[check.__name__] = "ok"
    except Exception:
        report[check.__name__] = traceback.format_exc()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def child_report(tmp_path_factory) -> dict[str, str]:
    """Checks run in one subprocess with 1 torch thread (a crash there must not kill pytest).

    The parent makes tables and streams with 2 threads; the child checks that it gets the same
    with 1 thread and decodes them, then decodes corrupt segments.
    """
    gen = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(64, 4096, generator=gen)  # large enough for torch to split the work
    logits[:, ::97] += torch.rand(64, 43, generator=gen) / 1024
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        freqs = logits_to_freqs(logits)
        symbols = torch.multinomial(freqs.to(torch.float64), 1, generator=gen).squeeze(1)
        streams = {name: CODERS.create(name).encode(symbols, freqs) for name in CODER_NAMES}
        grid = logits_to_tables(logits)
        grid_stream = CODERS.create("range").encode(symbols, grid)
    finally:
        torch.set_num_threads(before)
    path = tmp_path_factory.mktemp("threads") / "case.pt"
    torch.save(
        {
            "logits": logits,
            "freqs": freqs,
            "symbols": symbols,
            "streams": streams,
            "grid": grid,
            "grid_stream": grid_stream,
        },
        path,
    )
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, f"child crashed ({out.returncode}): {out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tables_and_streams_do_not_depend_on_thread_count(child_report):
    """Tables and streams made with 2 threads equal those of 1 thread, which decodes them exactly."""
    assert child_report["same_with_one_thread"] == "ok", child_report["same_with_one_thread"]


def test_corrupt_or_truncated_segments_never_crash_or_hang(child_report):
    """Truncated, bit-flipped, random and extended segments give BitstreamError or in-range symbols."""
    assert child_report["corrupt_segments"] == "ok", child_report["corrupt_segments"]


# ---------------------------------------------------------------------------------------------
# benchmark entry point


def test_bench_dispatch_lists_and_rejects(capsys):
    assert bench_main(["--help"]) == 0
    assert "coders" in capsys.readouterr().out
    assert bench_main(["no-such-bench"]) == 2
    assert "unknown benchmark 'no-such-bench'" in capsys.readouterr().err


def test_bench_coders_json(capsys):
    assert bench_main(["coders", "--json", "--tokens", "20", "--repeats", "1", "--segments", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["coders"]
    assert {(r["coder"], r["tokens"]) for r in rows} == {
        (c, k) for c in CODER_NAMES for k in ("categorical-4096", "bitwise-16")
    }
    for row in rows:
        assert row["us_per_token_encode"] > 0 and row["us_per_token_decode"] > 0
        if row["coder"] == "range":
            assert row["bits"] <= 1.01 * row["ideal_bits"] + 64
    assert {r["coder"] for r in result["segments"]} == {*CODER_NAMES, "range-untrimmed"}
    for row in result["path"]:
        assert row["path_vs_raw_encode"] > 0 and row["path_vs_raw_decode"] > 0
        assert row["grid_bits_per_token"] < row["exact_bits_per_token"] + 0.1
    cold = result["cold"]  # one small tables call, warm and after a float64 product (machine-dependent ratio)
    assert cold["shape"] == [16, 33] and cold["us_warm"] > 0 and cold["us_after_product"] > 0
    assert bench_main(["coders", "--coders", "nope"]) == 2


# ---------------------------------------------------------------------------------------------
# float32 grid tables (the codec's path)


def _grid_steps(tables: torch.Tensor) -> torch.Tensor:
    """``j`` of grid tables: ``(bits - GRID_ZERO_BITS) / GRID_STEP_BITS`` (exact, in int64)."""
    diff = tables.view(torch.int32).to(torch.int64) - GRID_ZERO_BITS
    assert bool((diff % GRID_STEP_BITS == 0).all())
    return diff // GRID_STEP_BITS


def test_grid_tables_are_bit_patterns_linear_in_the_grid_step():
    logits = 3 * torch.randn(50, 300, generator=torch.Generator().manual_seed(1))
    tables = logits_to_tables(logits)
    j = torch.round(16 * logits.to(torch.float64)).to(torch.int64)  # the float32 logits times 16 are exact
    assert torch.equal(_grid_steps(tables), j)
    # within 6 % of 0.998 * exp(j / 16), and monotone in the logits
    zero = float(torch.tensor(GRID_ZERO_BITS, dtype=torch.int32).view(torch.float32))
    assert 0.998 < zero < 1.0
    assert float((tables.double().log() - math.log(zero) - j / 16).abs().max()) < 0.062
    order = logits.argsort(dim=1)
    assert bool((tables.gather(1, order).diff(dim=1) >= 0).all())


def test_grid_magic_rounds_to_the_grid_and_the_multiplication_wraps_exactly():
    """The constants, and torch's int32 multiplication modulo 2**32 against Python's exact integers,
    for every grid step and at lengths that exercise vectorised and scalar loops."""
    assert GRID_MAGIC_BITS == int(torch.tensor(GRID_MAGIC).view(torch.int32))
    assert GRID_ZERO_BITS == GRID_STEP_BITS * GRID_MAGIC_BITS % 2**32
    j = torch.arange(-GRID_LIMIT_STEPS, GRID_LIMIT_STEPS + 1)
    expected = [(GRID_STEP_BITS * (GRID_MAGIC_BITS + int(v))) % 2**32 for v in j]
    expected = torch.tensor([e - 2**32 if e >= 2**31 else e for e in expected], dtype=torch.int32)
    for n in (1, 7, 16, 33, 100, len(j)):
        tables = logits_to_tables(j[:n, None].to(torch.float64) / 16)
        assert torch.equal(tables.view(torch.int32).view(-1), expected[:n])


def test_grid_tables_of_non_finite_or_out_of_range_logits():
    """A row with a logit beyond 60 nats (or NaN, inf) is built relative to its maximum; rows
    within range are the element-wise function whatever their neighbours."""
    logits = torch.tensor(
        [[0.0, float("nan"), float("-inf"), 1.0], [float("inf"), 0.0, 3e38, -3e38], [0.0, 1.0, 2.0, -61.0]]
    )
    tables = logits_to_tables(logits)
    assert bool(torch.isfinite(tables).all()) and bool((tables > 0).all())
    steps = _grid_steps(tables)
    assert steps[0].tolist() == [-16, -GRID_LIMIT_STEPS, -GRID_LIMIT_STEPS, 0]  # 1.0 is the max
    assert steps[1].tolist() == [0, -GRID_LIMIT_STEPS, 0, -GRID_LIMIT_STEPS]  # +inf ties with 3e38 (both huge)
    assert steps[2].tolist() == [-32, -16, 0, -GRID_LIMIT_STEPS]
    inside = 3 * torch.randn(40, 4, generator=torch.Generator().manual_seed(5))
    mixed = torch.cat([inside[:20], logits, inside[20:]])
    together = logits_to_tables(mixed).view(torch.int32)
    assert torch.equal(together[:20], logits_to_tables(inside[:20]).view(torch.int32))
    assert torch.equal(together[23:], logits_to_tables(inside[20:]).view(torch.int32))
    assert torch.equal(together[20:23], tables.view(torch.int32))


def test_grid_tables_do_not_depend_on_block_split_or_batch_shape(monkeypatch):
    """Element-wise by construction: a row's table is the same alone, in a batch, in another shape
    and with any block size (blocks decide only where the range check runs)."""
    from progvc.coders import tables as tables_module

    logits = 5 * torch.randn(600, 33, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    logits[123, 4] = 70.0  # one out-of-range row
    whole = logits_to_tables(logits).view(torch.int32)
    monkeypatch.setattr(tables_module, "GRID_BLOCK_ELEMENTS", 33 * 7)
    assert torch.equal(logits_to_tables(logits).view(torch.int32), whole)
    assert torch.equal(logits_to_tables(logits.view(20, 30, 33)).view(torch.int32).view(-1, 33), whole)
    for r in (0, 122, 123, 599):
        assert torch.equal(logits_to_tables(logits[r : r + 1]).view(torch.int32), whole[r : r + 1])


@pytest.mark.parametrize("name", CODER_NAMES)
def test_grid_tables_round_trip_in_chunks(name):
    gen = torch.Generator().manual_seed(2)
    coder = CODERS.create(name)
    chunks = []
    for n, alphabet in ((0, 33), (300, 33), (40, 4096), (1, 2)):
        tables = logits_to_tables(3 * torch.randn(n, alphabet, generator=gen))
        symbols = (
            torch.multinomial(tables.double(), 1, generator=gen).squeeze(1)
            if n
            else torch.zeros(0, dtype=torch.int64)
        )
        chunks.append((symbols, tables))
    encoder = coder.encoder()
    for symbols, tables in chunks:
        encoder.encode(symbols, tables)
    decoder = coder.decoder(encoder.finish())
    for symbols, tables in chunks:
        assert torch.equal(decoder.decode(tables), symbols)
    freqs = tables_to_freqs(chunks[2][1])
    assert int(freqs.min()) >= 1 and int(freqs.sum(dim=1).max()) <= 1 << 30


def test_few_ulp_perturbations_of_logits_do_not_change_the_tables():
    """The codec's logits are float64 (the context model's float64 copy): moving every logit by a
    few ULPs changes no table entry in a million, and the stream decodes exactly with the moved
    logits' tables. Float32 logits placed exactly on the grid's boundaries (half-steps, where
    ``x + GRID_MAGIC`` rounds) do move, by one grid step (so the encoder and decoder must compute
    logits along the same path: see the codec)."""
    gen = torch.Generator().manual_seed(4)
    logits = 4 * torch.randn(250, 4096, generator=gen, dtype=torch.float64)
    moved = logits.clone()
    for _ in range(4):  # four ULPs up in half the entries, down in the others
        moved = torch.where(
            torch.arange(4096) % 2 == 0, torch.nextafter(moved, moved + 1), torch.nextafter(moved, moved - 1)
        )
    tables, tables_moved = logits_to_tables(logits), logits_to_tables(moved)
    assert torch.equal(tables.view(torch.int32), tables_moved.view(torch.int32))
    symbols = torch.multinomial(tables.double(), 1, generator=gen).squeeze(1)
    coder = CODERS.create("range")
    assert torch.equal(coder.decode(coder.encode(symbols, tables), tables_moved), symbols)
    # float32 logits exactly on boundaries (16 * x + 1/2 an integer): one ULP moves an entry by one step at most
    x = (torch.arange(-64, 64, dtype=torch.float32)[None] + 0.5) / 16
    below = torch.nextafter(x, x - 1)
    assert int((_grid_steps(logits_to_tables(below)) - _grid_steps(logits_to_tables(x))).abs().max()) <= 1


def test_rans_decoder_pads_only_for_the_symbols_the_caller_will_ask_for():
    from progvc.coders.rans import RansSymbolDecoder

    coder = CODERS.create("rans")
    freqs = torch.ones(10, 8, dtype=torch.int64)
    data = bytearray(coder.encode(torch.arange(10) % 8, freqs))
    data[0] = (23 << 3) | (data[0] & 7)  # a forged header: "up to 2**23 symbols" (32 MiB of padding)
    decoder = RansSymbolDecoder(bytes(data), max_symbols=10)
    assert decoder._left <= 10 + 4
    with pytest.raises(BitstreamError):
        decoder.decode(torch.ones(20, 8, dtype=torch.int64))
