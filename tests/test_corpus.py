import pytest
import torch

from charlstm import corpus
from charlstm.errors import CharlstmError


def test_bom_is_dropped_and_crlf_becomes_lf(tmp_path):
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert corpus.read_text(path) == "one\ntwo\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"abc\x00\x01\x02", "looks binary"),
        (b"caf\xe9 au lait", "not valid utf-8.*--encoding"),
    ],
)
def test_unreadable_corpora_are_explained(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CharlstmError, match=message):
        corpus.read_text(path)


def test_a_directory_is_not_a_corpus(tmp_path):
    with pytest.raises(CharlstmError, match="is a directory"):
        corpus.read_text(tmp_path)


def test_encoding_and_errors_options_rescue_other_encodings(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9")
    assert corpus.read_text(path, encoding="latin-1") == "café"
    assert corpus.read_text(path, errors="replace") == "caf\ufffd"


def test_default_corpus_is_deterministic_python_source_of_a_few_megabytes():
    text = corpus.default_corpus()
    assert 1_000_000 < len(text) < 10_000_000
    assert "def " in text and "import " in text
    assert text == corpus.default_corpus()


def test_split_keeps_the_tail_for_validation():
    tokens = torch.arange(100)
    train, val = corpus.split(tokens, 0.1)
    assert train.tolist() == list(range(90))
    assert val.tolist() == list(range(90, 100))


def test_stream_batches_continue_each_row_across_steps_and_wrap_per_epoch():
    tokens = torch.arange(1000)
    batches = corpus.StreamBatches(tokens, streams=4, seq_len=10)
    first, second = batches.batch(0), batches.batch(1)
    assert not first.carry_state and second.carry_state
    assert torch.equal(second.inputs[:, 0], first.inputs[:, -1] + 1)
    assert torch.equal(first.targets, first.inputs + 1)
    assert not batches.batch(len(batches)).carry_state
    assert torch.equal(batches.batch(len(batches)).inputs, first.inputs)


def test_random_batches_depend_only_on_seed_and_step():
    tokens = torch.arange(5000)
    a = corpus.RandomBatches(tokens, 8, 16, seed=1)
    b = corpus.RandomBatches(tokens, 8, 16, seed=1)
    assert torch.equal(a.batch(7).inputs, b.batch(7).inputs)
    assert not torch.equal(a.batch(7).inputs, a.batch(8).inputs)
    assert torch.equal(a.batch(3).targets, a.batch(3).inputs + 1)


def test_a_corpus_shorter_than_one_batch_is_refused():
    with pytest.raises(CharlstmError, match="shorter than"):
        corpus.StreamBatches(torch.arange(50), streams=4, seq_len=32)


def test_validation_windows_cover_every_character_of_each_stream():
    tokens = torch.arange(1000)
    batches = corpus.validation_streams(tokens, max_streams=4, seq_len=30)
    scored = torch.cat([batches.batch(w).targets for w in range(len(batches))], dim=1)
    assert scored.numel() == 4 * ((1000 - 1) // 4)
    assert torch.equal(scored.flatten().sort().values, torch.arange(1, 1 + scored.numel()))


def test_validation_uses_fewer_streams_when_the_split_is_small():
    batches = corpus.validation_streams(torch.arange(300), max_streams=64, seq_len=32)
    assert batches.inputs.shape[0] == 9
    with pytest.raises(CharlstmError, match="validation split"):
        corpus.validation_streams(torch.arange(20), max_streams=64, seq_len=32)


def test_a_folder_is_every_text_file_under_it_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.py").write_text("print(2)")
    (tmp_path / "a.txt").write_text("one\n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\x00\x00binary")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    source = corpus.read_corpus(tmp_path)
    assert source.text == "one\nprint(2)\n"
    assert (source.files, source.skipped, source.name) == (2, 1, tmp_path.name)


def test_a_glob_selects_files(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.txt").write_text("prose\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("y = 2\n")
    assert corpus.read_corpus(str(tmp_path / "**" / "*.py")).text == "x = 1\ny = 2\n"
    with pytest.raises(CharlstmError, match="no text files"):
        corpus.read_corpus(str(tmp_path / "*.rs"))


def test_a_single_file_must_be_text(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"\x00\x01")
    with pytest.raises(CharlstmError, match="looks binary"):
        corpus.read_corpus(path)
