"""The LightningModule that trains a tokenizer and a context model, in stages.

* ``stage="tokenizer"``: reconstruction (L1 + L2) from a random prefix of scales, the
  quantizer's commitment loss, LPIPS (when its backbone weights are given) and a PatchGAN
  hinge loss after ``adv_start`` steps. The context model is frozen and unused.
* ``stage="context"``: the tokenizer is frozen (eval mode, no gradients); the loss is the
  context model's cross-entropy in bits per pixel -- the rate the entropy coder will reach --
  optionally mixed with the cross-entropy of a frozen teacher's distributions (distillation:
  ``teacher``, ``distill_weight``).
* ``stage="joint"``: both losses, summed, in one step (the rate does not reach the tokenizer:
  tokens are discrete, so its only path would be the context model's inputs).
* ``stage="decoder"``: only the tokenizer's decoder learns, on what the codec's decoder
  receives: clips are coded frame after frame as the codec codes them (prediction loops, RDOQ
  tokens chosen with the frozen context model), and the decoder reconstructs every frame from a
  random prefix of levels with the tokenizer stage's pixel losses. Tokens, rate and the
  context model do not change, so the stage can follow the context stage.

The components are plain ``nn.Module`` attributes ``self.tokenizer`` and ``self.context_model``
(state-dict keys ``tokenizer.*``, ``context_model.*``); every checkpoint also records their
registry configs in ``checkpoint["progvc_model"]``, so :class:`progvc.codec.model.CodecModel`
rebuilds the codec from a checkpoint without this module.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from progvc.codec.prediction import ClipCode, check_mode, code_clip
from progvc.context_models import (
    CONTEXT_MODELS,
    ContextModel,
    cross_entropy_bits,
    interpolated_bits,
    scale_inputs,
    soft_cross_entropy_bits,
)
from progvc.errors import ConfigError, WeightsNotFoundError
from progvc.metrics import MSSSIM, PSNR, BitsPerPixel, HaarPSI
from progvc.nn.grow import grow_tensor, growable_keys, per_channel_keys
from progvc.tokenizers import TOKENIZERS, Tokenizer, TokenizerOutput
from progvc.training.losses import (
    PatchDiscriminator,
    adversarial_losses,
    lpips_loss,
    perceptual_model,
    reconstruction_losses,
)

log = logging.getLogger(__name__)

Stage = Literal["tokenizer", "context", "joint", "decoder"]
STAGES = ("tokenizer", "context", "joint", "decoder")


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at ``total`` steps.

    A callable object rather than a closure, so that ``LambdaLR.state_dict`` stores plain numbers
    and checkpoints load with ``weights_only=True``. ``total <= warmup`` keeps the rate constant.
    """

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def quality_metrics() -> MetricCollection:
    """PSNR, MS-SSIM and HaarPSI of reconstructions ``[B, 3, H, W]`` in ``[0, 1]`` (progvc.metrics)."""
    return MetricCollection({"psnr": PSNR(), "msssim": MSSSIM(), "haarpsi": HaarPSI()})


def load_matching_weights(
    module: nn.Module, path: str | Path, grow: bool = False
) -> tuple[list[str], list[str]]:
    """Load the ``tokenizer.*`` / ``context_model.*`` weights of ``path`` whose names and shapes match.

    ``path`` is a Lightning checkpoint (``state_dict``) or a progvc model file; it is read with
    ``weights_only=True``. With ``grow``, a convolution, linear or GroupNorm weight of
    ``module`` that is wider than the file's is loaded into its leading slice, function-preserving
    (:mod:`progvc.nn.grow`), and so is a per-channel parameter of a wider latent
    (:func:`~progvc.nn.grow.per_channel_keys`). Returns ``(loaded, skipped)`` key lists.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"init_from: no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"init_from: {path} holds no state dict")
    own = module.state_dict()
    per_channel = per_channel_keys(module) if grow else set()
    growable = growable_keys(module) | per_channel if grow else set()
    loaded, skipped = [], []
    matching = {}
    for key, value in state.items():
        if not key.startswith(("tokenizer.", "context_model.")):
            continue
        if key in own and isinstance(value, Tensor) and own[key].shape == value.shape:
            matching[key] = value
        elif (
            key in growable
            and isinstance(value, Tensor)
            and (grown := grow_tensor(value, own[key], cross_zero=key not in per_channel)) is not None
        ):
            matching[key] = grown
        else:
            skipped.append(key)
            continue
        loaded.append(key)
    if not loaded:
        raise ConfigError(f"init_from: no tokenizer or context-model weight of {path} fits this model")
    module.load_state_dict(matching, strict=False)
    return loaded, skipped


class ProgVCModule(LightningModule):
    """Trains a :class:`Tokenizer` and a :class:`ContextModel` on clips ``[B, T, 3, H, W]``.

    Args:
        tokenizer: the tokenizer (a recipe gives ``class_path`` / ``init_args``).
        context_model: the context model; must fit the tokenizer's :class:`TokenSpec`.
        stage: ``"tokenizer"``, ``"context"``, ``"joint"`` or ``"decoder"`` (see the module docstring).
        lr: peak learning rate of the tokenizer.
        context_lr: peak learning rate of the context model (``lr`` when ``None``).
        disc_lr: peak learning rate of the discriminator (``lr`` when ``None``).
        weight_decay: AdamW decay of the matrices and kernels (biases, norms and 1-D parameters get none).
        betas: AdamW betas.
        warmup_steps: linear learning-rate warm-up, in optimizer steps.
        min_lr_ratio: cosine decay floor, as a fraction of the peak, reached at the last step.
        l1_weight: weight of the L1 reconstruction loss.
        l2_weight: weight of the L2 (MSE) reconstruction loss.
        commit_weight: weight of the tokenizer's quantizer loss (``TokenizerOutput.loss``).
        perceptual_weight: weight of LPIPS (0 disables it).
        perceptual_weights_path: the LPIPS trunk's torchvision checkpoint, or a folder holding it;
            ``None`` looks in the torch hub cache. Missing -> LPIPS is skipped with a logged
            warning (nothing is downloaded).
        perceptual_net: LPIPS backbone, ``"alex"`` or ``"vgg"``.
        adv_weight: weight of the generator's hinge loss (0: no discriminator at all).
        adv_start: step at which the adversarial loss switches on (before it, the discriminator
            runs with zero weight, so every parameter has a gradient under DDP).
        disc_channels: width of the PatchGAN's first layer.
        disc_layers: stride-2 layers of the PatchGAN.
        full_prefix_prob: probability that a tokenizer step reconstructs from all scales; otherwise
            the prefix length is uniform in ``1..K`` (the same on every rank, from the step number).
        rate_weight: weight of the rate loss (bits per pixel) in the context and joint stages.
        teacher: a model file or checkpoint (:meth:`CodecModel.load`, a packaged model's name
            too) whose context model, frozen, teaches this one (distillation): its tokenizer must
            have this tokenizer's token spec. ``None``: no teacher.
        distill_weight: with a teacher, the rate loss is ``(1 - w)`` x the cross-entropy of the
            tokens plus ``w`` x the cross-entropy of the teacher's distributions over the same
            positions (both in bits per pixel; :func:`~progvc.context_models.soft_cross_entropy_bits`).
            A small context model learns more from the teacher's whole distributions than from
            the one token drawn from each. Validation logs the tokens' cross-entropy alone.
        tokenizer_rate_weight: weight ``lambda`` of the tokenizer's own rate estimate (bits per
            pixel, :attr:`TokenizerOutput.rate_bits`) in the tokenizer and joint stages:
            rate-distortion training of the quantizer (0, or a tokenizer without a rate model: off).
        tokenizer_rate: which rate ``tokenizer_rate_weight`` weighs: ``"own"``, the tokenizer's
            own estimate (a factorized density per scale), or ``"context"`` (joint stage, scalar
            tokenizers): the context model's code length of the tokenizer's continuous token
            values (:func:`~progvc.context_models.interpolated_bits`) for frames coded alone, the
            rate the coder will actually pay, so that the encoder learns latents the context
            model predicts well. The context model's weights get no gradient from this term
            (it learns from its cross-entropy, as in the context stage).
        prediction: temporal prediction of the codec this model is for, ``"intra"`` or ``"loops"``
            (:mod:`progvc.codec.prediction`): with loops, frame ``t >= 1`` of a clip is quantized
            against frame ``t - 1``'s reconstructions when the rate is computed (the tokenizer's
            reconstruction loss codes frames alone).
        rdoq: RDOQ rate weight (squared steps per bit) of the tokens the context model is trained
            and validated on: with ``rdoq > 0`` every scale's tokens are chosen for distortion +
            ``rdoq`` x bits under the context model being trained (its current weights, no
            gradient; :func:`~progvc.codec.prediction.rd_chooser`), as the codec's encoder chooses
            them, instead of the quantizer's own (dead-zone) tokens. ``None``: the tokenizer's
            own ``rdoq`` setting (the codec's default) in the decoder stage, which learns from
            what the codec's decoder receives; off otherwise (a context model trained on RDOQ
            tokens coded the real streams with more bits: docs/model_card.md); 0: off.
        rdoq_frozen: choose the RDOQ tokens with a frozen copy of the context model as loaded by
            ``init_from`` instead of the model being trained. A model that chooses its own
            training tokens is rewarded for believing in zeros (RDOQ then picks more of them:
            fewer bits, but the distortion they add is not in its loss); a frozen chooser gives
            it fixed targets of the codec's kind.
        init_from: checkpoint (Lightning or progvc model file) whose matching ``tokenizer.*`` and
            ``context_model.*`` weights initialise this module, e.g. the tokenizer stage's result;
            or a list of them, loaded in order (a later file's weights replace an earlier one's),
            e.g. ``[a model file, a newer tokenizer checkpoint]`` to fine-tune its context model.
        init_grow: let ``init_from`` load narrower weights into wider layers, function-preserving
            (:mod:`progvc.nn.grow`): e.g. a trained tokenizer into one with a wider
            ``encoder_width``, which then starts from the trained model's quality.
        compile: ``torch.compile`` the tokenizer's encoder and decoder and each block of the
            context model when fitting starts (their ``forward`` is compiled in place with
            ``nn.Module.compile``, so state-dict keys and checkpoints do not change). Off by
            default: compiling takes a minute and pays off on a GPU, rarely on a CPU.
        compile_mode: ``mode`` passed to ``torch.compile`` (``None``, ``"default"``,
            ``"reduce-overhead"``, ``"max-autotune"``).
        channels_last: on CUDA, keep the convolutions' weights and inputs in channels-last
            memory layout (faster cuDNN kernels, above all under bf16); ignored on a CPU.

    On CUDA the optimizer is the fused AdamW (one kernel for every parameter) when every trained
    parameter lives on the GPU; elsewhere the default implementation.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        context_model: ContextModel,
        stage: Stage = "joint",
        lr: float = 2e-4,
        context_lr: float | None = None,
        disc_lr: float | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        l1_weight: float = 1.0,
        l2_weight: float = 1.0,
        commit_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        perceptual_weights_path: str | None = None,
        perceptual_net: str = "alex",
        adv_weight: float = 0.1,
        adv_start: int = 2000,
        disc_channels: int = 64,
        disc_layers: int = 3,
        full_prefix_prob: float = 0.5,
        rate_weight: float = 1.0,
        teacher: str | None = None,
        distill_weight: float = 0.5,
        tokenizer_rate_weight: float = 0.0,
        tokenizer_rate: str = "own",
        prediction: str = "intra",
        rdoq: float | None = None,
        rdoq_frozen: bool = False,
        init_from: str | list[str] | None = None,
        init_grow: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        if not 0.0 <= full_prefix_prob <= 1.0:
            raise ConfigError(f"full_prefix_prob must lie in [0, 1], got {full_prefix_prob}")
        self.save_hyperparameters(ignore=["tokenizer", "context_model"])
        context_model.check_compatible(tokenizer.spec)
        self.tokenizer = tokenizer
        self.context_model = context_model
        self.prediction = check_mode(prediction)
        self.model_config()  # fail now, not at the first checkpoint, if a component is not registered
        self.stage = stage
        if rdoq is None:
            rdoq = float(getattr(tokenizer, "rdoq", 0.0)) if stage == "decoder" else 0.0
        if not 0.0 <= rdoq <= 100.0:
            raise ConfigError(f"rdoq must lie in [0, 100] (squared steps per bit; 0: off), got {rdoq}")
        self.rdoq = rdoq
        self.trains_tokenizer = stage in ("tokenizer", "joint")
        self.trains_context = stage in ("context", "joint")
        if tokenizer_rate not in ("own", "context"):
            raise ConfigError(f"tokenizer_rate must be 'own' or 'context', got {tokenizer_rate!r}")
        if tokenizer_rate == "context" and stage != "joint":
            raise ConfigError(
                f"tokenizer_rate 'context' needs the joint stage (both are trained), got stage {stage!r}"
            )
        self.trains_decoder = stage == "decoder"
        if self.trains_decoder and not isinstance(getattr(tokenizer, "decoder", None), nn.Module):
            raise ConfigError(f"stage 'decoder': tokenizer {type(tokenizer).__name__} has no decoder network")
        pixels = self.trains_tokenizer or self.trains_decoder  # pixel losses are trained
        self.discriminator = (
            PatchDiscriminator(disc_channels, disc_layers) if pixels and adv_weight > 0 else None
        )
        # not a submodule: frozen, and kept out of checkpoints
        self._lpips = [
            perceptual_model(perceptual_weights_path, perceptual_net)
            if pixels and perceptual_weight > 0
            else None
        ]
        self.tokenizer.requires_grad_(self.trains_tokenizer)
        if self.trains_decoder:
            self.tokenizer.decoder.requires_grad_(True)
        self.context_model.requires_grad_(self.trains_context)
        self.val_metrics = quality_metrics()
        self.val_bpp = BitsPerPixel()
        self.val_bits_per_token = MeanMetric()
        self._channels_last = False  # switched on by setup("fit"), on CUDA only
        self._compiled = False
        for source in [init_from] if isinstance(init_from, str) else init_from or []:
            loaded, skipped = load_matching_weights(self, source, grow=init_grow)
            log.info("init_from %s: loaded %d tensors, skipped %d", source, len(loaded), len(skipped))
        # the RDOQ chooser (not a submodule: frozen, and kept out of checkpoints)
        self._chooser = [copy.deepcopy(self.context_model).requires_grad_(False) if rdoq_frozen else None]
        # the distillation teacher (not a submodule either)
        self._teacher = [self._load_teacher(teacher, distill_weight)]

    # ----------------------------------------------------------------- helpers
    def _load_teacher(self, teacher: str | None, weight: float) -> ContextModel | None:
        """The frozen context model of ``teacher`` (see the class docstring), or ``None``."""
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"distill_weight must lie in [0, 1], got {weight}")
        if teacher is None:
            return None
        if not self.trains_context:
            raise ConfigError(f"teacher: stage {self.stage!r} does not train the context model")
        from progvc.codec.model import CodecModel

        model = CodecModel.load(teacher)
        if model.tokenizer.spec != self.tokenizer.spec:
            raise ConfigError(
                f"teacher {teacher}: its tokens ({model.tokenizer.spec}) are not this tokenizer's "
                f"({self.tokenizer.spec})"
            )
        return model.context_model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ProgVCModule:
        """Like ``nn.Module.train``, but frozen components stay in eval mode (no codebook updates, no dropout)."""
        super().train(mode)
        if not self.trains_tokenizer:
            self.tokenizer.eval()
        if self.trains_decoder:
            self.tokenizer.decoder.train(mode)
        if not self.trains_context:
            self.context_model.eval()
        return self

    def compiled_modules(self) -> list[nn.Module]:
        """The submodules that ``compile=True`` compiles: the tokenizer's ``encoder`` / ``decoder`` and the context model's ``blocks``.

        Components that lack these attributes (baselines, plug-ins) are left as they are.
        """
        found = [getattr(self.tokenizer, name, None) for name in ("encoder", "decoder")]
        found += list(getattr(self.context_model, "blocks", None) or [])
        return [m for m in found if isinstance(m, nn.Module)]

    def compile_components(self) -> int:
        """``torch.compile`` the :meth:`compiled_modules` in place (once); returns how many were compiled.

        ``nn.Module.compile`` compiles a module's ``forward`` without wrapping the module, so
        parameter names, ``state_dict`` keys and checkpoints stay those of the uncompiled model.
        """
        if self._compiled:
            return 0
        modules = self.compiled_modules()
        for module in modules:
            module.compile(mode=self.hparams.compile_mode)
        self._compiled = True
        return len(modules)

    def setup(self, stage: str) -> None:
        """Before fitting (and before DDP wraps the model): channels-last convolutions on CUDA, ``torch.compile`` when asked for."""
        if stage != "fit":
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        if self.hparams.channels_last and device.type == "cuda":
            self._channels_last = True
            for module in (self.tokenizer, self.discriminator):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            log.info("torch.compile: %d modules", self.compile_components())

    def _layout(self, frames: Tensor) -> Tensor:
        """Frames ``[N, 3, H, W]`` in the convolutions' memory layout (channels-last on CUDA when enabled)."""
        return frames.contiguous(memory_format=torch.channels_last) if self._channels_last else frames

    @staticmethod
    def clips(batch: Tensor) -> Tensor:
        """A batch as float clips ``[B, T, 3, H, W]`` in ``[0, 1]`` (accepts uint8, and frames ``[B, 3, H, W]``)."""
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        if batch.dim() == 4:
            batch = batch[:, None]
        if batch.dim() != 5 or batch.shape[2] != 3:
            raise ConfigError(f"expected clips [B, T, 3, H, W], got a batch of shape {list(batch.shape)}")
        return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()

    def _prefix(self) -> int:
        """Number of scales to reconstruct from this step: all with ``full_prefix_prob``, else uniform in ``1..K``.

        Drawn from a generator seeded by the step number, so every DDP rank picks the same prefix.
        """
        k = self.tokenizer.spec.num_scales
        gen = torch.Generator().manual_seed(1_000_003 * (self.global_step + 1))
        if torch.rand((), generator=gen) < self.hparams.full_prefix_prob:
            return k
        return int(torch.randint(1, k + 1, (), generator=gen))

    def rate(
        self, code: ClipCode, size: tuple[int, int], distill: bool = False
    ) -> tuple[Tensor, int, Tensor | None]:
        """Cross-entropy in bits of every token of a coded batch of clips, the number of token
        positions, and (``distill`` with a teacher) the cross-entropy in bits of the teacher's
        distributions at the same positions (``None`` otherwise).

        ``code`` holds ``T`` frames of ``B`` clips (:func:`~progvc.codec.prediction.code_clip`).
        Frame 0 of a clip is scored without a previous frame, frames ``t >= 1`` with frame
        ``t - 1``'s reconstructions at each level (the layered dependency of
        :func:`~progvc.context_models.scale_inputs`); two batched calls in all (and two of the teacher).
        """
        sizes = self.tokenizer.spec.scale_sizes(*size)
        time = len(code.tokens)
        batch = code.tokens[0][0].shape[0]
        own = [[s.detach() for s in frame] for frame in code.own]
        calls = [(*scale_inputs(own[0], sizes), code.tokens[0])]  # (cur, prev, tokens)
        if time > 1:
            cat = lambda frames: [torch.cat(level) for level in zip(*frames)]  # noqa: E731
            recons = [[r.detach() for r in frame] for frame in code.recons]
            calls.append((*scale_inputs(cat(own[1:]), sizes, cat(recons[:-1])), cat(code.tokens[1:])))
        teacher = self._teacher[0] if distill else None
        bits, taught = [], []
        for cur, prev, tokens in calls:
            logits = self.context_model(cur, prev)
            bits.append(cross_entropy_bits(logits, tokens))
            if teacher is not None:
                with torch.no_grad():
                    targets = teacher.to(logits[0].device)(cur, prev)
                taught.append(soft_cross_entropy_bits(logits, targets))
        positions = batch * time * sum(h * w for h, w in sizes)
        return sum(bits), positions, sum(taught) if taught else None

    def context_rate_of_values(self, out: TokenizerOutput, size: tuple[int, int]) -> Tensor:
        """Bits of the tokenizer's continuous token values (frames coded alone) under the context model,
        differentiable in the values only (:func:`~progvc.context_models.interpolated_bits`)."""
        sizes = self.tokenizer.spec.scale_sizes(*size)
        with torch.no_grad():
            cur, _ = scale_inputs([f.detach() for f in out.f_hats], sizes)
            logits = self.context_model(cur, None)
        return interpolated_bits(logits, out.values)

    def code(self, clips: Tensor, update: bool = False) -> ClipCode:
        """Quantize clips ``[B, T, 3, H, W]`` frame after frame with this model's prediction and
        RDOQ setting (no gradient; the chooser, this context model or its frozen copy, runs in eval mode)."""
        chooser = self._chooser[0] or self.context_model
        chooser_was_training = chooser.training
        with torch.no_grad():
            frames = self._layout(clips.flatten(0, 1))
            latents = self.tokenizer.encode_latent(frames).unflatten(0, clips.shape[:2])
            chooser.to(latents.device).train(False)
            try:
                return code_clip(
                    self.tokenizer,
                    latents,
                    self.prediction,
                    update=update,
                    context_model=chooser,
                    rdoq=self.rdoq,
                )
            finally:
                chooser.train(chooser_was_training)

    # ----------------------------------------------------------------- training
    def _pixel_losses(self, recon: Tensor, frames: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted L1 + L2 (+ LPIPS, + the generator's hinge loss after ``adv_start``) of ``recon``
        against ``frames`` ``[N, 3, H, W]``, and the parts for logging."""
        hp = self.hparams
        parts = reconstruction_losses(recon, frames)
        loss = hp.l1_weight * parts["l1"] + hp.l2_weight * parts["l2"]
        lpips_net = self._lpips[0]
        if lpips_net is not None:
            parts["lpips"] = lpips_loss(lpips_net.to(frames.device), recon, frames)
            loss = loss + hp.perceptual_weight * parts["lpips"]
        if self.discriminator is not None and self.global_step >= hp.adv_start:
            adv = adversarial_losses(self.discriminator, frames, recon)
            loss = loss + hp.adv_weight * adv["g_adv"] + adv["d_hinge"]
            parts.update(adv)
        elif self.discriminator is not None:
            # before the warm-up ends the discriminator costs nothing, but its parameters stay in
            # the graph (with zero gradient) so that DDP finds no unused parameters
            loss = loss + sum(p.sum() for p in self.discriminator.parameters()) * 0.0
        return loss, parts

    def _tokenizer_losses(self, frames: Tensor) -> tuple[Tensor, dict[str, Tensor], list[Tensor]]:
        hp = self.hparams
        out = self.tokenizer(frames, prefix=self._prefix())
        loss, parts = self._pixel_losses(out.recon, frames)
        loss = loss + hp.commit_weight * out.loss
        parts["commit"] = out.loss
        pixels = frames[:, 0].numel()
        if out.rate_bits is not None:
            parts["tok_bpp"] = out.rate_bits / pixels
        if hp.tokenizer_rate == "context":
            if out.values is None or out.f_hats is None:
                raise ConfigError(
                    f"tokenizer_rate 'context': tokenizer {type(self.tokenizer).__name__} has no continuous "
                    "token values (a scalar tokenizer such as mssq has)"
                )
            parts["ctx_soft_bpp"] = self.context_rate_of_values(out, tuple(frames.shape[-2:])) / pixels
            if hp.tokenizer_rate_weight:
                loss = loss + hp.tokenizer_rate_weight * parts["ctx_soft_bpp"]
            if out.rate_bits is not None:  # its density's parameters stay in the graph (DDP), unweighted
                loss = loss + 0.0 * out.rate_bits
        elif out.rate_bits is not None and hp.tokenizer_rate_weight:
            loss = loss + hp.tokenizer_rate_weight * parts["tok_bpp"]
        parts["prefix"] = torch.tensor(float(out.prefix))
        parts.update({f"tok_{k}": v for k, v in out.stats.items()})
        return loss, parts, out.tokens

    def _decoder_losses(self, clips: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Pixel losses of the decoder on the codec's own reconstructions of ``clips [B, T, 3, H, W]``
        (prediction loops and RDOQ, :meth:`code`) at a random prefix of levels."""
        prefix = self._prefix()
        code = self.code(clips)
        latents = torch.stack([r[prefix - 1] for r in code.recons], 1).flatten(0, 1)  # clip-major
        frames = self._layout(clips.flatten(0, 1))
        recon = self.tokenizer.decode_latent(latents, tuple(clips.shape[-2:]))
        loss, parts = self._pixel_losses(recon, frames)
        parts["prefix"] = torch.tensor(float(prefix))
        return loss, parts

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        x = self.clips(batch)
        b, t, _, h, w = x.shape
        frames = self._layout(x.flatten(0, 1))
        loss = frames.new_zeros(())
        logs: dict[str, Tensor] = {}
        if self.trains_tokenizer:
            loss_tok, parts, _ = self._tokenizer_losses(frames)
            loss = loss + loss_tok
            logs.update(parts)
        if self.trains_decoder:
            loss_dec, parts = self._decoder_losses(x)
            loss = loss + loss_dec
            logs.update(parts)
        if self.trains_context:
            bits, positions, taught = self.rate(self.code(x), (h, w), distill=True)
            bpp = bits / (b * t * h * w)
            logs.update({"bpp": bpp, "bits_per_token": bits / positions})
            if taught is not None:
                logs["teacher_bpp"] = taught / (b * t * h * w)
                w_t = self.hparams.distill_weight
                bpp = (1 - w_t) * bpp + w_t * logs["teacher_bpp"]
            loss = loss + self.hparams.rate_weight * bpp
        self.log_dict({f"train/{k}": v.detach().float() for k, v in logs.items()}, prog_bar=False)
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    # ----------------------------------------------------------------- evaluation
    def _evaluate(self, batch: Tensor, prefix: str) -> None:
        x = self.clips(batch)
        b, t, _, h, w = x.shape
        frames = x.flatten(0, 1)
        code = self.code(x)
        latents = torch.stack([r[-1] for r in code.recons], 1).flatten(0, 1)  # clip-major, as frames
        recon = self.tokenizer.decode_latent(latents, (h, w)).clamp(0, 1)
        self.val_metrics.update(recon, frames)
        for name, metric in self.val_metrics.items():
            self.log(f"{prefix}/{name}", metric, prog_bar=name == "psnr")
        if self.trains_context:
            bits, positions, _ = self.rate(code, (h, w))
            self.val_bpp.update(bits, b * t * h * w)
            self.val_bits_per_token.update(bits / positions, weight=positions)
            self.log(f"{prefix}/bpp", self.val_bpp, prog_bar=True)
            self.log(f"{prefix}/bits_per_token", self.val_bits_per_token)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """One AdamW with a parameter group per trained part (own learning rate); warm-up + cosine schedule."""
        hp = self.hparams
        parts: list[tuple[nn.Module, float, float]] = []
        if self.trains_tokenizer:
            parts.append((self.tokenizer, hp.lr, hp.weight_decay))
        if self.trains_decoder:
            parts.append((self.tokenizer.decoder, hp.lr, hp.weight_decay))
        if self.trains_context:
            parts.append((self.context_model, hp.context_lr or hp.lr, hp.weight_decay))
        if self.discriminator is not None:
            parts.append((self.discriminator, hp.disc_lr or hp.lr, 0.0))
        groups = []
        for module, lr, wd in parts:
            params = [p for p in module.parameters() if p.requires_grad]
            decay = [p for p in params if p.dim() >= 2]
            rest = [p for p in params if p.dim() < 2]
            groups += [{"params": g, "lr": lr, "weight_decay": d} for g, d in ((decay, wd), (rest, 0.0)) if g]
        if not groups:
            raise ConfigError(f"stage {self.stage!r}: the components have no trainable parameters")
        # fused AdamW (one kernel for all parameters) needs every parameter on the GPU
        fused = {"fused": True} if all(p.is_cuda for g in groups for p in g["params"]) else {}
        opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), **fused)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        total = int(total) if math.isfinite(total) else 0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(hp.warmup_steps, total, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip each parameter group on its own, so that the discriminator's gradients do not scale the tokenizer's."""
        if not gradient_clip_val:
            return
        for group in optimizer.param_groups:
            if gradient_clip_algorithm == "value":
                nn.utils.clip_grad_value_(group["params"], gradient_clip_val)
            else:
                nn.utils.clip_grad_norm_(group["params"], gradient_clip_val)

    # ----------------------------------------------------------------- checkpoints
    def model_config(self) -> dict[str, Any]:
        """``{"tokenizer": cfg, "context_model": cfg[, "prediction": mode]}``: what :class:`CodecModel` is built from."""
        config = {
            "tokenizer": TOKENIZERS.config_of(self.tokenizer),
            "context_model": CONTEXT_MODELS.config_of(self.context_model),
        }
        if self.prediction != "intra":
            config["prediction"] = self.prediction
        return config

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record :meth:`model_config` as ``checkpoint["progvc_model"]``, so that ``CodecModel.load(ckpt)`` rebuilds the codec."""
        checkpoint["progvc_model"] = self.model_config()
