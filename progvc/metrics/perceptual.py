"""Learned perceptual distances: LPIPS (the ``lpips`` package) and DISTS (``piq``).

Both need ImageNet backbones that torchvision would download; here they are only ever read from
disk (see :mod:`progvc.metrics.weights`), and a missing file raises
:class:`~progvc.errors.WeightsNotFoundError` naming it. The feature network can also be
injected (``model=``), which is how the tests run them with small random networks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import piq
import torch
from piq.perceptual import VGG16_LAYERS, ContentLoss
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from progvc.errors import ConfigError, WeightsNotFoundError
from progvc.metrics.base import FrameMetric
from progvc.metrics.weights import load_state_dict, locate_weights

#: torchvision ImageNet checkpoints of the LPIPS trunks, by ``net`` name.
LPIPS_TRUNKS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
#: smallest frame side each trunk can score (the pooling stack shrinks smaller inputs to nothing).
LPIPS_MIN_SIZE = {"alex": 32, "vgg": 16}
VGG16_FILE = "vgg16-397923af.pth"
DISTS_FILE = "dists_weights.pt"


def _features_state(trunk: dict[str, Tensor], names: dict[str, str], path: Path) -> dict[str, Tensor]:
    """A state dict ``{own key: trunk["features." + name]}`` from a torchvision checkpoint ``trunk``."""
    missing = [n for n in names.values() if f"features.{n}" not in trunk]
    if missing:
        raise WeightsNotFoundError(
            f"{path} lacks features.{missing[0]} (not a torchvision checkpoint of this net?)"
        )
    return {key: trunk[f"features.{n}"] for key, n in names.items()}


class _LpipsDistance(nn.Module):
    """(x, y) in ``[0, 1]`` -> LPIPS ``[N]`` through an :class:`lpips.LPIPS` network."""

    def __init__(self, net: lpips.LPIPS) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(x, y, normalize=True).flatten()


def build_lpips(net: str = "alex", weights: str | Path | None = None) -> nn.Module:
    """LPIPS v0.1 (Zhang et al. 2018) from local files: (x, y) ``[N, 3, H, W]`` in ``[0, 1]`` -> ``[N]``.

    The linear heads ship inside the ``lpips`` package; the trunk is torchvision's ImageNet
    checkpoint (:data:`LPIPS_TRUNKS`) read from ``weights`` (a folder or the file) or the torch hub cache.
    """
    if net not in LPIPS_TRUNKS:
        raise ConfigError(f"LPIPS net must be one of {sorted(LPIPS_TRUNKS)}, got {net!r}")
    trunk_path = locate_weights(LPIPS_TRUNKS[net], weights)
    with warnings.catch_warnings():  # torchvision's notice about the legacy `pretrained` argument
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    # lpips names trunk layers "slice<j>.<i>.<param>" after torchvision's "features.<i>.<param>"
    names = {key: key.split(".", 1)[1] for key in model.net.state_dict()}
    model.net.load_state_dict(_features_state(load_state_dict(trunk_path), names, trunk_path))
    heads = load_state_dict(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth")
    result = model.load_state_dict(heads, strict=False)
    if result.unexpected_keys:
        raise ConfigError(f"LPIPS heads do not fit the {net} trunk: {result.unexpected_keys[:3]}")
    return _LpipsDistance(model.eval().requires_grad_(False))


class LPIPS(FrameMetric):
    """Learned perceptual image patch similarity, per frame, averaged (lower is better, 0 for identical frames).

    Args:
        net: trunk, ``"alex"`` (the usual choice for evaluation) or ``"vgg"``.
        weights: folder holding the trunk checkpoint (or the file); default: the torch hub cache.
        model: a ready distance network (x, y) ``[N, 3, H, W]`` in ``[0, 1]`` -> ``[N]``
            that replaces the one built from ``net`` and ``weights``.
    """

    higher_is_better = False

    def __init__(
        self, net: str = "alex", weights: str | Path | None = None, model: nn.Module | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if model is None:
            model = build_lpips(net, weights)
            self.min_size = LPIPS_MIN_SIZE[net]
        self.model = model

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        return self.model(preds, target).reshape(preds.shape[0], -1).mean(dim=1)


class _PiqDists(piq.DISTS):
    """piq's DISTS on a given VGG16 feature stack and given alpha/beta, so that nothing is downloaded."""

    def __init__(self, features: nn.Module, alpha: Tensor, beta: Tensor) -> None:
        layers = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
        channels = [3, 64, 128, 256, 512, 512]
        layer_weights = [*torch.split(alpha, channels, dim=1), *torch.split(beta, channels, dim=1)]
        # piq.DISTS.__init__ fetches its weights from the internet; its parent takes them as arguments
        ContentLoss.__init__(
            self,
            features,
            layers=[VGG16_LAYERS[name] for name in layers],
            weights=layer_weights,
            replace_pooling=True,
            reduction="none",
            normalize_features=False,
            allow_layers_weights_mismatch=True,
        )


def build_dists(weights: str | Path | None = None) -> nn.Module:
    """DISTS (Ding et al. 2020) from local files: (x, y) ``[N, 3, H, W]`` in ``[0, 1]`` -> distance ``[N]``.

    Needs torchvision's VGG16 checkpoint and piq's ``dists_weights.pt`` in the folder ``weights``
    (default: the torch hub cache).
    """
    if weights is not None and Path(weights).is_file():
        raise ConfigError(f"DISTS needs a folder with {VGG16_FILE} and {DISTS_FILE}, got the file {weights}")
    vgg_path = locate_weights(VGG16_FILE, weights)
    dists_path = locate_weights(DISTS_FILE, weights)
    features = make_layers(cfgs["D"], batch_norm=False)
    names = {key: key for key in features.state_dict()}
    features.load_state_dict(_features_state(load_state_dict(vgg_path), names, vgg_path))
    alpha_beta = load_state_dict(dists_path)
    if not {"alpha", "beta"} <= set(alpha_beta):
        raise WeightsNotFoundError(f"{dists_path} lacks 'alpha' and 'beta' (not piq's DISTS weights?)")
    return _PiqDists(features, alpha_beta["alpha"], alpha_beta["beta"]).eval().requires_grad_(False)


class DISTS(FrameMetric):
    """Deep image structure and texture similarity as a distance (lower is better, 0 for identical frames).

    Frames larger than 256 pixels on the short side are downscaled to it first (as piq does).

    Args:
        weights: folder holding ``vgg16-397923af.pth`` and ``dists_weights.pt``; default: the torch hub cache.
        model: a ready distance network (x, y) ``[N, 3, H, W]`` in ``[0, 1]`` -> ``[N]``.
    """

    higher_is_better = False

    def __init__(self, weights: str | Path | None = None, model: nn.Module | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model if model is not None else build_dists(weights)

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        return self.model(preds, target).reshape(preds.shape[0], -1).mean(dim=1)
