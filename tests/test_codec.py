"""progvc.codec: progressive streams from tiny random-init models on real frames."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from _tiny_codec import SCALES, clip, codec, stream, tiny_model

from progvc.codec import Codec, CodecModel, ModelLoadError, SynthesisSettings, inspect, truncate
from progvc.codec import model as model_module
from progvc.codec.codec import frames_to_tensor, tensor_to_frames
from progvc.errors import ConfigError, ModelMismatchError, WeightsNotFoundError
from progvc.io import sample_clip, write_video

K = len(SCALES)


@pytest.mark.parametrize("kind", ["msvq", "msbsq"])
def test_truncate_equals_encoding_fewer_layers(kind):
    c, full = codec(kind), stream(kind)
    sizes = []
    for k in range(K + 2):
        cut = c.compress(clip(), gop=3, layers=k)
        assert truncate(full, k) == cut, f"layers={k}"
        assert inspect(full).bytes_at(k) == len(cut)
        sizes.append(len(cut))
    assert all(a < b for a, b in zip(sizes[:K], sizes[1 : K + 1])), sizes
    assert sizes[K] == sizes[K + 1] == len(full)


@pytest.mark.parametrize("kind", ["msvq", "msbsq"])
def test_full_stream_decodes_to_the_tokenizer_reconstruction(kind):
    c, x = codec(kind), clip()
    tok = c.model.tokenizer
    with torch.inference_mode():
        frames = frames_to_tensor(x)
        tokens = [tok.encode(frames[:3]), tok.encode(frames[3:])]  # the codec's GOPs
        expected = {
            k: np.concatenate(
                [
                    tensor_to_frames(tok.decode(t[:k], (48, 64), batch_size=len(f)))
                    for t, f in zip(tokens, (frames[:3], frames[3:]))
                ]
            )
            for k in range(K + 1)
        }
    decoded = list(c.iter_tokens(stream(kind)))
    for got, want in zip(decoded, tokens):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    for k in range(K + 1):
        out = c.decompress(truncate(stream(kind), k), synthesis="none")
        assert out.shape == x.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, c.reconstruct(x, layers=k, gop=3), err_msg=f"prefix {k}")
        # the decoder's float64 latents round to the float32 tokenizer's pixels, give or take one level
        diff = np.abs(out.astype(int) - expected[k].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, f"prefix {k}"


def test_every_prefix_decodes_with_synthesis():
    c, full = codec(), stream()
    for k in range(K + 1):
        for mode in ("sample", "argmax"):
            out = c.decompress(truncate(full, k), synthesis=mode)
            assert out.shape == clip().shape and out.dtype == np.uint8
    # all scales sent: nothing to synthesize
    np.testing.assert_array_equal(c.decompress(full), c.decompress(full, synthesis="none"))


def test_synthesis_is_seeded_and_replayable():
    c, cut = codec(), truncate(stream(), 1)
    a = c.decompress(cut)
    np.testing.assert_array_equal(a, c.decompress(cut, seed=0))
    assert not np.array_equal(a, c.decompress(cut, seed=1))
    # a GOP's draw does not depend on the GOPs before it
    gops = list(c.iter_tokens(cut, synthesis="sample", seed=5))
    again = list(c.iter_tokens(cut, synthesis="sample", seed=5))
    assert all(torch.equal(u, v) for g, h in zip(gops, again) for u, v in zip(g, h))
    assert [g[0].shape[0] for g in gops] == [3, 2] and len(gops[0]) == K
    # the received scale is kept; only scales >= 1 are synthesized
    received = list(c.iter_tokens(cut))
    assert all(torch.equal(g[0], r[0]) for g, r in zip(gops, received))


def test_synthesis_defaults_travel_in_the_header():
    c = codec()
    settings = SynthesisSettings(mode="argmax", seed=7, temperature=0.8, top_k=5)
    data = c.compress(clip(), gop=3, layers=2, synthesis=settings)
    assert inspect(data).header.synthesis == settings
    np.testing.assert_array_equal(c.decompress(data), c.decompress(data, synthesis="argmax"))
    with pytest.raises(ConfigError, match="synthesis mode"):
        SynthesisSettings(mode="dream")


def test_other_model_is_refused():
    with pytest.raises(ModelMismatchError, match="made by model"):
        codec("msvq", seed=1).decompress(stream())


def test_target_bpp_picks_layers_per_gop():
    c, x = codec(), clip()
    pixels = x.shape[0] * x.shape[1] * x.shape[2]
    full_bpp = inspect(stream()).bpp()
    sizes = []
    for target in (0.3 * full_bpp, 0.6 * full_bpp, 2 * full_bpp):
        info = inspect(c.compress(x, gop=3, target_bpp=target))
        assert info.size * 8 / pixels <= target
        sizes.append(info.size)
    assert sizes[0] < sizes[1] < sizes[2] == len(stream())
    with pytest.raises(ConfigError, match="not both"):
        c.compress(x, layers=1, target_bpp=0.1)


def test_streaming_input_matches_array(tmp_path):
    c, x = codec(), clip()
    path = tmp_path / "clip"
    write_video(path, x)  # lossless PNGs
    assert c.compress(path, gop=3, fps=25) == stream()
    assert c.compress(iter(x), gop=3) == stream()
    assert c.compress(x, gop=3, max_frames=2) == c.compress(x[:2], gop=3)
    chunks = list(c.iter_decompress(stream(), synthesis="none"))
    # frame-major decoding yields batches of at most batch_size frames, across GOP boundaries
    assert [len(g) for g in chunks] == [5]
    small = Codec(c.model, batch_size=2)
    assert [len(g) for g in small.iter_decompress(stream(), synthesis="none")] == [2, 2, 1]
    with pytest.raises(ConfigError, match="no frames"):
        c.compress(x[:0])


def test_model_file_round_trip(tmp_path):
    model = codec().model
    model.save(tmp_path / "m.pt")
    loaded = CodecModel.load(tmp_path / "m.pt")
    assert loaded.fingerprint() == model.fingerprint() and loaded.config == model.config
    model.save(tmp_path / "half.pt", half=True)
    half = CodecModel.load(tmp_path / "half.pt")
    assert half.fingerprint() != model.fingerprint()
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert (tmp_path / "half.pt").stat().st_size < 0.7 * (tmp_path / "m.pt").stat().st_size
    # a stream made with the half model decodes with the half model loaded again
    data = Codec(half).compress(clip()[:2], layers=2)
    assert Codec(CodecModel.load(tmp_path / "half.pt")).decompress(data).shape == (2, 48, 64, 3)


def test_lightning_checkpoint_and_recipe(tmp_path):
    model = codec().model
    cfg = model.config
    state = {**model.state_dict(), "discriminator.w": torch.zeros(3)}
    torch.save(
        {
            "state_dict": state,
            "progvc_model": {"tokenizer": cfg["tokenizer"], "context_model": cfg["context_model"]},
            "epoch": 3,
        },
        tmp_path / "last.ckpt",
    )
    assert CodecModel.load(tmp_path / "last.ckpt").fingerprint() == model.fingerprint()

    from progvc.context_models.var import VARContextModel

    recipe = {
        "model": {
            "class_path": "progvc.training.Whatever",
            "init_args": {
                "tokenizer": {"class_path": "msvq", "init_args": cfg["tokenizer"]["init_args"]},
                "context_model": {
                    "class_path": f"{VARContextModel.__module__}.VARContextModel",
                    "init_args": cfg["context_model"]["init_args"],
                },
            },
        }
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    from_recipe = CodecModel.from_recipe(tmp_path / "r.yaml", weights=tmp_path / "last.ckpt")
    assert from_recipe.fingerprint() == model.fingerprint()
    recipe["model"]["init_args"]["tokenizer"]["class_path"] = "os.system"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ModelLoadError, match="not a registered tokenizer"):
        CodecModel.from_recipe(tmp_path / "bad.yaml")


def test_model_load_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "WEIGHTS_DIR", tmp_path)
    for name in model_module.BUNDLED_MODELS:
        with pytest.raises(WeightsNotFoundError, match=f"the {name} model is not installed"):
            CodecModel.load(name)
    (tmp_path / "junk.pt").write_bytes(b"junk" * 10)
    with pytest.raises(ModelLoadError, match="cannot load safely"):
        CodecModel.load(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ModelLoadError, match="neither a progvc model file"):
        CodecModel.load(tmp_path / "plain.ckpt")
    model = codec().model
    torch.save(
        {"format": "progvc-model", "version": 1, "config": model.config, "state_dict": {}}, tmp_path / "e.pt"
    )
    with pytest.raises(ModelLoadError, match="do not fit"):
        CodecModel.load(tmp_path / "e.pt")
    with pytest.raises(ConfigError):
        CodecModel(tiny_model("msvq").tokenizer, tiny_model("msbsq").context_model)


def test_baseline_context_models_code_streams():
    for name in ("uniform", "static"):
        c = Codec(tiny_model(context=name))
        data = c.compress(clip(), gop=3)
        np.testing.assert_array_equal(c.decompress(data, synthesis="none"), c.reconstruct(clip(), gop=3))
    uniform = inspect(Codec(tiny_model(context="uniform")).compress(clip(), gop=3))
    # 64 equally likely codes: 6 bits per token position
    positions = sum(a * b for a, b in tiny_model().tokenizer.scale_sizes(48, 64)) * 5
    assert abs(sum(uniform.bytes_per_scale) * 8 - 6 * positions) < 0.05 * 6 * positions + 8 * 3 * 2 * K


def test_a_context_model_with_local_windows_codes_streams():
    """Local fine scales (their own step path: fused prefix attention plus gathered windows) decode exactly."""
    c = Codec(tiny_model("mssq", prediction="loops", local_scales=2, window=1))
    data = c.compress(clip(), gop=3)
    np.testing.assert_array_equal(c.decompress(data, synthesis="none"), c.reconstruct(clip(), gop=3))


def test_bfloat16_pixels_change_only_the_pictures_shown():
    """pixels="bfloat16": the same stream (the encoder's motion choice keeps float32 pixels), and the
    decoder's pictures within a few levels of float32's, equal to ``reconstruct`` with the same setting."""
    model = tiny_model("mssq", prediction="loops")
    plain, fast = Codec(model), Codec(model, pixels="bfloat16")
    data = plain.compress(clip(), gop=3)
    assert fast.compress(clip(), gop=3) == data
    got, want = fast.decompress(data).astype(int), plain.decompress(data).astype(int)
    assert 0 < np.abs(got - want).max() <= 8 and np.abs(got - want).mean() < 1.0
    np.testing.assert_array_equal(fast.decompress(data), fast.reconstruct(clip(), gop=3))
    with pytest.raises(ConfigError, match="pixels"):
        Codec(model, pixels="float16")


def test_thread_counts_do_not_change_the_stream(tmp_path):
    """Encode with 2 threads here, decode with 1 in another process: the tokens come back exactly."""
    model = codec().model
    model.save(tmp_path / "m.pt")
    x = clip()
    torch.set_num_threads(2)
    try:
        data = Codec(CodecModel.load(tmp_path / "m.pt")).compress(x, gop=5)
    finally:
        torch.set_num_threads(1)
    (tmp_path / "s.pgv").write_bytes(data)
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        from progvc.codec import Codec, CodecModel
        codec = Codec(CodecModel.load({str(tmp_path / "m.pt")!r}))
        tokens = next(codec.iter_tokens(open({str(tmp_path / "s.pgv")!r}, "rb").read()))
        torch.save(tokens, {str(tmp_path / "tokens.pt")!r})
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    decoded = torch.load(tmp_path / "tokens.pt", weights_only=True)
    with torch.inference_mode():
        expected = model.tokenizer.encode(frames_to_tensor(x))
    assert len(decoded) == K and all(torch.equal(a, b) for a, b in zip(decoded, expected))


def test_compress_from_a_video_file_reads_only_what_it_needs():
    data = codec().compress(sample_clip("carphone"), max_frames=2, layers=1)
    info = inspect(data)
    assert (info.num_frames, info.header.width, info.header.height) == (2, 176, 144)
    assert float(info.header.fps) == pytest.approx(30000 / 1001, rel=1e-3)
