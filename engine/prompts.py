"""What a user (or the click simulator) gives the model: clicks in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Click:
    """One simulated or user click, in original-image pixels.

    y: row index, x: column index (upstream stores clicks as (y, x, mode)).
    positive: True for a foreground click (network label 1), False for background (label 0).
    """

    y: int
    x: int
    positive: bool

    @property
    def xy(self) -> tuple[int, int]:
        """(x, y): column first, the order the prompt encoder takes."""
        return (self.x, self.y)

    @property
    def label(self) -> int:
        """Prompt-encoder label: 1 positive, 0 negative."""
        return 1 if self.positive else 0
