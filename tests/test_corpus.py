import pytest
import torch

from charlstm import corpus
from charlstm.config import flag
from charlstm.errors import CharlstmError, SettingError


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
        (b"caf\xe9 au lait", "not valid utf-8.*pass encoding"),
    ],
)
def test_unreadable_corpora_are_explained(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CharlstmError, match=message):
        "".join(corpus.iter_text(path))


def test_a_directory_is_not_a_corpus(tmp_path):
    with pytest.raises(CharlstmError, match="is a directory"):
        corpus.read_text(tmp_path)


def test_encoding_and_errors_options_rescue_other_encodings(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9")
    assert "".join(corpus.iter_text(path, encoding="latin-1")) == "café"
    assert "".join(corpus.iter_text(path, errors="replace")) == "caf\ufffd"


def test_text_that_does_not_decode_names_the_fix_its_reader_can_use(tmp_path):
    """A corpus reader takes another encoding, named as the caller spells it (Python's keyword,
    the command line's flag); a prime file's command takes none, so the fix is to save it."""
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(SettingError) as error:
        "".join(corpus.iter_text(path))
    assert str(error.value).endswith("is not valid utf-8 (byte 3); pass encoding (e.g. latin-1)")
    assert error.value.spelled(flag).endswith("pass --encoding (e.g. latin-1)") and not error.value.usage
    with pytest.raises(CharlstmError, match=r"prime file .* is not valid utf-8 \(byte 3\); save it as utf-8$"):
        corpus.read_text(path, what="prime file")


def test_default_corpus_is_a_few_megabytes_of_python_source_in_a_fixed_order():
    source = corpus.find_source(None)
    assert source.name == "python-stdlib" and not source.single
    assert 1_000_000 < sum(f.stat().st_size for f in source.files) < 10_000_000
    assert all(f.suffix == ".py" for f in source.files)
    assert list(source.files) == sorted(source.files) == list(corpus.find_source(None).files)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 1 << 20])
def test_pieces_join_to_the_whole_text_wherever_the_reads_split(tmp_path, chunk_bytes):
    """A CRLF, a BOM or a multi-byte character cut in two by a read must come out whole."""
    path = tmp_path / "split.txt"
    path.write_bytes("\ufeffé\r\n€\r\r\n𝄞 end\r".encode())
    assert "".join(corpus.iter_text(path, chunk_bytes=chunk_bytes)) == "é\n€\r\n𝄞 end\r"


def test_a_file_cut_inside_a_character_is_explained(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("fin €".encode()[:-1])
    with pytest.raises(CharlstmError, match="ends inside a utf-8 character"):
        corpus.read_text(path)


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
        corpus.validation_streams(torch.arange(1), max_streams=64, seq_len=32)


def test_a_missing_corpus_is_named():
    with pytest.raises(CharlstmError, match="corpus nowhere.txt does not exist"):
        corpus.find_source("nowhere.txt")


def test_validation_streams_score_a_text_shorter_than_one_window():
    """`charlstm eval` on a 100-character file used to fail: 'shorter than 1 streams of 257'."""
    tokens = torch.arange(100) % 7
    batches = corpus.validation_streams(tokens, max_streams=64, seq_len=256)
    assert len(batches) == 1
    assert batches.batch(0).targets.numel() == 99
