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
    with pytest.raises(CharlstmError, match="^threads must be auto or a number of threads"):
        threads.choose(bad)


def test_a_busy_machine_gets_one_line_of_advice_and_a_free_one_none():
    assert threads.busy_hint(2, load=lambda: 0) is None
    assert threads.busy_hint(1, load=lambda: 3) is None, "one thread is already the advice"
    hint = threads.busy_hint(2, command="eval", load=lambda: 2)
    assert "2 other threads running" in hint and "charlstm eval computes with 2 threads" in hint
    assert "--threads 1 runs faster" in hint

    def unreadable() -> float:
        raise OSError

    assert threads.busy_hint(2, load=unreadable) is None


@pytest.mark.parametrize(
    ("torch_threads", "setting", "omp", "expected"),
    [(4, "auto", None, 3), (2, "auto", None, 1), (1, "auto", None, 1), (4, "auto", "4", 4), (4, "2", None, 2)],
)
def test_a_server_computes_on_every_core_but_the_one_its_request_threads_use(torch_threads, setting, omp, expected):
    """serve's auto leaves a core to the threads that read and answer requests (on 2 cores both
    computing drew 1.3-1.8x slower for 1 and 4 clients); a number or OMP_NUM_THREADS is kept."""
    import os
    import subprocess
    import sys

    script = (
        f"import torch; torch.set_num_threads({torch_threads}); from charlstm import threads; "
        f"print(threads.apply({setting!r}, spare=threads.SERVER_SPARE_CORES), torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | ({"OMP_NUM_THREADS": omp} if omp else {})
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(expected)] * 2


def test_the_wait_policy_is_libgomps_own_and_the_commands_take_threads(tmp_path):
    """Sleeping idle threads (OMP_WAIT_POLICY=PASSIVE) made a run alone about four times
    slower, so charlstm leaves the policy to the user; --threads reaches torch."""
    script = (
        "import os; from charlstm import cli, threads; import torch; "
        "threads.apply('1'); print(os.environ.get('OMP_WAIT_POLICY', '-'), torch.get_num_threads())"
    )
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["-", "1"]
    for command in (["train"], ["sample"], ["eval", str(tmp_path / "text.txt")], ["inspect-gates"]):
        result = run_cli(*command, "--threads", "zero")
        assert result.returncode != 0 and "--threads must be auto or a number of threads" in result.stderr, command


def test_eval_on_a_busy_machine_adds_the_note_after_its_figures(capsys, monkeypatch, small_corpus, trained_run):
    """The figures come first and an error stays the one line on stderr; the note follows a result."""
    from tests.helpers import invoke

    monkeypatch.setattr(threads, "others_running", lambda: 3)
    code, out, err = invoke(capsys, "eval", str(small_corpus), "-c", str(trained_run), "--threads", "2")
    assert code == 0 and "bits/char" in out
    assert err.splitlines()[-1].startswith(
        "charlstm: note: other work keeps the CPU busy (3 other threads running) and charlstm eval computes with 2"
    )
    code, out, err = invoke(capsys, "eval", str(small_corpus), "-c", str(trained_run / "missing.pt"), "--threads", "2")
    assert code == 1 and err.count("\n") == 1 and "note" not in err
