"""What budget sizing chose and measured, as a run keeps it: the `Sizing` (the shape and
the speeds behind it) and the `PrecisionChoice` (what `--precision auto` chose and why).

`budget` makes them; the trainer, the progress lines and config.json read them. Plain
values only (no torch), so they are written to and read from JSON as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def shape_key(hidden: int, batch: int) -> str:
    """How a probed shape is named in Sizing's maps and config.json: '128x16', hidden x batch."""
    return f"{hidden}x{batch}"


@dataclass(frozen=True)
class Sizing:
    """The shape chosen for a budget and the measurements behind the choice.

    `steps_per_second` maps each probed shape ('128x16': hidden x batch) to its measured
    training steps per second, `evaluation_seconds` to how long one periodic evaluation
    will take, and `steps` to the updates that leaves room for in the budget; `seconds` is
    how long the probing took. Values are rounded as config.json keeps them.
    """

    hidden: int
    batch_size: int
    steps_per_second: dict[str, float]
    seconds: float
    evaluation_seconds: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    precision: PrecisionChoice | None = None

    @property
    def shape(self) -> str:
        return shape_key(self.hidden, self.batch_size)

    def predicted(self) -> float:
        """The steps/s the probe measured for the chosen shape: what the run should achieve."""
        return self.steps_per_second[self.shape]

    def to_dict(self) -> dict[str, Any]:
        """config.json's `sized_for_budget` (the precision choice has its own key)."""
        written = {k: v for k, v in asdict(self).items() if k != "precision"}
        return written | {"predicted_steps_per_second": self.predicted(), "predicted_steps": self.steps.get(self.shape)}


@dataclass(frozen=True)
class PrecisionChoice:
    """What `--precision auto` chose and why: bf16 only where the hardware computes it
    natively AND real training steps measured faster in it than in fp32 (`steps_per_second`
    holds both, for the shape timed). `reason` is the words the sizing line prints."""

    chosen: str
    reason: str
    steps_per_second: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """config.json's `precision_choice`."""
        return asdict(self)
