"""Procedural scenes for the demo model: overlapping shapes on textured backgrounds, seeded.

A scene is an RGB image with the visible mask of each shape in it. Shapes are drawn in order,
so later ones occlude earlier ones; a shape left mostly hidden is dropped from the object list
(it stays in the picture as clutter). Kinds: filled ellipses and polygons (compact), the same
with a hole cut out (the hole shows what lies below, and is not part of the object), thin bars
and rings. Fills and backgrounds are flat, gradients, stripes or noise textures; the whole image
then gets a little blur and pixel noise. Everything comes from one `numpy.random.Generator`, so a
seed gives the same scene on every machine (OpenCV's rasteriser is deterministic).

Coordinates: images are (H, W, 3) uint8 RGB, masks (H, W) bool, points (x, y) in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COMPACT_KINDS = ("ellipse", "polygon", "holed_ellipse", "holed_polygon")
THIN_KINDS = ("bar", "ring")
KINDS = COMPACT_KINDS + THIN_KINDS
# Drawing odds per kind; compact shapes are what a first click is expected to get right.
KIND_WEIGHTS = (0.26, 0.26, 0.12, 0.12, 0.12, 0.12)
MIN_VISIBLE_FRACTION = 0.45  # of the shape's own area, or it is clutter, not an object
MIN_VISIBLE_PIXELS = 120
MIN_CONTRAST = 70.0  # Euclidean RGB distance between a fill's mean and what it is drawn on

# Domain separation of the seed streams: a scene is `make_scene(scene_seed(STREAM, seed, i))`.
STREAM_TRAIN, STREAM_VALIDATION, STREAM_HELDOUT = 1, 2, 3


@dataclass(frozen=True)
class Scene:
    """image: (H, W, 3) uint8 RGB; masks: (K, H, W) bool visible masks; kinds: K kind names."""

    image: np.ndarray
    masks: np.ndarray
    kinds: tuple[str, ...]

    def compact(self) -> list[int]:
        """Indices of the objects whose kind is compact (ellipses and polygons, holed or not)."""
        return [i for i, kind in enumerate(self.kinds) if kind in COMPACT_KINDS]


def scene_seed(stream: int, seed: int, index: int) -> np.random.SeedSequence:
    """The seed of scene `index` of `stream` (train / validation / held-out) under `seed`.

    Streams are separate entropy words, so no held-out scene can ever be a training scene.
    """
    return np.random.SeedSequence([stream, seed, index])


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour (3,) float, at least MIN_CONTRAST away from `avoid` if given."""
    for _ in range(32):
        colour = rng.uniform(0, 255, 3)
        if avoid is None or np.linalg.norm(colour - avoid) >= MIN_CONTRAST:
            return colour
    return 255.0 - avoid  # the opposite corner of the cube is always far enough


def _texture(rng: np.random.Generator, height: int, width: int,
             base: np.ndarray) -> np.ndarray:
    """(H, W, 3) float paint around the colour `base`: flat, gradient, stripes or blotches."""
    kind = rng.choice(("flat", "gradient", "stripes", "blotches"), p=(0.3, 0.3, 0.2, 0.2))
    paint = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    if kind == "flat":
        return paint.copy()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = (np.cos(angle) * xx + np.sin(angle) * yy) / max(height, width)
    if kind == "gradient":
        other = np.clip(base + rng.uniform(-60, 60, 3), 0, 255)
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
        return paint + t[..., None] * (other - base).astype(np.float32)
    if kind == "stripes":
        period = rng.uniform(0.02, 0.12)
        wave = np.sin(2 * np.pi * along / period)[..., None]
        return paint + wave * rng.uniform(10, 30)
    small = rng.normal(0, 1, (max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    blotches = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return paint + blotches * rng.uniform(8, 22)


def _ellipse(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    centre = (int(rng.uniform(0.1, 0.9) * width), int(rng.uniform(0.1, 0.9) * height))
    major = scale * rng.uniform(0.5, 1.0)
    minor = major / rng.uniform(1.0, 3.5)
    axes = (max(int(major), 4), max(int(minor), 4))
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
    return mask.astype(bool)


def _polygon(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    centre = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])
    n = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    stretch = rng.uniform(1.0, 2.5)
    tilt = rng.uniform(0, np.pi)
    radii = scale * rng.uniform(0.45, 1.0, n)
    pts = np.stack([radii * np.cos(angles) * stretch, radii * np.sin(angles)], axis=1)
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    pts = (pts / stretch ** 0.5) @ rot.T + centre
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _bar(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    centre = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height])
    length = scale * rng.uniform(1.2, 2.4)
    angle = rng.uniform(0, np.pi)
    half = 0.5 * length * np.array([np.cos(angle), np.sin(angle)])
    a, b = np.round(centre - half).astype(int), np.round(centre + half).astype(int)
    cv2.line(mask, tuple(int(v) for v in a), tuple(int(v) for v in b), 1,
             int(rng.integers(5, 14)))
    return mask.astype(bool)


def _ring(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    centre = (int(rng.uniform(0.15, 0.85) * width), int(rng.uniform(0.15, 0.85) * height))
    radius = scale * rng.uniform(0.5, 0.9)
    axes = (max(int(radius), 10), max(int(radius / rng.uniform(1.0, 1.8)), 10))
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1,
                int(rng.integers(6, 16)))
    return mask.astype(bool)


def _with_hole(rng: np.random.Generator, shape: np.ndarray) -> np.ndarray:
    """Cut an elliptic hole around the shape's innermost point (kept if it would split it)."""
    dist = cv2.distanceTransform(shape.astype(np.uint8), cv2.DIST_L2, 5)
    inner = float(dist.max())
    if inner < 10:
        return shape
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    hole = np.zeros(shape.shape, np.uint8)
    radius = inner * rng.uniform(0.35, 0.6)
    axes = (max(int(radius), 3), max(int(radius / rng.uniform(1.0, 1.6)), 3))
    cv2.ellipse(hole, (int(x), int(y)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    return shape & ~hole.astype(bool)


_DRAW = {"ellipse": _ellipse, "polygon": _polygon, "holed_ellipse": _ellipse,
         "holed_polygon": _polygon, "bar": _bar, "ring": _ring}


def make_scene(seed: int | np.random.SeedSequence, max_shapes: int = 6) -> Scene:
    """One scene of 2..`max_shapes` shapes on an image of 224..416 pixels per side."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(224, 417, 2))
    image = _texture(rng, height, width, _colour(rng))
    labels = np.zeros((height, width), np.int32)  # 0 background, i + 1 shape i
    drawn_kinds, areas = [], []
    for i in range(int(rng.integers(2, max_shapes + 1))):
        kind = str(rng.choice(KINDS, p=KIND_WEIGHTS))
        scale = min(height, width) * rng.uniform(0.12, 0.32)
        shape = _DRAW[kind](rng, height, width, scale)
        if kind.startswith("holed_"):
            shape = _with_hole(rng, shape)
        if shape.sum() < MIN_VISIBLE_PIXELS:
            continue
        under = image[shape].mean(axis=0)
        image[shape] = _texture(rng, height, width, _colour(rng, avoid=under))[shape]
        labels[shape] = i + 1
        drawn_kinds.append((i + 1, kind))
        areas.append(int(shape.sum()))
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image + rng.normal(0, rng.uniform(0, 8), image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    masks, kinds = [], []
    for (label, kind), area in zip(drawn_kinds, areas):
        visible = labels == label
        count = int(visible.sum())
        if count >= MIN_VISIBLE_PIXELS and count >= MIN_VISIBLE_FRACTION * area:
            masks.append(visible)
            kinds.append(kind)
    stacked = np.stack(masks) if masks else np.zeros((0, height, width), bool)
    return Scene(image, stacked, tuple(kinds))


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from its boundary (where the protocol clicks first)."""
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)
