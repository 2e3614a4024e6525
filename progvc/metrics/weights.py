"""Where pretrained weights of the learned metrics are looked for. Nothing is ever downloaded.

Each file keeps the name its publisher gave it, so a torch hub cache filled on another machine
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``) works as is.
"""

from __future__ import annotations

from pathlib import Path

import torch

from progvc.errors import WeightsNotFoundError

#: file name -> where a user can get it (the metric never fetches it itself).
WEIGHT_FILES: dict[str, str] = {
    "alexnet-owt-7be5be79.pth": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16-397923af.pth": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "dists_weights.pt": "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/dists_weights.pt",
    "i3d_torchscript.pt": "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt",
}


def hub_checkpoints_dir() -> Path:
    """The torch hub cache folder for checkpoints (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def locate_weights(filename: str, where: str | Path | None = None) -> Path:
    """The path of weight file ``filename``.

    Args:
        filename: the publisher's file name, a key of :data:`WEIGHT_FILES`.
        where: a folder holding the file under that name, or the file itself; ``None`` looks in
            :func:`hub_checkpoints_dir`.

    Raises:
        WeightsNotFoundError: naming the exact path that is missing and where to get the file.
    """
    if where is not None and Path(where).is_file():
        return Path(where)
    folder = Path(where) if where is not None else hub_checkpoints_dir()
    path = folder / filename
    if path.is_file():
        return path
    source = WEIGHT_FILES.get(filename)
    hint = f" (download it from {source} on a machine with internet access)" if source else ""
    raise WeightsNotFoundError(f"missing weight file {path}{hint}")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from ``path``, loaded on the CPU with ``weights_only=True``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsNotFoundError(f"{path} is not a state dict (a wrong file?)")
    return state
