"""VAR's next-scale residual quantization, shared by every multi-scale tokenizer.

A frame is padded to the downsampling multiple (replicate), mapped from ``[0, 1]`` to
``[-1, 1]`` and encoded to a latent ``f [B, C, h, w]``. Then, for each scale ``k`` of the
schedule, coarse to fine::

    z_k     = area_downsample(f - f_hat, (h_k, w_k))      # what is still missing, at scale k
    tokens  = quantize_k(z_k)                              # subclass hook
    f_hat  += phi_k(bicubic_upsample(dequantize_k(tokens), (h, w)))

so ``f_hat`` after scale ``k`` is exactly what a decoder holds after receiving ``k + 1`` scales
(:meth:`MultiScaleResidualTokenizer.latents` rebuilds it from tokens alone). Subclasses supply
the quantizer of one scale (:meth:`quantize_scale`, :meth:`dequantize_scale`); everything else
-- padding, the residual loop, phi, the straight-through estimator and the decoder -- lives here.

**Prediction from a reference.** ``quantize(f, refs=R)`` codes a frame against a reference
per level (the per-prefix prediction loops of :mod:`progvc.codec.prediction`): scale ``k``
quantizes ``area_downsample(f - R[k] - s_hat, (h_k, w_k))``, where ``s_hat`` is the sum of this
frame's own contributions so far, and the frame's reconstruction at level ``k`` is
``R[k] + s_hat`` after scale ``k``. ``refs=None`` (every reference zero) is the intra case above.

Gradients: the quantizer of scale ``k`` passes the gradient of its output straight through to
``z_k`` (the value is exactly the dequantized tokens, ``q + (z - z.detach())``), so the encoder
receives a gradient from the reconstruction of *every* prefix, not only the full one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from progvc.errors import ConfigError
from progvc.nn import ConvDecoder, ConvEncoder, SharedPhi
from progvc.tokenizers.base import Tokenizer, TokenizerOutput, TokenSpec


@dataclass
class QuantizeResult:
    """Output of :meth:`MultiScaleResidualTokenizer.quantize`.

    Attributes:
        tokens: ``K`` int64 token maps ``[B, h_k, w_k, G]``.
        f_hats: ``K`` running sums ``[B, C, h, w]`` of the frame's own contributions: ``f_hats[k]``
            after scales ``0..k`` (differentiable when computed with gradients).
        recons: ``K`` reconstructions ``[B, C, h, w]`` at each level: ``refs[k] + f_hats[k]``
            (``f_hats`` itself without references).
        loss: quantizer loss averaged over scales (commitment, codebook, entropy terms), scalar.
        rate_bits: the quantizer's own differentiable rate estimate of all scales in bits
            (summed over the batch), or ``None`` when it has none.
        stats: detached scalars for logging.
        values: per scale, the differentiable continuous token values ``[B, h_k, w_k, G]``
            (:meth:`MultiScaleResidualTokenizer.scale_values`), or ``None``.
    """

    tokens: list[Tensor]
    f_hats: list[Tensor]
    recons: list[Tensor]
    loss: Tensor
    rate_bits: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
    values: list[Tensor] | None = None


#: ``choose(k, z, s_hat) -> tokens | None``: a hook of :meth:`MultiScaleResidualTokenizer.quantize`
#: that picks scale ``k``'s tokens itself (rate-distortion optimised quantization).
Chooser = Callable[[int, Tensor, Tensor], Tensor | None]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is running (quantizer upkeep must then agree across ranks)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Resize ``x [B, C, h, w]`` to ``size`` (identity when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class MultiScaleResidualTokenizer(Tokenizer):
    """Conv encoder/decoder around VAR's multi-scale residual quantizer; subclasses quantize one scale.

    Args:
        latent_dim: latent channels ``C``.
        groups: symbols per token position ``G`` (fixed by the subclass).
        alphabet: values per symbol ``A`` (fixed by the subclass).
        scales: scale schedule ``s_1 < ... < s_K`` (see :class:`~progvc.tokenizers.base.TokenSpec`).
        downsample: pixels per latent position, a power of two (8 or 16): one stride-2 stage each.
        width: channels of the first (full-resolution) stage; each later stage doubles it ...
        max_width: ... up to this many channels.
        num_res_blocks: residual blocks per stage of the encoder and of the decoder.
        phi_shared: number of phi convolutions shared by the scales (VAR: 4); 0 disables phi.
        phi_ratio: phi's residual ratio ``r`` in ``x * (1 - r) + conv(x) * r`` (VAR: 0.5).
        beta: weight of the commitment term (pulls the encoder output towards its quantization).
        phi_bias: whether phi's convolutions have a bias (a quantizer whose zero means "no change"
            needs ``False``, so that zero tokens add nothing).
        encoder_width: channels of the encoder's first stage when it should be wider than the
            decoder's ``width`` (its stages and cap scale by the same ratio); ``None``: ``width``.
            Only encoding pays for a wider encoder.
        decoder_width: the same for the decoder (``None``: ``width``); a wider decoder changes
            neither the tokens nor the rate, only what the decoder makes of them, and decoding
            pays for it.
    """

    def __init__(
        self,
        latent_dim: int,
        groups: int,
        alphabet: int,
        scales: Sequence[int] = (1, 2, 3, 4, 6, 8, 11, 16),
        downsample: int = 16,
        width: int = 32,
        max_width: int = 128,
        num_res_blocks: int = 1,
        phi_shared: int = 4,
        phi_ratio: float = 0.5,
        beta: float = 0.25,
        phi_bias: bool = True,
        encoder_width: int | None = None,
        decoder_width: int | None = None,
    ) -> None:
        super().__init__()
        stages = int(downsample).bit_length() - 1
        if downsample < 2 or 2**stages != downsample:
            raise ConfigError(f"downsample must be a power of two >= 2 (8 or 16), got {downsample}")
        if min(latent_dim, width, max_width) < 1 or num_res_blocks < 0 or phi_shared < 0:
            raise ConfigError(
                "latent_dim, width and max_width must be >= 1; num_res_blocks and phi_shared >= 0"
            )
        try:
            self._spec = TokenSpec(latent_dim, groups, alphabet, tuple(scales), downsample)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        widths = tuple(min(width * 2**i, max_width) for i in range(stages))
        for name, value in (("encoder_width", encoder_width), ("decoder_width", decoder_width)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")

        def scaled(first: int | None) -> tuple[int, ...]:
            return tuple(round(c * (first or width) / width) for c in widths)

        self.encoder = ConvEncoder(latent_dim, scaled(encoder_width), num_res_blocks)
        self.decoder = ConvDecoder(latent_dim, scaled(decoder_width), num_res_blocks)
        num_scales = self._spec.num_scales
        self.phi = SharedPhi(
            latent_dim, num_scales, max(phi_shared, 1), phi_ratio if phi_shared else 0.0, phi_bias
        )
        self.beta = float(beta)

    @property
    def spec(self) -> TokenSpec:
        return self._spec

    # ---- hooks of one scale's quantizer -------------------------------------------------------
    @abstractmethod
    def quantize_scale(self, k: int, z: Tensor, predicted: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize scale ``k``'s residual ``z [B, C, h_k, w_k]``.

        ``predicted`` says that ``z`` is a residual against a reference (a frame coded with
        prediction), for quantizers that round such residuals differently (a dead zone).

        Returns:
            ``(tokens [B, h_k, w_k, G] int64, vec [B, C, h_k, w_k], loss)`` where ``vec`` has
            exactly the value of ``dequantize_scale(k, tokens)`` and passes gradients straight
            through to ``z``, and ``loss`` is the scale's quantizer loss (a scalar).
        """

    @abstractmethod
    def dequantize_scale(self, k: int, tokens: Tensor) -> Tensor:
        """Vectors ``[B, C, h_k, w_k]`` of scale ``k``'s tokens ``[B, h_k, w_k, G]``."""

    def scale_rate_bits(self, k: int, z: Tensor) -> Tensor | None:
        """Differentiable estimate of the bits of scale ``k``'s residual ``z`` (summed), or ``None``.

        A quantizer with a rate model of its own (a learned density of its integer values)
        returns it here, so that the tokenizer can be trained for rate and distortion together.
        """
        return None

    def scale_values(self, k: int, z: Tensor) -> Tensor | None:
        """Continuous token values ``[B, h_k, w_k, G]`` of scale ``k``'s residual ``z``, whose rounding
        (with the encoder's dead zone, if any) gives the tokens, differentiable in ``z``; ``None`` when tokens are not rounded numbers
        (codebooks). A context model's rate of these values (interpolated between the two nearest
        tokens) can then train the encoder (the joint stage)."""
        return None

    def quantizer_stats(self, zs: list[Tensor], tokens: list[Tensor], update: bool) -> dict[str, Tensor]:
        """Logging scalars of one batch; ``update`` marks a training step (codebook upkeep goes here).

        ``zs[k]`` is scale ``k``'s residual ``[B, C, h_k, w_k]`` (detached), ``tokens[k]`` its tokens.
        """
        return {}

    # ---- the shared scheme -------------------------------------------------------------------
    def _check_frames(self, frames: Tensor) -> None:
        if frames.dim() != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
            raise ConfigError(
                f"frames must be a float [B, 3, H, W] tensor in [0, 1], got {frames.dtype} {tuple(frames.shape)}"
            )

    def encode_latent(self, frames: Tensor) -> Tensor:
        """Unquantized latent ``f [B, C, h, w]`` of ``frames [B, 3, H, W]`` in ``[0, 1]`` (``h = ceil(H / ds)``)."""
        self._check_frames(frames)
        ds = self.spec.downsample
        height, width = frames.shape[-2:]
        x = F.pad(frames, (0, -width % ds, 0, -height % ds), mode="replicate")
        return self.encoder(x * 2.0 - 1.0)

    def scale_residual(self, f: Tensor, f_hat: Tensor, ref: Tensor | None, hw: tuple[int, int]) -> Tensor:
        """What a scale of size ``hw`` codes: ``down(f - ref - f_hat)`` (``ref`` = 0 when coded alone), ``[B, C, *hw]``."""
        return resize(f - f_hat if ref is None else f - ref - f_hat, hw, "area")

    def rd_quantize_scale(self, k: int, z: Tensor, bits: Tensor, lam: float) -> Tensor | None:
        """Tokens ``[B, h_k, w_k, G]`` of scale ``k``'s residual ``z`` chosen for distortion + ``lam`` x rate,
        given the bits every value would cost, ``bits [B, h_k, w_k, G, A]`` (the entropy coder's tables);
        ``None`` when the quantizer has no such choice (the codec then keeps its plain tokens)."""
        return None

    def _expand(self, k: int, vec: Tensor, size: tuple[int, int]) -> Tensor:
        """Scale ``k``'s contribution to ``f_hat``: bicubic upsampling of ``vec`` to the latent grid, then phi."""
        return self.phi(resize(vec, size, "bicubic"), k)

    def quantize(
        self,
        f: Tensor,
        update: bool = False,
        refs: Sequence[Tensor] | None = None,
        choose: Chooser | None = None,
    ) -> QuantizeResult:
        """Quantize a latent ``f [B, C, h, w]`` scale by scale (see the module docstring).

        ``update=True`` (training) lets the subclass maintain its quantizer (e.g. dead-code restarts).
        ``refs`` (``K`` latents ``[B, C, h, w]``, one per level) makes scale ``k`` code the
        residual against ``refs[k]`` (prediction loops); ``None`` codes the frame alone.
        ``choose(k, z, s_hat)``, when given, may replace scale ``k``'s tokens: it gets the residual
        ``z [B, C, h_k, w_k]`` and the frame's own sum so far ``s_hat [B, C, h, w]`` and returns
        tokens ``[B, h_k, w_k, G]`` or ``None`` (keep the quantizer's). Chosen tokens pass no
        gradient to ``z`` (RDOQ in training, :func:`progvc.codec.prediction.code_clip`).
        """
        size = tuple(f.shape[-2:])
        ds = self.spec.downsample
        sizes = self.spec.scale_sizes(size[0] * ds, size[1] * ds)
        if refs is not None and len(refs) != len(sizes):
            raise ConfigError(f"refs must hold one latent per scale ({len(sizes)}), got {len(refs)}")
        f_hat = torch.zeros_like(f)
        tokens, f_hats, recons, zs, losses, rates, values = [], [], [], [], [], [], []
        for k, hw in enumerate(sizes):
            ref = None if refs is None else refs[k]
            z = self.scale_residual(f, f_hat, ref, hw)
            idx, vec, loss = self.quantize_scale(k, z, predicted=ref is not None)
            chosen = None if choose is None else choose(k, z, f_hat)
            if chosen is not None:
                idx, vec = chosen, self.dequantize_scale(k, chosen).to(vec.dtype)
            bits = self.scale_rate_bits(k, z)
            if bits is not None:
                rates.append(bits)
            value = self.scale_values(k, z) if chosen is None else None
            if value is not None:
                values.append(value)
            f_hat = f_hat + self._expand(k, vec, size)
            tokens.append(idx)
            f_hats.append(f_hat)
            recons.append(f_hat if ref is None else ref + f_hat)
            zs.append(z.detach())
            losses.append(loss)
        stats = self.quantizer_stats(zs, tokens, update)
        stats["latent_mse"] = F.mse_loss(recons[-1].detach(), f.detach())
        rate_bits = torch.stack(rates).sum() if rates else None
        if rate_bits is not None:
            stats["rate_bits"] = rate_bits.detach()
        return QuantizeResult(
            tokens,
            f_hats,
            recons,
            torch.stack(losses).mean(),
            rate_bits,
            stats,
            values if len(values) == len(sizes) else None,
        )

    def encode(self, frames: Tensor, refs: Sequence[Tensor] | None = None) -> list[Tensor]:
        with torch.no_grad():
            return self.quantize(self.encode_latent(frames), refs=refs).tokens

    def latents(self, tokens: list[Tensor], size: tuple[int, int]) -> list[Tensor]:
        spec = self.spec
        sizes = spec.scale_sizes(*size)
        if len(tokens) > len(sizes):
            raise ConfigError(f"expected at most {len(sizes)} token maps, got {len(tokens)}")
        f_hat: Tensor | None = None
        out = []
        for k, tk in enumerate(tokens):
            want = (*sizes[k], spec.groups)
            if tk.dim() != 4 or tuple(tk.shape[1:]) != want:
                raise ConfigError(
                    f"tokens of scale {k} must be [B, {want[0]}, {want[1]}, {want[2]}], got {tuple(tk.shape)}"
                )
            if tk.numel() and (int(tk.min()) < 0 or int(tk.max()) >= spec.alphabet):
                raise ConfigError(f"tokens of scale {k} must lie in [0, {spec.alphabet})")
            contrib = self._expand(k, self.dequantize_scale(k, tk), sizes[-1])
            f_hat = (torch.zeros_like(contrib) if f_hat is None else f_hat) + contrib
            out.append(f_hat)
        return out

    def scale_contribution(self, tokens: list[Tensor], size: tuple[int, int]) -> Tensor:
        k = len(tokens) - 1
        spec = self.spec
        sizes = spec.scale_sizes(*size)
        want = (*sizes[k], spec.groups)
        tk = tokens[-1]
        if tk.dim() != 4 or tuple(tk.shape[1:]) != want:
            raise ConfigError(
                f"tokens of scale {k} must be [B, {want[0]}, {want[1]}, {want[2]}], got {tuple(tk.shape)}"
            )
        return self._expand(k, self.dequantize_scale(k, tk), sizes[-1])

    def decode_latent(self, f_hat: Tensor, size: tuple[int, int]) -> Tensor:
        want = self.spec.latent_size(*size)
        if f_hat.dim() != 4 or tuple(f_hat.shape[-2:]) != want or f_hat.shape[1] != self.spec.latent_dim:
            raise ConfigError(
                f"latent must be [B, {self.spec.latent_dim}, {want[0]}, {want[1]}] for a {size[0]}x{size[1]} frame, "
                f"got {tuple(f_hat.shape)}"
            )
        x = self.decoder(f_hat)[..., : size[0], : size[1]] * 0.5 + 0.5
        # clamp to [0, 1] with a straight-through gradient: out-of-range outputs are still pulled back
        return x + (x.clamp(0.0, 1.0) - x).detach()

    def forward(self, frames: Tensor, prefix: int | None = None) -> TokenizerOutput:
        num_scales = self.spec.num_scales
        prefix = num_scales if prefix is None else int(prefix)
        if not 0 <= prefix <= num_scales:
            raise ConfigError(f"prefix must be in [0, {num_scales}], got {prefix}")
        size = (frames.shape[-2], frames.shape[-1])
        f = self.encode_latent(frames)
        res = self.quantize(f, update=self.training)
        f_hat = res.recons[prefix - 1] if prefix else torch.zeros_like(f)
        recon = self.decode_latent(f_hat, size)
        tokens = [t.detach() for t in res.tokens]
        return TokenizerOutput(
            recon, tokens, res.loss, prefix, res.stats, res.rate_bits, res.f_hats, res.values
        )
