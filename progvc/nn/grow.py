"""Function-preserving growth: load a narrower network's weights into a wider one.

A trained network can be widened without losing what it learnt (the "zero-init growth" of
Net2Net-style model growth): every old weight is copied into the leading slice of the wider
tensor, the new output channels keep their fresh initialisation, and the weights *from* the new
input channels *to* the old output channels are zero. The old channels then compute exactly
what they computed before, the new ones start as extra features that nothing reads yet, and
the first optimizer step gives those zero weights a gradient, so training grows into the new
width from the old network's quality instead of from scratch.

This holds for convolutions and linear layers (weights ``[out, in, ...]``, bias ``[out]``) and
for GroupNorm whose groups keep their size, so that appended channels form whole new groups:
:func:`progvc.nn.blocks.group_norm` keeps groups of 4 channels from 16 to 128 channels, so
doubling a :class:`~progvc.nn.ConvEncoder`'s widths (e.g. ``encoder_width`` of the scalar
tokenizer) is exactly function-preserving (a test checks it).
"""

from __future__ import annotations

from torch import Tensor, nn

GROWABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.GroupNorm)


def grow_tensor(old: Tensor, init: Tensor, cross_zero: bool = True) -> Tensor | None:
    """``old`` copied into the leading slice of ``init`` (a wider tensor of the same kind), or ``None``.

    For weights of two or more dims (``[out, in, ...]``) the block ``[:out_old, in_old:]`` is set
    to zero, so that new input channels do not reach old outputs; 1-D tensors (bias, norm
    affine) copy their leading ``n`` entries. With ``cross_zero=False`` (per-channel parameters,
    such as one quantization step per scale and channel) nothing is zeroed: new channels keep
    their fresh values. ``None`` when ``init`` is not at least as large as ``old`` in every
    dimension (or the kernels differ).
    """
    if old.dim() != init.dim() or any(a > b for a, b in zip(old.shape, init.shape)):
        return None
    if old.dim() > 2 and old.shape[2:] != init.shape[2:]:
        return None
    out = init.detach().clone()
    lead = tuple(slice(0, n) for n in old.shape)
    out[lead] = old.to(out.dtype)
    if cross_zero and old.dim() >= 2:
        out[: old.shape[0], old.shape[1] :] = 0
    return out


def growable_keys(module: nn.Module) -> set[str]:
    """State-dict keys of ``module`` that :func:`grow_tensor` may widen (weights and biases of
    convolutions, linear layers and GroupNorms; never buffers such as CDF tables)."""
    keys = set()
    for name, sub in module.named_modules():
        if isinstance(sub, GROWABLE):
            prefix = f"{name}." if name else ""
            keys.update(prefix + p for p, _ in sub.named_parameters(recurse=False))
    return keys


def per_channel_keys(module: nn.Module) -> set[str]:
    """State-dict keys of parameters indexed by latent channel, grown with ``cross_zero=False``.

    A module names them in a ``per_channel_parameters`` attribute (the scalar tokenizer's
    ``log_step [K, C]``); every parameter of a CompressAI entropy bottleneck (``[C, ...]``) counts
    too. Growing the latent this way (more channels, ``latent_dim``) keeps what the old channels
    compute: the encoder's new outputs are fresh, the decoder's weights from them are zero.
    """
    from compressai.entropy_models import EntropyBottleneck

    keys = set()
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        names = getattr(sub, "per_channel_parameters", ())
        if isinstance(sub, EntropyBottleneck):
            names = [p for p, _ in sub.named_parameters()]
        keys.update(prefix + p for p in names)
    return keys
