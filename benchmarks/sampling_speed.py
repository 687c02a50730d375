"""Sampling chars/s, on random weights of the given shapes. Two measurements:

* `--streams 1,8,64,256`: charlstm drawing K samples at once (`sample -N K`: one batched
  product per layer per character) against one stream, and against a bare batched step
  of the same K (the explicit step with an argmax, no sampling, no text): the ceiling the
  sampler can reach. Rounds take turns over K, so a noisy machine slows all alike; the
  ratios within one run are the result.

* without `--streams`: one stream of charlstm against the naive loop that calls the fused
  nn.LSTM once per character. The naive loop runs in a child process of its own, on
  glibc's default malloc, as a plain script would; the two take turns, chunk by chunk.
  Its speed is bimodal from one process to the next: most runs ~420-700 chars/s here,
  some ~140-175, when each nn.LSTM call gets its large temporary buffers as fresh zeroed
  pages (presumably: glibc adapts its mmap threshold to the allocation history; with
  freed memory kept, GLIBC_TUNABLES=glibc.malloc.mmap_max=0, it did not show in six
  runs). Run it a few times; the ratio against the fast mode is the honest one.

Prints JSON lines, then a table on stderr.

    python benchmarks/sampling_speed.py --streams 1,8,64,256 --hidden 128,256,512
    python benchmarks/sampling_speed.py                 # 2x512 LSTM against the naive loop
    python benchmarks/sampling_speed.py --hidden 256 --chars 5000
    python benchmarks/sampling_speed.py --device cuda   # on the GPU
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from contestant import Child, serve, timed

from charlstm.config import SamplingConfig
from charlstm.device import resolve_device
from charlstm.model import CharLSTM, ModelConfig, Stepper
from charlstm.sample import draw_samples, generate
from charlstm.tokenizer import Vocabulary


def build(layers: int, hidden: int, cell: str, device: str) -> tuple[CharLSTM, Vocabulary]:
    vocabulary = Vocabulary("".join(chr(32 + i) for i in range(65)))
    torch.manual_seed(0)
    config = ModelConfig(len(vocabulary), cell=cell, layers=layers, hidden=hidden)
    return CharLSTM(config).to(resolve_device(device)).eval(), vocabulary


def naive_step(model: CharLSTM):
    """What most char-rnn ports do: model.forward on one character, sample, print, repeat
    (the print is `int`: reading the character back to the host, as charlstm does)."""
    device = model.decoder.weight.device
    generator = torch.Generator(device).manual_seed(0)
    carried = [torch.zeros(1, 1, dtype=torch.long, device=device), None]

    @torch.inference_mode()
    def step() -> None:
        logits, carried[1] = model(*carried)
        probs = torch.softmax(logits[0, -1] / 0.8, -1)
        carried[0] = torch.multinomial(probs, 1, generator=generator).view(1, 1)
        int(carried[0])

    return step


def bare_steps(model: CharLSTM, streams: int, length: int) -> None:
    """The batched explicit step alone: `length` characters for `streams` rows, the next
    input an argmax, read back to the host each step as the sampler does."""
    stepper = Stepper(model)
    state = stepper.initial_state(streams)
    ids = torch.zeros(streams, dtype=torch.long, device=stepper.decoder_bias.device)
    with torch.inference_mode():
        for _ in range(length):
            logits, state, _ = stepper.step(ids, state)
            ids = logits.argmax(dim=1)
            ids.tolist()


def measure_streams(args: argparse.Namespace, hidden: int) -> list[dict]:
    model, vocabulary = build(args.layers, hidden, args.cell, args.device)
    device = model.decoder.weight.device
    counts = [int(k) for k in args.streams.split(",")]
    best = {k: 0.0 for k in counts}
    bare = {k: 0.0 for k in counts}
    for _ in range(args.rounds):
        for k in counts:
            length = max(args.min_length, args.chars // k)
            config = SamplingConfig(0.8, length=length, num_samples=k, seed=0, prime=" ")
            seconds = timed(lambda config=config: list(draw_samples(model, vocabulary, config)), 1, device)
            best[k] = max(best[k], k * length / seconds)
            seconds = timed(lambda k=k, length=length: bare_steps(model, k, length), 1, device)
            bare[k] = max(bare[k], k * length / seconds)
    one = best[counts[0]]
    return [
        {
            "benchmark": "sampling_streams",
            "shape": f"{args.layers}x{hidden}",
            "cell": args.cell,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "streams": k,
            "chars_per_s": round(best[k]),
            "base_streams": counts[0],
            "vs_base": round(best[k] / one, 2),
            "bare_step_chars_per_s": round(bare[k]),
            "of_bare": round(best[k] / bare[k], 2),
        }
        for k in counts
    ]


def measure_naive(args: argparse.Namespace, hidden: int) -> dict:
    model, vocabulary = build(args.layers, hidden, args.cell, args.device)
    device = model.decoder.weight.device
    shape = ["--hidden", str(hidden), "--layers", str(args.layers), "--cell", args.cell, "--device", args.device]
    naive = Child([__file__, "--serve-naive", *shape])
    naive(5)
    naive_chars = max(args.chars // 10, 200)
    sampling = SamplingConfig(0.8)
    charlstm = fastest_naive = 0.0
    for _ in range(args.rounds):
        seconds = timed(lambda: "".join(generate(model, vocabulary, " ", args.chars, sampling, seed=0)), 1, device)
        charlstm = max(charlstm, args.chars / seconds)
        fastest_naive = max(fastest_naive, naive_chars / naive(naive_chars))
    naive.close()
    return {
        "benchmark": "sampling_speed",
        "shape": f"{args.layers}x{hidden}",
        "cell": args.cell,
        "device": str(device),
        "charlstm_chars_per_s": round(charlstm),
        "naive_chars_per_s": round(fastest_naive),
        "ratio": round(charlstm / fastest_naive, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="512", help="units per layer; a comma list measures each")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--streams", default="", help="e.g. 1,8,64,256: samples drawn at once (the first is the base)")
    parser.add_argument("--chars", type=int, default=3000, help="characters per round (one stream's sample length)")
    parser.add_argument("--min-length", type=int, default=200, help="--streams: the shortest sample per stream")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--serve-naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    hiddens = [int(h) for h in args.hidden.split(",")]
    if args.serve_naive:
        model, _ = build(args.layers, hiddens[0], args.cell, args.device)
        serve(naive_step(model), model.decoder.weight.device)
        return
    for hidden in hiddens:
        if args.streams:
            rows = measure_streams(args, hidden)
            for row in rows:
                print(json.dumps(row), flush=True)
            for row in rows:
                print(
                    f"{row['shape']} {args.cell}, {row['streams']:>3} streams: {row['chars_per_s']:>7,} chars/s "
                    f"({row['vs_base']:>5.2f}x {row['base_streams']}; bare step {row['bare_step_chars_per_s']:>7,}, "
                    f"{row['of_bare']:.0%} of it)",
                    file=sys.stderr,
                )
        else:
            row = measure_naive(args, hidden)
            print(json.dumps(row), flush=True)
            print(
                f"{row['shape']} {args.cell}: charlstm {row['charlstm_chars_per_s']} chars/s, naive nn.LSTM per char "
                f"{row['naive_chars_per_s']} chars/s, ratio {row['ratio']}x",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
