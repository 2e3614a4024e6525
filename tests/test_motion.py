"""progvc.codec.motion: global motion of the prediction loops, estimated, coded and followed exactly."""

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny_codec import tiny_model

from progvc.codec import Codec, truncate
from progvc.codec.bitstream import crc16, parse
from progvc.codec.motion import (
    MOTION_RANGE,
    MOTION_UNIT,
    estimate,
    estimate_gop,
    motion_bits,
    motion_from_symbols,
    motion_scale,
    motion_symbols,
    translate,
)
from progvc.codec.prediction import code_clip
from progvc.errors import BitstreamError, ConfigError
from progvc.io import read_video, sample_clip


def _field(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random latent-like field ``[1, 4, h, w]`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 4, h // 4 + 2, w // 4 + 2, generator=g, dtype=torch.float64)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def test_translate_moves_content_by_whole_and_sixteenth_pixels():
    x = _field(12, 16)
    # one whole pixel down and two left: out[i, j] = x[i - 1, j + 2], borders replicated
    y = translate(x, (MOTION_UNIT, -2 * MOTION_UNIT))
    torch.testing.assert_close(y[..., 1:, :-2], x[..., :-1, 2:], rtol=0, atol=0)
    torch.testing.assert_close(y[..., 0, :-2], x[..., 0, 2:], rtol=0, atol=0)
    torch.testing.assert_close(y[..., 1:, -1], x[..., :-1, -1], rtol=0, atol=0)
    # a quarter pixel right: the linear blend of a pixel and its left neighbour
    q = translate(x, (0, MOTION_UNIT // 4))
    torch.testing.assert_close(q[..., 1:], 0.75 * x[..., 1:] + 0.25 * x[..., :-1])
    assert translate(x, (0, 0)) is x


def test_estimate_recovers_a_translation_to_a_sixteenth():
    big = _field(40, 48, seed=1)
    ref = big[..., 4:28, 4:36]
    # f[i, j] = big[i + 2, j + 7] = ref[i - 2, j + 3]: ref moved 2 down and 3 left
    f = big[..., 2:26, 7:39]
    assert estimate(f, ref) == (2 * MOTION_UNIT, -3 * MOTION_UNIT)
    # a sub-pixel motion made by the same interpolation is found exactly, from another guess too
    g = translate(ref, (5, -19))
    assert estimate(g, ref, guess=(16, 0)) == (5, -19)
    # no motion: the previous motion is kept only when it is as good
    assert estimate(ref, ref, guess=(3, 0)) == (0, 0)


def test_motion_symbols_round_trip_and_out_of_range_is_a_stream_error():
    for m, prev in [((0, 0), (0, 0)), ((5, -19), (4, -20)), ((-128, 128), (128, -128))]:
        assert motion_from_symbols(motion_symbols(m, prev), prev) == m
    assert motion_bits((0, 0), (0, 0)) < 0.2  # an unchanged motion is almost free
    assert 7 < motion_bits((1, 0), (0, 0)) < motion_bits((9, 0), (0, 0)) < 20
    limit = MOTION_RANGE * MOTION_UNIT
    with pytest.raises(BitstreamError, match="exceeds"):
        motion_from_symbols(motion_symbols((limit, 0), (0, 0)), (limit, 0))


@pytest.fixture(scope="module")
def pan() -> np.ndarray:
    """Six 128 x 96 frames of a window panning right over a real frame by 6 pixels per frame."""
    frame, _ = read_video(sample_clip("bikes"), max_frames=1, start=40)
    return np.ascontiguousarray(np.stack([frame[0, 100:196, 200 + 6 * t : 328 + 6 * t] for t in range(6)]))


def test_code_clip_follows_a_pan_and_sends_fewer_tokens():
    model = tiny_model("mssq", prediction="loops")
    base = 2.0 * _field(24, 32, seed=2).float().repeat(1, 2, 1, 1)  # [1, 8, 24, 32]
    # the content moves 6/16 of a latent pixel left per frame
    latents = torch.stack([translate(base, (0, -6 * t)) for t in range(6)], dim=1)
    with torch.no_grad():
        moving = code_clip(model.tokenizer, latents, "loops", motion="global")
        still = code_clip(model.tokenizer, latents, "loops", motion="none")
    assert moving.motions[0] == (0, 0) and still.motions == [(0, 0)] * 6
    assert all(dy == 0 and -8 <= dx <= -4 for dy, dx in moving.motions[1:]), moving.motions

    def nonzero(code):  # tokens the predicted frames had to send
        return sum(int((tk != model.tokenizer.half).sum()) for tokens in code.tokens[1:] for tk in tokens)

    assert nonzero(moving) < 0.95 * nonzero(still)
    with pytest.raises(ConfigError, match="one clip"):
        code_clip(model.tokenizer, latents.repeat(2, 1, 1, 1, 1), "loops", motion="global")


def test_streams_with_motion_decode_exactly_and_truncate_byte_identically(pan):
    codec = Codec(tiny_model("mssq", prediction="loops"), progress=False)
    assert codec.motion == "global"
    data = codec.compress(pan, gop=6)
    assert parse(data).header.motion == "global"
    np.testing.assert_array_equal(codec.decompress(data, synthesis="none"), codec.reconstruct(pan, gop=6))
    for k in range(1, 4):
        assert truncate(data, k) == codec.compress(pan, gop=6, layers=k)
    still = Codec(tiny_model("mssq", prediction="loops"), progress=False, motion="none")
    assert parse(still.compress(pan, gop=6)).header.motion == "none"
    # an intra model has no loops to move: its codec ignores the option
    assert Codec(tiny_model("mssq"), progress=False).motion == "none"
    with pytest.raises(ConfigError, match="motion"):
        Codec(tiny_model("mssq", prediction="loops"), motion="affine")


def _header_end(data: bytes) -> int:
    return parse(data).header_bytes - 2  # before the header CRC


def test_version_2_streams_still_decode_and_unknown_motion_is_refused(pan):
    codec = Codec(tiny_model("mssq", prediction="loops"), progress=False, motion="none", skip=False)
    data = codec.compress(pan[:3], gop=3)
    end = _header_end(data)
    assert data[4] == 4 and data[end - 2 : end] == b"\0\0"  # version 4, motion "none", skip off
    body = data[:4] + bytes([2]) + data[5 : end - 2]
    old = body + struct.pack(">H", crc16(body)) + data[end + 2 :]
    assert parse(old).header.motion == "none"
    np.testing.assert_array_equal(codec.decompress(old, synthesis="none"), codec.decompress(data, synthesis="none"))
    body = data[: end - 2] + bytes([7, 0])
    with pytest.raises(BitstreamError, match="motion mode 7"):
        parse(body + struct.pack(">H", crc16(body)) + data[end + 2 :])


def test_the_encoder_keeps_motion_only_when_it_costs_no_more_bits(pan):
    moving = Codec(tiny_model("mssq", prediction="loops"), progress=False)
    still = Codec(tiny_model("mssq", prediction="loops"), progress=False, motion="none")
    data, plain = moving.compress(pan, gop=6), still.compress(pan, gop=6)
    frames = moving.frame_bits(data)
    assert frames[0]["motion"] == [0, 0] and all(len(f["motion"]) == 2 for f in frames)
    if any(f["motion"] != [0, 0] for f in frames):
        assert len(data) <= len(plain)
    else:  # the GOP was coded without motion: only its zero motions (a fraction of a bit each) differ
        assert abs(len(data) - len(plain)) <= 2
    assert all(f["motion"] == [0, 0] for f in still.frame_bits(plain))


def test_a_cut_before_the_motion_scale_is_the_stream_without_motion(pan):
    moving = Codec(tiny_model("mssq", prediction="loops"), progress=False)
    still = Codec(tiny_model("mssq", prediction="loops"), progress=False, motion="none")
    first = motion_scale(moving.spec.scales)
    assert 0 < first < moving.spec.num_scales
    cut, plain = (parse(truncate(c.compress(pan, gop=6), first)) for c in (moving, still))
    assert [bytes(s) for g in cut.gops for s in g.segments] == [bytes(s) for g in plain.gops for s in g.segments]
    assert cut.header.motion == "global" and plain.header.motion == "none"


def test_estimates_stay_within_the_range_however_fast_the_content_moves():
    big = _field(24, 96, seed=3)
    # 5 latent pixels per frame, for 4 frames: positions run past the range, motions stay in it
    latents = torch.cat([big[..., 20 - 5 * t : 60 - 5 * t] for t in range(4)])
    motions = estimate_gop(latents)
    limit = MOTION_RANGE * MOTION_UNIT
    assert motions[0] == (0, 0) and motions[1] == (0, 5 * MOTION_UNIT)
    assert all(abs(dy) <= limit and abs(dx) <= limit for dy, dx in motions)
    assert abs(sum(dx for _, dx in motions)) <= limit
    for m, prev in zip(motions[1:], motions[:-1]):
        assert motion_from_symbols(motion_symbols(m, prev), prev) == m


def test_estimate_ends_where_many_translations_tie():
    edge = torch.zeros(1, 4, 12, 16, dtype=torch.float64)
    edge[..., :, 8:] = 1.0  # a step: every translation that pushes it out of view costs 0
    assert estimate(edge, edge) == (0, 0)
    dy, dx = estimate(torch.zeros_like(edge), edge)
    assert dy == 0 and 0 < dx <= MOTION_RANGE * MOTION_UNIT  # ties keep the smaller move


def test_cli_motion_option_and_per_frame_motion(tmp_path, pan, capsys):
    from progvc.cli import main
    from progvc.io import write_video

    tiny_model("mssq", prediction="loops").save(tmp_path / "m.pt")
    write_video(tmp_path / "pan", pan)
    for mode in ("none", "global"):
        argv = ["compress", tmp_path / "pan", tmp_path / f"{mode}.pgv", "--model", tmp_path / "m.pt", "--motion", mode]
        assert main([str(a) for a in (*argv, "--gop", "6", "--quiet")]) == 0
        capsys.readouterr()
        assert main(["info", str(tmp_path / f"{mode}.pgv"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["motion"] == mode
    assert main(["info", str(tmp_path / "global.pgv"), "--frames", "--model", str(tmp_path / "m.pt")]) == 0
    assert "motion (dy, dx)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "global.pgv"), "--frames", "--json", "--model", str(tmp_path / "m.pt")]) == 0
    frames = json.loads(capsys.readouterr().out)["frames"]
    assert len(frames) == 6 and all(len(f["motion"]) == 2 for f in frames)
