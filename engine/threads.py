"""How many onnxruntime threads a command uses: the cores this process may run on, at most."""

from __future__ import annotations

import logging
import os

from focsam_onnx.errors import InvalidInput

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers often narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_threads(requested: int | None) -> int:
    """`requested` threads, or all usable cores when None; more than that is capped.

    More threads than cores only makes the workers fight (1000 threads turned a 0.1 s refine
    click into 324 s), so the count is capped with a warning; below 1 is a ValueError.
    """
    cores = usable_cores()
    if requested is None:
        return cores
    if requested < 1:
        raise InvalidInput(f"threads must be >= 1 (or left out for all {cores} usable cores), "
                           f"got {requested}")
    if requested > cores:
        log.warning("%d threads requested but this process may use %d cores; using %d",
                    requested, cores, cores)
        return cores
    return requested
