"""Two trainings on the same cores: one run alone against two at once, per thread count and
per OpenMP wait policy. Prints one JSON line per setting.

Each OpenMP worker thread that finishes its share of a parallel region spins for a while
(libgomp: 300,000 turns by default) before it sleeps, so that the next region starts
without a wake-up. Alone that is cheap; with two processes on the same cores each one's
spinning threads take the cores the other's threads need, and a run that takes under a
second alone has been seen to take 32 s. This measures, for each setting:

- alone: training seconds of one run on an otherwise quiet machine (the run's own
  `elapsed`, so Python's start-up is left out);
- pair: the slower of two identical runs started together;
- slowdown: pair / alone (2.0 is fair sharing of the cores; far above it is spinning).

Settings: --threads (1, the core count, auto) crossed with the wait policy: `spin`
(libgomp's default, GOMP_SPINCOUNT=300000), `passive` (OMP_WAIT_POLICY=PASSIVE, sleep at
once) and `short` (GOMP_SPINCOUNT=10000), each set in the child's environment, so before
its torch loads. Compare rows of one invocation only: other load on the machine moves all
of them.

    python benchmarks/shared_cores.py                      # 2x32 model, 30 steps, 3 rounds
    python benchmarks/shared_cores.py --hidden 128 --steps 100 --threads 1 2 auto
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

POLICIES = {
    "spin": {"GOMP_SPINCOUNT": "300000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "short": {"GOMP_SPINCOUNT": "10000"},
}


def stdlib_text(chars: int) -> str:
    """Text every Python has: its standard library's source, enough of it."""
    parts, size = [], 0
    for file in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = file.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= chars:
            break
    return "".join(parts)[:chars]


def command(corpus: Path, root: Path, args: argparse.Namespace, threads: str) -> list[str]:
    model = ["--layers", "2", "--hidden", str(args.hidden), "--embedding", "16", "--batch-size", "16"]
    return [
        *(sys.executable, "-m", "charlstm", "train", str(corpus), "--device", "cpu", "--precision", "fp32"),
        *("--max-steps", str(args.steps), "--max-time", "0", "--eval-every", "100000", "--sample-every", "0"),
        *("--seq-len", "64", "--threads", threads, "--checkpoints", str(root), *model),
    ]


def training_seconds(root: Path) -> float:
    (run,) = root.iterdir()
    last = (run / "metrics.jsonl").read_text().splitlines()[-1]
    return float(json.loads(last)["elapsed"])


def together(n: int, corpus: Path, args: argparse.Namespace, threads: str, policy: str) -> list[float]:
    """Training seconds of `n` identical runs started at once."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env |= POLICIES[policy]
    with tempfile.TemporaryDirectory() as folder:
        roots = [Path(folder) / f"run{i}" for i in range(n)]
        processes = [
            subprocess.Popen(
                command(corpus, r, args, threads), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            for r in roots
        ]
        for p in processes:
            _, err = p.communicate()
            if p.returncode != 0:
                sys.exit(f"shared_cores.py: a run failed: {err.decode(errors='replace').strip()[-500:]}")
        return [training_seconds(r) for r in roots]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None, help="text to train on [default: stdlib source]")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each measurement; the median is kept")
    parser.add_argument("--threads", nargs="+", default=["1", str(os.cpu_count() or 1), "auto"])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        corpus = args.corpus
        if corpus is None:
            corpus = Path(folder) / "stdlib.txt"
            corpus.write_text(stdlib_text(400_000), encoding="utf-8")
        together(1, corpus, argparse.Namespace(**{**vars(args), "steps": 2}), "1", "spin")  # token cache, warm-up
        for policy in args.policies:
            for threads in args.threads:
                alone = sorted(together(1, corpus, args, threads, policy)[0] for _ in range(args.rounds))
                pair = sorted(max(together(2, corpus, args, threads, policy)) for _ in range(args.rounds))
                row = {
                    "policy": policy,
                    "threads": threads,
                    "cores": os.cpu_count(),
                    "model": f"2x{args.hidden}",
                    "steps": args.steps,
                    "alone_s": alone[len(alone) // 2],
                    "pair_s": pair[len(pair) // 2],
                    "slowdown": round(pair[len(pair) // 2] / max(alone[len(alone) // 2], 1e-9), 2),
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
