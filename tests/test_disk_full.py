"""A full, read-only or failing disk at every place charlstm writes: one line that says which
file, why, how much it needed and what was kept; nothing on disk damaged; resume works.

Failures are injected without root where bytes reach the operating system
(`disk._write_fd`), chosen by the name of the file being written, so each write site fails
as it would on a real disk, PyTorch's zip writer included. Where the tests run as root and a
tmpfs can be mounted, one test also fills a real 3 MB file system.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from charlstm import checkpoint, disk, history
from charlstm.errors import WriteFailed
from tests.helpers import ERRNOS, REASON, FailingDisk, invoke, run_cli, train_args


def one_line(err: str) -> str:
    """The error line of a command's stderr, checked to be the only one and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("charlstm: error:")]
    assert len(lines) == 1, err
    return lines[0]


def no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")], sorted(folder.rglob("*"))


# --- the writers themselves -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ERRNOS)
def test_a_failed_atomic_write_says_why_and_keeps_the_old_file(tmp_path, monkeypatch, code):
    path = tmp_path / "config.json"
    disk.write_json(path, {"old": True})
    FailingDisk(monkeypatch, "config.json", code, partial=5)
    with pytest.raises(WriteFailed) as failure:
        disk.write_json(path, {"new": True})
    line = str(failure.value)
    assert line.startswith(f"could not write {path}: {REASON[code]}")
    assert line.endswith("; the previous config.json is intact")
    assert ("free)" in line) == (code == errno.ENOSPC), "how much is free is said when space ran out"
    assert json.loads(path.read_text()) == {"old": True}
    no_temporaries(tmp_path)


def test_a_folder_where_the_file_should_be_is_refused_before_the_content_is_made(tmp_path):
    """It used to fail only at the rename, after the work, saying 'the previous folder is intact'."""
    made = []
    with pytest.raises(WriteFailed) as failure:
        disk.write_user_file(tmp_path, lambda sink: made.append(sink))
    assert str(failure.value) == f"could not write {tmp_path}: Is a directory; nothing was written"
    assert made == [] and list(tmp_path.iterdir()) == []


def test_a_short_write_under_torch_save_is_the_disk_error_not_pytorchs(tmp_path, monkeypatch):
    """PyTorch's zip writer turns the disk's error into '[enforce fail at inline_container.cc]
    unexpected pos ...'; the line says what the disk said (it said PyTorch's words before)."""
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"format": 1, "resume": {"step": 10}, "w": torch.zeros(1000)}, path)
    FailingDisk(monkeypatch, "last.pt", errno.ENOSPC, partial=3000)
    with pytest.raises(WriteFailed) as failure:
        checkpoint.save_atomic({"format": 1, "resume": {"step": 20}, "w": torch.ones(100_000)}, path)
    assert isinstance(failure.value.__cause__, RuntimeError | OSError)
    line = str(failure.value)
    assert re.fullmatch(
        rf"could not write {re.escape(str(path))}: no space left on the device "
        r"\(needs about 40\d\.?\d* kB, [\d.]+ \w+ free\); the previous last.pt is intact",
        line,
    ), line
    assert "unexpected pos" not in line
    assert checkpoint.saved_step(path) == 10
    no_temporaries(tmp_path)


@pytest.mark.parametrize("free, reason", [(1000, "no space left on the device"), (10**12, "PyTorch's writer failed")])
def test_pytorchs_own_runtime_error_is_worded_too(tmp_path, monkeypatch, free, reason):
    """A save that raises the RuntimeError PyTorch gives, with no error from the disk under it:
    out of space when the folder has less room than the checkpoint needs, else PyTorch's words."""
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"format": 1, "resume": {"step": 10}}, path)

    def short_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1232128 vs 1232016")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(disk, "free_space", lambda folder: free)
    with pytest.raises(WriteFailed, match=f"^could not write {re.escape(str(path))}: {reason}") as failure:
        checkpoint.save_atomic({"format": 1, "resume": {"step": 20}, "w": torch.ones(100_000)}, path)
    assert failure.value.kept == "the previous last.pt is intact"
    assert checkpoint.saved_step(path) == 10
    no_temporaries(tmp_path)


def test_a_torch_save_that_is_not_a_write_failure_stays_a_bug(tmp_path, monkeypatch):
    """Only the writer's own failures are worded as a disk problem; anything else is a bug."""
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bad tensor")))
    with pytest.raises(RuntimeError, match="bad tensor"):
        checkpoint.save_atomic({"format": 1}, tmp_path / "last.pt")
    no_temporaries(tmp_path)


def test_a_metrics_line_the_disk_took_half_of_is_cut_back(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    disk.append_line(log, json.dumps({"step": 10, "val_loss": 2.0}))
    FailingDisk(monkeypatch, "metrics.jsonl", errno.ENOSPC, partial=7)
    with pytest.raises(WriteFailed, match=r"metrics.jsonl: no space left on the device \(needs about \d+ bytes"):
        disk.append_line(log, json.dumps({"step": 20, "val_loss": 1.5}))
    assert log.read_text() == '{"step": 10, "val_loss": 2.0}\n'
    monkeypatch.undo()  # space freed
    disk.append_line(log, json.dumps({"step": 20, "val_loss": 1.5}))
    notes: list[str] = []
    assert [r["step"] for r in history._read_lines(log, notes)] == [10, 20] and notes == []


@pytest.mark.parametrize("code", ERRNOS)
def test_a_sample_that_cannot_be_written_is_dropped_whole_and_training_goes_on(tmp_path, monkeypatch, code):
    """Samples are a convenience: a failed one raises nothing, and leaves no half line."""
    history.append_sample(tmp_path, 10, 1.0, "first")
    FailingDisk(monkeypatch, history.SAMPLES, code, partial=20)
    history.append_sample(tmp_path, 20, 2.0, "second " * 100)
    text = (tmp_path / history.SAMPLES).read_text()
    assert text.endswith("\n") and [json.loads(x)["step"] for x in text.splitlines()] == [10]
    history.append_sample(tmp_path / "gone", 30, 3.0, "a run folder that is gone")


def test_a_line_after_one_cut_short_by_a_kill_starts_on_its_own_line(tmp_path):
    """A writer killed mid-line leaves half a record; the next record must not be glued to it."""
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 10}\n{"step": 2')
    disk.append_line(log, json.dumps({"step": 30}))
    notes: list[str] = []
    assert [r["step"] for r in history._read_lines(log, notes)] == [10, 30]
    assert notes == ["metrics.jsonl has a damaged line 2 (skipped)"]


# --- every write site, through the command a user runs ----------------------------------------------


def train_command(corpus: Path, root: Path, steps: int = 20) -> list[str]:
    return train_args(corpus, root, steps=steps, eval_every=10)


@pytest.mark.parametrize("code", ERRNOS)
def test_a_checkpoint_that_cannot_be_saved_stops_training_with_the_resume_command(
    tmp_path, monkeypatch, capsys, small_corpus, code
):
    FailingDisk(monkeypatch, "last.pt", code, healthy=1, partial=1000)
    status, _, err = invoke(capsys, *train_command(small_corpus, tmp_path))
    (run,) = tmp_path.iterdir()
    assert status == 1
    line = one_line(err)
    assert line.startswith(f"charlstm: error: could not write {run / 'last.pt'}: {REASON[code]}")
    assert line.endswith(
        f"; last.pt from step 10 and best.pt from step 10 are intact; "
        f"free space and resume with: charlstm train --resume {run}"
    )
    if code == errno.ENOSPC:
        assert re.search(r"\(needs about [\d.]+ kB, [\d.]+ \w+ free\)", line), line
    assert checkpoint.saved_step(run / "last.pt") == 10
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    no_temporaries(tmp_path)
    if code != errno.ENOSPC:
        return
    monkeypatch.undo()  # space freed: the resume command the line gave works
    status, _, err = invoke(capsys, "train", "--resume", str(run))
    assert status == 0, err
    assert checkpoint.saved_step(run / "last.pt") == 20


def test_pytorchs_runtime_error_during_training_is_the_same_one_line(tmp_path, monkeypatch, capsys, small_corpus):
    """The failure as first reported: torch.save's RuntimeError ended the run as an internal error."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if obj["resume"]["step"] == 20:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1232128 vs 1232016")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(disk, "free_space", lambda folder: 4096)
    status, _, err = invoke(capsys, *train_command(small_corpus, tmp_path))
    (run,) = tmp_path.iterdir()
    assert status == 1
    line = one_line(err)
    assert "internal error" not in line and "unexpected pos" not in line
    assert line.startswith(f"charlstm: error: could not write {run / 'last.pt'}: no space left on the device (needs")
    assert line.endswith(f"free space and resume with: charlstm train --resume {run}")
    no_temporaries(tmp_path)


@pytest.mark.parametrize("code", ERRNOS)
def test_a_metrics_record_that_cannot_be_written_stops_training_and_leaves_whole_lines(
    tmp_path, monkeypatch, capsys, small_corpus, code
):
    real, records = disk._write_fd, []

    def write(fd: int, data) -> int:  # the first record goes whole, the disk takes 9 bytes of the second
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name != "metrics.jsonl":
            return real(fd, data)
        records.append(bytes(data))
        if len(records) > 2:
            raise OSError(code, os.strerror(code))
        return real(fd, data if len(records) == 1 else bytes(data[:9]))

    monkeypatch.setattr(disk, "_write_fd", write)
    status, _, err = invoke(capsys, *train_command(small_corpus, tmp_path))
    (run,) = tmp_path.iterdir()
    assert status == 1
    line = one_line(err)
    assert line.startswith(f"charlstm: error: could not write {run / 'metrics.jsonl'}: {REASON[code]}")
    assert line.endswith(f"are intact; free space and resume with: charlstm train --resume {run}")
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(x)["step"] for x in text.splitlines()] == [10]


@pytest.mark.parametrize("code", ERRNOS)
def test_a_config_json_that_cannot_be_written_is_one_line_and_leaves_no_empty_run(
    tmp_path, monkeypatch, capsys, small_corpus, code
):
    FailingDisk(monkeypatch, "config.json", code)
    status, _, err = invoke(capsys, *train_command(small_corpus, tmp_path))
    assert status == 1
    line = one_line(err)
    run = Path(re.search(r"could not write (\S+)/config\.json", line).group(1))
    assert run.parent == tmp_path
    assert line.startswith(f"charlstm: error: could not write {run / 'config.json'}: {REASON[code]}")
    assert line.endswith(
        f"; nothing was trained yet and the empty run folder {run} was removed; free space and train again"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_that_cannot_be_removed_after_config_json_failed_is_named(
    tmp_path, monkeypatch, capsys, small_corpus
):
    FailingDisk(monkeypatch, "config.json", errno.EROFS)

    def read_only(self):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(Path, "rmdir", read_only)
    status, _, err = invoke(capsys, *train_command(small_corpus, tmp_path))
    (run,) = tmp_path.iterdir()
    assert status == 1
    assert one_line(err).endswith(
        f"; nothing was trained yet and the empty folder {run} can go; free space and train again"
    )
    assert list(run.iterdir()) == []


@pytest.mark.parametrize("code", ERRNOS)
def test_a_token_cache_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys, code):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CHARLSTM_CACHE", str(cache))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small corpus for a cache that cannot be written\n" * 200)
    FailingDisk(monkeypatch, ".tokens", code, partial=100)
    status, _, err = invoke(capsys, *train_command(corpus, tmp_path / "runs"))
    assert status == 1
    line = one_line(err)
    assert re.match(rf"charlstm: error: could not write {re.escape(str(cache))}/\S+\.tokens: {REASON[code]}", line)
    assert line.endswith(
        "; the corpus is untouched; free space in the token cache, or point CHARLSTM_CACHE at a folder with room"
    )
    if code == errno.ENOSPC:
        assert "needs about 10 kB" in line, "one byte for each of its 10,000 characters"
    assert not list(cache.glob("*.tokens")) and corpus.read_text().startswith("a small corpus")
    no_temporaries(cache)


@pytest.mark.parametrize("code", ERRNOS)
def test_a_synthetic_corpus_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys, code):
    out = tmp_path / "copy.txt"
    FailingDisk(monkeypatch, "copy.txt", code, partial=1000)
    status, _, err = invoke(capsys, "synth", "copy", str(out), "--chars", "20000")
    assert status == 1
    line = one_line(err)
    assert line.startswith(f"charlstm: error: could not write {out}: {REASON[code]}")
    assert line.endswith("; no partial copy.txt was left")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, name", [("--json", "trace.json"), ("--html", "gates.html"), ("--npz", "trace.npz")])
@pytest.mark.parametrize("code", ERRNOS)
@pytest.mark.parametrize("existing", [False, True])
def test_an_inspect_gates_export_that_cannot_be_written_is_one_line(
    tmp_path, monkeypatch, capsys, trained_run, option, name, code, existing
):
    """The disk takes part of the export, then fails: the file it replaces stays whole, no
    partial file is left, and the line says so."""
    out = tmp_path / name
    if existing:
        out.write_bytes(b"an earlier export")
    FailingDisk(monkeypatch, name, code, partial=100)
    status, _, err = invoke(capsys, "inspect-gates", "--checkpoint", str(trained_run), "-n", "40", option, str(out))
    assert status == 1
    line = one_line(err)
    assert line.startswith(f"charlstm: error: could not write {out}: {REASON[code]}")
    if existing:
        assert line.endswith(f"; the previous {name} is intact")
        assert out.read_bytes() == b"an earlier export"
    else:
        assert line.endswith(f"; no partial {name} was left")
        assert not out.exists()
    no_temporaries(tmp_path)


def test_an_npz_export_is_written_to_the_name_given(tmp_path, capsys, trained_run):
    """numpy adds `.npz` to a path without it; the export is written where the user said."""
    import numpy

    out = tmp_path / "trace.data"
    status, _, err = invoke(capsys, "inspect-gates", "--checkpoint", str(trained_run), "-n", "40", "--npz", str(out))
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.data"]
    with numpy.load(out) as arrays:
        assert arrays["values"].shape[0] == len(str(arrays["text"]))
    assert out.stat().st_mode & 0o777 == 0o666 & ~disk._umask(), "shared like any new file, not owner-only"


def test_an_export_that_cannot_be_written_is_one_line_and_keeps_the_file_it_replaces(
    tmp_path, monkeypatch, capsys, trained_run
):
    out = tmp_path / "model.html"
    status, _, err = invoke(capsys, "export", str(trained_run), "--html", str(out))
    assert status == 0, err
    assert out.stat().st_mode & 0o777 == 0o666 & ~disk._umask(), "shared like any new file, not owner-only"
    before = out.read_bytes()
    FailingDisk(monkeypatch, out.name, errno.ENOSPC, partial=100)
    status, _, err = invoke(capsys, "export", str(trained_run), "--html", str(out), "--force")
    assert status == 1
    line = one_line(err)
    assert line.startswith(f"charlstm: error: could not write {out}: no space left on the device")
    assert line.endswith("; the previous model.html is intact")
    assert out.read_bytes() == before
    no_temporaries(tmp_path)


def test_a_disk_short_of_room_for_two_checkpoints_is_a_warning_then_training(
    tmp_path, monkeypatch, capsys, small_corpus
):
    monkeypatch.setattr(disk, "free_space", lambda folder: 10_000)
    status, _, err = invoke(capsys, *train_args(small_corpus, tmp_path, steps=2, eval_every=100))
    assert status == 0, err  # the warning is a warning: the disk here does have room
    warnings = [line for line in err.splitlines() if line.startswith("charlstm: warning:")]
    (run,) = tmp_path.iterdir()
    assert warnings == [
        f"charlstm: warning: only 10 kB free in {run}, and a checkpoint of this model takes about "
        f"{checkpoint.size_text(run_checkpoint_bytes(run))} (a run keeps last.pt and best.pt): "
        "saves may fail; free space first"
    ]
    monkeypatch.setattr(disk, "free_space", lambda folder: 10**9)
    _, _, err = invoke(capsys, "train", "--resume", str(run), "--max-steps", "3")
    assert "warning" not in err


def run_checkpoint_bytes(run: Path) -> int:
    config = json.loads((run / "config.json").read_text())
    model, train = config["model"], config["train"]
    carried = model["layers"] * train["batch_size"] * model["hidden"] * 2  # an LSTM carries h and c
    return checkpoint.checkpoint_bytes(config["parameters"], carried)


def test_the_estimate_of_a_checkpoints_size_is_close_to_a_real_one(trained_run):
    actual = (trained_run / "last.pt").stat().st_size
    assert 0.8 * actual < run_checkpoint_bytes(trained_run) < 1.3 * actual


# --- a real full file system ------------------------------------------------------------------------


# A model whose checkpoints (about 1.2 MB each, with the optimizer) fill a 3 MB disk by step 20.
FILLS_SMALL_DISK = ["--layers", "2", "--hidden", "96", "--embedding", "16", "--batch-size", "8", "--seq-len", "32"]


@contextmanager
def small_disk(folder: Path, size: str = "3m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted on `folder` for the test, unmounted after it; the
    test is skipped where mounting is not allowed (not root, a container)."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (and a system that allows it)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_real_full_disk_stops_training_with_one_line_and_resume_works_after_freeing_space(tmp_path, small_corpus):
    with small_disk(tmp_path / "small") as small:
        root = small / "ck"
        result = run_cli(*train_args(small_corpus, root, steps=40, eval_every=10, model=FILLS_SMALL_DISK))
        (run,) = root.iterdir()
        assert result.returncode == 1, result.stderr
        assert re.search(r"charlstm: warning: only [\d.]+ MB free in .*saves may fail", result.stderr)
        line = one_line(result.stderr)
        assert re.fullmatch(
            rf"charlstm: error: could not write {re.escape(str(run))}/(last|best)\.pt: no space left on the device "
            r"\(needs about 1\.\d+ MB, [\d.]+ \w+ free\); last\.pt from step 10 (and best\.pt from step 10 are|is) "
            rf"intact; free space and resume with: charlstm train --resume {re.escape(str(run))}",
            line,
        ), line
        assert checkpoint.saved_step(run / "last.pt") == 10
        no_temporaries(small)
        subprocess.run(["mount", "-o", "remount,size=20m", str(small)], check=True)  # space freed
        result = run_cli("train", "--resume", str(run))
        assert result.returncode == 0, result.stderr
        assert checkpoint.saved_step(run / "last.pt") == 40
        assert [r["step"] for r in history.read_run(run).evaluations] == [10, 20, 30, 40]


def test_a_full_disk_under_torchrun_stops_every_rank_with_one_line(tmp_path, small_corpus):
    """Rank 0 alone writes; the other ranks learn of its failure at the save instead of
    waiting for it in a collective, and the line is said once."""
    with small_disk(tmp_path / "small") as small:
        root = small / "ck"
        args = train_args(small_corpus, root, "--device", "cpu", steps=40, eval_every=10, model=FILLS_SMALL_DISK)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        result = subprocess.run([*command, "-m", "charlstm", *args], capture_output=True, text=True, timeout=240)
        (run,) = root.iterdir()
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.startswith("charlstm: error:")]
        assert len(lines) == 1 and "no space left on the device" in lines[0], result.stderr
        assert lines[0].endswith(f"free space and resume with: charlstm train --resume {run}")
        assert checkpoint.saved_step(run / "last.pt") == 10
        no_temporaries(small)
