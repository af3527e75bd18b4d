"""Background pre-encoding: the next images go into the engine's disk cache, yielding to clicks.

A worker process (its own engine, same model and cache folder) encodes one image at a time at
the lowest CPU priority (nice 19), so the kernel gives the cores to the server's clicks whenever
both want them; a click never waits for a background encode. The server finds the result through
the engine's disk cache, as after a restart. `prefetch` replaces the waiting list (the image being
encoded is finished first); the foreground takes over an image that is still only waiting.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

LOWEST_PRIORITY = 19


def _worker(model_dir: str, cache_dir: str, threads: int, precision: str, jobs,
            results) -> None:
    """The child process: encode each path it is sent into the disk cache; exit with the parent
    (even one that was killed, which cannot stop its children)."""
    os.nice(LOWEST_PRIORITY)
    parent = os.getppid()
    from focsam_onnx.engine.embed import encoding_engine
    from focsam_onnx.engine.image_io import load_image

    engine = encoding_engine(model_dir, threads=threads, cache_dir=cache_dir,
                             max_cached_images=1, encoder_precision=precision)
    results.put(("ready", "", 0.0))
    while True:
        try:
            path = jobs.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if path is None:
            return
        start = time.perf_counter()
        try:
            encoded = engine.open_image(load_image(path))
        except Exception as err:  # reported to the server, which logs it and moves on
            results.put(("error", path, f"{type(err).__name__}: {err}"))
            continue
        results.put(("cached" if encoded.from_cache else "encoded", path,
                     time.perf_counter() - start))


class EncoderQueue:
    """One background encoder process fed one path at a time."""

    def __init__(self, model_dir: Path, cache_dir: Path, threads: int, precision: str = "fp32",
                 on_encoded: Callable[[Path, float], None] = lambda path, seconds: None):
        self._args = (str(model_dir), str(cache_dir), threads, precision)
        self._on_encoded = on_encoded
        self._cond = threading.Condition()
        self._pending: list[Path] = []
        self._running: Path | None = None
        self._done: set[Path] = set()
        self._closed = False
        self._process = None
        self._dispatcher: threading.Thread | None = None

    def start(self) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process holding ORT thread pools
        self._jobs, self._results = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=_worker, args=(*self._args, self._jobs, self._results),
                                    daemon=True, name="focsam-encoder")
        self._process.start()
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                            name="focsam-encoder-dispatch")
        self._dispatcher.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        if self._process is not None:
            self._process.terminate()  # an encode in progress is only a cache entry lost
            self._process.join(timeout=10)
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=10)
        if self._process is not None:
            # Release the queues' semaphores now: left to the interpreter's exit, the resource
            # tracker reports them as leaked.
            for channel in (self._jobs, self._results):
                channel.close()
                channel.join_thread()
            self._process.close()
            self._jobs = self._results = self._process = None

    def prefetch(self, paths: list[Path]) -> None:
        """Encode `paths` next, in order, after the image in progress (if any)."""
        with self._cond:
            self._pending = [p for p in paths if p not in self._done and p != self._running]
            self._cond.notify_all()

    def take_over(self, path: Path) -> None:
        """The foreground needs `path` now: drop it from the list, or wait if it is running."""
        with self._cond:
            if path in self._pending:
                self._pending.remove(path)
            while self._running == path and not self._closed:
                self._cond.wait()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None

    def snapshot(self) -> dict:
        with self._cond:
            return {"running": self._running.name if self._running else None,
                    "pending": [p.name for p in self._pending], "encoded": len(self._done)}

    def _dispatch(self) -> None:
        if self._receive() is None:
            return
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._running = self._pending.pop(0)
            self._jobs.put(str(self._running))
            message = self._receive()
            with self._cond:
                path, self._running = self._running, None
                if message is not None:
                    self._done.add(path)
                self._cond.notify_all()
            if message is None:
                return
            kind, _, detail = message
            if kind == "encoded":
                self._on_encoded(path, detail)
            elif kind == "error":
                log.warning("background encoding of %s failed: %s", path.name, detail)

    def _receive(self) -> tuple | None:
        """The worker's next message; None once it has exited (the queue then stops)."""
        while True:
            try:
                return self._results.get(timeout=0.5)
            except queue.Empty:
                if self._closed:
                    return None
                if not self._process.is_alive():
                    log.warning("the background encoder exited (code %s); images are now "
                                "encoded only when opened", self._process.exitcode)
                    with self._cond:
                        self._closed = True
                        self._cond.notify_all()
                    return None
