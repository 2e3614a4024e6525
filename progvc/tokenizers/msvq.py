"""Codebook tokens (VAR): each position of each scale is one of ``V`` learned vectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from progvc.errors import ConfigError
from progvc.tokenizers import TOKENIZERS
from progvc.tokenizers.multiscale import MultiScaleResidualTokenizer, is_distributed


@TOKENIZERS.register("msvq")
class MultiScaleVQTokenizer(MultiScaleResidualTokenizer):
    """Multi-scale residual VQ with one shared codebook of ``vocab_size`` codes and dead-code restarts.

    Tokens are ``[B, h_k, w_k, 1]`` with values in ``[0, vocab_size)`` (``G = 1``, ``A = V``).
    The codebook learns by gradient (VQ-VAE codebook loss ``|q - sg(z)|^2`` plus ``beta``
    times the commitment ``|z - sg(q)|^2``). A code that no batch has used for ``restart_after``
    training steps is re-seeded from a residual vector of the current batch (plus 1 % noise),
    chosen by a generator seeded with ``(seed, step)``; every code starts "dead", so the first
    training step initialises the codebook from data. Under ``torch.distributed`` the usage counts
    are summed over ranks and the new vectors come from rank 0, so all replicas stay identical.

    Args:
        vocab_size: codebook size ``V``.
        latent_dim: latent and code channels ``C``.
        restart_after: training steps without use after which a code is restarted; 0 disables restarts.
        seed: seed of the restart sampler.
        Other arguments: see :class:`~progvc.tokenizers.multiscale.MultiScaleResidualTokenizer`.
    """

    #: distance-matrix entries computed at once by the nearest-neighbour search (bounds memory).
    chunk_elems: int = 1 << 22

    def __init__(
        self,
        vocab_size: int = 4096,
        latent_dim: int = 32,
        scales: Sequence[int] = (1, 2, 3, 4, 6, 8, 11, 16),
        downsample: int = 16,
        width: int = 32,
        max_width: int = 128,
        num_res_blocks: int = 1,
        phi_shared: int = 4,
        phi_ratio: float = 0.5,
        beta: float = 0.25,
        restart_after: int = 50,
        seed: int = 0,
    ) -> None:
        if vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2, got {vocab_size}")
        if restart_after < 0:
            raise ConfigError(f"restart_after must be >= 0 (0 disables restarts), got {restart_after}")
        super().__init__(
            latent_dim,
            1,
            vocab_size,
            scales,
            downsample,
            width,
            max_width,
            num_res_blocks,
            phi_shared,
            phi_ratio,
            beta,
        )
        self.restart_after = int(restart_after)
        self.seed = int(seed)
        self.codebook = nn.Embedding(vocab_size, latent_dim)
        nn.init.normal_(self.codebook.weight, std=0.1)
        # steps since each code was last used (starts "dead": the first step seeds the codebook from data)
        self.register_buffer("code_age", torch.full((vocab_size,), max(restart_after, 1), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def nearest(self, z_NC: Tensor) -> Tensor:
        """Index ``[N]`` of the code nearest (L2) to each row of ``z_NC [N, C]``, in chunks of bounded memory.

        Distances are computed in at least float32, outside autocast: a bf16 argmin would pick wrong codes.
        """
        dtype = torch.promote_types(z_NC.dtype, torch.float32)
        with torch.autocast(z_NC.device.type, enabled=False):
            z, w = z_NC.to(dtype), self.codebook.weight.detach().to(dtype)
            w_sq = w.square().sum(1)
            rows = max(1, self.chunk_elems // w.shape[0])
            # |z - e|^2 = |z|^2 - 2 z.e + |e|^2; |z|^2 does not change the argmin
            return torch.cat([torch.addmm(w_sq, c, w.T, alpha=-2.0).argmin(1) for c in z.split(rows)])

    def dequantize_scale(self, k: int, tokens: Tensor) -> Tensor:
        return self.codebook(tokens[..., 0]).permute(0, 3, 1, 2).contiguous()

    def quantize_scale(self, k: int, z: Tensor, predicted: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        b, c, h, w = z.shape
        idx = self.nearest(z.detach().permute(0, 2, 3, 1).reshape(-1, c)).view(b, h, w, 1)
        q = self.dequantize_scale(k, idx)
        loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())
        return idx, q.detach() + (z - z.detach()), loss

    def quantizer_stats(self, zs: list[Tensor], tokens: list[Tensor], update: bool) -> dict[str, Tensor]:
        counts = torch.bincount(torch.cat([t.flatten() for t in tokens]), minlength=self.spec.alphabet)
        p = counts.float() / counts.sum()
        stats = {
            "usage": (counts > 0).float().mean(),
            "perplexity": torch.exp(-(p * p.clamp_min(1e-12).log()).sum()),
        }
        if update and self.restart_after > 0:
            restarted = self._restart_dead_codes(counts, zs)
            stats["restarted"] = counts.new_tensor(restarted / self.spec.alphabet, dtype=torch.float32)
        return stats

    @torch.no_grad()
    def _restart_dead_codes(self, counts: Tensor, zs: list[Tensor]) -> int:
        """Age the codes by one step, re-seed those unused for ``restart_after`` steps; returns how many."""
        if is_distributed():
            counts = counts.clone()
            dist.all_reduce(counts)
        self.code_age += 1
        self.code_age[counts > 0] = 0
        dead = (self.code_age >= self.restart_after).nonzero().squeeze(1)
        step = int(self.steps)
        self.steps += 1
        n = dead.numel()
        if n == 0:
            return 0
        pool = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) for z in zs]).float()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        pick = torch.randint(pool.shape[0], (n,), generator=gen).to(pool.device)
        noise = torch.randn(n, pool.shape[1], generator=gen).to(pool.device)
        new = pool[pick] + 0.01 * pool.std() * noise
        if is_distributed():
            dist.broadcast(new, src=0)
        self.codebook.weight[dead] = new.to(self.codebook.weight.dtype)
        self.code_age[dead] = 0
        return n
