"""The codec: frames <-> progressive bitstream, one GOP at a time, one frame at a time.

Coding path (identical in the encoder and the decoder, so that both compute bit-identical
tables): for every GOP, for every frame ``t`` of the GOP, for every scale ``k``:

* ``cur_k, prev_k`` come from the GOP's :class:`~progvc.codec.prediction.PredictionLoop`:
  frame ``t``'s own running latent after scales ``< k`` and frame ``t - 1``'s reconstruction at
  level ``k`` (``None`` for the GOP's first frame), both area-downsampled to scale ``k``;
* ``logits = context_model.step(state_t, k, cur_k, prev_k)`` on a float64 copy of the context
  model, with latents from a float64 copy of the tokenizer (so that thread counts and batch
  shapes change the logits by ~1e-16 at most, far below the table resolution);
* ``tables = logits_to_tables(logits)`` (:mod:`progvc.coders.tables`) and the frame's scale-``k`` symbols go into (or come out
  of) the GOP's scale-``k`` segment, one chunk per frame.

With global motion (the header's ``motion``, :mod:`progvc.codec.motion`), the chunk of segment
``motion_scale`` of every frame after the first of a GOP starts with two symbols, the frame's
translation, which the loop applies to its fine levels' references before that scale is predicted.

With skip flags (the header's ``skip``, :mod:`progvc.codec.skip`), every segment opens with a mode
and, in a segment whose mode says so, every frame after the first of a GOP opens its chunk (after
any motion) with a flag; a skipped scale carries no tokens, adds nothing to the loop, and its
context-model step runs only if a later scale of the frame needs logits.

Segment ``k`` holds the frames' chunks in order, so the encoder and the decoder keep one coder
per scale open and work frame-major: the decoder finishes a frame (all its scales, received or
synthesized) before it starts the next, and its memory is bounded by a frame and the ``K``
reference latents of the prediction loops, not by the GOP (see :mod:`progvc.codec.prediction`
for the loops, :mod:`progvc.codec.synthesis` for the scales a stream does not carry).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from progvc.codec import bitstream
from progvc.codec.bitstream import Header, StreamInfo
from progvc.codec.limits import DecodeLimits
from progvc.codec.model import CodecModel, packaged_model
from progvc.codec.motion import (
    Motion,
    check_motion_mode,
    motion_bits,
    motion_from_symbols,
    motion_symbols,
    motion_tables,
)
from progvc.codec.prediction import ClipCode, PredictionLoop, code_clip
from progvc.codec.refine import LatentRefiner
from progvc.codec.skip import MODE_TABLES, SKIPPED, Flag, SkipFlags, rd_skip
from progvc.codec.synthesis import SynthesisSettings, gop_generator, pick_tokens
from progvc.coders import CODERS
from progvc.context_models.common import RepeatingSteps
from progvc.errors import BitstreamError, ConfigError, ModelMismatchError

#: the tokenizer decoder's arithmetic (:class:`Codec`'s ``pixels``): name -> autocast dtype (``None``: off)
PIXEL_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}

#: a video for :meth:`Codec.compress`: a path, uint8 ``[T, H, W, 3]``, or an iterable of ``[H, W, 3]`` frames.
VideoInput = str | Path | np.ndarray | Iterable[np.ndarray]


def frames_to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` in ``[0, 1]``."""
    return (
        torch.from_numpy(np.array(frames, dtype=np.uint8, order="C"))
        .to(device)
        .permute(0, 3, 1, 2)
        .float()
        .div_(255)
    )


def tensor_to_frames(x: Tensor) -> np.ndarray:
    """float ``[T, 3, H, W]`` in ``[0, 1]`` -> uint8 ``[T, H, W, 3]`` (clamped, rounded)."""
    return x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Codec:
    """Compress, decompress, truncate and inspect progressive streams with one :class:`CodecModel`.

    Args:
        model: the model, moved to ``device`` and put in eval mode; the codec works on a snapshot
            of its weights taken here (its fingerprint and float64 copies).
        device: where the networks run (``"cpu"``, ``"cuda"``); tables are always built on the CPU.
        batch_size: frames per tokenizer call (encode / decode), which bounds activation memory.
        progress: show tqdm progress bars on stderr (``None``: only when stderr is a terminal).
        limits: what a stream may ask of the decoder (frame area, frames, synthesized work);
            streams over them raise :class:`~progvc.errors.LimitExceededError` before any work.
        refine_steps: the encoder's latent refinement, in gradient steps per frame (0: off; see
            :mod:`progvc.codec.refine`): better quality per bit for about ``refine_steps`` decoder
            passes per frame of encoding time. Decoding is unchanged.
        refine_lambda: the refinement's rate weight, in MSE per bit per pixel.
        rdoq: rate-distortion optimised quantization: each token is chosen for
            ``(y - q)**2 + rdoq * bits(q)`` (squared quantization steps per bit) with the context
            model's own tables, instead of the tokenizer's dead zone (0: off; ``None``: the
            tokenizer's own ``rdoq`` setting, if it has one). Decoding is unchanged.
        motion: the prediction loops' global motion, ``"global"`` or ``"none"`` (:mod:`progvc.codec.motion`).
        skip: skip flags for predicted frames' scales (:mod:`progvc.codec.skip`); only models with
            prediction loops and a zero token use them.
        pixels: the arithmetic of the tokenizer's decoder, latents -> pixels (:data:`PIXEL_DTYPES`):
            ``"float32"`` (default) or ``"bfloat16"`` (autocast; on a CPU with native bfloat16
            products that step measured 1.7-1.8x faster, the pictures within 0.005 dB; see
            docs/codec.md). The tokens, and so the stream, are the same either way.
    """

    def __init__(
        self,
        model: CodecModel,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        progress: bool | None = None,
        limits: DecodeLimits | None = None,
        refine_steps: int = 0,
        refine_lambda: float = 0.03,
        rdoq: float | None = None,
        motion: str = "global",
        skip: bool = True,
        pixels: str = "float32",
    ) -> None:
        if pixels not in PIXEL_DTYPES:
            raise ConfigError(f"pixels must be one of {', '.join(PIXEL_DTYPES)}, got {pixels!r}")
        self.pixels = pixels
        self.motion = check_motion_mode(motion) if model.prediction == "loops" else "none"
        if not isinstance(skip, bool):
            raise ConfigError(f"skip must be True or False, got {skip!r}")
        self.skip = skip and model.prediction == "loops" and model.tokenizer.zero_token is not None
        if rdoq is None:
            rdoq = getattr(model.tokenizer, "rdoq", 0.0)
        if not (isinstance(rdoq, (int, float)) and 0.0 <= rdoq <= 100.0):
            raise ConfigError(f"rdoq must be a number in [0, 100] (0: off), got {rdoq!r}")
        self.rdoq = float(rdoq)
        if limits is not None and not isinstance(limits, DecodeLimits):
            raise ConfigError(f"limits must be a DecodeLimits, got {type(limits).__name__}")
        self.limits = limits or DecodeLimits()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.spec = model.tokenizer.spec
        self.batch_size = batch_size
        self.progress = progress
        self.fingerprint = model.fingerprint()
        self.refiner = LatentRefiner(model.tokenizer, refine_steps, refine_lambda)
        self._tokenizer64 = copy.deepcopy(model.tokenizer).double().eval()
        self._context64 = copy.deepcopy(model.context_model).double().eval()

    # ------------------------------------------------------------------ public API

    def compress(
        self,
        video: VideoInput,
        layers: int | None = None,
        target_bpp: float | None = None,
        gop: int = 32,
        fps: float | Fraction | None = None,
        max_frames: int | None = None,
        synthesis: SynthesisSettings | None = None,
    ) -> bytes:
        """Encode a video into a progressive stream.

        Args:
            video: a path (anything :func:`progvc.io.iter_video` reads, streamed), a uint8
                ``[T, H, W, 3]`` array, or an iterable of uint8 ``[H, W, 3]`` frames.
            layers: scales to send per GOP (all when ``None``); same bytes as
                ``truncate(compress(video), layers)``.
            target_bpp: instead of ``layers``: per GOP, the most scales whose bits, header
                included and unused budget carried forward, stay within ``target_bpp`` bits per pixel.
            gop: frames per group of pictures (1 .. 1024).
            fps: frame rate of an array or iterable input (default 25); a path brings its own.
            max_frames: code at most this many frames.
            synthesis: decoder-side synthesis defaults stored in the header.
        """
        num_scales = self.spec.num_scales
        if layers is not None and target_bpp is not None:
            raise ConfigError("give layers or target_bpp, not both")
        if layers is not None and (not isinstance(layers, int) or layers < 0):
            raise ConfigError(f"layers must be an integer >= 0, got {layers!r}")
        if target_bpp is not None and not target_bpp > 0:
            raise ConfigError(f"target_bpp must be > 0, got {target_bpp}")
        if not (isinstance(gop, int) and 1 <= gop <= bitstream.MAX_GOP):
            raise ConfigError(f"gop must be an integer in 1..{bitstream.MAX_GOP}, got {gop!r}")
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 0):
            raise ConfigError(f"max_frames must be an integer >= 0, got {max_frames!r}")
        synthesis = synthesis or SynthesisSettings()
        if synthesis.top_k > self.spec.alphabet:
            raise ConfigError(f"top_k {synthesis.top_k} exceeds the alphabet size {self.spec.alphabet}")
        frames, rate, total = self._open_video(video, fps, max_frames)
        send = num_scales if layers is None else min(layers, num_scales)

        coder = self.model.coder
        blobs: list[bytes] = []
        gop_layers: list[int] = []
        spent_bits = pixels = num_frames = 0
        size: tuple[int, int] | None = None
        with self._bar(total, "compress") as bar:
            for index, chunk in enumerate(_chunks(frames, gop)):
                if size is None:
                    size = chunk.shape[1:3]
                    probe = self._header(size, rate, bitstream.MAX_FRAMES, gop, coder, synthesis, num_scales)
                    spent_bits = 8 * len(probe.to_bytes())  # the header is charged to the first GOP
                elif chunk.shape[1:3] != size:
                    raise ConfigError(f"frame size changes from {size} to {chunk.shape[1:3]}")
                segments = self._encode_gop(index, chunk, send if target_bpp is None else num_scales)
                if target_bpp is not None:
                    pixels += chunk.shape[0] * size[0] * size[1]
                    send = _fit_layers(segments, index, target_bpp * pixels - spent_bits)
                blob = bitstream.encode_gop(index, segments[:send])
                spent_bits += 8 * len(blob)
                blobs.append(blob)
                gop_layers.append(send)
                num_frames += chunk.shape[0]
                bar.update(chunk.shape[0])
        if size is None:
            raise ConfigError("the video has no frames")
        header = self._header(size, rate, num_frames, gop, coder, synthesis, max(gop_layers))
        return header.to_bytes() + b"".join(blobs)

    def iter_decompress(
        self,
        data: bytes,
        layers: int | None = None,
        synthesis: str | None = None,
        seed: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Decode a stream, yielding uint8 ``[t, H, W, 3]`` arrays of at most ``batch_size`` frames.

        Memory is bounded by ``batch_size`` frames and the prediction loops' references, not by
        the GOP: frames are decoded one after the other.

        Args:
            data: the stream.
            layers: use at most this many received scales per GOP (all when ``None``).
            synthesis: ``"sample"``, ``"argmax"`` or ``"none"`` for the scales not used;
                the header's default when ``None``.
            seed: the sampling seed; the header's when ``None``.
        """
        stream, settings = self._open_stream(data, layers, synthesis, seed)
        return self._decode_gops(stream, layers, settings)

    def decompress(
        self,
        data: bytes,
        layers: int | None = None,
        synthesis: str | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Decode a whole stream to uint8 ``[T, H, W, 3]`` (see :meth:`iter_decompress`)."""
        return np.concatenate(list(self.iter_decompress(data, layers, synthesis, seed)))

    def truncate(self, data: bytes, layers: int) -> bytes:
        """Keep the first ``layers`` scales of every GOP (no model needed: :func:`bitstream.truncate`)."""
        return bitstream.truncate(data, layers)

    def inspect(self, data: bytes) -> StreamInfo:
        """Validate and summarize a stream (no model needed: :func:`bitstream.inspect`)."""
        return bitstream.inspect(data)

    def reconstruct(self, video: np.ndarray, layers: int | None = None, gop: int = 32) -> np.ndarray:
        """What the decoder shows for ``layers`` scales with synthesis ``"none"``, without entropy coding.

        uint8 ``[T, H, W, 3]`` -> uint8 ``[T, H, W, 3]``: the encoder's tokens, GOP by GOP, replayed
        through the decoder's prediction loop, so it equals
        ``decompress(compress(video, layers=layers, gop=gop), synthesis="none")``.
        """
        if self.rdoq > 0 or self.motion != "none":  # tokens or motion depend on the coded bits: code them
            return self.decompress(self.compress(video, layers=layers, gop=gop), synthesis="none")
        keep = self.spec.num_scales if layers is None else min(layers, self.spec.num_scales)
        size = video.shape[1:3]
        latents = []
        for chunk in _chunks(iter(video), gop):
            tokens = self._code_frames(chunk).tokens
            loop = PredictionLoop(self._tokenizer64, self.model.prediction, size)
            with torch.inference_mode():
                for frame_tokens in tokens:
                    loop.start_frame()
                    for tk in frame_tokens[:keep]:
                        loop.add_scale(tk.to(self.device))
                    latents.append(loop.latent())
        # decoded in the decoder's batches (across GOPs), so that the pixels match bit for bit
        return self._pixels(torch.cat(latents), size)

    # ------------------------------------------------------------------ encoder

    def _open_video(
        self, video: VideoInput, fps: float | Fraction | None, max_frames: int | None
    ) -> tuple[Iterator[np.ndarray], Fraction, int | None]:
        """Frames (as an iterator), frame rate and, when known, the frame count of ``video``."""
        from progvc.io import fps_fraction, iter_video

        if isinstance(video, (str, Path)):
            info, frames = iter_video(video, max_frames=max_frames)
            total = info.num_frames if max_frames is None else min(max_frames, info.num_frames or max_frames)
            return frames, fps_fraction(fps or info.fps), total
        if isinstance(video, np.ndarray):
            if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
                raise ConfigError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {list(video.shape)}")
            video = video[:max_frames]
            return iter(video), fps_fraction(fps or 25.0), len(video)
        frames = iter(video)
        if max_frames is not None:
            frames = (f for _, f in zip(range(max_frames), frames))
        return frames, fps_fraction(fps or 25.0), None

    def _header(
        self,
        size: tuple[int, int],
        rate: Fraction,
        num_frames: int,
        gop: int,
        coder: str,
        synthesis: SynthesisSettings,
        layers: int,
    ) -> Header:
        header = Header(
            fingerprint=self.fingerprint,
            width=int(size[1]),
            height=int(size[0]),
            fps=rate,
            num_frames=num_frames,
            gop_size=gop,
            scales=self.spec.scales,
            coder=coder,
            synthesis=synthesis,
            layers=layers,
            motion=self.motion,
            skip=self.skip,
        )
        header.check(ConfigError)
        return header

    def _latents(self, frames: np.ndarray) -> Tensor:
        """The encoder transform of uint8 ``[t, H, W, 3]`` frames, in batches of ``batch_size``: ``[t, C, h, w]``."""
        with torch.inference_mode():
            return torch.cat(
                [
                    self.model.tokenizer.encode_latent(frames_to_tensor(frames[i : i + self.batch_size], self.device))
                    for i in range(0, len(frames), self.batch_size)
                ]
            )

    def _code_frames(
        self, frames: np.ndarray, motion: str | None = None, latents: Tensor | None = None
    ) -> ClipCode:
        """Tokens and reconstructions of one GOP of uint8 ``[t, H, W, 3]`` frames, with the model's prediction.

        From the frames' encoder ``latents`` (:meth:`_latents` when ``None``), the quantizer runs
        frame after frame (each frame is coded against the previous one's reconstructions), with
        global motion ``motion`` (the codec's when ``None``).
        """
        latents = self._latents(frames) if latents is None else latents
        with torch.inference_mode():
            refine = self.refiner.hook(lambda t: frames_to_tensor(frames[t : t + 1], self.device))
            motion = self.motion if motion is None else motion
            return code_clip(self.model.tokenizer, latents[None], self.model.prediction, refine=refine, motion=motion)

    def _encode_gop(self, index: int, frames: np.ndarray, send: int) -> list[bytes]:
        """Segments of scales ``0 .. send - 1`` of one GOP of uint8 ``[t, H, W, 3]`` frames.

        With global motion the GOP is coded twice, with the estimated motion and without (zero
        motions), every scale each time; the motion is kept only when it costs no more bits and
        leaves no larger pixel error (what a decoder of every scale shows) than coding without.
        The choice is the same whatever ``send`` is, so truncation stays byte-identical.
        """
        size = frames.shape[1:3]
        latents = self._latents(frames)
        moving = self._code_frames(frames, latents=latents)
        if all(m == (0, 0) for m in moving.motions):  # no motion estimated, or motion off
            return self._encode_code(moving, size, send)[0][:send]

        def coded(code: ClipCode) -> tuple[list[bytes], int, float]:
            segments, latents = self._encode_code(code, size, self.spec.num_scales)
            # float32 pixels whatever ``self.pixels``: the choice, hence the stream, must not depend on it
            shown = self._pixels(torch.cat(latents), size, pixels="float32").astype(np.float64)
            return segments, sum(len(s) for s in segments), float(np.square(shown - frames).sum())

        segments, bits, error = coded(moving)
        still_segments, still_bits, still_error = coded(self._code_frames(frames, "none", latents))
        keep = bits <= still_bits and error <= still_error
        return (segments if keep else still_segments)[:send]

    def _encode_code(self, code: ClipCode, size: tuple[int, int], send: int) -> tuple[list[bytes], list[Tensor]]:
        """Entropy-code scales ``0 .. send - 1`` of a GOP's :class:`ClipCode`: the segments, and the
        latents ``[1, C, h, w]`` a decoder of those scales shows, frame by frame.

        The tokens are the quantizer's own (:func:`code_clip`, with the dead zone), or with
        ``rdoq > 0`` chosen scale by scale against the context model's tables
        (``rd_quantize_scale``) from the same latents and the decoder's own loop state; with skip
        flags, a predicted frame's finest scale is then zeroed where that lowers its
        ``D + rdoq * R`` (:func:`~progvc.codec.skip.rd_skip`).
        """
        encoders = [_SegmentWriter(CODERS.create(self.model.coder), self.skip) for _ in range(send)]
        tok64 = self._tokenizer64
        zero = tok64.zero_token

        def pick(k: int, loop: PredictionLoop) -> Picker:
            def encode(t: int, freqs_of: Callable[[], Tensor], flag: Flag | None) -> Tensor:
                tables = freqs_of()
                symbols = code.tokens[t][k][0].reshape(-1).cpu()
                if self.rdoq > 0:
                    z = loop.residual(k, code.latents[t].to(self.device, torch.float64))
                    bits = (tables.sum(-1, keepdim=True) / tables).log2()  # [N, A] what each value costs
                    chosen = tok64.rd_quantize_scale(k, z, bits.view(*code.tokens[t][k].shape, -1), self.rdoq)
                    symbols = symbols if chosen is None else chosen.reshape(-1).cpu()
                if flag is not None and self.rdoq > 0 and k == self.spec.num_scales - 1:
                    y = tok64.scale_values(k, z).reshape(-1).cpu() - zero
                    if rd_skip(y, symbols, zero, bits.gather(1, symbols[:, None]).sum().item(), flag, self.rdoq):
                        symbols = torch.full_like(symbols, zero)
                encoders[k].encode_scale(symbols, tables, flag, zero)
                return symbols

            return encode

        def motion_of(t: int, k: int, loop: PredictionLoop) -> Motion:
            if k < len(encoders):  # the motion opens the frame's chunk of segment k
                encoders[k].encode(motion_symbols(code.motions[t], loop.motion), motion_tables())
            return code.motions[t]

        frames = self._code_gop(len(code.tokens), size, send, pick, motion=(self.motion, motion_of), skip=self.skip)
        latents = [latent for latent, _, _ in frames]
        return [e.finish() for e in encoders], latents

    # ------------------------------------------------------------------ decoder

    def _open_stream(
        self, data: bytes, layers: int | None, synthesis: str | None, seed: int | None
    ) -> tuple[bitstream.Stream, SynthesisSettings]:
        """Parse and validate ``data`` against this model before anything is decoded."""
        if layers is not None and (not isinstance(layers, int) or layers < 0):
            raise ConfigError(f"layers must be an integer >= 0, got {layers!r}")
        stream = bitstream.parse(data, self.limits)
        header = stream.header
        if header.fingerprint != self.fingerprint:
            found = packaged_model(header.fingerprint)
            raise ModelMismatchError(
                f"stream was made by model {header.fingerprint.hex()}"
                + (f" (the packaged model {found[0]!r})" if found else "")
                + f", but the model given is {self.fingerprint.hex()}"
            )
        if header.scales != self.spec.scales:
            raise BitstreamError(f"stream scale schedule {list(header.scales)} differs from the model's")
        if header.coder not in CODERS:
            raise BitstreamError(f"stream uses entropy coder {header.coder!r}, which is not installed")
        if header.skip and (self.model.prediction != "loops" or self.model.tokenizer.zero_token is None):
            raise BitstreamError("stream has skip flags, but the model has no prediction loops with a zero token")
        if header.synthesis.top_k > self.spec.alphabet:
            raise BitstreamError(
                f"top-k {header.synthesis.top_k} exceeds the alphabet size {self.spec.alphabet}"
            )
        defaults = header.synthesis
        settings = SynthesisSettings(
            mode=defaults.mode if synthesis is None else synthesis,
            seed=defaults.seed if seed is None else seed,
            temperature=defaults.temperature,
            top_k=defaults.top_k,
        )
        self.limits.check(stream, layers, settings.mode)
        return stream, settings

    def iter_tokens(
        self,
        data: bytes,
        layers: int | None = None,
        synthesis: str | None = "none",
        seed: int | None = None,
    ) -> Iterator[list[Tensor]]:
        """Decode a stream to tokens, GOP by GOP: per GOP a list of int64 ``[t, h_k, w_k, G]`` maps.

        With ``synthesis="none"`` (the default here) only the received scales are returned;
        otherwise the missing ones are synthesized, exactly as :meth:`iter_decompress` does.
        """
        stream, settings = self._open_stream(data, layers, synthesis, seed)
        for _, frames in self._decode_frames(stream, layers, settings):
            per_frame = [tokens for _, tokens, _, _, _ in frames]
            yield (
                [torch.cat([f[k] for f in per_frame]) for k in range(len(per_frame[0]))] if per_frame else []
            )

    def frame_bits(self, data: bytes) -> list[dict[str, Any]]:
        """Per frame of a stream: ``{"index", "gop", "position", "bits": [b_1, ..., b_K'], "motion": [dy, dx],
        "skipped": [k, ...]}``.

        ``bits[k]`` is the information content, in bits, of the frame's scale-``k`` symbols under
        the decoder's integer tables (``-log2(freq / total)``, summed); the range coder spends
        within about 0.1 % of it, and a segment's bytes hold its frames' bits plus at most 32.
        Scale ``motion_scale`` includes the frame's global motion symbols; ``motion`` is that motion in
        sixteenths of a latent pixel (``[0, 0]`` without). A scale carries its skip flag's bits, and
        the first frame the bit of its segment's mode; ``skipped`` lists the (0-based) scales whose
        flag said skipped (:mod:`progvc.codec.skip`).
        Only the scales the stream carries are listed (decoding with the model, no synthesis).
        """
        stream, settings = self._open_stream(data, None, "none", None)
        out: list[dict[str, Any]] = []
        for gop, frames in self._decode_frames(stream, None, settings, with_bits=True):
            for position, (_, _, bits, motion, skipped) in enumerate(frames):
                out.append(
                    {
                        "index": len(out),
                        "gop": gop.index,
                        "position": position,
                        "bits": bits,
                        "motion": list(motion),
                        "skipped": skipped,
                    }
                )
        return out

    def _decode_gops(
        self, stream: bitstream.Stream, layers: int | None, settings: SynthesisSettings
    ) -> Iterator[np.ndarray]:
        """Pixels, uint8 ``[t, H, W, 3]`` with ``t <= batch_size``, frame-major through every GOP."""
        header = stream.header
        size = (header.height, header.width)
        pending: list[Tensor] = []
        before: tuple[Tensor, np.ndarray] | None = None  # the last frame shown, for _pixels' repeats

        def shown() -> np.ndarray:
            nonlocal pending, before
            pixels = self._pixels(torch.cat(pending), size, before)
            before, pending = (pending[-1], pixels[-1]), []
            return pixels

        with self._bar(header.num_frames, "decompress") as bar:
            for _, frames in self._decode_frames(stream, layers, settings):
                for latent, _, _, _, _ in frames:
                    pending.append(latent)
                    if len(pending) == self.batch_size:
                        bar.update(len(pending))
                        yield shown()
            if pending:
                bar.update(len(pending))
                yield shown()

    def _decode_frames(
        self,
        stream: bitstream.Stream,
        layers: int | None,
        settings: SynthesisSettings,
        with_bits: bool = False,
    ) -> Iterator[tuple[bitstream.Gop, Iterator[tuple[Tensor, list[Tensor], list[float], Motion, list[int]]]]]:
        """Per GOP: ``(gop, frames)``, ``frames`` yielding ``(latent [1, C, h, w], tokens, bits, motion,
        skipped)`` frame by frame (``bits`` and ``skipped`` empty unless ``with_bits``).

        The frames of a GOP must be consumed before the next GOP is asked for.
        """
        header = stream.header
        size = (header.height, header.width)
        coder = CODERS.create(header.coder)
        for gop in stream.gops:
            sent = len(gop.segments) if layers is None else min(layers, len(gop.segments))
            total = sent if settings.mode == "none" else self.spec.num_scales
            sizes = self.spec.scale_sizes(*size)
            readers = [
                _SegmentReader(
                    coder,
                    gop,
                    k,
                    with_bits,
                    gop.num_frames * (sizes[k][0] * sizes[k][1] * self.spec.groups + 3) + 1,  # + motion, skip
                    header.skip,
                )
                for k in range(sent)
            ]
            generator = gop_generator(settings.seed, gop.index)

            def frames(gop=gop, readers=readers, total=total, generator=generator):
                def pick(scale: int, loop: PredictionLoop, readers=readers) -> Picker | None:
                    return readers[scale] if scale < len(readers) else None

                def motion_of(t: int, scale: int, loop: PredictionLoop, readers=readers) -> Motion | None:
                    return readers[scale].motion(t, loop.motion) if scale < len(readers) else None

                motion = (header.motion, motion_of)
                for latent, tokens, moved in self._code_gop(
                    gop.num_frames, size, total, pick, settings, generator, motion, header.skip
                ):
                    bits = [r.bits.pop(0) for r in readers] if with_bits else []
                    skipped = [k for k, r in enumerate(readers) if r.skipped.pop(0)] if with_bits else []
                    yield latent, tokens, bits, moved, skipped

            yield gop, frames()

    def _pixels(
        self,
        latents: Tensor,
        size: tuple[int, int],
        before: tuple[Tensor, np.ndarray] | None = None,
        pixels: str | None = None,
    ) -> np.ndarray:
        """uint8 ``[n, H, W, 3]`` from latents ``[n, C, h, w]`` (any float dtype), in batches of ``batch_size`` frames.

        A frame whose latent equals the frame before's is not decoded again: its pixels are copied
        (the tokenizer's decoder is a function of the latent). A predicted frame whose scales are
        all skipped or zero is such a frame (``R_t = R_{t-1} + 0``, :mod:`progvc.codec.prediction`),
        and on still content most are. ``before``: the latent ``[1, C, h, w]`` and pixels
        ``[H, W, 3]`` of the frame before ``latents[0]``, if any. Batches are formed by frame
        position (each decodes its frames that are not repeats), so a caller that passes the
        frames ``batch_size`` at a time, with ``before``, gets the pixels of one that passes them all.
        ``pixels``: the decoder's arithmetic (default: the codec's ``pixels``).
        """
        out = np.empty((latents.shape[0], *size, 3), dtype=np.uint8)
        tokenizer = self.model.tokenizer
        previous, shown = before if before is not None else (None, None)
        dtype = PIXEL_DTYPES[pixels or self.pixels]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            for start in range(0, latents.shape[0], self.batch_size):
                part = latents[start : start + self.batch_size]
                refs = [previous] + [part[i : i + 1] for i in range(part.shape[0] - 1)]
                fresh = [i for i, ref in enumerate(refs) if ref is None or not torch.equal(part[i : i + 1], ref)]
                if fresh:
                    decoded = tokenizer.decode_latent(part[fresh].to(self.device, torch.float32), size)
                    out[[start + i for i in fresh]] = tensor_to_frames(decoded.float())
                for i in sorted(set(range(part.shape[0])) - set(fresh)):  # repeats, in order
                    out[start + i] = shown if i == 0 else out[start + i - 1]
                previous, shown = part[-1:], out[start + part.shape[0] - 1]
        return out

    # ------------------------------------------------------------------ the shared loop

    def _code_gop(
        self,
        num_frames: int,
        size: tuple[int, int],
        total: int,
        pick: Callable[[int, PredictionLoop], Picker | None],
        settings: SynthesisSettings | None = None,
        generator: torch.Generator | None = None,
        motion: tuple[str, Callable[[int, int, PredictionLoop], Motion | None]] | None = None,
        skip: bool = False,
    ) -> Iterator[tuple[Tensor, list[Tensor], Motion]]:
        """Frame after frame of a GOP, scales ``0 .. total - 1`` of each: symbols from
        ``pick(k, loop)(t, tables_of, flag)`` (encode or decode; ``None`` back: the scale is
        skipped) or, where that is ``None``, from synthesis; then the prediction loop. Yields
        ``(latent [1, C, h, w], tokens, motion)`` of every frame, where ``latent`` is what the
        decoder shows, ``tokens`` are ``[1, h_k, w_k, G]`` maps and ``motion`` the frame's global
        motion (``(0, 0)`` without).
        ``motion = (mode, motion_of)``: the loops' motion mode, and ``motion_of(t, k, loop)``, which
        gives (encodes or decodes) frame ``t``'s motion where the loop :meth:`~PredictionLoop.codes_motion`
        at scale ``k`` (``None``: not received, the references stay in place).
        With ``skip``, every received scale of a frame after the first has a skip :class:`Flag`
        (:mod:`progvc.codec.skip`; its segment may or may not carry it). The context model's steps
        run lazily, when ``tables_of()`` or synthesis needs a scale's logits, so a skipped scale
        that no later scale needs costs none."""
        from progvc.coders.tables import logits_to_tables  # float32 grid tables (fast, deterministic)

        spec = self.spec
        mode, motion_of = motion or ("none", None)
        loop = PredictionLoop(self._tokenizer64, self.model.prediction, size, mode)
        pickers = [pick(k, loop) for k in range(total)]
        # one tables buffer per scale, reused frame after frame (a picker uses its tables at once)
        buffers = [
            torch.empty(h * w * spec.groups, spec.alphabet, dtype=torch.float32) for h, w in loop.sizes[:total]
        ]
        flags, zero = SkipFlags(), self.model.tokenizer.zero_token
        steps = RepeatingSteps(self._context64)  # a frame's steps that repeat the frame before's are reused
        with torch.inference_mode():
            for t in range(num_frames):
                loop.start_frame()
                steps.start_frame()
                moved: Motion = (0, 0)
                pending: list[tuple[int, Tensor, Tensor | None]] = []  # steps not run yet, in order

                def logits(pending=pending) -> Tensor:
                    """The newest pending scale's logits ``[N, A]``, after every pending step has run."""
                    while pending:
                        out = steps.step(*pending.pop(0))
                    return out.reshape(-1, spec.alphabet).cpu()

                coarser: int | None = None  # 1 when the scale before was all zero
                for k in range(total):
                    h, w = loop.sizes[k]
                    if motion_of is not None and loop.codes_motion(k):
                        got = motion_of(t, k, loop)
                        if got is not None:
                            loop.move(got)
                            moved = got
                    pending.append((k, *loop.inputs(k)))
                    if pickers[k] is None:
                        symbols = pick_tokens(logits(), settings, generator)
                    else:
                        flag = flags.flag(k, coarser) if skip and t > 0 else None
                        symbols = pickers[k](t, lambda k=k: logits_to_tables(logits(), buffers[k]), flag)
                        if symbols is None:  # the decoder read a skip flag
                            symbols = torch.full((h * w * spec.groups,), zero)
                        if flag is not None:
                            coarser = int(bool((symbols == zero).all()))
                            flags.update(flag, coarser)
                    loop.add_scale(symbols.reshape(1, h, w, spec.groups).to(self.device))
                yield loop.latent(), list(loop.tokens), moved

    def _bar(self, total: int | None, desc: str):
        from tqdm import tqdm

        disable = None if self.progress is None else not self.progress
        return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, disable=disable, leave=False)


def _chunks(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Group an iterator of ``[H, W, 3]`` frames into uint8 arrays ``[<= size, H, W, 3]``."""
    batch: list[np.ndarray] = []
    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ConfigError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
        if batch and frame.shape != batch[0].shape:
            raise ConfigError(f"frame size changes from {batch[0].shape[:2]} to {frame.shape[:2]}")
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _fit_layers(segments: list[bytes], index: int, budget_bits: float) -> int:
    """The most scales of a GOP whose serialized bits stay within ``budget_bits`` (0 if none fit)."""
    best = 0
    for k in range(1, len(segments) + 1):
        if 8 * len(bitstream.encode_gop(index, segments[:k])) <= budget_bits:
            best = k
        else:
            break
    return best


#: ``picker(t, tables_of, flag)``: the symbols of frame ``t`` at one scale, given a thunk for its
#: tables (valid until the next frame's call at that scale: the buffer is reused) and its skip flag
#: (``None``: the scale has none); ``None`` back when the flag says the scale is skipped.
Picker = Callable[[int, Callable[[], Tensor], Flag | None], Tensor | None]


class _SegmentWriter:
    """Encodes one segment; with skip flags, twice (with and without them), keeping the shorter."""

    def __init__(self, coder, skip: bool) -> None:
        self.plain = coder.encoder()
        self.flagged = coder.encoder() if skip else None
        if self.flagged is not None:  # each opens with its mode symbol
            self.plain.encode(torch.tensor([0]), MODE_TABLES)
            self.flagged.encode(torch.tensor([1]), MODE_TABLES)

    def encode(self, symbols: Tensor, tables: Tensor) -> None:
        """Symbols every variant carries (a frame's motion)."""
        self.plain.encode(symbols, tables)
        if self.flagged is not None:
            self.flagged.encode(symbols, tables)

    def encode_scale(self, symbols: Tensor, tables: Tensor, flag: Flag | None, zero: int | None) -> None:
        """A frame's scale: its flag (``None``: it has none), then its symbols unless they are all ``zero``."""
        self.plain.encode(symbols, tables)
        if self.flagged is None:
            return
        if flag is not None:
            skipped = bool((symbols == zero).all())
            self.flagged.encode(torch.tensor([int(skipped)]), flag.tables)
            if skipped:
                return
        self.flagged.encode(symbols, tables)

    def finish(self) -> bytes:
        plain = self.plain.finish()
        if self.flagged is None:
            return plain
        flagged = self.flagged.finish()
        return flagged if len(flagged) <= len(plain) else plain  # ties: flags (faster decoding)


class _SegmentReader:
    """Decodes frame after frame from one segment; optionally records each frame's bits."""

    def __init__(
        self,
        coder,
        gop: bitstream.Gop,
        k: int,
        with_bits: bool = False,
        max_symbols: int | None = None,
        skip: bool = False,
    ) -> None:
        self.gop, self.k = gop, k
        self.bits: list[float] | None = [] if with_bits else None
        self.skipped: list[bool] = []  # per frame, with ``with_bits``: whether its flag said skipped
        self._motion_bits = 0.0  # of the frame whose chunk is being read (segment motion_scale)
        try:
            self.decoder = coder.decoder(bytes(gop.segments[k]), max_symbols)
        except Exception as exc:
            if isinstance(exc, BitstreamError):
                raise
            raise BitstreamError(
                f"GOP {gop.index} scale {k} cannot be decoded ({type(exc).__name__})"
            ) from None
        # with skip flags the segment opens with its mode: whether its predicted frames carry them
        self.flags = skip and bool(self._decode(0, MODE_TABLES)[0])
        self._motion_bits = 1.0 if skip else 0.0  # the mode's bit counts to the first frame

    def _decode(self, t: int, freqs: Tensor) -> Tensor:
        try:
            return self.decoder.decode(freqs)
        except Exception as exc:  # a coder's own error on corrupt data
            if isinstance(exc, BitstreamError):
                raise
            raise BitstreamError(
                f"GOP {self.gop.index} scale {self.k} frame {t} cannot be decoded ({type(exc).__name__})"
            ) from None

    def motion(self, t: int, previous: Motion) -> Motion:
        """Frame ``t``'s global motion, which opens its chunk (segment ``motion_scale``); its bits count to that scale."""
        motion = motion_from_symbols(self._decode(t, motion_tables()), previous)
        if self.bits is not None:
            self._motion_bits = motion_bits(motion, previous)
        return motion

    def __call__(self, t: int, freqs_of: Callable[[], Tensor], flag: Flag | None = None) -> Tensor | None:
        extra = self._motion_bits
        self._motion_bits = 0.0
        if flag is not None and self.flags:
            value = int(self._decode(t, flag.tables)[0])
            extra += flag.bits[value]
            if value == SKIPPED:
                if self.bits is not None:
                    self.bits.append(extra)
                    self.skipped.append(True)
                return None
        freqs = freqs_of()
        symbols = self._decode(t, freqs)
        if self.bits is not None:
            f = freqs.to(torch.float64)
            chosen = f.gather(-1, symbols.reshape(-1, 1).to(torch.int64)).squeeze(-1)
            self.bits.append(float((f.sum(-1).log2() - chosen.log2()).sum()) + extra)
            self.skipped.append(False)
        return symbols
