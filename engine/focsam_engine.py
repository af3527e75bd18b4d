"""The engine: runs the three graphs on numpy arrays, with the image-embedding cache in front.

`FocSAMEngine.open_image` turns an image into an `EncodedImage` (embeddings + geometry), running
the encoder only when the cache misses; click sessions (one per object) share it.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.graph_spec import DECODER, DEFAULT_PRECISION, LOW_RES_SHAPE, REFINER
from focsam_onnx.engine.image_io import image_content_hash, load_image
from focsam_onnx.engine.loaded_model import CLICK_GRAPHS, LoadedModel, open_model_dir
from focsam_onnx.engine.preprocess import ImageGeometry, preprocess
from focsam_onnx.engine.prompts import point_list
from focsam_onnx.engine.roi import Roi, roi_from_logits
from focsam_onnx.errors import InvalidInput

NO_MASK = np.zeros(LOW_RES_SHAPE, np.float32)

# The decoder's working memory grows with its points (token-image attention, ~0.3 MB a point),
# and onnxruntime's arena would keep the largest prompt's peak for good: a 1,000-click session
# would end 300 MB up. Prompts longer than people click hand it back after their run; shorter
# ones keep the arena, which makes them ~10% faster (CPU time, interleaved) than running without.
ARENA_KEPT_UP_TO_POINTS = 64
_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


@dataclass(frozen=True)
class EncodedImage:
    """An image ready for clicks: `embeddings` (1, 256, 64, 64) are read-only and shared."""

    image_hash: str
    geometry: ImageGeometry
    embeddings: np.ndarray
    from_cache: bool
    seconds: float


@dataclass(frozen=True)
class Decoded:
    low_res_logits: np.ndarray  # (1, 1, 256, 256) logits of mask token 0
    mask_token: np.ndarray  # (1, 1, 256)
    iou_prediction: float  # the IoU head's estimate for mask 0


class FocSAMEngine:
    """One exported model directory, its sessions (built once) and the embedding cache."""

    def __init__(self, model: LoadedModel, cache: EmbeddingCache | None = None):
        self.model = model
        self.cache = cache if cache is not None else EmbeddingCache()
        self.encoder_runs = 0  # counted, so tests can prove the cache works

    @classmethod
    def open(cls, model_dir: str | Path, threads: int | None = None,
             cache_dir: str | Path | None = None, max_cached_images: int = 16,
             encoder_precision: str = DEFAULT_PRECISION, graphs: Collection[str] = CLICK_GRAPHS,
             click_threads: int | None = None,
             click_precision: str = DEFAULT_PRECISION) -> FocSAMEngine:
        """`encoder_precision`: fp32 (default, upstream-exact), or bf16 / int8 where the
        export's quality gate passed; `click_precision` (decoder and refiner): fp32 (default,
        exact) or bf16 where the export's click-replay gate passed (see its manifest).
        `graphs` and `click_threads` as for `open_model_dir` (a server whose encodes run
        elsewhere opens no encoder)."""
        cache = EmbeddingCache(max_cached_images, cache_dir)  # a bad folder fails before loading
        return cls(open_model_dir(model_dir, threads, encoder_precision, graphs, click_threads,
                                  click_precision), cache)

    def open_image(self, image: np.ndarray | str | Path) -> EncodedImage:
        """`image`: (H, W, 3) uint8 BGR array, or a path OpenCV can read."""
        if not isinstance(image, np.ndarray):
            image = load_image(image)
        start = time.perf_counter()
        image_hash = image_content_hash(image)
        key = (image_hash, self.model.model_id, self.model.encoder_precision)
        embeddings = self.cache.get(*key)
        from_cache = embeddings is not None
        if from_cache:
            geometry = ImageGeometry.from_size(*image.shape[:2])
        else:
            network_input, geometry = preprocess(image)
            embeddings = self.cache.put(*key, self.encode(network_input))
        return EncodedImage(image_hash, geometry, embeddings, from_cache,
                            time.perf_counter() - start)

    def encode(self, network_input: np.ndarray) -> np.ndarray:
        """(1, 3, 1024, 1024) preprocessed BGR input -> (1, 256, 64, 64) embeddings."""
        self.encoder_runs += 1
        return self.model.encoder.run(network_input)

    def decode(self, embeddings: np.ndarray, coords: np.ndarray, labels: np.ndarray,
               prev_logits: np.ndarray | None, box: np.ndarray | None = None) -> Decoded:
        """coords: (N, 2) float32 (x, y) in the 1024 frame (no +0.5); labels: (N,) 1/0;
        box: (4,) (x0, y0, x1, y1) in the 1024 frame or None.

        The box corners or the padding point are appended here (`point_list`), as upstream's
        prompt encoder does, because the graph speaks the SAM ONNX interface.
        """
        point_coords, point_labels = point_list(coords, labels, box)
        has_mask = prev_logits is not None
        feeds = dict(zip(DECODER.input_names, (
            embeddings, point_coords, point_labels,
            prev_logits if has_mask else NO_MASK,
            np.array([1.0 if has_mask else 0.0], np.float32),
        )))
        run_options = _SHRINK_ARENA if len(coords) > ARENA_KEPT_UP_TO_POINTS else None
        low_res, token, iou = self.model.sessions["decoder"].run(None, feeds, run_options)
        return Decoded(low_res, token, float(iou[0, 0]))

    def roi(self, coarse_logits: np.ndarray) -> Roi:
        return roi_from_logits(coarse_logits, self.model.expand_ratio)

    def refine(self, embeddings: np.ndarray, mask_token: np.ndarray, roi: Roi) -> np.ndarray:
        """Original embeddings -> refined (1, 256, 64, 64), focused on `roi`'s windows."""
        if not self.model.has_refiner:
            raise InvalidInput(f"{self.model.path} is a plain-SAM export without a refiner; "
                               "use refine_at=None")
        feeds = dict(zip(REFINER.input_names, (embeddings, mask_token, roi.token_mask)))
        (out,) = self.model.sessions["refiner"].run(None, feeds)
        return out
