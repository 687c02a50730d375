"""Peak memory of `charlstm train` does not grow with the corpus: 1 MB against 200 MB.

Generates corpora of each size (pseudo-random words from a fixed seed; a 4 MB block is
repeated to reach large sizes, which changes nothing for memory), then trains each for
the same steps with the same 100,000-character validation split, twice: once building
the token cache ("cold") and once reading it ("warm"). Peak RSS is the child's own
(os.wait4). Prints one JSON line per run and a table.

    python benchmarks/memory.py                # 1 MB and 200 MB
    python benchmarks/memory.py --mb 1 1000    # enwik9-sized
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK_CHARS = 4 << 20
VAL_CHARS = 100_000


def write_corpus(path: Path, size: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sta", "ther", "qu", "ix", "op", "el", "an", "be", "ch"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(5000)]
    block = []
    while sum(map(len, block)) < min(size, BLOCK_CHARS):
        line = " ".join(rng.choices(words, k=rng.randint(4, 14)))
        block.append(line.capitalize() + ".\n")
    block_text = "".join(block)
    with open(path, "w", encoding="ascii") as f:
        written = 0
        while written < size:
            piece = block_text[: size - written]
            f.write(piece)
            written += len(piece)


def train(corpus: Path, cache: Path, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "charlstm", "train", str(corpus), "--max-steps", str(steps), "--max-time", "0"]
        cmd += ["--eval-every", str(steps), "--sample-every", "0", "--checkpoints", runs]
        cmd += ["--val-frac", f"{VAL_CHARS / corpus.stat().st_size:.8f}"]
        start = time.perf_counter()
        child = subprocess.Popen(
            cmd, env={**os.environ, "CHARLSTM_CACHE": str(cache)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        if status != 0:
            raise SystemExit(f"charlstm train failed: {child.stderr.read().decode()}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, nargs="+", default=[1, 200], help="corpus sizes in MB")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for mb in args.mb:
            corpus = Path(folder) / f"generated-{mb}mb.txt"
            write_corpus(corpus, mb * 1_000_000)
            cache = Path(folder) / f"cache-{mb}"
            for phase in ("cold", "warm"):
                row = {"benchmark": "memory", "corpus_mb": mb, "phase": phase, "steps": args.steps}
                row |= train(corpus, cache, args.steps)
                print(json.dumps(row), flush=True)
                rows.append(row)
            corpus.unlink()
    print(f"\n{'corpus':>8} {'phase':>6} {'peak RSS MB':>12} {'wall s':>8}")
    for r in rows:
        print(f"{r['corpus_mb']:>6}MB {r['phase']:>6} {r['peak_rss_mb']:>12} {r['wall_s']:>8}")


if __name__ == "__main__":
    main()
