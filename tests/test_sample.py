import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, ModelConfig
from charlstm.sample import SamplingConfig, generate, next_id
from charlstm.tokenizer import Vocabulary

LOGITS = torch.tensor([0.1, 3.0, 2.5, -1.0, 0.0])


def test_temperature_zero_is_greedy():
    assert int(next_id(LOGITS, SamplingConfig(temperature=0))) == 1


def test_top_k_keeps_only_the_k_likeliest():
    generator = torch.Generator().manual_seed(0)
    draws = {int(next_id(LOGITS, SamplingConfig(1.0, top_k=2), generator)) for _ in range(300)}
    assert draws == {1, 2}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.softmax(LOGITS, 0)
    assert probs[1] < 0.9 < probs[1] + probs[2]
    generator = torch.Generator().manual_seed(0)
    draws = {int(next_id(LOGITS, SamplingConfig(1.0, top_p=0.9), generator)) for _ in range(300)}
    assert draws == {1, 2}
    assert {int(next_id(LOGITS, SamplingConfig(1.0, top_p=0.01), generator)) for _ in range(50)} == {1}


def test_draws_follow_the_softmax_distribution():
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(4000):
        counts[next_id(LOGITS, SamplingConfig(1.0), generator)] += 1
    torch.testing.assert_close(counts / 4000, torch.softmax(LOGITS, 0), atol=0.025, rtol=0)


def test_high_temperature_reaches_unlikely_characters():
    generator = torch.Generator().manual_seed(0)
    draws = {int(next_id(LOGITS, SamplingConfig(5.0), generator)) for _ in range(300)}
    assert draws == set(range(5))


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -0.1}, {"temperature": math.nan}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_bad_sampling_options_are_refused(kwargs):
    with pytest.raises(CharlstmError):
        SamplingConfig(**kwargs)


@pytest.fixture
def model_and_vocabulary():
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text("abcdefgh \n")
    return CharLSTM(ModelConfig(vocab_size=len(vocabulary), hidden=16, embedding=8)).eval(), vocabulary


def test_generation_is_repeatable_with_a_seed_and_has_the_asked_length(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    a = "".join(generate(model, vocabulary, "abc", 200, SamplingConfig(1.0), seed=5))
    b = "".join(generate(model, vocabulary, "abc", 200, SamplingConfig(1.0), seed=5))
    c = "".join(generate(model, vocabulary, "abc", 200, SamplingConfig(1.0), seed=6))
    assert a == b != c
    assert len(a) == 200 and set(a) <= set(vocabulary.chars)


def test_unknown_prime_characters_are_named_before_anything_is_generated(model_and_vocabulary):
    model, vocabulary = model_and_vocabulary
    with pytest.raises(CharlstmError, match="'Z'"):
        generate(model, vocabulary, "abZ", 10, SamplingConfig())
    with pytest.raises(CharlstmError, match="length"):
        generate(model, vocabulary, "ab", -1, SamplingConfig())


@settings(max_examples=60, deadline=None)
@given(prime=st.text(max_size=12), length=st.integers(-3, 12))
def test_any_prime_either_samples_or_is_refused_clearly(prime, length):
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text("abcdefgh \n")
    model = CharLSTM(ModelConfig(vocab_size=len(vocabulary), hidden=8, embedding=4)).eval()
    unknown = set(prime) - set(vocabulary.chars)
    if not prime or unknown or length < 0:
        with pytest.raises(CharlstmError):
            generate(model, vocabulary, prime, length, SamplingConfig(), seed=0)
    else:
        text = "".join(generate(model, vocabulary, prime, length, SamplingConfig(), seed=0))
        assert len(text) == length and set(text) <= set(vocabulary.chars)
