"""Logits -> next character, and a generator that streams characters as they come.

Sampling runs on the explicit step path (`model.Stepper`): on the CPU it reads each weight
once per character, where calling the fused kernel once per character costs four to five
times as long (2x512 LSTM, measured by benchmarks/sampling_speed.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, Stepper
from charlstm.tokenizer import Vocabulary


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick each character: temperature 0 is greedy; top-k/top-p 0/1 are off."""

    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise CharlstmError(f"--temperature must be a number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise CharlstmError(f"--top-k must be >= 1 (or 0 for off), got {self.top_k}")
        if not (0 < self.top_p <= 1) or math.isnan(self.top_p):
            raise CharlstmError(f"--top-p must be in (0, 1], got {self.top_p}")


def next_id(logits: Tensor, config: SamplingConfig, generator: torch.Generator | None = None) -> Tensor:
    """Draw the next character id (a one-element tensor) from one row of logits.

    The draw is argmax(p / E) with E ~ Exp(1) per character, which picks i with
    probability p_i (the exponential race) and costs a fraction of torch.multinomial.
    """
    if config.temperature == 0:
        return logits.argmax().view(1)
    logits = logits.float() / config.temperature
    if 0 < config.top_k < logits.numel():
        threshold = torch.topk(logits, config.top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if config.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= config.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax().view(1)


def default_prime(vocabulary: Vocabulary) -> str:
    """A newline when the model knows it (text starts after one), else its first character."""
    return "\n" if "\n" in vocabulary else vocabulary.chars[0]


def generate(
    model: CharLSTM,
    vocabulary: Vocabulary,
    prime: str,
    length: int,
    config: SamplingConfig,
    seed: int | None = None,
) -> Iterator[str]:
    """`length` new characters continuing `prime`, yielded one at a time as they are drawn.

    Bad arguments are refused here, before the first character, not on first iteration.
    """
    if length < 0:
        raise CharlstmError(f"--length must be >= 0, got {length}")
    if not prime:
        raise CharlstmError("the prime text is empty; leave --prime out to start from a newline")
    vocabulary.check(prime, "the prime text")
    return _stream(Stepper(model), vocabulary, prime, length, config, seed)


def _stream(
    stepper: Stepper, vocabulary: Vocabulary, prime: str, length: int, config: SamplingConfig, seed: int | None
) -> Iterator[str]:
    device = stepper.decoder_bias.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.seed()))
    state = stepper.initial_state()
    with torch.inference_mode():
        ids = vocabulary.encode(prime).long().to(device)
        for i in range(len(ids)):
            logits, state, _ = stepper.step(ids[i : i + 1], state)
        for _ in range(length):
            char_id = next_id(logits[0], config, generator)
            yield vocabulary.chars[int(char_id)]
            logits, state, _ = stepper.step(char_id, state)
