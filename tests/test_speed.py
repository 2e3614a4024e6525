"""The speed benchmark's breakdown (``python -m progvc.bench speed --breakdown --quick --json``)."""

from __future__ import annotations

import json

import pytest
from _tiny_codec import tiny_model

from progvc.bench.__main__ import main as bench_main
from progvc.bench.speed import COMPONENTS


@pytest.mark.parametrize("local_scales", [0, 2])
def test_speed_breakdown_quick_json(tmp_path, capsys, local_scales):
    tiny_model("mssq", prediction="loops", local_scales=local_scales).save(tmp_path / "m.pt")
    assert bench_main(["speed", "--breakdown", "--quick", "--json", "--model", str(tmp_path / "m.pt")]) == 0
    rows = json.loads(capsys.readouterr().out)["breakdown"]
    assert [(r["size"], r["threads"]) for r in rows] == [("176x144", 1)]
    row = rows[0]
    for mode in ("decode", "decode_synthesis", "encode"):
        ms = row[mode]["ms_per_frame"]
        assert set(ms) == set(COMPONENTS) and min(ms.values()) >= 0 and row[mode]["fps"] > 0
        assert abs(sum(ms.values()) - row[mode]["total_ms"]) < 0.01 * row[mode]["total_ms"] + 0.01
    assert (
        row["decode"]["ms_per_frame"]["synthesis"] == 0 < row["decode_synthesis"]["ms_per_frame"]["synthesis"]
    )
    assert row["raw_coder"]["symbols_per_frame"] > 0 and row["decode"]["tables_coder_vs_raw"] > 0
    for mode in ("decode", "encode"):  # constriction's own calls are a part of the coder's time
        assert 0 < row[mode]["constriction_ms_per_frame"] <= row[mode]["ms_per_frame"]["coder"] + 1e-3
        assert row[mode]["constriction_in_codec_vs_raw"] > 0
    precision = row["precision"]
    exact = ("exact",) if local_scales == 0 else ()
    for variant in ("float64", "exact_linear", *exact):  # the codec's arithmetic, old and new, and the reference
        assert precision[f"{variant}_table_entries_differing_1_vs_2_threads"] == 0
        assert precision[f"{variant}_bits_per_frame"] > 0  # one chunk per step: every variant is scored
    if local_scales:  # exact attention over local windows is not built: reported as missing
        assert precision["exact_ms_per_frame"] is None and precision["exact_bits_per_frame"] is None


def test_speed_with_and_without_skip_flags_in_one_run(tmp_path, capsys):
    tiny_model("mssq", prediction="loops").save(tmp_path / "m.pt")
    assert bench_main(["speed", "--quick", "--skip", "both", "--json", "--model", str(tmp_path / "m.pt")]) == 0
    rows = json.loads(capsys.readouterr().out)["speed"]
    assert [(r["size"], r["skip"]) for r in rows] == [("176x144", "on"), ("176x144", "off")]
    assert all(r["encode_fps"] > 0 and r["decode_fps"] > 0 and r["bpp"] > 0 for r in rows)
    assert all(0 <= r["repeated_frames"] < r["frames"] for r in rows)  # the first frame is always decoded
    assert all(r["encode_cpu_fps"] > 0 and r["decode_cpu_fps"] > 0 for r in rows)
    assert all(0 <= r["reused_steps"] < r["context_steps"] for r in rows)  # the first frame's steps all run


def test_speed_refuses_an_unknown_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["speed", "--sizes", "176x144,100x100"])
    assert exit_info.value.code == 2 and "100x100" in capsys.readouterr().err
