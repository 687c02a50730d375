"""`charlstm train --tensorboard`: event files beside the checkpoints, or one line on how to install."""

from __future__ import annotations

import sys

import pytest

from charlstm.config import TrainConfig
from charlstm.errors import CharlstmError
from charlstm.runs import start
from charlstm.tensorboard_log import INSTALL, TensorBoardLog, require
from charlstm.trainer import TrainListener
from tests.helpers import TINY_MODEL, invoke


class Heard(TrainListener):
    """The listener TensorBoardLog wraps (the terminal printer in the CLI): what reached it."""

    def __init__(self):
        self.calls = []
        self.closed = False

    def started(self, trainer):
        self.calls.append("started")

    def stepped(self, step, loss, chars_per_sec):
        self.calls.append(("stepped", step))

    def evaluated(self, step, val_loss, improved):
        self.calls.append(("evaluated", step))

    def sampled(self, step, text):
        self.calls.append(("sampled", step))

    def close(self):
        self.closed = True


def test_losses_rate_speed_and_samples_reach_tensorboard_and_the_printer(tmp_path, small_corpus):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig(
        corpus=str(small_corpus),
        batch_size=8,
        seq_len=32,
        max_steps=20,
        max_time=0,
        eval_every=10,
        sample_every=10,
        device="cpu",
    )
    trainer = start({"layers": 1, "hidden": 32, "embedding": 16}, config, tmp_path)
    heard = Heard()
    log = TensorBoardLog(heard)
    trainer.run(log)
    log.close()

    assert heard.closed
    assert heard.calls[0] == "started"
    assert heard.calls[1:] == [("stepped", 10), ("evaluated", 10), ("sampled", 10), ("stepped", 20), ("evaluated", 20)]
    events = EventAccumulator(str(trainer.run_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"bits_per_char/train", "bits_per_char/validation", "learning_rate", "chars_per_sec"} <= scalars
    assert [e.step for e in events.Scalars("bits_per_char/validation")] == [10, 20]
    assert 1.0 < events.Scalars("bits_per_char/validation")[-1].value < 8.0
    (sample,) = events.Tensors("sample/text_summary")
    assert sample.step == 10
    samples = (trainer.run_dir / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 1, "the run folder keeps the same sample"


def test_without_tensorboard_the_option_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(CharlstmError) as error:
        require()
    assert str(error.value) == INSTALL
    assert (
        INSTALL == "--tensorboard needs the tensorboard package; install it with: pip install 'charlstm[tensorboard]'"
    )


def test_train_tensorboard_without_the_package_stops_before_training(capsys, monkeypatch, tmp_path, small_corpus):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    args = ["train", str(small_corpus), "--max-steps", "5", "--checkpoints", str(tmp_path), "--tensorboard"]
    code, out, err = invoke(capsys, *args, *TINY_MODEL)
    assert (code, out) == (1, "")
    assert err == f"charlstm: error: {INSTALL}\n"
    assert list(tmp_path.iterdir()) == [], "no run folder was started"
