"""Sampling chars/s: charlstm's explicit-step sampler against the naive loop that calls the
fused nn.LSTM once per character, on the same weights.

The naive loop runs in a child process of its own, on glibc's default malloc, as a plain
script would; the two take turns, chunk by chunk, so a noisy machine slows both alike.
Its speed is bimodal from one process to the next: most runs ~420-700 chars/s here, some
~140-175, when each nn.LSTM call gets its large temporary buffers as fresh zeroed pages
(presumably: glibc adapts its mmap threshold to the allocation history; with freed memory
kept, GLIBC_TUNABLES=glibc.malloc.mmap_max=0, it did not show in six runs). Run it a few
times; the ratio against the fast mode is the honest one.

    python benchmarks/sampling_speed.py                 # 2x512 LSTM, the issue's reference shape
    python benchmarks/sampling_speed.py --hidden 256 --chars 5000
    python benchmarks/sampling_speed.py --device cuda   # both on the GPU
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from contestant import Child, serve, timed

from charlstm.device import resolve_device
from charlstm.model import CharLSTM, ModelConfig
from charlstm.sample import SamplingConfig, generate
from charlstm.tokenizer import Vocabulary


def build(args: argparse.Namespace) -> tuple[CharLSTM, Vocabulary]:
    vocabulary = Vocabulary("".join(chr(32 + i) for i in range(65)))
    torch.manual_seed(0)
    config = ModelConfig(len(vocabulary), cell=args.cell, layers=args.layers, hidden=args.hidden)
    return CharLSTM(config).to(resolve_device(args.device)).eval(), vocabulary


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--chars", type=int, default=3000, help="charlstm's characters per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--serve-naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model, vocabulary = build(args)
    device = model.decoder.weight.device
    if args.serve_naive:
        serve(naive_step(model), device)
        return
    shape = ["--hidden", str(args.hidden), "--layers", str(args.layers), "--cell", args.cell, "--device", args.device]
    naive = Child([__file__, "--serve-naive", *shape])
    naive(5)
    naive_chars = max(args.chars // 10, 200)
    sampling = SamplingConfig(0.8)
    charlstm = bare = 0.0
    for _ in range(args.rounds):
        seconds = timed(lambda: "".join(generate(model, vocabulary, " ", args.chars, sampling, seed=0)), 1, device)
        charlstm = max(charlstm, args.chars / seconds)
        bare = max(bare, naive_chars / naive(naive_chars))
    naive.close()
    row = {
        "benchmark": "sampling_speed",
        "shape": f"{args.layers}x{args.hidden}",
        "cell": args.cell,
        "device": str(device),
        "charlstm_chars_per_s": round(charlstm),
        "naive_chars_per_s": round(bare),
        "ratio": round(charlstm / bare, 2),
    }
    print(json.dumps(row), flush=True)
    print(
        f"{row['shape']} {args.cell}: charlstm {row['charlstm_chars_per_s']} chars/s, naive nn.LSTM per char "
        f"{row['naive_chars_per_s']} chars/s, ratio {row['ratio']}x",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
