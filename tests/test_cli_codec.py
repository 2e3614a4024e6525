"""`progvc compress | decompress | truncate | info`: outputs, --force, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _tiny_codec import clip, codec

from progvc.cli import main
from progvc.codec import inspect
from progvc.codec.bitstream import parse
from progvc.io import read_video, sample_clip, write_video


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model file, a lossless input clip (PNG folder) and its full stream."""
    root = tmp_path_factory.mktemp("cli")
    codec().model.save(root / "model.pt")
    write_video(root / "clip", clip())
    assert main(["compress", str(root / "clip"), str(root / "full.pgv"), "--model", str(root / "model.pt"),
                 "--gop", "3", "--quiet"]) == 0  # fmt: skip
    return root


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def fails(argv, capsys, match):
    """Run the CLI, expect exit code 2 and exactly one line on stderr containing ``match``."""
    capsys.readouterr()
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("progvc: error: ") and match in err, err


def test_compress_matches_the_library(files):
    assert (files / "full.pgv").read_bytes() == codec().compress(clip(), gop=3)


def test_truncate_then_decompress_every_format(files, capsys):
    model = ["--model", files / "model.pt"]
    assert cli("truncate", files / "full.pgv", files / "cut.pgv", "--layers", "2") == 0
    assert (files / "cut.pgv").read_bytes() == codec().compress(clip(), gop=3, layers=2)
    for out in ("out.y4m", "out.mp4", "frames"):
        assert cli("decompress", files / "cut.pgv", files / out, *model, "--quiet") == 0
        frames, _ = read_video(files / out)
        assert frames.shape == clip().shape
    expected = codec().decompress((files / "cut.pgv").read_bytes())
    np.testing.assert_array_equal(read_video(files / "frames")[0], expected)  # PNGs are lossless
    argv = [
        "decompress",
        files / "cut.pgv",
        files / "frames",
        *model,
        "--synthesis",
        "none",
        "--force",
        "--quiet",
    ]
    assert cli(*argv) == 0
    np.testing.assert_array_equal(
        read_video(files / "frames")[0],
        codec().decompress((files / "cut.pgv").read_bytes(), synthesis="none"),
    )


def test_decompress_with_bfloat16_pixels(files):
    """--pixels bfloat16 decodes the same stream to pictures within a few levels of float32's."""
    argv = ["decompress", files / "full.pgv", files / "bf16", "--model", files / "model.pt", "--quiet"]
    assert cli(*argv, "--pixels", "bfloat16") == 0
    got = read_video(files / "bf16")[0].astype(int)
    want = codec().decompress((files / "full.pgv").read_bytes()).astype(int)
    assert np.abs(got - want).max() <= 8 and np.abs(got - want).mean() < 1.0


def test_info_text_and_json(files, capsys):
    capsys.readouterr()
    assert main(["info", str(files / "full.pgv"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (
        d["frames"] == 5
        and d["gop_layers"] == [4, 4]
        and d["size_bytes"] == (files / "full.pgv").stat().st_size
    )
    assert main(["info", str(files / "full.pgv")]) == 0
    assert "64x48" in capsys.readouterr().out


def test_compress_options(files):
    out = files / "target.pgv"
    argv = ["compress", sample_clip("carphone"), out, "--model", files / "model.pt", "--frames", "3"]
    assert cli(*argv, "--target-bpp", "0.01", "--quiet") == 0
    info = inspect(out.read_bytes())
    assert info.num_frames == 3 and info.bpp() <= 0.01
    # a sample clip's name works as the input, as in `progvc evaluate carphone`
    argv = ["compress", "carphone", files / "named.pgv", "--model", files / "model.pt", "--frames", "3"]
    assert cli(*argv, "--target-bpp", "0.01", "--quiet") == 0
    assert (files / "named.pgv").read_bytes() == out.read_bytes()


def test_errors_are_one_line_with_exit_code_2(files, capsys, tmp_path):
    model = ["--model", files / "model.pt"]
    (tmp_path / "random.pgv").write_bytes(np.random.default_rng(0).bytes(200))
    fails(["info", tmp_path / "random.pgv"], capsys, "bad magic")
    fails(["decompress", tmp_path / "random.pgv", tmp_path / "o.y4m", *model], capsys, "bad magic")
    full = (files / "full.pgv").read_bytes()
    (tmp_path / "short.pgv").write_bytes(full[: len(full) // 2])
    fails(["decompress", tmp_path / "short.pgv", tmp_path / "o.y4m", *model], capsys, "truncated")
    fails(["truncate", tmp_path / "short.pgv", tmp_path / "o.pgv", "--layers", "1"], capsys, "truncated")
    fails(["info", tmp_path / "missing.pgv"], capsys, "cannot read")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    fails(["compress", tmp_path / "bad.mp4", tmp_path / "o.pgv", *model], capsys, "not a readable video")
    fails(["compress", tmp_path / "missing.mp4", tmp_path / "o.pgv", *model], capsys, "no such file")
    fails(
        ["compress", files / "clip", tmp_path / "o.pgv", "--model", tmp_path / "nope.pt"],
        capsys,
        "no such model",
    )
    fails(["compress", files / "clip", files / "full.pgv", *model], capsys, "exists; pass --force")
    fails(
        ["truncate", files / "full.pgv", files / "full.pgv", "--layers", "1"], capsys, "exists; pass --force"
    )
    fails(["decompress", files / "full.pgv", files / "clip", *model], capsys, "exists; pass --force")
    fails(["compress", files / "clip", tmp_path / "o.pgv", *model, "--gop", "0"], capsys, "gop must be")
    fails(["decompress", files / "full.pgv", tmp_path / "o.gif", *model], capsys, "unsupported output type")
    assert not (tmp_path / "o.gif").exists() and not (tmp_path / "o.pgv").exists()
    # another model
    codec("msvq", seed=1).model.save(tmp_path / "other.pt")
    fails(
        ["decompress", files / "full.pgv", tmp_path / "o.y4m", "--model", tmp_path / "other.pt"],
        capsys,
        "made by",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4", "other.pt", "random.pgv", "short.pgv"]


def test_console_entry_point(files):
    run = subprocess.run(
        [sys.executable, "-m", "progvc", "info", str(files / "model.pt")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and run.stderr == "progvc: error: not a progvc stream (bad magic)\n"
    # a reader that stops early (`progvc info FILE | head -1`) ends the command quietly
    proc = subprocess.Popen(
        [sys.executable, "-m", "progvc", "info", str(files / "full.pgv"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err, err


def test_info_frames_gives_bits_per_frame_and_scale(files, capsys):
    capsys.readouterr()
    assert cli("info", files / "full.pgv", "--frames", "--json", "--model", files / "model.pt") == 0
    d = json.loads(capsys.readouterr().out)
    assert [(f["index"], f["gop"], f["position"]) for f in d["frames"]] == [
        (0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0), (4, 1, 1)
    ]  # fmt: skip
    assert all(len(f["bits"]) == len(d["scales"]) and min(f["bits"]) > 0 for f in d["frames"])
    payload = sum(len(seg) for gop in parse((files / "full.pgv").read_bytes()).gops for seg in gop.segments)
    assert abs(sum(sum(f["bits"]) for f in d["frames"]) - 8 * payload) < 0.01 * 8 * payload + 64 * 8
    assert cli("info", files / "full.pgv", "--frames", "--model", files / "model.pt") == 0
    table = capsys.readouterr().out
    assert "first frame of a GOP" in table and len(table.splitlines()) == 7


def test_compress_deadzone_trades_bits_and_keeps_the_stream_decodable(tmp_path, capsys):
    from _tiny_codec import tiny_model

    tiny_model("mssq", prediction="loops").save(tmp_path / "scalar.pt")
    write_video(tmp_path / "clip", clip())
    model = ["--model", tmp_path / "scalar.pt", "--gop", "5", "--quiet"]
    assert cli("compress", tmp_path / "clip", tmp_path / "plain.pgv", *model) == 0
    assert cli("compress", tmp_path / "clip", tmp_path / "dz.pgv", *model, "--deadzone", "0.4,0.9") == 0
    assert (tmp_path / "dz.pgv").stat().st_size < (tmp_path / "plain.pgv").stat().st_size
    assert (
        cli(
            "decompress",
            tmp_path / "dz.pgv",
            tmp_path / "dz.y4m",
            "--model",
            tmp_path / "scalar.pt",
            "--quiet",
        )
        == 0
    )
    fails(
        ["compress", tmp_path / "clip", tmp_path / "bad.pgv", *model, "--deadzone", "0.2"], capsys, "deadzone"
    )
    fails(
        ["compress", tmp_path / "clip", tmp_path / "bad.pgv", *model, "--deadzone", "1.5,0"],
        capsys,
        "deadzone",
    )


def test_compress_rdoq_option(tmp_path, capsys):
    from _tiny_codec import tiny_model

    tiny_model("mssq", prediction="loops").save(tmp_path / "scalar.pt")
    write_video(tmp_path / "clip", clip())
    model = ["--model", tmp_path / "scalar.pt", "--gop", "5", "--quiet", "--skip", "off"]  # RDOQ alone
    assert cli("compress", tmp_path / "clip", tmp_path / "plain.pgv", *model, "--rdoq", "0") == 0
    assert cli("compress", tmp_path / "clip", tmp_path / "rd.pgv", *model, "--rdoq", "100") == 0
    assert (tmp_path / "rd.pgv").stat().st_size < (tmp_path / "plain.pgv").stat().st_size
    assert cli("decompress", tmp_path / "rd.pgv", tmp_path / "rd.y4m", "--model", tmp_path / "scalar.pt", "--quiet") == 0
    fails(["compress", tmp_path / "clip", tmp_path / "bad.pgv", *model, "--rdoq", "-1"], capsys, "rdoq")
