"""--threads and the OpenMP wait policy: what is chosen, from faked cores, load and environment."""

import pytest

from charlstm import threads
from charlstm.errors import CharlstmError
from tests.helpers import run_cli


def test_a_number_is_taken_as_given():
    assert threads.choose("3", environ={"OMP_NUM_THREADS": "1"}, cores=lambda: 2, busy=lambda: 2) == 3


def test_auto_honours_omp_num_threads():
    """None: torch read OMP_NUM_THREADS when it loaded, and it is left as it is."""
    assert threads.choose("auto", environ={"OMP_NUM_THREADS": "1"}, cores=lambda: 8, busy=lambda: 0) is None


@pytest.mark.parametrize(("cores", "busy", "chosen"), [(2, 0, 2), (2, 1, 1), (2, 2, 1), (2, 5, 1), (16, 4, 12)])
def test_auto_takes_the_cores_other_programs_leave(cores, busy, chosen):
    assert threads.choose("auto", environ={}, cores=lambda: cores, busy=lambda: busy) == chosen


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(CharlstmError, match="--threads must be auto or a number of threads"):
        threads.choose(bad, environ={})


def test_idle_threads_sleep_unless_the_user_chose_a_policy():
    environ = {}
    threads.openmp_defaults(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        environ = dict(chosen)
        threads.openmp_defaults(environ)
        assert environ == chosen, "the user's choice stands"


def test_busy_cores_reads_the_running_count(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    looks = iter(["0.50 0.40 0.30 3/200 123\n", "0.50 0.40 0.30 2/200 123\n", "0.50 0.40 0.30 4/200 123\n"])

    def fake_open(path, *args, **kwargs):
        if path == "/proc/loadavg":
            (tmp_path / "loadavg").write_text(next(looks))
            return real_open(tmp_path / "loadavg", *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert threads.busy_cores() == 1, "the least of three looks, less this process"


def test_the_commands_take_threads_and_the_policy_reaches_torch_before_it_loads(tmp_path):
    """The child's torch must see OMP_WAIT_POLICY in its environment and use --threads."""
    script = (
        "import os, sys; from charlstm import cli, threads; threads.openmp_defaults(); import torch; "
        "threads.apply('1'); print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())"
    )
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PASSIVE", "1"]
    for command in (["train"], ["sample"], ["eval", str(tmp_path / "text.txt")], ["inspect-gates"]):
        result = run_cli(*command, "--threads", "zero")
        assert result.returncode != 0 and "--threads must be auto or a number of threads" in result.stderr, command
