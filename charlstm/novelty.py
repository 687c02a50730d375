"""`--novel L`: which samples repeat L or more characters of the training corpus verbatim.

The corpus is read through the token cache (a memory-mapped array of character ids) a
million characters at a time. In each piece every L-character window gets a polynomial
hash, compared at once with the hashes of the samples' windows; a match is then checked
character by character, so a hash collision never condemns a sample.

Working memory is set by the piece, not the corpus: about 150 MB at any corpus size
(measured: a million 8-byte hashes and their temporaries); the corpus itself stays on
disk, memory-mapped (the OS may keep the pages it has read cached). Time grows with the
corpus: each check reads all of it once (about 3 s for 100 MB on one busy core here) and
stops early when every sample has been found in it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from charlstm import token_cache
from charlstm.config import TrainConfig
from charlstm.corpus import find_source
from charlstm.errors import CharlstmError, SettingError
from charlstm.tokenizer import Vocabulary

BASE = 0x2545F4914F6CDD1D
"""The hash's base: odd, so multiplying by it loses nothing modulo 2^64."""
CHUNK = 1 << 20
"""Corpus windows hashed at once: bounds the working memory."""
FILTER_SIZE = 1 << 22
"""Entries of the table of wanted hashes' low bits (4 MB, so lookups mostly hit the CPU's
cache): with 40,000 wanted windows, one corpus window in 100 is a false alarm, which a
dictionary lookup settles."""


def _power(n: int) -> int:
    """BASE^n modulo 2^64, as the signed 64-bit integer torch multiplies with."""
    value = pow(BASE, n, 1 << 64)
    return value - (1 << 64) if value >= 1 << 63 else value


def window_hashes(ids: Tensor, length: int) -> Tensor:
    """A hash of every `length`-character window of `ids` (len(ids) - length + 1 of them):
    sum of ids[i + j] * BASE^(length - 1 - j) modulo 2^64 (int64 arithmetic wraps).

    Windows are built by doubling: two windows of a and b characters make one of a + b,
    hash(a) * BASE^b + hash(b), so it takes log2(length) passes over the ids, not `length`.
    """
    ids = ids.long() + 1  # so that id 0 still counts
    result, result_length = None, 0
    part, part_length = ids, 1
    remaining = length
    while remaining:
        if remaining & 1:
            if result is None:
                result, result_length = part, part_length
            else:
                count = len(ids) - result_length - part_length + 1
                result = result[:count] * _power(part_length) + part[result_length : result_length + count]
                result_length += part_length
        remaining >>= 1
        if remaining:
            count = len(ids) - 2 * part_length + 1
            part = part[:count] * _power(part_length) + part[part_length : part_length + count]
            part_length *= 2
    return result


class Novelty:
    """The corpus's `length`-character windows, to test samples against."""

    def __init__(self, tokens: Tensor, vocabulary: Vocabulary, length: int):
        if length < 1:
            raise SettingError("novel", f"must be at least 1, got {length}")
        self.tokens, self.vocabulary, self.length = tokens, vocabulary, length

    def copies(self, texts: list[str]) -> list[str | None]:
        """For each text, a stretch of `length` characters it shares with the corpus, or None."""
        n = self.length
        found: list[str | None] = [None] * len(texts)
        ids = [self.vocabulary.encode(text).tolist() for text in texts]
        wanted: dict[int, list[tuple[int, int]]] = {}
        for t, text_ids in enumerate(ids):
            if len(text_ids) >= n:
                for start, h in enumerate(window_hashes(torch.tensor(text_ids), n).tolist()):
                    wanted.setdefault(h, []).append((t, start))
        maybe = torch.zeros(FILTER_SIZE, dtype=torch.bool)
        maybe[torch.tensor(list(wanted), dtype=torch.long) & (FILTER_SIZE - 1)] = True
        for start in range(0, len(self.tokens) - n + 1, CHUNK):
            if not wanted:
                break
            piece = self.tokens[start : start + CHUNK + n - 1].long()
            hashes = window_hashes(piece, n)
            hits = maybe[hashes & (FILTER_SIZE - 1)].nonzero().view(-1)
            for offset, h in zip(hits.tolist(), hashes[hits].tolist(), strict=True):
                window = None
                for t, s in wanted.get(h, ()):
                    if found[t] is None:
                        window = window or piece[offset : offset + n].tolist()
                        if ids[t][s : s + n] == window:
                            found[t] = texts[t][s : s + n]
            wanted = {h: places for h, places in wanted.items() if any(found[t] is None for t, _ in places)}
        return found


def for_run(train_config: TrainConfig | None, vocabulary: Vocabulary, length: int, progress=None) -> Novelty:
    """The novelty test against the corpus a checkpoint's run trained on (its token cache),
    named by its training settings (None: a weights-only checkpoint, which names none)."""
    if train_config is None:
        raise SettingError(
            "novel",
            "compares samples with the run's training corpus, but this checkpoint does not name one "
            "(it holds weights only)",
            usage=False,
        )
    corpus = train_config.corpus
    try:
        source = find_source(corpus, train_config.encoding, train_config.errors)
        loaded = token_cache.load_tokens(source, vocabulary, what=f"corpus {corpus}", progress=progress)
    except CharlstmError as e:
        where = f" ({Path(corpus).resolve()} from here)" if corpus and not Path(corpus).is_absolute() else ""
        raise SettingError(
            "novel", f"needs the run's training corpus to compare with: {e}{where}", usage=False
        ) from None
    return Novelty(loaded.tokens, vocabulary, length)
