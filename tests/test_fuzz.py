"""The structure-aware fuzzer (progvc.bench.fuzz): valid-CRC mutations of real streams never crash or hang."""

import json
import random
import time

import pytest
from _tiny_codec import codec, stream

from progvc.bench import fuzz as fz
from progvc.bench.__main__ import benchmarks
from progvc.bench.__main__ import main as bench_main
from progvc.codec.bitstream import parse


def test_raw_streams_round_trip_with_valid_checksums():
    data = stream()
    raw = fz.RawStream.from_bytes(data)
    assert raw.to_bytes() == data
    pool = [raw, fz.RawStream.from_bytes(stream("msbsq"))]
    rng = random.Random(0)
    for mutation in ("payload_random", "payload_bits", "payload_foreign"):
        for _ in range(20):
            s = raw.copy()
            fz.MUTATIONS[mutation][0](s, rng, pool)
            parse(s.to_bytes())  # the CRCs are recomputed: only the payloads are garbage
    assert raw.to_bytes() == data  # mutations work on copies


def test_watchdog_turns_a_slow_case_into_a_hang():
    start = time.perf_counter()
    with pytest.raises(fz._Hang), fz.watchdog(0.2):
        while True:
            pass
    assert time.perf_counter() - start < 2


def test_a_few_hundred_cases_give_no_crash_and_no_hang():
    report = fz.fuzz(300, seed=12, timeout=10.0)
    d = report.to_dict()
    assert d["cases"] == 300 == d["clean_errors"] + d["decodes"] + d["crashes"] + d["hangs"]
    assert (d["crashes"], d["hangs"]) == (0, 0), d["failures"]
    assert d["decodes"] > 30 and d["clean_errors"] > 30  # both the decoder and the checks are reached
    assert d["errors_by_type"].get("LimitExceededError", 0) > 0
    assert d["peak_rss_mib"] - d["rss_start_mib"] < 500


def test_bench_fuzz_command_prints_json(capsys):
    assert "fuzz" in benchmarks()
    assert bench_main(["fuzz", "--cases", "20", "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cases"] == 20 and out["crashes"] == 0 and out["hangs"] == 0
    assert {"clean_errors", "decodes", "peak_rss_mib", "cases_per_second"} <= set(out)


def test_a_crash_is_reported_with_its_case(monkeypatch, tmp_path):
    def boom(data, codecs, rng):
        raise KeyError("boom")

    monkeypatch.setattr(fz, "decode_case", boom)
    report = fz.fuzz(3, seed=0, start=5, save=tmp_path)
    assert report.crashes == 3 and [f["case"] for f in report.failures] == [5, 6, 7]
    assert "KeyError" in report.failures[0]["detail"] and (tmp_path / "case-5.pgv").is_file()
    codec()  # keep the shared model cache warm for other tests
