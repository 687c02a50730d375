import hashlib
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from charlstm import corpus, token_cache
from charlstm.errors import CharlstmError
from charlstm.tokenizer import Vocabulary


def load(spec, vocabulary=None, skip_unknown=False):
    return token_cache.load_tokens(corpus.find_source(spec), vocabulary, skip_unknown)


def text_of(loaded):
    return loaded.scan.vocabulary.decode(loaded.tokens)


def test_tokens_are_the_text_memory_mapped_from_the_cache(small_corpus, token_cache_folder):
    loaded = load(small_corpus)
    text = small_corpus.read_text(encoding="utf-8")
    assert loaded.tokens.dtype == torch.uint8 and len(loaded.tokens) == len(text)
    assert text_of(loaded) == text
    assert loaded.scan.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert loaded.path.parent == token_cache_folder
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as maps:
            assert str(loaded.path) in maps.read()


def test_a_folder_is_every_text_file_under_it_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.py").write_text("print(2)")
    (tmp_path / "a.txt").write_text("one\n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\x00\x00binary")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    loaded = load(tmp_path)
    assert text_of(loaded) == "one\nprint(2)\n"
    assert (len(loaded.scan.files), loaded.scan.skipped) == (2, 1)
    assert corpus.find_source(tmp_path).name == tmp_path.name


def test_a_glob_selects_files(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.txt").write_text("prose\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("y = 2\n")
    assert text_of(load(str(tmp_path / "**" / "*.py"))) == "x = 1\ny = 2\n"
    with pytest.raises(CharlstmError, match="no text files"):
        load(str(tmp_path / "*.rs"))


def test_a_single_file_must_be_text(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"\x00\x01")
    with pytest.raises(CharlstmError, match="looks binary"):
        load(path)


def test_a_file_that_fails_late_in_a_folder_leaves_no_trace(tmp_path):
    """Its first megabytes were read before the bad byte: their characters must not stay."""
    (tmp_path / "a.txt").write_text("plain\n")
    (tmp_path / "b.txt").write_bytes("ж".encode() * (3 << 20) + b"\xff")
    loaded = load(tmp_path)
    assert loaded.scan.vocabulary.chars == "\nailnp" and loaded.scan.skipped == 1
    assert loaded.scan.sha256 == hashlib.sha256(b"plain\n").hexdigest()


def test_the_second_load_reads_nothing_and_an_edit_rebuilds(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("abc abc\n")
    first = load(path)
    monkeypatch.setattr(token_cache, "iter_text", lambda *a, **k: pytest.fail("read the corpus again"))
    assert torch.equal(load(path).tokens, first.tokens)
    monkeypatch.undo()
    path.write_text("xyz\n")
    os.utime(path, ns=(0, 0))
    assert text_of(load(path)) == "xyz\n"
    assert len(list(first.path.parent.glob(f"{first.path.name.split('.')[0]}.*.tokens"))) == 1


def test_a_model_vocabulary_must_cover_the_text_unless_unknowns_are_skipped(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abc!d")
    with pytest.raises(CharlstmError, match="never saw: '!', 'd'"):
        load(path, Vocabulary("abcz"))
    vocabulary = Vocabulary("abcz")
    assert vocabulary.decode(load(path, vocabulary, skip_unknown=True).tokens) == "abc"
    assert vocabulary.decode(load(path.parent / "c.txt", vocabulary, skip_unknown=True).tokens) == "abc"


def test_large_vocabularies_use_two_byte_ids(tmp_path):
    path = tmp_path / "wide.txt"
    text = "".join(chr(0x4E00 + i) for i in range(400)) * 3
    path.write_text(text, encoding="utf-8")
    loaded = load(path)
    assert loaded.tokens.dtype == torch.int16 and text_of(loaded) == text


def test_an_interrupted_encode_leaves_no_cache_file(tmp_path, monkeypatch, token_cache_folder):
    path = tmp_path / "c.txt"
    path.write_text("hello\n")
    calls = []

    def interrupt(text):
        calls.append(text)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(text)

    real = token_cache.code_points
    before = set(token_cache_folder.iterdir())
    monkeypatch.setattr(token_cache, "code_points", interrupt)
    with pytest.raises(KeyboardInterrupt):
        load(path)
    left = set(token_cache_folder.iterdir()) - before
    assert not any(p.suffix in (".tokens", ".tmp") for p in left)
    monkeypatch.undo()
    assert text_of(load(path)) == "hello\n"


def test_an_unwritable_cache_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("CHARLSTM_CACHE", str(blocker / "cache"))
    path = tmp_path / "c.txt"
    path.write_text("hello\n")
    with pytest.raises(CharlstmError, match="token cache.*CHARLSTM_CACHE"):
        load(path)


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1))
def test_the_cache_encodes_as_the_vocabulary_does(text):
    """Training reads the cache, sampling and inspection encode with Vocabulary: they must agree."""
    expected = text.removeprefix("\ufeff").replace("\r\n", "\n")
    assume(expected)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.txt"
        path.write_bytes(text.encode("utf-8"))
        loaded = load(path)
    vocabulary = Vocabulary.from_text(expected)
    assert loaded.scan.vocabulary == vocabulary
    assert torch.equal(loaded.tokens, vocabulary.encode(expected))
