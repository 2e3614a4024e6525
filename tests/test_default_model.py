"""The bundled default model: it loads safely, codes the held-out clip exactly, and its context
model needs far fewer bits than a uniform one (measured through `python -m progvc.bench rate`)."""

import json

import numpy as np
import pytest

from progvc.bench import rate
from progvc.codec import Codec
from progvc.codec.model import CodecModel
from progvc.io import read_video, sample_clip


@pytest.fixture(scope="module")
def model() -> CodecModel:
    return CodecModel.load("default")


def test_default_model_is_the_documented_one(model):
    assert model.config["tokenizer"]["name"] == "msvq"
    assert model.config["context_model"]["name"] == "var"
    assert model.tokenizer.spec.alphabet == 1024 and model.tokenizer.spec.num_scales == 8


def test_default_model_codes_the_held_out_clip_exactly(model):
    frames, _ = read_video(sample_clip("carphone"), max_frames=2)
    codec = Codec(model, progress=False)
    data = codec.compress(frames, gop=2)
    decoded = codec.decompress(data, synthesis="none")
    assert decoded.shape == frames.shape
    np.testing.assert_array_equal(decoded, codec.reconstruct(frames, layers=8, gop=2))


def test_trained_context_model_beats_uniform_on_the_held_out_clip(capsys):
    assert (
        rate.main(
            ["--model", "default", "--context", "own", "uniform", "--frames", "2", "--gop", "2", "--json"]
        )
        == 0
    )
    rows = {r["context"]: r for r in json.loads(capsys.readouterr().out)["rate"]}
    assert rows["uniform"]["bits_per_token"] > 9.9  # log2(1024) = 10 bits, minus nothing
    assert rows["var"]["bits_per_token"] < 0.8 * rows["uniform"]["bits_per_token"]
