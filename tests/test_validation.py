"""Bounded validation: what a periodic evaluation scores, and how its time counts on --max-time."""

import itertools
import json
import math
from dataclasses import replace

import pytest
import torch

from charlstm import corpus
from charlstm.checkpoint import Checkpoint
from charlstm.config import TrainConfig
from charlstm.evaluation import SpreadStreams, stream_loss, validation_batches
from charlstm.progress import TrainingPrinter, run_line
from charlstm.runs import start

MODEL = {"layers": 1, "hidden": 16, "embedding": 8}
TINY_SHAKESPEARE_VAL = 111_539  # held-out characters of tiny-shakespeare at --val-frac 0.1


def config(corpus_path, **overrides):
    base = {
        "corpus": str(corpus_path),
        "batch_size": 8,
        "seq_len": 32,
        "max_steps": 20,
        "max_time": 0,
        "eval_every": 10,
        "sample_every": 0,
        "warmup_steps": 5,
        "device": "cpu",
        "precision": "fp32",
    }
    return TrainConfig(**(base | overrides))


def tokens(n: int) -> torch.Tensor:
    """A split whose every character says where it is (mod 251), as the token cache's uint8."""
    return (torch.arange(n) % 251).to(torch.uint8)


def test_a_long_split_is_scored_on_the_same_spread_out_characters_every_time():
    split = tokens(21_074_818)
    first = validation_batches(split, 32, 64, TrainConfig().val_chars)
    again = validation_batches(split, 32, 64, TrainConfig().val_chars)
    assert isinstance(first, SpreadStreams)
    assert TrainConfig().val_chars - 32 * 64 < first.targets.numel() <= TrainConfig().val_chars
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert torch.equal(first.targets[:, :-1], first.inputs[:, 1:]), "each target is the next character"
    starts = [int(i) for i in first.inputs[:, 0]]
    assert starts[0] == 0
    whole = torch.arange(21_074_818) % 251
    gap = (21_074_818 - 1 - first.inputs.shape[1]) // 31
    for row in range(32):  # stretches spread over the whole split, the last ending near its end
        assert torch.equal(first.inputs[row].long(), whole[row * gap : row * gap + first.inputs.shape[1]])
    assert 31 * gap + first.inputs.shape[1] > 21_074_818 - 32
    windows = [first.batch(w) for w in range(len(first))]
    assert sum(b.targets.numel() for b in windows) == first.targets.numel()
    assert [b.carry_state for b in windows] == [False] + [True] * (len(windows) - 1)


def test_a_small_split_is_still_scored_whole_so_its_numbers_do_not_change():
    split = tokens(TINY_SHAKESPEARE_VAL)
    bounded = validation_batches(split, 16, 64, TrainConfig().val_chars)
    before = corpus.validation_streams(split, 16, 64)
    assert isinstance(bounded, corpus.StreamBatches)
    assert torch.equal(bounded.inputs, before.inputs) and len(bounded) == len(before)


def test_val_chars_zero_scores_the_whole_split_however_long():
    split = tokens(2_000_000)
    whole = validation_batches(split, 32, 64, 0)
    assert isinstance(whole, corpus.StreamBatches)
    assert whole.targets.numel() >= 2_000_000 - 32


def test_the_trainer_scores_the_bounded_part_and_the_whole_split_when_asked(tmp_path, small_corpus):
    trainer = start(MODEL, config(small_corpus, val_chars=1_000, final_val="whole"), tmp_path)
    scored = trainer.validation_scored()
    assert scored == {"characters": 1_000, "of": len(trainer.data.val), "whole": False, "final": "whole"}
    assert trainer.evaluate() == trainer.evaluate(), "the same characters every time"
    streams = corpus.validation_streams(trainer.data.val, 8, 32)
    total, count = stream_loss(trainer.model, streams, trainer.device, trainer.precision).tolist()
    assert trainer.evaluate(whole=True) == pytest.approx(total / count, rel=1e-12)
    assert trainer.evaluate() != pytest.approx(total / count, rel=1e-9), "the bounded part is not the whole"
    assert "each evaluation scores the same 1,000 of them; all of them at the end" in run_line(trainer)
    written = json.loads((trainer.run_dir / "config.json").read_text())
    assert written["validation"] == scored and written["train"]["val_chars"] == 1_000

    result = trainer.run()
    lines = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20, 20]
    assert "val_loss" in lines[1] and lines[2].keys() == {"step", "full_val_loss", "full_val_bpc"}
    assert lines[2]["full_val_loss"] == pytest.approx(trainer.evaluate(whole=True), rel=1e-12)
    assert result["full_val_loss"] == lines[2]["full_val_loss"]


def test_a_split_within_the_bound_is_whole_and_not_scored_twice_at_the_end(tmp_path, small_corpus):
    trainer = start(MODEL, config(small_corpus, max_steps=10, final_val="whole"), tmp_path)
    assert trainer.validation_scored()["whole"] and "each evaluation scores" not in run_line(trainer)
    result = trainer.run()
    assert "full_val_loss" not in result
    assert len((trainer.run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_evaluations_count_on_the_time_budget_and_the_run_ends_within_it(tmp_path, small_corpus, monkeypatch, capsys):
    """A fake clock: each step takes 1 s, each evaluation (with its checkpoint) 20 s, the
    budget is 100 s. Evaluations count, and the last one's time is kept back for the final
    one, so the whole run, final evaluation included, fits in 100 s. Before, evaluations
    counted nothing: 100 s of steps and five evaluations, 200 s in all. (Unpaced: the share
    evaluations may take is the whole budget here; pacing has its own tests below.)"""
    now = [0.0]
    trainer = start(MODEL, config(small_corpus, max_steps=0, max_time=100, eval_every=10, eval_share=1.0), tmp_path)
    trainer.clock = lambda: now[0]
    train_step, evaluate = trainer.train_step, trainer.checkpoint_and_evaluate
    evaluated_at = []

    def step():
        now[0] += 1.0
        return train_step()

    def slow_evaluation(listener, loss):
        evaluated_at.append((trainer.step, now[0]))
        now[0] += 20.0
        return evaluate(listener, loss)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer, "checkpoint_and_evaluate", slow_evaluation)
    result = trainer.run()
    assert now[0] <= 100, "wall time, final evaluation included, within --max-time"
    assert trainer.elapsed == 40 and trainer.evaluating == 60 and trainer.budget_spent() == now[0] == 100
    # at step 30 (70 s spent) an evaluation would leave no room for the final one: skipped
    assert evaluated_at == [(10, 10.0), (20, 40.0), (40, 80.0)]
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["evaluating"] for r in records] == [0.0, 20.0, 40.0]
    assert trainer.learning_rate() == pytest.approx(trainer.config.lr * 0.5 * (1 + math.cos(math.pi * 1.0)))
    TrainingPrinter(interactive=False).finished(trainer.run_dir, result)
    assert "done: 40 steps in 40 s + 60 s evaluating, best val" in capsys.readouterr().err, "the budget, whole"
    TrainingPrinter(interactive=False).finished(trainer.run_dir, result | {"evaluating": 0.3})
    assert "done: 40 steps in 40 s, best val" in capsys.readouterr().err, "no '+ 0 s evaluating'"


def test_evaluating_time_survives_a_resume(tmp_path, small_corpus):
    trainer = start(MODEL, config(small_corpus, max_steps=10), tmp_path)
    trainer.evaluating = 12.5
    saved = trainer.to_checkpoint()
    other = start(MODEL, config(small_corpus, max_steps=10), tmp_path)
    other.restore(saved)
    assert other.evaluating == 12.5
    payload = saved.to_payload()
    del payload["resume"]["evaluating"]  # a checkpoint from before evaluations counted
    other.restore(Checkpoint.from_payload(payload, "old.pt"))
    assert other.evaluating == 0.0


def test_val_chars_may_change_on_resume_and_is_checked(tmp_path, small_corpus):
    from charlstm.errors import CharlstmError
    from charlstm.runs import resume

    trainer = start(MODEL, config(small_corpus, max_steps=10), tmp_path)
    trainer.run()
    resumed = resume(str(trainer.run_dir), {"max_steps": 20, "val_chars": 500})
    assert resumed.validation_scored()["characters"] < 500
    with pytest.raises(CharlstmError, match="^val_chars must be >= 0"):
        replace(TrainConfig(), val_chars=-1)
    with pytest.raises(CharlstmError, match="^final_val must be bounded or whole, got 'all'"):
        replace(TrainConfig(), final_val="all")


def test_a_split_shorter_than_one_window_is_one_clear_line():
    """charlstm eval scores any text, however short; a run's validation split of 6 characters
    (--val-frac 0.0001 of 60,000) was accepted once the streams learned to cover short texts."""
    from charlstm.errors import CharlstmError

    with pytest.raises(CharlstmError, match=r"validation split \(6 characters\) is shorter than one window of 33"):
        validation_batches(tokens(6), 8, 32, TrainConfig().val_chars)
    assert len(validation_batches(tokens(33), 8, 32, TrainConfig().val_chars)) == 1


def paced_run(tmp_path, small_corpus, monkeypatch, budget, step_seconds, evaluation_seconds, **overrides):
    """A run on a fake clock: each step takes `step_seconds`, each evaluation (with its
    checkpoint) `evaluation_seconds`. Returns the trainer, run to its end, and the (step,
    seconds spent) of each evaluation, the final one included."""
    now = [0.0]
    settings = {"max_steps": 0, "max_time": budget, "eval_every": 10} | overrides
    trainer = start(MODEL, config(small_corpus, **settings), tmp_path)
    trainer.clock = lambda: now[0]
    train_step, evaluate = trainer.train_step, trainer.checkpoint_and_evaluate
    evaluated_at = []

    def step():
        now[0] += step_seconds
        return train_step()

    def evaluation(listener, loss):
        evaluated_at.append((trainer.step, round(now[0], 6)))
        now[0] += evaluation_seconds
        return evaluate(listener, loss)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer, "checkpoint_and_evaluate", evaluation)
    trainer.run()
    return trainer, evaluated_at


def test_a_time_budget_spends_at_most_its_share_evaluating(tmp_path, small_corpus, monkeypatch):
    """90 s, a step 0.03 s, an evaluation 1 s, every 10 steps asked for: unpaced, an evaluation
    would follow every 0.3 s of training (77% of the budget). Paced at 5%, the first comes at
    step 10, the next once 5% of the time spent covers it, the last one and the final one,
    and the whole run evaluates within 4.5 s. Before, 12 evaluations took 14-16% of a 90 s run."""
    trainer, evaluated_at = paced_run(tmp_path, small_corpus, monkeypatch, 90, 0.03, 1.0)
    assert trainer.config.eval_share == 0.05, "the default"
    assert trainer.evaluating <= 0.05 * 90 and trainer.budget_spent() <= 90 + 0.03, "within a step of the budget"
    assert len(evaluated_at) >= 3, "a first, at least one along the way, and the final one"
    assert evaluated_at[0] == (10, 0.3)
    for (_, before), (_, after) in itertools.pairwise(evaluated_at[1:-1]):
        assert after - before >= 19, "spread out: 1 s in 20 s is 5%"
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [step for step, _ in evaluated_at]
    assert (trainer.run_dir / "best.pt").is_file()


def test_a_step_budget_or_a_larger_share_keeps_every_evaluation(tmp_path, small_corpus, monkeypatch):
    """Pacing is for runs bounded by time alone: with --max-steps an evaluation comes every
    eval_every steps as asked, and a share of 1 lets them all through."""
    _, by_steps = paced_run(tmp_path / "s", small_corpus, monkeypatch, 90, 0.03, 1.0, max_steps=50)
    assert [step for step, _ in by_steps] == [10, 20, 30, 40, 50]
    _, unpaced = paced_run(tmp_path / "u", small_corpus, monkeypatch, 9, 0.03, 0.01, eval_share=1.0)
    assert len(unpaced) > 20


def test_samples_come_on_their_own_schedule_when_evaluations_are_paced(tmp_path, small_corpus, monkeypatch):
    """Samples are shown every sample_every steps whether an evaluation comes then or not:
    a paced 90 s run would otherwise show none (steps 20, 40, ... are rarely evaluated)."""
    trainer, evaluated_at = paced_run(tmp_path, small_corpus, monkeypatch, 90, 0.03, 1.0, sample_every=200)
    samples = [json.loads(line)["step"] for line in (trainer.run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples == list(range(200, trainer.step, 200))
    assert not set(samples) <= {step for step, _ in evaluated_at}
