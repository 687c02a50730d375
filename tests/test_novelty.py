import random
from dataclasses import replace

import pytest
import torch

from charlstm import novelty
from charlstm.config import SamplingConfig, TrainConfig
from charlstm.errors import CharlstmError
from charlstm.model import CharLSTM, ModelConfig
from charlstm.novelty import BASE, Novelty, for_run, window_hashes
from charlstm.sample import draw_samples
from charlstm.tokenizer import Vocabulary


@pytest.mark.parametrize("length", [1, 2, 3, 7, 8, 20, 33])
def test_window_hashes_are_the_polynomial_hash_of_each_window(length):
    rng = random.Random(length)
    ids = [rng.randrange(300) for _ in range(200)]
    expected = []
    for i in range(len(ids) - length + 1):
        h = 0
        for j in range(length):
            h = (h * BASE + ids[i + j] + 1) % (1 << 64)
        expected.append(h - (1 << 64) if h >= 1 << 63 else h)
    assert window_hashes(torch.tensor(ids), length).tolist() == expected


@pytest.fixture
def corpus():
    """Random letters a-h: a sample holds a stretch of it only where one was copied in;
    X never occurs in it, so a window with an X is new for certain."""
    rng = random.Random(0)
    text = "".join(rng.choice("abcdefgh") for _ in range(5000))
    vocabulary = Vocabulary.from_text(text + "X")
    return text, vocabulary, vocabulary.encode(text)


def test_a_sample_holding_a_corpus_stretch_of_l_characters_is_a_copy(corpus):
    text, vocabulary, tokens = corpus
    check = Novelty(tokens, vocabulary, 12)
    samples = [
        "XX" + text[1000:1012] + "XX",  # 12 copied characters
        "X" + text[2000:2011] + "X" + text[2011:2022],  # 11 and 11: no stretch of 12
        text[4988:5000],  # the corpus's very last window
        "XXXX",
        "",
    ]
    assert check.copies(samples) == [text[1000:1012], None, text[4988:5000], None, None]


def test_stretches_across_the_corpus_read_in_pieces_are_found(corpus, monkeypatch):
    text, vocabulary, tokens = corpus
    monkeypatch.setattr(novelty, "CHUNK", 64)
    starts = [60, 64, 120, 4990 - 9]
    found = Novelty(tokens, vocabulary, 9).copies(["X" + text[s : s + 9] + "X" for s in starts])
    assert found == [text[s : s + 9] for s in starts]


def test_a_hash_collision_never_condemns_a_sample(corpus, monkeypatch):
    """With a hash that collides everywhere (the window's last id), matches are still checked
    character by character."""
    text, vocabulary, tokens = corpus
    monkeypatch.setattr(novelty, "window_hashes", lambda ids, length: ids[length - 1 :].long())
    check = Novelty(tokens, vocabulary, 6)
    new = "XaXbXc"
    assert check.copies([new, "X" + text[300:306]]) == [None, text[300:306]]


def test_samples_that_repeat_the_corpus_are_redrawn_with_the_same_seed_rule():
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text("abcdefgh \n")
    model = CharLSTM(ModelConfig(vocab_size=len(vocabulary), hidden=16, embedding=8)).eval()

    class NoLetterA:
        """A stand-in corpus in which every stretch with an 'a' occurs."""

        length = 1

        def copies(self, texts):
            return ["a" if "a" in t else None for t in texts]

    config = SamplingConfig(1.0, length=6, num_samples=8, seed=20, prime="b")
    together = sorted(draw_samples(model, vocabulary, config, NoLetterA()), key=lambda s: s.index)
    assert any(s.redraws for s in together)
    for k, sample in enumerate(together):
        (alone,) = draw_samples(model, vocabulary, replace(config, num_samples=1, seed=20 + k), NoLetterA())
        assert (sample.text, sample.redraws, sample.seed) == (alone.text, alone.redraws, alone.seed)
        assert sample.novel is ("a" not in sample.text)
        assert sample.novel or sample.redraws == config.redraws


def test_redraws_stop_at_the_limit():
    torch.manual_seed(0)
    vocabulary = Vocabulary.from_text("ab")
    model = CharLSTM(ModelConfig(vocab_size=2, hidden=8, embedding=4)).eval()
    tokens = vocabulary.encode("ab" * 50)
    config = SamplingConfig(1.0, length=5, num_samples=2, seed=0, prime="a", redraws=3)
    samples = list(draw_samples(model, vocabulary, config, Novelty(tokens, vocabulary, 1)))
    assert [(s.novel, s.redraws) for s in samples] == [(False, 3), (False, 3)]


def test_a_run_whose_corpus_is_gone_is_one_clear_error(tmp_path):
    vocabulary = Vocabulary.from_text("ab")
    settings = TrainConfig(corpus=str(tmp_path / "gone.txt"))
    with pytest.raises(CharlstmError, match="^novel needs the run's training corpus.*gone.txt does not exist"):
        for_run(settings, vocabulary, 8)
    with pytest.raises(CharlstmError, match="weights only"):
        for_run(None, vocabulary, 8)


def test_the_run_corpus_is_read_through_the_token_cache(tmp_path):
    text = "the quick brown fox jumps over the lazy dog\n" * 20
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    vocabulary = Vocabulary.from_text(text)
    check = for_run(TrainConfig(corpus=str(tmp_path / "c.txt")), vocabulary, 10)
    copied, new = check.copies(["a lazy dog\nthe", "dog the quick"])
    assert copied in "a lazy dog\nthe" and copied in text and len(copied) == 10 and new is None
