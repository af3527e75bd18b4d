"""`serve --ray`: the server's encodes on the Ray encoder pool, an opened image before any
pre-encode.

The server is the driver, as for `embed --ray`: it decodes and hashes each image, sends the
pixels to a worker and writes the returned embeddings into its own cache (`store`), so the
cache needs no shared filesystem and holds the bytes a single-process encode writes. Images a
person opened are sent first, up to two per worker (one encoding, one next); pre-encodes only
to an idle worker, so an opened image waits at most for the one encode its worker is running.
A worker killed mid-image is restarted by Ray, which runs the image again (`EncoderPool`'s
restarts); waiting callers see nothing of it but the delay. Workers run at the lowest CPU
priority: on the server's own machine (`--ray local`) clicks keep the cores they need.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from focsam_onnx.cluster.ray_encoder import EncoderPool, connect
from focsam_onnx.engine.image_io import ImageError, image_content_hash, load_image
from focsam_onnx.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

LOWEST_PRIORITY = 19
OPENED_PER_WORKER = 2  # an opened image may queue behind one running encode, never more
POLL_S = 0.02  # how often the dispatcher looks for finished encodes while some run
PENDING_PER_WORKER = 4  # pre-encodes remembered per worker (older requests drop off)


@dataclass
class _Job:
    label: str  # the image's name, for logs and the page
    image_hash: str
    image: np.ndarray
    path: Path | None
    opened: bool  # a person is waiting for it
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None
    worker: int = -1
    submitted: float = 0.0


class PoolEncoder:
    """Encodes on `EncoderPool` workers at `address` (see `ray_encoder.connect`).

    `store(image_hash, embeddings)` writes a result into the server's cache and `has(image_hash)`
    asks it; `on_encoded(label, seconds)` hears of every encode (submission to result).
    """

    def __init__(self, address: str, model_dir: Path, model_id: str,
                 store: Callable[[str, np.ndarray], None], has: Callable[[str], bool],
                 workers: int | None = None, cpus: int = 1, memory_bytes: int | None = None,
                 on_encoded: Callable[[str, float], None] = lambda label, seconds: None):
        self._pool_args = (address, model_dir, model_id, workers, cpus, memory_bytes)
        self._store, self._has, self._on_encoded = store, has, on_encoded
        self._cond = threading.Condition()
        self._opened: deque[_Job] = deque()  # waiting, oldest first
        self._pending: list[Path] = []  # pre-encodes, first to go first
        self._jobs: dict[str, _Job] = {}  # by image hash: waiting or running
        self._running: dict[object, _Job] = {}  # by Ray object ref
        self._done: set[Path] = set()
        self._encoded = 0
        self._closed = False
        self._stack = ExitStack()
        self.pool: EncoderPool | None = None
        self._load: list[int] = []
        self._dispatcher: threading.Thread | None = None

    @property
    def workers(self) -> int:
        return len(self._load)

    def start(self) -> None:
        """Connect to Ray and start the workers (raises ClusterError if they cannot start)."""
        address, model_dir, model_id, workers, cpus, memory_bytes = self._pool_args
        ray = self._stack.enter_context(connect(address, num_cpus=os.cpu_count()))
        self.pool = EncoderPool(ray, model_dir, model_id, workers, cpus, memory_bytes,
                                nice=LOWEST_PRIORITY)
        self._load = [0] * len(self.pool.actors)
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                            name="focsam-ray-dispatch")
        self._dispatcher.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting, self._opened = list(self._opened), deque()
            self._pending.clear()
            self._cond.notify_all()
        for job in waiting:
            self._finish(job, Unavailable("the server is shutting down"))
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=30)
        for job in list(self._running.values()):
            self._finish(job, Unavailable("the server is shutting down"))
        if self.pool is not None:
            self.pool.close()
        self._stack.close()

    def encode(self, image: np.ndarray, label: str, path: Path | None = None) -> float | None:
        """Encode `image` (H, W, 3) uint8 BGR before any pre-encode and wait until the cache
        holds it; the seconds waited, or None if the cache had it already."""
        start = time.perf_counter()
        image_hash = image_content_hash(image)
        if self._has(image_hash):
            return None
        with self._cond:
            if self._closed:
                raise Unavailable("the Ray encoder pool is closed")
            if path in self._pending:
                self._pending.remove(path)
            job = self._jobs.get(image_hash)  # a pre-encode of it may be running already
            if job is None:
                job = self._jobs[image_hash] = _Job(label, image_hash, image, path, True)
                self._opened.append(job)
                self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return time.perf_counter() - start

    def prefetch(self, paths: list[Path]) -> None:
        """Pre-encode `paths` next, before the ones asked for earlier (several people move
        through the folder at once: each one's next images are kept, the newest first)."""
        with self._cond:
            fresh = [p for p in paths if p not in self._done]
            older = [p for p in self._pending if p not in fresh]
            depth = max(len(fresh), PENDING_PER_WORKER * max(1, self.workers))
            self._pending = (fresh + older)[:depth]
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._running)

    def position(self, label: str) -> int | None:
        """Where an opened image is: 0 encoding, k the k-th waiting; None if not queued."""
        with self._cond:
            if any(job.label == label for job in self._running.values()):
                return 0
            for k, job in enumerate(self._opened, 1):
                if job.label == label:
                    return k
        return None

    def snapshot(self) -> dict:
        with self._cond:
            running = [job.label for job in self._running.values()]
            return {"running": running[0] if running else None, "in_flight": running,
                    "waiting": [job.label for job in self._opened],
                    "pending": [p.name for p in self._pending], "encoded": self._encoded,
                    "workers": self.workers}

    # the dispatcher thread: the only one that talks to the workers

    def _dispatch(self) -> None:
        ray = self.pool.ray
        while True:
            self._submit_what_fits()
            with self._cond:
                if self._closed:
                    return
                if not self._running:
                    self._cond.wait(timeout=1.0)
                    continue
                refs = list(self._running)
            ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
            for ref in ready:
                self._collect(ref)

    def _submit_what_fits(self) -> None:
        while True:
            path = None
            with self._cond:
                if self._closed:
                    return
                least = min(self._load)
                if self._opened and least < OPENED_PER_WORKER:
                    job = self._opened.popleft()
                elif self._pending and least == 0:
                    path = self._pending.pop(0)
                else:
                    return
            if path is not None:
                job = self._prefetch_job(path)
                if job is None:
                    continue
            with self._cond:
                job.worker = self._load.index(min(self._load))
                self._load[job.worker] += 1
                job.submitted = time.perf_counter()
                self._running[self.pool.actors[job.worker].encode.remote(job.image)] = job

    def _prefetch_job(self, path: Path) -> _Job | None:
        """A pre-encode of `path`, unless it is unreadable, cached or queued already."""
        try:
            image = load_image(path)
        except ImageError as err:
            log.warning("not pre-encoding %s: %s", path.name, err)
            return None
        image_hash = image_content_hash(image)
        cached = self._has(image_hash)
        with self._cond:
            if cached or image_hash in self._jobs:
                self._done.add(path)
                return None
            job = self._jobs[image_hash] = _Job(path.name, image_hash, image, path, False)
        return job

    def _collect(self, ref) -> None:
        with self._cond:
            job = self._running.pop(ref)
            self._load[job.worker] -= 1
        try:
            result = self.pool.ray.get(ref)
        except Exception as err:  # the worker died more often than it may be restarted
            log.warning("encoding %s on the Ray pool failed: %s", job.label, err)
            self._finish(job, Unavailable(f"encoding {job.label} on the Ray pool failed: {err}"))
            return
        if isinstance(result, str):  # the image itself was refused
            self._finish(job, InvalidInput(f"{job.label}: {result}"))
            return
        # A copy: the cache must not hold a view of Ray's object store.
        self._store(job.image_hash, np.array(result))
        self._finish(job, None)
        self._on_encoded(job.label, time.perf_counter() - job.submitted)

    def _finish(self, job: _Job, error: Exception | None) -> None:
        with self._cond:
            self._jobs.pop(job.image_hash, None)
            if error is None:
                self._encoded += 1
                if job.path is not None:
                    self._done.add(job.path)
        job.error = error
        job.done.set()
