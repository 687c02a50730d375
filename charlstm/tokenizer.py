"""Characters <-> ids.

The vocabulary is the sorted set of Unicode code points of the training text, so the
same text always yields the same ids. A model fine-tuned on text with new characters
extends its vocabulary instead (`Vocabulary.extended`): the old characters first, in their
old order, then the new ones sorted, so every old id still means the same character. It
travels inside every checkpoint as one plain string (loadable with `weights_only=True`),
which is all a sampler needs to decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from charlstm.errors import CharlstmError


def describe_chars(chars: Iterable[str], limit: int = 10, separator: str = ", ") -> str:
    """Characters as a person can read them in one line: 'é', '\\t', U+200B."""
    shown = []
    for ch in sorted(set(chars))[:limit]:
        shown.append(repr(ch) if ch.isprintable() or ch in "\t\n\r" else f"U+{ord(ch):04X}")
    rest = len(set(chars)) - len(shown)
    return separator.join(shown) + (f" and {rest} more" if rest > 0 else "")


@dataclass(frozen=True)
class Vocabulary:
    """An ordered set of characters; a character's id is its position."""

    chars: str
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.chars:
            raise CharlstmError("the vocabulary is empty: the text has no characters")
        if len(set(self.chars)) != len(self.chars):
            raise CharlstmError("the vocabulary repeats characters; the checkpoint is damaged")
        object.__setattr__(self, "_index", {ch: i for i, ch in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def extended(self, new_chars: Iterable[str]) -> Vocabulary:
        """This vocabulary with the characters of `new_chars` it lacks appended, sorted: every
        old character keeps its id, so a model's trained rows still mean what they meant
        (fine-tuning on text with characters the model never saw)."""
        return Vocabulary(self.chars + "".join(sorted(set(new_chars) - self._index.keys())))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    def unknown(self, text: str) -> set[str]:
        """The characters of `text` this vocabulary cannot encode."""
        return set(text) - self._index.keys()

    def known(self, text: str) -> str:
        """`text` without the characters this vocabulary cannot encode (for --skip-unknown)."""
        return "".join(ch for ch in text if ch in self._index)

    def check(self, text: str, what: str) -> None:
        """Refuse text the model has never seen, naming the offending characters."""
        missing = self.unknown(text)
        if missing:
            raise CharlstmError(f"{what} has characters the model never saw: {describe_chars(missing)}")

    @property
    def dtype(self) -> torch.dtype:
        """The smallest integer dtype that holds every id (int16 is torch's 2-byte type)."""
        if len(self) <= 256:
            return torch.uint8
        if len(self) <= 32768:
            return torch.int16
        return torch.int32

    def encode(self, text: str, what: str = "the text") -> torch.Tensor:
        """Ids of `text` as a 1-D tensor of the smallest dtype.

        Encoding goes through `str.translate` and a fixed-width byte encoding, so a
        megabyte of text takes milliseconds rather than a Python loop per character.
        """
        self.check(text, what)
        table = {ord(ch): i for i, ch in enumerate(self.chars)}
        mapped = text.translate(table)
        if self.dtype is torch.uint8:
            raw = bytearray(mapped.encode("latin-1"))
            return torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        raw = bytearray(mapped.encode("utf-32-le", "surrogatepass"))
        ids = torch.frombuffer(raw, dtype=torch.int32) if raw else torch.empty(0, dtype=torch.int32)
        return ids.to(self.dtype)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)
