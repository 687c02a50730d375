"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

import json
import subprocess
import sys

import pytest
import torch

from charlstm.distributed import Ranks
from charlstm.errors import CharlstmError
from tests.helpers import run_cli, train_args


def fp32_run(corpus, checkpoints, steps: int) -> list[str]:
    return train_args(corpus, checkpoints, "--precision", "fp32", steps=steps, eval_every=10)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "charlstm"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


def final(run):
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    weights = torch.load(run / "last.pt", weights_only=True)
    return metrics[-1], weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_corpus):
    """One process for 20 steps; two processes for 20 steps; two for 10, resumed to 20."""
    root = tmp_path_factory.mktemp("distributed")
    single = run_cli(*fp32_run(small_corpus, root / "one", steps=20))
    assert single.returncode == 0, single.stderr
    two = torchrun(*fp32_run(small_corpus, root / "two", steps=20))
    assert two.returncode == 0, two.stderr
    half = torchrun(*fp32_run(small_corpus, root / "resumed", steps=10))
    assert half.returncode == 0, half.stderr
    (half_run,) = (root / "resumed").iterdir()
    resumed = torchrun("train", "--resume", str(half_run), "--max-steps", "20")
    assert resumed.returncode == 0, resumed.stderr
    return {name: final(next((root / name).iterdir())) for name in ("one", "two", "resumed")} | {"log": two.stderr}


def test_two_gloo_processes_follow_the_one_process_run(runs):
    (one_metrics, one), (two_metrics, two) = runs["one"], runs["two"]
    assert two_metrics["step"] == one_metrics["step"] == 20
    assert two_metrics["val_loss"] == pytest.approx(one_metrics["val_loss"], abs=1e-5)
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, atol=1e-5, rtol=1e-4)
    assert [s.shape for s in two["resume"]["carried_state"]] == [s.shape for s in one["resume"]["carried_state"]]
    torch.testing.assert_close(two["resume"]["carried_state"][0], one["resume"]["carried_state"][0], atol=1e-5, rtol=0)


def test_only_rank_zero_reports(runs):
    assert runs["log"].count("done: 20 steps") == 1


def test_a_distributed_run_resumes_where_it_stopped(runs):
    (two_metrics, two), (resumed_metrics, resumed) = runs["two"], runs["resumed"]
    assert resumed_metrics["step"] == 20
    assert resumed_metrics["val_loss"] == pytest.approx(two_metrics["val_loss"], abs=1e-6)
    for name, tensor in two["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, atol=1e-6, rtol=0)


def test_each_rank_trains_its_own_streams_of_the_global_batch():
    shares = [Ranks(rank, 4).rows(32) for rank in range(4)]
    assert [(s.start, s.stop) for s in shares] == [(0, 8), (8, 16), (16, 24), (24, 32)]
    with pytest.raises(CharlstmError, match="--batch-size 30 must divide evenly among 4 processes"):
        Ranks(0, 4).check_batch(30)
