"""Context models: shapes, forward == step, the layered temporal dependency, config round trips,
errors, and bits per token on real video (var < static < uniform)."""

import json
import math

import pytest
import torch

from progvc.context_models import (
    CONTEXT_MODELS,
    ContextModel,
    cross_entropy_bits,
    interpolated_bits,
    scale_inputs,
)
from progvc.context_models.common import RepeatingSteps, step_all
from progvc.context_models.transformer import local_keys
from progvc.errors import ConfigError
from progvc.io import read_video, sample_clip
from progvc.tokenizers import TOKENIZERS
from progvc.tokenizers.base import TokenSpec

C = 6
SIZES = [(1, 1), (2, 3), (3, 5), (5, 7)]  # odd, non-square scale sizes
TINY_VAR = dict(width=32, depth=2, heads=2)
SPECS = {"codebook": dict(groups=1, alphabet=37), "bitwise": dict(groups=5, alphabet=2)}


def make(name: str, spec: str = "codebook", **kw) -> ContextModel:
    torch.manual_seed(0)
    extra = TINY_VAR if name == "var" else {}
    return CONTEXT_MODELS.create(
        name, latent_dim=C, num_scales=len(SIZES), **SPECS[spec], **extra, **kw
    ).eval()


def random_inputs(batch: int = 2, dtype: torch.dtype = torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cur = [torch.randn(batch, C, *s, generator=g, dtype=dtype) for s in SIZES]
    cur[0].zero_()
    prev = [torch.randn(batch, C, *s, generator=g, dtype=dtype) for s in SIZES]
    return cur, prev


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize("name", ["var", "static", "uniform"])
def test_logit_shapes(name, spec):
    model = make(name, spec)
    cur, prev = random_inputs(batch=3)
    g, a = SPECS[spec]["groups"], SPECS[spec]["alphabet"]
    for logits in (model(cur, prev), model(cur), step_all(model, cur, prev)):
        assert [tuple(x.shape) for x in logits] == [(3, h * w, g, a) for h, w in SIZES]
    # a prefix of the scales is scored too (a truncated stream, or training on the coarse scales)
    assert len(model(cur[:2], prev[:2])) == 2


@pytest.mark.parametrize("with_prev", [True, False])
def test_var_forward_matches_step(with_prev):
    model = make("var")
    cur, prev = random_inputs()
    prev = prev if with_prev else None
    with torch.no_grad():
        assert max_diff(model(cur, prev), step_all(model, cur, prev)) < 1e-5
        # the codec steps a float64 copy of the model: it must run in float64 and agree to ~1e-12
        model64 = make("var").double()
        cur64 = [c.double() for c in cur]
        prev64 = None if prev is None else [p.double() for p in prev]
        stepped = step_all(model64, cur64, prev64)
        assert all(x.dtype == torch.float64 for x in stepped)
        assert max_diff(model64(cur64, prev64), stepped) < 1e-12
        assert max_diff([x.float() for x in stepped], model(cur, prev)) < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("strict", [1, 2])
def test_strict_scales_see_only_coarser_scales_in_forward_and_step(strict):
    model = make("var", strict_scales=strict)
    cur, prev = random_inputs()
    assert max_diff(model(cur, prev), step_all(model, cur, prev)) < 1e-5
    model64 = make("var", strict_scales=strict).double()
    cur64, prev64 = [c.double() for c in cur], [p.double() for p in prev]
    assert max_diff(model64(cur64, prev64), step_all(model64, cur64, prev64)) < 1e-12
    # a strict scale's logits at one position do not depend on its own scale's other inputs
    k = len(SIZES) - 1
    moved = [c.clone() for c in cur]
    moved[k][..., 0, 0] += 5.0  # the input at position 0 of the finest scale
    before, after = model(cur, prev)[k], model(moved, prev)[k]
    assert torch.equal(before[:, 1:], after[:, 1:]) and not torch.equal(before[:, :1], after[:, :1])
    plain = make("var")  # the same weights, every scale seeing its own
    assert not torch.equal(plain(cur, prev)[k][:, 1:], plain(moved, prev)[k][:, 1:])
    assert max_diff(plain(cur, prev)[:1], model(cur, prev)[:1]) < 1e-6  # coarse scales are as before
    with pytest.raises(ConfigError, match="strict_scales"):
        make("var", strict_scales=len(SIZES))


@torch.no_grad()
@pytest.mark.parametrize("local, window, strict", [(1, 0, 0), (2, 1, 0), (2, 1, 1), (3, 2, 0)])
def test_local_scales_see_windows_in_forward_and_step(local, window, strict):
    """Local scales: forward (dense mask) == step (prefix kernel + gathered windows) in float32 and
    float64, a far input of a local scale changes nothing, a near one does, coarse scales are as before."""
    kw = dict(local_scales=local, window=window, strict_scales=strict)
    model = make("var", **kw)
    cur, prev = random_inputs()
    assert max_diff(model(cur, prev), step_all(model, cur, prev)) < 1e-5
    model64 = make("var", **kw).double()
    cur64, prev64 = [c.double() for c in cur], [p.double() for p in prev]
    assert max_diff(model64(cur64, prev64), step_all(model64, cur64, prev64)) < 1e-12
    k = len(SIZES) - 1  # the finest scale, 5 x 7: move the input at its corner (0, 0)
    moved = [c.clone() for c in cur]
    moved[k][..., 0, 0] += 5.0
    before, after = model(cur, prev)[k], model(moved, prev)[k]
    changed = (before != after).flatten(2).any(-1).any(0).view(SIZES[k])  # [5, 7] positions
    # the corner's own logits (its input); with its own scale in the windows, every position
    # within twice the window (two blocks, each one window further)
    near = torch.zeros(SIZES[k], dtype=torch.bool)
    near[0, 0] = True
    if not strict:
        near[: 2 * window + 1, : 2 * window + 1] = True
    assert torch.equal(changed, near)
    plain = make("var", strict_scales=strict)  # the same weights, attending to every earlier token
    assert max_diff(plain(cur, prev)[: len(SIZES) - local], model(cur, prev)[: len(SIZES) - local]) < 1e-6


def test_local_keys_windows_and_prefix():
    """The window of a coarser scale is centred on the cell holding the query's centre."""
    sizes = [(1, 1), (2, 2), (4, 4)]
    keys = local_keys(sizes, 2, 1, 1)
    assert keys.prefix == 1 and keys.index.shape == (16, 18) and keys.valid.shape == (16, 18)
    # query (3, 3) of the 4 x 4 scale: cell (1, 1) of the 2 x 2 scale, window rows/cols 0..2
    q = 3 * 4 + 3
    coarse = keys.index[q, :9][keys.valid[q, :9]]
    assert sorted(coarse.tolist()) == [1 + 0, 1 + 1, 1 + 2, 1 + 3]  # the whole 2 x 2 scale, once each
    own = keys.index[q, 9:][keys.valid[q, 9:]]
    assert sorted(own.tolist()) == [5 + 2 * 4 + 2, 5 + 2 * 4 + 3, 5 + 3 * 4 + 2, 5 + 3 * 4 + 3]
    strict = local_keys(sizes, 2, 1, 1, own=False)
    assert strict.index.shape == (16, 9)
    with pytest.raises(ConfigError, match="local_scales"):
        make("var", local_scales=len(SIZES))
    with pytest.raises(ConfigError, match="window"):
        make("var", local_scales=1, window=-1)


@pytest.mark.parametrize("flash", [True, False])
def test_prefix_attention_log_sum_exp(flash, monkeypatch):
    """PyTorch's fused kernel and the fallback give the attention and the scores' log-sum-exp."""
    from progvc.context_models import transformer

    if not flash:
        monkeypatch.setattr(transformer, "_FLASH_CPU", None)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 8, generator=g, dtype=torch.float64) for n in (5, 11, 11))
    out, lse = transformer.prefix_attention(q, k, v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    assert torch.allclose(lse, scores.logsumexp(-1), atol=1e-12)
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-12)


@torch.no_grad()
def test_repeating_steps_reuse_a_repeated_prefix_with_the_same_logits():
    """Frames whose first scales repeat the frame before's inputs take those steps' logits from it,
    and step on from its state: the logits are bit for bit those of stepping every scale again."""
    model = make("var").double()
    cur, prev = random_inputs(batch=1, dtype=torch.float64)
    changed = [c.clone() for c in cur]
    changed[2] += 1.0  # repeats scales 0 and 1, differs from scale 2 on
    frames = [(cur, None), (cur, prev), (changed, prev), (changed, prev), (changed[:2], prev)]
    steps = RepeatingSteps(model)
    runs = 0
    step = model.step

    def counted(*args):
        nonlocal runs
        runs += 1
        return step(*args)

    model.step = counted
    for c, p in frames:
        steps.start_frame()
        got = [steps.step(k, x, None if p is None else p[k]) for k, x in enumerate(c)]
        model.step = step
        want = step_all(model, c, p)
        model.step = counted
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    # frame 1: prev differs from None (no reuse); frame 2: scales 0-1 reused; frame 3: all reused;
    # frame 4 (a prefix): both reused
    assert steps.reused == 2 + 4 + 2
    assert runs == 4 + 4 + 2 + 0 + 0
    with pytest.raises(ConfigError, match="in order"):
        steps.start_frame()
        steps.step(1, cur[1], prev[1])
    # logits above max_elements are not kept, so those scales are stepped again
    steps = RepeatingSteps(model, max_elements=0)
    for _ in range(2):
        steps.start_frame()
        [steps.step(k, x, prev[k]) for k, x in enumerate(cur)]
    assert steps.reused == 0


@torch.no_grad()
def test_layered_temporal_dependency():
    """Scale k sees cur[<= k] and prev[<= k] only: an earlier frame's finer scales never leak in."""
    model = make("var").double()
    cur, prev = random_inputs(dtype=torch.float64)
    base = model(cur, prev)
    for j in range(len(SIZES)):
        for perturbed_prev in (True, False):
            cur2, prev2 = [c.clone() for c in cur], [p.clone() for p in prev]
            (prev2 if perturbed_prev else cur2)[j] += 1.0
            out = model(cur2, prev2)
            for k in range(len(SIZES)):
                diff = (out[k] - base[k]).abs().max().item()
                if k < j:
                    assert diff < 1e-12, (j, k, perturbed_prev)
                else:
                    assert diff > 1e-8, (j, k, perturbed_prev)


def test_prev_dropout_uses_the_no_prev_embedding():
    cur, prev = random_inputs()
    model = make("var", prev_dropout=1.0)
    with torch.no_grad():
        no_prev = model(cur)
        assert max_diff(model(cur, prev), no_prev) > 1e-4  # eval: prev is used
        model.train()
        assert max_diff(model(cur, prev), no_prev) < 1e-6  # training: every sample's prev dropped


@pytest.mark.parametrize("name", ["var", "static", "uniform"])
def test_config_round_trip(name):
    model = make(name, "bitwise")
    if name == "static":
        with torch.no_grad():
            model.logits.normal_()
    cfg = json.loads(json.dumps(CONTEXT_MODELS.config_of(model)))  # plain data only
    rebuilt = CONTEXT_MODELS.from_config(cfg)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    cur, prev = random_inputs()
    with torch.no_grad():
        assert max_diff(rebuilt(cur, prev), model(cur, prev)) == 0.0
    assert type(rebuilt) is type(model) and rebuilt.init_args == model.init_args


def test_uniform_and_static_logits():
    cur, _ = random_inputs()
    assert all(x.abs().max() == 0 for x in make("uniform")(cur))
    assert list(make("uniform").parameters()) == []
    static = make("static")
    with torch.no_grad():
        static.logits.normal_()
    out = static(cur)
    for k, x in enumerate(out):
        assert torch.equal(x, static.logits[k].expand_as(x))


def test_misuse_raises_config_errors():
    model = make("var")
    cur, prev = random_inputs()
    state = model.init_state(2)
    with pytest.raises(ConfigError, match="in order"):
        model.step(state, 1, cur[1])
    model.step(state, 0, cur[0])
    with pytest.raises(ConfigError, match="batch size"):
        model.step(state, 1, cur[1][:1])
    with pytest.raises(ConfigError, match=r"cur\[0\] must be"):
        model([torch.zeros(2, C + 1, 1, 1)])
    with pytest.raises(ConfigError, match="prev has"):
        model(cur, prev[:2])
    with pytest.raises(ConfigError, match="divisible"):
        CONTEXT_MODELS.create("var", latent_dim=C, groups=1, alphabet=4, num_scales=2, width=30, heads=4)
    with pytest.raises(ConfigError, match="tokenizer produces"):
        model.check_compatible(TokenSpec(latent_dim=C, groups=1, alphabet=99, scales=(1, 2, 3, 4)))


# --- real video -------------------------------------------------------------------------------


def to_frames(video) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[T, 3, H, W]`` in ``[0, 1]``."""
    return torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255


def context_data(tokenizer, prev_frames: torch.Tensor, cur_frames: torch.Tensor):
    """``(cur, prev, tokens)``: the context model's inputs and targets for ``cur_frames`` after ``prev_frames``."""
    size = tuple(cur_frames.shape[-2:])
    with torch.no_grad():
        tokens = tokenizer.encode(cur_frames)
        f_hats = tokenizer.latents(tokens, size)
        prev_f_hats = tokenizer.latents(tokenizer.encode(prev_frames), size)
    cur, prev = scale_inputs(f_hats, tokenizer.spec.scale_sizes(*size), prev_f_hats)
    return cur, prev, tokens


def bits_per_token(model: ContextModel, data) -> float:
    """Cross-entropy in bits per token position (``G`` symbols each) of ``data = (cur, prev, tokens)``."""
    cur, prev, tokens = data
    with torch.no_grad():
        return (cross_entropy_bits(model.eval()(cur, prev), tokens) / sum(t.numel() for t in tokens)).item()


def test_bits_per_token_on_real_video_var_beats_static_beats_uniform():
    """Train briefly on pairs of consecutive 64x64 crops of bikes.mp4, score carphone (held out)."""
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.create(
        "msvq",
        vocab_size=64,
        latent_dim=8,
        scales=(1, 2, 4, 8),
        downsample=8,
        width=8,
        max_width=16,
        num_res_blocks=0,
    )
    spec = tokenizer.spec
    video, _ = read_video(sample_clip("bikes"), max_frames=100)
    n = 256
    t, y, x = (torch.randint(0, hi, (n,)).tolist() for hi in (len(video) - 1, 272 - 64, 640 - 64))
    clips = torch.stack([to_frames(video[a : a + 2, b : b + 64, c : c + 64]) for a, b, c in zip(t, y, x)])
    with (
        torch.no_grad()
    ):  # one training-mode pass seeds the (random-init) codebook from data, as training starts
        tokenizer.train()(clips[:64, 0])
    tokenizer.eval()
    train = context_data(tokenizer, clips[:, 0], clips[:, 1])
    carphone = to_frames(read_video(sample_clip("carphone"), max_frames=9)[0])
    held_out = context_data(tokenizer, carphone[:-1], carphone[1:])

    bits = {}
    for name, kw, lr in [
        ("uniform", {}, 0),
        ("static", {}, 0.1),
        ("var", dict(width=32, depth=2, heads=2), 3e-3),
    ]:
        torch.manual_seed(0)
        model = CONTEXT_MODELS.create(
            name,
            latent_dim=spec.latent_dim,
            groups=1,
            alphabet=spec.alphabet,
            num_scales=spec.num_scales,
            **kw,
        )
        if lr:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            model.train()
            for _ in range(120):
                idx = torch.randint(0, n, (32,))
                cur, prev, tokens = ([x[idx] for x in part] for part in train)
                loss = cross_entropy_bits(model(cur, prev), tokens) / sum(t.numel() for t in tokens)
                opt.zero_grad()
                loss.backward()
                opt.step()
        bits[name] = bits_per_token(model, held_out)
    assert bits["uniform"] == pytest.approx(math.log2(spec.alphabet), abs=1e-4)
    assert bits["var"] < bits["static"] - 0.3 and bits["static"] < bits["uniform"] - 0.2, bits


def test_bench_context_json(capsys):
    from progvc.bench.context import main

    assert main(["--json", "--sizes", "48x32", "--repeats", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)["context"]
    assert [(r["frame"], r["dtype"]) for r in rows] == [("48x32", "float32"), ("48x32", "float64")]
    assert all(r["tokens_per_frame"] == 15 and r["ms_per_frame"] > 0 for r in rows)
    assert all(len(r["ms_per_scale"]) == 8 and min(r["ms_per_scale"]) > 0 for r in rows)


def test_bench_context_times_a_trained_model_per_scale_and_operator(tmp_path, capsys):
    from _tiny_codec import tiny_model

    from progvc.bench.context import main

    model = tiny_model("mssq", prediction="loops")
    model.save(tmp_path / "m.pt")
    assert main(["--json", "--weights", str(tmp_path / "m.pt"), "--sizes", "64x48", "--repeats", "1", "--ops", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)["context"]
    spec = model.tokenizer.spec
    assert [r["dtype"] for r in rows] == ["float32", "float64"]
    assert all(r["tokens_per_frame"] == spec.tokens_per_frame(48, 64) for r in rows)
    assert all(len(r["ms_per_scale"]) == spec.num_scales for r in rows)
    assert all(len(r["ops"]) == 3 and 0 < sum(r["ops"].values()) <= 1.0 for r in rows)


@pytest.mark.parametrize("mode", ["exact", "blocks"])
def test_exact_copy_products_are_exact_and_thread_invariant(mode):
    """The exact copy's matrix products are int8 products in int32 (or float32 sums of integers
    below 2**24): any order gives the same bits. ``"blocks"`` (measured against the codec's float64
    copy) makes only the Transformer blocks' linear layers exact: attention, input projections
    and head stay float64."""
    from progvc.context_models.exact import (
        ExactAttention,
        ExactLinear,
        _float64_matmul,
        exact_copy,
        quantize_rows,
    )
    from progvc.context_models.transformer import Attention

    model = make("var")
    cur, prev = [[c.double() for c in x] for x in random_inputs()]
    exact = exact_copy(model, mode=mode)
    kinds = {type(m) for m in exact.modules()}
    assert (ExactAttention in kinds, Attention in kinds) == (mode == "exact", mode == "blocks")
    plain = {name for name, m in exact.named_modules() if isinstance(m, torch.nn.Linear)}
    assert plain == (set() if mode == "exact" else {"cur_proj", "prev_proj", "head"})
    assert isinstance(exact.blocks[0].mlp.fc1, ExactLinear) and isinstance(exact.blocks[-1].attn.qkv, ExactLinear)
    q, s = quantize_rows(cur[-1].flatten(1))
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert torch.allclose(q * s, cur[-1].flatten(1), atol=float(s.max()) / 2 + 1e-12)
    lin = next(m for m in exact.modules() if isinstance(m, ExactLinear))
    x = torch.randint(-127, 128, (50, lin.weight_q.shape[0]), dtype=torch.int8)
    assert torch.equal(torch._int_mm(x, lin.weight_q).long(), x.long() @ lin.weight_q.long())  # exact
    assert torch.equal(_float64_matmul(x, lin.weight_q), torch._int_mm(x, lin.weight_q))  # the non-CPU path
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                runs.append(step_all(exact, cur, prev))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    # 8-bit operands move the logits a little: the model is the same model
    with torch.inference_mode():
        reference = step_all(make("var").double(), cur, prev)
    assert 0 < max_diff(runs[0], reference) < 0.05


def test_exact_copy_refuses_what_it_cannot_keep_exact():
    from progvc.context_models.exact import ExactLinear, _attention_grid, exact_copy

    with pytest.raises(ConfigError, match="in_features"):
        ExactLinear(torch.nn.Linear(140_000, 1))
    with pytest.raises(ConfigError, match="mode"):
        exact_copy(torch.nn.Linear(4, 4), mode="float32")
    assert _attention_grid(1000) == 2**16
    assert _attention_grid(200_000) < 2**16  # fewer grid steps keep 127 * (P + L / 2) < 2**24
    with pytest.raises(ConfigError, match="keys"):
        _attention_grid(300_000)


def test_interpolated_bits_are_the_code_length_at_tokens_and_linear_between_them():
    """The joint stage's rate: exact cross-entropy at integer values, the chord between neighbours
    elsewhere, and its slope (what moving toward a cheaper token saves) as the gradient."""
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 6, 3, 9, generator=gen), torch.randn(2, 4, 3, 9, generator=gen)]
    tokens = [
        torch.randint(0, 8, (2, 3, 2, 3), generator=gen),
        torch.randint(0, 8, (2, 2, 2, 3), generator=gen),
    ]
    at_tokens = interpolated_bits(logits, [t.float() for t in tokens])
    assert torch.allclose(at_tokens, cross_entropy_bits(logits, tokens), rtol=1e-5)
    values = [(t.float() + 0.25).requires_grad_(True) for t in tokens]
    bits = [-torch.log_softmax(lg, -1) / math.log(2.0) for lg in logits]
    here = [b.gather(-1, t.flatten(1, 2).unsqueeze(-1)).squeeze(-1) for b, t in zip(bits, tokens)]
    above = [b.gather(-1, t.flatten(1, 2).unsqueeze(-1) + 1).squeeze(-1) for b, t in zip(bits, tokens)]
    total = interpolated_bits(logits, values)
    assert torch.allclose(total, sum((0.75 * h + 0.25 * a).sum() for h, a in zip(here, above)), rtol=1e-5)
    total.backward()
    for v, h, a in zip(values, here, above):
        assert torch.allclose(v.grad.flatten(1, 2), a - h, atol=1e-5)
    # values beyond the alphabet cost what its end costs
    edge = interpolated_bits(logits[:1], [torch.full_like(tokens[0], 20, dtype=torch.float32)])
    assert torch.allclose(edge, bits[0][..., 8].sum(), rtol=1e-5)


def test_the_float64_gelu_agrees_with_torchs_and_float32_is_torchs():
    from progvc.context_models.transformer import GELU

    x = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    with torch.inference_mode():
        assert (GELU()(x) - torch.nn.functional.gelu(x)).abs().max() < 1e-14
        assert torch.equal(GELU()(x.float()), torch.nn.functional.gelu(x.float()))
    y = x.clone().requires_grad_()  # training: torch's own, with its gradient
    GELU()(y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
