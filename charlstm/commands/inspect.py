"""The commands that look into a model: `eval` (with `--worst`) and `inspect-gates`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm.commands.app import Command, app
from charlstm.commands.options import (
    CHECKPOINT_OPTION,
    THREADS_OPTION,
    busy_hint,
    console,
    given,
    setting_option,
    use_threads,
)
from charlstm.config import THREADS


@app.command(
    "eval",
    cls=Command,
    epilog="Examples:\n\n  charlstm eval test.txt\n\n"
    "  charlstm eval --checkpoint checkpoints/run enwik8-test.txt --json\n\n"
    "  charlstm eval test.txt --dynamic --lr 3e-4 --segment 100",
)
def evaluate(
    corpus: Annotated[
        Path, typer.Argument(help="Text to score: a file, folder or quoted glob (UTF-8).", metavar="TEXT")
    ],
    checkpoint: Annotated[str | None, CHECKPOINT_OPTION] = None,
    encoding: Annotated[str, typer.Option("--encoding", help="Text encoding of the file.")] = "utf-8",
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Drop characters the model never saw.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16 or auto.")] = "fp32",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    worst: Annotated[
        int | None,
        typer.Option("--worst", help="Also list the K most surprising passages, with their bits/char.", metavar="K"),
    ] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help=_DYNAMIC_HELP)] = False,
    lr: Annotated[float | None, _dynamic_option("lr", "--dynamic: each update's learning rate (rms).")] = None,
    segment: Annotated[int | None, _dynamic_option("segment", "--dynamic: characters scored per update.")] = None,
    threads: Annotated[str, THREADS_OPTION] = THREADS,
) -> None:
    """Score a trained model on any text: loss in nats and bits per character; with --dynamic,
    also while a copy of it adapts to the text (the checkpoint is never written)."""
    busy = busy_hint(use_threads(threads), "eval")  # read before this command's own work raises the load
    options = dict(locals())
    if dynamic or lr is not None or segment is not None:
        _evaluate_dynamic(options)
    else:
        _evaluate_static(options)
    if busy:  # after the figures: an error stays the one line on stderr
        print(f"charlstm: note: {busy}", file=sys.stderr)


def _evaluate_static(options: dict[str, Any]) -> None:
    """`eval`: the loss over the whole text, and with --worst its most surprising passages."""
    import json

    from charlstm.evaluation import evaluate_corpus
    from charlstm.progress import CorpusProgress
    from charlstm.surprise import worst_of_corpus

    checkpoint, corpus, encoding, worst = (
        options["checkpoint"],
        options["corpus"],
        options["encoding"],
        options["worst"],
    )
    reading_options = (options["skip_unknown"], options["device"], options["precision"])
    passages = []
    with CorpusProgress() as reading:
        if worst is None:
            result = evaluate_corpus(checkpoint, corpus, encoding, *reading_options, reading)
        else:
            found = worst_of_corpus(checkpoint, corpus, worst, encoding, *reading_options, reading)
            result, passages = found.summary(), found.passages
    if options["as_json"]:
        print(json.dumps(result | ({"worst": [vars(p) for p in passages]} if worst is not None else {})))
        return
    print(
        f"{result['loss']:.4f} nats/char, {result['bpc']:.4f} bits/char over {result['characters']:,} characters "
        f"of {corpus} ({result['checkpoint']}, {result['device']} {result['precision']})"
    )
    for p in passages:
        shown = p.text.replace("\n", "↵").replace("\t", "→")
        print(f"{p.bits_per_char:6.3f} bits/char at character {p.start:,}: {shown}")


_DYNAMIC_HELP = "Also score while a copy of the model adapts to the text (dynamic evaluation)."


def _dynamic_option(name: str, text: str) -> Any:
    """An option for dynamic-evaluation setting `name`: flag and default from config.DynamicConfig."""
    from charlstm.config import DynamicConfig

    return setting_option(DynamicConfig, name, text)


def _evaluate_dynamic(options: dict[str, Any]) -> None:
    """`eval --dynamic`: the static and the dynamic figure side by side, or both in one JSON object."""
    import json

    from charlstm import dynamic
    from charlstm.config import DynamicConfig
    from charlstm.errors import CharlstmError
    from charlstm.progress import CorpusProgress, ReadingProgress

    config = DynamicConfig(**given(DynamicConfig, options))
    if not options["dynamic"]:
        raise CharlstmError("--lr and --segment set how --dynamic adapts; add --dynamic")
    if options["worst"] is not None:
        raise CharlstmError("--worst lists passages of the static reading; run it without --dynamic")
    if options["precision"] != "fp32":
        raise CharlstmError("--dynamic computes in fp32; leave out --precision")
    with CorpusProgress() as reading, ReadingProgress() as adapting:
        result = dynamic.evaluate_corpus(
            options["checkpoint"], options["corpus"], config, options["encoding"], options["skip_unknown"],
            options["device"], reading, adapting,
        )  # fmt: skip
    if options["as_json"]:
        print(json.dumps(result))
        return
    static, adapted = result["static"], result["dynamic"]
    print(f"{'':8} nats/char  bits/char  seconds")
    print(f"{'static':8} {static['loss']:9.4f}  {static['bpc']:9.4f}  {static['seconds']:7.1f}")
    print(
        f"{'dynamic':8} {adapted['loss']:9.4f}  {adapted['bpc']:9.4f}  {adapted['seconds']:7.1f}"
        f"  ({-result['gain']:+.4f} nats/char)"
    )
    how = f"{config.method} update, lr {config.lr:g}, {config.segment}-character segments"
    print(
        f"over {result['characters']:,} characters of {options['corpus']}, read as one stream "
        f"({result['checkpoint']}, {result['device']}; {how})"
    )


def _inspect_option(name: str, text: str, *aliases: str) -> Any:
    """An option for inspection setting `name`: flag and default from config.InspectConfig."""
    from charlstm.config import InspectConfig

    return setting_option(InspectConfig, name, text, *aliases)


@app.command(
    "inspect-gates",
    cls=Command,
    epilog="Examples:\n\n  charlstm inspect-gates\n\n"
    "  charlstm inspect-gates --gate forget --layer 1 --unit 3 --unit 17\n\n"
    "  charlstm inspect-gates --view surprise --file speech.txt\n\n"
    "  charlstm inspect-gates --file speech.txt --html report.html --json trace.json",
)
def inspect_gates(
    checkpoint: Annotated[str | None, CHECKPOINT_OPTION] = None,
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
    threads: Annotated[str, THREADS_OPTION] = THREADS,
) -> None:
    """Colour text by what chosen gates and units do, or by how surprised the model was;
    saturation stats, a unit finder, and the model's top guesses for each character."""
    use_threads(threads)
    from charlstm import inspect, inspect_render
    from charlstm.config import InspectConfig

    config = InspectConfig(**given(InspectConfig, locals()))
    inspect_render.check_view(view)
    outputs = inspect_render.Outputs(html_path, json_path, npz_path)
    outputs.check()
    report = inspect.inspect_gates(checkpoint, config, text, file, layer, unit, skip_unknown, outputs.exporting)
    screen = console()
    if sys.stdout.isatty():
        for part in inspect_render.terminal(report, view):
            screen.print(part)
    elif not outputs.named:  # a pipe gets the values only when no file was asked for instead
        sys.stdout.write(inspect_render.plain(report, view))
        sys.stdout.flush()
    beside = screen if sys.stdout.isatty() else console(stderr=True)
    for table in inspect_render.tables(report, view):
        beside.print(table)
    for path in outputs.write(report, f"charlstm inspect-gates: {report.source}"):
        beside.print(f"wrote {path}")
