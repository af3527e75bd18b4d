"""Image-embedding cache: an in-memory LRU plus an optional, integrity-checked disk folder.

Entries are keyed by the image's content hash, the model's identity and the encoder precision,
so an entry made by another model, or by a bf16 or int8 encoder for an fp32 session, is never
found. On disk each entry is `<key>.bin` (the raw float32 embeddings) and `<key>.json` (model
id, encoder precision, image hash, shape and the sha256 of the array bytes); a file that fails
any check is treated as absent and overwritten, never trusted. A folder that cannot be written
(read-only, full) costs a warning and leaves the cache memory-only; it never loses a result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from focsam_onnx.engine.atomic_io import atomic_write
from focsam_onnx.engine.graph_spec import EMBEDDING_SHAPE
from focsam_onnx.errors import InvalidInput

log = logging.getLogger(__name__)

EMBEDDING_BYTES = int(np.prod(EMBEDDING_SHAPE)) * np.dtype(np.float32).itemsize


class CacheDirError(InvalidInput):
    """The cache folder is a file, or lies below one."""


def cache_key(image_hash: str, model_id: str, precision: str) -> str:
    return hashlib.sha256(f"{model_id}:{precision}:{image_hash}".encode()).hexdigest()[:32]


class EmbeddingCache:
    """`get(image_hash, model_id, precision)` / `put(...)` of (1, 256, 64, 64) float32
    embeddings; `precision` is the encoder's (fp32, bf16, int8)."""

    def __init__(self, max_items: int = 16, cache_dir: str | Path | None = None):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._disk_writes = self.cache_dir is not None and _usable_folder(self.cache_dir)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, image_hash: str, model_id: str, precision: str) -> np.ndarray | None:
        key = cache_key(image_hash, model_id, precision)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        embeddings = self._read_disk(key, image_hash, model_id, precision)
        if embeddings is not None:
            self._remember(key, embeddings)
        return embeddings

    def contains(self, image_hash: str, model_id: str, precision: str) -> bool:
        """Whether a valid entry exists (checked like `get`), without loading it into memory."""
        key = cache_key(image_hash, model_id, precision)
        return (key in self._memory
                or self._read_disk(key, image_hash, model_id, precision) is not None)

    def put(self, image_hash: str, model_id: str, precision: str,
            embeddings: np.ndarray) -> np.ndarray:
        """Store `embeddings`; returns the stored, read-only array."""
        if embeddings.shape != EMBEDDING_SHAPE or embeddings.dtype != np.float32:
            raise ValueError(f"embeddings must be float32 {EMBEDDING_SHAPE}, got "
                             f"{embeddings.dtype} {embeddings.shape}")
        key = cache_key(image_hash, model_id, precision)
        embeddings = np.ascontiguousarray(embeddings)
        embeddings.flags.writeable = False  # shared by every session on this image
        self._remember(key, embeddings)
        if self._disk_writes:
            self._write_disk(key, image_hash, model_id, precision, embeddings)
        return embeddings

    def _remember(self, key: str, embeddings: np.ndarray) -> None:
        self._memory[key] = embeddings
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def _write_disk(self, key: str, image_hash: str, model_id: str, precision: str,
                    emb: np.ndarray) -> None:
        raw = emb.tobytes()
        meta = {"model_id": model_id, "precision": precision, "image_hash": image_hash,
                "shape": list(emb.shape), "dtype": "float32",
                "sha256": hashlib.sha256(raw).hexdigest()}
        try:
            atomic_write(self.cache_dir / f"{key}.bin", raw)
            atomic_write(self.cache_dir / f"{key}.json", json.dumps(meta).encode())
        except OSError as err:
            log.warning("cannot write to the cache folder %s (%s); caching in memory only",
                        self.cache_dir, err.strerror or err)
            self._disk_writes = False

    def _read_disk(self, key: str, image_hash: str, model_id: str,
                   precision: str) -> np.ndarray | None:
        if self.cache_dir is None:
            return None
        data_path, meta_path = self.cache_dir / f"{key}.bin", self.cache_dir / f"{key}.json"
        if not (data_path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            raw = data_path.read_bytes()
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable cache entry %s: %s", key, err)
            return None
        expected = {"model_id": model_id, "precision": precision, "image_hash": image_hash,
                    "shape": list(EMBEDDING_SHAPE), "dtype": "float32"}
        if any(meta.get(k) != v for k, v in expected.items()):
            log.warning("ignoring cache entry %s: made for another image, model or precision", key)
            return None
        if len(raw) != EMBEDDING_BYTES:  # checked first: a matching checksum may be forged
            log.warning("ignoring truncated cache entry %s (%d bytes)", key, len(raw))
            return None
        if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
            log.warning("ignoring corrupt cache entry %s (checksum mismatch)", key)
            return None
        embeddings = np.frombuffer(raw, dtype=np.float32).reshape(EMBEDDING_SHAPE)
        return embeddings  # read-only view of the bytes, like the in-memory entries


def _usable_folder(folder: Path) -> bool:
    """Make `folder` if needed; False (with a warning) if it cannot be written to.

    Raises CacheDirError when a file stands where the folder should be: a wrong path, which no
    amount of retrying fixes, so it is refused before any slow work.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CacheDirError(f"cache folder {folder} is a file or lies below one; "
                            "give --cache-dir a folder") from None
    except OSError as err:
        log.warning("cannot create the cache folder %s (%s); caching in memory only",
                    folder, err.strerror or err)
        return False
    if not os.access(folder, os.W_OK | os.X_OK):
        log.warning("the cache folder %s is not writable; reading it, caching new images in "
                    "memory only", folder)
        return False
    return True
