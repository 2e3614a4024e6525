"""Encoder-side latent refinement: spend encoding time to buy quality at the same rate.

The tokenizer's encoder is *amortized*: one forward pass guesses the latent of any frame, and
a short-trained encoder guesses far from the best latent its decoder could use (on carphone the
bundled model's decoded latent gains 3 dB in 200 gradient steps on the latent alone). A
:class:`LatentRefiner` closes part of that gap for each frame it codes: starting from the
encoder's latent ``f``, it takes a few Adam steps on

    ``loss = MSE(decode(quantize(f, refs)), frame) + lambda x rate(f) / pixels``

through the quantizer's straight-through rounding, with the tokenizer's own rate estimate
(``QuantizeResult.rate_bits``, CompressAI's EntropyBottleneck, in bits) and the same prediction
references ``refs`` the frame will be coded against, so a static region keeps coding as zeros
(Campos et al. 2019, Yang et al. 2020: "content-adaptive" / "improved inference" for learned
codecs). Only the encoder changes: the tokens still mean what they meant, the decoder and the
bitstream are untouched, truncation stays byte-identical (the objective uses every scale,
whatever is sent). It costs about ``steps`` decoder passes (forward and backward) per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from progvc.errors import ConfigError
from progvc.tokenizers.base import Tokenizer


class LatentRefiner:
    """Refine a frame's latent for distortion + ``lam`` x rate before it is quantized.

    Args:
        tokenizer: a tokenizer with ``quantize(f, refs=...)`` (the multi-scale ones); its weights
            are not changed.
        steps: Adam steps per frame (0: no refinement).
        lam: weight of the rate, in MSE (of ``[0, 1]`` pixels) per bit per pixel.
        lr: Adam's learning rate on the latent.
    """

    def __init__(self, tokenizer: Tokenizer, steps: int, lam: float = 0.03, lr: float = 0.01) -> None:
        if not isinstance(steps, int) or not 0 <= steps <= 10_000:
            raise ConfigError(f"refinement steps must be an integer in [0, 10000], got {steps!r}")
        if not lam >= 0 or not lr > 0:
            raise ConfigError(f"refinement needs lambda >= 0 and lr > 0, got {lam} and {lr}")
        if not hasattr(tokenizer, "quantize"):
            raise ConfigError(f"tokenizer {type(tokenizer).__name__} cannot refine latents")
        self.tokenizer, self.steps, self.lam, self.lr = tokenizer, steps, float(lam), float(lr)

    def hook(
        self, frame_of: Callable[[int], Tensor]
    ) -> Callable[[int, Tensor, list[Tensor] | None], Tensor] | None:
        """The ``refine`` hook of :func:`~progvc.codec.prediction.code_clip` for a clip whose frame ``t``
        is ``frame_of(t)`` (``[1, 3, H, W]`` in ``[0, 1]``), or ``None`` when refinement is off."""
        if not self.steps:
            return None
        return lambda t, f, refs: self(f, frame_of(t), refs)

    def __call__(self, f: Tensor, frame: Tensor, refs: Sequence[Tensor] | None) -> Tensor:
        """The refined latent ``[B, C, h, w]`` of ``frame [B, 3, H, W]`` (in ``[0, 1]``), coded against ``refs``."""
        if self.steps == 0:
            return f
        tok = self.tokenizer
        size = (frame.shape[-2], frame.shape[-1])
        pixels = frame.shape[0] * size[0] * size[1]
        frozen = [p for p in tok.parameters() if p.requires_grad]
        with torch.inference_mode(False), torch.enable_grad():
            target = frame.clone()
            refs = None if refs is None else [r.clone() for r in refs]
            latent = f.clone().requires_grad_(True)
            opt = torch.optim.Adam([latent], lr=self.lr)
            for p in frozen:
                p.requires_grad_(False)
            try:
                for _ in range(self.steps):
                    res = tok.quantize(latent, refs=refs)
                    loss = torch.mean((tok.decode_latent(res.recons[-1], size) - target) ** 2)
                    if res.rate_bits is not None and self.lam:
                        loss = loss + self.lam * res.rate_bits / pixels
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            finally:
                for p in frozen:
                    p.requires_grad_(True)
        return latent.detach()
