"""Logits -> next characters, for one sample or many drawn side by side.

Sampling runs on the explicit step path (`model.Stepper`): on the CPU it reads each weight
once per character, where calling the fused kernel once per character costs four to five
times as long (2x512 LSTM, measured by benchmarks/sampling_speed.py). Many samples are
one batch: `Streams` holds K rows of state and advances every live row one character per
`step`, with one batched product per layer, so 64 samples cost far less than 64 runs.

Each row keeps its own settings, its own random stream and its own stop state, so rows
can join and leave between steps (a server adds requests as they come), and a row taken
out keeps its hidden state to continue later. A row draws exactly as a lone sample with
its seed does: the characters race as argmax(p / E), E ~ Exp(1) from the row's own
generator, drawn 32 characters at a time (the same numbers, in the same order, as one
draw per character). The batched product rounds the last bit of a float differently
from the one-row product, so a batched row can part from its lone twin where two
characters tie to within that rounding; tests and measurements found no such case.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from charlstm.config import SamplingConfig
from charlstm.errors import SettingError
from charlstm.model import CharLSTM, Stepper
from charlstm.tokenizer import Vocabulary, describe_chars

if TYPE_CHECKING:
    from charlstm.novelty import Novelty

__all__ = [
    "Row",
    "Sample",
    "SamplingConfig",
    "Streams",
    "default_prime",
    "draw_samples",
    "generate",
    "next_ids",
    "seeds",
    "stream",
    "unescape",
    "unreachable_stops",
]

RACE_BLOCK = 32
"""Characters' worth of exponentials a row draws from its generator at once: one call per
32 characters instead of one per character (per-call cost is most of a small draw)."""

PrimedState = tuple[list[tuple[Tensor, ...]], Tensor]


def default_prime(vocabulary: Vocabulary) -> str:
    """A newline when the model knows it (text starts after one), else its first character."""
    return "\n" if "\n" in vocabulary else vocabulary.chars[0]


def prime_of(config: SamplingConfig, vocabulary: Vocabulary) -> str:
    """The text a sample continues: the prime `config` names, else `default_prime`."""
    return config.prime if config.prime is not None else default_prime(vocabulary)


def unescape(text: str) -> str:
    r"""`\n`, `\t` and `\\` as the characters they name (a shell cannot pass a newline easily);
    any other backslash stays as typed."""
    out, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in ("\\n", "\\t", "\\\\"):
            out.append({"\\n": "\n", "\\t": "\t", "\\\\": "\\"}[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def unreachable_stops(config: SamplingConfig, vocabulary: Vocabulary) -> list[SettingError]:
    """Warnings for stop strings the model can never write (characters it never saw), not
    raised: the command line and the API warn, a server refuses, each naming `stop` its way."""
    return [
        SettingError(
            "stop",
            f"{stop!r} has characters the model never saw ({describe_chars(vocabulary.unknown(stop))}), "
            "so it can never end a sample",
        )
        for stop in config.stop
        if vocabulary.unknown(stop)
    ]


def seeds(config: SamplingConfig) -> list[int]:
    """Sample k's seed: `config.seed` + k, or a random base + k when no seed is given."""
    base = config.seed if config.seed is not None else secrets.randbelow(2**32)
    return [base + k for k in range(config.num_samples)]


@dataclass(frozen=True)
class Rules:
    """The rows' sampling settings as tensors, rebuilt whenever rows join or leave.

    Off settings take values that change nothing: top-k = the vocabulary size, top-p = 2
    (no cumulative probability reaches it), temperature 1 on greedy rows (whose draw is
    replaced by the argmax)."""

    temperature: Tensor
    top_k: Tensor | None
    top_p: Tensor | None
    greedy: Tensor | None

    @classmethod
    def of(cls, configs: list[SamplingConfig], vocab_size: int, device: torch.device) -> Rules:
        def column(values: list, dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=device).view(-1, 1)

        top_k = [c.top_k if 0 < c.top_k < vocab_size else vocab_size for c in configs]
        return cls(
            temperature=column([c.temperature or 1.0 for c in configs], torch.float32),
            top_k=column(top_k, torch.long) if min(top_k) < vocab_size else None,
            top_p=column([c.top_p if c.top_p < 1 else 2.0 for c in configs], torch.float32)
            if any(c.top_p < 1 for c in configs)
            else None,
            greedy=column([c.temperature == 0 for c in configs], torch.bool).view(-1)
            if any(c.temperature == 0 for c in configs)
            else None,
        )


def next_ids(logits: Tensor, races: Tensor, rules: Rules) -> Tensor:
    """The next character id of every row (K,), from logits (K, V) and Exp(1) races (K, V).

    Temperature, then top-k (keep the k likeliest), then top-p (keep the smallest set whose
    probability reaches p), then argmax(p / E): that picks i with probability p_i (the
    exponential race) and costs a fraction of torch.multinomial.
    """
    scaled = logits.float() / rules.temperature
    if rules.top_k is not None:
        threshold = scaled.sort(dim=1, descending=True).values.gather(1, rules.top_k - 1)
        scaled = scaled.masked_fill(scaled < threshold, -math.inf)
    probs = torch.softmax(scaled, dim=1)
    if rules.top_p is not None:
        sorted_probs, order = torch.sort(probs, dim=1, descending=True)
        before = torch.cumsum(sorted_probs, dim=1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= rules.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs)
    ids = (probs / races).argmax(dim=1)
    if rules.greedy is not None:
        ids = torch.where(rules.greedy, logits.argmax(dim=1), ids)
    return ids


@dataclass(frozen=True)
class Sample:
    """A finished sample: its text (the stop string left out) and how it came to be."""

    text: str
    prime: str
    stop_reason: str
    """'length' (it reached --length) or 'stop' (it wrote a stop string)."""
    stop: str | None
    bits_per_char: float | None
    """Mean -log2 p of its characters under the model (temperature 1, given the prime and
    the text before each); None for an empty sample."""
    seed: int
    index: int = 0
    redraws: int = 0
    novel: bool | None = None
    """With --novel: whether it repeats no stretch of the corpus; None when not checked."""

    def to_json(self) -> dict:
        return {
            "sample": self.index,
            "text": self.text,
            "prime": self.prime,
            "characters": len(self.text),
            "stop_reason": self.stop_reason,
            "stop": self.stop,
            "bits_per_char": None if self.bits_per_char is None else round(self.bits_per_char, 4),
            "seed": self.seed,
            "novel": self.novel,
            "redraws": self.redraws,
        }


class Row:
    """One sample being drawn: its settings, random stream and text, and, while it is out
    of a `Streams`, its model state (inside one, the batch holds it).

    `new_text()` hands out what may be shown so far: characters that could still turn out
    to begin a stop string are held back until they cannot.
    """

    def __init__(self, config: SamplingConfig, seed: int, primed: PrimedState, key: Hashable = None):
        self.key, self.seed, self.primed = key, seed, primed
        self.generator = torch.Generator().manual_seed(seed)
        self.races = torch.empty(RACE_BLOCK, primed[1].shape[1])
        self.cursor = RACE_BLOCK
        self.state, self.logits = primed
        self.redraws = 0
        self.restart(config)

    def restart(self, config: SamplingConfig | None = None) -> None:
        """Draw a new text from the current state (a continuation) under `config`, or the
        same settings; the random stream goes on where it was."""
        self.config = config or self.config
        self.chars: list[str] = []
        self.nats: list[float] = []
        self.emitted = 0
        self.stop: str | None = None
        self.tail = ""
        self.longest_stop = max(map(len, self.config.stop), default=0)
        self.done = self.config.length == 0

    def redraw(self) -> None:
        """Start the sample again from the prime (for --novel); the random stream goes on."""
        self.state, self.logits = self.primed
        self.redraws += 1
        self.restart()

    def add(self, ch: str, nats: float) -> None:
        """One drawn character and its -ln p under the model; the row is done when it ends a
        stop string or fills its length."""
        self.chars.append(ch)
        self.nats.append(nats)
        if self.longest_stop:
            self.tail = (self.tail + ch)[-self.longest_stop :]
            if self.tail.endswith(self.config.stop):
                ending = [s for s in self.config.stop if self.tail.endswith(s)]
                counted = [s for s in ending if len(self.chars) - len(s) >= self.config.min_length]
                if counted:
                    self.stop, self.done = max(counted, key=len), True
        if len(self.chars) >= self.config.length:
            self.done = True

    @property
    def text(self) -> str:
        """Everything drawn, less a stop string that ended it."""
        end = len(self.chars) - (len(self.stop) if self.stop else 0)
        return "".join(self.chars[:end])

    def _shown_end(self) -> int:
        if self.done:
            return len(self.chars) - (len(self.stop) if self.stop else 0)
        held = 0
        for k in range(min(self.longest_stop - 1, len(self.tail)), 0, -1):
            if any(s.startswith(self.tail[-k:]) for s in self.config.stop):
                held = k
                break
        return len(self.chars) - held

    def new_text(self) -> str:
        """The text drawn since the last call that is certain to stay (streaming)."""
        end = self._shown_end()
        text = "".join(self.chars[self.emitted : end])
        self.emitted = max(self.emitted, end)
        return text

    def sample(self, prime: str, index: int = 0, novel: bool | None = None) -> Sample:
        kept = len(self.text)
        return Sample(
            text=self.text,
            prime=prime,
            stop_reason="stop" if self.stop else "length",
            stop=self.stop,
            bits_per_char=sum(self.nats[:kept]) / kept / math.log(2) if kept else None,
            seed=self.seed,
            index=index,
            redraws=self.redraws,
            novel=novel,
        )


class Streams:
    """Live rows drawn together: `step` writes one character in each, through one batched
    product per layer.

        streams = Streams(model, vocabulary)
        streams.extend([streams.row(config, seed, key=k) for k, seed in enumerate(seeds(config))])
        while streams:
            for row in streams.step():      # the rows that finished, taken out
                print(row.key, row.text)

    Between steps rows may be added (`add`, also a row taken out earlier, with text to
    read first) and taken out (`take`); a finished row keeps its state for a continuation:
    `row.restart(new_config)`, then `add(row, more_text)`.
    """

    def __init__(self, model: CharLSTM, vocabulary: Vocabulary):
        self.stepper = Stepper(model)
        self.vocabulary = vocabulary
        self.device = self.stepper.decoder_bias.device
        self.rows: list[Row] = []
        self.finished: list[Row] = []
        self.primes: dict[str, PrimedState] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, state: PrimedState, text: str) -> PrimedState:
        """The state and next-character logits after reading `text`, one character at a
        time on its own (so a row starts exactly where a lone sample would)."""
        states, logits = state
        ids = self.vocabulary.encode(text, "the prime text").long().to(self.device)
        with torch.inference_mode():
            for i in range(len(ids)):
                logits, states, _ = self.stepper.step(ids[i : i + 1], states)
        return states, logits

    def row(self, config: SamplingConfig, seed: int, key: Hashable = None) -> Row:
        """A new row for `config`, its prime read (once per distinct prime), not yet drawing."""
        prime = prime_of(config, self.vocabulary)
        if prime not in self.primes:
            if len(self.primes) >= 16:
                self.primes.clear()
            start = (self.stepper.initial_state(), torch.zeros(1, len(self.vocabulary), device=self.device))
            self.primes[prime] = self.read(start, prime)
        return Row(config, seed, self.primes[prime], key)

    def add(self, row: Row, text: str = "") -> None:
        """Let `row` draw with the others from the next step on, after reading `text`."""
        if text:
            row.state, row.logits = self.read((row.state, row.logits), text)
        self.extend([row])

    def extend(self, rows: list[Row]) -> None:
        """Let all `rows` draw with the others from the next step on (one copy of the batch)."""
        self.finished += [row for row in rows if row.done]
        rows = [row for row in rows if not row.done]
        if not rows:
            return
        everyone = [*self.rows, *rows]
        batch = [(self.state, self.logits, self.races, self.cursor)] if self.rows else []
        parts = batch + [(row.state, row.logits, row.races[None], torch.tensor([row.cursor])) for row in rows]
        self.state = [
            tuple(torch.cat([p[0][k][i] for p in parts]) for i in range(self.stepper.state_size))
            for k in range(self.stepper.config.layers)
        ]
        self.logits, self.races, self.cursor = (torch.cat([p[j] for p in parts]) for j in (1, 2, 3))
        self._rows(everyone)

    def take(self, row: Row) -> Row:
        """Take `row` out of the batch; its state, random stream and text go with it."""
        i = self.rows.index(row)
        self._park(i)
        self._keep([k for k in range(len(self.rows)) if k != i])
        return row

    def step(self) -> list[Row]:
        """One character for every live row; returns the rows that finished, taken out."""
        if self.rows:
            races = self.races[self.arange, self.cursor].to(self.device)
            ids = next_ids(self.logits, races, self.rules)
            nats = torch.nn.functional.cross_entropy(self.logits.float(), ids, reduction="none")
            self.cursor += 1
            self.countdown -= 1
            if self.countdown == 0:
                self._refill()
            with torch.inference_mode():
                self.logits, self.state, _ = self.stepper.step(ids, self.state)
            chars = self.vocabulary.chars
            for row, i, n in zip(self.rows, ids.tolist(), nats.tolist(), strict=True):
                row.add(chars[i], n)
            done = [i for i, row in enumerate(self.rows) if row.done]
            for i in done:
                self._park(i)
                self.finished.append(self.rows[i])
            if done:
                self._keep([i for i, row in enumerate(self.rows) if not row.done])
        finished, self.finished = self.finished, []
        return finished

    def _park(self, i: int) -> None:
        """Copy row i's part of the batch back into the row."""
        row = self.rows[i]
        row.state = [tuple(t[i : i + 1] for t in layer) for layer in self.state]
        row.logits = self.logits[i : i + 1]
        row.races = self.races[i].clone()
        row.cursor = int(self.cursor[i])

    def _keep(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long)
        self.state = [tuple(t[index.to(t.device)] for t in layer) for layer in self.state]
        self.logits = self.logits[index.to(self.device)]
        self.races, self.cursor = self.races[index], self.cursor[index]
        self._rows([self.rows[i] for i in keep])

    def _rows(self, rows: list[Row]) -> None:
        """The batch now holds `rows`: their settings as tensors, and fresh races where due."""
        self.rows = rows
        self.arange = torch.arange(len(rows))
        if rows:
            self.rules = Rules.of([row.config for row in rows], len(self.vocabulary), self.device)
            self._refill()

    def _refill(self) -> None:
        """New exponentials for every row that has used its block."""
        for i in (self.cursor == RACE_BLOCK).nonzero().view(-1).tolist():
            self.races[i].exponential_(generator=self.rows[i].generator)
            self.cursor[i] = 0
        self.countdown = RACE_BLOCK - int(self.cursor.max())


def check(config: SamplingConfig, vocabulary: Vocabulary) -> str:
    """The prime the samples start from; refuses one the model cannot read."""
    prime = prime_of(config, vocabulary)
    vocabulary.check(prime, "the prime text")
    return prime


def stream(model: CharLSTM, vocabulary: Vocabulary, config: SamplingConfig) -> Iterator[str]:
    """One sample's text as it is drawn, in pieces (a piece is held back while it could
    still be the start of a stop string). Uses `config.seed`, not seed + k."""
    check(config, vocabulary)
    (seed,) = seeds(replace(config, num_samples=1))
    return _stream(Streams(model, vocabulary), config, seed)


def _stream(streams: Streams, config: SamplingConfig, seed: int) -> Iterator[str]:
    row = streams.row(config, seed)
    streams.add(row)
    while True:
        finished = streams.step()
        text = row.new_text()
        if text:
            yield text
        if finished:
            return


def generate(
    model: CharLSTM,
    vocabulary: Vocabulary,
    prime: str,
    length: int,
    config: SamplingConfig,
    seed: int | None = None,
) -> Iterator[str]:
    """`length` new characters continuing `prime`, yielded one at a time as they are drawn
    (the sample `charlstm sample --seed S` prints). Bad arguments are refused here, before
    the first character, not on first iteration."""
    config = replace(config, prime=prime, length=length, seed=seed, num_samples=1)
    pieces = stream(model, vocabulary, config)
    return (ch for piece in pieces for ch in piece)


def draw_samples(
    model: CharLSTM, vocabulary: Vocabulary, config: SamplingConfig, novelty: Novelty | None = None
) -> Iterator[Sample]:
    """Every sample `config` asks for, each yielded as it finishes (sample k seeded with
    seed + k). With `novelty` (a `novelty.Novelty`), samples that repeat a stretch of the
    corpus are drawn again, up to `config.redraws` times each, and yielded once checked."""
    prime = check(config, vocabulary)
    streams = Streams(model, vocabulary)
    streams.extend([streams.row(config, seed, key=k) for k, seed in enumerate(seeds(config))])
    checking: list[Row] = []
    while streams or streams.finished:
        for row in streams.step():
            if novelty is None:
                yield row.sample(prime, row.key)
            else:
                checking.append(row)
        if streams or not checking:
            continue
        copies = novelty.copies([row.text for row in checking])
        again = []
        for row, copied in zip(checking, copies, strict=True):
            if copied is not None and row.redraws < config.redraws:
                row.redraw()
                again.append(row)
            else:
                yield row.sample(prime, row.key, novel=copied is None)
        streams.extend(again)
        checking = []
