"""The bundled default model: it loads safely, codes the held-out clip exactly, and its context
model needs far fewer bits than a uniform one (measured through `python -m progvc.bench rate`)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from progvc.bench import rate
from progvc.codec import Codec
from progvc.codec.bitstream import parse
from progvc.codec.model import CodecModel
from progvc.io import read_video, sample_clip


@pytest.fixture(scope="module")
def model() -> CodecModel:
    return CodecModel.load("default")


def test_default_model_is_the_documented_one(model):
    assert model.config["tokenizer"]["name"] == "mssq"
    assert model.config["context_model"]["name"] == "var"
    assert model.prediction == "loops"
    assert model.tokenizer.deadzone == (0.2, 0.5)  # the encoder's dead zone its context model was trained on
    assert model.tokenizer.rdoq == 0.25  # the codec's default RDOQ weight (docs/codec.md#rdoq)
    # streams name their model by fingerprint: a code change must not change the bundled model's
    assert model.fingerprint().hex() == "5652681ead88fc4a"
    spec = model.tokenizer.spec
    assert (spec.alphabet, spec.groups, spec.num_scales, spec.downsample) == (33, 16, 8, 8)


def test_default_model_codes_the_held_out_clip_exactly(model):
    frames, _ = read_video(sample_clip("carphone"), max_frames=2)
    plain = Codec(model, progress=False, rdoq=0.0)  # the dead zone's tokens: reconstruct replays them
    data = plain.compress(frames, gop=2)
    decoded = plain.decompress(data, synthesis="none")
    assert decoded.shape == frames.shape
    np.testing.assert_array_equal(decoded, plain.reconstruct(frames, layers=8, gop=2))
    rd = Codec(model, progress=False)  # RDOQ (the model's default): fewer bits, same decoder
    assert rd.rdoq == 0.25
    assert len(rd.compress(frames, gop=2)) < len(data)


def test_trained_context_model_beats_uniform_on_the_held_out_clip(capsys):
    assert (
        rate.main(
            ["--model", "default", "--context", "own", "uniform", "--frames", "2", "--gop", "2", "--json"]
        )
        == 0
    )
    rows = {r["context"]: r for r in json.loads(capsys.readouterr().out)["rate"]}
    assert rows["uniform"]["bits_per_token"] > 5.0  # log2(33) = 5.04 bits per symbol, minus nothing
    assert rows["var"]["bits_per_token"] < 0.5 * rows["uniform"]["bits_per_token"]


def test_p_frames_cost_less_than_the_first_frame_of_a_gop(model):
    frames, _ = read_video(sample_clip("carphone"), max_frames=8)
    codec = Codec(model, progress=False)
    per_frame = codec.frame_bits(codec.compress(frames, gop=8))
    first, rest = sum(per_frame[0]["bits"]), [sum(f["bits"]) for f in per_frame[1:]]
    # the prediction loops converge over the first frames of a GOP: P-frames get cheaper as it goes on
    assert max(rest) < 0.75 * first and sum(rest) / len(rest) < 0.6 * first and rest[-1] < 0.45 * first


@pytest.mark.parametrize("name", ["default", "fast"])
def test_another_machine_decodes_the_stream_exactly(name, tmp_path):
    """Encode with 2 threads here; decode in another process with 1 thread and PyTorch's
    non-vectorized kernels (``ATEN_CPU_CAPABILITY=default``, as on a CPU without AVX2): the same
    tokens come back, with either packaged model. A float32 context model fails this
    (docs/benchmarks.md)."""
    import os
    import subprocess
    import sys
    import textwrap

    import torch

    model = CodecModel.load(name)
    frames, _ = read_video(sample_clip("carphone"), max_frames=2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        codec = Codec(model, progress=False)
        data = codec.compress(frames, gop=2)
        expected = next(codec.iter_tokens(data))  # the encoder's own tables
    finally:
        torch.set_num_threads(before)
    (tmp_path / "s.pgv").write_bytes(data)
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from progvc.codec import Codec, CodecModel
        codec = Codec(CodecModel.load({name!r}), progress=False)
        tokens = next(codec.iter_tokens(open({str(tmp_path / "s.pgv")!r}, "rb").read()))
        torch.save(tokens, {str(tmp_path / "tokens.pt")!r})
        """
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    decoded = torch.load(tmp_path / "tokens.pt", weights_only=True)
    assert len(decoded) == len(expected) == 8
    assert all(torch.equal(a, b) for a, b in zip(decoded, expected))


def _token_digest(codec: Codec, data: bytes) -> str:
    """sha256 of every decoded token (int64 bytes), GOP by GOP, scale by scale."""
    digest = hashlib.sha256()
    for gop in codec.iter_tokens(data):
        for tokens in gop:
            digest.update(tokens.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def test_a_stream_of_an_earlier_release_decodes_to_its_tokens(model):
    """``tests/data/carphone_v4.pgv``: 3 carphone frames coded by an earlier release (commit
    8c4ac5d, format version 4, the bundled model, default settings), whose own decoder gave the
    tokens of ``V4_TOKENS``. The codec of today must decode them to the same tokens: a change to
    the tables, the context model's arithmetic or the loops that moves one token shows here
    (a change that must move them needs a new format version that keeps decoding this one)."""
    data = (Path(__file__).parent / "data" / "carphone_v4.pgv").read_bytes()
    assert parse(data).header.version == 4
    codec = Codec(model, progress=False)
    assert _token_digest(codec, data) == V4_TOKENS


#: the release before's decoder on tests/data/carphone_v4.pgv (``_token_digest``)
V4_TOKENS = "4226ea04350c3c00da03fa71c8856c541b8bb7a048b9db888698a800ed0ca938"
