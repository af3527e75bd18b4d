"""A `SamPredictor`-style API on the SAM-compatible pair, with segment-anything's conventions.

`set_image` resizes the image's longest side to 1024 with PIL's bilinear filter, exactly what
segment-anything's `ResizeLongestSide.apply_image` does through torchvision, and runs
sam_encoder.onnx; `predict` maps prompts from original pixels to the 1024 frame
(`apply_coords` / `apply_boxes`) and runs sam_decoder.onnx. Plain SAM semantics: every call is
independent; FocSAM's click protocol with its refiner is `ClickSession` (engine/click_session.py).
Unlike segment-anything, `multimask_output` defaults to False: FocSAM's decoder was fine-tuned
for its first mask only. Against segment-anything's `SamPredictor` on the same random ViT-B
weights (tests/engine/test_predictor.py): embeddings within 5e-6, low-res logits 1e-6, masks
2e-5 (float32 bilinear upsampling in onnxruntime vs torch), scores 3e-7.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from focsam_onnx.config import IMAGE_SIZE
from focsam_onnx.engine.focsam_engine import NO_MASK
from focsam_onnx.engine.graph_spec import SAM_DECODER, SAM_ENCODER
from focsam_onnx.engine.integrity import verify_files
from focsam_onnx.engine.loaded_model import read_manifest
from focsam_onnx.engine.prompts import point_list
from focsam_onnx.engine.sessions import ModelDirError, graph_session
from focsam_onnx.errors import InvalidInput

MASK_THRESHOLD = 0.0


def preprocess_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """segment-anything's `get_preprocess_shape`: (h, w) with the longest side `long_side`."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8, longest side 1024, PIL bilinear (as upstream)."""
    h, w = preprocess_shape(*image_rgb.shape[:2])
    return np.asarray(Image.fromarray(image_rgb).resize((w, h), Image.Resampling.BILINEAR))


class SamPredictor:
    """set_image once, predict many times. Arrays in, arrays out; nothing is printed."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        path = Path(model_dir)
        manifest = read_manifest(path)
        if SAM_ENCODER.filename not in manifest.files:
            raise ModelDirError(f"{path} has no SAM-compatible pair; export it with "
                                "`focsam-onnx export --sam-compatible`")
        verify_files(path, manifest, [SAM_ENCODER.filename, SAM_DECODER.filename])
        threads = threads or os.cpu_count() or 1
        self._encoder = graph_session(path / SAM_ENCODER.filename, SAM_ENCODER, threads)
        self._decoder = graph_session(path / SAM_DECODER.filename, SAM_DECODER, threads)
        self.reset_image()

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: np.ndarray | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """image: (H, W, 3) uint8 in `image_format` ("RGB" or "BGR") channel order."""
        if image_format not in ("RGB", "BGR"):
            raise InvalidInput(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
                or image.shape[2] != 3 or min(image.shape[:2]) < 1):
            raise InvalidInput(f"expected an (H, W, 3) uint8 image, got "
                               f"{getattr(image, 'shape', type(image).__name__)} of dtype "
                               f"{getattr(image, 'dtype', None)}")
        rgb = np.ascontiguousarray(image[..., ::-1] if image_format == "BGR" else image)
        resized = resize_longest_side(rgb)
        (self.features,) = self._encoder.run(
            None, {SAM_ENCODER.inputs[0].name: resized.astype(np.float32)})
        self.original_size = tuple(image.shape[:2])
        self.input_size = tuple(resized.shape[:2])
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """(1, 256, 64, 64) embeddings of the current image."""
        self._require_image()
        return self.features

    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None, multimask_output: bool = False,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the current image from points and/or a box (segment-anything's arguments).

        point_coords: (N, 2) (x, y) in original pixels; point_labels: (N,) 1 foreground,
        0 background; box: (4,) (x0, y0, x1, y1) in original pixels; mask_input: (1, 256, 256)
        low-res logits from an earlier call. Returns masks (C, H, W) bool (float logits with
        `return_logits`), scores (C,), low_res_logits (C, 256, 256); C = 3 with
        `multimask_output` (mask tokens 1-3), else 1 (mask token 0).
        """
        self._require_image()
        coords, labels = self._points(point_coords, point_labels, box is not None)
        if box is not None:
            box = np.asarray(box, np.float64)
            if box.shape not in ((4,), (1, 4)):
                raise InvalidInput(f"box must be (4,) (x0, y0, x1, y1), got {box.shape}")
            box = self._to_input_frame(box.reshape(2, 2)).reshape(4)
        has_mask = mask_input is not None
        if has_mask:
            mask_input = np.asarray(mask_input, np.float32)
            if mask_input.shape != (1, 256, 256):
                raise InvalidInput(f"mask_input must be (1, 256, 256) low-res logits, "
                                   f"got {mask_input.shape}")
        point_coords, point_labels = point_list(self._to_input_frame(coords), labels, box)
        feeds = dict(zip(SAM_DECODER.input_names, (
            self.features, point_coords, point_labels,
            mask_input[None] if has_mask else NO_MASK,
            np.array([1.0 if has_mask else 0.0], np.float32),
            np.array(self.original_size, np.float32))))
        masks, scores, low_res = self._decoder.run(None, feeds)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        masks = masks[0, chosen]
        return (masks if return_logits else masks > MASK_THRESHOLD, scores[0, chosen],
                low_res[0, chosen])

    def _points(self, point_coords, point_labels,
                has_box: bool) -> tuple[np.ndarray, np.ndarray]:
        if point_coords is None:
            if not has_box:
                raise InvalidInput("predict needs point_coords (with point_labels) or a box")
            return np.zeros((0, 2)), np.zeros(0)
        if point_labels is None:
            raise InvalidInput("point_labels must be supplied with point_coords")
        coords = np.asarray(point_coords, np.float64)
        labels = np.asarray(point_labels, np.float32)
        if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != (len(coords),):
            raise InvalidInput(f"point_coords must be (N, 2) (x, y) and point_labels (N,), got "
                               f"{coords.shape} and {labels.shape}")
        return coords, labels

    def _to_input_frame(self, xy: np.ndarray) -> np.ndarray:
        """segment-anything's `apply_coords`: original pixels -> the 1024 frame, (x, y)."""
        (old_h, old_w), (new_h, new_w) = self.original_size, self.input_size
        return (xy * np.array([new_w / old_w, new_h / old_h])).astype(np.float32)

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise InvalidInput("no image: call set_image(image) before predict")
