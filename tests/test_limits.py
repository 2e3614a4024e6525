"""Decoder resource limits (progvc.codec.limits): decompression bombs are refused before any work."""

import time
from fractions import Fraction

import numpy as np
import pytest
from _tiny_codec import clip, codec, stream

from progvc.cli import main as cli_main
from progvc.codec import Codec, SynthesisSettings
from progvc.codec.bitstream import MAX_GOP, Header, parse
from progvc.codec.limits import DEFAULT_MAX_PIXELS, DecodeLimits, synth_work
from progvc.errors import BitstreamError, ConfigError, LimitExceededError


def bomb(width: int = 2048, height: int = 2048, frames: int = 64, gop: int = 64, layers: int = 0) -> bytes:
    """The issue's stream: a valid header for the tiny model, one empty GOP per ``gop`` frames."""
    c = codec()
    header = Header(
        c.fingerprint,
        width,
        height,
        Fraction(25),
        frames,
        gop,
        c.spec.scales,
        "range",
        SynthesisSettings(),
        layers,
    )
    return header.to_bytes() + b"\0" * header.num_gops


def refused_fast(c: Codec, data: bytes, match: str, **kw) -> LimitExceededError:
    start = time.perf_counter()
    with pytest.raises(LimitExceededError, match=match) as info:
        c.decompress(data, **kw)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert "\n" not in message and "DecodeLimits(" in message and "progvc decompress --max-" in message
    return info.value


def test_the_issue_bomb_is_refused_within_a_second():
    data = bomb()
    assert len(data) <= 45
    refused_fast(codec(), data, "max_synth_work")
    # the same with synthesis off asks for nothing: black frames would come back, but not 64 x 4 M pixels
    assert synth_work(parse(data), None, "none") == 0


def test_largest_frame_and_gop_are_refused():
    side = 8192  # 2**26 pixels: the format's largest frame
    refused_fast(codec(), bomb(side, side, frames=MAX_GOP, gop=MAX_GOP), "max_pixels")
    refused_fast(codec(), bomb(side, side, frames=MAX_GOP, gop=MAX_GOP), "max_pixels", synthesis="none")
    # the largest frame the default limits allow, a whole GOP of it, every scale synthesized
    refused_fast(codec(), bomb(3840, 2160, frames=MAX_GOP, gop=MAX_GOP), "max_synth_work")
    refused_fast(codec(), bomb(64, 48, frames=2**31 - 1, gop=MAX_GOP), "max_frames")


def test_limits_are_inclusive_and_count_what_is_synthesized():
    data = stream()  # 5 frames of 64x48, 4 scales, all sent
    full = parse(data)
    assert synth_work(full, None, "sample") == 0
    assert synth_work(full, 1, "sample") == 5 * 64 * 48 * 3
    assert synth_work(full, 1, "none") == 0
    c = codec()
    tight = Codec(
        c.model, limits=DecodeLimits(max_pixels=64 * 48, max_frames=5, max_synth_work=5 * 64 * 48 * 3)
    )
    assert tight.decompress(data, layers=1).shape == (5, 48, 64, 3)
    small = Codec(c.model, limits=DecodeLimits(max_synth_work=5 * 64 * 48 * 3 - 1))
    refused_fast(small, data, "max_synth_work", layers=1)
    assert small.decompress(data).shape == (5, 48, 64, 3)  # nothing synthesized
    refused_fast(Codec(c.model, limits=DecodeLimits(max_pixels=64 * 48 - 1)), data, "max_pixels")
    refused_fast(Codec(c.model, limits=DecodeLimits(max_frames=4)), data, "max_frames")
    assert issubclass(LimitExceededError, BitstreamError)


def test_raising_the_limit_lets_a_real_stream_decode():
    c = codec()
    video = np.concatenate([clip()] * 2)  # 10 frames
    data = c.compress(video, gop=10, layers=0)
    assert synth_work(parse(data), None, "sample") == 10 * 64 * 48 * 4
    low = Codec(c.model, limits=DecodeLimits(max_synth_work=10 * 64 * 48 * 4 - 1))
    refused_fast(low, data, "max_synth_work")
    high = Codec(c.model, limits=DecodeLimits(max_synth_work=10 * 64 * 48 * 4))
    np.testing.assert_array_equal(high.decompress(data), c.decompress(data))


def test_bad_limits_are_config_errors():
    with pytest.raises(ConfigError, match="max_pixels must be an integer >= 1"):
        DecodeLimits(max_pixels=0)
    with pytest.raises(ConfigError, match="max_frames"):
        DecodeLimits(max_frames=2.5)
    with pytest.raises(ConfigError, match="limits must be a DecodeLimits"):
        Codec(codec().model, limits={"max_pixels": 1})
    assert DecodeLimits().max_pixels == DEFAULT_MAX_PIXELS == 3840 * 2160


def test_cli_limits_exit_2_and_can_be_raised(tmp_path, capsys, monkeypatch):
    from progvc.cli import codec_cmds

    monkeypatch.setattr(
        codec_cmds, "_load_codec", lambda args, limits=None, **_: Codec(codec().model, limits=limits)
    )
    (tmp_path / "bomb.pgv").write_bytes(bomb())
    start = time.perf_counter()
    assert cli_main(["decompress", str(tmp_path / "bomb.pgv"), str(tmp_path / "out.y4m"), "--quiet"]) == 2
    assert time.perf_counter() - start < 1.0
    err = capsys.readouterr().err
    assert "max_synth_work" in err and "--max-synth-work" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "s.pgv").write_bytes(stream())
    args = ["decompress", str(tmp_path / "s.pgv"), str(tmp_path / "out.y4m"), "--quiet", "--layers", "1"]
    assert cli_main([*args, "--max-synth-work", "100"]) == 2
    assert cli_main([*args, "--max-pixels", "100"]) == 2
    assert cli_main([*args, "--max-frames", "4"]) == 2
    assert "--max-frames" in capsys.readouterr().err
    assert cli_main([*args, "--max-synth-work", str(5 * 64 * 48 * 3), "--max-frames", "5"]) == 0
    assert (tmp_path / "out.y4m").is_file()
