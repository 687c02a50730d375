"""`charlstm train`: collect the settings, start or resume a run, show its progress."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from charlstm.cli import _THREADS, _busy_hint, _given, _setting_option, _use_threads, app
from charlstm.config import CELL_TYPES, THREADS, ModelConfig, TrainConfig, parse_duration

_train_option = partial(_setting_option, TrainConfig)
_model_option = partial(_setting_option, ModelConfig)
_SIZED = ", sized for --max-time unless --layers, --hidden, --batch-size or --max-steps is given."
_CORPUS_HELP = "UTF-8 text file, folder or quoted glob. Default: Python's own standard-library source."
_VAL_CHARS_HELP = "Held-out chars each evaluation scores (the same ones); 0 = all."
_FINAL_VAL_HELP = "whole: score all held-out chars once more when the run ends."
_KEEP_MEMORY_HELP = "Keep freed memory in the process (glibc), ~30% faster on CPU."
_TENSORBOARD_HELP = "Also write TensorBoard event files into the run folder."


@app.command(
    epilog="Examples:\n\n  charlstm train\n\n  charlstm train corpus.txt --max-time 10m\n\n"
    "  charlstm train corpus.txt --cell gru --layers 3 --hidden 512\n\n"
    "  charlstm train --resume checkpoints/corpus-20261124-101500"
)
def train(
    corpus: Annotated[Path | None, typer.Argument(help=_CORPUS_HELP, show_default=False)] = None,
    max_time: Annotated[str | None, _train_option("max_time", "Time budget: 90s, 10m, 2h; 0 = no limit.")] = None,
    max_steps: Annotated[int | None, _train_option("max_steps", "Step budget; 0 = no limit.")] = None,
    cell: Annotated[str | None, _model_option("cell", f"{', '.join(CELL_TYPES[:-1])} or {CELL_TYPES[-1]}.")] = None,
    layers: Annotated[int | None, _model_option("layers", "Recurrent layers.")] = None,
    hidden: Annotated[int | None, _model_option("hidden", f"Units per layer{_SIZED}")] = None,
    embedding: Annotated[int | None, _model_option("embedding", "Character embedding size.")] = None,
    dropout: Annotated[float | None, _model_option("dropout", "Dropout between layers and before the decoder.")] = None,
    batch_size: Annotated[int | None, _train_option("batch_size", f"Parallel streams{_SIZED}", "-b")] = None,
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
    errors: Annotated[str | None, _train_option("errors", "strict, or replace to accept bad bytes.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue a run (folder or last.pt) exactly.")] = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="A new run from a checkpoint's weights.")] = None,
    checkpoints: Annotated[Path, typer.Option("--checkpoints", help="Folder holding the runs.")] = Path("checkpoints"),
    keep_freed_memory: Annotated[bool, typer.Option(help=_KEEP_MEMORY_HELP)] = True,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help=_TENSORBOARD_HELP)] = False,
    threads: Annotated[str, _THREADS] = THREADS,
) -> None:
    """Train a model on a text file; checkpoints go to checkpoints/<corpus>-<time>/."""
    in_use = _use_threads(threads)
    options = dict(locals(), corpus=None)  # every option by its setting's name; the corpus goes apart
    del options["in_use"]
    busy = _busy_hint(in_use)  # read before this run's own work raises the load
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
        given = _given(ModelConfig, options), _given(TrainConfig, options)
        named = str(corpus) if corpus is not None else None
        trainer = runs.from_options(named, *given, resume, init_from, checkpoints, reading)
    if trainer.ranks.main:
        for kind, line in (("warning", trainer.space_warning()), ("note", busy)):
            if line:
                print(f"charlstm: {kind}: {line}", file=sys.stderr)
    result = runs.run_to_end(trainer, listener)
    if trainer.ranks.main:
        printer.finished(trainer.run_dir, result)


def _with_tensorboard(printer):
    """The printer, with TensorBoard event files written beside it (or one line on how to install it)."""
    from charlstm.tensorboard_log import TensorBoardLog

    return TensorBoardLog(printer)
