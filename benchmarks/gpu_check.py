"""Everything to check on a GPU, in one run of under ten minutes: JSON lines on stdout.

    python benchmarks/gpu_check.py CORPUS [--quick] [--out FOLDER]

CORPUS is any text file (tiny-shakespeare for numbers to publish). Parts, each guarded so
that one failure does not stop the rest, each printing {"part": ..., "ok": ...}:

  device          GPU, compute capability, cuDNN version, native bf16 (charlstm's rule:
                  capability 8.0+) against torch.cuda.is_bf16_supported (counts emulation)
  rnn_dtype       the dtype the recurrent kernel computes in, per --precision, with
                  charlstm's CUDA policy and, for comparison, under plain autocast
  train           `charlstm train` fp32 vs auto for 1,000 steps (200 with --quick): val loss, chars/s
  training_speed  benchmarks/training_speed.py --device cuda at 2x256 and 2x512
  sampling_speed  benchmarks/sampling_speed.py --device cuda
  eval            one checkpoint scored on cuda and on cpu: the same loss within tolerance
  sample_cpu      a GPU-trained checkpoint sampled with CUDA_VISIBLE_DEVICES= (CPU only)
  syncs           host syncs per training step (torch.cuda.set_sync_debug_mode), dropout 0 and 0.1
  cuda_tests      pytest -k cuda (the CUDA-only tests and the faked-CUDA ones)

Without CUDA it says so and runs what the CPU can: device, rnn_dtype on the CPU, a tiny
CPU run evaluated and sampled with CUDA hidden, and the tests (the CUDA-only ones skip).
Nothing outside the repository is read besides CORPUS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from charlstm.config import ModelConfig, TrainConfig  # noqa: E402
from charlstm.data import load_data  # noqa: E402
from charlstm.device import autocast, describe_precision, native_bf16, prepare_model, resolve_precision  # noqa: E402
from charlstm.model import CharLSTM  # noqa: E402
from charlstm.runs import place  # noqa: E402

CUDA = torch.cuda.is_available()


def emit(part: str, **fields) -> None:
    print(json.dumps({"part": part, **fields}, default=str), flush=True)


def guarded(part: str):
    """Run a part; an exception becomes one JSON line and the next part runs."""

    def wrap(fn):
        def run(*args):
            started = time.perf_counter()
            try:
                fn(*args)
            except Exception as e:  # a check script reports every failure and goes on
                emit(part, ok=False, error=f"{type(e).__name__}: {e}", where=traceback.format_exc(limit=3)[-600:])
            finally:
                emit(f"{part}.time", seconds=round(time.perf_counter() - started, 1))

        return run

    return wrap


def charlstm(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *args],
        cwd=REPOSITORY,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@guarded("device")
def check_device() -> None:
    if not CUDA:
        emit("device", ok=True, cuda=False, torch=torch.__version__, note="CUDA is absent: the GPU parts are skipped")
        return
    device = torch.device("cuda")
    emit(
        "device",
        ok=True,
        cuda=True,
        torch=torch.__version__,
        cuda_runtime=torch.version.cuda,
        name=torch.cuda.get_device_name(device),
        capability=".".join(map(str, torch.cuda.get_device_capability(device))),
        cudnn=torch.backends.cudnn.version(),
        native_bf16=native_bf16(device),
        torch_says_bf16=torch.cuda.is_bf16_supported(),
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        auto_precision=resolve_precision("auto", device),
        gpus=torch.cuda.device_count(),
    )


@guarded("rnn_dtype")
def check_rnn_dtype() -> None:
    device = torch.device("cuda" if CUDA else "cpu")
    for precision in ("fp32", "bf16", "auto"):
        resolved = resolve_precision(precision, device)
        row = {"device": device.type, "precision": precision, "resolved": resolved}
        for policy in ("charlstm", "plain autocast"):
            torch.manual_seed(0)
            model = CharLSTM(ModelConfig(64, hidden=64, embedding=16))
            model = prepare_model(model, device) if policy == "charlstm" else model.to(device)
            seen: list[str] = []
            model.recurrent.register_forward_hook(lambda module, args, out, seen=seen: seen.append(str(out[0].dtype)))
            ids = torch.randint(0, 64, (4, 16), device=device)
            with autocast(device, resolved):
                logits, _ = model(ids)
            row[policy] = {"recurrence": seen[0].removeprefix("torch."), "logits": str(logits.dtype)[6:]}
        row["shown_as"] = describe_precision(device, resolved)
        emit("rnn_dtype", ok=True, **row)


def final_metrics(run: Path) -> dict:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return lines[-1]


@guarded("train")
def check_train(corpus: Path, out: Path, steps: int) -> None:
    device = "cuda" if CUDA else "cpu"
    model = [] if CUDA else ["--hidden", "32", "--embedding", "16", "--batch-size", "8", "--seq-len", "32"]
    steps = steps if CUDA else 30
    for precision in ("fp32", "auto"):
        root = out / f"train-{precision}"
        result = charlstm(
            *("train", str(corpus), "--device", device, "--precision", precision, "--max-steps", str(steps)),
            *("--max-time", "0", "--eval-every", str(max(steps // 2, 1)), "--sample-every", "0"),
            *("--checkpoints", str(root), *model),
            timeout=400,
        )
        if result.returncode != 0:
            emit("train", ok=False, precision=precision, stderr=result.stderr[-800:])
            continue
        (run,) = root.iterdir()
        config = json.loads((run / "config.json").read_text())
        last = final_metrics(run)
        chars = last["step"] * config["train"]["batch_size"] * config["train"]["seq_len"]
        emit(
            "train",
            ok=True,
            device=device,
            precision=precision,
            steps=last["step"],
            shape=f"{config['model']['layers']}x{config['model']['hidden']}",
            val_loss=last.get("val_loss"),
            seconds=last["elapsed"],
            chars_per_s=round(chars / max(last["elapsed"], 1e-9)),
            banner=[line for line in result.stderr.splitlines() if "vocabulary" in line][:1],
        )


def trained_run(out: Path) -> Path:
    (run,) = (out / "train-fp32").iterdir()
    return run


def passthrough(part: str, command: list[str], timeout: float) -> None:
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout)
    rows = []
    for line in result.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            rows.append(line)
    emit(part, ok=result.returncode == 0, command=" ".join(command[1:]), rows=rows, stderr=result.stderr[-600:])


@guarded("training_speed")
def check_training_speed(quick: bool) -> None:
    if not CUDA:
        emit("training_speed", ok=True, skipped="no CUDA")
        return
    steps, rounds = ("10", "1") if quick else ("40", "3")
    passthrough(
        "training_speed",
        [
            *(sys.executable, "benchmarks/training_speed.py", "--device", "cuda", "--hidden", "256", "512"),
            *("--precision", "fp32", "bf16", "--steps", steps, "--rounds", rounds),
        ],
        timeout=240,
    )


@guarded("sampling_speed")
def check_sampling_speed(quick: bool) -> None:
    if not CUDA:
        emit("sampling_speed", ok=True, skipped="no CUDA")
        return
    extra = ["--chars", "500", "--rounds", "1"] if quick else ["--streams", "1,8,64,256"]
    passthrough("sampling_speed", [sys.executable, "benchmarks/sampling_speed.py", "--device", "cuda", *extra], 180)


@guarded("eval")
def check_eval(corpus: Path, out: Path) -> None:
    run = trained_run(out)
    losses = {}
    for device in ("cuda", "cpu") if CUDA else ("cpu",):
        result = charlstm("eval", str(corpus), "--checkpoint", str(run), "--device", device, "--json", timeout=300)
        if result.returncode != 0:
            emit("eval", ok=False, device=device, stderr=result.stderr[-600:])
            return
        losses[device] = json.loads(result.stdout)["loss"]
    if "cuda" in losses:
        relative = abs(losses["cuda"] - losses["cpu"]) / losses["cpu"]
        emit("eval", ok=relative < 2e-3, losses=losses, relative_difference=relative, tolerance=2e-3)
    else:
        emit("eval", ok=True, losses=losses, note="CUDA is absent: scored on the CPU only")


@guarded("sample_cpu")
def check_sample_cpu(out: Path) -> None:
    run = trained_run(out)
    result = charlstm("sample", "--checkpoint", str(run), "-n", "200", "--seed", "1", env={"CUDA_VISIBLE_DEVICES": ""})
    emit(
        "sample_cpu",
        ok=result.returncode == 0 and len(result.stdout) >= 200,
        trained_on="cuda" if CUDA else "cpu",
        characters=len(result.stdout),
        stderr=result.stderr[-400:],
    )


@guarded("syncs")
def check_syncs(corpus: Path, out: Path) -> None:
    if not CUDA:
        emit("syncs", ok=True, skipped="no CUDA")
        return
    import charlstm.trainer as train

    for dropout in (0.0, 0.1):
        config = TrainConfig(corpus=str(corpus), device="cuda", precision="auto", max_steps=100, max_time=0)
        data = load_data(config)
        trainer = train.Trainer(
            ModelConfig(len(data.vocabulary), dropout=dropout), config, data, out / f"syncs-{dropout}", place(config)
        )
        for _ in range(5):
            trainer.train_step()
        torch.cuda.synchronize()
        steps = 20
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    trainer.train_step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
        emit("syncs", ok=True, dropout=dropout, per_step=len(syncs) / steps, kinds=sorted(set(syncs))[:5])


@guarded("cuda_tests")
def check_tests() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_device.py", "-k", "cuda", "-q", "-p", "no:cacheprovider"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=240,
    )
    emit("cuda_tests", ok=result.returncode == 0, summary=result.stdout.strip().splitlines()[-1:], cuda=CUDA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="text file to train and score on (tiny-shakespeare to publish)")
    parser.add_argument("--quick", action="store_true", help="about 3 minutes: fewer steps and rounds")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here [default: a temporary folder]")
    args = parser.parse_args()
    if not args.corpus.is_file():
        sys.exit(f"gpu_check.py: {args.corpus} is not a file")
    corpus = args.corpus.resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        out = (args.out or Path(temporary)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        check_device()
        check_rnn_dtype()
        check_train(corpus, out, 200 if args.quick else 1000)
        check_eval(corpus, out)
        check_sample_cpu(out)
        check_syncs(corpus, out)
        check_training_speed(args.quick)
        check_sampling_speed(args.quick)
        check_tests()
    emit("done", seconds=round(time.perf_counter() - started, 1), cuda=CUDA)


if __name__ == "__main__":
    main()
