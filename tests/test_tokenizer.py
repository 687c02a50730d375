import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from charlstm.errors import CharlstmError
from charlstm.tokenizer import Vocabulary


def test_vocabulary_is_sorted_code_points_so_ids_are_stable():
    assert Vocabulary.from_text("banana!").chars == "!abn"
    assert Vocabulary.from_text("nab!ana") == Vocabulary.from_text("banana!")


@given(st.text(min_size=1))
def test_encode_decode_round_trip_for_any_text(text):
    vocabulary = Vocabulary.from_text(text)
    ids = vocabulary.encode(text)
    assert len(ids) == len(text)
    assert vocabulary.decode(ids) == text


@given(st.text(min_size=1), st.text())
def test_text_outside_the_vocabulary_is_refused_naming_characters(known, other):
    vocabulary = Vocabulary.from_text(known)
    missing = set(other) - set(known)
    if missing:
        with pytest.raises(CharlstmError, match="never saw"):
            vocabulary.encode(other)
    else:
        assert vocabulary.decode(vocabulary.encode(other)) == other


def test_error_names_the_unknown_characters_readably():
    vocabulary = Vocabulary.from_text("abc")
    with pytest.raises(CharlstmError, match=r"'é'.*U\+200B|U\+200B.*'é'"):
        vocabulary.check("abé\u200b", "the prime text")


@pytest.mark.parametrize(
    ("size", "dtype"), [(10, torch.uint8), (256, torch.uint8), (257, torch.int16), (40_000, torch.int32)]
)
def test_ids_use_the_smallest_integer_dtype(size, dtype):
    chars = "".join(chr(0x100 + i) for i in range(size))
    vocabulary = Vocabulary(chars)
    ids = vocabulary.encode(chars)
    assert ids.dtype == dtype
    assert ids.long().tolist() == list(range(size))


def test_repeated_characters_mean_a_damaged_vocabulary():
    with pytest.raises(CharlstmError, match="repeats"):
        Vocabulary("aab")
