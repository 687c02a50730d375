"""Adapting a model to the text at hand (docs/adapt.md), measured on two corpora: the built-in
one (this Python's standard-library source) and --corpus (English; tiny-shakespeare for the
published rows).

    python benchmarks/adapt.py --corpus tinyshakespeare.txt --runs /tmp/adapt-runs
    python benchmarks/adapt.py --corpus tinyshakespeare.txt --runs /tmp/adapt-runs --parts dynamic

Four parts, one JSON line per measurement:

* sweep: dynamic evaluation with the rms update (Krause et al. 2018) and with plain SGD at a few
  learning rates, on a tuning slice of each validation split (the 20,000 characters before the
  report slice), to choose the defaults.
* segments: the segment length (25 to 200 characters) at a few rms rates on the same tuning
  slices: the gain and the seconds of each reading, since fewer, longer segments mean fewer
  backward passes and updates.
* dynamic: the defaults on the report slice (the last 50,000 characters of each validation split):
  static and dynamic nats/char, and dynamic's seconds against `charlstm eval`'s static reading of
  the same text (64 streams) and against the same single-stream reading without updates.
* cost: where a dynamic reading's time goes and how it grows with the text, at two lengths of the
  English validation split: the reading; the same with the update a no-op (the forward and backward
  passes alone, the floor without changing what is computed); the same single-stream reading without
  updates; `charlstm eval`. Each the best of 3, the four alternating, so a busy machine slows all alike.
* finetune: a model trained --steps steps on one corpus, fine-tuned --tune-steps steps on the
  other (`--init-from`, growing the vocabulary where it must), against a model trained from
  scratch for the same --tune-steps; validation loss of both.
* adapt: `sample --adapt-to`'s adaptation (Model.adapted) over 20,000 characters, and bits/char on
  the 5,000 characters after them, before and after, with the seconds it took.

Models train for a number of steps, not seconds, so the quality figures do not depend on how busy
the machine is; times are compared only within one run. --runs keeps the trained models, so a
part can be run again (after a default changed) without training again.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import time
from pathlib import Path

import torch
from corpus_arg import add_corpus_argument, describe, find_corpus
from quality import cpu_name

import charlstm
from charlstm import dynamic
from charlstm.config import DynamicConfig, TrainConfig
from charlstm.data import load_data
from charlstm.evaluation import evaluate_tokens

PARTS = ("sweep", "segments", "dynamic", "cost", "finetune", "adapt")
SHAPE = {"layers": 2, "hidden": 128, "embedding": 64, "batch_size": 32, "seq_len": 64}
FIXED = {"max_time": 0, "sample_every": 0, "eval_every": 250, "precision": "fp32", "device": "cpu"}
REPORT, TUNE = 50_000, 20_000
COST_LENGTHS, COST_REPEAT = (25_000, 100_000), 3
ADAPT, HELD_OUT = 20_000, 5_000
SEGMENTS = [(segment, lr) for segment in (25, 50, 100, 200) for lr in (3e-4, 1e-3)]
GRID = [("rms", lr) for lr in (3e-5, 1e-4, 3e-4, 1e-3)] + [("sgd", lr) for lr in (0.03, 0.1, 0.3, 1.0)]


def train(corpus: Path | None, root: Path, steps: int, init_from: Path | None = None) -> Path:
    """The run in `root` (trained into it the first time): `steps` steps of SHAPE on `corpus`."""
    runs = sorted(root.glob("*/best.pt")) if root.exists() else []
    if runs:
        return runs[0].parent
    return charlstm.train(corpus, root, init_from=init_from, max_steps=steps, **FIXED, **SHAPE)


def validation_text(corpus: Path | None) -> str:
    """The validation split (the text's last 10%, as training holds it out), as text."""
    data = load_data(TrainConfig(corpus=str(corpus) if corpus else None))
    return data.vocabulary.decode(data.val)


def read(model: charlstm.Model, text: str, config: DynamicConfig) -> dynamic.Comparison:
    rms = dynamic.rms_of(model.model, model.checkpoint, model.path, config)
    return dynamic.compare(model.model, model.vocabulary.encode(text), config, rms)


def dynamic_row(name: str, model: charlstm.Model, text: str, config: DynamicConfig) -> dict:
    result = read(model, text, config)
    return {
        "corpus": name,
        "method": config.method,
        "lr": config.lr,
        "segment": config.segment,
        "decay": config.decay if config.method == "rms" else None,
        "characters": sum(result.dynamic.characters),
        "static": round(result.static.loss, 4),
        "dynamic": round(result.dynamic.loss, 4),
        "gain": round(result.gain, 4),
        "dynamic_seconds": round(result.dynamic.seconds, 2),
        "static_one_stream_seconds": round(result.static.seconds, 2),
    }


def sweep(models: dict, texts: dict) -> None:
    rows = []
    for name, model in models.items():
        tune = texts[name][-REPORT - TUNE : -REPORT]
        for method, lr in GRID:
            rows.append({"benchmark": "dynamic_sweep"} | dynamic_row(name, model, tune, DynamicConfig(method, lr)))
            print(json.dumps(rows[-1]), flush=True)
        best = min((r for r in rows if r["corpus"] == name and r["method"] == "rms"), key=lambda r: r["dynamic"])
        for decay in (0.0, 0.1):
            config = DynamicConfig("rms", best["lr"], decay=decay)
            rows.append({"benchmark": "dynamic_sweep"} | dynamic_row(name, model, tune, config))
            print(json.dumps(rows[-1]), flush=True)


def segments(models: dict, texts: dict) -> None:
    for name, model in models.items():
        tune = texts[name][-REPORT - TUNE : -REPORT]
        for segment, lr in SEGMENTS:
            row = dynamic_row(name, model, tune, DynamicConfig("rms", lr, segment=segment))
            print(json.dumps({"benchmark": "dynamic_segments"} | row), flush=True)


def report(models: dict, texts: dict) -> None:
    for name, model in models.items():
        text = texts[name][-REPORT:]
        eval_seconds = math.inf
        for _ in range(2):  # the faster of two: the first pays for oneDNN's first calls
            started = time.perf_counter()
            static = evaluate_tokens(model.model, model.vocabulary.encode(text), "cpu", "fp32")
            eval_seconds = min(eval_seconds, time.perf_counter() - started)
        row = {"benchmark": "dynamic"} | dynamic_row(name, model, text, DynamicConfig())
        row |= {
            "charlstm_eval_loss": round(static["loss"], 4),
            "charlstm_eval_seconds": round(eval_seconds, 2),
            "cost_vs_charlstm_eval": round(row["dynamic_seconds"] / eval_seconds, 2),
            "cost_vs_one_stream": round(row["dynamic_seconds"] / row["static_one_stream_seconds"], 2),
            "dynamic_chars_per_s": round(row["characters"] / row["dynamic_seconds"]),
        }
        print(json.dumps(row), flush=True)


def cost(model: charlstm.Model, text: str) -> None:
    config, device = DynamicConfig(), torch.device("cpu")
    rms = dynamic.rms_of(model.model, model.checkpoint, model.path, config)

    def read_adapting(tokens: torch.Tensor, update: bool) -> None:
        adapting = copy.deepcopy(model.model)
        adapter = dynamic.Adapter(adapting, config, rms)
        if not update:
            adapter.update = lambda grads: None
        dynamic.dynamic_reading(adapting, tokens, config, adapter, device)

    readers = {
        "dynamic": lambda tokens: read_adapting(tokens, update=True),
        "forward_backward": lambda tokens: read_adapting(tokens, update=False),
        "one_stream": lambda tokens: dynamic.static_reading(model.model, tokens, device),
        "charlstm_eval": lambda tokens: evaluate_tokens(model.model, tokens, "cpu", "fp32"),
    }
    for length in COST_LENGTHS:
        tokens = model.vocabulary.encode(text[-length:])
        best = dict.fromkeys(readers, math.inf)
        for _ in range(COST_REPEAT):
            for key, reader in readers.items():
                started = time.perf_counter()
                reader(tokens)
                best[key] = min(best[key], time.perf_counter() - started)
        row = {"benchmark": "dynamic_cost", "corpus": "english", "characters": length}
        row |= {f"{key}_seconds": round(seconds, 2) for key, seconds in best.items()}
        row |= {f"{key}_vs_one_stream": round(best[key] / best["one_stream"], 2) for key in best}
        row["dynamic_vs_charlstm_eval"] = round(best["dynamic"] / best["charlstm_eval"], 2)
        print(json.dumps(row), flush=True)


def finetune(runs: Path, bases: dict, corpora: dict, steps: int) -> None:
    for source, target in (("builtin", "english"), ("english", "builtin")):
        scratch = train(corpora[target], runs / f"scratch-{target}", steps)
        tuned = train(corpora[target], runs / f"tuned-{source}-on-{target}", steps, init_from=bases[source])
        row = {"benchmark": "finetune", "from": source, "on": target, "steps": steps}
        for kind, run in (("scratch", scratch), ("finetuned", tuned)):
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            row[f"{kind}_val_loss"] = round(min(m["val_loss"] for m in metrics), 4)
        config = json.loads((tuned / "config.json").read_text())
        row["vocabulary"] = f"{config['model']['vocab_size'] - len(config['vocabulary_added'])} -> " + str(
            config["model"]["vocab_size"]
        )
        row["gain"] = round(row["scratch_val_loss"] - row["finetuned_val_loss"], 4)
        print(json.dumps(row), flush=True)


def adapt(models: dict, texts: dict) -> None:
    for model_name, text_name in (("builtin", "english"), ("english", "english"), ("builtin", "builtin")):
        model = models[model_name]
        text = model.vocabulary.known(texts[text_name][-REPORT:])
        source, held_out = text[:ADAPT], text[ADAPT : ADAPT + HELD_OUT]
        before = model.score(held_out).bits
        for passes in (1, 2):
            started = time.perf_counter()
            adapted = model.adapted(source, DynamicConfig(passes=passes))
            seconds = time.perf_counter() - started
            row = {
                "benchmark": "adapt_to",
                "model": model_name,
                "text": text_name,
                "lr": DynamicConfig().lr,
                "adapt_characters": len(source),
                "passes": passes,
                "held_out_characters": len(held_out),
                "held_out_bpc_before": round(before, 4),
                "held_out_bpc_after": round(adapted.score(held_out).bits, 4),
                "seconds": round(seconds, 2),
            }
            print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_argument(parser)
    parser.add_argument("--runs", type=Path, required=True, help="folder for the trained models (kept, reused)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each base model")
    parser.add_argument("--tune-steps", type=int, default=300, help="steps of fine-tuning, and of from-scratch")
    args = parser.parse_args()
    english = find_corpus(args.corpus)
    corpora = {"builtin": None, "english": english}
    bases = {name: train(corpus, args.runs / f"base-{name}", args.steps) for name, corpus in corpora.items()}
    models = {name: charlstm.load(run) for name, run in bases.items()}
    texts = {name: validation_text(corpus) for name, corpus in corpora.items()}
    common = {"english_corpus": describe(english)["corpus"], "base_steps": args.steps, "cpu": cpu_name()}
    common |= {"shape": "2x{hidden}, batch {batch_size}x{seq_len}".format(**SHAPE)}
    common["date"] = datetime.date.today().isoformat()
    print(json.dumps({"benchmark": "adapt_setup"} | common), flush=True)
    if "sweep" in args.parts:
        sweep(models, texts)
    if "segments" in args.parts:
        segments(models, texts)
    if "dynamic" in args.parts:
        report(models, texts)
    if "cost" in args.parts:
        cost(models["english"], texts["english"])
    if "finetune" in args.parts:
        finetune(args.runs, bases, corpora, args.tune_steps)
    if "adapt" in args.parts:
        adapt(models, texts)


if __name__ == "__main__":
    main()
