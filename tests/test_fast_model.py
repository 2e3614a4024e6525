"""The packaged ``fast`` model: the default model's tokenizer with a context model of half the
depth whose two finest scales attend to local windows. It loads by name, codes the held-out clip exactly, costs about the default's bits, and a
stream names the model that made it."""

import numpy as np
import pytest
import torch

from progvc.codec import Codec
from progvc.codec.model import BUNDLED_MODELS, CodecModel, packaged_model
from progvc.errors import ModelMismatchError
from progvc.io import read_video, sample_clip


@pytest.fixture(scope="module")
def models() -> dict[str, CodecModel]:
    return {name: CodecModel.load(name) for name in BUNDLED_MODELS}


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return read_video(sample_clip("carphone"), max_frames=4)[0]


def test_fast_model_is_the_documented_one(models):
    fast, default = models["fast"], models["default"]
    # streams name their model by fingerprint: a code change must not change the packaged model's
    assert fast.fingerprint().hex() == "6f8499f37e117df1"
    assert fast.config["tokenizer"] == default.config["tokenizer"]
    tok_fast, tok_default = fast.tokenizer.state_dict(), default.tokenizer.state_dict()
    assert tok_fast.keys() == tok_default.keys()
    assert all(torch.equal(tok_fast[k], tok_default[k]) for k in tok_fast)  # the same tokens, hence pictures
    args = fast.config["context_model"]["init_args"]
    assert fast.config["context_model"]["name"] == "var"
    assert (args["width"], args["depth"]) == (128, 2)
    assert (args["local_scales"], args["window"]) == (2, 1)  # its two finest scales attend to local windows
    assert default.config["context_model"]["init_args"]["depth"] == 4
    assert fast.prediction == default.prediction == "loops"


def test_fast_model_codes_the_held_out_clip_exactly_in_about_the_defaults_bits(models, frames):
    sizes = {}
    for name, model in models.items():
        codec = Codec(model, progress=False, rdoq=0.0)  # the dead zone's tokens: the same for both models
        data = codec.compress(frames, gop=len(frames))
        decoded = codec.decompress(data, synthesis="none")
        np.testing.assert_array_equal(decoded, codec.reconstruct(frames, layers=8, gop=len(frames)))
        sizes[name] = len(data)
    # a context model that lost its training (a bad truncation, an export of the wrong weights)
    # costs far more; the trained one is within a few percent (docs/model_card.md#the-fast-model)
    assert 0.9 * sizes["default"] < sizes["fast"] < 1.1 * sizes["default"]


def test_a_stream_names_the_packaged_model_that_made_it(models, frames):
    data = Codec(models["fast"], progress=False).compress(frames[:1], gop=1)
    with pytest.raises(ModelMismatchError, match="the packaged model 'fast'"):
        Codec(models["default"], progress=False).decompress(data)
    name, model = packaged_model(models["default"].fingerprint())
    assert name == "default" and model.fingerprint() == models["default"].fingerprint()
    assert packaged_model(b"\0" * 8) is None


def test_the_cli_decodes_a_stream_with_the_packaged_model_that_made_it(tmp_path, capsys):
    from progvc.cli import main

    stream = tmp_path / "fast.pgv"
    assert main(["compress", "carphone", str(stream), "--model", "fast", "--frames", "2", "--quiet"]) == 0
    capsys.readouterr()
    # no --model: decompress (and info --frames) take the packaged model the stream names
    assert main(["decompress", str(stream), str(tmp_path / "out.y4m"), "--quiet"]) == 0
    assert main(["info", str(stream), "--frames", "--json"]) == 0
    capsys.readouterr()
    # another model given: one line that names the right one, exit code 2
    assert main(["decompress", str(stream), str(tmp_path / "x.y4m"), "--model", "default"]) == 2
    err = capsys.readouterr().err
    assert "the packaged model 'fast'" in err and "Traceback" not in err
    assert not (tmp_path / "x.y4m").exists()


def test_progvc_list_shows_the_packaged_models(models, capsys):
    from progvc.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, model in models.items():
        assert f"{name}" in out and model.fingerprint().hex() in out
    assert "depth=2" in out and "depth=4" in out
