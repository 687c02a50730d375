import pytest

from charlstm import synthetic
from charlstm.errors import CharlstmError
from tests.helpers import invoke


def test_copy_task_probes_point_at_the_recalled_key():
    text, probes = synthetic.copy_task(5000, seed=1)
    assert len(text) >= 5000 and probes
    for probe in probes:
        line_start = text.rfind("\n", 0, probe.index) + 1
        assert text[probe.index] == probe.expected == text[line_start]
        assert text[probe.index - 1] == "="
        assert probe.index - line_start - 2 >= 40


def test_brackets_are_balanced_and_probes_are_the_matching_closers():
    text, probes = synthetic.brackets_task(5000, seed=2)
    closers = {p.index: p.expected for p in probes}
    stack = []
    for i, ch in enumerate(text):
        if ch in synthetic.OPENERS:
            stack.append(synthetic.CLOSERS[synthetic.OPENERS.index(ch)])
        elif ch in synthetic.CLOSERS:
            assert closers[i] == ch == stack.pop()
        else:
            assert ch == "\n" and stack == []
    assert max(len(line) for line in text.splitlines()) > 20


def test_same_seed_same_text():
    assert synthetic.make("copy", 2000, 3) == synthetic.make("copy", 2000, 3)
    assert synthetic.make("copy", 2000, 3)[0] != synthetic.make("copy", 2000, 4)[0]
    with pytest.raises(CharlstmError, match="^task must be copy or brackets"):
        synthetic.make("parity", 100)


def test_synth_command_writes_a_corpus_and_never_overwrites_one(capsys, tmp_path):
    out = tmp_path / "copy.txt"
    code, stdout, _ = invoke(capsys, "synth", "copy", str(out), "--chars", "3000")
    assert code == 0 and "long-range predictions" in stdout
    assert out.read_text() == synthetic.make("copy", 3000, 0)[0]
    out.write_text("my precious corpus")
    code, _, err = invoke(capsys, "synth", "brackets", str(out))
    assert code == 1 and "never overwrites" in err and out.read_text() == "my precious corpus"
