"""Every tokenizer x context model x coder combination recovers exactly the tokens it encoded,
with random-initialised weights and after a brief training (which makes the tables peaked)."""

import itertools

import pytest
import torch
from _tiny_codec import clip, tiny_model

from progvc.codec import Codec, CodecModel
from progvc.codec.codec import frames_to_tensor
from progvc.context_models import cross_entropy_bits, scale_inputs

COMBINATIONS = list(itertools.product(("msvq", "msbsq", "mssq"), ("var", "static", "uniform"), ("range", "rans")))


def brief_training(model: CodecModel, x: torch.Tensor, steps: int = 8) -> None:
    """A few steps of tokenizer reconstruction and context-model cross-entropy on frames ``x``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    size = tuple(x.shape[-2:])
    sizes = model.tokenizer.scale_sizes(*size)
    for _ in range(steps):
        out = model.tokenizer(x)
        loss = (out.recon - x).abs().mean() + out.loss
        with torch.no_grad():
            f_hats = model.tokenizer.latents(out.tokens, size)
        cur, prev = scale_inputs([f[1:] for f in f_hats], sizes, [f[:-1] for f in f_hats])
        if any(p.requires_grad for p in model.context_model.parameters()):
            loss = (
                loss + cross_entropy_bits(model.context_model(cur, prev), [t[1:] for t in out.tokens]) / 1e3
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
@pytest.mark.parametrize(("tokenizer", "context", "coder"), COMBINATIONS)
def test_combination_recovers_tokens_exactly(tokenizer, context, coder, trained):
    base = tiny_model(tokenizer, context=context)
    model = CodecModel(base.tokenizer, base.context_model, coder=coder)
    x = frames_to_tensor(clip())
    if trained:
        brief_training(model.train(), x)
    codec = Codec(model, progress=False)
    data = codec.compress(clip(), gop=5)
    (decoded,) = list(codec.iter_tokens(data))
    with torch.inference_mode():
        expected = model.tokenizer.encode(x)
    assert len(decoded) == len(expected)
    for got, want in zip(decoded, expected):
        assert torch.equal(got, want)
