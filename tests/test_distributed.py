"""torchrun with 2 CPU processes (gloo) against one process with the same global batch, and
what ranks agree on: devices, stopping, elapsed time."""

import json
import subprocess
import sys

import pytest
import torch

from charlstm.distributed import Ranks
from charlstm.errors import CharlstmError
from tests.helpers import run_cli, train_args


def fp32_run(corpus, checkpoints, steps: int) -> list[str]:
    # The CPU (gloo) whatever the machine has: on a one-GPU machine rank 1 would ask for GPU 1.
    return train_args(corpus, checkpoints, "--device", "cpu", "--precision", "fp32", steps=steps, eval_every=10)


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


def test_a_rescan_never_removes_the_token_file_of_the_same_text(tmp_path, monkeypatch):
    """Another rank (or machine, on a shared disk) may be mapping it: a touched corpus
    (same text, new time) used to unlink it and write it again under the reader."""
    import os

    from charlstm import corpus, token_cache

    monkeypatch.setenv("CHARLSTM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "c.txt"
    path.write_text("abc abc\n")
    first = token_cache.load_tokens(corpus.find_source(path))
    inode = first.path.stat().st_ino
    os.utime(path, ns=(1, 1))  # same text, new stamp: pass one runs again
    again = token_cache.load_tokens(corpus.find_source(path))
    assert again.path == first.path and first.path.stat().st_ino == inode
    path.write_text("xyz\n")
    os.utime(path, ns=(2, 2))
    changed = token_cache.load_tokens(corpus.find_source(path))
    assert not first.path.exists() and changed.path.exists(), "the old text's file is stale and goes"


def test_ranks_agree_every_few_steps_and_every_step_near_the_time_budget():
    from charlstm.config import TrainConfig
    from charlstm.stopping import AGREE_EVERY, Agreement

    config = TrainConfig(max_time=100.0, eval_every=45)
    agreement = Agreement(0, 0.0)
    due = []
    step, clock, agreed = 0, 0.0, 0.0
    while agreed < config.max_time:  # the loop's finished(): agreed time only
        step, clock = step + 1, clock + 0.5  # half a second a step
        if agreement.due(step, config):
            due.append(step)
            agreed = clock
            agreement.agreed(step, agreed, config)
    assert due[:3] == [1, 1 + AGREE_EVERY, 1 + 2 * AGREE_EVERY], "every AGREE_EVERY steps"
    assert 45 in due and 90 in due, "at evaluations, so checkpoints hold agreed time"
    assert due[-1] == step == 200, "the time budget ends at the first step past it, as when agreeing every step"
    assert due[-3:] == [198, 199, 200]
    assert len(due) < 40, "not every step"
    steps_only = TrainConfig(max_steps=25, max_time=0, eval_every=250)
    assert [s for s in range(1, 26) if Agreement(0, 0.0).due(s, steps_only)][-1] == 25


def _any_rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = Ranks(rank, 2).any(rank == 1), Ranks(rank, 2).any(False)
    finally:
        dist.destroy_process_group()


def test_a_rank_that_finds_a_bad_state_tells_the_others_instead_of_leaving_them_waiting():
    """Before, rank 1 raised alone on a non-finite state and rank 0 waited in the gather."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_any_rank, args=(port, results), nprocs=2, join=True)
    assert dict(results) == {0: (True, False), 1: (True, False)}
