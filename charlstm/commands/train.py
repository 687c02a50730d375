"""`charlstm train`: collect the settings, start or resume a run, show its progress."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm.commands.app import Command, app
from charlstm.commands.options import THREADS_OPTION, busy_hint, given, setting_option, use_threads
from charlstm.config import CELL_TYPES, FLAGS, THREADS, ModelConfig, TrainConfig, default_text, parse_duration
from charlstm.history import DEFAULT_ROOT

_train_option = partial(setting_option, TrainConfig)
_model_option = partial(setting_option, ModelConfig)


def _sized_option(config: type, name: str, text: str, *aliases: str) -> Any:
    """An option a time-budgeted run sizes when none of the shape, batch and step options is
    given: its help shows that, and the field's default only for where it applies."""
    return typer.Option(
        FLAGS[name],
        *aliases,
        help=f"{text} \\[default: sized for the budget, or {default_text(config, name)} with --max-steps]",
        show_default=False,
    )


_CORPUS_HELP = "UTF-8 text file, folder or quoted glob. Default: Python's own standard-library source."
_VAL_CHARS_HELP = "Held-out chars each evaluation scores (the same ones); 0 = all."
_FINAL_VAL_HELP = "whole: score all held-out chars once more when the run ends."
_KEEP_MEMORY_HELP = "Keep freed memory in the process (glibc), ~30% faster on CPU."
_TENSORBOARD_HELP = "Also write TensorBoard event files into the run folder."


@app.command(
    cls=Command,
    epilog="Examples:\n\n  charlstm train\n\n  charlstm train corpus.txt --max-time 10m\n\n"
    "  charlstm train corpus.txt --cell gru --layers 3 --hidden 512\n\n"
    "  charlstm train --resume checkpoints/corpus-20261124-101500",
)
def train(
    corpus: Annotated[Path | None, typer.Argument(help=_CORPUS_HELP, show_default=False, metavar="CORPUS")] = None,
    max_time: Annotated[str | None, _train_option("max_time", "Time budget: 90s, 10m, 2h; 0 = no limit.")] = None,
    max_steps: Annotated[int | None, _train_option("max_steps", "Step budget; 0 = no limit.")] = None,
    cell: Annotated[str | None, _model_option("cell", f"{', '.join(CELL_TYPES[:-1])} or {CELL_TYPES[-1]}.")] = None,
    layers: Annotated[int | None, _model_option("layers", "Recurrent layers.")] = None,
    hidden: Annotated[int | None, _sized_option(ModelConfig, "hidden", "Units per layer.")] = None,
    embedding: Annotated[int | None, _model_option("embedding", "Character embedding size.")] = None,
    dropout: Annotated[float | None, _model_option("dropout", "Dropout between layers and before the decoder.")] = None,
    batch_size: Annotated[int | None, _sized_option(TrainConfig, "batch_size", "Parallel streams.", "-b")] = None,
    seq_len: Annotated[int | None, _train_option("seq_len", "Characters per truncated-BPTT window.")] = None,
    batching: Annotated[str | None, _train_option("batching", "stream (carry state) or random chunks.")] = None,
    lr: Annotated[float | None, _train_option("lr", "Peak learning rate (AdamW).")] = None,
    warmup_steps: Annotated[int | None, _train_option("warmup_steps", "Linear warmup steps.")] = None,
    weight_decay: Annotated[float | None, _train_option("weight_decay", "AdamW weight decay on matrices.")] = None,
    grad_clip: Annotated[float | None, _train_option("grad_clip", "Clip the gradient norm; 0 = off.")] = None,
    eval_every: Annotated[int | None, _train_option("eval_every", "Steps between validation + checkpoint.")] = None,
    sample_every: Annotated[int | None, _train_option("sample_every", "Steps between samples; 0 = off.")] = None,
    val_frac: Annotated[float | None, _train_option("val_frac", "Fraction of the text (its tail) held out.")] = None,
    val_chars: Annotated[int | None, _train_option("val_chars", _VAL_CHARS_HELP)] = None,
    final_val: Annotated[str | None, _train_option("final_val", _FINAL_VAL_HELP)] = None,
    seed: Annotated[int | None, _train_option("seed", "Seed for weights, dropout and batches.")] = None,
    device: Annotated[str | None, _train_option("device", "auto, cpu, cuda, cuda:N or mps.")] = None,
    precision: Annotated[str | None, _train_option("precision", "auto (bf16 where native), fp32 or bf16.")] = None,
    encoding: Annotated[str | None, _train_option("encoding", "Text encoding of the corpus.")] = None,
    errors: Annotated[str | None, _train_option("errors", "strict, replace (bad bytes become U+FFFD), ignore.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue a run (folder or last.pt) exactly.")] = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="A new run from a checkpoint's weights.")] = None,
    checkpoints: Annotated[Path, typer.Option("--checkpoints", help="Folder holding the runs.")] = DEFAULT_ROOT,
    keep_freed_memory: Annotated[bool, typer.Option(help=_KEEP_MEMORY_HELP)] = True,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help=_TENSORBOARD_HELP)] = False,
    threads: Annotated[str, THREADS_OPTION] = THREADS,
) -> None:
    """Train a model on a text file; checkpoints go to checkpoints/<corpus>-<time>/.

    The log goes to stderr; stdout gets one line when the run ends, its folder."""
    in_use = use_threads(threads)
    options = dict(locals(), corpus=None)  # every option by its setting's name; the corpus goes apart
    del options["in_use"]
    busy = busy_hint(in_use, "train")  # read before this run's own work raises the load
    from charlstm import runs
    from charlstm.device import keep_freed_memory as keep_memory
    from charlstm.progress import CorpusProgress, TrainingPrinter

    if max_time is not None:
        options["max_time"] = parse_duration(max_time)
    if keep_freed_memory:
        keep_memory()
    printer = TrainingPrinter(interactive=sys.stderr.isatty())
    listener = _with_tensorboard(printer) if tensorboard else printer  # refused before any run folder exists
    with CorpusProgress() as reading:
        settings = given(ModelConfig, options), given(TrainConfig, options)
        named = str(corpus) if corpus is not None else None
        trainer = runs.from_options(named, *settings, resume, init_from, checkpoints, reading)
    if trainer.ranks.main:
        for kind, line in (("warning", trainer.space_warning()), ("note", busy)):
            if line:
                print(f"charlstm: {kind}: {line}", file=sys.stderr)
    result = runs.run_to_end(trainer, listener)
    if trainer.ranks.main:
        printer.finished(trainer.run_dir, result)
        print(trainer.run_dir)  # stdout's one line, for scripts: run=$(charlstm train ...)


def _with_tensorboard(printer):
    """The printer, with TensorBoard event files written beside it (or one line on how to install it)."""
    from charlstm.tensorboard_log import TensorBoardLog

    return TensorBoardLog(printer)
