"""Evaluation: anchors round-trip, BD-rate known answers, reports, and evaluate / demo end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from _tiny_codec import clip, tiny_model

from progvc.cli import main
from progvc.codec import Codec, CodecModel
from progvc.errors import ConfigError
from progvc.evaluation.anchors import ANCHORS, encode_decode, strip_sei, sweep
from progvc.evaluation.evaluate import evaluate
from progvc.evaluation.rd import bd_rate, pareto_front, plot_rd, rate_ratio_table, write_csv, write_json
from progvc.evaluation.report import OutputExistsError, format_table, prepare_output_dir
from progvc.io import read_video, sample_clip, write_video

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


# ---------------------------------------------------------------- anchors


@pytest.mark.parametrize("codec", list(ANCHORS))
def test_anchor_round_trip_bits_grow_with_rate(codec):
    frames = clip()[:4]  # real content, 64 x 48
    low, mid, high = (encode_decode(frames, codec, crf=q, gop=4) for q in ANCHORS[codec].sweep[::3])
    for r in (low, mid, high):
        assert r.frames.shape == frames.shape and r.frames.dtype == np.uint8
        assert r.bits > 0 and r.bits % 8 == 0
    assert low.bits < mid.bits < high.bits
    assert psnr(low.frames, frames) < psnr(high.frames, frames)
    assert psnr(high.frames, frames) > 28


@pytest.mark.parametrize("codec", list(ANCHORS))
def test_anchor_gop_and_odd_size(codec):
    frames = np.ascontiguousarray(clip()[:4, :33, :47])  # odd sizes are padded, then cropped back
    intra = encode_decode(frames, codec, crf=ANCHORS[codec].sweep[3], gop=1)
    inter = encode_decode(frames, codec, crf=ANCHORS[codec].sweep[3], gop=4)
    assert intra.frames.shape == frames.shape
    assert intra.bits > inter.bits  # every frame a key frame costs more: the GOP setting is applied


@pytest.mark.parametrize("codec", list(ANCHORS))
def test_anchor_bitrate_mode(codec):
    frames = np.ascontiguousarray(
        read_video(sample_clip("bikes"), max_frames=4, start=40)[0][:, 100:164, 300:364]
    )
    results = list(sweep(frames, codec, bpps=[0.05, 0.8], gop=4))
    assert results[0].bits < results[1].bits and results[0].setting.startswith("bitrate=")
    if ANCHORS[codec].bitrate_min_side > 48:
        with pytest.raises(ConfigError, match="at least 64x64 in bitrate mode"):
            encode_decode(frames[:, :48], codec, bitrate=10000)


def test_anchor_settings_are_checked_against_the_encoder():
    frames = clip()[:2]
    bad_param = dataclasses.replace(ANCHORS["x264"], options={"x264-params": "keyint={gop}:no-such-key=1"})
    with pytest.raises(ConfigError, match="rejected a setting"):
        encode_decode(frames, bad_param, crf=30)
    bad_option = dataclasses.replace(ANCHORS["svtav1"], options={"no_such_option": "1"})
    with pytest.raises(ConfigError, match="no option"):
        encode_decode(frames, bad_option, crf=30)
    with pytest.raises(ConfigError, match="exactly one"):
        encode_decode(frames, "x264")
    with pytest.raises(ConfigError, match="unknown anchor 'vp9'"):
        encode_decode(frames, "vp9", crf=30)


def test_strip_sei_drops_only_sei_nal_units():
    sps, sei, idr = b"\x67\x42\x00\x1e", b"\x06\x05\x10abc", b"\x65\x88\x84"
    long_code, short_code = b"\x00\x00\x00\x01", b"\x00\x00\x01"
    packet = long_code + sps + short_code + sei + long_code + idr
    assert strip_sei(packet, ANCHORS["x264"].is_sei) == long_code + sps + long_code + idr
    assert strip_sei(packet, ANCHORS["x265"].is_sei) == packet  # 0x06 is no SEI in HEVC


# ---------------------------------------------------------------- BD-rate

RATES = np.array([0.004, 0.01, 0.02, 0.05, 0.1])
QUALITY = np.array([24.0, 27.0, 29.5, 32.0, 33.5])


@pytest.mark.parametrize(("factor", "expected"), [(0.5, -50.0), (2.0, 100.0), (0.8, -20.0), (1.0, 0.0)])
def test_bd_rate_known_answers(factor, expected):
    result = bd_rate(RATES, QUALITY, RATES * factor, QUALITY)
    assert result.percent == pytest.approx(expected, abs=1e-9)
    assert result.overlap == (24.0, 33.5) and result.reason == ""


def test_bd_rate_integrates_over_the_overlap_only():
    def line(q):  # log-rate linear in quality: PCHIP reproduces it exactly
        return 0.01 * np.exp(0.3 * (np.asarray(q) - 27))

    anchor_q, test_q = [24.0, 26.0, 28.0, 30.0], [27.0, 29.0, 31.0, 33.5]
    result = bd_rate(line(anchor_q), anchor_q, line(test_q) / 2, test_q)
    assert result.overlap == (27.0, 30.0)
    assert result.percent == pytest.approx(-50.0, abs=1e-9)


def test_bd_rate_for_distances_and_undefined_cases():
    lpips = 1.0 - QUALITY / 40  # lower is better
    assert bd_rate(RATES, lpips, RATES / 2, lpips, higher_is_better=False).percent == pytest.approx(-50.0)
    apart = bd_rate(RATES, QUALITY, RATES, QUALITY + 20)
    assert math.isnan(apart.percent) and "do not overlap" in apart.reason
    few = bd_rate(RATES[:1], QUALITY[:1], RATES, QUALITY)
    assert math.isnan(few.percent) and "anchor curve has 1 distinct" in few.reason
    holed = np.append(QUALITY[:-1], np.nan)  # a metric that failed on one point
    with_nan = bd_rate(RATES, holed, RATES / 2, holed)
    assert with_nan.percent == pytest.approx(-50.0) and with_nan.overlap == (
        24.0,
        32.0,
    )  # dropped, not propagated


def test_pareto_front_drops_dominated_points_and_bd_rate_ignores_them():
    rates = [0.01, 0.02, 0.015, 0.04, 0.03, 0.05]
    psnr = [24.0, 27.0, 23.0, 26.5, 29.0, 29.0]  # 0.015 and 0.04 are beaten by cheaper points, 0.05 ties 0.03
    assert pareto_front(rates, psnr) == [0, 1, 4]
    assert pareto_front(rates, [-q for q in psnr], higher_is_better=False) == [0, 1, 4]  # a distance
    assert pareto_front([0.01, float("nan"), 0.02], [20.0, 30.0, float("nan")]) == [0]
    front = [0, 1, 4]
    clean = bd_rate(RATES, QUALITY, [rates[i] for i in front], [psnr[i] for i in front])
    assert bd_rate(RATES, QUALITY, rates, psnr).percent == pytest.approx(clean.percent)


def test_rate_ratio_at_equal_quality_interpolates_on_the_anchors_front_and_never_extrapolates():
    def point(codec, bpp, psnr, lpips, setting=""):
        return {"video": "v", "codec": codec, "setting": setting, "bpp": bpp, "psnr": psnr, "lpips": lpips}

    points = [
        point("x265", 0.01, 20.0, 0.5),
        point("x265", 0.02, 24.0, 0.3),
        point("x265", 0.03, 23.0, 0.6),  # dominated: left out of the anchor's front
        point("progvc", 0.012, 22.0, 0.4, "a"),  # x265 needs 0.015 for 22 dB and for LPIPS 0.4
        point("progvc", 0.005, 19.0, 0.7, "b"),  # below x265's qualities: no ratio
        point("progvc", 0.04, 21.0, 0.9, "c"),  # not on progvc's own front
    ]
    rows = rate_ratio_table(points, ["progvc"], ["x265"], {"psnr": True, "lpips": False})
    assert [(r["metric"], r["setting"]) for r in rows] == [("psnr", "a"), ("lpips", "a")]
    for r in rows:
        assert r["anchor_bpp"] == pytest.approx(0.015) and r["ratio"] == pytest.approx(0.8)


# ---------------------------------------------------------------- reports


def test_reports_json_csv_plot_and_table(tmp_path):
    points = [
        {"video": "v", "codec": c, "setting": f"q{i}", "bpp": r, "psnr": q}
        for c, f in (("x264", 1.0), ("progvc-synth", 0.5))
        for i, (r, q) in enumerate(zip(RATES * f, QUALITY))
    ]
    points[0]["psnr"] = float("nan")
    data = json.loads(write_json({"points": points}, tmp_path / "p.json").read_text())
    assert data["points"][0]["psnr"] is None and len(data["points"]) == 10
    rows = list(csv.DictReader(write_csv(points, tmp_path / "p.csv").open()))
    assert len(rows) == 10 and float(rows[1]["bpp"]) == RATES[1]
    png = plot_rd(points, "v", "psnr", tmp_path / "rd.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    table = format_table(points[:2], ["codec", "bpp", "psnr"]).splitlines()
    assert table[0].split() == ["codec", "bpp", "psnr"] and table[2].split()[-1] == "-"


def test_output_dir_is_never_overwritten_without_force(tmp_path):
    out = prepare_output_dir(tmp_path / "new", ["*.json"])
    (out / "notes.txt").write_text("mine")
    assert prepare_output_dir(out, ["*.json"]) == out  # unrelated files are fine
    (out / "results.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="already holds results .results.json.; pass --force"):
        prepare_output_dir(out, ["*.json"])
    assert prepare_output_dir(out, ["*.json"], force=True) == out


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A random-init codec model file and a 4-frame 64 x 48 y4m clip."""
    root = tmp_path_factory.mktemp("tiny")
    tiny_model("msvq").save(root / "tiny.pt")
    write_video(root / "clip.y4m", clip()[:4], 25)
    return root


def test_evaluate_end_to_end(tiny_files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no DISTS / FVD weights anywhere
    weights = tmp_path / "weights"
    weights.mkdir()
    with torch.random.fork_rng():
        import torchvision

        torch.manual_seed(0)
        alex = torchvision.models.alexnet(weights=None).features
    torch.save(
        {f"features.{k}": v for k, v in alex.state_dict().items()}, weights / "alexnet-owt-7be5be79.pth"
    )
    out = tmp_path / "out"
    result = evaluate(
        [tiny_files / "clip.y4m"],
        model=tiny_files / "tiny.pt",
        frames=4,
        gop=2,
        out=out,
        anchors=("x264", "svtav1"),
        weights=weights,
        progress=False,
    )
    scales = 4
    sweeps = len(ANCHORS["x264"].sweep) + len(ANCHORS["svtav1"].sweep)
    assert len(result.points) == 2 * scales + sweeps
    assert set(result.skipped) == {"dists", "fvd"}
    assert "dists_weights.pt" in result.skipped["dists"] or "vgg16-397923af.pth" in result.skipped["dists"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"] == ["psnr", "msssim", "haarpsi", "lpips"]
    assert saved["settings"]["pixels"] == "float32"
    assert saved["anchors"]["x264"]["options"]["x264-params"].startswith("keyint=2:min-keyint=2")
    progvc = [p for p in saved["points"] if p["codec"] == "progvc-nosynth"]
    assert [p["bits"] for p in progvc] == sorted(p["bits"] for p in progvc)  # one stream, growing prefixes
    assert all(p["bpp"] > 0 and 0 <= p["lpips"] and p["psnr"] > 0 for p in saved["points"])
    # evaluate decodes the full stream once for both curves: with every scale sent there is nothing to synthesize
    codec = Codec(CodecModel.load(tiny_files / "tiny.pt"))
    data = codec.compress(clip()[:4], gop=2)
    assert np.array_equal(
        codec.decompress(data, synthesis="sample"), codec.decompress(data, synthesis="none")
    )
    bd = list(csv.DictReader((out / "bd_rate.csv").open()))
    assert len(bd) == 2 * 2 * 4  # (synth, nosynth) x (x264, svtav1) x 4 metrics
    assert all(row["bd_rate_percent"] or row["reason"] for row in bd)
    # the rate multiples at equal quality are those of the saved points
    assert saved["rate_ratio"] == rate_ratio_table(
        saved["points"], ["progvc-synth", "progvc-nosynth"], ["x264", "svtav1"],
        {m: m != "lpips" for m in saved["metrics"]},
    )  # fmt: skip
    assert (out / "rate_ratio.csv").exists() == bool(saved["rate_ratio"])
    for metric in saved["metrics"]:
        assert (out / f"rd_clip_{metric}.png").read_bytes()[:8] == PNG_MAGIC
    assert "BD-rate" in result.summary and "skipped fvd" in result.summary


def test_demo_cli_writes_table_and_strip_and_refuses_to_overwrite(tiny_files, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--model", str(tiny_files / "tiny.pt"), "--video", str(tiny_files / "clip.y4m")]
    args += ["--frames", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "synthesis" in printed and "decode_fps" in printed
    info = json.loads((out / "demo.json").read_text())
    assert [(r["scales"], r["synthesis"]) for r in info["rows"]] == [
        (k, m) for k in range(1, 5) for m in ("sample", "none")
    ]
    assert all(r["bytes"] > 0 and r["encode_fps"] > 0 and r["decode_fps"] > 0 for r in info["rows"])
    assert (out / "demo_strip.png").read_bytes()[:8] == PNG_MAGIC
    assert main(args) == 2
    assert "already holds results" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_evaluate_cli_errors_are_one_line(tiny_files, tmp_path, capsys):
    base = ["evaluate", str(tiny_files / "clip.y4m"), "--model", str(tiny_files / "tiny.pt")]
    assert main([*base, "--anchors", "x264,vp9", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.strip() == "progvc: error: unknown anchor 'vp9'; known: x264, x265, svtav1"
    assert main([*base, "--synthesis", "magic", "--out", str(tmp_path / "b")]) == 2
    assert "unknown synthesis mode 'magic'" in capsys.readouterr().err


def test_evaluate_sweeps_rdoq_weights_into_one_curve(tiny_files, tmp_path, capsys):
    base = ["evaluate", str(tiny_files / "clip.y4m"), "--model", str(tiny_files / "tiny.pt"), "--quiet"]
    opts = ["--frames", "2", "--gop", "2", "--anchors", "x264", "--synthesis", "none", "--no-perceptual"]
    out = tmp_path / "sweep"
    assert main([*base, *opts, "--rdoq", "0,0.5", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["rdoq"] == [0.0, 0.5]
    progvc = [p for p in saved["points"] if p["codec"] == "progvc-nosynth"]
    assert [p["setting"] for p in progvc] == [
        f"rdoq={w} scales={k}/4" for w in ("0", "0.5") for k in range(1, 5)
    ]
    assert [p["rdoq"] for p in progvc] == [0.0] * 4 + [0.5] * 4
    capsys.readouterr()
    assert main([*base, *opts, "--rdoq", "0.1,0.1", "--out", str(tmp_path / "twice")]) == 2
    assert "distinct" in capsys.readouterr().err and not (tmp_path / "twice").exists()
    with pytest.raises(SystemExit):
        main([*base, *opts, "--rdoq", "-1", "--out", str(tmp_path / "neg")])
    assert "weights must be >= 0" in capsys.readouterr().err


def test_evaluate_cli_anchors_only_in_bitrate_mode(tiny_files, tmp_path, capsys):
    out = tmp_path / "anchors"
    args = ["evaluate", str(tiny_files / "clip.y4m"), "--anchors-only", "--anchors", "x264,x265"]
    assert main([*args, "--anchor-bpps", "0.05,0.5", "--no-perceptual", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert [(p["codec"], p["setting"]) for p in saved["points"]] == [
        (c, f"bitrate={b}")
        for c in ("x264", "x265")
        for b in (round(0.05 * 64 * 48 * 25), round(0.5 * 64 * 48 * 25))
    ]
    assert saved["bd_rate"] == [] and saved["settings"]["model"] is None
    assert "x264" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse rejects it with a usage line
        main([*args, "--anchor-bpps", "0,1", "--out", str(tmp_path / "bad")])
    assert "rates must be > 0" in capsys.readouterr().err


def test_evaluate_anchor_low_bpps_join_the_crf_sweep(tiny_files, tmp_path, capsys):
    """--anchor-low-bpps: bitrate-mode points added to each anchor's crf sweep, on the same curve."""
    from progvc.evaluation.anchors import get_anchor

    out = tmp_path / "low"
    args = ["evaluate", str(tiny_files / "clip.y4m"), "--anchors-only", "--anchors", "x264"]
    assert main([*args, "--anchor-low-bpps", "0.05", "--no-perceptual", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "results.json").read_text())
    settings = [p["setting"] for p in saved["points"] if p["codec"] == "x264"]
    assert settings == [f"bitrate={round(0.05 * 64 * 48 * 25)}"] + [f"crf={c}" for c in get_anchor("x264").sweep]
    assert saved["anchor_low_bpps"] == [0.05]
    with pytest.raises(SystemExit):
        main([*args, "--anchor-low-bpps", "-1", "--out", str(tmp_path / "bad")])
    assert "rates must be > 0" in capsys.readouterr().err


def test_evaluate_a_later_segment_downscaled(tiny_files, tmp_path, capsys):
    """--start and --size: frames 1.. of the clip, area-downscaled, as the anchors and progvc see them."""
    out = tmp_path / "segment"
    args = [
        "evaluate",
        str(tiny_files / "clip.y4m"),
        "--anchors-only",
        "--anchors",
        "x264",
        "--anchor-bpps",
        "0.5",
    ]
    opts = ["--start", "1", "--frames", "2", "--size", "24x32", "--no-perceptual", "--quiet"]
    assert main([*args, *opts, "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["start"] == 1 and saved["settings"]["size"] == [24, 32]
    (point,) = saved["points"]
    assert point["bpp"] == pytest.approx(point["bits"] / (2 * 24 * 32))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*args, "--size", "24", "--out", str(tmp_path / "bad")])
    assert "HxW" in capsys.readouterr().err
    assert main([*args, "--size", "96x64", "--out", str(tmp_path / "up"), "--quiet"]) == 2
    assert "no larger" in capsys.readouterr().err
