"""`charlstm serve`'s settings: where it listens and what it allows (no torch, no HTTP).

Apart from `serve.py` so that `charlstm --help` can show each default without importing the
server; each default is written once, here, and help texts and /info read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from charlstm.errors import SettingError


@dataclass(frozen=True)
class ServeConfig:
    """Where the server listens and what it allows. Each limit is answered, when passed, by a
    4xx JSON error naming its option (`option(name)`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body: int = 65_536
    """Bytes of a request body (the prime and the text to score are in it)."""
    max_length: int = 10_000
    """Characters one sample may ask for."""
    max_samples: int = 64
    """Samples one request may ask for."""
    max_rows: int = 256
    """Samples drawing at once, over every request (the batch's size)."""
    max_sessions: int = 1_000
    """Kept states at once."""
    session_ttl: float = field(default=600.0, metadata={"duration": True})
    """Seconds a kept state waits for its continuation."""
    api_key: str | None = field(default=None, repr=False)
    """The key /v1/* requests must carry (`Authorization: Bearer KEY`); None: no key asked."""

    def __post_init__(self) -> None:
        """Refusals name the keyword (`max_body must be ...`); `charlstm serve` spells the option."""
        if not 0 <= self.port <= 65535:
            raise SettingError("port", f"must be in 0..65535 (0: any free port), got {self.port}")
        for name in ("max_body", "max_length", "max_samples", "max_rows", "max_sessions"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be at least 1, got {getattr(self, name)}")
        if not self.session_ttl > 0:
            raise SettingError("session_ttl", f"must be above 0, got {self.session_ttl:g}")
        if self.api_key is not None and not self.api_key.strip():
            raise SettingError("api_key", "is empty; give a key, or leave it out for none")


def option(name: str) -> str:
    """The `charlstm serve` option that sets `ServeConfig.name`."""
    return "--" + name.replace("_", "-")
