"""``progvc fit | validate | test``: Lightning's CLI over :class:`ProgVCModule` and :class:`VideoDataModule`.

A YAML recipe names the tokenizer and the context model with ``class_path`` / ``init_args``
(any subclass works, plug-ins included: their entry points are loaded before parsing, so a
plug-in's short class name resolves too). On top of Lightning's defaults:

* the context model's ``latent_dim``, ``groups``, ``alphabet`` and ``num_scales`` are linked to
  the tokenizer's :class:`~progvc.tokenizers.TokenSpec` and are not written in recipes, so
  swapping either component is a one-line change;
* a :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (key ``checkpoint``) with
  ``save_last=True`` writing to ``<default_root_dir>/checkpoints``, so that
  ``--ckpt_path last`` resumes a stopped run at the step it reached;
* when the recipe sets no logger, a CSV logger and a TensorBoard logger under
  ``<default_root_dir>/logs``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from progvc.tokenizers import Tokenizer
from progvc.training.data import VideoDataModule
from progvc.training.module import ProgVCModule

#: arguments of every :class:`~progvc.context_models.ContextModel` that come from the tokenizer's spec.
SPEC_ARGS = ("latent_dim", "groups", "alphabet", "num_scales")


def _spec_value(tokenizer: Tokenizer, key: str) -> int:
    return getattr(tokenizer.spec, key)


def load_plugins() -> None:
    """Import every tokenizer and context model, plug-ins included, so that recipes can name them."""
    from progvc.context_models import CONTEXT_MODELS
    from progvc.tokenizers import TOKENIZERS

    for registry in (TOKENIZERS, CONTEXT_MODELS):
        registry.names()


class ProgVCCLI(LightningCLI):
    """LightningCLI with progvc's model and data module, a resumable checkpoint callback and default loggers.

    Args:
        args: command-line arguments, sub-command first (``["fit", "--config", "recipes/tiny.yaml"]``);
            ``None`` reads ``sys.argv``.
        run: run the sub-command (``False`` only builds the objects, which tests use).
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        load_plugins()
        with warnings.catch_warnings():
            # args and sys.argv are the same list when called from the progvc console script
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
            super().__init__(
                ProgVCModule,
                VideoDataModule,
                args=None if args is None else list(args),
                run=run,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": "progvc"},
                auto_configure_optimizers=False,
            )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the context model's shape arguments follow the tokenizer: a recipe names them once
        for key in SPEC_ARGS:
            parser.link_arguments(
                "model.tokenizer",
                f"model.context_model.init_args.{key}",
                compute_fn=functools.partial(_spec_value, key=key),
                apply_on="instantiate",
            )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "trainer.default_root_dir": "runs/default"})

    def _root(self) -> Path:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        return Path(cfg.trainer.default_root_dir or os.getcwd())

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = str(self._root() / "checkpoints")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.logger in (None, True):
            root = self._root()
            kwargs["logger"] = [CSVLogger(root, name="logs"), TensorBoardLogger(root, name="tensorboard")]
        return super().instantiate_trainer(**kwargs)
