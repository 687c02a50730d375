"""The trainer: batches -> fused forward/backward -> AdamW, with evaluation and checkpoints.

The loop reads top to bottom in `Trainer.run`. Everything a resume needs lives in
`Trainer.state_dict`, and a batch is addressed by step number alone, so a run that is
stopped and resumed reaches the same weights, bit for bit on the CPU, as one that never
stopped. Nothing here prints: progress goes to the `TrainListener` the caller hands in.

Around the trainer: `runs` starts and resumes runs (their folders and config.json),
`budget` sizes a run for its time budget, `device` picks device and precision.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from charlstm import checkpoint, corpus, distributed, history, token_cache
from charlstm.config import ModelConfig, SamplingConfig, TrainConfig
from charlstm.device import autocast, resolve_device, resolve_precision, seed_device
from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM
from charlstm.sample import default_prime, generate
from charlstm.tokenizer import Vocabulary

if TYPE_CHECKING:
    from charlstm.budget import Sizing


def fused_adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """AdamW as one fused kernel where this PyTorch has one for the device (CUDA; the CPU
    since 2.4), else the per-parameter loop. On 2 CPU cores the loop took 1.6 ms a step
    for a 2x128 LSTM and the fused kernel 0.27 ms: 6% of a batch-16 step."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), fused=True)
    except RuntimeError:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


@torch.no_grad()
def stream_loss(
    model: CharLSTM,
    batches: corpus.StreamBatches,
    device: torch.device,
    precision: str,
    rows: slice = slice(None),
) -> torch.Tensor:
    """Summed loss (nats) and count of characters over every window of `batches`' `rows`,
    state carried; returned together as one tensor so ranks can add them in one step."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    state = None
    for window in range(len(batches)):
        batch = batches.batch(window)
        inputs = batch.inputs[rows].to(device, torch.long)
        targets = batch.targets[rows].to(device, torch.long)
        if targets.numel() == 0:
            break
        with autocast(device, precision):
            logits, state = model(inputs, state)
        total[0] += nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        total[1] += targets.numel()
    return total


def evaluate_tokens(
    model: CharLSTM, tokens: torch.Tensor, device: str = "auto", precision: str = "fp32"
) -> dict[str, Any]:
    """Loss of a trained model on any token array (e.g. a held-out test split), in nats and bits/char."""
    device_ = resolve_device(device)
    precision = resolve_precision(precision, device_)
    batches = corpus.validation_streams(tokens, max_streams=64, seq_len=256)
    total, count = stream_loss(model.to(device_), batches, device_, precision).tolist()
    loss = total / count
    return {
        "loss": loss,
        "bpc": loss / math.log(2),
        "characters": batches.targets.numel(),
        "device": device_.type,
        "precision": precision,
    }


def evaluate_corpus(
    checkpoint_path: str | Path | None,
    text: str | Path,
    encoding: str = "utf-8",
    skip_unknown: bool = False,
    device: str = "auto",
    precision: str = "fp32",
    progress: token_cache.Progress | None = None,
) -> dict[str, Any]:
    """`charlstm eval`: a checkpoint (a file, a run folder, or None for the newest run)
    scored on a text file, folder or glob; `evaluate_tokens`' result plus what was scored."""
    path = checkpoint.resolve(checkpoint_path)
    model, vocabulary, _ = checkpoint.load_model(path)
    source = corpus.find_source(text, encoding)
    loaded = token_cache.load_tokens(source, vocabulary, skip_unknown, f"corpus {text}", progress)
    return {"checkpoint": str(path), "corpus": str(text)} | evaluate_tokens(model, loaded.tokens, device, precision)


class TrainListener:
    """Hooks through which the trainer reports; the default does nothing."""

    def started(self, trainer: Trainer) -> None: ...

    def stepped(self, step: int, loss: float, chars_per_sec: float) -> None: ...

    def evaluated(self, step: int, val_loss: float | None, improved: bool) -> None: ...

    def sampled(self, step: int, text: str) -> None: ...


class TrainingInterrupted(Exception):
    """Ctrl-C during training; `last.pt` has been saved when this is raised."""

    def __init__(self, path: Path):
        super().__init__(f"interrupted; saved {path}")
        self.path = path


@dataclass
class Data:
    vocabulary: Vocabulary
    train: torch.Tensor
    val: torch.Tensor
    name: str
    sha256: str
    files: int = 1
    skipped: int = 0


def load_data(
    config: TrainConfig, vocabulary: Vocabulary | None = None, progress: token_cache.Progress | None = None
) -> Data:
    """The corpus as memory-mapped tokens; with `vocabulary` given, the text must fit it."""
    source = corpus.find_source(config.corpus, config.encoding, config.errors)
    loaded = token_cache.load_tokens(
        source, vocabulary, what=f"corpus {config.corpus or source.name}", progress=progress
    )
    train, val = corpus.split(loaded.tokens, config.val_frac)
    scan = loaded.scan
    return Data(vocabulary or scan.vocabulary, train, val, source.name, scan.sha256, len(scan.files), scan.skipped)


class Trainer:
    """One training run: model, optimizer, data, and the position in all three."""

    def __init__(
        self,
        model_config: ModelConfig,
        config: TrainConfig,
        data: Data,
        run_dir: Path,
        ranks: distributed.Ranks | None = None,
    ):
        self.config, self.data, self.run_dir = config, data, run_dir
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.ranks = ranks or distributed.Ranks()
        self.ranks.check_batch(config.batch_size)
        self.rows = self.ranks.rows(config.batch_size)
        torch.manual_seed(config.seed)
        self.model = CharLSTM(model_config).to(self.device)
        self.forward = self.model
        if self.ranks.world > 1:
            ids = [self.ranks.local_rank] if self.device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2 or "embedding" in n]
        self.optimizer = fused_adamw(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        if config.batching == "stream":
            self.batches = corpus.StreamBatches(data.train, config.batch_size, config.seq_len)
        else:
            self.batches = corpus.RandomBatches(data.train, config.batch_size, config.seq_len, config.seed)
        self.val_batches = (
            corpus.validation_streams(data.val, config.batch_size, config.seq_len) if config.val_frac > 0 else None
        )
        self.step = 0
        self.elapsed = 0.0
        self.best_val_loss = math.inf
        self.stop_requested = False
        self.sizing: Sizing | None = None  # set by runs.start when budget sizing chose the shape
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
            progress = max(progress, self.elapsed / c.max_time)
        progress = min(progress, 1.0)
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(self) -> torch.Tensor:
        batch = self.batches.batch(self.step)
        inputs = batch.inputs[self.rows].to(self.device, torch.long, non_blocking=True)
        targets = batch.targets[self.rows].to(self.device, torch.long, non_blocking=True)
        state = self.state if batch.carry_state else self.model.initial_state(inputs.shape[0], self.device)
        # Dropout's randomness is addressed by (seed, step, rank) like the batches, so a
        # resumed run draws the same masks with no generator state to carry.
        seed_device(self.device, self.config.seed * 1_000_003 + self.step * 1_009 + self.ranks.rank)
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

    def evaluate(self) -> float | None:
        """Mean loss in nats per character over the whole validation split (each rank
        scores every world-th stream)."""
        if self.val_batches is None:
            return None
        rows = slice(self.ranks.rank, None, self.ranks.world)
        total, count = self.ranks.sum(stream_loss(self.model, self.val_batches, self.device, self.precision, rows))
        return float(total / count)

    def finished(self) -> bool:
        c = self.config
        return bool((c.max_steps and self.step >= c.max_steps) or (c.max_time and self.elapsed >= c.max_time))

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; in a distributed run the carried state of every rank's
        streams is gathered, so the checkpoint is the same as a one-process run's."""
        carried = self.carried_state()
        return {
            "format": checkpoint.FORMAT_VERSION,
            "model_config": self.model.config.to_dict(),
            "vocabulary": self.data.vocabulary.chars,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train_config": asdict(self.config),
            "resume": {
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "elapsed": self.elapsed,
                "best_val_loss": self.best_val_loss,
                "carried_state": carried,
                "corpus_sha256": self.data.sha256,
            },
        }

    def carried_state(self) -> list[torch.Tensor]:
        """Every stream's carried state, on the CPU; all ranks must call it together."""
        return [self.ranks.gather_rows(s).cpu() for s in self.state]

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        resume = payload["resume"]
        if resume["corpus_sha256"] != self.data.sha256:
            raise CharlstmError(
                "the corpus has changed since this run started; resume needs the same text "
                "(use --init-from to fine-tune on new text)"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.step, self.elapsed = resume["step"], resume["elapsed"]
        self.best_val_loss = resume["best_val_loss"]
        self.state = tuple(s[:, self.rows].to(self.device) for s in resume["carried_state"])

    def save(self, name: str, stopping: bool = False) -> Path:
        """Save atomically; Ctrl-C waits until the write is done. When `stopping`
        (the save that answers a Ctrl-C), another Ctrl-C asks for nothing new."""
        for s in self.state:
            if not torch.isfinite(s).all():
                raise CharlstmError(f"the hidden state is not finite at step {self.step}; not saving over {name}")
        path = self.run_dir / name
        if self.ranks.main:
            with _sigint_deferred(deliver=not stopping) if self.ranks.world == 1 else nullcontext():
                checkpoint.save_atomic(self.state_dict(), path)
        else:
            self.carried_state()  # rank 0's gather needs every rank; only rank 0 writes
        self.ranks.barrier()
        return path

    def log_metrics(self, record: dict[str, Any]) -> None:
        if not self.ranks.main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

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
        self.log_metrics(record)
        self.save(checkpoint.LAST)
        if improved:
            self.save(checkpoint.BEST)
        self.record_status("running")
        listener.evaluated(self.step, val_loss, improved)

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
            with self._stop_requests():
                self._loop(listener)
        except KeyboardInterrupt:
            path = self.save(checkpoint.LAST, stopping=True)
            self.record_status("interrupted")
            raise TrainingInterrupted(path) from None
        except BaseException as e:
            self.record_status("failed", str(e) or type(e).__name__)
            raise
        self.record_status("finished")
        return {"step": self.step, "elapsed": self.elapsed, "best_val_loss": self.best_val_loss}

    def _loop(self, listener: TrainListener) -> None:
        c = self.config
        chars_per_step = c.batch_size * c.seq_len
        loss_sum, loss_count, last_loss = torch.zeros((), device=self.device), 0, None
        tick, tick_step = self.clock(), self.step
        clock = self.clock()
        while not self.finished():
            loss_sum += self.train_step()
            loss_count += 1
            now = self.clock()
            self.elapsed += now - clock
            clock = now
            if self.ranks.world > 1:
                self.elapsed, stop = self.ranks.agree(self.elapsed, float(self.stop_requested))
                if stop:
                    raise KeyboardInterrupt
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
            if self.step % c.eval_every == 0 and not self.finished():
                self.checkpoint_and_evaluate(listener, last_loss)
                if c.sample_every and self.step % c.sample_every == 0 and self.ranks.main:
                    text = self.sample_text()
                    history.append_sample(self.run_dir, self.step, self.elapsed, text)  # for `charlstm report`
                    listener.sampled(self.step, text)
                clock = tick = self.clock()
                tick_step = self.step
        self.checkpoint_and_evaluate(listener, last_loss)

    @contextmanager
    def _stop_requests(self):
        """In a distributed run, Ctrl-C (and torchrun's SIGTERM) only ask to stop: the ranks
        agree on it after the step they are in and save together, since one rank cannot
        save the others' state alone. A one-process run takes KeyboardInterrupt as it comes."""
        if self.ranks.world == 1:
            yield
            return
        wanted = (signal.SIGINT, signal.SIGTERM)
        previous = {
            sig: signal.signal(sig, lambda signum, frame: setattr(self, "stop_requested", True)) for sig in wanted
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextmanager
def _sigint_deferred(deliver: bool = True):
    """Hold Ctrl-C until the block ends, so a save is never cut in half.

    A Ctrl-C that arrives inside is remembered and, with `deliver`, raised as
    KeyboardInterrupt once the block is done; ignoring it would lose the user's request.
    """
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and deliver:
        raise KeyboardInterrupt
