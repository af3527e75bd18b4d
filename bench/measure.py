"""How the benchmark times things: warm-up then timed runs, percentiles, peak memory, and
back-to-back (interleaved) ratios that cancel a shared machine's drift."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from focsam_onnx.bench import system_info


def summarize(seconds: list[float]) -> dict:
    """Wall times in seconds -> p50_ms, p90_ms, mean_ms, min_ms, n (linear-interpolated
    percentiles)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no timed runs: repeats must be >= 1")
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "n": int(ms.size)}


def measure(fn: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Time `fn` `repeats` times after `warmup` discarded runs; adds the stage's peak RSS."""
    system_info.reset_peak_rss()
    rss_at_start = system_info.current_rss_mb()
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {**summarize(seconds), "peak_mb": system_info.peak_rss_mb(),
            "rss_at_start_mb": rss_at_start}


def interleaved(fns: Sequence[Callable[[], object]], warmup: int, repeats: int
                ) -> list[list[float]]:
    """Run `fns` in turn, `repeats` rounds after `warmup` rounds; seconds[i][round] of fns[i].

    Runs minutes apart drift by up to a quarter on a shared machine; alternating the contenders
    puts each round's pair under the same load, so per-round ratios cancel the drift.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    seconds: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, seconds, strict=True):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return seconds


def median_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median over rounds of ours / theirs (two `interleaved` rows)."""
    return float(np.median(np.asarray(ours) / np.asarray(theirs)))
