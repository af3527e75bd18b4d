"""Clicks of many object sessions at once, each session's in the order they came: a thread
pool, and one lane per session.

onnxruntime's `InferenceSession.run` is thread-safe, so the workers share the engine's decoder
and refiner sessions: `workers` clicks run at once, each on the sessions' intra-op threads. A
lane runs its jobs one at a time in the order they were submitted (a person's second click
predicts on the first one's mask); between two of its jobs it goes to the back of the pool's
queue, so a session with many clicks waiting takes turns with the others.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from focsam_onnx.engine.threads import usable_cores

T = TypeVar("T")


def default_click_workers() -> int:
    """One click in flight per usable core: a lone click still gets every intra-op thread."""
    return usable_cores()


class Lane:
    """One session's queue of jobs; at most one of them runs at a time."""

    def __init__(self) -> None:
        self._jobs: deque[tuple[Future, Callable, tuple]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False  # a turn of this lane is waiting in, or running on, the pool

    @property
    def waiting(self) -> int:
        """Jobs submitted and not yet started."""
        with self._lock:
            return len(self._jobs)


class ClickPool:
    """`workers` threads running lanes' jobs; `submit` returns a Future of the job's result."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"click workers must be >= 1, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="click")

    def submit(self, lane: Lane, function: Callable[..., T], *args) -> Future[T]:
        """Run `function(*args)` after every job submitted to `lane` before it."""
        future: Future[T] = Future()
        with lane._lock:
            lane._jobs.append((future, function, args))
            if lane._scheduled:
                return future
            lane._scheduled = True
        self._executor.submit(self._turn, lane)
        return future

    def close(self) -> None:
        """Finish the jobs already running; the rest are cancelled."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _turn(self, lane: Lane) -> None:
        """Run the lane's next job, then queue its next turn behind the other lanes."""
        with lane._lock:
            future, function, args = lane._jobs.popleft()
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(function(*args))
            except BaseException as err:  # the caller awaits the future: it gets the error
                future.set_exception(err)
        with lane._lock:
            lane._scheduled = bool(lane._jobs)
            if not lane._scheduled:
                return
        try:
            self._executor.submit(self._turn, lane)
        except RuntimeError:  # the pool is shutting down: what is left will not run
            self._cancel(lane)

    @staticmethod
    def _cancel(lane: Lane) -> None:
        with lane._lock:
            jobs, lane._jobs = list(lane._jobs), deque()
        for future, _, _ in jobs:
            future.cancel()
