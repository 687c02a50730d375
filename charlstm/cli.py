"""The `charlstm` command: parse options, call the library, print. Nothing else.

torch is imported inside the commands, never at module level, so `charlstm --help`
stays fast. Every error a user can cause ends here as one line on stderr (see `main`).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm import __version__, threads
from charlstm.config import FLAGS, THREADS, ModelConfig, TrainConfig, help_text, parse_duration
from charlstm.errors import CharlstmError

app = typer.Typer(
    name="charlstm",
    help="Train character-level LSTM language models, stream samples, and see inside the gates.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _version(value: bool) -> None:
    if value:
        print(f"charlstm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (or set CHARLSTM_DEBUG=1).")] = False,
) -> None:
    """`--debug` is read by `main` before parsing, so that it also covers parsing errors."""


def _given(config: type, options: dict[str, Any]) -> dict[str, Any]:
    """The settings of `config` the user actually typed (Typer defaults are None here)."""
    return {f.name: options[f.name] for f in fields(config) if options.get(f.name) is not None}


def _console(stderr: bool = False):
    """Rich, told to print text as it is: prime texts, corpus names and paths may hold
    `[...]` that markup would swallow (`[i]`) or refuse (`[/a]`)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, markup=False)


def _setting_option(config: type, name: str, text: str, *aliases: str) -> Any:
    """An option for setting `name` of `config`: its flag and its default come from config.py."""
    return typer.Option(FLAGS[name], *aliases, help=help_text(config, name, text), show_default=False)


_THREADS = typer.Option(
    "--threads",
    help=f"CPU threads: a number, or auto (OMP_NUM_THREADS if set, else every core). \\[default: {THREADS}]",
    show_default=False,
)


def _use_threads(setting: str) -> int:
    """--threads, before the command computes (charlstm/threads.py); the count in use."""
    return threads.apply(setting)


def _busy_hint(threads_in_use: int) -> str | None:
    """threads.busy_hint, reachable from commands whose `threads` option shadows the module."""
    return threads.busy_hint(threads_in_use)


_train_option = partial(_setting_option, TrainConfig)
_model_option = partial(_setting_option, ModelConfig)
_SIZED = ", sized for --max-time unless --layers, --hidden, --batch-size or --max-steps is given."
_CORPUS_HELP = "UTF-8 text file, folder or quoted glob. Default: Python's own standard-library source."


@app.command(
    epilog="Examples:\n\n  charlstm train\n\n  charlstm train corpus.txt --max-time 10m\n\n"
    "  charlstm train corpus.txt --cell gru --layers 3 --hidden 512\n\n"
    "  charlstm train --resume checkpoints/corpus-20261124-101500"
)
def train(
    corpus: Annotated[Path | None, typer.Argument(help=_CORPUS_HELP, show_default=False)] = None,
    max_time: Annotated[str | None, _train_option("max_time", "Time budget: 90s, 10m, 2h; 0 = no limit.")] = None,
    max_steps: Annotated[int | None, _train_option("max_steps", "Step budget; 0 = no limit.")] = None,
    cell: Annotated[str | None, _model_option("cell", "lstm, gru, indylstm or rnn.")] = None,
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
    val_chars: Annotated[
        int | None, _train_option("val_chars", "Held-out chars each evaluation scores (the same ones); 0 = all.")
    ] = None,
    final_val: Annotated[
        str | None, _train_option("final_val", "whole: score all held-out chars once more when the run ends.")
    ] = None,
    seed: Annotated[int | None, _train_option("seed", "Seed for weights, dropout and batches.")] = None,
    device: Annotated[str | None, _train_option("device", "auto, cpu, cuda, cuda:N or mps.")] = None,
    precision: Annotated[str | None, _train_option("precision", "auto (bf16 where native), fp32 or bf16.")] = None,
    encoding: Annotated[str | None, _train_option("encoding", "Text encoding of the corpus.")] = None,
    errors: Annotated[str | None, _train_option("errors", "strict, or replace to accept bad bytes.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue a run (folder or last.pt) exactly.")] = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="A new run from a checkpoint's weights.")] = None,
    checkpoints: Annotated[Path, typer.Option("--checkpoints", help="Folder holding the runs.")] = Path("checkpoints"),
    keep_freed_memory: Annotated[
        bool, typer.Option(help="Keep freed memory in the process (glibc), ~30% faster on CPU.")
    ] = True,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Also write TensorBoard event files into the run folder.")
    ] = False,
    threads: Annotated[str, _THREADS] = THREADS,
) -> None:
    """Train a model on a text file; checkpoints go to checkpoints/<corpus>-<time>/."""
    in_use = _use_threads(threads)
    options = dict(locals(), corpus=None)  # every option by its setting's name; the corpus goes apart
    del options["in_use"]
    busy = _busy_hint(in_use)  # read before this run's own work raises the load
    from charlstm import distributed, runs
    from charlstm.device import keep_freed_memory as keep_memory
    from charlstm.progress import CorpusProgress, TrainingPrinter

    if max_time is not None:
        options["max_time"] = parse_duration(max_time)
    if keep_freed_memory:
        keep_memory()
    printer = TrainingPrinter(interactive=sys.stderr.isatty())
    listener = _with_tensorboard(printer) if tensorboard else printer  # refused before any run folder exists
    with CorpusProgress() as reading:
        trainer = runs.from_options(
            str(corpus) if corpus is not None else None,
            _given(ModelConfig, options),
            _given(TrainConfig, options),
            resume,
            init_from,
            checkpoints,
            reading,
        )
    if trainer.ranks.main and (short_of_space := trainer.space_warning()):
        print(f"charlstm: warning: {short_of_space}", file=sys.stderr)
    if trainer.ranks.main and busy:
        print(f"charlstm: note: {busy}", file=sys.stderr)
    try:
        result = trainer.run(listener if trainer.ranks.main else None)
        # Ranks leave together: one tearing down its connections while a peer still finishes
        # its last collective aborted at exit once ('terminate called without an active exception').
        trainer.ranks.barrier()
    finally:
        listener.close()
        distributed.shutdown()
    if trainer.ranks.main:
        printer.finished(trainer.run_dir, result)


def _with_tensorboard(printer):
    """The printer, with TensorBoard event files written beside it (or one line on how to install it)."""
    from charlstm.tensorboard_log import TensorBoardLog

    return TensorBoardLog(printer)


def _sample_option(name: str, text: str, *aliases: str) -> Any:
    """An option for sampling setting `name`: flag and default from config.SamplingConfig."""
    from charlstm.config import SamplingConfig

    return _setting_option(SamplingConfig, name, text, *aliases)


def _redraw_limit() -> str:
    from charlstm.config import SamplingConfig, default_text

    return default_text(SamplingConfig, "redraws")


@app.command(
    epilog='Examples:\n\n  charlstm sample\n\n  charlstm sample -t 0.7 -p "ROMEO:" -n 2000 --seed 1\n\n'
    "  charlstm sample -N 20 --stop '\\n' --seed 1\n\n"
    "  charlstm sample -N 20 --stop '\\n' --novel 12 --json\n\n"
    "  charlstm sample --checkpoint checkpoints/run/best.pt --top-p 0.9 | less"
)
def sample(
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint", "-c", help="A .pt file or a run folder. Default: newest run's best.pt.", show_default=False
        ),
    ] = None,
    temperature: Annotated[
        float | None, _sample_option("temperature", "0 = greedy; lower is safer, higher is wilder.", "-t")
    ] = None,
    top_k: Annotated[int | None, _sample_option("top_k", "Sample from the k likeliest characters; 0 = off.")] = None,
    top_p: Annotated[
        float | None, _sample_option("top_p", "Sample from the smallest set with this much probability; 1 = off.")
    ] = None,
    prime: Annotated[str | None, _sample_option("prime", "Text to continue; \\n, \\t, \\\\ understood.", "-p")] = None,
    prime_file: Annotated[
        Path | None, typer.Option("--prime-file", help="Read the prime text from a file.", show_default=False)
    ] = None,
    length: Annotated[
        int | None, _sample_option("length", "Most new characters in a sample (all of them without --stop).", "-n")
    ] = None,
    num_samples: Annotated[
        int | None, _sample_option("num_samples", "Samples drawn at once; sample k uses seed + k.", "-N")
    ] = None,
    stop: Annotated[
        list[str] | None,
        _sample_option(
            "stop", "End a sample where it writes this (left out); repeat for more; \\n, \\t, \\\\ understood."
        ),
    ] = None,
    min_length: Annotated[
        int | None, _sample_option("min_length", "Characters a sample has before a stop string may end it.")
    ] = None,
    seed: Annotated[int | None, _sample_option("seed", "Make the samples repeatable.")] = None,
    novel: Annotated[
        int | None,
        _sample_option(
            "novel",
            "Redraw a sample that repeats this many characters of the training corpus verbatim "
            f"(up to {_redraw_limit()} times).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object a line per sample: text, prime, stop reason, bits/char, seed."),
    ] = False,
    threads: Annotated[str, _THREADS] = THREADS,
) -> None:
    """Stream text from a trained model; or many samples at once, cut at stop strings, as JSON."""
    _use_threads(threads)
    options = dict(locals())
    import json

    from charlstm import api
    from charlstm.config import SamplingConfig
    from charlstm.corpus import read_text
    from charlstm.progress import CorpusProgress
    from charlstm.sample import default_prime, stream, unescape, unreachable_stops

    if prime is not None and prime_file is not None:
        raise CharlstmError("give --prime or --prime-file, not both")
    options["prime"] = read_text(prime_file, what="prime file") if prime_file is not None else prime and unescape(prime)
    options["stop"] = tuple(unescape(s) for s in stop or ())
    config = SamplingConfig(**_given(SamplingConfig, options))
    model = api.load(checkpoint)
    for message in unreachable_stops(config, model.vocabulary):
        print(f"charlstm: warning: {message}", file=sys.stderr)
    if config.novel:
        with CorpusProgress() as reading:
            model.novelty(config.novel, reading)
    first = config.prime if config.prime is not None else default_prime(model.vocabulary)
    out, console = sys.stdout, _console()

    def write_prime(text: str) -> None:
        if out.isatty():
            console.print(text, style="bold cyan", end="")
        else:
            out.write(text)

    if config.num_samples == 1 and not config.novel and not as_json:
        pieces = stream(model.model, model.vocabulary, config)
        write_prime(first)
        for piece in pieces:
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        return
    drawn = []
    for s in model.samples(config):
        drawn.append(s)
        if as_json:
            out.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
        else:
            if config.num_samples > 1:
                header = f"--- sample {s.index + 1} of {config.num_samples}, seed {s.seed} ---"
                console.print(header, style="dim") if out.isatty() else out.write(header + "\n")
            write_prime(first if first.strip() or config.num_samples == 1 else "")
            out.write(s.text + "\n")
        out.flush()
    if config.novel:
        print(_novelty_summary(config, drawn), file=sys.stderr)


def _novelty_summary(config: Any, drawn: list) -> str:
    """One line: how many samples --novel redrew, and which still repeat the corpus."""
    redrawn = [s for s in drawn if s.redraws]
    still = sorted(s.index + 1 for s in drawn if s.novel is False)
    line = (
        f"--novel {config.novel}: {len(redrawn)} of {len(drawn)} samples redrawn "
        f"({sum(s.redraws for s in drawn)} redraws in all); "
    )
    if not still:
        return line + f"none repeats {config.novel} characters of the training corpus"
    return line + (
        f"{len(still)} still repeat{'s' if len(still) == 1 else ''} the corpus after {config.redraws} redraws "
        f"(sample{'s' if len(still) > 1 else ''} {', '.join(map(str, still))})"
    )


@app.command(
    "eval",
    epilog="Examples:\n\n  charlstm eval test.txt\n\n"
    "  charlstm eval --checkpoint checkpoints/run enwik8-test.txt --json",
)
def evaluate(
    corpus: Annotated[Path, typer.Argument(help="Text to score: a file, folder or quoted glob (UTF-8).")],
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", "-c", help="A .pt file or a run folder. Default: newest run's best.pt."),
    ] = None,
    encoding: Annotated[str, typer.Option("--encoding", help="Text encoding of the file.")] = "utf-8",
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Drop characters the model never saw.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16 or auto.")] = "fp32",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    worst: Annotated[
        int | None,
        typer.Option("--worst", help="Also list the K most surprising passages, with their bits/char.", metavar="K"),
    ] = None,
    threads: Annotated[str, _THREADS] = THREADS,
) -> None:
    """Score a trained model on any text: loss in nats and bits per character."""
    _use_threads(threads)
    import json

    from charlstm.progress import CorpusProgress
    from charlstm.surprise import worst_of_corpus
    from charlstm.trainer import evaluate_corpus

    passages = []
    with CorpusProgress() as reading:
        if worst is None:
            result = evaluate_corpus(checkpoint, corpus, encoding, skip_unknown, device, precision, reading)
        else:
            found = worst_of_corpus(checkpoint, corpus, worst, encoding, skip_unknown, device, precision, reading)
            result, passages = found.summary(), found.passages
    if as_json:
        print(json.dumps(result | ({"worst": [vars(p) for p in passages]} if worst is not None else {})))
        return
    print(
        f"{result['loss']:.4f} nats/char, {result['bpc']:.4f} bits/char over {result['characters']:,} characters "
        f"of {corpus} ({result['checkpoint']}, {result['device']} {result['precision']})"
    )
    for p in passages:
        shown = p.text.replace("\n", "↵").replace("\t", "→")
        print(f"{p.bits_per_char:6.3f} bits/char at character {p.start:,}: {shown}")


def _inspect_option(name: str, text: str, *aliases: str) -> Any:
    """An option for inspection setting `name`: flag and default from config.InspectConfig."""
    from charlstm.config import InspectConfig

    return _setting_option(InspectConfig, name, text, *aliases)


@app.command(
    "inspect-gates",
    epilog="Examples:\n\n  charlstm inspect-gates\n\n"
    "  charlstm inspect-gates --gate forget --layer 1 --unit 3 --unit 17\n\n"
    "  charlstm inspect-gates --view surprise --file speech.txt\n\n"
    "  charlstm inspect-gates --file speech.txt --html report.html --json trace.json",
)
def inspect_gates(
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", "-c", help="A .pt file or a run folder. Default: newest run's best.pt."),
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text to replay.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Replay this file.", show_default=False)] = None,
    view: Annotated[
        str,
        typer.Option("--view", help="gates: colour by chosen units; surprise: by the model's surprise, in bits."),
    ] = "gates",
    gate: Annotated[
        str | None,
        _inspect_option("gate", "input, forget, output, candidate, cell or hidden (GRU: reset, update, new, hidden)."),
    ] = None,
    layer: Annotated[
        int | None, typer.Option("--layer", help="Layer to show. Default: the strongest unit's.", show_default=False)
    ] = None,
    unit: Annotated[
        list[int] | None,
        typer.Option("--unit", help="Unit to show; repeat for more. Default: the 3 that best track a text feature."),
    ] = None,
    length: Annotated[int | None, _inspect_option("length", "Characters of the default passage.", "-n")] = None,
    show: Annotated[int | None, _inspect_option("show", "Characters kept for views and exports; 0 = all.")] = None,
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Drop characters the model never saw.")] = False,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Export the raw trace as JSON.")] = None,
    npz_path: Annotated[Path | None, typer.Option("--npz", help="Export the raw trace as .npz (numpy).")] = None,
    seed: Annotated[int | None, _inspect_option("seed", "Seed for the default generated passage.")] = None,
    threads: Annotated[str, _THREADS] = THREADS,
) -> None:
    """Colour text by what chosen gates and units do, or by how surprised the model was;
    saturation stats, a unit finder, and the model's top guesses for each character."""
    _use_threads(threads)
    from charlstm import inspect, inspect_render
    from charlstm.config import InspectConfig

    config = InspectConfig(**_given(InspectConfig, locals()))
    inspect_render.check_view(view)
    outputs = inspect_render.Outputs(html_path, json_path, npz_path)
    outputs.check()
    report = inspect.inspect_gates(checkpoint, config, text, file, layer, unit, skip_unknown, outputs.exporting)
    console = _console()
    if sys.stdout.isatty():
        for part in inspect_render.terminal(report, view):
            console.print(part)
    else:
        sys.stdout.write(inspect_render.plain(report, view))
        sys.stdout.flush()
    beside = console if sys.stdout.isatty() else _console(stderr=True)
    for table in inspect_render.tables(report, view):
        beside.print(table)
    for path in outputs.write(report, f"charlstm inspect-gates: {report.source}"):
        beside.print(f"wrote {path}")


@app.command(
    epilog="Examples:\n\n  charlstm synth copy copy.txt\n\n  charlstm synth brackets brackets.txt --chars 2000000"
)
def synth(
    task: Annotated[str, typer.Argument(help="copy (recall a key across a long gap) or brackets (nested matching).")],
    out: Annotated[Path, typer.Argument(help="File to write; an existing file is never overwritten.")],
    chars: Annotated[int, typer.Option("--chars", help="About this many characters.")] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same text.")] = 0,
) -> None:
    """Write a synthetic corpus with long-range dependencies (where a plain RNN fails)."""
    from charlstm.synthetic import make, write

    text, probes = make(task, chars, seed)
    write(out, text)
    print(f"wrote {out}: {len(text):,} characters, {len(probes):,} long-range predictions")


@app.command(
    epilog="Examples:\n\n  charlstm export --onnx model.onnx\n\n"
    "  charlstm export checkpoints/corpus-20261124-101500 --html model.html\n\n"
    "  charlstm export run/best.pt --onnx model.onnx --html model.html --force"
)
def export(
    run: Annotated[
        str | None,
        typer.Argument(help="A .pt file or a run folder. Default: newest run's best.pt.", show_default=False),
    ] = None,
    onnx: Annotated[
        Path | None,
        typer.Option(
            "--onnx", help="Write one sampling step as ONNX (pip install 'charlstm\\[onnx]').", show_default=False
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write one HTML page that samples in the browser, offline.", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace output files that exist.")] = False,
) -> None:
    """Hand a model to anyone: ONNX for any runtime, or one self-contained HTML page."""
    from charlstm.export import export as export_model

    for written in export_model(run, onnx, html, force):
        print(f"wrote {written.path} ({written.bytes / 1e6:.2f} MB): {written.what}")


@app.command(
    "runs",
    epilog="Examples:\n\n  charlstm runs\n\n  charlstm runs elsewhere/checkpoints\n\n"
    "  charlstm runs --json | jq -r '.[0].path'",
)
def list_runs(
    folder: Annotated[Path, typer.Argument(help="The folder holding the runs, or one run folder.")] = Path(
        "checkpoints"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array, newest first.")] = False,
) -> None:
    """Every run, newest first: model, steps, time, best validation bits/char, status, a sparkline."""
    import json

    from charlstm import history

    summaries = [history.summary(run) for run in history.find_runs(folder)]
    if as_json:
        print(json.dumps(summaries, indent=1))
    elif not summaries:
        print(f"no runs under {folder}/ yet; start one with: charlstm train", file=sys.stderr)
    elif sys.stdout.isatty():
        _console().print(history.render_table(summaries))
    else:
        sys.stdout.write(history.render_plain(summaries))


@app.command(
    "report",
    epilog="Examples:\n\n  charlstm report --html report.html\n\n"
    "  charlstm report checkpoints/lstm-run checkpoints/gru-run --html compare.html",
)
def report_page(
    html_path: Annotated[
        Path, typer.Option("--html", help="The page to write: one self-contained HTML file.", show_default=False)
    ],
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run folders; several share each chart. Default: the newest run.", show_default=False),
    ] = None,
) -> None:
    """One page of loss curves, learning rate, samples and settings; several runs overlaid."""
    from charlstm.report import write_report

    drawn = write_report(runs or [], html_path)
    print(f"wrote {html_path}: {', '.join(run.name for run in drawn)}")


def _serve_option(name: str, text: str) -> Any:
    """An option for server setting `name`: flag and default from serve_config.ServeConfig."""
    from charlstm.serve_config import ServeConfig, option

    return typer.Option(option(name), help=help_text(ServeConfig, name, text), show_default=False)


@app.command(
    epilog="Examples:\n\n  charlstm serve\n\n  charlstm serve --checkpoint checkpoints/run --port 8080\n\n"
    '  curl -N localhost:8000/generate -d \'{"prime": "ROMEO:", "length": 300, "stream": true}\'\n\n'
    "  charlstm serve --host 0.0.0.0 --max-rows 64    (every interface: put a proxy with authentication in front)"
)
def serve(
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint", "-c", help="A .pt file or a run folder. Default: newest run's best.pt.", show_default=False
        ),
    ] = None,
    host: Annotated[str | None, _serve_option("host", "Address to listen on; 0.0.0.0 = every interface.")] = None,
    port: Annotated[int | None, _serve_option("port", "Port to listen on; 0 = any free port.")] = None,
    max_body: Annotated[int | None, _serve_option("max_body", "Most bytes in a request body.")] = None,
    max_length: Annotated[int | None, _serve_option("max_length", "Most characters one sample may ask for.")] = None,
    max_samples: Annotated[int | None, _serve_option("max_samples", "Most samples one request may ask for.")] = None,
    max_rows: Annotated[
        int | None, _serve_option("max_rows", "Most samples drawing at once, over all requests (one batch).")
    ] = None,
    max_sessions: Annotated[
        int | None, _serve_option("max_sessions", "Most kept states (for continuations) at once.")
    ] = None,
    session_ttl: Annotated[
        str | None, _serve_option("session_ttl", "A kept state expires this long after it was kept: 90s, 10m, 1h.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not log each request on stderr.")] = False,
) -> None:
    """Keep a model loaded and answer HTTP: streaming generation, scores, continuations, a playground page.

    A request with keep gets an id to continue from its hidden state; kept states expire after
    --session-ttl, and at most --max-sessions are kept at once."""
    options = dict(locals())
    from charlstm import serve as serving
    from charlstm.serve_config import ServeConfig

    if session_ttl is not None:
        options["session_ttl"] = parse_duration(session_ttl)
    config = ServeConfig(**_given(ServeConfig, options))
    server = serving.start(checkpoint, config, None if quiet else partial(print, file=sys.stderr, flush=True))
    try:
        print(f"charlstm serve: {server.url} ({server.summary}); Ctrl-C stops", flush=True)
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"charlstm: warning: {serving.EXPOSED}", file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("charlstm serve: stopped", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        server.close()


corpus_app = typer.Typer(
    help="Standard corpora: list them, or fetch one with its SHA-256 checked.", no_args_is_help=True
)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command(
    "list", epilog="Examples:\n\n  charlstm corpus list\n\n  charlstm corpus list --json | jq -r '.[].name'"
)
def corpus_list(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False) -> None:
    """The corpora `charlstm corpus get` can fetch, from corpora/catalogue.json."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from charlstm.catalogue import load_catalogue

    entries = list(load_catalogue().values())
    if as_json:
        print(json.dumps([asdict(e) for e in entries], indent=1))
        return
    table = Table(box=None, show_edge=False)
    for column in ("name", "size", "licence", "what it is"):
        table.add_column(column, overflow="fold")
    for e in entries:
        size = e.member_bytes or e.bytes
        table.add_row(e.name, f"{size / 1e6:,.1f} MB", e.licence, e.description)
    _console().print(table)


@corpus_app.command(
    "get",
    epilog="Examples:\n\n  charlstm corpus get tinyshakespeare\n\n  charlstm corpus get enwik8 --to data/",
)
def corpus_get(
    name: Annotated[str, typer.Argument(help="A name from `charlstm corpus list`.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write the corpus into.")] = Path("."),
) -> None:
    """Download a standard corpus; it keeps its name only if its SHA-256 matches the catalogue."""
    from tqdm import tqdm

    from charlstm.catalogue import entry, fetch

    item = entry(name)
    with tqdm(
        total=item.bytes, desc=f"downloading {name}", unit="B", unit_scale=True, disable=not sys.stderr.isatty()
    ) as bar:
        path, downloaded = fetch(item, to, lambda done, total: bar.update(done - bar.n))
    size = path.stat().st_size
    verb = "wrote" if downloaded else "already have"
    print(f"{verb} {path} ({size:,} bytes, SHA-256 verified); train on it: {item.train.replace(item.file, str(path))}")


def _report(message: str) -> None:
    print(f"charlstm: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure is one line on stderr and an exit code."""
    # torch warns on import when numpy is absent; charlstm needs numpy only for --npz.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    debug = os.environ.get("CHARLSTM_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    code = 0
    try:
        result = app(args=argv, standalone_mode=False, prog_name="charlstm")
        code = result if isinstance(result, int) else 0
    except typer.Abort:
        _report("aborted")
        code = EXIT_INTERRUPTED
    except typer.TyperException as e:
        context = getattr(e, "ctx", None)
        hint = f" (see: {context.command_path} --help)" if context and context.info_name != "charlstm" else ""
        _report((e.format_message() or "missing command") + hint)
        code = EXIT_USAGE
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except KeyboardInterrupt:
        _report("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            raise
        from charlstm.trainer import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            if os.environ.get("RANK", "0") != "0":
                sys.exit(EXIT_INTERRUPTED)
            print(f"charlstm: {e}; continue with: charlstm train --resume {e.path.parent}", file=sys.stderr)
            code = EXIT_INTERRUPTED
        elif isinstance(e, CharlstmError):
            from charlstm.errors import WriteFailed

            if not (isinstance(e, WriteFailed) and os.environ.get("RANK", "0") != "0"):  # rank 0 says it once
                _report(str(e))
            code = EXIT_ERROR
        else:
            _report(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)")
            code = EXIT_ERROR
    sys.exit(code)
