"""Soak test for crash safety and exact resume: SIGKILL `charlstm train` at random moments
many times (saves every few steps, so many kills land mid-save), check after each kill that
the last checkpoint still loads, resume, and at the end compare the weights bit for bit
with an uninterrupted run of the same seed. Prints one JSON line per kill and a summary.

    python benchmarks/kill_soak.py --kills 40

The corpus is --corpus PATH, or tiny-shakespeare as `charlstm corpus get tinyshakespeare`
fetched it (see corpus_arg.py).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from corpus_arg import add_corpus_argument, find_corpus

MODEL = ["--layers", "2", "--hidden", "48", "--embedding", "16", "--batch-size", "8", "--seq-len", "32"]


def train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "charlstm", "train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _last_saved(root: Path) -> int:
    """When last.pt was last replaced (0 if never), to wait for a run to make progress."""
    files = list(root.glob("*/last.pt"))
    return files[0].stat().st_mtime_ns if files else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    add_corpus_argument(parser)
    args = parser.parse_args()
    corpus = find_corpus(args.corpus)
    rng = random.Random(args.seed)
    budget = [
        "--max-steps",
        str(args.steps),
        "--max-time",
        "0",
        "--eval-every",
        "3",
        "--sample-every",
        "0",
        "--val-frac",
        "0.01",
        "--device",
        "cpu",  # exact resume is a CPU promise: cuDNN's RNN backward is not deterministic
        *MODEL,
    ]
    with tempfile.TemporaryDirectory() as root:
        straight, killed = Path(root) / "straight", Path(root) / "killed"
        reference = train([str(corpus), "--checkpoints", str(straight), *budget])
        _, err = reference.communicate()
        assert reference.returncode == 0, err
        command = [str(corpus), "--checkpoints", str(killed), *budget]
        kills = 0
        while True:
            saved_before = _last_saved(killed)
            process = train(command)
            while process.poll() is None and _last_saved(killed) == saved_before:
                time.sleep(0.02)
            if kills < args.kills and process.poll() is None:
                time.sleep(rng.uniform(0.0, 1.5))
                process.send_signal(signal.SIGKILL)
                process.wait()
                (run,) = killed.iterdir()
                step = torch.load(run / "last.pt", weights_only=True)["resume"]["step"]
                if process.returncode == -signal.SIGKILL:
                    kills += 1
                    print(json.dumps({"benchmark": "kill_soak", "kill": kills, "last_pt_step": step}), flush=True)
                command = ["--resume", str(run)]
            else:
                _, err = process.communicate()
                assert process.returncode == 0, err
                break
        (a,) = straight.iterdir()
        (b,) = killed.iterdir()
        wa = torch.load(a / "last.pt", weights_only=True)["model"]
        wb = torch.load(b / "last.pt", weights_only=True)["model"]
        identical = all(torch.equal(wa[k], wb[k]) for k in wa)
        leftovers = sorted(p.name for p in b.iterdir() if p.suffix == ".tmp")
        summary = {
            "benchmark": "kill_soak",
            "kills": kills,
            "steps": args.steps,
            "bit_identical": identical,
            "temporary_files_left": len(leftovers),
        }
        print(json.dumps(summary), flush=True)
        print(f"{kills} kills, weights bit-identical to the uninterrupted run: {identical}", file=sys.stderr)
        if not identical:
            sys.exit(1)


if __name__ == "__main__":
    main()
