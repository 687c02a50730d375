import dataclasses
import os
import pickle
import random

import pytest
import torch

from charlstm import checkpoint, disk
from charlstm.config import TrainConfig
from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, ModelConfig


def make_checkpoint(path, hidden=8):
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(vocab_size=3, hidden=hidden, embedding=4))
    payload = {
        "format": checkpoint.FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "vocabulary": "abc",
        "model": model.state_dict(),
    }
    checkpoint.save_atomic(payload, path)
    return model


def test_a_checkpoint_loads_with_weights_only_and_rebuilds_the_model(tmp_path):
    model = make_checkpoint(tmp_path / "a.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["vocabulary"] == "abc"
    loaded, vocabulary, _ = checkpoint.load_model(tmp_path / "a.pt")
    assert vocabulary.chars == "abc"
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    make_checkpoint(path)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        make_checkpoint(path, hidden=16)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_disk_error_during_save_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    make_checkpoint(path)

    def disk_full(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CharlstmError, match="no space left on the device.*; the previous last.pt is intact"):
        make_checkpoint(path)
    assert checkpoint.load(path).vocabulary.chars == "abc"


def test_truncated_and_random_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    make_checkpoint(good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = []
    for seed in range(20):
        noise.append(tmp_path / f"noise{seed}.pt")
        noise[-1].write_bytes(random.Random(seed).randbytes(4096))
    for bad in (truncated, *noise):
        with pytest.raises(CharlstmError, match="not a readable checkpoint"):
            checkpoint.load(bad)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": _Exploit()}, evil)
    with pytest.raises(CharlstmError, match="refuses"):
        checkpoint.load(evil)
    assert not (tmp_path / "PWNED").exists()
    plain_pickle = tmp_path / "plain.pt"
    plain_pickle.write_bytes(pickle.dumps(_Exploit(), protocol=2))
    with pytest.raises(CharlstmError):
        checkpoint.load(plain_pickle)
    assert not (tmp_path / "PWNED").exists()


def test_a_newer_format_is_refused_with_advice(tmp_path):
    path = tmp_path / "future.pt"
    checkpoint.save_atomic({"format": checkpoint.FORMAT_VERSION + 1}, path)
    with pytest.raises(CharlstmError, match="upgrade charlstm"):
        checkpoint.load(path)


def test_a_checkpoint_saved_from_cuda_loads_on_the_cpu(tmp_path):
    """Rewrite the storage locations to cuda:0, as a GPU-trained file has them."""
    path = tmp_path / "gpu.pt"
    make_checkpoint(path)
    import zipfile

    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    pkl = next(name for name in entries if name.endswith("data.pkl"))
    assert b"X\x03\x00\x00\x00cpu" in entries[pkl]
    entries[pkl] = entries[pkl].replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    model, _, _ = checkpoint.load_model(path)
    assert next(model.parameters()).device.type == "cpu"


def test_run_folders_resolve_to_best_then_last_and_the_newest_run_is_found(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    make_checkpoint(old / "last.pt")
    make_checkpoint(new / "last.pt")
    os.utime(old / "last.pt", (1, 1))
    assert checkpoint.resolve(None, root=tmp_path) == new / "last.pt"
    make_checkpoint(new / "best.pt")
    assert checkpoint.resolve(new) == new / "best.pt"
    with pytest.raises(CharlstmError, match="no trained runs"):
        checkpoint.resolve(None, root=tmp_path / "empty")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_one_clear_error(tmp_path):
    path = tmp_path / "run" / "last.pt"
    make_checkpoint(path)
    (tmp_path / "run").chmod(0o500)
    try:
        with pytest.raises(CharlstmError, match="last.pt: permission denied; the previous last.pt is intact"):
            make_checkpoint(path)
    finally:
        (tmp_path / "run").chmod(0o700)
    assert checkpoint.load(path).vocabulary.chars == "abc"


def test_an_unwritable_location_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CharlstmError, match="could not write .*last.pt: Not a directory"):
        make_checkpoint(blocker / "run" / "last.pt")


def test_resume_cleans_up_what_a_killed_writer_left(tmp_path):
    make_checkpoint(tmp_path / "last.pt")
    (tmp_path / ".last.pt.k2j3h4.tmp").write_bytes(b"half")
    (tmp_path / ".status.json.93xn2ulc.tmp").write_bytes(b"{")  # a kill inside status.json's write
    (tmp_path / "notes.tmp").write_text("the user's own file")
    disk.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]


SAVER = """
import sys, torch
from pathlib import Path
from charlstm.checkpoint import save_atomic
path, n = Path(sys.argv[1]), 0
big = torch.arange(1_000_000, dtype=torch.float32)
print("ready", flush=True)
while True:
    n += 1
    save_atomic({"format": 1, "generation": n, "weights": big + n}, path)
"""


def test_killing_a_writer_mid_save_always_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process that does nothing but save a 4 MB checkpoint, many times."""
    import random
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "last.pt"
    generations = []
    expected = torch.arange(1_000_000, dtype=torch.float32)
    rng = random.Random(0)
    for _ in range(12):
        writer = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.0))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if path.exists():
            payload = checkpoint.read_payload(path)
            assert torch.equal(payload["weights"], expected + payload["generation"])
            generations.append(payload["generation"])
        disk.remove_stale_temporaries(tmp_path)
    assert len(generations) >= 10 and max(generations) > 1
    assert not list(tmp_path.glob("*.tmp"))


def test_every_file_charlstm_keeps_is_synced_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    """config.json was written without fsync, so a power cut could leave it empty; the
    checkpoints, config.json and the token cache now share one atomic_write."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    config = tmp_path / "config.json"
    config.write_text("old")
    disk.write_json(config, {"new": 1})
    assert config.read_text() == '{\n  "new": 1\n}\n'
    assert any(name.startswith(str(tmp_path / ".config.json.")) for name in synced), synced
    assert str(tmp_path) in synced, "the folder is synced so the rename lasts"


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")

    def half_then_fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        disk.atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    with pytest.raises(CharlstmError, match="could not write .*config.json: No such file or directory"):
        disk.write_json(tmp_path / "missing" / "config.json", {})


def a_run_payload(model: CharLSTM, **resume_changes) -> dict:
    """A run's checkpoint as `Trainer.state_dict` built it, a dict written out key by key,
    before checkpoints were typed: files written then must still load."""
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(2, 3, dtype=torch.long))[0].sum().backward()
    optimizer.step()
    resume = {
        "optimizer": optimizer.state_dict(),
        "step": 7,
        "elapsed": 1.5,
        "evaluating": 0.25,
        "best_val_loss": 1.25,
        "carried_state": [torch.ones(2, 2, 8), torch.zeros(2, 2, 8)],
        "corpus_sha256": "0" * 64,
    }
    return {
        "format": 1,
        "model_config": model.config.to_dict(),
        "vocabulary": "abc",
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_config": dataclasses.asdict(TrainConfig(corpus="c.txt", batch_size=2, max_steps=9)),
        "resume": resume | resume_changes,
    }


def test_a_checkpoint_written_as_a_dict_loads_typed_and_is_written_back_the_same(tmp_path):
    model = CharLSTM(ModelConfig(vocab_size=3, hidden=8, embedding=4))
    payload = a_run_payload(model)
    torch.save(payload, tmp_path / "last.pt")
    saved = checkpoint.load(tmp_path / "last.pt")
    assert (saved.format, saved.model_config, saved.vocabulary.chars) == (1, model.config, "abc")
    assert saved.train_config == TrainConfig(corpus="c.txt", batch_size=2, max_steps=9)
    assert (saved.resume.step, saved.resume.elapsed, saved.resume.evaluating) == (7, 1.5, 0.25)
    assert (saved.resume.best_val_loss, saved.resume.corpus_sha256) == (1.25, "0" * 64)
    assert torch.equal(saved.resume.carried_state[0], torch.ones(2, 2, 8))
    assert saved.resume.optimizer["state"][0]["step"] == payload["resume"]["optimizer"]["state"][0]["step"]
    written = saved.to_payload()
    assert written.keys() == payload.keys() and written["resume"].keys() == payload["resume"].keys()
    assert written["train_config"] == payload["train_config"]
    for name, value in payload["model"].items():
        assert torch.equal(written["model"][name], value)
        assert torch.equal(saved.model().state_dict()[name], value)


def test_an_older_runs_checkpoint_still_loads(tmp_path):
    """Written by an older charlstm: no `evaluating` (only training time counted), a `rng` in
    the resume record, and a training setting since renamed (full_val_at_end, now final_val)."""
    payload = a_run_payload(CharLSTM(ModelConfig(vocab_size=3, hidden=8, embedding=4)), rng=torch.zeros(4))
    del payload["resume"]["evaluating"]
    payload["train_config"]["full_val_at_end"] = True
    torch.save(payload, tmp_path / "old.pt")
    saved = checkpoint.load(tmp_path / "old.pt")
    assert saved.resume.evaluating == 0.0 and saved.resume.step == 7
    assert saved.train_config.corpus == "c.txt"


@pytest.mark.parametrize("damage", ["model_config", "vocabulary", "model"])
def test_a_checkpoint_missing_a_part_is_one_clear_error(tmp_path, damage):
    payload = a_run_payload(CharLSTM(ModelConfig(vocab_size=3, hidden=8, embedding=4)))
    del payload[damage]
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(CharlstmError, match=f"damaged.pt is damaged or from an incompatible charlstm: '{damage}'"):
        checkpoint.load(tmp_path / "damaged.pt")
