"""Temporal prediction: the per-prefix prediction loops that make P-frames cheap (DESIGN.md section 10).

This module is the one home of the temporal loop; the encoder, the decoder and training all
go through it. A decoder that receives ``k`` scales of every frame holds, for every level
``j <= k``, a reconstruction ``R_t[j]`` of the current frame's latent. With ``mode="loops"``:

* the first frame of a GOP is coded alone (``R_{-1}[j] = 0``);
* scale ``j`` of frame ``t`` quantizes ``down_j(f_t - R_{t-1}[j] - S_t[j-1])``, where ``S_t`` is
  the running sum of frame ``t``'s own scale contributions;
* ``R_t[j] = R_{t-1}[j] + S_t[j]``, and the decoder shows ``decode(R_t[k])``.

Every level is its own closed loop, so cutting a stream after any scale decodes without drift,
and the layered rule holds: frame ``t``, scale ``j`` depends on frame ``t``'s scales ``< j`` and
earlier frames' scales ``<= j`` only. Content that did not change is coded as zero tokens,
which cost almost nothing under the context model. ``mode="intra"`` codes every frame alone
(``R_t[j] = S_t[j]``), the first design.

With global motion (:mod:`progvc.codec.motion`), the references of the fine levels are first
translated by the frame's motion: ``R_{t-1}[j]`` becomes ``translate(R_{t-1}[j], m_t)`` for
``j >= motion_scale``, in the encoder (:func:`code_clip`, which also estimates ``m_t``) and in
the decoder alike (:meth:`PredictionLoop.move`, when scale ``motion_scale`` begins).

The context model sees, for scale ``k`` of frame ``t``: ``cur_k = down_k(S_t[k-1])`` (what this
frame has coded so far) and ``prev_k = down_k(R_{t-1}[k])`` (the reference at that level),
exactly as :func:`progvc.context_models.scale_inputs` builds them from ``S_t`` and ``R_{t-1}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from progvc.codec.motion import Motion, check_motion_mode, estimate_gop, motion_scale, translate
from progvc.context_models.base import ContextModel, area_resize
from progvc.errors import ConfigError
from progvc.tokenizers.base import Tokenizer

#: prediction modes, as stored in a model's config.
PREDICTION_MODES = ("intra", "loops")


def check_mode(mode: str) -> str:
    """``mode`` if it is a known prediction mode, else :class:`ConfigError`."""
    if mode not in PREDICTION_MODES:
        raise ConfigError(f"prediction must be one of {', '.join(PREDICTION_MODES)}, got {mode!r}")
    return mode


@dataclass
class ClipCode:
    """The result of coding a clip ``[B, T, ...]`` frame after frame (:func:`code_clip`).

    Attributes:
        latents: per frame, the latent ``f_t [B, C, h, w]`` that was quantized (after refinement).
        tokens: per frame, ``K`` token maps ``[B, h_k, w_k, G]``.
        own: per frame, ``K`` running sums ``S_t[k]`` ``[B, C, h, w]`` of the frame's own contributions.
        recons: per frame, ``K`` reconstructions ``R_t[k]`` ``[B, C, h, w]`` (what a decoder
            receiving ``k + 1`` scales holds).
        rate_bits: the tokenizer's own rate estimate of the whole clip in bits, or ``None``.
        motions: per frame, its global motion ``(dy, dx)`` in sixteenths of a latent pixel
            (``(0, 0)`` for the first frame and without motion).
    """

    latents: list[Tensor] = field(default_factory=list)
    tokens: list[list[Tensor]] = field(default_factory=list)
    own: list[list[Tensor]] = field(default_factory=list)
    recons: list[list[Tensor]] = field(default_factory=list)
    rate_bits: Tensor | None = None
    motions: list[Motion] = field(default_factory=list)


def rd_chooser(
    tokenizer: Tokenizer,
    context_model: ContextModel,
    lam: float,
    batch: int,
    prev: list[Tensor] | None,
) -> Callable[[int, Tensor, Tensor], Tensor | None]:
    """A ``choose`` hook for the tokenizer's ``quantize``: RDOQ of one frame with ``context_model``'s probabilities.

    Scale ``k``'s tokens minimise distortion + ``lam`` x bits under the context model's logits
    for that scale (the tokenizer's ``rd_quantize_scale``), given the frame's own scales so far
    and the previous frame's reconstructions ``prev`` (``K`` latents ``[B, C, h, w]``, or
    ``None``): the inputs the codec's :class:`PredictionLoop` gives it, so training sees the
    tokens the encoder sends. Bits come from a softmax in float32 (the codec uses its integer
    grid tables: within 6 % per value). Call under ``torch.no_grad()``, the model in eval mode.
    """
    state = context_model.init_state(batch)
    ln2 = math.log(2.0)

    def choose(k: int, z: Tensor, s_hat: Tensor) -> Tensor | None:
        hw = tuple(z.shape[-2:])
        cur = z.new_zeros(z.shape) if k == 0 else area_resize(s_hat, hw)
        prev_k = None if prev is None else area_resize(prev[k], hw)
        logits = context_model.step(state, k, cur, prev_k)  # [B, h_k * w_k, G, A]
        bits = torch.log_softmax(logits.float(), -1).div_(-ln2)
        return tokenizer.rd_quantize_scale(k, z.float(), bits.view(batch, *hw, *bits.shape[-2:]), lam)

    return choose


def code_clip(
    tokenizer: Tokenizer,
    latents: Tensor,
    mode: str,
    update: bool = False,
    detach_refs: bool = True,
    refine: Callable[[int, Tensor, list[Tensor] | None], Tensor] | None = None,
    context_model: ContextModel | None = None,
    rdoq: float = 0.0,
    motion: str = "none",
) -> ClipCode:
    """Quantize the latents ``[B, T, C, h, w]`` of clips frame after frame with prediction ``mode``.

    Frame 0 of every clip is coded alone; with ``"loops"`` frame ``t`` is coded against frame
    ``t - 1``'s reconstructions. ``detach_refs`` stops gradients through the references
    (training through time is not needed to learn the quantizer). ``refine(t, f_t, refs)``,
    when given, replaces frame ``t``'s latent before it is quantized against ``refs`` (the
    encoder's latent refinement, :mod:`progvc.codec.refine`). With ``rdoq > 0`` and a
    ``context_model``, tokens are chosen for distortion + ``rdoq`` x bits under that model
    (:func:`rd_chooser`; no gradient through the chosen scales). The tokenizer must provide
    ``quantize(f, update, refs, choose)`` (every :class:`~progvc.tokenizers.multiscale.MultiScaleResidualTokenizer` does).
    With ``motion="global"`` (``"loops"`` only, one clip: ``B = 1``) every frame after the first
    gets a translation (:func:`progvc.codec.motion.estimate_gop`, on the latents before
    refinement), and its references of levels ``>= motion_scale`` are translated by it.
    """
    if rdoq > 0 and context_model is None:
        raise ConfigError("code_clip: rdoq > 0 needs a context model")
    check_mode(mode)
    moving = check_motion_mode(motion) == "global" and mode == "loops"
    if moving and latents.shape[0] != 1:
        raise ConfigError(f"code_clip: global motion codes one clip at a time, got a batch of {latents.shape[0]}")
    quantize = getattr(tokenizer, "quantize", None)
    if quantize is None:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} cannot quantize against references")
    out = ClipCode()
    refs: list[Tensor] | None = None
    rates = []
    out.motions = estimate_gop(latents[0].detach()) if moving else [(0, 0)] * latents.shape[1]
    first_moved = motion_scale(tokenizer.spec.scales)
    for t in range(latents.shape[1]):
        if moving and refs is not None:
            refs = [r if j < first_moved else translate(r, out.motions[t]) for j, r in enumerate(refs)]
        f = latents[:, t] if refine is None else refine(t, latents[:, t], refs)
        choose = None
        if rdoq > 0:
            prev = refs if refs is not None else (out.recons[-1] if out.recons else None)
            choose = rd_chooser(tokenizer, context_model, rdoq, f.shape[0], prev)
        res = quantize(f, update=update and t == 0, refs=refs, **({"choose": choose} if choose else {}))
        out.latents.append(f.detach())
        out.tokens.append(res.tokens)
        out.own.append(res.f_hats)
        out.recons.append(res.recons)
        if res.rate_bits is not None:
            rates.append(res.rate_bits)
        if mode == "loops":
            refs = [r.detach() for r in res.recons] if detach_refs else res.recons
    out.rate_bits = torch.stack(rates).sum() if rates else None
    return out


class PredictionLoop:
    """Decoder-side state of the prediction loops of one GOP, updated scale by scale, frame by frame.

    The codec (encoder and decoder alike) runs, for each frame: :meth:`start_frame`, then for
    each scale ``k`` :meth:`inputs` (the context model's ``cur_k, prev_k``) and
    :meth:`add_scale` (the scale's tokens), then :meth:`latent` (what to decode for display).
    Memory: ``K`` reference latents, whatever the GOP length.

    Args:
        tokenizer: the tokenizer (the codec passes its float64 copy, so that encoder and decoder
            compute bit-identical inputs).
        mode: ``"intra"`` or ``"loops"``.
        size: frame ``(H, W)`` in pixels.
        motion: ``"none"`` or ``"global"`` (frames after the first carry a translation of the
            levels ``>= motion_scale``, :meth:`move`; only with ``"loops"``).
    """

    def __init__(self, tokenizer: Tokenizer, mode: str, size: tuple[int, int], motion: str = "none") -> None:
        self.tokenizer = tokenizer
        self.mode = check_mode(mode)
        self.moving = check_motion_mode(motion) == "global" and self.mode == "loops"
        self.motion: Motion = (0, 0)  # the last motion coded (what the next one is coded against)
        self.size = size
        self.spec = tokenizer.spec
        self.sizes = self.spec.scale_sizes(*size)
        self.motion_scale = motion_scale(self.spec.scales)
        param = next(tokenizer.parameters())
        self._zeros = param.new_zeros(1, self.spec.latent_dim, *self.sizes[-1])
        self.refs: list[Tensor] | None = None  # R_{t-1}[k] for the levels coded so far
        self.recons: list[Tensor] = []  # R_t[k] of the frame being coded
        self.tokens: list[Tensor] = []  # the frame's tokens so far
        self.own: Tensor = self._zeros  # S_t after the frame's scales so far

    def codes_motion(self, k: int) -> bool:
        """Whether scale ``k`` of the frame being coded opens with its global motion (:meth:`move`)."""
        return self.moving and k == self.motion_scale and self.refs is not None

    def start_frame(self) -> None:
        """Begin the next frame: its own sum is zero; the last frame's levels become the references."""
        if self.tokens:  # intra: the previous frame still informs the context model (prev inputs)
            self.refs = self.recons
        self.recons, self.tokens, self.own = [], [], self._zeros

    def move(self, motion: Motion) -> None:
        """Translate the references of levels ``>= motion_scale`` by the frame's ``motion``
        (sixteenths of a latent pixel), before scale ``motion_scale`` (when :meth:`codes_motion`)."""
        if not self.codes_motion(len(self.tokens)):
            raise ConfigError(f"global motion comes before scale {self.motion_scale} of a predicted frame")
        self.motion = motion
        self.refs = [r if j < self.motion_scale else translate(r, motion) for j, r in enumerate(self.refs)]

    @property
    def first(self) -> bool:
        """Whether the frame being coded is the first of the GOP (no previous frame)."""
        return self.refs is None

    def inputs(self, k: int) -> tuple[Tensor, Tensor | None]:
        """Context-model inputs of scale ``k``: ``cur_k = down_k(S_t[k-1])``, ``prev_k = down_k(R_{t-1}[k])``."""
        hw = self.sizes[k]
        if k == 0:
            cur = self._zeros.new_zeros(1, self.spec.latent_dim, *hw)
        else:
            cur = area_resize(self.own, hw)
        prev = None if self.refs is None else area_resize(self.refs[k], hw)
        return cur, prev

    def reference(self, k: int) -> Tensor | None:
        """``R_{t-1}[k]``, what scale ``k`` of this frame is predicted from, or ``None`` (coded alone)."""
        predicted = self.mode == "loops" and self.refs is not None and k < len(self.refs)
        return self.refs[k] if predicted else None

    def residual(self, k: int, f: Tensor) -> Tensor:
        """What scale ``k`` of the frame whose latent is ``f [1, C, h, w]`` codes, ``[1, C, h_k, w_k]``
        (the encoder's side of the loop: the tokenizer's ``scale_residual`` against this state)."""
        return self.tokenizer.scale_residual(f, self.own, self.reference(k), self.sizes[k])

    def add_scale(self, tokens_k: Tensor) -> None:
        """Add scale ``k = len(tokens so far)``'s tokens ``[1, h_k, w_k, G]`` to the frame."""
        k = len(self.tokens)
        if k >= len(self.sizes):
            raise ConfigError(f"the frame already has all {len(self.sizes)} scales")
        self.tokens.append(tokens_k)
        zero = self.tokenizer.zero_token
        if zero is None or not bool((tokens_k == zero).all()):  # all "no change" tokens add nothing
            self.own = self.own + self.tokenizer.scale_contribution(self.tokens, self.size)
        ref = self.reference(k)
        self.recons.append(self.own if ref is None else ref + self.own)

    def latent(self) -> Tensor:
        """The latent ``[1, C, h, w]`` the decoder shows for the frame: its deepest level coded so far."""
        return self.recons[-1] if self.recons else self._zeros
