"""Where a text surprised the model: bits for every character, and the worst passages.

`charlstm eval --worst K` lists the K passages of a text the model found hardest to
predict, with their bits per character: typos, corrupted lines, and passages unlike the
training text stand out. Every character is scored as `charlstm eval` scores it (the
fused model over streams read side by side, state carried), so the passages' bits add up
to the figure eval prints. For one short text character by character, with the model's
top guesses, see `inspect.expectations`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from charlstm import checkpoint, corpus, token_cache
from charlstm.config import flag
from charlstm.device import autocast, prepare_model, resolve_device, resolve_precision
from charlstm.errors import CharlstmError
from charlstm.evaluation import EVAL_SEQ_LEN, EVAL_STREAMS
from charlstm.model import CharLSTM
from charlstm.tokenizer import Vocabulary

PASSAGE = 64  # characters in a passage `worst_passages` reports


@dataclass(frozen=True)
class Passage:
    """`text`, starting at character `start` of the scored text, and its mean surprise."""

    start: int
    text: str
    bits_per_char: float


@dataclass(frozen=True)
class WorstPassages:
    """`charlstm eval --worst`: the whole text's score (eval's figures) and its worst passages."""

    checkpoint: str
    corpus: str
    loss: float
    bpc: float
    characters: int
    device: str
    precision: str
    passages: list[Passage]

    def summary(self) -> dict[str, Any]:
        """The figures `charlstm eval` prints, under its keys."""
        keys = ("checkpoint", "corpus", "loss", "bpc", "characters", "device", "precision")
        return {key: getattr(self, key) for key in keys}


def check_count(k: int) -> None:
    """Refuse a number of passages that lists nothing, before any work is done."""
    if k < 1:
        raise CharlstmError(f"{flag('worst')} must be at least 1: it is how many passages to list, got {k}")


def character_bits(model: CharLSTM, tokens: Tensor, device: str = "auto", precision: str = "fp32") -> Tensor:
    """-log2 p(character | the characters before it) for each character of `tokens` (float32),
    read as `charlstm eval` reads them; NaN where a character is not scored: the first, and
    the few at the end that fill no stream."""
    device_ = resolve_device(device)
    precision = resolve_precision(precision, device_, model.config.cell)
    # read as evaluation.evaluate_tokens reads a text: the same streams score the same characters
    batches = corpus.validation_streams(tokens, max_streams=EVAL_STREAMS, seq_len=EVAL_SEQ_LEN)
    streams, length = batches.targets.shape
    starts = torch.arange(streams)[:, None] * length + 1  # the position of each stream's first target
    bits = torch.full((len(tokens),), math.nan)
    model = prepare_model(model, device_).eval()
    state = None
    with torch.inference_mode():
        for window in range(len(batches)):
            batch = batches.batch(window)
            inputs = batch.inputs.to(device_, torch.long)
            targets = batch.targets.to(device_, torch.long)
            if targets.numel() == 0:
                break
            with autocast(device_, precision):
                logits, state = model(inputs, state)
            nats = nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
            positions = starts + window * batches.seq_len + torch.arange(targets.shape[1])
            bits[positions.flatten()] = (nats / math.log(2)).cpu()
    return bits


def worst_passages(bits: Tensor, tokens: Tensor, vocabulary: Vocabulary, k: int, width: int = PASSAGE) -> list[Passage]:
    """The `k` windows of `width` characters with the highest mean bits, none overlapping
    another, worst first (fewer when the text has fewer). Greedy: the worst window of all,
    then the worst that does not overlap it, and so on."""
    check_count(k)
    scored = ~bits.isnan()
    width = max(1, min(width, len(bits)))
    sums = torch.cat([torch.zeros(1, dtype=torch.float64), bits.nan_to_num(0.0).double().cumsum(0)])
    counts = torch.cat([torch.zeros(1, dtype=torch.long), scored.long().cumsum(0)])
    window_sums, window_counts = sums[width:] - sums[:-width], counts[width:] - counts[:-width]
    means = torch.where(window_counts > 0, window_sums / window_counts.clamp_min(1), -math.inf)
    passages = []
    while len(passages) < k:
        start = int(means.argmax())
        if means[start] == -math.inf:
            break
        text = vocabulary.decode(tokens[start : start + width].long())
        passages.append(Passage(start, text, float(means[start])))
        means[max(0, start - width + 1) : start + width] = -math.inf  # every window overlapping this one
    return passages


def worst_of_corpus(
    checkpoint_path: str | Path | None,
    text: str | Path,
    k: int,
    encoding: str = "utf-8",
    skip_unknown: bool = False,
    device: str = "auto",
    precision: str = "fp32",
    progress: token_cache.Progress | None = None,
    width: int = PASSAGE,
) -> WorstPassages:
    """`charlstm eval --worst K`: a checkpoint scored on a text file, folder or glob, and
    the K passages of `width` characters it found most surprising."""
    check_count(k)
    path = checkpoint.resolve(checkpoint_path)
    model, vocabulary, _ = checkpoint.load_model(path)
    source = corpus.find_source(text, encoding)
    tokens = token_cache.load_tokens(source, vocabulary, skip_unknown, f"corpus {text}", progress).tokens
    bits = character_bits(model, tokens, device, precision)
    scored = bits[~bits.isnan()]
    bpc = float(scored.double().mean())
    device_ = resolve_device(device)
    return WorstPassages(
        str(path),
        str(text),
        bpc * math.log(2),
        bpc,
        len(scored),
        device_.type,
        resolve_precision(precision, device_, model.config.cell),
        worst_passages(bits, tokens, vocabulary, k, width),
    )
