"""The quality gate of a reduced-precision encoder: its embeddings and masks against fp32's.

A bf16 or int8 encoder is offered by an export only when, on a fixed set of images, its
embeddings and the masks they lead to agree with the fp32 encoder's (`THRESHOLDS`):

- embedding agreement, per image: cosine similarity and max abs difference to fp32;
- mask agreement: the same click sequence is replayed on both embeddings (the full click
  protocol, refiner included) and the IoU between the two masks is taken after every click.
  Clicks are simulated against each image's object from the fp32 masks (upstream's clicker,
  20 clicks), or given (e.g. the golden sessions' clicks).

The images are synthetic scenes of several sizes (textured, shaded objects on a textured
background, made deterministically here) plus any the caller adds.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.encoder_runtime import open_encoder
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.loaded_model import LoadedModel
from focsam_onnx.engine.manifest import GateFigures
from focsam_onnx.engine.prompts import Click
from focsam_onnx.errors import FocSAMError
from focsam_onnx.evaluation.evaluate import NUM_CLICKS, simulate_clicks


@dataclass(frozen=True)
class Thresholds:
    """Below any of these the precision is refused. Embedding cosine is the per-image minimum;
    the mask IoUs are over every click of every sequence."""

    min_cosine: float = 0.9999
    mean_mask_iou: float = 0.98
    min_mask_iou: float = 0.90


THRESHOLDS = Thresholds()


class GateError(FocSAMError):
    """A reduced-precision encoder disagrees with fp32 beyond the gate's thresholds."""


@dataclass(frozen=True)
class GateCase:
    """An image (H, W, 3) uint8 BGR with either its object's mask (H, W) bool, to simulate
    clicks against, or a fixed click sequence."""

    name: str
    image: np.ndarray
    gt: np.ndarray | None = None
    clicks: tuple[Click, ...] | None = None


@dataclass(frozen=True)
class GateReport:
    precision: str
    cases: tuple[str, ...]  # the images' names
    clicks: int  # masks compared
    min_cosine: float
    max_abs: float
    mean_mask_iou: float
    min_mask_iou: float
    thresholds: Thresholds = THRESHOLDS

    @property
    def failures(self) -> list[str]:
        t = self.thresholds
        checks = [("embedding cosine", self.min_cosine, t.min_cosine),
                  ("mean mask IoU", self.mean_mask_iou, t.mean_mask_iou),
                  ("min mask IoU", self.min_mask_iou, t.min_mask_iou)]
        return [f"{name} {value:.6f} < {limit}" for name, value, limit in checks if value < limit]

    @property
    def passed(self) -> bool:
        return not self.failures

    def figures(self) -> GateFigures:
        """What the manifest records."""
        return GateFigures(self.cases, self.clicks, self.min_cosine, self.max_abs,
                           self.mean_mask_iou, self.min_mask_iou,
                           dataclasses.asdict(self.thresholds))

    def refusal(self, model_dir: Path) -> str:
        return (f"{model_dir}: the {self.precision} encoder fails its quality gate "
                f"({', '.join(self.failures)}; {self.summary()}), so it is not offered")

    def summary(self) -> str:
        return (f"{self.precision}: cosine >= {self.min_cosine:.6f}, max abs {self.max_abs:.3g}"
                f" over {len(self.cases)} images; mask IoU vs fp32 mean {self.mean_mask_iou:.4f},"
                f" min {self.min_mask_iou:.4f} over {self.clicks} clicks")


SCENE_SIZES = ((300, 450), (470, 360), (768, 1024), (1200, 900))  # (H, W)


def synthetic_scene(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like test image: a smooth, textured background and shaded, textured objects.

    Returns the (H, W, 3) uint8 BGR image and the (H, W) bool mask of its target object (a
    ring with a hole and a thin handle: upstream's hard cases of holes and thin parts).
    """
    rng = np.random.default_rng(seed)

    def smooth(cells: int, channels: int) -> np.ndarray:
        coarse = rng.random((cells, cells, channels)).astype(np.float32)
        fine = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        return fine.reshape(height, width, channels)  # cv2 drops a single channel's axis

    image = 40 + 170 * smooth(6, 3) + 20 * (smooth(64, 3) - 0.5)
    for _ in range(4):  # distractors
        mask = np.zeros((height, width), np.uint8)
        center = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (int(rng.integers(width // 12, width // 4)),
                int(rng.integers(height // 12, height // 4)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        image = np.where(mask[..., None] > 0, rng.uniform(30, 220, 3) * (0.8 + 0.4 *
                         smooth(3, 1)), image)
    s = min(height, width)
    cx, cy = int(width * rng.uniform(0.35, 0.65)), int(height * rng.uniform(0.35, 0.65))
    gt = np.zeros((height, width), np.uint8)
    cv2.circle(gt, (cx, cy), int(0.22 * s), 1, -1)
    cv2.circle(gt, (cx, cy), int(0.09 * s), 0, -1)
    cv2.line(gt, (cx + int(0.2 * s), cy), (cx + int(0.4 * s), cy - int(0.15 * s)), 1,
             max(3, s // 60))
    shade = 0.7 + 0.6 * smooth(4, 1)
    image = np.where(gt[..., None] > 0, rng.uniform(30, 220, 3) * shade, image)
    image = cv2.GaussianBlur(image, (0, 0), 1.0) + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), gt.astype(bool)


def synthetic_cases() -> list[GateCase]:
    cases = []
    for seed, (h, w) in enumerate(SCENE_SIZES):
        image, gt = synthetic_scene(h, w, seed)
        cases.append(GateCase(f"synthetic_{h}x{w}", image, gt=gt))
    return cases


def reduced_engine(reference: FocSAMEngine, precision: str) -> FocSAMEngine:
    """`reference`'s decoder and refiner with the encoder at `precision`, sharing its cache
    (the cache keys on precision, so neither engine ever sees the other's embeddings)."""
    model = reference.model
    encoder = open_encoder(model.path, precision, model.threads)
    return FocSAMEngine(dataclasses.replace(model, encoder=encoder, encoder_precision=precision),
                        reference.cache)


def run_gate(reference: FocSAMEngine, reduced: FocSAMEngine, cases: list[GateCase],
             clicks: int = NUM_CLICKS, thresholds: Thresholds = THRESHOLDS) -> GateReport:
    """Compare `reduced` (a reduced-precision encoder) with `reference` (fp32) on `cases`."""
    cosines, max_abs, ious = [], 0.0, []
    for case in cases:
        ref_image, red_image = reference.open_image(case.image), reduced.open_image(case.image)
        a = ref_image.embeddings.astype(np.float64).ravel()
        b = red_image.embeddings.astype(np.float64).ravel()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        max_abs = max(max_abs, float(np.max(np.abs(a - b))))
        ious.extend(_replay(reference, ref_image, reduced, red_image, case, clicks))
    return GateReport(reduced.model.encoder_precision, tuple(c.name for c in cases), len(ious),
                      min(cosines), max_abs, float(np.mean(ious)), min(ious), thresholds)


def gate_model(model: LoadedModel, precision: str, cases: list[GateCase] | None = None,
               clicks: int = NUM_CLICKS, thresholds: Thresholds = THRESHOLDS) -> GateReport:
    """The gate of `precision` on `model` (opened at fp32), over the synthetic scenes and
    `cases`, `clicks` simulated clicks per object."""
    reference = FocSAMEngine(model)
    return run_gate(reference, reduced_engine(reference, precision),
                    synthetic_cases() + list(cases or []), clicks, thresholds)


def _replay(reference: FocSAMEngine, ref_image, reduced: FocSAMEngine, red_image,
            case: GateCase, clicks: int) -> list[float]:
    """The mask IoU between the two engines after every step of the case's click sequence:
    given, or simulated on the reference's masks; the reduced engine takes the same steps."""
    ref, red = ClickSession(reference, ref_image), ClickSession(reduced, red_image)
    ious = []

    def compare(click: Click | None, result) -> None:
        ious.append(mask_agreement(result.mask, red.step(click).mask))

    if case.clicks is not None:
        ref.replay(case.clicks, compare)
    else:
        simulate_clicks(ref, case.gt.astype(np.uint8), random.Random(case.name), clicks, compare)
    return ious


def mask_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks; two empty masks agree fully."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0

