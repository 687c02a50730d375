"""A run's text as tokens: the corpus read through the token cache and split into its
training and validation parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlstm import corpus, token_cache
from charlstm.config import TrainConfig
from charlstm.tokenizer import Vocabulary


@dataclass
class Data:
    """A run's text: its vocabulary, the training and validation tokens, the corpus's name and
    SHA-256 (what --resume checks), and how many files it was read from and skipped."""

    vocabulary: Vocabulary
    train: torch.Tensor
    val: torch.Tensor
    name: str
    sha256: str
    files: int = 1
    skipped: int = 0
    added: str = ""  # characters appended to the given vocabulary (`grow`), in id order

    @property
    def grown_from(self) -> int:
        """The size of the vocabulary the run was given, before `added` (its own when none was)."""
        return len(self.vocabulary) - len(self.added)


def load_data(
    config: TrainConfig,
    vocabulary: Vocabulary | None = None,
    progress: token_cache.Progress | None = None,
    grow: bool = False,
) -> Data:
    """The corpus as memory-mapped tokens; with `vocabulary` given, the text must fit it, or
    with `grow` (fine-tuning, --init-from) the characters it lacks are appended to it."""
    source = corpus.find_source(config.corpus, config.encoding, config.errors)
    loaded = token_cache.load_tokens(
        source, vocabulary, what=f"corpus {config.corpus or source.name}", progress=progress, grow=grow
    )
    train, val = corpus.split(loaded.tokens, config.val_frac)
    scan = loaded.scan
    added = loaded.vocabulary.chars[len(vocabulary) :] if vocabulary is not None else ""
    return Data(loaded.vocabulary, train, val, source.name, scan.sha256, len(scan.files), scan.skipped, added)
