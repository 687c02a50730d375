"""Scoring a model on held-out text: `charlstm eval`, `Model.score`, and the trainer's
periodic validation.

Every score here reads its text as parallel streams in windows with the hidden state
carried from window to window (`stream_loss`), as the model is trained to read. A run's
periodic evaluation scores a fixed sample of its validation split (`validation_batches`),
the same characters every time, so its curve stays comparable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from charlstm import checkpoint, corpus, token_cache
from charlstm.device import autocast, prepare_model, resolve_device, resolve_precision
from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM


@torch.no_grad()
def stream_loss(
    model: CharLSTM,
    batches: corpus.StreamBatches,
    device: torch.device,
    precision: str,
    rows: slice = slice(None),
    windows: int | None = None,
) -> torch.Tensor:
    """Summed loss (nats) and count of characters over every window of `batches`' `rows`
    (or its first `windows`: budget sizing times a few), state carried; returned together
    as one tensor so ranks can add them in one step."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    state = None
    for window in range(len(batches) if windows is None else min(windows, len(batches))):
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


EVAL_STREAMS, EVAL_SEQ_LEN = 64, 256
"""How `evaluate_tokens` reads a text: at most this many parallel streams, in windows of this
many characters, state carried. surprise.py reads with them too, so its bits are these."""


def evaluate_tokens(
    model: CharLSTM, tokens: torch.Tensor, device: str = "auto", precision: str = "fp32"
) -> dict[str, Any]:
    """Loss of a trained model on any token array (e.g. a held-out test split), in nats and bits/char."""
    device_ = resolve_device(device)
    precision = resolve_precision(precision, device_, model.config.cell)
    batches = corpus.validation_streams(tokens, max_streams=EVAL_STREAMS, seq_len=EVAL_SEQ_LEN)
    total, count = stream_loss(prepare_model(model, device_), batches, device_, precision).tolist()
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


class SpreadStreams:
    """`streams` stretches of a token array, spread evenly over it, read side by side
    `seq_len` characters a window with state carried: a fixed sample of a long held-out
    split. The same characters every time, so validation curves stay comparable, and
    spread out, so the sample is not one part of the text. Quacks like `StreamBatches`."""

    def __init__(self, tokens: torch.Tensor, streams: int, seq_len: int, chars: int):
        length = max(1, chars // streams)  # characters scored per stream
        gap = (len(tokens) - 1 - length) // max(streams - 1, 1)
        index = (torch.arange(streams) * gap)[:, None] + torch.arange(length + 1)
        chunks = torch.as_tensor(tokens[index])
        self.inputs, self.targets = chunks[:, :-1], chunks[:, 1:]
        self.seq_len = seq_len
        self.windows = math.ceil(length / seq_len)

    def __len__(self) -> int:
        return self.windows

    def batch(self, step: int) -> corpus.Batch:
        cols = slice(step * self.seq_len, (step + 1) * self.seq_len)
        return corpus.Batch(self.inputs[:, cols], self.targets[:, cols], carry_state=step != 0)


def validation_batches(
    tokens: torch.Tensor, streams: int, seq_len: int, chars: int
) -> corpus.StreamBatches | SpreadStreams:
    """What a periodic evaluation scores: the whole split when `chars` is 0 or the split
    is no longer than that (a small corpus's numbers stay as they were), else `chars`
    characters of it in `streams` stretches spread over it (`SpreadStreams`). A split
    shorter than one window is refused: its loss would say little (`charlstm eval` scores
    any text; a run's validation should mean something)."""
    if len(tokens) - 1 < seq_len:
        raise CharlstmError(
            f"the validation split ({len(tokens)} characters) is shorter than one window of {seq_len + 1}; "
            "raise --val-frac, lower --seq-len, or use --val-frac 0 for no validation"
        )
    whole = corpus.validation_streams(tokens, streams, seq_len)
    if chars == 0 or whole.targets.numel() <= chars:
        return whole
    return SpreadStreams(tokens, min(streams, max(1, chars // seq_len)), seq_len, chars)
