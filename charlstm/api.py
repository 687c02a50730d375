"""charlstm from Python: load a trained model and draw, stream, score and trace with it;
train one. The command line is a thin user of the same calls.

    import charlstm
    model = charlstm.load()                 # the newest run's best checkpoint
    titles = model.generate(prime="\\n", num_samples=20, stop="\\n", seed=1)

Every default is `SamplingConfig`'s (config.py), the same the command line shows.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlstm.config import DynamicConfig, ModelConfig, SamplingConfig, TrainConfig, parse_duration
from charlstm.errors import CharlstmError
from charlstm.history import DEFAULT_ROOT

if TYPE_CHECKING:
    from charlstm.dynamic import Reading
    from charlstm.inspect import Inspection
    from charlstm.novelty import Novelty
    from charlstm.sample import Sample

_DEFAULT = SamplingConfig()


class SamplingWarning(UserWarning):
    """A setting that cannot do what it asks (a stop string the model can never write)."""


@dataclass(frozen=True)
class Score:
    """How well a model predicts a text, as `charlstm eval` reports it (the first character
    is context, not scored)."""

    nats: float
    bits: float
    characters: int


@dataclass(frozen=True)
class DynamicScore(Score):
    """A text scored while a copy of the model adapts to it (`Model.score(text, dynamic=True)`),
    and `static`: the same reading (one stream, the same characters) with the weights fixed, so
    `static.nats - nats` is what adapting gained."""

    static: Score


class Model:
    """A trained model loaded once, on the CPU; see `load`."""

    def __init__(self, path: str | Path | None = None):
        from charlstm import checkpoint

        self.path = checkpoint.resolve(path)
        self.model, self.vocabulary, self.checkpoint = checkpoint.load_model(self.path)
        self._novelty: dict[int, Novelty] = {}
        self.readings: list[Reading] = []  # an adapted copy's dynamic readings (`adapted`)

    def __repr__(self) -> str:
        c = self.model.config
        return f"<charlstm.Model {c.cell} {c.layers}x{c.hidden}, {len(self.vocabulary)} characters, {self.path}>"

    def generate(
        self,
        prime: str | None = _DEFAULT.prime,
        length: int = _DEFAULT.length,
        num_samples: int = _DEFAULT.num_samples,
        stop: str | tuple[str, ...] | list[str] = _DEFAULT.stop,
        min_length: int = _DEFAULT.min_length,
        temperature: float = _DEFAULT.temperature,
        top_k: int = _DEFAULT.top_k,
        top_p: float = _DEFAULT.top_p,
        seed: int | None = _DEFAULT.seed,
        novel: int | None = _DEFAULT.novel,
    ) -> list[str]:
        """`num_samples` texts continuing `prime` (not included), drawn together; sample k
        uses seed + k. Each ends after `length` characters, or where it writes a stop
        string (left out) once `min_length` characters precede it. With `novel` L, samples
        that repeat L characters of the training corpus are drawn again."""
        config = SamplingConfig(
            temperature=temperature, top_k=top_k, top_p=top_p, length=length, min_length=min_length, stop=stop,
            num_samples=num_samples, seed=seed, prime=prime, novel=novel,
        )  # fmt: skip
        self._warn(config)
        return [s.text for s in sorted(self.samples(config), key=lambda s: s.index)]

    def samples(self, config: SamplingConfig) -> Iterator[Sample]:
        """Each sample `config` asks for as it finishes, with its stop reason, bits per
        character and seed (what `charlstm sample --json` prints). No warnings: see
        `sample.unreachable_stops`."""
        from charlstm.sample import draw_samples

        novelty = self.novelty(config.novel) if config.novel else None
        return draw_samples(self.model, self.vocabulary, config, novelty)

    def stream(
        self,
        prime: str | None = _DEFAULT.prime,
        length: int = _DEFAULT.length,
        stop: str | tuple[str, ...] | list[str] = _DEFAULT.stop,
        min_length: int = _DEFAULT.min_length,
        temperature: float = _DEFAULT.temperature,
        top_k: int = _DEFAULT.top_k,
        top_p: float = _DEFAULT.top_p,
        seed: int | None = _DEFAULT.seed,
    ) -> Iterator[str]:
        """One sample's characters, one at a time as they are drawn (what `charlstm sample`
        prints); a stop string is left out, so characters that might begin one wait until
        they cannot."""
        from charlstm.sample import stream

        config = SamplingConfig(
            temperature=temperature, top_k=top_k, top_p=top_p, length=length, min_length=min_length, stop=stop,
            seed=seed, prime=prime,
        )  # fmt: skip
        self._warn(config)
        pieces = stream(self.model, self.vocabulary, config)
        return (ch for piece in pieces for ch in piece)

    def score(self, text: str, dynamic: bool = False, config: DynamicConfig | None = None) -> Score:
        """Loss on `text` in nats and bits per character, computed as `charlstm eval` does; with
        `dynamic`, as `charlstm eval --dynamic` does (a `DynamicScore`): a copy of the weights
        adapts to the text as it is read (`config`: how; DynamicConfig's defaults), and this
        model is left as it was."""
        if len(text) < 2:
            raise CharlstmError("a score needs at least 2 characters: the first one is only context")
        tokens = self.vocabulary.encode(text, "the text to score")
        if dynamic:
            from charlstm import dynamic as adapting

            config = config or DynamicConfig()
            rms = adapting.rms_of(self.model, self.checkpoint, self.path, config)
            result = adapting.compare(self.model, tokens, config, rms)
            static, moved = result.static, result.dynamic
            fixed = Score(static.loss, static.bpc, sum(static.characters))
            return DynamicScore(moved.loss, moved.bpc, sum(moved.characters), fixed)
        from charlstm.evaluation import evaluate_tokens

        result = evaluate_tokens(self.model, tokens, "cpu", "fp32")
        return Score(result["loss"], result["bpc"], result["characters"])

    def adapted(self, text: str, config: DynamicConfig | None = None) -> Model:
        """A copy of this model whose weights have adapted to `text` (`config.passes` dynamic
        readings of it, as `charlstm sample --adapt-to` does), so what it draws takes on the
        text's style; `readings` on the copy says how each reading scored. This model is left
        as it was, and the copy shares its vocabulary, checkpoint and --novel index."""
        from charlstm import dynamic as adapting

        if len(text) < 2:
            said = "is empty" if not text else "has 1 character"
            raise CharlstmError(f"the text to adapt to {said}; adapting needs at least 2 (the first is only context)")
        config = config or DynamicConfig()
        tokens = self.vocabulary.encode(text, "the text to adapt to")
        rms = adapting.rms_of(self.model, self.checkpoint, self.path, config)
        copied = copy.copy(self)
        copied.model, copied.readings = adapting.adapted(self.model, tokens, config, rms)
        return copied

    def trace(self, text: str) -> Inspection:
        """Every gate and state of every unit at each character of `text` (`.values[step,
        layer, quantity, unit]`, quantities named by `.quantities`), with the saturation
        statistics and unit finder that `charlstm inspect-gates` shows."""
        from charlstm.inspect import inspect_text

        return inspect_text(self.model, self.vocabulary, text, keep=None)

    def novelty(self, length: int, progress: Callable[[str, int, int], None] | None = None) -> Novelty:
        """The test against this run's training corpus for stretches of `length` characters
        (the corpus read through the token cache; `progress` hears how that goes)."""
        if length not in self._novelty:
            from charlstm.novelty import for_run

            self._novelty[length] = for_run(self.checkpoint.train_config, self.vocabulary, length, progress)
        return self._novelty[length]

    def _warn(self, config: SamplingConfig) -> None:
        from charlstm.sample import unreachable_stops

        for problem in unreachable_stops(config, self.vocabulary):
            warnings.warn(str(problem), SamplingWarning, stacklevel=3)


def load(path: str | Path | None = None) -> Model:
    """A trained model from a checkpoint file or a run folder (its best.pt); no argument:
    the newest run under checkpoints/."""
    return Model(path)


def train(
    corpus: str | Path | None = None,
    checkpoints: str | Path = DEFAULT_ROOT,
    init_from: str | Path | None = None,
    **options: Any,
) -> Path:
    """Train a model as `charlstm train` does, quietly, and return its run folder.

    `options` are the command's settings by their Python names (max_time="5m" or 300,
    max_steps, hidden, layers, cell, batch_size, lr, seed, ...); the rest keep their
    defaults, and with no shape, batch or step budget the run is sized for its time.
    `init_from` (a checkpoint or run folder) fine-tunes its weights, as `--init-from` does:
    characters the corpus has and the checkpoint lacks are added to its vocabulary.
    """
    from charlstm import runs

    model_names = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
    train_names = {f.name for f in fields(TrainConfig)} - {"corpus"}
    unknown = options.keys() - model_names - train_names
    if unknown:
        raise CharlstmError(f"charlstm.train has no option {', '.join(sorted(unknown))}")
    if isinstance(options.get("max_time"), str):
        options["max_time"] = parse_duration(options["max_time"])
    model_options = {k: v for k, v in options.items() if k in model_names}
    train_options = {k: v for k, v in options.items() if k in train_names}
    corpus_name = str(corpus) if corpus is not None else None
    init = str(init_from) if init_from is not None else None
    trainer = runs.from_options(corpus_name, model_options, train_options, init_from=init, root=Path(checkpoints))
    trainer.run(None)
    return trainer.run_dir


def sampling_config(**options: Any) -> SamplingConfig:
    """A `SamplingConfig` from settings by name, refusing unknown ones in one line."""
    names = {f.name for f in fields(SamplingConfig)}
    unknown = options.keys() - names
    if unknown:
        raise CharlstmError(f"unknown sampling setting {', '.join(sorted(unknown))}")
    return replace(_DEFAULT, **options)
