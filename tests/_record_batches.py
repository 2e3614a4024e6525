"""A callback for tests run in a subprocess: records which packed items every rank trained on."""

from pathlib import Path

from lightning.pytorch import Callback


class RecordBatches(Callback):
    """Appends, per training batch, the top-left value of every clip's first frame to ``folder/rank{R}.txt``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        values = batch[:, 0, 0, 0, 0].tolist()
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as fh:
            fh.write(" ".join(map(str, values)) + "\n")
