"""Encoders on a Ray cluster: one actor per worker, each holding one encoder session for life.

Workers only compute. The driver (`engine/embed.py`) reads and hashes every image, sends the
decoded pixels, and writes each returned embedding into its own cache folder: the cache needs no
shared filesystem, a worker killed mid-image leaves nothing in it (Ray restarts the actor and
retries the image), and its bytes are the ones a single-process `embed` writes (given the same
onnxruntime build and CPU kind: onnxruntime picks kernels per instruction set). The model folder
must exist at the same path on every node; each worker checks that it holds the driver's model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.embed import EmbedReport, EncodeJob, embed_images, encode_job
from focsam_onnx.errors import Unavailable

RAY_HINT = "pip install 'focsam-onnx[ray]'"
STARTUP_TIMEOUT_S = 900  # a ViT-H worker hashes 2.5 GB and builds its session: about a minute


class ClusterError(Unavailable):
    """Ray is missing, the cluster cannot host the workers, or a worker died for good."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


@contextmanager
def connect(address: str, num_cpus: int | None = None,
            object_store_bytes: int | None = None) -> Iterator[object]:
    """Yield the `ray` module connected to a cluster, disconnected (and stopped) on exit.

    `address`: "local" starts a private instance on 127.0.0.1 with `num_cpus` CPUs; "auto" joins
    the cluster this machine is part of (`ray start`); "HOST:PORT" joins that head node. A
    process already connected keeps its connection, open after the block too.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.WARNING}
    if address == "local":
        # It says a private instance got token authentication on: what we want, told each run.
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes,
                 include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    else:
        ray.init(address=address, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_memory_bytes(model_dir: str | Path) -> int:
    """What one worker needs: twice the encoder's weights plus 512 MiB.

    ViT-H: 2.5 GB of weights and a measured 4.9 GB encoder peak (engine/sessions.py), with the
    small decoder and refiner sessions and the interpreter on top.
    """
    weights = sum(p.stat().st_size for p in Path(model_dir).glob("encoder.onnx*"))
    return 2 * weights + (512 << 20)


class EncoderWorker:
    """A Ray actor: the model opened once, then one image after another."""

    def __init__(self, model_dir: str, model_id: str, threads: int, nice: int = 0):
        from focsam_onnx.engine.embed import encoding_engine

        if nice:  # serve's workers yield their node's cores to anything else running there
            os.nice(nice)
        self.engine = encoding_engine(model_dir, threads=threads)
        if self.engine.model.model_id != model_id:
            raise ClusterError(f"{model_dir} on this node holds model {self.engine.model.model_id}"
                               f", the driver's is {model_id}: copy the same export to every node")

    def encode(self, image: np.ndarray) -> np.ndarray | str:
        try:
            return encode_job(self.engine, image)
        except ValueError as err:  # input the preprocessing refuses: this image fails, not us
            return str(err)

    def pid(self) -> int:
        return os.getpid()


class EncoderPool:
    """`workers` EncoderWorker actors of `cpus` CPUs (as many onnxruntime threads) and
    `memory_bytes` each, declared to Ray as resources; an `Encoder` for `embed_images`. A
    worker that dies is restarted and its images run again, up to `max_restarts` times."""

    def __init__(self, ray, model_dir: str | Path, model_id: str, workers: int | None = None,
                 cpus: int = 1, memory_bytes: int | None = None, max_restarts: int = 3,
                 in_flight_per_worker: int = 2, nice: int = 0):
        self.ray = ray
        memory_bytes = memory_bytes or worker_memory_bytes(model_dir)
        available = ray.cluster_resources()
        workers = workers or max(1, int(available.get("CPU", 0) // cpus))
        for resource, need in (("CPU", workers * cpus), ("memory", workers * memory_bytes)):
            if need > available.get(resource, 0):
                raise ClusterError(f"{workers} workers need {need:g} {resource} in all, the "
                                   f"cluster has {available.get(resource, 0):g}; use fewer "
                                   "--workers or less --worker-cpus / --worker-memory-gb")
        actor = ray.remote(EncoderWorker).options(
            num_cpus=cpus, memory=memory_bytes,
            max_restarts=max_restarts, max_task_retries=max_restarts)
        self.actors = [actor.remote(str(Path(model_dir).absolute()), model_id, cpus, nice)
                       for _ in range(workers)]
        self.capacity = workers * in_flight_per_worker
        try:
            self.pids(timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ClusterError(f"the workers did not start within {STARTUP_TIMEOUT_S} s: does the "
                               "cluster have nodes with the declared CPUs and memory?") from None
        except ray.exceptions.RayActorError as err:
            self.close()
            raise ClusterError(f"a worker failed to start: {err}") from None

    def pids(self, timeout: float | None = None) -> list[int]:
        """The workers' process ids (they change when Ray restarts a worker)."""
        return self.ray.get([a.pid.remote() for a in self.actors], timeout=timeout)

    def __call__(self, jobs: Iterable[EncodeJob]) -> Iterator[tuple[EncodeJob, np.ndarray | str]]:
        """A few images in flight per worker, each to the least loaded one; results in the
        order they finish."""
        jobs = iter(jobs)
        pending: dict[object, tuple[EncodeJob, int]] = {}
        load = [0] * len(self.actors)

        def submit() -> None:
            while len(pending) < self.capacity and (job := next(jobs, None)) is not None:
                worker = load.index(min(load))
                pending[self.actors[worker].encode.remote(job.image)] = (job, worker)
                load[worker] += 1

        submit()
        while pending:
            (ready,), _ = self.ray.wait(list(pending), num_returns=1)
            job, worker = pending.pop(ready)
            load[worker] -= 1
            try:
                result = self.ray.get(ready)
            except self.ray.exceptions.RayActorError as err:
                raise ClusterError(f"worker {worker} died more often than it may be restarted "
                                   f"(while encoding {job.path}): {err}") from None
            # A copy, so the cache does not hold views of Ray's object store past its shutdown.
            yield job, result if isinstance(result, str) else np.array(result)
            submit()

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def embed_on_ray(paths: list[Path], cache: EmbeddingCache, model_dir: str | Path, model_id: str,
                 address: str, workers: int | None = None, cpus: int = 1,
                 memory_bytes: int | None = None,
                 on_progress: Callable[[EmbedReport], None] | None = None) -> EmbedReport:
    """`embed_images` with a pool of Ray workers, on the cluster at `address` (see `connect`)."""
    with connect(address, num_cpus=os.cpu_count()) as ray:
        pool = EncoderPool(ray, model_dir, model_id, workers, cpus, memory_bytes)
        try:
            return embed_images(paths, cache, model_id, pool, on_progress)
        finally:
            pool.close()
