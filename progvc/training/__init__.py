"""Training with PyTorch Lightning: the only floor of progvc that imports Lightning.

* :class:`ProgVCModule` -- LightningModule: tokenizer, context-model and joint stages.
* :class:`VideoDataModule` -- LightningDataModule: videos and photographs, random clips and crops.
* :class:`ProgVCCLI` -- LightningCLI behind ``progvc fit | validate | test --config recipe.yaml``.
"""

from progvc.training.cli import ProgVCCLI
from progvc.training.data import VideoDataModule
from progvc.training.module import ProgVCModule

__all__ = ["ProgVCCLI", "ProgVCModule", "VideoDataModule"]
