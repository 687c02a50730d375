"""Every setting charlstm has, its default and its validation, in one place (no torch).

The dataclasses here are the one source the library, the command line's help and the
README's option tables read: a default is written once, as a field default. A bad value is
an `errors.SettingError` worded with the setting's Python name (`length must be >= 0`), as a
Python caller reads it; the command line spells the name through `flag`, which maps a setting
to the option a user types (or says plainly that a setting is no option), so a message never
names a flag that does not exist.
This module imports neither torch nor anything that does, so `charlstm --help` stays fast.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields

from charlstm.errors import SettingError, named

CELL_TYPES = ("lstm", "gru", "indylstm", "rnn")
PRECISIONS = ("auto", "fp32", "bf16")
BATCHINGS = ("stream", "random")
FINAL_VALS = ("bounded", "whole")
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")

# The option a user types for each setting. Settings missing here are no option of any
# command; `flag` names them as settings, and NOT_OPTIONS says why where a user may meet one.
FLAGS: dict[str, str] = {
    "corpus": "CORPUS",
    "task": "TASK",
    "encoding": "--encoding",
    "errors": "--errors",
    "batch_size": "--batch-size",
    "seq_len": "--seq-len",
    "batching": "--batching",
    "lr": "--lr",
    "warmup_steps": "--warmup-steps",
    "weight_decay": "--weight-decay",
    "grad_clip": "--grad-clip",
    "max_steps": "--max-steps",
    "max_time": "--max-time",
    "eval_every": "--eval-every",
    "sample_every": "--sample-every",
    "val_frac": "--val-frac",
    "val_chars": "--val-chars",
    "final_val": "--final-val",
    "seed": "--seed",
    "device": "--device",
    "precision": "--precision",
    "threads": "--threads",
    "cell": "--cell",
    "layers": "--layers",
    "hidden": "--hidden",
    "embedding": "--embedding",
    "dropout": "--dropout",
    "gate": "--gate",
    "view": "--view",
    "layer": "--layer",
    "unit": "--unit",
    "worst": "--worst",
    "length": "--length",
    "show": "--show",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
}
NOT_OPTIONS: dict[str, str] = {
    "vocab_size": "vocab_size (the number of distinct characters, which comes from the corpus; no option sets it)",
    "min_lr_ratio": "min_lr_ratio (a library setting; no option sets it)",
    "eval_share": "eval_share (a library setting; no option sets it)",
}


def flag(name: str) -> str:
    """How the command line names setting `name`: its option (`--batch-size`; a server's
    `max_body` is `--max-body`), or the setting itself, plainly marked, when no option sets
    it (`vocab_size`)."""
    return FLAGS.get(name) or NOT_OPTIONS.get(name) or "--" + name.replace("_", "-")


def check_device_name(name: str) -> None:
    """auto, cpu, cuda, cuda:N or mps; whether this machine has it is `device.resolve_device`'s question."""
    if name not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", name):
        raise SettingError("device", f"must be {_listed(DEVICE_NAMES)}, got {name!r}")


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise SettingError("precision", f"must be {_listed(PRECISIONS)}, got {name!r}")


THREADS = "auto"
"""--threads' default: torch's own choice, OMP_NUM_THREADS when set, else every usable core (charlstm/threads.py)."""


def check_threads(value: str) -> None:
    """`auto` or a whole number of threads, at least 1."""
    if value != "auto" and not (value.isdigit() and int(value) >= 1):
        raise SettingError("threads", f"must be auto or a number of threads (at least 1), got {value!r}")


def check_val_frac(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise SettingError("val_frac", f"must be in [0, 1), got {value}")


def _listed(words: tuple[str, ...]) -> str:
    return ", ".join(words[:-1]) + " or " + words[-1]


def _at_least(config: object, names: tuple[str, ...], low: int) -> None:
    for name in names:
        value = getattr(config, name)
        if value < low:
            bound = "at least 1" if low == 1 else f">= {low}"
            raise SettingError(name, f"must be {bound}, got {value}")


DURATION = {"duration": True}
"""Field metadata: the value is seconds, written and read as a duration (`5m`)."""


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape; `vocab_size` comes from the corpus."""

    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    embedding: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cell not in CELL_TYPES:
            raise SettingError("cell", f"must be {_listed(CELL_TYPES)}, got {self.cell!r}")
        _at_least(self, ("vocab_size", "layers", "hidden", "embedding"), 1)
        if not 0.0 <= self.dropout < 1.0:
            raise SettingError("dropout", f"must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about how to train; the model's shape is `ModelConfig`."""

    corpus: str | None = None
    encoding: str = "utf-8"
    errors: str = "strict"
    batch_size: int = 32
    seq_len: int = 64
    batching: str = "stream"
    lr: float = 1.2e-2
    min_lr_ratio: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_steps: int = 0
    max_time: float = field(default=300.0, metadata=DURATION)
    eval_every: int = 250
    # The most of a time budget (--max-time with no --max-steps) evaluations may take, the
    # final one included: they then come every eval_every steps at most, and no more often
    # than keeps them within this share (12 of ~1 s took 14-16% of a 90 s run; pacing.py).
    eval_share: float = 0.05
    sample_every: int = 500
    val_frac: float = 0.1
    # Held-out characters each periodic evaluation scores: the same ones every time, spread
    # over the split, 0 for all of it. 131,072 keeps tiny-shakespeare's 111,539 whole (its
    # numbers unchanged) and bounds evaluation on any bigger corpus to about a tenth of the
    # training between two evaluations at the defaults (docs/training-budget.md).
    val_chars: int = 131_072
    final_val: str = "bounded"  # `whole`: score the whole split once more when the run ends (the exact figure)
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        _at_least(self, ("batch_size", "seq_len", "eval_every"), 1)
        _at_least(
            self, ("max_steps", "max_time", "sample_every", "warmup_steps", "weight_decay", "grad_clip", "val_chars"), 0
        )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SettingError("lr", f"must be a positive number, got {self.lr}")
        if not 0 < self.eval_share <= 1:
            raise SettingError("eval_share", f"must be in (0, 1], got {self.eval_share}")
        check_val_frac(self.val_frac)
        if self.batching not in BATCHINGS:
            raise SettingError("batching", f"must be {_listed(BATCHINGS)}, got {self.batching!r}")
        check_device_name(self.device)
        check_precision(self.precision)
        if self.final_val not in FINAL_VALS:
            raise SettingError("final_val", f"must be {_listed(FINAL_VALS)}, got {self.final_val!r}")


@dataclass(frozen=True)
class InspectConfig:
    """inspect-gates' passage and views. `gate` None means `cell` where the cell has one, else `hidden`."""

    gate: str | None = field(default=None, metadata={"default_text": "cell"})
    length: int = 600
    show: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least(self, ("length",), 1)
        _at_least(self, ("show",), 0)


def parse_duration(text: str, name: str = "max_time") -> float:
    """Seconds from '90s', '10m', '1.5h', '1h30m' or a bare number of seconds; '0' = no limit.
    `name` is the setting the text is for, which a failure names."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise SettingError(name, f"is not a duration: {text!r}; write e.g. 90s, 10m, 2h or 1h30m")
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """The way a person writes `seconds` and `parse_duration` reads it back: 300 -> '5m'."""
    if seconds == 0 or seconds != int(seconds):
        return f"{seconds:g}"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def default_text(config: type, name: str) -> str:
    """A field's default as help and README write it: '5m' for a duration, '0.1', 'lstm'."""
    (found,) = [f for f in fields(config) if f.name == name]
    if "default_text" in found.metadata:
        return found.metadata["default_text"]
    if found.default is MISSING:
        raise ValueError(f"{config.__name__}.{name} has no default")
    if found.metadata.get("duration"):
        return format_duration(found.default)
    if isinstance(found.default, float):
        return f"{found.default:g}"
    return str(found.default)


def help_text(config: type, name: str, text: str) -> str:
    """`text` with the field's default appended; the bracket is escaped for Typer's Rich markup."""
    return f"{text} \\[default: {default_text(config, name)}]"


FLAGS.update(prime="--prime", min_length="--min-length", stop="--stop", num_samples="--num-samples", novel="--novel")
NOT_OPTIONS["redraws"] = "redraws (a library setting; no option sets it)"


def setting(default: object, help: str, *, short: str | None = None, request: str | None = None, shown=None):
    """A field that also says how a person sets it, so the dataclass is the one description
    of its settings: `help` is the command line's help line (`short` its one-letter alias),
    `request` the JSON type a server request gives it in (None: requests cannot), `shown`
    how help writes the default when the value itself would mislead (`None` -> `random`)."""
    metadata = {"help": help, "short": short, "request": request}
    if shown is not None:
        metadata["default_text"] = shown
    return field(default=default, metadata=metadata)


_STOP_HELP = "End a sample where it writes this (left out); repeat for more; \\n, \\t, \\\\ understood."
REDRAWS = 10
"""How many times `novel` redraws a sample that copies the corpus, at most."""
_NOVEL_HELP = (
    f"Redraw a sample that repeats this many characters of the training corpus verbatim (up to {REDRAWS} times)."
)


@dataclass(frozen=True)
class SamplingConfig:
    """What to draw, for `charlstm sample`, the Python API and a server's requests alike:
    each field's help, alias and request type drive `sample`'s options and the server's
    checks, and `__post_init__` is the one validation all three meet.

    The first three fields say how each character is picked (temperature 0 is greedy;
    top-k 0 and top-p 1 are off). The rest say what to draw: `num_samples` samples (sample
    k seeded with `seed` + k), each at most `length` characters, ended sooner by a stop
    string once `min_length` characters precede it; with `novel` L, a sample that repeats
    L or more characters of the training corpus is redrawn, up to `redraws` times.
    """

    temperature: float = setting(0.8, "0 = greedy; lower is safer, higher is wilder.", short="-t", request="a number")
    top_k: int = setting(0, "Sample from the k likeliest characters; 0 = off.", request="an integer")
    top_p: float = setting(1.0, "Sample from the smallest set with this much probability; 1 = off.", request="a number")
    length: int = setting(
        500, "Most new characters in a sample (all of them without --stop).", short="-n", request="an integer"
    )
    min_length: int = setting(0, "Characters a sample has before a stop string may end it.", request="an integer")
    stop: tuple[str, ...] = setting((), _STOP_HELP, request="a string or a list of strings", shown="none")
    num_samples: int = setting(1, "Samples drawn at once; sample k uses seed + k.", short="-N", request="an integer")
    seed: int | None = setting(None, "Make the samples repeatable.", request="an integer or null", shown="random")
    prime: str | None = setting(
        None, "Text to continue; \\n, \\t, \\\\ understood.", short="-p", request="a string or null", shown="a newline"
    )
    novel: int | None = setting(None, _NOVEL_HELP, shown="off")
    redraws: int = REDRAWS

    def __post_init__(self) -> None:
        stops = () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stops)
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise SettingError("temperature", f"must be a number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise SettingError("top_k", f"must be >= 1 (or 0 for off), got {self.top_k}")
        if not (0 < self.top_p <= 1) or math.isnan(self.top_p):
            raise SettingError("top_p", f"must be in (0, 1], got {self.top_p}")
        _at_least(self, ("length", "min_length", "redraws"), 0)
        _at_least(self, ("num_samples",), 1)
        if self.min_length > self.length:
            raise SettingError(
                "min_length",
                f"{self.min_length} is above {named('length')} {self.length}, the most a sample may have; "
                f"lower it or raise {named('length')}",
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise SettingError("stop", "needs text; an empty one would end every sample at once")
        if self.novel is not None and self.novel < 1:
            raise SettingError("novel", f"is the length of a copied stretch and must be at least 1, got {self.novel}")
        if self.prime == "":
            raise SettingError("prime", "is empty; leave it out to start from a newline")


REQUEST_FIELDS: dict[str, str] = {
    f.name: f.metadata["request"] for f in fields(SamplingConfig) if f.metadata.get("request")
}
"""The sampling settings a server request may give, with the JSON type each takes."""


DYNAMIC_METHODS = ("rms", "sgd")
DYNAMIC_LR = {"rms": 3e-4, "sgd": 0.1}
"""Each update's default learning rate (`DynamicConfig.lr`), chosen by benchmarks/adapt.py
on two corpora (benchmarks/README.md): RMS-normalised steps are in units of the gradient's
typical size in training, so the two rates are not comparable."""
FLAGS.update(segment="--segment", passes="--adapt-passes")
NOT_OPTIONS["method"] = "method (a library setting, rms or sgd; no option sets it)"
NOT_OPTIONS["decay"] = "decay (a library setting; no option sets it)"


@dataclass(frozen=True)
class DynamicConfig:
    """How dynamic evaluation (`charlstm eval --dynamic`, `sample --adapt-to`) adapts a copy of
    the weights to the text it reads (charlstm/dynamic.py, docs/adapt.md).

    After each `segment` characters are scored, one update: with `method` rms (Krause et al.
    2018), a step of `lr` in units of each weight's gradient RMS in training, pulled back toward
    the trained weights at a rate `decay` scaled by the same RMS; with sgd, plain `lr` x gradient.
    `passes` is how many times `sample --adapt-to` reads its text before drawing.
    """

    method: str = "rms"
    lr: float | None = field(default=None, metadata={"default_text": f"{DYNAMIC_LR['rms']:g}"})
    segment: int = 100
    decay: float = 0.02
    passes: int = 1

    def __post_init__(self) -> None:
        if self.method not in DYNAMIC_METHODS:
            raise SettingError("method", f"must be {_listed(DYNAMIC_METHODS)}, got {self.method!r}")
        if self.lr is None:
            object.__setattr__(self, "lr", DYNAMIC_LR[self.method])
        if not (isinstance(self.lr, int | float) and self.lr > 0 and math.isfinite(self.lr)):
            raise SettingError("lr", f"must be a positive number, got {self.lr}")
        _at_least(self, ("segment", "passes"), 1)
        if not 0 <= self.decay < 1:
            raise SettingError("decay", f"must be in [0, 1), got {self.decay}")
