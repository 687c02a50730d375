"""Dynamic evaluation: a copy of the model adapts to the text it is reading.

A trained model is frozen; the text in front of it is not like the training text on average,
it is like itself (its names, its spelling, its layout). Dynamic evaluation (Krause et al. 2018,
"Dynamic Evaluation of Neural Sequence Models") reads the text as one stream in segments, state
carried, and after scoring each segment takes one gradient step on that segment's loss, so the
weights follow the text. Order is everything: a segment is scored with the weights every earlier
segment updated and none later, so no character ever helps predict itself (tests/test_dynamic.py
proves it on text no model can predict: fresh random characters score no better than their entropy).

Two updates, as `DynamicConfig.method` says:

* **rms** (Krause et al.'s): W += decay * r/mean(r) * (W0 - W) - lr * g / (r + eps), with r each
  weight's gradient RMS on the training data and W0 the trained weights. A weight whose gradient
  is typically large moves in proportion, and is pulled back harder: the decay keeps the model
  near what it learned, so a text it cannot follow costs little. Krause et al. collect r in a
  pass over the training data; a charlstm checkpoint already holds it, as AdamW's second moment
  (an average of g^2 over the last ~100 training steps, bias-corrected here), so nothing is re-read.
* **sgd**: W -= lr * g, for comparison (benchmarks/adapt.py measures both).

The static figure beside it is the same single-stream reading with no updates, so the difference
is the adaptation alone (`charlstm eval` reads in 64 streams, each starting cold, which costs a
little more). Nothing here writes a checkpoint: callers hand in a copy (`copy.deepcopy`) or get one.
There is nothing random, so on one machine a reading repeats exactly.

Cost: one forward and one backward pass over every character at batch 1, where `charlstm eval`
runs forward only in 64 streams; linear in the text's length (benchmarks/README.md has the ratio).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from charlstm import checkpoint, corpus, token_cache
from charlstm.config import DynamicConfig
from charlstm.device import resolve_device
from charlstm.errors import CharlstmError
from charlstm.evaluation import EVAL_SEQ_LEN
from charlstm.model import CharLSTM
from charlstm.optimizer import parameter_groups

EPSILON = 0.1
"""The rms update's eps, as a share of the mean gradient RMS: a weight whose gradient was (nearly)
always zero in training (the rows of a character the corpus lacked) moves at most lr / EPSILON
times its gradient relative to the others, instead of without bound."""


@dataclass(frozen=True)
class Reading:
    """One pass over a text: the nats of each segment (summed) and its characters, and the seconds it took."""

    nats: list[float]
    characters: list[int]
    seconds: float

    @property
    def loss(self) -> float:
        """Mean nats per character."""
        return sum(self.nats) / sum(self.characters)

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    def to_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "bpc": self.bpc, "seconds": round(self.seconds, 3)}


def gradient_rms(model: CharLSTM, saved: checkpoint.Checkpoint, path: str | Path) -> list[Tensor]:
    """Each parameter's gradient RMS on the training data, in `model.parameters()` order: the
    square root of AdamW's bias-corrected second moment, from the checkpoint's optimizer state."""
    if saved.resume is None or not saved.resume.optimizer.get("state"):
        raise CharlstmError(
            f"{path} holds weights only, without the training gradient statistics the rms update reads "
            "(a run's last.pt and best.pt keep them); use the sgd update (method='sgd')"
        )
    optimizer = saved.resume.optimizer
    found: dict[int, Tensor] = {}
    for group, params in zip(optimizer["param_groups"], parameter_groups(model), strict=True):
        beta2 = group["betas"][1]
        for index, param in zip(group["params"], params, strict=True):
            state = optimizer["state"].get(index)
            if state is None or state["exp_avg_sq"].shape != param.shape:
                raise CharlstmError(f"{path} has optimizer state that does not fit its weights; it is damaged")
            correction = 1 - beta2 ** float(state["step"])
            found[id(param)] = (state["exp_avg_sq"].float() / correction).sqrt()
    return [found[id(p)] for p in model.parameters()]


class Adapter:
    """Updates `model`'s weights in place after each segment it has scored (`update`), from the
    gradient of that segment's mean loss.

    Everything that does not change between segments (each weight's pull toward W0 and its step
    lr / (r + eps)) is computed once here, and `update` touches every parameter with one
    `torch._foreach_*` call per operation instead of a Python loop of six small operations per
    parameter (benchmarks/README.md: about 6% of a reading saved; the update is still ~20% of it).
    tests/test_dynamic.py holds it exactly equal to the formula written out weight by weight."""

    def __init__(self, model: CharLSTM, config: DynamicConfig, rms: list[Tensor] | None):
        self.params = list(model.parameters())
        self.lr = config.lr
        self.step: list[Tensor] | None = None
        if config.method == "rms":
            if rms is None:
                raise CharlstmError("the rms update needs the gradient statistics of training (gradient_rms)")
            device = self.params[0].device
            rms = [r.to(device) for r in rms]
            mean = torch.stack([r.mean() for r in rms]).mean()
            self.origin = [p.detach().clone() for p in self.params]
            self.step = [config.lr * (1 / (r + EPSILON * mean)) for r in rms]
            self.pull = [(config.decay * r / mean).clamp(max=1.0) for r in rms]  # never past W0

    @torch.no_grad()
    def update(self, grads: Sequence[Tensor]) -> None:
        """One step from `grads`, the gradient of each parameter in `params` order.
        sgd: W -= lr * g. rms: W += pull * (W0 - W) - step * g, with pull = decay * r / mean r
        (at most 1) and step = lr * 1 / (r + EPSILON * mean r). The operations are those of the
        formula, in its order, so the weights are the very floats it gives: a fused form (a lerp
        toward W0, an addcmul) rounds differently, and over a thousand updates that moved a
        reading's figure by 0.0016 nats/char."""
        if self.step is None:
            torch._foreach_sub_(self.params, grads, alpha=self.lr)
            return
        moves = torch._foreach_sub(self.origin, self.params)
        torch._foreach_mul_(moves, self.pull)
        torch._foreach_sub_(moves, torch._foreach_mul(self.step, grads))
        torch._foreach_add_(self.params, moves)


def _ids(tokens: Tensor, device: torch.device) -> Tensor:
    if len(tokens) < 2:
        raise CharlstmError("a score needs at least 2 characters: the first one is only context")
    return torch.as_tensor(tokens).to(device, torch.long).view(1, -1)


@torch.no_grad()
def static_reading(model: CharLSTM, tokens: Tensor, device: torch.device) -> Reading:
    """The text read as one stream, state carried, no updates: the figure dynamic evaluation gains on."""
    model.eval()
    ids, started = _ids(tokens, device), time.perf_counter()
    nats, counts, state = [], [], None
    for start in range(0, ids.shape[1] - 1, EVAL_SEQ_LEN):
        inputs, targets = ids[:, start : start + EVAL_SEQ_LEN], ids[:, start + 1 : start + EVAL_SEQ_LEN + 1]
        logits, state = model(inputs[:, : targets.shape[1]], state)
        nats.append(nn.functional.cross_entropy(logits[0], targets[0], reduction="sum").item())
        counts.append(targets.shape[1])
    return Reading(nats, counts, time.perf_counter() - started)


def dynamic_reading(
    model: CharLSTM,
    tokens: Tensor,
    config: DynamicConfig,
    adapter: Adapter,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> Reading:
    """The text read as one stream in segments of `config.segment`, state carried: each segment
    is scored, then `adapter` updates `model` (in place) from that segment's gradient, so every
    character is predicted by weights that have seen only the characters before its segment.
    `progress(done, total)` hears how many characters are read."""
    model.eval()  # no dropout: the prediction scored is the model's own
    ids, started = _ids(tokens, device), time.perf_counter()
    losses, counts, state = [], [], None
    total, seg = ids.shape[1] - 1, config.segment
    with torch.enable_grad():
        for start in range(0, total, seg):
            inputs, targets = ids[:, start : start + seg], ids[:, start + 1 : start + seg + 1]
            logits, state = model(inputs[:, : targets.shape[1]], state)
            loss = nn.functional.cross_entropy(logits[0], targets[0], reduction="sum")
            losses.append(loss.detach())  # scored now, before the update below: the first to see these characters
            counts.append(targets.shape[1])
            # torch.autograd.grad, not backward(): no .grad to zero and accumulate into each segment
            adapter.update(torch.autograd.grad(loss / targets.shape[1], adapter.params))
            state = tuple(s.detach() for s in state)
            if progress is not None:
                progress(start + targets.shape[1], total)
    nats = torch.stack(losses).tolist()  # one read at the end, not a device sync per segment
    return Reading(nats, counts, time.perf_counter() - started)


@dataclass(frozen=True)
class Comparison:
    """A text read statically and dynamically, the same characters both times."""

    static: Reading
    dynamic: Reading

    @property
    def gain(self) -> float:
        """Nats per character the adaptation saved (negative: it cost)."""
        return self.static.loss - self.dynamic.loss


def compare(
    model: CharLSTM,
    tokens: Tensor,
    config: DynamicConfig,
    rms: list[Tensor] | None,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    """`tokens` scored by `model` as it is and while a copy of it adapts (`progress` hears the
    adapting reading go); `model` is left as it was."""
    device = torch.device(device)
    fixed = model.to(device)
    static = static_reading(fixed, tokens, device)
    adapting = copy.deepcopy(fixed)
    dynamic = dynamic_reading(adapting, tokens, config, Adapter(adapting, config, rms), device, progress)
    return Comparison(static, dynamic)


def adapted(
    model: CharLSTM, tokens: Tensor, config: DynamicConfig, rms: list[Tensor] | None
) -> tuple[CharLSTM, list[Reading]]:
    """A copy of `model` adapted to `tokens` by `config.passes` dynamic readings (each from a
    fresh state, the weights carried), on the CPU; and the readings, whose losses show it learn."""
    copied = copy.deepcopy(model).cpu()
    adapter = Adapter(copied, config, rms)
    readings = [dynamic_reading(copied, tokens, config, adapter, torch.device("cpu")) for _ in range(config.passes)]
    return copied.eval(), readings


def rms_of(
    model: CharLSTM, saved: checkpoint.Checkpoint, path: str | Path, config: DynamicConfig
) -> list[Tensor] | None:
    """The gradient statistics `config.method` needs: rms's, from the checkpoint; none for sgd."""
    return gradient_rms(model, saved, path) if config.method == "rms" else None


def evaluate_corpus(
    checkpoint_path: str | Path | None,
    text: str | Path,
    config: DynamicConfig,
    encoding: str = "utf-8",
    skip_unknown: bool = False,
    device: str = "auto",
    progress: token_cache.Progress | None = None,
    adapting: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """`charlstm eval --dynamic`: a checkpoint (a file, a run folder, or None for the newest run)
    scored on a text file, folder or glob statically and dynamically; the checkpoint is only read.
    `progress` hears the text read into the token cache, `adapting` the dynamic reading."""
    path = checkpoint.resolve(checkpoint_path)
    model, vocabulary, saved = checkpoint.load_model(path)
    rms = rms_of(model, saved, path, config)
    source = corpus.find_source(text, encoding)
    loaded = token_cache.load_tokens(source, vocabulary, skip_unknown, f"corpus {text}", progress)
    device_ = resolve_device(device)
    result = compare(model, loaded.tokens, config, rms, device_, adapting)
    return {
        "checkpoint": str(path),
        "corpus": str(text),
        "characters": sum(result.dynamic.characters),
        "static": result.static.to_dict(),
        "dynamic": result.dynamic.to_dict(),
        "gain": result.gain,
        "method": config.method,
        "lr": config.lr,
        "segment": config.segment,
        "decay": config.decay if config.method == "rms" else None,
        "device": device_.type,
        "precision": "fp32",
    }
