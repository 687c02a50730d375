"""The commands that use a trained model: `sample`, `export` and `serve`."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm.commands.app import EXIT_INTERRUPTED, Command, app
from charlstm.commands.options import (
    CHECKPOINT_OPTION,
    SERVE_THREADS_OPTION,
    THREADS_OPTION,
    console,
    given,
    setting_option,
    use_threads,
)
from charlstm.config import THREADS, SamplingConfig, flag, help_text, parse_duration
from charlstm.errors import CharlstmError
from charlstm.threads import SERVER_SPARE_CORES


def _sample_option(name: str) -> Any:
    """An option for sampling setting `name`: flag, alias, help and default from config.SamplingConfig."""
    return setting_option(SamplingConfig, name)


_JSON_HELP = "One JSON object a line per sample: text, prime, stop reason, bits/char, seed."


@app.command(
    cls=Command,
    epilog='Examples:\n\n  charlstm sample\n\n  charlstm sample -t 0.7 -p "ROMEO:" -n 2000 --seed 1\n\n'
    "  charlstm sample -N 20 --stop '\\n' --seed 1\n\n"
    "  charlstm sample -N 20 --stop '\\n' --novel 12 --json\n\n"
    "  charlstm sample --adapt-to letters.txt -n 1000\n\n"
    "  charlstm sample --checkpoint checkpoints/run/best.pt --top-p 0.9 | less",
)
def sample(
    checkpoint: Annotated[str | None, CHECKPOINT_OPTION] = None,
    temperature: Annotated[float | None, _sample_option("temperature")] = None,
    top_k: Annotated[int | None, _sample_option("top_k")] = None,
    top_p: Annotated[float | None, _sample_option("top_p")] = None,
    prime: Annotated[str | None, _sample_option("prime")] = None,
    prime_file: Annotated[
        Path | None, typer.Option("--prime-file", help="Read the prime text from a file.", show_default=False)
    ] = None,
    length: Annotated[int | None, _sample_option("length")] = None,
    num_samples: Annotated[int | None, _sample_option("num_samples")] = None,
    stop: Annotated[list[str] | None, _sample_option("stop")] = None,
    min_length: Annotated[int | None, _sample_option("min_length")] = None,
    seed: Annotated[int | None, _sample_option("seed")] = None,
    novel: Annotated[int | None, _sample_option("novel")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
    adapt_to: Annotated[
        Path | None, typer.Option("--adapt-to", help=_ADAPT_HELP, show_default=False, metavar="FILE")
    ] = None,
    adapt_passes: Annotated[int | None, _adapt_option("passes", "Readings of the --adapt-to text.")] = None,
    threads: Annotated[str, THREADS_OPTION] = THREADS,
) -> None:
    """Stream text from a trained model; or many samples at once, cut at stop strings, as JSON."""
    use_threads(threads)
    options = dict(locals())
    config = _sampling_config(options)
    from charlstm import api
    from charlstm.progress import CorpusProgress
    from charlstm.sample import unreachable_stops

    model = api.load(checkpoint)
    if adapt_to is not None or adapt_passes is not None:
        model = _adapted(model, adapt_to, adapt_passes)
    for problem in unreachable_stops(config, model.vocabulary):
        print(f"charlstm: warning: {problem.spelled(flag)}", file=sys.stderr)
    if config.novel:
        with CorpusProgress() as reading:
            model.novelty(config.novel, reading)
    if config.num_samples == 1 and not config.novel and not as_json:
        _stream_one(model, config)
    else:
        _print_samples(model, config, as_json)


_ADAPT_HELP = "First adapt a copy of the weights to this text (dynamic evaluation), so samples take on its style."


def _adapt_option(name: str, text: str) -> Any:
    """An option for adaptation setting `name`: flag and default from config.DynamicConfig."""
    from charlstm.config import DynamicConfig

    return setting_option(DynamicConfig, name, text)


def _adapted(model: Any, path: Path | None, passes: int | None) -> Any:
    """`model` adapted to the --adapt-to file, and one line on stderr saying how the readings went."""
    from charlstm.config import DynamicConfig
    from charlstm.corpus import read_text

    config = DynamicConfig(**({"passes": passes} if passes is not None else {}))
    if path is None:
        raise CharlstmError("--adapt-passes says how often to read the --adapt-to text; add --adapt-to FILE")
    adapted = model.adapted(read_text(path, what="--adapt-to file"), config)
    readings = adapted.readings
    bits = " -> ".join(f"{r.bpc:.3f}" for r in readings)
    seconds = sum(r.seconds for r in readings)
    chars = sum(readings[0].characters)
    print(
        f"adapted to {path}: {chars:,} characters x {len(readings)} pass{'es' if len(readings) > 1 else ''} "
        f"in {seconds:.1f} s; bits/char while reading: {bits}",
        file=sys.stderr,
    )
    return adapted


def _sampling_config(options: dict[str, Any]) -> Any:
    """The SamplingConfig `sample`'s options ask for: escapes read, the prime file read."""
    from charlstm.corpus import read_text
    from charlstm.sample import unescape

    prime, prime_file = options["prime"], options["prime_file"]
    if prime is not None and prime_file is not None:
        raise CharlstmError("give --prime or --prime-file, not both")
    options["prime"] = read_text(prime_file, what="prime file") if prime_file is not None else prime and unescape(prime)
    options["stop"] = tuple(unescape(s) for s in options["stop"] or ())
    return SamplingConfig(**given(SamplingConfig, options))


class _Writer:
    """stdout for samples: the prime in bold cyan and headers dimmed on a terminal, plain text in a pipe."""

    def __init__(self) -> None:
        self.out, self.console = sys.stdout, console()

    def styled(self, text: str, style: str, end: str = "") -> None:
        if self.out.isatty():
            self.console.print(text, style=style, end=end)
        else:
            self.out.write(text + end)

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _stream_one(model: Any, config: Any) -> None:
    """One sample, each character written as it is drawn."""
    from charlstm.sample import prime_of, stream

    pieces = stream(model.model, model.vocabulary, config)  # checks the prime before anything is written
    writer = _Writer()
    writer.styled(prime_of(config, model.vocabulary), "bold cyan")
    for piece in pieces:
        writer.write(piece)
    writer.write("\n")


def _print_samples(model: Any, config: Any, as_json: bool) -> None:
    """Samples drawn as one batch, printed whole and in order (sample k as soon as samples 0
    to k have ended): as text under a header each, or one JSON object a line; then, with
    --novel, a line on what was redrawn. Samples are counted from 0, as JSON's `sample`
    and the seed rule (sample k uses seed + k) count them."""
    import json

    from charlstm.sample import prime_of

    first, last = prime_of(config, model.vocabulary), config.num_samples - 1
    writer, drawn, waiting = _Writer(), [], {}
    for finished in model.samples(config):
        waiting[finished.index] = finished
        while len(drawn) in waiting:
            s = waiting.pop(len(drawn))
            drawn.append(s)
            if as_json:
                writer.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
                continue
            if last:
                writer.styled(f"--- sample {s.index} (0 to {last}), seed {s.seed} ---", "dim", end="\n")
            writer.styled(first if first.strip() or not last else "", "bold cyan")
            writer.write(s.text + "\n")
    if config.novel:
        print(_novelty_summary(config, drawn), file=sys.stderr)


def _novelty_summary(config: Any, drawn: list) -> str:
    """One line: how many samples --novel redrew, and which still repeat the corpus."""
    redrawn = [s for s in drawn if s.redraws]
    still = sorted(s.index for s in drawn if s.novel is False)
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
    cls=Command,
    epilog="Examples:\n\n  charlstm export --onnx model.onnx\n\n"
    "  charlstm export checkpoints/corpus-20261124-101500 --html model.html\n\n"
    "  charlstm export run/best.pt --onnx model.onnx --html model.html --force",
)
def export(
    run: Annotated[
        str | None,
        typer.Argument(
            help="A .pt file or a run folder. Default: newest run's best.pt.", show_default=False, metavar="RUN"
        ),
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


def _serve_option(name: str, text: str) -> Any:
    """An option for server setting `name`: flag and default from serve_config.ServeConfig."""
    from charlstm.serve_config import ServeConfig, option

    return typer.Option(option(name), help=help_text(ServeConfig, name, text), show_default=False)


@app.command(
    cls=Command,
    epilog="Examples:\n\n  charlstm serve\n\n  charlstm serve --checkpoint checkpoints/run --port 8080\n\n"
    '  curl -N localhost:8000/generate -d \'{"prime": "ROMEO:", "length": 300, "stream": true}\'\n\n'
    "  charlstm serve --host 0.0.0.0 --max-rows 64    (every interface: put a proxy with authentication in front)",
)
def serve(
    checkpoint: Annotated[str | None, CHECKPOINT_OPTION] = None,
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
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CHARLSTM_API_KEY",
            help="Ask /v1/* requests for this key (Authorization: Bearer KEY); the variable keeps it out of ps.",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[str, SERVE_THREADS_OPTION] = THREADS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not log each request on stderr.")] = False,
) -> None:
    """Keep a model loaded and answer HTTP: streaming generation, scores, continuations, a playground page.

    A request with keep gets an id to continue from its hidden state; kept states expire after
    --session-ttl, and at most --max-sessions are kept at once."""
    computing = use_threads(threads, spare=SERVER_SPARE_CORES)
    options = dict(locals())
    from charlstm import serve as serving
    from charlstm.serve_config import ServeConfig

    if session_ttl is not None:
        options["session_ttl"] = parse_duration(session_ttl, "session_ttl")
    config = ServeConfig(**given(ServeConfig, options))
    server = serving.start(checkpoint, config, None if quiet else partial(print, file=sys.stderr, flush=True))
    try:
        plural = "s" if computing > 1 else ""
        print(
            f"charlstm serve: {server.url} ({server.summary}; {computing} compute thread{plural}); Ctrl-C stops",
            flush=True,
        )
        warning = serving.exposure(config)
        if warning:
            print(f"charlstm: warning: {warning}", file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("charlstm serve: stopped", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        server.close()
