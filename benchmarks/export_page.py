"""The sampling page of `charlstm export --html`: its size, and characters per second in Chromium.

For each model shape the page is written from a fresh model (size and speed do not depend
on what a model learned; a 65-character vocabulary, tiny-shakespeare's size), opened in
headless Chromium (Debian's, through tests/browser.py), and asked to draw characters with
its own sampler (`charlstm.sample`, temperature 0.8), timed inside the page with
performance.now(). One JSON line per shape: page bytes, parameters, seconds until the page
had loaded and decoded its weights, chars/s (median of --repeats).

    python benchmarks/export_page.py                          # lstm 2x128, 2x256, 2x512
    python benchmarks/export_page.py --cell gru --hidden 256 --chars 5000
    python benchmarks/export_page.py --checkpoint checkpoints/RUN --screenshot docs/export-page.png

With --checkpoint it measures that run's model instead; --screenshot also saves a picture
of the page after it wrote --chars characters from --prime.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.browser

from charlstm import checkpoint as checkpoints
from charlstm.export_html import html_page
from charlstm.model import CharLSTM, ModelConfig, parameter_count
from charlstm.tokenizer import Vocabulary
from tests.browser import open_page

TIME_IN_PAGE = """([prime, chars]) => {
    charlstm.sample(prime, 100, {seed: 0});
    const start = performance.now();
    charlstm.sample(prime, chars, {seed: 1});
    return (performance.now() - start) / 1000;
}"""


def fresh_model(cell: str, layers: int, hidden: int) -> tuple[CharLSTM, Vocabulary]:
    vocabulary = Vocabulary("".join(chr(32 + i) for i in range(65)))
    torch.manual_seed(0)
    return CharLSTM(ModelConfig(len(vocabulary), cell=cell, layers=layers, hidden=hidden)).eval(), vocabulary


def measure(page, model: CharLSTM, vocabulary: Vocabulary, folder: Path, args: argparse.Namespace) -> dict:
    shape = f"{model.config.cell} {model.config.layers}x{model.config.hidden}"
    path = folder / f"{shape.replace(' ', '-')}.html"
    path.write_text(html_page(model, vocabulary, f"charlstm {shape}"), encoding="utf-8")
    start = time.perf_counter()
    page.open(path)
    load_seconds = time.perf_counter() - start
    prime = args.prime if not vocabulary.unknown(args.prime) else vocabulary.chars[0]
    rates = [args.chars / page.evaluate(TIME_IN_PAGE, [prime, args.chars]) for _ in range(args.repeats)]
    page.assert_no_errors()
    return {
        "benchmark": "export_page",
        "model": shape,
        "parameters": parameter_count(model),
        "vocabulary": len(vocabulary),
        "page_bytes": path.stat().st_size,
        "load_seconds": round(load_seconds, 2),
        "chars_per_sec": round(statistics.median(rates)),
        "chars": args.chars,
        "repeats": args.repeats,
    }


def screenshot(page, path: Path, prime: str, chars: int) -> None:
    page.fill("#prime", prime)
    page.fill("#length", str(chars))
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=600_000)
    page.screenshot(path=str(path), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--checkpoint", help="measure this run's model instead of fresh ones")
    parser.add_argument("--chars", type=int, default=2000, help="characters drawn per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prime", default="The ")
    parser.add_argument("--screenshot", type=Path, help="save a picture of the page (needs --checkpoint)")
    args = parser.parse_args()
    if args.screenshot and not args.checkpoint:
        parser.error("--screenshot needs --checkpoint (a picture of an untrained model's text shows nothing)")
    if args.checkpoint:
        model, vocabulary, _ = checkpoints.load_model(checkpoints.resolve(args.checkpoint))
        models = [(model, vocabulary)]
        if args.screenshot and vocabulary.unknown(args.prime):
            parser.error(f"--prime has characters this model never saw: {sorted(vocabulary.unknown(args.prime))}")
    else:
        models = [fresh_model(args.cell, args.layers, hidden) for hidden in args.hidden]
    with tempfile.TemporaryDirectory() as folder, open_page() as page:
        for model, vocabulary in models:
            print(json.dumps(measure(page, model, vocabulary, Path(folder), args)), flush=True)
        if args.screenshot:
            screenshot(page, args.screenshot, args.prime, args.chars)
            page.assert_no_errors()
            print(json.dumps({"screenshot": str(args.screenshot)}))


if __name__ == "__main__":
    main()
