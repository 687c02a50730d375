"""The trainer: batches -> fused forward/backward -> AdamW, with evaluation and checkpoints.

The loop reads top to bottom in `Trainer.run`. Everything a resume needs lives in
`Trainer.to_checkpoint`, and a batch is addressed by step number alone, so a run that is
stopped and resumed reaches the same weights, bit for bit on the CPU, as one that never
stopped. Nothing here prints: progress goes to the `TrainListener` the caller hands in.

Around the trainer: `runs` starts and resumes runs (their folders and config.json),
`data` reads the corpus into tokens, `evaluation` scores the validation split, `budget`
sizes a run for its time budget, `device` picks device and precision.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from charlstm import checkpoint, corpus, disk, distributed, history
from charlstm.config import ModelConfig, SamplingConfig, TrainConfig
from charlstm.data import Data
from charlstm.device import (
    autocast,
    batch_to_device,
    prepare_model,
    seed_device,
    seeds_per_step,
)
from charlstm.errors import CharlstmError, WriteFailed
from charlstm.evaluation import stream_loss, validation_batches
from charlstm.model import CharLSTM
from charlstm.optimizer import fused_adamw, parameter_groups
from charlstm.pacing import paced, within_share
from charlstm.sample import default_prime, generate
from charlstm.sizing import PrecisionChoice, Sizing
from charlstm.stopping import Agreement, sigint_deferred, stop_requests


class TrainListener:
    """Hooks through which the trainer reports; the default does nothing."""

    def started(self, trainer: Trainer) -> None: ...

    def stepped(self, step: int, loss: float, chars_per_sec: float) -> None: ...

    def evaluated(self, step: int, val_loss: float | None, improved: bool) -> None: ...

    def sampled(self, step: int, text: str) -> None: ...

    def close(self) -> None:
        """The run is over (finished, stopped or failed): let go of what the listener holds."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training; `last.pt` has been saved when this is raised."""

    def __init__(self, path: Path):
        super().__init__(f"interrupted; saved {path}")
        self.path = path


@dataclass(frozen=True)
class Placement:
    """Where and how a run computes, resolved once by `runs` when the run starts and handed
    to its trainer (and to budget sizing's probes): this process's device (under torchrun,
    its rank's own GPU), the precision (fp32 or bf16, never auto) and its rank."""

    device: torch.device
    precision: str
    ranks: distributed.Ranks = field(default_factory=distributed.Ranks)


class Trainer:
    """One training run: model, optimizer, data, and the position in all three.

    `sizing` and `precision_choice` say how budget sizing and `--precision auto` chose the
    run's shape and precision, when they did: the run reports them and checks its speed
    against the prediction."""

    def __init__(
        self,
        model_config: ModelConfig,
        config: TrainConfig,
        data: Data,
        run_dir: Path,
        placement: Placement,
        sizing: Sizing | None = None,
        precision_choice: PrecisionChoice | None = None,
    ):
        self.config, self.data, self.run_dir = config, data, run_dir
        self.device, self.precision, self.ranks = placement.device, placement.precision, placement.ranks
        self.sizing, self.precision_choice = sizing, precision_choice
        self.ranks.check_batch(config.batch_size)
        self.rows = self.ranks.rows(config.batch_size)
        torch.manual_seed(config.seed)
        self.model = prepare_model(CharLSTM(model_config), self.device)
        self.forward = self.model
        if self.ranks.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        decay, no_decay = parameter_groups(self.model)
        self.optimizer = fused_adamw(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        if config.batching == "stream":
            self.batches = corpus.StreamBatches(data.train, config.batch_size, config.seq_len)
        else:
            self.batches = corpus.RandomBatches(data.train, config.batch_size, config.seq_len, config.seed)
        self.val_batches = (
            validation_batches(data.val, config.batch_size, config.seq_len, config.val_chars)
            if config.val_frac > 0
            else None
        )
        self.step = 0
        self.elapsed = 0.0  # seconds spent in training steps
        self.evaluating = 0.0  # seconds spent evaluating, checkpointing and sampling, also on --max-time
        self.reserve = 0.0  # the last evaluation's seconds, kept back from a time budget for the final one
        self.session_steps, self.session_time = 0, 0.0  # trained since this process started or resumed
        self.best_val_loss = math.inf
        self.stop_requested = False
        self.full_val_loss: float | None = None
        self.seeded = False
        self.clock = time.perf_counter  # what the loop times steps with (tests hand in their own)
        self.state = self.model.initial_state(self.rows.stop - self.rows.start, self.device)

    def learning_rate(self) -> float:
        """Linear warmup, then cosine decay to `min_lr_ratio` (zero by default) over the step or time budget."""
        c = self.config
        if self.step < c.warmup_steps:
            return c.lr * (self.step + 1) / c.warmup_steps
        progress = 0.0
        if c.max_steps:
            progress = max(progress, self.step / c.max_steps)
        if c.max_time:
            progress = max(progress, self.budget_spent() / c.max_time)
        progress = min(progress, 1.0)
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(self) -> torch.Tensor:
        batch = self.batches.batch(self.step)
        inputs, targets = batch_to_device(batch.inputs[self.rows], batch.targets[self.rows], self.device)
        state = self.state if batch.carry_state else self.model.initial_state(inputs.shape[0], self.device)
        # Dropout's randomness is addressed by (seed, step, rank) like the batches, so a
        # resumed run draws the same masks with no generator state to carry; on CUDA only
        # the first step of a run seeds (device.seeds_per_step says why).
        if seeds_per_step(self.device) or not self.seeded:
            seed_device(self.device, self.config.seed * 1_000_003 + self.step * 1_009 + self.ranks.rank)
            self.seeded = True
        self.model.train()
        with autocast(self.device, self.precision):
            logits, state = self.forward(inputs, state)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.optimizer.step()
        self.state = tuple(s.detach().float() for s in state)
        self.step += 1
        return loss.detach()

    def evaluate(self, whole: bool = False) -> float | None:
        """Mean loss in nats per character over the validation characters a periodic
        evaluation scores (`val_chars`; with `whole`, the whole split). Each rank scores
        every world-th stream."""
        if self.val_batches is None:
            return None
        batches = self.val_batches
        if whole:
            batches = corpus.validation_streams(self.data.val, self.config.batch_size, self.config.seq_len)
        rows = slice(self.ranks.rank, None, self.ranks.world)
        total, count = self.ranks.sum(stream_loss(self.model, batches, self.device, self.precision, rows))
        return float(total / count)

    def validation_scored(self) -> dict[str, Any]:
        """How much of the held-out split each evaluation scores, as config.json and the header say it."""
        if self.val_batches is None:
            return {"characters": 0, "of": len(self.data.val), "whole": False}
        scored = self.val_batches.targets.numel()
        return {
            "characters": scored,
            "of": len(self.data.val),
            "whole": isinstance(self.val_batches, corpus.StreamBatches),
            "final": self.config.final_val,
        }

    def budget_spent(self) -> float:
        """Seconds of --max-time used: training, and (in one process) evaluating, checkpointing and sampling."""
        return self.elapsed + self.evaluating

    def finished(self) -> bool:
        """The step budget is reached, or the time budget is, keeping back what the last
        evaluation took for the final one, so the run ends within --max-time."""
        c = self.config
        return bool(
            (c.max_steps and self.step >= c.max_steps)
            or (c.max_time and self.budget_spent() + self.reserve >= c.max_time)
        )

    def steps_per_second(self) -> float | None:
        """Training steps per second of training time since this process started or resumed."""
        return round(self.session_steps / self.session_time, 2) if self.session_time > 0 else None

    def to_checkpoint(self) -> checkpoint.Checkpoint:
        """Everything a resume needs; in a distributed run the carried state of every rank's
        streams is gathered, so the checkpoint is the same as a one-process run's."""
        resume = checkpoint.Resume(
            optimizer=self.optimizer.state_dict(),
            step=self.step,
            elapsed=self.elapsed,
            best_val_loss=self.best_val_loss,
            carried_state=self.carried_state(),
            corpus_sha256=self.data.sha256,
            evaluating=self.evaluating,
        )
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return checkpoint.Checkpoint(self.model.config, self.data.vocabulary, weights, self.config, resume)

    def carried_state(self) -> list[torch.Tensor]:
        """Every stream's carried state, on the CPU; all ranks must call it together."""
        return [self.ranks.gather_rows(s).cpu() for s in self.state]

    def restore(self, saved: checkpoint.Checkpoint) -> None:
        """Continue from `saved`, a checkpoint of this run, exactly where it stopped."""
        resume = saved.resume
        if resume.corpus_sha256 != self.data.sha256:
            raise CharlstmError(
                "the corpus has changed since this run started; resume needs the same text "
                "(use --init-from to fine-tune on new text)"
            )
        self.model.load_state_dict(saved.weights)
        self.optimizer.load_state_dict(resume.optimizer)
        self.step, self.elapsed, self.evaluating = resume.step, resume.elapsed, resume.evaluating
        self.best_val_loss = resume.best_val_loss
        self.state = tuple(s[:, self.rows].to(self.device) for s in resume.carried_state)

    def save(self, name: str, stopping: bool = False) -> Path:
        """Save atomically; Ctrl-C waits until the write is done. When `stopping`
        (the save that answers a Ctrl-C), another Ctrl-C asks for nothing new."""
        finite = all(bool(torch.isfinite(s).all()) for s in self.state)
        if self.ranks.any(not finite):  # every rank asks, so all stop together
            raise CharlstmError(f"the hidden state is not finite at step {self.step}; not saving over {name}")
        path = self.run_dir / name
        failure = None
        if self.ranks.main:
            with sigint_deferred(deliver=not stopping) if self.ranks.world == 1 else nullcontext():
                try:
                    checkpoint.save_atomic(self.to_checkpoint().to_payload(), path)
                except WriteFailed as e:
                    failure = e
        else:
            self.carried_state()  # rank 0's gather needs every rank; only rank 0 writes
        self._stop_if_write_failed(failure)  # every rank waits for rank 0's write here
        return path

    def log_metrics(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl, written whole or not at all (`disk.append_line`)."""
        failure = None
        if self.ranks.main:
            try:
                disk.append_line(self.run_dir / "metrics.jsonl", json.dumps(record))
            except WriteFailed as e:
                failure = e
        self._stop_if_write_failed(failure)

    def _stop_if_write_failed(self, failure: WriteFailed | None) -> None:
        """A file of the run could not be written (a full disk): training stops as after a
        Ctrl-C, with one line saying which checkpoints are intact and how to resume. In a
        distributed run every rank learns of rank 0's failure, so all stop together."""
        if failure is not None:
            failure = failure.keeping(self.kept_after_failure())
        if self.ranks.world > 1:
            shared = self.ranks.share(failure.fields() if failure else None)
            failure = failure or (WriteFailed(**shared) if shared else None)
        if failure is not None:
            raise failure

    def kept_after_failure(self) -> str:
        """What a failed write left of the run, read back from disk, and what to do next."""
        kept = [
            f"{name} from step {step}"
            for name in (checkpoint.LAST, checkpoint.BEST)
            if (step := checkpoint.saved_step(self.run_dir / name)) is not None
        ]
        if not kept:
            return "no checkpoint of this run was saved yet; free space and train again"
        return (
            f"{' and '.join(kept)} {'is' if len(kept) == 1 else 'are'} intact; "
            f"free space and resume with: charlstm train --resume {self.run_dir}"
        )

    def checkpoint_bytes(self) -> int:
        """About how big each of this run's checkpoints is (checkpoint.checkpoint_bytes)."""
        carried = sum(s.numel() for s in self.state) * self.ranks.world
        return checkpoint.checkpoint_bytes(sum(p.numel() for p in self.model.parameters()), carried)

    def space_warning(self) -> str | None:
        """A line to show before training when the run folder's disk is short of room for
        two checkpoints (checkpoint.space_warning); None when there is room."""
        return checkpoint.space_warning(self.run_dir, self.checkpoint_bytes())

    def sample_text(self, length: int = 200) -> str:
        model = self.model.eval()
        prime = default_prime(self.data.vocabulary)
        chars = generate(model, self.data.vocabulary, prime, length, SamplingConfig(0.8), seed=self.step)
        return "".join(chars)

    def checkpoint_and_evaluate(self, listener: TrainListener, train_loss: float | None) -> None:
        val_loss = self.evaluate()
        improved = val_loss is not None and val_loss < self.best_val_loss
        if improved:
            self.best_val_loss = val_loss
        record = {
            "step": self.step,
            "elapsed": round(self.elapsed, 2),
            "lr": self.learning_rate(),
            "train_loss": train_loss,
        }
        if val_loss is not None:
            record |= {"val_loss": val_loss, "val_bpc": val_loss / math.log(2)}
        record |= self.rate_record() | {"evaluating": round(self.evaluating, 2)}
        self.log_metrics(record)
        self.save(checkpoint.LAST)
        if improved:
            self.save(checkpoint.BEST)
        self.record_status("running")
        listener.evaluated(self.step, val_loss, improved)

    def rate_record(self) -> dict[str, Any]:
        """metrics.jsonl's check of the sizing probe: the steps/s achieved so far, and the
        steps/s the probe predicted for this shape when budget sizing chose it."""
        record: dict[str, Any] = {"steps_per_second": self.steps_per_second()}
        if self.sizing is not None:
            record["predicted_steps_per_second"] = self.sizing.predicted()
        return record

    def final_evaluation(self, listener: TrainListener) -> None:
        """With `final_val` whole, the whole split scored once more when a run ends (when
        periodic evaluations scored only part of it): the exact figure, in metrics.jsonl."""
        if self.config.final_val != "whole" or self.val_batches is None:
            return
        if isinstance(self.val_batches, corpus.StreamBatches):
            return  # the periodic evaluations already scored all of it
        loss = self.evaluate(whole=True)
        self.log_metrics({"step": self.step, "full_val_loss": loss, "full_val_bpc": loss / math.log(2)})
        self.full_val_loss = loss

    def record_achieved_rate(self) -> None:
        """config.json's sized_for_budget gains the steps/s and the steps the run achieved,
        beside the predictions."""
        rate = self.steps_per_second()
        if self.sizing is None or not self.ranks.main or rate is None:
            return
        path = self.run_dir / "config.json"
        try:
            written = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # config.json is the run's record, not something training needs
        written["sized_for_budget"] |= {"achieved_steps_per_second": rate, "achieved_steps": self.step}
        with suppress(WriteFailed):  # a full disk: the run is done, its checkpoints whole; this figure can go
            disk.write_json(path, written)

    def record_status(self, state: str, error: str | None = None) -> None:
        """status.json, which `charlstm runs` reads: running (rewritten after each evaluation,
        a heartbeat), then finished, interrupted or failed."""
        if self.ranks.main:
            history.write_status(self.run_dir, state, self.step, self.elapsed, error)

    def run(self, listener: TrainListener | None = None) -> dict[str, Any]:
        """Train until the step or time budget is spent; returns the final metrics."""
        listener = listener or TrainListener()
        listener.started(self)
        self.record_status("running")
        try:
            with stop_requests(self.ranks.world > 1, self._request_stop):
                self._loop(listener)
        except KeyboardInterrupt:
            path = self.save(checkpoint.LAST, stopping=True)
            self.record_status("interrupted")
            raise TrainingInterrupted(path) from None
        except BaseException as e:
            self.record_status("failed", str(e) or type(e).__name__)
            raise
        self.record_status("finished")
        self.record_achieved_rate()
        result = {
            "step": self.step,
            "elapsed": self.elapsed,
            "evaluating": self.evaluating,
            "best_val_loss": self.best_val_loss,
        }
        if self.full_val_loss is not None:
            result["full_val_loss"] = self.full_val_loss
        return result

    def _loop(self, listener: TrainListener) -> None:
        c = self.config
        chars_per_step = c.batch_size * c.seq_len
        loss_sum, loss_count, last_loss = torch.zeros((), device=self.device), 0, None
        tick, tick_step = self.clock(), self.step
        clock = self.clock()
        agreement = Agreement(self.step, self.elapsed)
        while not self.finished():
            loss_sum += self.train_step()
            loss_count += 1
            now = self.clock()
            self.session_steps += 1
            self.session_time += now - clock
            if self.ranks.world == 1:
                self.elapsed += now - clock
            else:
                agreement.pending += now - clock
                if agreement.due(self.step, c):
                    self.elapsed, stop = self.ranks.agree(self.elapsed + agreement.pending, float(self.stop_requested))
                    agreement.agreed(self.step, self.elapsed, c)
                    if stop:
                        raise KeyboardInterrupt
            clock = now
            if self.step % 10 == 0 or self.finished():
                last_loss = float(self.ranks.sum(loss_sum)) / (loss_count * self.ranks.world)
                if not math.isfinite(last_loss):
                    raise CharlstmError(
                        f"the loss became {last_loss} by step {self.step}; no checkpoint was written "
                        "over the last good one; try a lower --lr or --grad-clip"
                    )
                speed = chars_per_step * (self.step - tick_step) / max(now - tick, 1e-9)
                listener.stepped(self.step, last_loss, speed)
                loss_sum.zero_()
                loss_count, tick, tick_step = 0, now, self.step
            evaluate = self._evaluation_due()
            sample = self._sample_due()
            if evaluate or sample:
                if evaluate:
                    self.checkpoint_and_evaluate(listener, last_loss)
                if sample:
                    text = self.sample_text()
                    history.append_sample(self.run_dir, self.step, self.elapsed, text)  # for `charlstm report`
                    listener.sampled(self.step, text)
                clock = tick = self.clock()
                tick_step = self.step
                self._count_evaluation(clock - now, evaluated=evaluate)
        began = self.clock()
        self.checkpoint_and_evaluate(listener, last_loss)
        self._count_evaluation(self.clock() - began, evaluated=True)
        self.final_evaluation(listener)

    def _evaluation_due(self) -> bool:
        """A periodic evaluation (with its checkpoint) now: every `eval_every` steps, while
        there is room left for the final one, and in a run bounded by time alone no more
        often than keeps evaluating within `eval_share` of the budget (`pacing`)."""
        c = self.config
        if self.step % c.eval_every or self.finished() or not self._room_for_two_evaluations():
            return False
        return not paced(c) or within_share(self.evaluating, self.reserve, self.budget_spent(), c.eval_share)

    def _sample_due(self) -> bool:
        """A sample for the listener and report.html now: every `sample_every` steps, on the
        main process, whether or not an evaluation comes at the same step."""
        c = self.config
        return bool(c.sample_every) and self.step % c.sample_every == 0 and self.ranks.main and not self.finished()

    def _room_for_two_evaluations(self) -> bool:
        """Whether a periodic evaluation now still leaves room in --max-time for the final one
        (each reckoned to take as long as the last did); when not, the run skips it and
        trains on, and the final evaluation comes within that time."""
        c = self.config
        return not c.max_time or self.budget_spent() + 2 * self.reserve < c.max_time

    def _count_evaluation(self, seconds: float, evaluated: bool) -> None:
        """Seconds spent evaluating, checkpointing or sampling count on --max-time, and the
        last evaluation's are kept back from it for the final one. Only in one process:
        every rank of a distributed run must reach the same stop from agreed values alone,
        and these seconds are each rank's own (there --max-time counts training time)."""
        if self.ranks.world == 1:
            self.evaluating += seconds
            if evaluated:
                self.reserve = seconds

    def _request_stop(self) -> None:
        """A distributed run's Ctrl-C or SIGTERM: the ranks stop together at their next agreement."""
        self.stop_requested = True
