"""Every file made for a person, whichever command writes it, gets the mode any new file of the
user's gets (0666 less the umask), through the one writer `disk.write_user_file`; run-folder files
stay the owner's."""

from __future__ import annotations

import os
import stat

import pytest

from tests.helpers import invoke
from tests.run_folders import write_run

UMASK = 0o027
SHARED = 0o666 & ~UMASK  # 0o640: what `open` or a shell redirect would make under this umask

INSPECT = ("inspect-gates", "--checkpoint", "{run}", "-n", "30")
WRITERS = {  # the command line of each writer; {run} is a trained run, {out} the file it writes
    "export --html": ("export", "{run}", "--html", "{out}"),
    "inspect-gates --html": (*INSPECT, "--html", "{out}"),
    "inspect-gates --json": (*INSPECT, "--json", "{out}"),
    "inspect-gates --npz": (*INSPECT, "--npz", "{out}"),
    "synth": ("synth", "copy", "{out}", "--chars", "2000"),
}


@pytest.fixture
def umask():
    old = os.umask(UMASK)
    yield
    os.umask(old)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_user_file_lands_with_the_umasks_mode(writer, trained_run, tmp_path, capsys, umask):
    if writer.endswith("--npz"):
        pytest.importorskip("numpy")
    out = tmp_path / "out.file"
    code, _, err = invoke(capsys, *(arg.format(run=trained_run, out=out) for arg in WRITERS[writer]))
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == SHARED


def test_a_report_page_lands_with_the_umasks_mode(tmp_path, capsys, umask):
    run = write_run(tmp_path, "reported")
    out = tmp_path / "report.html"
    code, _, err = invoke(capsys, "report", str(run), "--html", str(out))
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == SHARED


def test_run_folder_files_stay_the_owners(trained_run):
    for name in ("last.pt", "best.pt", "config.json"):
        assert stat.S_IMODE((trained_run / name).stat().st_mode) == 0o600, name
