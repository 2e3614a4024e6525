"""progvc.codec.prediction: per-prefix prediction loops keep truncation exact and make static content cheap."""

import numpy as np
import pytest
import torch
from _tiny_codec import SCALES, clip, tiny_model

from progvc.codec import Codec, truncate
from progvc.codec.bitstream import parse
from progvc.codec.codec import frames_to_tensor
from progvc.codec.prediction import PredictionLoop, code_clip
from progvc.errors import ConfigError

K = len(SCALES)


def _codec(prediction: str = "loops", kind: str = "mssq") -> Codec:
    return Codec(tiny_model(kind, prediction=prediction), progress=False)


def _nonzero(tokens: list[torch.Tensor], zero: int) -> float:
    return float(torch.cat([(t != zero).flatten().float() for t in tokens]).mean())


def test_static_content_costs_zero_tokens_once_the_loop_has_converged():
    model = tiny_model("mssq", prediction="loops")
    still = frames_to_tensor(np.repeat(clip()[:1], 4, axis=0))
    zero = model.tokenizer.half
    with torch.no_grad():
        latents = model.tokenizer.encode_latent(still)[None]
        loops = code_clip(model.tokenizer, latents, "loops")
        intra = code_clip(model.tokenizer, latents, "intra")
    first = _nonzero(loops.tokens[0], zero)
    assert first > 0.2
    # intra: every frame costs what the first did; loops: the repeated frames are (almost) all zeros
    assert _nonzero(intra.tokens[3], zero) == pytest.approx(first)
    # (phi and the resampling make a level's reconstruction differ from its target by more than the
    # rounding error, which the next frames correct: the loop converges within a few frames)
    assert _nonzero(loops.tokens[1], zero) < 0.6 * first
    assert _nonzero(loops.tokens[3], zero) < 0.15 * first
    # every level's reconstruction is still that of the frame
    for k in range(K):
        err_first = (loops.recons[0][k] - latents[0]).square().mean()
        assert (loops.recons[3][k] - latents[0]).square().mean() <= err_first * 1.05 + 1e-6


@pytest.mark.parametrize("kind", ["mssq", "msvq"])
def test_truncation_stays_byte_identical_and_drift_free_with_loops(kind):
    c = _codec("loops", kind)
    x = clip()
    full = c.compress(x, gop=4)
    for k in range(K + 1):
        cut = c.compress(x, gop=4, layers=k)
        assert truncate(full, k) == cut, f"layers={k}"
        # the decoder, fed k scales, shows exactly the encoder's level-k loop: no drift at any cut
        np.testing.assert_array_equal(c.decompress(cut, synthesis="none"), c.reconstruct(x, layers=k, gop=4))


def test_loops_decode_with_synthesis_deterministically():
    c = _codec("loops")
    cut = truncate(c.compress(clip(), gop=5), 2)
    for mode in ("sample", "argmax"):
        a = c.decompress(cut, synthesis=mode, seed=3)
        b = c.decompress(cut, synthesis=mode, seed=3)
        assert a.shape == clip().shape
        np.testing.assert_array_equal(a, b)


def test_loops_and_intra_streams_are_different_models():
    loops, intra = _codec("loops"), _codec("intra")
    assert loops.fingerprint != intra.fingerprint
    assert loops.model.config["prediction"] == "loops" and "prediction" not in intra.model.config


def test_frame_bits_account_for_every_segment():
    c = _codec("loops")
    data = c.compress(clip(), gop=3)
    frames = c.frame_bits(data)
    assert [(f["gop"], f["position"]) for f in frames] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    for g, gop in enumerate(parse(data).gops):
        for k, segment in enumerate(gop.segments):
            seg_bytes = len(segment)
            ideal = sum(f["bits"][k] for f in frames if f["gop"] == g)
            # the coder's words and its own table precision: a few bytes either way, never a share of them
            assert abs(8 * seg_bytes - ideal) <= 0.01 * ideal + 64


def test_prediction_loop_refuses_more_scales_than_the_schedule():
    model = tiny_model("mssq")
    loop = PredictionLoop(model.tokenizer, "loops", (48, 64))
    loop.start_frame()
    sizes = model.tokenizer.scale_sizes(48, 64)
    for h, w in sizes:
        loop.add_scale(torch.full((1, h, w, 8), model.tokenizer.half))
    assert torch.count_nonzero(loop.latent()) == 0  # zero tokens add nothing
    with pytest.raises(ConfigError):
        loop.add_scale(torch.zeros(1, 1, 1, 8, dtype=torch.long))
    with pytest.raises(ConfigError):
        PredictionLoop(model.tokenizer, "bidirectional", (48, 64))


def test_a_scale_of_zero_tokens_adds_nothing_without_computing_its_contribution():
    """The loop skips the tokenizer's upsampling and phi for a scale of "no change" tokens (they
    add exactly nothing, the tokenizer's ``zero_token`` contract) and computes the others."""
    from unittest import mock

    model = tiny_model("mssq").double()
    tok = model.tokenizer
    sizes = tok.scale_sizes(48, 64)
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, 9, (1, h, w, 8), generator=gen) for h, w in sizes]
    tokens[1] = torch.full_like(tokens[1], tok.zero_token)
    expected = tok.latents(tokens, (48, 64))[-1]
    loop = PredictionLoop(tok, "loops", (48, 64))
    loop.start_frame()
    with mock.patch.object(tok, "scale_contribution", wraps=tok.scale_contribution) as calls:
        for tk in tokens:
            loop.add_scale(tk)
    assert calls.call_count == len(sizes) - 1
    torch.testing.assert_close(loop.latent(), expected, rtol=0, atol=1e-12)
    assert torch.count_nonzero(tok.scale_contribution(tokens[:2], (48, 64))) == 0  # the contract itself


def test_prediction_benchmark_compares_intra_and_loops(tmp_path, capsys):
    import json

    from progvc.bench.__main__ import main as bench_main
    from progvc.io import write_video

    tiny_model("mssq", prediction="loops").save(tmp_path / "m.pt")
    write_video(tmp_path / "clip", clip())
    assert bench_main(["prediction", "--model", str(tmp_path / "m.pt"), "--video", str(tmp_path / "clip"),
                       "--frames", "5", "--gop", "5", "--rdoq", "0,100", "--baseline", str(tmp_path / "m.pt"),
                       "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    # a model against itself: the same curve; the RDOQ sweep codes one real stream per weight
    assert out["baseline"]["bd_rate_psnr"] == pytest.approx(0.0, abs=1e-6)
    assert out["baseline"]["bd_rate_psnr_real"] == pytest.approx(0.0, abs=1e-6)
    assert out["baseline"]["unquantized_psnr"] == out["unquantized_psnr"]
    sweep = out["rdoq_sweep"]
    assert [r["rdoq"] for r in sweep] == [0.0, 100.0] and "bd_rate_psnr_vs_first" in sweep[1]
    # (a random context model: RDOQ's choice differs, but need not save bits beside the skip flags)
    assert sweep[1]["points"][-1]["bpp"] != sweep[0]["points"][-1]["bpp"]
    assert all(0 < p["psnr"] < 100 for p in sweep[0]["points"])
    static = {run["mode"]: run["points"] for run in out["static"]}
    assert set(static) == {"intra", "loops"} and len(static["loops"]) == K
    # the same quantizer at every cut: loops never cost more than coding the frames alone, on a real clip
    assert static["loops"][-1]["bpp"] < static["intra"][-1]["bpp"]
    assert out["real"]["mode"] == "loops" and len(out["real"]["points"]) == K
    assert 0 < out["unquantized_psnr"] < 100


def test_decode_memory_does_not_grow_with_the_gop(capsys):
    from progvc.bench.memory import main as memory_main

    assert memory_main(["--decode", "--long", "16", "--gops", "2,16", "--max-ratio", "1.2"]) == 0
    assert "ratio GOP 16 / GOP 2" in capsys.readouterr().out


def test_dead_zone_rounds_small_residuals_to_zero_and_changes_only_the_encoder():
    model = tiny_model("mssq", prediction="loops")
    tok = model.tokenizer
    step = tok.step(0)
    y = torch.tensor([0.0, 0.4, 0.6, 0.75, 1.0, 1.6, -0.6, -1.3]).view(1, 8, 1, 1)
    half = tok.half
    plain, _, _ = tok.quantize_scale(0, y * step, predicted=True)
    assert (plain.flatten() - half).tolist() == [0, 0, 1, 1, 1, 2, -1, -1]
    print_before = model.fingerprint()
    tok.set_deadzone(0.0, 0.3)  # predicted residuals: |y| < 0.8 -> 0, [0.8, 1.8) -> 1
    dz, vec, _ = tok.quantize_scale(0, y * step, predicted=True)
    assert (dz.flatten() - half).tolist() == [0, 0, 0, 0, 1, 1, 0, -1]
    torch.testing.assert_close(vec, tok.dequantize_scale(0, dz))
    intra, _, _ = tok.quantize_scale(0, y * step, predicted=False)
    assert torch.equal(intra, plain)  # frames coded alone keep rounding to nearest
    # an encoder-only choice: the same model decodes the stream, truncation stays exact
    assert model.fingerprint() == print_before
    assert tok.init_args["deadzone"] == [0.0, 0.3]
    c = Codec(model, progress=False)
    x = clip()
    full = c.compress(x, gop=4)
    assert truncate(full, 2) == c.compress(x, gop=4, layers=2)
    np.testing.assert_array_equal(c.decompress(full, synthesis="none"), c.reconstruct(x, gop=4))
    with pytest.raises(ConfigError, match="deadzone"):
        tok.set_deadzone(0.0, 1.0)


def test_dead_zone_makes_predicted_frames_cheaper():
    model = tiny_model("mssq", prediction="loops")
    x = frames_to_tensor(clip())
    zero = model.tokenizer.half
    with torch.no_grad():
        latents = model.tokenizer.encode_latent(x)[None]
        plain = code_clip(model.tokenizer, latents, "loops")
        model.tokenizer.set_deadzone(0.0, 0.5)
        dz = code_clip(model.tokenizer, latents, "loops")
    assert _nonzero(dz.tokens[0], zero) == _nonzero(plain.tokens[0], zero)  # the first frame is intra
    assert sum(_nonzero(f, zero) for f in dz.tokens[1:]) < 0.8 * sum(
        _nonzero(f, zero) for f in plain.tokens[1:]
    )


def test_latent_refinement_lowers_the_encoders_objective_and_keeps_streams_exact():
    from progvc.codec.refine import LatentRefiner

    model = tiny_model("mssq", prediction="loops")
    tok = model.tokenizer
    x = frames_to_tensor(clip()[:1])
    size = tuple(x.shape[-2:])
    lam = 0.01

    def objective(f):
        with torch.no_grad():
            tok.train()  # the same noisy rate estimate the refiner minimises, seeded alike
            torch.manual_seed(0)
            res = tok.quantize(f)
            tok.eval()
            mse = torch.mean((tok.decode_latent(res.recons[-1], size) - x) ** 2)
            return float(mse + lam * res.rate_bits / x[0, 0].numel())

    with torch.inference_mode():
        f = tok.encode_latent(x)
    before = [p.detach().clone() for p in tok.parameters()]
    refined = LatentRefiner(tok, steps=30, lam=lam, lr=0.02)(f, x, None)
    assert objective(refined) < 0.9 * objective(f)
    assert all(torch.equal(a, p) and p.requires_grad for a, p in zip(before, tok.parameters()))
    # an encoder choice only: truncation stays byte-identical and the decoder shows the encoder's loop
    c = Codec(model, progress=False, refine_steps=3)
    frames = clip()[:3]
    full = c.compress(frames, gop=3)
    assert full != Codec(model, progress=False).compress(frames, gop=3)
    assert truncate(full, 2) == c.compress(frames, gop=3, layers=2)
    with pytest.raises(ConfigError, match="refinement"):
        Codec(model, refine_steps=-1)


def test_rdoq_picks_nearest_toward_zero_or_zero_by_distortion_plus_rate():
    tok = tiny_model("mssq", prediction="loops").tokenizer
    half, levels = tok.half, tok.spec.alphabet
    y = torch.tensor([0.0, 0.6, 1.4, 2.6, -1.6, 3.0, 0.5, -4.0]).view(1, 8, 1, 1)
    z = y * tok.step(0)
    flat = torch.zeros(1, 1, 1, 8, levels)
    nearest = tok.rd_quantize_scale(0, z, flat, lam=0.0)
    assert (nearest.flatten() - half).tolist() == [0, 1, 1, 3, -2, 3, 0, -4]  # round to nearest (ties to even)
    bits = flat.clone()
    bits[..., half + 1 :] = 6.0  # positive values cost 6 bits more than zero and the negatives
    rd = tok.rd_quantize_scale(0, z, bits, lam=0.1)  # 0.6 bit of distortion per value
    # 0.6 -> 0 (0.36 < 0.16 + 0.6); 1.4 -> 1 (0.16 + 0.6 < 1.96); 2.6 -> 3 (0.16 + 0.6 < 0.36 + 0.6);
    # negatives cost nothing extra: plain rounding
    assert (rd.flatten() - half).tolist() == [0, 0, 1, 3, -2, 3, 0, -4]
    assert (tok.rd_quantize_scale(0, z, bits, lam=100.0).flatten() - half).tolist() == [0, 0, 0, 0, -2, 0, 0, -4]
    with pytest.raises(ConfigError, match="rdoq"):
        tok.set_rdoq(-1.0)


def test_rdoq_is_encoder_only_exact_under_truncation_and_saves_bits():
    model = tiny_model("mssq", prediction="loops")
    x = clip()
    # a random context model: bits differ little (and without skip flags, which the dead zone's
    # zero scales would win from)
    plain = Codec(model, progress=False, rdoq=0.0, skip=False)
    rd = Codec(model, progress=False, rdoq=100.0, skip=False)
    assert rd.fingerprint == plain.fingerprint
    full = rd.compress(x, gop=4)
    assert len(full) < len(plain.compress(x, gop=4))
    for k in (1, K):
        cut = rd.compress(x, gop=4, layers=k)
        assert truncate(full, k) == cut
        np.testing.assert_array_equal(rd.decompress(cut, synthesis="none"), rd.reconstruct(x, layers=k, gop=4))
    # the model's own setting is the default, recorded as an encoder-only arg (same fingerprint)
    model.tokenizer.set_rdoq(100.0)
    assert model.fingerprint() == plain.fingerprint
    assert Codec(model, progress=False, skip=False).compress(x, gop=4) == full
    with pytest.raises(ConfigError, match="rdoq"):
        Codec(model, progress=False, rdoq=float("nan"))


def test_training_rdoq_chooses_the_tokens_the_encoder_sends():
    model = tiny_model("mssq", prediction="loops")
    tok, ctx = model.tokenizer, model.context_model
    with torch.no_grad():  # a context model that expects zeros, so that RDOQ has something to trade
        ctx.head.bias.view(-1, tok.spec.alphabet)[:, tok.half] += 3.0
    x, lam = clip()[:3], 1.0
    codec = Codec(model, progress=False, rdoq=lam)
    (sent,) = codec.iter_tokens(codec.compress(x, gop=3))  # [3, h_k, w_k, G] per scale
    ctx.eval()
    with torch.no_grad():
        latents = tok.encode_latent(frames_to_tensor(x))[None]
        rd = code_clip(tok, latents, "loops", context_model=ctx, rdoq=lam)
        plain = code_clip(tok, latents, "loops")

    def agreement(code) -> float:
        same = [(torch.cat([f[k] for f in code.tokens]) == sent[k]).flatten() for k in range(K)]
        return float(torch.cat(same).float().mean())

    # float32 softmax bits in training vs the codec's grid tables: a near tie may go the other way
    assert agreement(rd) > 0.98
    assert agreement(plain) < agreement(rd) - 0.05
    assert _nonzero(rd.tokens[2], tok.half) < _nonzero(plain.tokens[2], tok.half)
    with pytest.raises(ConfigError, match="context model"):
        code_clip(tok, latents, "loops", rdoq=lam)
