"""What a user (or the click simulator) gives the model: clicks in original-image pixels, and
the decoder's point list they become (with a box's corners or the padding point)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_LABEL = -1.0  # the padding point, sent when there is no box
BOX_LABELS = (2.0, 3.0)  # a box's top-left and bottom-right corners


def point_list(coords: np.ndarray, labels: np.ndarray,
               box: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's point inputs, as upstream's prompt encoder builds them.

    coords: (N, 2) (x, y) in the 1024 frame; labels: (N,) 1/0; box: (4,) (x0, y0, x1, y1) in
    the 1024 frame or None. Returns point_coords (1, M, 2) and point_labels (1, M) float32:
    the clicks, then the box's corners labelled 2 and 3, or, without a box, the padding point
    (0, 0) labelled -1 (segment-anything pads only when no box is given).
    """
    coords = np.asarray(coords, np.float32).reshape(-1, 2)
    labels = np.asarray(labels, np.float32).reshape(-1)
    if box is None:
        extra_xy, extra_labels = np.zeros((1, 2), np.float32), [PAD_LABEL]
    else:
        extra_xy, extra_labels = np.asarray(box, np.float32).reshape(2, 2), list(BOX_LABELS)
    point_coords = np.concatenate([coords, extra_xy])[None]
    point_labels = np.concatenate([labels, np.array(extra_labels, np.float32)])[None]
    return point_coords, point_labels


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
