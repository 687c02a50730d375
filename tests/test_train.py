import json
import math
from functools import partial

import pytest
import torch

from charlstm import budget, checkpoint
from charlstm.budget import BUDGET_STEPS, choose_shape, steps_in_budget
from charlstm.config import ModelConfig, TrainConfig, parse_duration
from charlstm.data import load_data
from charlstm.device import seed_device
from charlstm.errors import CharlstmError
from charlstm.runs import place, resume, start
from charlstm.trainer import Trainer, TrainingInterrupted, TrainListener
from tests.helpers import InterruptAt, invoke, run_cli, train_args

MODEL = {"layers": 2, "hidden": 32, "embedding": 16, "dropout": 0.2}


def config(corpus, **overrides):
    base = {
        "corpus": str(corpus),
        "batch_size": 8,
        "seq_len": 32,
        "max_steps": 40,
        "max_time": 0,
        "eval_every": 15,
        "sample_every": 0,
        "warmup_steps": 5,
        "device": "cpu",
    }
    return TrainConfig(**(base | overrides))


def weights(path):
    return checkpoint.load(path).weights


@pytest.mark.parametrize("batching", ["stream", "random"])
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path, small_corpus, batching):
    straight = start(MODEL, config(small_corpus, batching=batching), tmp_path / "a")
    straight.run()
    interrupted = start(MODEL, config(small_corpus, batching=batching), tmp_path / "b")
    with pytest.raises(TrainingInterrupted) as stop:
        interrupted.run(InterruptAt(20))
    assert checkpoint.load(stop.value.path).resume.step == 20
    resumed = resume(str(interrupted.run_dir), {})
    assert resumed.step == 20
    with pytest.raises(TrainingInterrupted):
        resumed.run(InterruptAt(30))
    resume(str(interrupted.run_dir), {}).run()
    a, b = weights(straight.run_dir / "last.pt"), weights(interrupted.run_dir / "last.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_training_lowers_the_loss_and_writes_the_run_folder(tmp_path, small_corpus):
    trainer = start(MODEL, config(small_corpus, max_steps=60, eval_every=30, lr=1e-2), tmp_path)
    result = trainer.run()
    names = sorted(p.name for p in trainer.run_dir.iterdir())
    assert names == ["best.pt", "config.json", "last.pt", "metrics.jsonl", "status.json"]
    assert json.loads((trainer.run_dir / "status.json").read_text())["state"] == "finished"
    metrics = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [30, 60]
    assert metrics[-1]["val_loss"] < math.log(len(trainer.data.vocabulary)) - 0.5
    assert result["best_val_loss"] == min(m["val_loss"] for m in metrics)
    assert json.loads((trainer.run_dir / "config.json").read_text())["model"]["hidden"] == 32


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, small_corpus):
    class Poison(TrainListener):
        def evaluated(self, step, val_loss, improved):
            with torch.no_grad():
                trainer.model.decoder.bias[0] = math.nan

    trainer = start(MODEL, config(small_corpus, eval_every=10), tmp_path)
    with pytest.raises(CharlstmError, match="loss became nan by step 20"):
        trainer.run(Poison())
    saved = checkpoint.load(trainer.run_dir / "last.pt")
    assert saved.resume.step == 10
    assert all(torch.isfinite(v).all() for v in saved.weights.values())


def test_resume_refuses_options_that_would_change_the_run(tmp_path, small_corpus):
    trainer = start(MODEL, config(small_corpus, max_steps=15), tmp_path)
    trainer.run()
    with pytest.raises(CharlstmError, match="--lr"):
        resume(str(trainer.run_dir), {"lr": 0.5})
    longer = resume(str(trainer.run_dir), {"max_steps": 30})
    assert longer.config.max_steps == 30 and longer.step == 15


def test_resume_refuses_a_corpus_that_changed(tmp_path, small_corpus):
    corpus = tmp_path / "c.txt"
    corpus.write_text(small_corpus.read_text())
    trainer = start(MODEL, config(corpus, max_steps=15), tmp_path)
    trainer.run()
    corpus.write_text(small_corpus.read_text()[::-1])
    with pytest.raises(CharlstmError, match="corpus has changed"):
        resume(str(trainer.run_dir), {})


def test_init_from_keeps_the_vocabulary_and_the_architecture(tmp_path, small_corpus):
    """On text with no new characters the vocabulary and every weight carry over as they are
    (a text with new ones grows it: tests/test_grow.py); the shape may not change."""
    source = start(MODEL, config(small_corpus, max_steps=15), tmp_path)
    source.run()
    tuned = start({}, config(small_corpus, max_steps=5), tmp_path, init_from=str(source.run_dir / "last.pt"))
    assert tuned.data.vocabulary == source.data.vocabulary and tuned.data.added == ""
    for name, value in source.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[name], value), name
    with pytest.raises(CharlstmError, match="--hidden"):
        start({"hidden": 64}, config(small_corpus), tmp_path, init_from=str(source.run_dir / "last.pt"))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("45", 45), ("0", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "-5m", ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(CharlstmError, match="duration"):
        parse_duration(text)


def test_ctrl_c_during_a_save_waits_for_the_save_and_is_not_lost():
    import os
    import signal

    from charlstm.stopping import sigint_deferred

    finished = []
    with pytest.raises(KeyboardInterrupt), sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("save completed")
    assert finished == ["save completed"]
    with sigint_deferred(deliver=False):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_validation_only_last_is_written_and_sampling_uses_it(tmp_path, small_corpus):
    trainer = start(MODEL, config(small_corpus, max_steps=10, eval_every=5, val_frac=0.0), tmp_path)
    result = trainer.run()
    assert result["best_val_loss"] == math.inf
    assert sorted(p.name for p in trainer.run_dir.glob("*.pt")) == ["last.pt"]
    assert checkpoint.resolve(trainer.run_dir) == trainer.run_dir / "last.pt"
    assert "val_loss" not in json.loads((trainer.run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_the_budget_picks_the_largest_shape_that_still_gets_enough_updates():
    # Steps each shape's run would get, as multiples of BUDGET_STEPS.
    needed = {(128, 16): 4.0, (192, 16): 2.4, (256, 16): 1.6, (256, 32): 0.9, (384, 32): 0.45, (512, 32): 0.2}
    probed = []

    def steps(hidden, batch, scale=1.0):
        probed.append((hidden, batch))
        return needed[hidden, batch] * BUDGET_STEPS * scale

    assert choose_shape(steps) == (256, 16)
    assert probed == [(128, 16), (192, 16), (256, 16), (256, 32)], "probing stops at the first shape too slow"
    assert choose_shape(partial(steps, scale=300 / 90)) == (384, 32)
    assert choose_shape(partial(steps, scale=10 / 90)) == (128, 16), "the smallest when none fits"
    assert choose_shape(partial(steps, scale=40)) == (512, 32)


def test_a_budget_pays_for_its_evaluations():
    """100 s at 25 steps/s with 2 s evaluations every 250 steps: each 10 s of training
    costs 2 s more, and the final evaluation is held back, so 2,041 steps, not 2,500."""
    assert steps_in_budget(100, 25.0, 0.0, 250) == pytest.approx(2_500)
    assert steps_in_budget(100, 25.0, 2.0, 250) == pytest.approx(98 / (0.04 + 2 / 250))
    assert int(steps_in_budget(100, 25.0, 2.0, 250)) == 2_041
    assert steps_in_budget(1, 25.0, 2.0, 250) == 0.0 and steps_in_budget(100, 0.0, 0.0, 250) == 0.0


def test_a_paced_budget_pays_its_share_for_evaluations():
    """Paced at 5% (a run bounded by time alone), 90 s at 30 steps/s with 1 s evaluations
    every 250 steps trains for 85.5 s: 2,565 steps, where every 250 steps would leave 2,383.
    Where one evaluation every 250 steps is cheaper than the share, that is what it costs;
    where the first and final evaluations alone take more than the share, they count."""
    assert int(steps_in_budget(90, 30.0, 1.0, 250)) == 2_383
    assert steps_in_budget(90, 30.0, 1.0, 250, share=0.05) == pytest.approx(85.5 * 30)
    assert steps_in_budget(90, 30.0, 0.01, 250, share=0.05) == steps_in_budget(90, 30.0, 0.01, 250)
    assert steps_in_budget(20, 30.0, 1.0, 250, share=0.05) == pytest.approx(18 * 30)


def test_a_run_with_no_shape_given_is_sized_for_its_budget(tmp_path, small_corpus, capsys, monkeypatch):
    """The step rates are handed in (as if measured: 3,000 steps/s at 128x16, slower as the
    model grows), so the choice is the same on any machine: 2x192 gets 2,667 steps in 2 s."""

    def steps_per_second(trainer: Trainer) -> float:
        return 3000 * (128 / trainer.model.config.hidden) ** 2 * 16 / trainer.config.batch_size

    sizing = partial(budget.size_for_budget, measure=steps_per_second, measure_evaluation=lambda t: 0.0)
    monkeypatch.setattr(budget, "size_for_budget", sizing)
    code, _, err = invoke(capsys, "train", str(small_corpus), "--max-time", "2s", "--checkpoints", str(tmp_path))
    assert code == 0, err
    assert "sized for the 2 s budget: hidden 192, batch 16" in err
    (run,) = tmp_path.iterdir()
    written = json.loads((run / "config.json").read_text())
    assert (written["model"]["hidden"], written["train"]["batch_size"]) == (192, 16)
    assert written["sized_for_budget"]["hidden"] == 192
    assert written["sized_for_budget"]["steps_per_second"] == {"128x16": 3000.0, "192x16": 1333.33, "256x16": 750.0}
    fixed = run_cli(
        "train", str(small_corpus), "--max-time", "1s", "--hidden", "64", "--checkpoints", str(tmp_path / "fixed")
    )
    assert fixed.returncode == 0 and "sized for" not in fixed.stderr
    (run,) = (tmp_path / "fixed").iterdir()
    assert json.loads((run / "config.json").read_text())["sized_for_budget"] is None


def test_sizing_skips_shapes_with_more_streams_than_the_corpus_can_fill(tmp_path):
    """1,500 characters fill 16 streams of 65 but not 32: the probe must not fail the run."""
    path = tmp_path / "short.txt"
    path.write_text(("abcdefghij klmnop\n" * 100)[:1_500])
    config = TrainConfig(corpus=str(path), max_time=1e9, seq_len=64)
    trainer = start({"layers": 1, "embedding": 8}, config, tmp_path / "runs", size_for_budget=True)
    assert (trainer.model.config.hidden, trainer.config.batch_size) == (256, 16)
    assert "256x32" not in trainer.sizing.steps_per_second


def test_seeding_the_device_draws_what_torch_manual_seed_drew():
    """Dropout is seeded per step with the device's generator alone (torch.manual_seed
    costs ~100x more); on the CPU the draws are those of torch.manual_seed, so runs
    saved before the change resume exactly."""
    seed_device(torch.device("cpu"), 1234)
    ours = torch.nn.functional.dropout(torch.ones(64), 0.5)
    torch.manual_seed(1234)
    theirs = torch.nn.functional.dropout(torch.ones(64), 0.5)
    assert torch.equal(ours, theirs)


def test_the_trainer_uses_a_fused_adamw_where_pytorch_has_one(small_corpus):
    """The per-parameter AdamW loop cost 1.2-2.2 ms a step on the CPU, the fused one 0.3-0.5."""
    config = TrainConfig(corpus=str(small_corpus), max_steps=1, max_time=0, device="cpu", batch_size=4, seq_len=16)
    data = load_data(config)
    trainer = Trainer(ModelConfig(vocab_size=len(data.vocabulary), hidden=16), config, data, None, place(config))
    assert trainer.optimizer.defaults["fused"] is (True if torch.__version__ >= "2.4" else None)


def test_the_speed_shown_after_an_evaluation_leaves_the_evaluation_out(tmp_path, small_corpus, monkeypatch):
    """chars/s is training speed: the steps right after an evaluation used to be timed
    from before it, so the bar's speed dropped after every evaluation. The trainer's clock
    is a fake one: each step takes 10 ms of it, each evaluation 5 s."""

    class Speeds(TrainListener):
        def __init__(self):
            self.seen = {}

        def stepped(self, step, loss, chars_per_sec):
            self.seen[step] = chars_per_sec

    now = [0.0]
    trainer = start(MODEL, config(small_corpus, max_steps=60, eval_every=20), tmp_path)
    trainer.clock = lambda: now[0]
    train_step, evaluate = trainer.train_step, trainer.evaluate

    def step():
        now[0] += 0.01
        return train_step()

    def slow_evaluation():
        now[0] += 5.0
        return evaluate()

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer, "evaluate", slow_evaluation)
    speeds = Speeds()
    trainer.run(speeds)
    chars_per_step = trainer.config.batch_size * trainer.config.seq_len
    assert list(speeds.seen) == [10, 20, 30, 40, 50, 60]
    assert speeds.seen == pytest.approx(dict.fromkeys(speeds.seen, chars_per_step / 0.01)), "as at 30 and 50"
    assert trainer.elapsed == pytest.approx(60 * 0.01), "nor does the run's elapsed training time count them"


@pytest.mark.parametrize(
    ("text", "options", "refusal"),
    [
        ("a tiny text\n", [], "the training split (11 characters) is shorter than 8 streams"),
        ("abcdefghij klmnop\n" * 60, ["--val-frac", "0.01"], "the validation split (10 characters)"),
    ],
)
def test_a_run_that_cannot_start_leaves_no_run_folder(tmp_path, capsys, text, options, refusal):
    """A run refused before its first step (its text too short for its streams or for one
    validation window) left an empty checkpoints/<corpus>-<time>/ behind, which `charlstm runs`
    neither lists nor mentions."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(text)
    runs = tmp_path / "runs"
    runs.mkdir()
    code, _, err = invoke(capsys, *train_args(corpus, runs, *options, steps=5))
    assert code == 1 and refusal in err, err
    assert list(runs.iterdir()) == []
