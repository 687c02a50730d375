"""The sizing probe (how it times a shape), predicted against achieved steps/s, and what
`--precision auto` chooses. Every timing here is handed in: no test depends on the machine."""

import json
from dataclasses import replace
from functools import partial

import pytest
import torch

from charlstm import budget
from charlstm.budget import choose_precision, confirm_auto_precision, measure_steps_per_second
from charlstm.config import ModelConfig, TrainConfig
from charlstm.data import load_data
from charlstm.progress import precision_line, sizing_line
from charlstm.runs import place, start
from charlstm.sizing import PrecisionChoice

MODEL = {"layers": 1, "embedding": 8}


class FakeTrainer:
    """A trainer whose steps take the given seconds of a fake clock, then `steady` each."""

    def __init__(self, seconds: list[float], steady: float):
        self.now, self.seconds, self.steady, self.steps = 0.0, list(seconds), steady, 0

    def clock(self) -> float:
        return self.now

    def train_step(self) -> torch.Tensor:
        self.now += self.seconds.pop(0) if self.seconds else self.steady
        self.steps += 1
        return torch.zeros(())


def test_the_probe_reads_the_steady_rate_after_slow_first_steps():
    """A larger shape's first steps are slow (heap growth, new oneDNN primitives). The old
    probe (2 warm-up steps, the mean over 0.5 s) read this shape at 4.0 steps/s instead
    of 10: its window began with the slow steps. Warm-up by time, and the median, read 10."""
    trainer = FakeTrainer([0.3, 0.3, 0.2, 0.2, 0.15, 0.15], steady=0.1)
    rate = measure_steps_per_second(trainer, clock=trainer.clock)
    assert rate == pytest.approx(10.0)
    assert trainer.now >= budget.PROBE_WARMUP[1] + budget.PROBE_WINDOW[1]


def test_the_probe_ignores_a_step_another_program_interrupted():
    trainer = FakeTrainer([0.1] * 6 + [3.0], steady=0.1)  # one step in the window took 3 s
    assert measure_steps_per_second(trainer, clock=trainer.clock) == pytest.approx(10.0)


def test_the_probe_times_enough_steps_of_a_slow_shape():
    trainer = FakeTrainer([], steady=2.0)
    assert measure_steps_per_second(trainer, clock=trainer.clock) == pytest.approx(0.5)
    assert trainer.steps == budget.PROBE_WARMUP[0] + budget.PROBE_WINDOW[0]


def rate_by_precision(rates):
    """A `measure` that reads the probe's precision: steps/s per precision, as if measured."""
    return lambda trainer: rates[trainer.precision]


def tiny_data(small_corpus):
    return load_data(TrainConfig(corpus=str(small_corpus)))


@pytest.mark.parametrize(
    ("native", "rates", "chosen", "reason"),
    [
        (True, {"fp32": 10.0, "bf16": 15.0}, "bf16", "native bf16 measured 1.50x fp32"),
        (True, {"fp32": 10.0, "bf16": 4.0}, "fp32", "bf16 is native but measured 0.40x fp32, under 1.05x"),
        (True, {"fp32": 10.0, "bf16": 10.3}, "fp32", "bf16 is native but measured 1.03x fp32, under 1.05x"),
        (True, {"fp32": 10.0, "bf16": 10.5}, "bf16", "native bf16 measured 1.05x fp32"),
        (False, {"fp32": 10.0, "bf16": 15.0}, "fp32", "no native bf16 on this cpu"),
    ],
)
def test_auto_takes_bf16_only_where_it_is_native_and_measured_faster(small_corpus, native, rates, chosen, reason):
    data = tiny_data(small_corpus)
    model = ModelConfig(vocab_size=len(data.vocabulary), layers=1, hidden=16, embedding=8)
    config = TrainConfig(corpus=str(small_corpus), batch_size=4, seq_len=16, device="cpu")
    timed = []

    def measure(trainer):
        timed.append(trainer.precision)
        return rates[trainer.precision]

    confirmed, choice = confirm_auto_precision(
        model, config, data, place(config), measure, native=lambda trainer: native
    )
    assert (confirmed.precision, choice.chosen, choice.reason) == (chosen, chosen, reason)
    assert timed == (["fp32", "bf16"] if native else []), "emulated or absent bf16 is never timed"
    assert choice.steps_per_second == ({"fp32": 10.0, "bf16": rates["bf16"]} if native else {})


def test_a_precision_the_user_names_is_kept_untimed(small_corpus):
    data = tiny_data(small_corpus)
    model = ModelConfig(vocab_size=len(data.vocabulary), layers=1, hidden=16, embedding=8)
    for named in ("fp32", "bf16"):
        config = TrainConfig(corpus=str(small_corpus), batch_size=4, seq_len=16, precision=named)
        confirmed = confirm_auto_precision(model, config, data, place(config), measure=None, native=lambda t: 1 / 0)
        assert confirmed == (config, None)


def test_choose_precision_leaves_the_probe_in_fp32(small_corpus):
    data = tiny_data(small_corpus)
    model = ModelConfig(vocab_size=len(data.vocabulary), layers=1, hidden=16, embedding=8)
    trainer = start(
        {"layers": 1, "hidden": 16, "embedding": 8},
        TrainConfig(corpus=str(small_corpus), batch_size=4, seq_len=16, precision="fp32", max_steps=1),
        small_corpus.parent / "runs-choose",
    )
    assert model.hidden == trainer.model.config.hidden
    choice = choose_precision(trainer, rate_by_precision({"fp32": 1.0, "bf16": 2.0}), native=lambda t: True)
    assert choice.chosen == "bf16" and trainer.precision == "fp32"


def sized_run(tmp_path, small_corpus, monkeypatch, rates, native, evaluation=lambda trainer: 0.0, eval_share=0.05):
    """A run sized for a 100 s budget at the handed-in rates (steps/s per shape and precision)
    and seconds per evaluation, its evaluations paced to `eval_share` of the budget."""
    sizing = partial(budget.size_for_budget, measure=rates, native=lambda t: native, measure_evaluation=evaluation)
    monkeypatch.setattr(budget, "size_for_budget", sizing)
    config = TrainConfig(
        corpus=str(small_corpus), max_time=100, seq_len=16, sample_every=0, device="cpu", eval_share=eval_share
    )
    return start(MODEL, config, tmp_path, size_for_budget=True)


def test_sizing_times_each_shape_in_both_precisions_and_counts_the_faster(tmp_path, small_corpus, monkeypatch):
    """bf16's gain grows with the model: here none at 2x128, 1.5x from 2x192. Judged on the
    first shape alone (as before), sizing took fp32 and 2x128; each shape at its faster
    precision gets 2x192 in bf16."""

    def rates(trainer):
        hidden = trainer.model.config.hidden
        gain = 1.5 if trainer.precision == "bf16" and hidden > 128 else 1.0
        return 40.0 * gain * (128 / hidden) ** 2  # fp32: 128x16 4,000 steps in 100 s, 192x16 1,778

    evaluated_in = {}

    def evaluation(trainer):
        evaluated_in[trainer.model.config.hidden] = trainer.precision
        return 0.0

    trainer = sized_run(tmp_path, small_corpus, monkeypatch, rates, native=True, evaluation=evaluation)
    assert trainer.precision == "bf16" and trainer.config.precision == "bf16"
    assert trainer.sizing.steps_per_second == {"128x16": 40.0, "192x16": 26.67, "256x16": 15.0}
    assert evaluated_in == {128: "fp32", 192: "bf16", 256: "bf16"}, "each shape's evaluation in its precision"
    assert trainer.model.config.hidden == 192, "2x192 gets 2,667 steps in bf16 (1,778 in fp32)"
    assert "precision bf16 (native bf16 measured 1.50x fp32)" in sizing_line(trainer)
    assert precision_line(trainer) is None, "said once, on the sizing line"
    written = json.loads((trainer.run_dir / "config.json").read_text())
    assert written["precision_choice"] == {
        "chosen": "bf16",
        "reason": "native bf16 measured 1.50x fp32",
        "steps_per_second": {"fp32": 17.78, "bf16": 26.67},
    }
    assert written["train"]["precision"] == "bf16"


def test_sizing_counts_the_evaluations_in_the_budget(tmp_path, small_corpus, monkeypatch):
    """2x256 trains 2,100 steps in 100 s, but with its evaluations (2 s each, every 250
    steps, and the final one) there is room for 1,761. Reckoned on training alone, sizing
    took 2x256 and promised steps the run could not take; counted, it keeps 2x192 (2,370)."""
    rates = {(128, 16): 60.0, (192, 16): 30.0, (256, 16): 21.0, (256, 32): 10.0}

    def measure(trainer):
        return rates[trainer.model.config.hidden, trainer.config.batch_size]

    trainer = sized_run(
        tmp_path, small_corpus, monkeypatch, measure, native=False, evaluation=lambda t: 2.0, eval_share=1.0
    )
    assert (trainer.model.config.hidden, trainer.config.batch_size) == (192, 16)
    assert trainer.sizing.steps == {"128x16": 3_972, "192x16": 2_370, "256x16": 1_761}
    assert trainer.sizing.evaluation_seconds == {"128x16": 2.0, "192x16": 2.0, "256x16": 2.0}
    assert "hidden 192, batch 16, the largest that fits 2,000 steps" in sizing_line(trainer)
    assert "expect ~2,370 steps with evaluations" in sizing_line(trainer)
    written = json.loads((trainer.run_dir / "config.json").read_text())["sized_for_budget"]
    assert written["predicted_steps"] == 2_370
    alone = sized_run(tmp_path / "alone", small_corpus, monkeypatch, measure, native=False)
    assert alone.model.config.hidden == 256, "with evaluations free, 2x256 fits"


def test_an_evaluation_is_reckoned_from_the_median_window(tmp_path, small_corpus):
    """One window's forward pass, timed like a training step (the median of several, so a
    window another program interrupted does not count), times the windows an evaluation
    scores. Timed as one block of three windows, one run read the same shape 3.7x another."""
    config = TrainConfig(corpus=str(small_corpus), batch_size=4, seq_len=16, precision="fp32", device="cpu")
    trainer = start({"layers": 1, "hidden": 16, "embedding": 8}, config, tmp_path)
    windows = len(trainer.val_batches)
    assert windows > budget.EVALUATION_WINDOW[0]
    now = [0.0]

    def clock():  # each window takes 0.1 s of a fake clock, but the third timed one 2 s
        now[0] += 2.0 if len(ticks) == 5 else 0.1
        ticks.append(now[0])
        return now[0]

    ticks = []
    seconds = budget.measure_evaluation_seconds(trainer, clock=clock)
    assert seconds == pytest.approx(0.1 * windows)
    unvalidated = start({"layers": 1, "hidden": 16, "embedding": 8}, replace(config, val_frac=0), tmp_path)
    assert budget.measure_evaluation_seconds(unvalidated, clock=lambda: 1 / 0) == 0.0


def test_a_run_checks_its_own_prediction(tmp_path, small_corpus, monkeypatch):
    """config.json keeps the steps/s predicted for the chosen shape and, when the run ends,
    the steps/s it achieved; metrics.jsonl has both at every evaluation."""
    trainer = sized_run(tmp_path, small_corpus, monkeypatch, lambda trainer: 1.0, native=False)
    assert (trainer.model.config.hidden, trainer.config.batch_size) == (128, 16), "none fits: the smallest"
    assert trainer.precision == "fp32" and "precision fp32 (no native bf16 on this cpu)" in sizing_line(trainer)
    assert "hidden 128, batch 16, the smallest; none fits 2,000 steps here" in sizing_line(trainer)
    assert "expect ~100 steps with evaluations" in sizing_line(trainer)
    now = [0.0]
    trainer.clock = lambda: now[0]
    step = trainer.train_step

    def quarter_second_step():
        now[0] += 0.25
        return step()

    monkeypatch.setattr(trainer, "train_step", quarter_second_step)
    trainer.config = replace(trainer.config, max_steps=8, eval_every=4)
    trainer.run()
    written = json.loads((trainer.run_dir / "config.json").read_text())["sized_for_budget"]
    assert (written["predicted_steps_per_second"], written["achieved_steps_per_second"]) == (1.0, 4.0)
    assert (written["predicted_steps"], written["achieved_steps"]) == (100, 8)
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["predicted_steps_per_second"], r["steps_per_second"]) for r in records] == [(1.0, 4.0), (1.0, 4.0)]


def test_an_unsized_run_records_its_rate_and_no_prediction(tmp_path, small_corpus):
    config = TrainConfig(corpus=str(small_corpus), max_steps=4, eval_every=4, seq_len=16, batch_size=4, device="cpu")
    trainer = start({"layers": 1, "hidden": 16, "embedding": 8}, replace(config, precision="fp32"), tmp_path)
    trainer.run()
    (record,) = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["steps_per_second"] > 0 and "predicted_steps_per_second" not in record
    written = json.loads((trainer.run_dir / "config.json").read_text())
    assert written["sized_for_budget"] is None and written["precision_choice"] is None


def test_a_choice_says_what_it_measured():
    choice = PrecisionChoice("fp32", "bf16 is native but measured 0.40x fp32, under 1.05x", {"fp32": 10.0, "bf16": 4.0})
    assert choice.to_dict()["steps_per_second"] == {"fp32": 10.0, "bf16": 4.0}
