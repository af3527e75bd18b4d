"""What the benchmark feeds the graphs: click and window counts, random inputs, a test scene.

Every input is built from the graph IO spec (`engine/graph_spec.py`) and a seeded generator, so
two runs and two graphs (ours, a baseline) time the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from focsam_onnx.config import EMBED_GRID, IMAGE_SIZE
from focsam_onnx.engine.graph_spec import DECODER, REFINER

DECODER_CLICKS = (1, 5, 20)
REFINER_WINDOWS = (1, 4, 9, 16)
REFINE_CLICK_WINDOWS = (1, 4, 16)
SESSION_CLICKS = 20
SCENE_HW = (480, 640)  # GrabCut / Berkeley-sized: post-processing cost scales with the image


def decoder_key(prefix: str, n: int) -> str:
    """"decoder_1_click", "decoder_5_clicks": the report's name of an n-click decoder stage."""
    return f"{prefix}_{n}_click" + ("s" if n > 1 else "")


def refiner_key(prefix: str, k: int) -> str:
    """"refiner_1_window", "refiner_4_windows": the report's name of a k-window refiner stage."""
    return f"{prefix}_{k}_window" + ("s" if k > 1 else "")


def decoder_feeds(n_clicks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Decoder inputs for `n_clicks` clicks plus the padding point, mask input on.

    point_coords: (1, n+1, 2) float32 (x, y) in the 1024 frame, the last row (0, 0) padding;
    point_labels: (1, n+1) float32, first click positive, then random 1/0, padding -1.
    """
    feeds = DECODER.example_inputs(rng, {"num_points": n_clicks + 1})
    coords, labels = feeds["point_coords"], feeds["point_labels"]
    coords[0, :n_clicks] = rng.uniform(0, IMAGE_SIZE, (n_clicks, 2))
    coords[0, n_clicks] = 0.0
    labels[0, :n_clicks] = rng.integers(0, 2, n_clicks)
    labels[0, 0], labels[0, n_clicks] = 1.0, -1.0
    feeds["mask_input"] *= 4
    feeds["has_mask_input"][:] = 1.0
    return feeds


def window_bbox(windows: int) -> tuple[int, int, int, int]:
    """The 1024-frame bbox whose token mask selects `windows` (1, 4, 9 or 16) 16x16 windows in
    the refiner's plain AND its shifted (rolled by 8) blocks.

    Tokens [17, 16 s + 7) on both axes (s = sqrt(windows)) touch windows 1..s unshifted and
    0..s-1 shifted; 16 windows is the whole canvas.
    """
    side = math.isqrt(windows)
    if side * side != windows or not 1 <= side <= 4:
        raise ValueError(f"windows must be 1, 4, 9 or 16, got {windows}")
    if side == 4:
        return 0, 0, IMAGE_SIZE, IMAGE_SIZE
    pixels = IMAGE_SIZE // EMBED_GRID  # per token
    lo, hi = 17 * pixels, (16 * side + 7) * pixels
    return lo, lo, hi, hi


def window_token_mask(windows: int) -> np.ndarray:
    """(1, 1, 64, 64) 0/1 token mask of `window_bbox(windows)`."""
    from focsam_onnx.engine.roi import token_mask

    return token_mask(window_bbox(windows))


def refiner_feeds(windows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Refiner inputs: random embeddings and mask token (shapes from the spec), and the token
    mask of `windows` windows."""
    feeds = REFINER.example_inputs(rng)
    feeds["roi_mask"] = window_token_mask(windows)
    return feeds


def synthetic_scene(hw: tuple[int, int] = SCENE_HW, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured (H, W, 3) uint8 BGR image with a brighter ellipse, and its (H, W) uint8 mask
    (1 = object)."""
    rng = np.random.default_rng(seed)
    height, width = hw
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - 0.55 * height) / (0.3 * height)) ** 2 + \
        ((xx - 0.45 * width) / (0.25 * width)) ** 2 <= 1.0
    image = rng.integers(0, 160, (height, width, 3), dtype=np.uint8)
    image[inside] += np.array([40, 80, 90], np.uint8)
    return image, inside.astype(np.uint8)
