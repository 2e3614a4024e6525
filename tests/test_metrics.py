"""Metrics: known values, identical inputs, size limits, mergeable (DDP) states, weight loading from disk."""

from __future__ import annotations

import math
import warnings

import numpy as np
import piq
import pytest
import scipy.linalg
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from progvc.errors import ProgvcError, WeightsNotFoundError
from progvc.metrics import (
    DISTS,
    FVD,
    LPIPS,
    MSSSIM,
    PSNR,
    BitsPerPixel,
    HaarPSI,
    MetricInputError,
    frechet_distance,
)
from progvc.metrics.fidelity import ms_ssim


def frames(n: int = 2, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


class TinyDistance(nn.Module):
    """A small random conv net standing in for a perceptual backbone: (x, y) -> [N]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) - self.conv(y)).square().mean(dim=(1, 2, 3))


def test_bits_per_pixel_sums_then_divides():
    m = BitsPerPixel()
    m.update(1000, 100 * 10)
    m.update(torch.tensor(3000), 100 * 10)
    assert m.compute().item() == pytest.approx(2.0)
    with pytest.raises(MetricInputError):
        m.update(-1, 10)
    with pytest.raises(ProgvcError):
        m.update(1, 0)


def test_psnr_known_value_capped_and_averaged_per_frame():
    target = torch.zeros(2, 3, 8, 8)
    preds = target.clone()
    preds[0] += 0.1  # mse 1e-2 -> 20 dB
    preds[1] += 0.01  # mse 1e-4 -> 40 dB
    m = PSNR()
    m.update(preds, target)
    assert m.compute().item() == pytest.approx(30.0)  # mean of per-frame values, not of the MSEs
    m = PSNR(max_db=60)
    m.update(target, target)
    assert m.compute().item() == 60.0


@pytest.mark.parametrize("metric_cls", [PSNR, MSSSIM, HaarPSI])
def test_fidelity_metrics_are_best_on_identical_frames_and_monotone_in_noise(metric_cls):
    x = frames(h=48, w=56)
    values = []
    for sigma in (0.0, 0.02, 0.1):
        m = metric_cls()
        m.update(noisy(x, sigma) if sigma else x, x)
        values.append(m.compute().item())
    if metric_cls is not PSNR:
        assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[0] > values[1] > values[2]


def test_msssim_uses_fewer_scales_on_small_frames():
    m = MSSSIM()
    assert m.scales_for(1080, 1920) == 5
    assert m.scales_for(161, 161) == 5 and m.scales_for(160, 200) == 4
    assert m.scales_for(144, 176) == 4  # carphone (QCIF)
    assert m.scales_for(11, 11) == 1 and m.scales_for(10, 50) == 0
    m.update(noisy(frames(h=24, w=30), 0.05), frames(h=24, w=30))
    assert m.scales_used == 2 and 0 < m.compute().item() < 1
    with pytest.raises(MetricInputError, match="at least 11x11"):
        MSSSIM().update(frames(h=10, w=30), frames(h=10, w=30))


@pytest.mark.parametrize(("h", "w", "scales"), [(48, 56, 3), (37, 51, 2), (11, 20, 1)])
def test_ms_ssim_matches_piq(h, w, scales):
    """The separable implementation gives piq's numbers (odd sizes and one scale included)."""
    x = frames(3, h, w)
    y = noisy(x, 0.05)
    weights = torch.tensor(MSSSIM.SCALE_WEIGHTS[:scales])
    ours = ms_ssim(x, y, weights)
    ref = piq.multi_scale_ssim(x, y, scale_weights=weights, reduction="none")
    assert torch.allclose(ours, ref, atol=1e-5)


def test_frame_checks_give_clear_errors():
    with pytest.raises(MetricInputError, match="differ in shape"):
        PSNR().update(frames(h=16), frames(h=17))
    with pytest.raises(MetricInputError, match=r"\[N, 3, H, W\]"):
        PSNR().update(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16))
    with pytest.raises(MetricInputError, match="at least 16x16"):
        HaarPSI().update(frames(h=8, w=8), frames(h=8, w=8))


@pytest.mark.parametrize("metric_cls", [PSNR, MSSSIM, HaarPSI, BitsPerPixel])
def test_states_merge_like_ddp(metric_cls):
    """Two 'ranks' that each saw half the frames merge to the metric of all frames."""
    x, y = frames(4, 32, 32), noisy(frames(4, 32, 32), 0.05)

    def fed(idx):
        m = metric_cls()
        for i in idx:
            if metric_cls is BitsPerPixel:
                m.update(100 * (i + 1), 32 * 32)
            else:
                m.update(y[i : i + 1], x[i : i + 1])
        return m

    merged = fed([0, 1])
    merged.merge_state(fed([2, 3]))
    assert merged.compute().item() == pytest.approx(fed(range(4)).compute().item(), rel=1e-9)


def test_lpips_with_injected_network():
    m = LPIPS(model=TinyDistance())
    x = frames()
    m.update(x, x)
    assert m.compute().item() == 0.0
    m.reset()
    m.update(noisy(x, 0.1), x)
    assert m.compute().item() > 0


def _save_features(module: nn.Module, path) -> None:
    torch.save({f"features.{k}": v for k, v in module.state_dict().items()}, path)


def test_lpips_loads_trunk_from_hub_cache_and_names_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        WeightsNotFoundError, match=str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    ):
        LPIPS()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchvision

        alex = torchvision.models.alexnet(weights=None).features
    _save_features(alex, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    m = LPIPS()  # found in $TORCH_HOME/hub/checkpoints
    trunk = m.model.net.net.state_dict()
    assert torch.equal(trunk["slice2.3.weight"], alex[3].weight)  # the file's weights, not a fresh init
    x = frames(2, 32, 36)
    m.update(x, x)
    assert m.compute().item() == pytest.approx(0.0, abs=1e-7)
    m.reset()
    m.update(noisy(x, 0.2), x)
    assert m.compute().item() > 0
    with pytest.raises(MetricInputError, match="at least 32x32"):
        m.update(frames(1, 16, 16), frames(1, 16, 16))


def test_dists_loads_from_a_weights_folder(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth"):
        DISTS(weights=tmp_path)
    torch.manual_seed(0)
    _save_features(make_layers(cfgs["D"]), tmp_path / "vgg16-397923af.pth")
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "dists_weights.pt")):
        DISTS(weights=tmp_path)
    alpha, beta = torch.rand(1, 1475, 1, 1), torch.rand(1, 1475, 1, 1)
    total = alpha.sum() + beta.sum()
    torch.save({"alpha": alpha / total, "beta": beta / total}, tmp_path / "dists_weights.pt")
    m = DISTS(weights=tmp_path)
    x = frames(2, 32, 32)
    m.update(x, x)
    assert m.compute().item() == pytest.approx(0.0, abs=1e-5)
    m.reset()
    m.update(noisy(x, 0.2), x)
    assert 0 < m.compute().item() < 1


def test_frechet_distance_matches_scipy_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6))
    b = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    got = frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu1, s1))).item() == pytest.approx(
        0, abs=1e-9
    )


def clip_features(clips: torch.Tensor) -> torch.Tensor:
    """Stand-in for I3D: clips [N, T, 3, H, W] -> 4 pooled statistics [N, 4]."""
    return torch.stack(
        [
            clips.mean((1, 2, 3, 4)),
            clips.std((1, 2, 3, 4)),
            clips[:, :, 0].mean((1, 2, 3)),
            clips.amax((1, 2, 3, 4)),
        ],
        1,
    )


def test_fvd_with_injected_features_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(6, 4, 3, 8, 8, generator=g)
    preds = (target * 0.7 + 0.1).clamp(0, 1)
    m = FVD(feature_extractor=clip_features, feature_dim=4)
    m.update(target, target)
    assert m.compute().item() == pytest.approx(0.0, abs=1e-9)
    m = FVD(feature_extractor=clip_features, feature_dim=4)
    m.update(preds[:3], target[:3])
    other = FVD(feature_extractor=clip_features, feature_dim=4)
    other.update(preds[3:], target[3:])
    m.merge_state(other)  # as DDP would reduce two ranks
    fp, ft = clip_features(preds).double(), clip_features(target).double()
    expected = frechet_distance(fp.mean(0), torch.cov(fp.T), ft.mean(0), torch.cov(ft.T))
    assert m.compute().item() == pytest.approx(expected.item(), rel=1e-9) and expected > 0
    with pytest.raises(MetricInputError, match="at least 2 clips"):
        one = FVD(feature_extractor=clip_features, feature_dim=4)
        one.update(preds[:1], target[:1])
        one.compute()


class FakeI3D(nn.Module):
    """TorchScript stand-in with the StyleGAN-V I3D calling convention."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ):
        if rescale:
            x = x / 127.5 - 1
        return x.mean(dim=(2, 3, 4)).repeat(1, 2)  # [N, 6]


def test_fvd_reads_i3d_torchscript_and_calls_it_like_stylegan_v(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="i3d_torchscript.pt"):
        FVD(weights=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(FakeI3D()), str(tmp_path / "i3d_torchscript.pt"))
    m = FVD(weights=tmp_path, feature_dim=6)
    clips = torch.zeros(3, 9, 3, 8, 8)
    assert torch.allclose(m.extractor(clips), torch.full((3, 6), -1.0))  # [0, 1] -> [0, 255] -> [-1, 1]
    m.update(clips + 0.5, clips + torch.rand(3, 1, 1, 1, 1))
    assert math.isfinite(m.compute().item()) and m.compute().item() > 0
