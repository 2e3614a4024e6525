"""The codec: frames <-> progressive bitstream, one GOP at a time.

Coding path (identical in the encoder and the decoder, so that both compute bit-identical
tables): for every GOP, for every scale ``k``, for every frame ``t`` of the GOP,

* ``cur_k`` = frame ``t``'s running latent after scales ``< k``, area-downsampled to scale ``k``
  (zeros for ``k = 0``), ``prev_k`` = frame ``t - 1``'s running latent after scales ``<= k``
  (``None`` for the GOP's first frame), as in :func:`progvc.context_models.scale_inputs`;
* ``logits = context_model.step(state_t, k, cur_k, prev_k)`` on a float64 copy of the context
  model, with running latents from a float64 copy of the tokenizer (so that thread counts and
  batch shapes change the logits by ~1e-16 at most, far below the table resolution);
* ``freqs = logits_to_freqs(logits)`` and the frame's scale-``k`` symbols go into (or come out
  of) the GOP's scale-``k`` segment, one chunk per frame.

The scales a stream does not carry are synthesized by the same loop (see
:mod:`progvc.codec.synthesis`). Memory is bounded by one GOP: frames are read, coded and
written GOP by GOP.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from progvc.codec import bitstream
from progvc.codec.bitstream import Header, StreamInfo
from progvc.codec.model import CodecModel
from progvc.codec.synthesis import SynthesisSettings, gop_generator, pick_tokens
from progvc.coders import CODERS
from progvc.context_models.base import area_resize
from progvc.errors import BitstreamError, ConfigError, ModelMismatchError

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


@dataclass
class _Frame:
    """Coding state of one frame of a GOP: context-model cache, running float64 latent, tokens so far."""

    state: Any
    f_hat: Tensor | None = None
    tokens: list[Tensor] = field(default_factory=list)


class Codec:
    """Compress, decompress, truncate and inspect progressive streams with one :class:`CodecModel`.

    Args:
        model: the model, moved to ``device`` and put in eval mode; the codec works on a snapshot
            of its weights taken here (its fingerprint and float64 copies).
        device: where the networks run (``"cpu"``, ``"cuda"``); tables are always built on the CPU.
        batch_size: frames per tokenizer call (encode / decode), which bounds activation memory.
        progress: show tqdm progress bars on stderr (``None``: only when stderr is a terminal).
    """

    def __init__(
        self,
        model: CodecModel,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        progress: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.spec = model.tokenizer.spec
        self.batch_size = batch_size
        self.progress = progress
        self.fingerprint = model.fingerprint()
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
        """Decode a stream GOP by GOP, yielding uint8 ``[t, H, W, 3]`` arrays (memory bounded by one GOP).

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

        uint8 ``[T, H, W, 3]`` -> uint8 ``[T, H, W, 3]``, computed GOP by GOP in the decoder's
        batches, so it equals ``decompress(compress(video, layers=layers, gop=gop), synthesis="none")``.
        """
        keep = self.spec.num_scales if layers is None else layers
        size = video.shape[1:3]
        out = [
            self._pixels(self._tokenize(chunk)[:keep], size, len(chunk))
            for chunk in _chunks(iter(video), gop)
        ]
        return np.concatenate(out)

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
        )
        header.check(ConfigError)
        return header

    def _tokenize(self, frames: np.ndarray) -> list[Tensor]:
        """Token maps ``[t, h_k, w_k, G]`` of uint8 frames ``[t, H, W, 3]``, in batches of ``batch_size``."""
        parts: list[list[Tensor]] = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                x = frames_to_tensor(frames[start : start + self.batch_size], self.device)
                parts.append(self.model.tokenizer.encode(x))
        return [torch.cat(scale) for scale in zip(*parts)]

    def _encode_gop(self, index: int, frames: np.ndarray, send: int) -> list[bytes]:
        """Segments of scales ``0 .. send - 1`` of one GOP of uint8 ``[t, H, W, 3]`` frames."""
        size = frames.shape[1:3]
        tokens = self._tokenize(frames)
        with torch.inference_mode():
            coder = CODERS.create(self.model.coder)
            states = self._new_frames(len(frames))
            segments = []
            for k in range(send):
                encoder = coder.encoder()

                def pick(t: int, freqs_of: Callable[[], Tensor], k: int = k, encoder=encoder) -> Tensor:
                    symbols = tokens[k][t].reshape(-1).cpu()
                    encoder.encode(symbols, freqs_of())
                    return symbols

                self._code_scale(k, states, size, pick)
                segments.append(encoder.finish())
        return segments

    # ------------------------------------------------------------------ decoder

    def _open_stream(
        self, data: bytes, layers: int | None, synthesis: str | None, seed: int | None
    ) -> tuple[bitstream.Stream, SynthesisSettings]:
        """Parse and validate ``data`` against this model before anything is decoded."""
        if layers is not None and (not isinstance(layers, int) or layers < 0):
            raise ConfigError(f"layers must be an integer >= 0, got {layers!r}")
        stream = bitstream.parse(data)
        header = stream.header
        if header.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"stream was made by model {header.fingerprint.hex()}, "
                f"but the model given is {self.fingerprint.hex()}"
            )
        if header.scales != self.spec.scales:
            raise BitstreamError(f"stream scale schedule {list(header.scales)} differs from the model's")
        if header.coder not in CODERS:
            raise BitstreamError(f"stream uses entropy coder {header.coder!r}, which is not installed")
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
        return self._decode_gops(stream, layers, settings, pixels=False)

    def _decode_gops(
        self, stream: bitstream.Stream, layers: int | None, settings: SynthesisSettings, pixels: bool = True
    ) -> Iterator[Any]:
        header = stream.header
        size = (header.height, header.width)
        coder = CODERS.create(header.coder)
        with self._bar(header.num_frames, "decompress") as bar:
            for gop in stream.gops:
                sent = len(gop.segments) if layers is None else min(layers, len(gop.segments))
                tokens = self._decode_tokens(gop, sent, size, coder, settings)
                yield self._pixels(tokens, size, gop.num_frames) if pixels else tokens
                bar.update(gop.num_frames)

    def _decode_tokens(
        self, gop: bitstream.Gop, sent: int, size: tuple[int, int], coder, settings: SynthesisSettings
    ) -> list[Tensor]:
        """Tokens ``[t, h_k, w_k, G]`` of the sent scales, then of the synthesized ones (unless mode is none)."""
        total = sent if settings.mode == "none" else self.spec.num_scales
        generator = gop_generator(settings.seed, gop.index)
        with torch.inference_mode():
            frames = self._new_frames(gop.num_frames)
            for k in range(total):
                pick = self._segment_reader(coder, gop, k) if k < sent else None  # None: synthesize
                self._code_scale(k, frames, size, pick, settings, generator)
        return [torch.cat([f.tokens[k] for f in frames]) for k in range(total)]

    @staticmethod
    def _segment_reader(coder, gop: bitstream.Gop, k: int) -> Callable[[int, Callable[[], Tensor]], Tensor]:
        """``pick(t, freqs_of)`` that decodes frame ``t``'s symbols from segment ``k`` of ``gop``."""
        try:
            decoder = coder.decoder(bytes(gop.segments[k]))
        except Exception as exc:
            if isinstance(exc, BitstreamError):
                raise
            raise BitstreamError(
                f"GOP {gop.index} scale {k} cannot be decoded ({type(exc).__name__})"
            ) from None

        def pick(t: int, freqs_of: Callable[[], Tensor]) -> Tensor:
            try:
                return decoder.decode(freqs_of())
            except Exception as exc:  # a coder's own error on corrupt data
                if isinstance(exc, BitstreamError):
                    raise
                raise BitstreamError(
                    f"GOP {gop.index} scale {k} frame {t} cannot be decoded ({type(exc).__name__})"
                ) from None

        return pick

    def _pixels(self, tokens: list[Tensor], size: tuple[int, int], n: int) -> np.ndarray:
        """uint8 ``[n, H, W, 3]`` from tokens of any prefix of scales, in batches of ``batch_size``."""
        out = []
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                part = [t[start : start + self.batch_size].to(self.device) for t in tokens]
                b = min(self.batch_size, n - start)
                out.append(tensor_to_frames(self.model.tokenizer.decode(part, size, batch_size=b)))
        return np.concatenate(out)

    # ------------------------------------------------------------------ the shared loop

    def _new_frames(self, n: int) -> list[_Frame]:
        return [_Frame(self._context64.init_state(1)) for _ in range(n)]

    def _code_scale(
        self,
        k: int,
        frames: list[_Frame],
        size: tuple[int, int],
        pick: Callable[[int, Callable[[], Tensor]], Tensor] | None,
        settings: SynthesisSettings | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Scale ``k`` of every frame, in order: logits, then symbols from ``pick(t, freqs_of)``
        (encode or decode) or, when ``pick`` is ``None``, from synthesis; then the running latents."""
        from progvc.coders.tables import logits_to_freqs

        spec = self.spec
        h, w = spec.scale_sizes(*size)[k]
        for t, frame in enumerate(frames):
            if frame.f_hat is None:
                cur = torch.zeros(1, spec.latent_dim, h, w, dtype=torch.float64, device=self.device)
            else:
                cur = area_resize(frame.f_hat, (h, w))
            prev = None if t == 0 else area_resize(frames[t - 1].f_hat, (h, w))
            logits = self._context64.step(frame.state, k, cur, prev).reshape(-1, spec.alphabet).cpu()
            if pick is None:
                symbols = pick_tokens(logits, settings, generator)
            else:
                symbols = pick(t, lambda logits=logits: logits_to_freqs(logits))
            frame.tokens.append(symbols.reshape(1, h, w, spec.groups).to(self.device))
            frame.f_hat = self._tokenizer64.latents(frame.tokens, size)[-1]

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
