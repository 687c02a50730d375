"""RNN vs GRU vs LSTM vs IndyLSTM: equal parameters, equal time, same corpora.

Tasks: the synthetic `copy` (recall a key after 40-80 dots) and `brackets` (close nested
brackets with the right kind) corpora from `charlstm synth`, and a natural-language corpus
(task `text`: --corpus PATH, or tiny-shakespeare as `charlstm corpus get` fetched it). For
each cell the hidden size is chosen so the model has about as many parameters as the
2-layer LSTM of --hidden units. Prints one JSON line per (task, cell): validation
bits/char, recall accuracy at the long-range positions (synthetic tasks), training
chars/s; then a table.

    python benchmarks/cells.py --seconds 60
    python benchmarks/cells.py --seconds 60 --tasks copy brackets   # no corpus needed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from corpus_arg import add_corpus_argument, find_corpus

from charlstm import synthetic
from charlstm.config import TrainConfig
from charlstm.data import Data
from charlstm.device import keep_freed_memory
from charlstm.model import CELL_TYPES, CharLSTM, ModelConfig, parameter_count
from charlstm.runs import place
from charlstm.tokenizer import Vocabulary
from charlstm.trainer import Trainer


def matched_hidden(cell: str, target: int, vocab: int, layers: int) -> int:
    """The hidden size whose model is closest to `target` parameters (counts grow with size)."""

    def count(hidden: int) -> int:
        return parameter_count(CharLSTM(ModelConfig(vocab, cell=cell, layers=layers, hidden=hidden)))

    low, high = 1, 4096
    while low < high:
        middle = (low + high) // 2
        if count(middle) < target:
            low = middle + 1
        else:
            high = middle
    return min((low - 1, low), key=lambda h: abs(count(h) - target)) if low > 1 else low


def recall(model: CharLSTM, vocabulary: Vocabulary, val: str, probes: list, choices: str) -> float:
    """Fraction of long-range positions where the expected character ranks first among `choices`."""
    if not probes:
        return math.nan
    ids = vocabulary.encode(val).long()[None]
    with torch.no_grad():
        logits, _ = model.eval()(ids[:, :-1])
    choice_ids = vocabulary.encode(choices).long()
    hits = 0
    for probe in probes:
        scores = logits[0, probe.index - 1, choice_ids]
        hits += choices[int(scores.argmax())] == probe.expected
    return hits / len(probes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    tasks = ["copy", "brackets", "text"]
    parser.add_argument("--tasks", nargs="+", choices=tasks, default=tasks, help="text: the --corpus")
    add_corpus_argument(parser)
    parser.add_argument("--cells", nargs="+", default=list(CELL_TYPES))
    parser.add_argument("--hidden", type=int, default=128, help="LSTM hidden size that sets the parameter budget")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--chars", type=int, default=500_000)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    args = parser.parse_args()
    corpus = find_corpus(args.corpus) if "text" in args.tasks else None
    keep_freed_memory()
    rows = []
    for task in args.tasks:
        if task == "text":
            text, probes, choices = corpus.read_text(encoding="utf-8"), [], ""
        else:
            text, probes = synthetic.make(task, args.chars, seed=0)
            choices = synthetic.CHOICES[task]
        vocabulary = Vocabulary.from_text(text)
        tokens = vocabulary.encode(text)
        cut = len(text) - len(text) // 10
        val_text = text[cut : cut + 20_000]
        val_probes = [synthetic.Probe(p.index - cut, p.expected) for p in probes if cut < p.index < cut + 20_000]
        data = Data(vocabulary, tokens[:cut], tokens[cut:], task, hashlib.sha256(text.encode()).hexdigest())
        target = parameter_count(CharLSTM(ModelConfig(len(vocabulary), layers=2, hidden=args.hidden)))
        for cell in args.cells:
            hidden = matched_hidden(cell, target, len(vocabulary), 2)
            config = TrainConfig(
                seq_len=args.seq_len, max_time=args.seconds, sample_every=0, eval_every=10**9, device="cpu"
            )
            with tempfile.TemporaryDirectory() as run_dir:
                model_config = ModelConfig(len(vocabulary), cell=cell, layers=2, hidden=hidden)
                trainer = Trainer(model_config, config, data, Path(run_dir), place(config, model_config.cell))
                result = trainer.run()
            val_loss = result["best_val_loss"]
            row = {
                "benchmark": "cells",
                "task": corpus.stem if task == "text" else task,
                "cell": cell,
                "hidden": hidden,
                "parameters": parameter_count(trainer.model),
                "seconds": args.seconds,
                "steps": trainer.step,
                "chars_per_s": round(trainer.step * config.batch_size * config.seq_len / trainer.elapsed),
                "val_bpc": round(val_loss / math.log(2), 4),
                "recall": round(recall(trainer.model, vocabulary, val_text, val_probes, choices), 4)
                if probes
                else None,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(
        f"{'task':>16} {'cell':>9} {'hidden':>6} {'params':>8} {'chars/s':>8} {'val bpc':>8} {'recall':>7}",
        file=sys.stderr,
    )
    for r in rows:
        recall_text = f"{r['recall']:.3f}" if r["recall"] is not None else "-"
        print(
            f"{r['task']:>16} {r['cell']:>9} {r['hidden']:>6} {r['parameters']:>8} {r['chars_per_s']:>8} "
            f"{r['val_bpc']:>8.4f} {recall_text:>7}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
