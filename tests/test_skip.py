"""progvc.codec.skip: skip flags change a stream's bits and the decoder's work, never its pictures."""

import json
import struct
from unittest import mock

import numpy as np
import pytest
import torch
from _tiny_codec import tiny_model

from progvc.codec import Codec, truncate
from progvc.codec.bitstream import crc16, inspect, parse
from progvc.codec.skip import CODED, MODE_TABLES, SKIPPED, SkipFlags, rd_skip
from progvc.codec.synthesis import SynthesisSettings
from progvc.coders.range import RangeCoder
from progvc.context_models.common import RepeatingSteps
from progvc.errors import BitstreamError, ConfigError
from progvc.io import read_video, sample_clip


@pytest.fixture(scope="module")
def still() -> np.ndarray:
    """Six 128 x 96 frames: one real frame, then the same frame with a 16 x 16 patch changed in frame 3."""
    frame, _ = read_video(sample_clip("bikes"), max_frames=1, start=40)
    frames = np.repeat(np.ascontiguousarray(frame[:, 100:196, 200:328]), 6, axis=0)
    frames[3:, 40:56, 60:76] = 255 - frames[3:, 40:56, 60:76]
    return frames


@pytest.fixture(scope="module")
def codecs() -> tuple[Codec, Codec]:
    model = tiny_model("mssq", prediction="loops")
    model.set_deadzone((0.0, 0.9))  # predicted frames: residuals below 1.4 steps are zero
    return Codec(model, progress=False, motion="none"), Codec(model, progress=False, motion="none", skip=False)


@pytest.fixture(scope="module")
def streams(still, codecs) -> tuple[bytes, bytes]:
    return codecs[0].compress(still, gop=6), codecs[1].compress(still, gop=6)


def test_skip_flags_change_the_bits_not_the_pictures(still, codecs, streams):
    skip, plain = codecs
    data, without = streams
    assert skip.skip and not plain.skip
    assert parse(data).header.skip and not parse(without).header.skip
    assert len(data) < len(without)
    np.testing.assert_array_equal(skip.decompress(data, synthesis="none"), plain.decompress(without, synthesis="none"))
    np.testing.assert_array_equal(skip.decompress(data, synthesis="none"), skip.reconstruct(still, gop=6))
    for k in range(1, skip.spec.num_scales):
        cut = truncate(data, k)
        assert cut == skip.compress(still, gop=6, layers=k)
        np.testing.assert_array_equal(
            skip.decompress(cut, synthesis="none"), plain.decompress(truncate(without, k), synthesis="none")
        )
        # the scales a cut stream lacks are synthesized from the same context-model states
        np.testing.assert_array_equal(
            skip.decompress(cut, synthesis="sample", seed=3),
            plain.decompress(truncate(without, k), synthesis="sample", seed=3),
        )


def test_the_decoder_runs_the_context_model_only_up_to_a_frames_last_coded_scale(codecs, streams):
    skip, _ = codecs
    data = streams[0]
    (tokens,) = skip.iter_tokens(data)  # one GOP: per scale [6, h, w, G]
    zero = skip.model.tokenizer.zero_token
    # each segment's first symbol: its mode (1: its predicted frames carry skip flags)
    modes = [int(RangeCoder().decoder(bytes(seg)).decode(MODE_TABLES)[0]) for seg in parse(data).gops[0].segments]
    assert any(modes)
    coded = [[bool((t[i] != zero).any()) for t in tokens] for i in range(6)]
    needs = [[c or not m for c, m in zip(row, modes)] for row in coded]  # a scale whose logits are needed
    expected = len(tokens) + sum(1 + max((k for k, c in enumerate(row) if c), default=-1) for row in needs[1:])
    assert expected < 6 * len(tokens)  # the still frames skip their tail (else this test shows nothing)
    step, asked = skip._context64.step, RepeatingSteps.step
    with (
        mock.patch.object(skip._context64, "step", side_effect=step) as runs,
        mock.patch.object(RepeatingSteps, "step", autospec=True, side_effect=asked) as calls,
    ):
        skip.decompress(data, synthesis="none")
    assert calls.call_count == expected
    # still frames repeat their coarse scales' inputs: those steps are reused, not run again,
    # and the pictures (with every scale, and sampled from a cut) are those of stepping again
    assert 0 < runs.call_count < expected
    cut = truncate(data, 2)
    reused = skip.decompress(data, synthesis="none"), skip.decompress(cut, synthesis="sample", seed=3)
    init = RepeatingSteps.__init__

    def no_reuse(self, model, batch_size=1, max_elements=0):  # keeps no logits: every step runs
        init(self, model, batch_size, max_elements=0)

    with (
        mock.patch.object(RepeatingSteps, "__init__", no_reuse),
        mock.patch.object(skip._context64, "step", side_effect=step) as runs,
    ):
        again = skip.decompress(data, synthesis="none")
        assert runs.call_count == expected
        again = again, skip.decompress(cut, synthesis="sample", seed=3)
    for a, b in zip(reused, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # per-frame bits: a skipped scale costs its flag only (a fraction of a bit once learnt), and the
    # frames' bits add up to the segments' (the range coder's flush: at most 32 bits each)
    frames = skip.frame_bits(data)
    for row, f in zip(coded[1:], frames[1:]):
        assert f["skipped"] == [k for k, (c, m) in enumerate(zip(row, modes)) if m and not c]
        assert all(f["bits"][k] < 4 for k in f["skipped"])  # at most log2(2 * 6) in a GOP of 6
    assert frames[0]["skipped"] == []
    segments = parse(data).gops[0].segments
    bits = sum(sum(f["bits"]) for f in frames)
    assert bits - 8 <= 8 * sum(len(s) for s in segments) <= bits + 32 * len(segments)


def test_the_flag_model_counts_per_scale_and_coarser_flag():
    assert MODE_TABLES.tolist() == [[1, 1]]
    flags = SkipFlags()
    first = flags.flag(0, None)
    assert first.tables.tolist() == [[1, 1]] and first.bits == (1.0, 1.0)
    for _ in range(3):
        flags.update(flags.flag(2, SKIPPED), SKIPPED)
    f = flags.flag(2, SKIPPED)
    assert f.tables.tolist() == [[1, 7]] and f.bits[SKIPPED] < 0.2 < 2 < f.bits[CODED]
    assert flags.flag(2, CODED).tables.tolist() == [[1, 1]]  # another context
    assert flags.flag(3, SKIPPED).tables.tolist() == [[1, 1]]  # another scale


def test_rd_skip_weighs_distortion_against_bits():
    flags = SkipFlags()
    for _ in range(4):
        flags.update(flags.flag(7, None), SKIPPED)
    flag = flags.flag(7, None)  # frequencies 1 : 9, CODED costs 3.32 bits, SKIPPED 0.15
    y, zero = torch.tensor([0.6, 0.0, -0.2]), 4
    one = torch.tensor([5, 4, 4])  # one token of +1, costing 5 bits
    assert rd_skip(y, torch.full((3,), zero), zero, 0.0, flag, 0.0)  # all zero: always skipped
    # coded: (0.6 - 1)^2 + 0.04 + mu (5 + 3.32); skipped: 0.36 + 0.04 + mu 0.15
    assert rd_skip(y, one, zero, 5.0, flag, 0.25)
    assert not rd_skip(y, one, zero, 5.0, flag, 0.01)


def test_rdoq_may_skip_a_predicted_frames_finest_scale_and_truncation_stays_exact(still):
    model = tiny_model("mssq", prediction="loops")
    rd = Codec(model, progress=False, motion="none", rdoq=100.0)
    data = rd.compress(still, gop=6)
    last = rd.spec.num_scales - 1
    assert all(last in f["skipped"] for f in rd.frame_bits(data)[1:])
    for k in range(1, rd.spec.num_scales):
        assert truncate(data, k) == rd.compress(still, gop=6, layers=k)
    np.testing.assert_array_equal(rd.decompress(data, synthesis="none"), rd.reconstruct(still, gop=6))


def _header_end(data: bytes) -> int:
    return parse(data).header_bytes - 2  # before the header CRC


def test_version_3_streams_still_decode_and_a_bad_skip_field_is_refused(codecs, streams):
    plain = codecs[1]
    without = streams[1]
    end = _header_end(without)
    assert without[4] == 4 and without[end - 1] == 0  # version 4, skip byte "off"
    body = without[:4] + bytes([3]) + without[5 : end - 1]
    old = body + struct.pack(">H", crc16(body)) + without[end + 2 :]
    assert not parse(old).header.skip and parse(old).header.version == 3
    assert inspect(old).to_dict()["version"] == 3 and inspect(without).to_dict()["version"] == 4
    np.testing.assert_array_equal(plain.decompress(old, synthesis="none"), plain.decompress(without, synthesis="none"))
    body = without[: end - 1] + bytes([2])
    with pytest.raises(BitstreamError, match="skip field 2"):
        parse(body + struct.pack(">H", crc16(body)) + without[end + 2 :])


def test_only_models_with_loops_and_a_zero_token_skip():
    assert not Codec(tiny_model("mssq"), progress=False).skip  # intra: no loops
    assert not Codec(tiny_model("msvq", prediction="loops"), progress=False).skip  # a codebook has no zero
    with pytest.raises(ConfigError, match="skip"):
        Codec(tiny_model("mssq", prediction="loops"), skip="yes")


def test_cli_skip_option(tmp_path, still, capsys):
    from progvc.cli import main
    from progvc.io import write_video

    tiny_model("mssq", prediction="loops").save(tmp_path / "m.pt")
    write_video(tmp_path / "still", still)
    for mode in ("on", "off"):
        argv = ["compress", tmp_path / "still", tmp_path / f"{mode}.pgv", "--model", tmp_path / "m.pt", "--skip", mode]
        assert main([str(a) for a in (*argv, "--gop", "6", "--quiet")]) == 0
        capsys.readouterr()
        assert main(["info", str(tmp_path / f"{mode}.pgv"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["skip"] == (mode == "on")
    assert main(["info", str(tmp_path / "on.pgv")]) == 0
    assert "skip flags on" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "on.pgv"), "--frames", "--model", str(tmp_path / "m.pt")]) == 0
    assert "skip" in capsys.readouterr().out.split("\n", 2)[2]  # a skipped scale in a frame's row


def test_a_frame_that_repeats_the_one_before_is_not_decoded_again(still):
    """Frames whose latent equals the frame before's (every scale skipped) get that frame's pixels
    without a decoder call; chunked decoding (batches of 2) gives the pixels of decoding them all."""
    model = tiny_model("mssq", prediction="loops")
    model.set_deadzone((0.0, 0.9))
    codec = Codec(model, progress=False, motion="none", batch_size=2)
    frames = np.concatenate([still[:3], still[:1], still[:1]])  # a change back, then a repeat
    data = codec.compress(frames, gop=5)
    latents = [latent for _, gop in codec._decode_frames(parse(data), None, SynthesisSettings()) for latent, *_ in gop]
    repeats = [torch.equal(a, b) for a, b in zip(latents, latents[1:])]
    assert any(repeats) and not all(repeats)  # else this test shows nothing
    decode = model.tokenizer.decode_latent
    with mock.patch.object(model.tokenizer, "decode_latent", side_effect=decode) as calls:
        decoded = codec.decompress(data, synthesis="none")
    assert sum(call.args[0].shape[0] for call in calls.call_args_list) == len(frames) - sum(repeats)
    for t, repeat in enumerate(repeats, start=1):
        if repeat:
            np.testing.assert_array_equal(decoded[t], decoded[t - 1])
    np.testing.assert_array_equal(decoded, codec.reconstruct(frames, gop=5))
    alone = Codec(model, progress=False, motion="none", batch_size=1)  # each fresh frame decoded alone
    assert np.abs(alone.decompress(data, synthesis="none").astype(int) - decoded).max() <= 1
