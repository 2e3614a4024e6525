"""Short tokenizer training on bikes.mp4, then codebook usage and PSNR per prefix on carphone (held out).

``python -m progvc.bench tokenizers --tokenizer msvq --steps 150`` trains a tokenizer with its
default settings (override any constructor argument with ``--set name=value``) on random crops
of bikes.mp4, from random prefixes of scales (the full prefix half the time), with L1 + L2 +
quantizer loss and Adam. It then encodes the first ``--eval-frames`` frames of
carphone_pristine.mp4 (never trained on) and prints the fraction of the codebook they use, the
perplexity of their token histogram (for bitwise tokens: the entropy of each bit, 1.0 = both
values equally frequent) and the PSNR of the reconstruction from every prefix of scales.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from progvc.errors import ConfigError
from progvc.io import read_video, sample_clip
from progvc.tokenizers import TOKENIZERS
from progvc.tokenizers.multiscale import MultiScaleResidualTokenizer


def _parse_set(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects name=value, got {item!r}")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def _to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[T, 3, H, W]`` in ``[0, 1]``."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def train(
    tok: MultiScaleResidualTokenizer,
    frames: np.ndarray,
    steps: int,
    batch: int,
    crop: int,
    lr: float,
    seed: int,
    window: int = 50,
) -> dict[str, float]:
    """Train ``tok`` on random ``crop`` x ``crop`` crops of ``frames`` (uint8 ``[T, H, W, 3]``).

    Returns the mean loss of the last ``window`` steps and, for a codebook, the fraction of codes
    used by those steps' batches.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(tok.parameters(), lr=lr)
    num_scales = tok.spec.num_scales
    t, h, w, _ = frames.shape
    losses: list[float] = []
    used: list[torch.Tensor] = []
    tok.train()
    for step in range(steps):
        idx = torch.randint(t, (batch,), generator=g).tolist()
        ys = torch.randint(h - crop + 1, (batch,), generator=g).tolist()
        xs = torch.randint(w - crop + 1, (batch,), generator=g).tolist()
        x = _to_float(np.stack([frames[i, y : y + crop, c : c + crop] for i, y, c in zip(idx, ys, xs)]))
        full = bool(torch.randint(2, (1,), generator=g))
        prefix = num_scales if full else int(torch.randint(1, num_scales + 1, (1,), generator=g))
        out = tok(x, prefix)
        err = out.recon - x
        loss = err.abs().mean() + err.square().mean() + out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - window:
            losses.append(float(loss.detach()))
            if tok.spec.groups == 1:
                used.append(torch.cat([k.flatten() for k in out.tokens]))
    tok.eval()
    stats = {"train_loss": float(np.mean(losses)) if losses else math.nan}
    if used:
        stats["train_usage"] = len(torch.unique(torch.cat(used))) / tok.spec.alphabet
    return stats


@torch.no_grad()
def evaluate(tok: MultiScaleResidualTokenizer, frames: np.ndarray, batch: int = 16) -> dict[str, object]:
    """Codebook usage / bit entropy of the tokens of ``frames`` and the PSNR (dB) of every prefix."""
    spec = tok.spec
    tokens: list[list[torch.Tensor]] = []
    sq_err = torch.zeros(spec.num_scales, dtype=torch.float64)
    for start in range(0, len(frames), batch):
        x = _to_float(frames[start : start + batch])
        size = (x.shape[-2], x.shape[-1])
        tk = tok.encode(x)
        tokens.append(tk)
        for k, f_hat in enumerate(tok.latents(tk, size)):
            recon = tok.decode_latent(f_hat, size)
            sq_err[k] += (recon.double() - x.double()).square().mean(dim=(1, 2, 3)).sum()
    mse = sq_err / len(frames)
    out: dict[str, object] = {"psnr_per_prefix": [round(float(-10 * torch.log10(m)), 2) for m in mse]}
    flat = torch.cat([t.reshape(-1, spec.groups) for tk in tokens for t in tk])
    if spec.groups == 1:
        counts = torch.bincount(flat[:, 0], minlength=spec.alphabet).double()
        p = counts / counts.sum()
        out["usage"] = float((counts > 0).double().mean())
        out["perplexity"] = float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum()))
    else:
        ones = flat.double().mean(0).clamp(1e-12, 1 - 1e-12)
        out["bit_entropy"] = float((-(ones * ones.log2() + (1 - ones) * (1 - ones).log2())).mean())
    out["eval_tokens"] = int(flat.shape[0])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m progvc.bench tokenizers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokenizer", default="msvq", help="registered tokenizer name (default msvq)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE", help="tokenizer constructor arguments"
    )
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-frames", type=int, default=120, help="first frames of bikes.mp4 to train on")
    parser.add_argument(
        "--eval-frames", type=int, default=120, help="first frames of carphone to evaluate on"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = TOKENIZERS.create(args.tokenizer, **_parse_set(args.set))
    train_frames, _ = read_video(sample_clip("bikes"), max_frames=args.train_frames)
    eval_frames, _ = read_video(sample_clip("carphone"), max_frames=args.eval_frames)
    start = time.perf_counter()
    result: dict[str, object] = {
        "tokenizer": TOKENIZERS.config_of(tok),
        "parameters": sum(p.numel() for p in tok.parameters()),
        "steps": args.steps,
    }
    result.update(train(tok, train_frames, args.steps, args.batch, args.crop, args.lr, args.seed))
    result["train_seconds"] = round(time.perf_counter() - start, 1)
    result.update(evaluate(tok, eval_frames))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
