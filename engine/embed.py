"""Batch encoding: many images into the embedding cache, resumable, failures collected.

`embed_images` is the one driver loop for a single process and for a Ray cluster alike: it reads
and hashes each image here, skips what the cache already holds, hands the rest to an `Encoder`
(this process's session, or a pool of remote ones) and writes every result itself through
`EmbeddingCache`, whose atomic writes leave either a whole entry or none. An interrupted run
therefore resumes by running again, and the cache's content does not depend on who encoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.graph_spec import DEFAULT_PRECISION
from focsam_onnx.engine.image_io import ImageError, image_content_hash, load_image
from focsam_onnx.engine.loaded_model import ENCODER_ONLY, open_model_dir
from focsam_onnx.engine.preprocess import preprocess
from focsam_onnx.errors import InvalidInput


@dataclass(frozen=True)
class EncodeJob:
    """One image the cache lacks: `image` (H, W, 3) uint8 BGR as `load_image` decodes it."""

    path: Path
    image_hash: str
    image: np.ndarray


class Encoder(Protocol):
    """Encodes jobs, yielding `(job, embeddings (1, 256, 64, 64) float32 or the error)` in any
    order; a per-image error is yielded, an encoder that cannot go on raises."""

    def __call__(self, jobs: Iterable[EncodeJob]) -> Iterator[tuple[EncodeJob, np.ndarray | str]]:
        ...


def encoding_engine(model_dir: str | Path, threads: int | None = None,
                    cache_dir: str | Path | None = None, max_cached_images: int = 16,
                    encoder_precision: str = DEFAULT_PRECISION) -> FocSAMEngine:
    """An engine that only encodes (`embed`, serve's background encoder, a Ray worker, the
    bench): only the encoder's files are read, checked and loaded, not the decoder's or the
    refiner's. Its `decode` and `refine` are not available."""
    cache = EmbeddingCache(max_cached_images, cache_dir)  # a bad folder fails before loading
    model = open_model_dir(model_dir, threads, encoder_precision, graphs=ENCODER_ONLY)
    return FocSAMEngine(model, cache)


def encode_job(engine: FocSAMEngine, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (1, 256, 64, 64) embeddings: what `engine.open_image` computes."""
    return engine.encode(preprocess(image)[0])


def local_encoder(engine: FocSAMEngine) -> Encoder:
    """This process's encoder session, one image at a time."""

    def encode(jobs: Iterable[EncodeJob]) -> Iterator[tuple[EncodeJob, np.ndarray | str]]:
        for job in jobs:
            try:
                result: np.ndarray | str = encode_job(engine, job.image)
            except ValueError as err:  # input the preprocessing refuses: this image fails
                result = str(err)
            yield job, result

    return encode


@dataclass
class EmbedReport:
    """Counts so far; `failures` holds (path, reason) of every image that could not be encoded."""

    total: int
    encoded: int = 0
    cached: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def done(self) -> int:
        return self.encoded + self.cached + len(self.failures)

    def images_per_minute(self) -> float:
        """Encoder throughput: cached images are not counted, they cost no encoder time."""
        minutes = (time.perf_counter() - self.started) / 60
        return self.encoded / minutes if minutes > 0 else 0.0


def embed_images(paths: Sequence[Path], cache: EmbeddingCache, model_id: str,
                 encoder: Encoder, on_progress: Callable[[EmbedReport], None] | None = None,
                 precision: str = DEFAULT_PRECISION) -> EmbedReport:
    """Encode every image of `paths` that `cache` lacks for `model_id` (and the `encoder`'s
    `precision`); returns the counts.

    Unreadable images are recorded in the report's failures and skipped. `on_progress` is
    called after every image.
    """
    if cache.cache_dir is None:
        raise InvalidInput("embed needs a cache folder to write into")
    report = EmbedReport(total=len(paths))

    def progress() -> None:
        if on_progress is not None:
            on_progress(report)

    def jobs() -> Iterator[EncodeJob]:
        for path in paths:
            try:
                image = load_image(path)
            except ImageError as err:
                report.failures.append((path, str(err)))
                progress()
                continue
            image_hash = image_content_hash(image)
            if cache.contains(image_hash, model_id, precision):
                report.cached += 1
                progress()
                continue
            yield EncodeJob(path, image_hash, image)

    progress()
    for job, result in encoder(jobs()):
        if isinstance(result, str):
            report.failures.append((job.path, result))
        else:
            cache.put(job.image_hash, model_id, precision, result)
            report.encoded += 1
        progress()
    return report
