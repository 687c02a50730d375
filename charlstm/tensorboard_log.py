"""`charlstm train --tensorboard`: TensorBoard event files in the run folder, beside the checkpoints.

A `TrainListener` that writes what the trainer reports (training and validation loss in
bits per character, the learning rate, chars/s, and each sample as text) and hands every
call on to the listener it wraps (the terminal printer), so the two compose and the trainer
knows of neither. `tensorboard --logdir checkpoints` then shows every run by its folder name.

TensorBoard is an optional extra (`pip install 'charlstm[tensorboard]'`): `require` says so
in one line before any training starts, rather than failing at the first write.
"""

from __future__ import annotations

import math
from typing import Any

from charlstm.errors import CharlstmError
from charlstm.trainer import TrainListener

INSTALL = "--tensorboard needs the tensorboard package; install it with: pip install 'charlstm[tensorboard]'"
LN2 = math.log(2)


def require() -> type:
    """PyTorch's SummaryWriter, or one clear error when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard raises it when the tensorboard package is missing
        raise CharlstmError(INSTALL) from None
    return SummaryWriter


class TensorBoardLog(TrainListener):
    """Writes each report to event files in the run folder, then passes it to `inner`."""

    def __init__(self, inner: TrainListener | None = None):
        self.writer_class = require()
        self.inner = inner or TrainListener()
        self.writer: Any = None
        self.trainer: Any = None

    def started(self, trainer) -> None:
        self.trainer = trainer
        self.writer = self.writer_class(log_dir=str(trainer.run_dir))
        m, c = trainer.model.config, trainer.config
        settings = f"{m.cell} {m.layers}x{m.hidden}, batch {c.batch_size}x{c.seq_len}, peak lr {c.lr:g}"
        self.writer.add_text("settings", settings, trainer.step)
        self.inner.started(trainer)

    def stepped(self, step: int, loss: float, chars_per_sec: float) -> None:
        self.writer.add_scalar("bits_per_char/train", loss / LN2, step)
        self.writer.add_scalar("learning_rate", self.trainer.learning_rate(), step)
        self.writer.add_scalar("chars_per_sec", chars_per_sec, step)
        self.inner.stepped(step, loss, chars_per_sec)

    def evaluated(self, step: int, val_loss: float | None, improved: bool) -> None:
        if val_loss is not None:
            self.writer.add_scalar("bits_per_char/validation", val_loss / LN2, step)
        self.writer.flush()  # an evaluation is a checkpoint: what TensorBoard shows keeps up with it
        self.inner.evaluated(step, val_loss, improved)

    def sampled(self, step: int, text: str) -> None:
        # TensorBoard renders text as Markdown; indented, a sample keeps its lines and spaces.
        self.writer.add_text("sample", "\n".join("    " + line for line in text.split("\n")), step)
        self.inner.sampled(step, text)

    def close(self) -> None:
        """Write what is buffered and close the files; closes `inner` too when it can be."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
