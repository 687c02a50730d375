"""--threads and the OpenMP wait policy: what is chosen, from faked cores, load and environment."""

import pytest

from charlstm import threads
from charlstm.errors import CharlstmError
from tests.helpers import run_cli


def test_a_number_is_taken_as_given_and_auto_leaves_torchs_choice():
    """auto is OMP_NUM_THREADS or every core, whatever the load: the thread count sets the
    order of floating-point sums, and a resumed run must continue bit for bit."""
    assert threads.choose("3") == 3
    assert threads.choose("auto") is None


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(CharlstmError, match="--threads must be auto or a number of threads"):
        threads.choose(bad)


def test_idle_threads_sleep_unless_the_user_chose_a_policy():
    environ = {}
    threads.openmp_defaults(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        environ = dict(chosen)
        threads.openmp_defaults(environ)
        assert environ == chosen, "the user's choice stands"


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
