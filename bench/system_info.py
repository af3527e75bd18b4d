"""What a benchmark records about where it ran: CPU, cores, memory, library versions, peak RSS.

Peak resident memory is read from Linux's `VmHWM` (/proc/self/status), which a process may reset
to its current RSS by writing "5" to /proc/self/clear_refs; that gives a per-stage peak inside one
process. Where either file is unavailable the process-lifetime `ru_maxrss` is used instead, and
`peak_method()` says so. A process's own lifetime peak is `VmHWM` and the peaks before its resets
where it can be read: a spawned child's `ru_maxrss` starts from its parent's resident set at the
fork, whatever the child itself uses.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path

from focsam_onnx.engine.threads import usable_cores

MIB = 1024 * 1024
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")

# Distribution names whose versions bear on the timings.
LIBRARIES = ("focsam-onnx", "onnxruntime", "onnx", "onnxscript", "onnxsim", "torch", "numpy",
             "opencv-python-headless", "segment-anything")


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 7B13"), or the best `platform` can say."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where that is not readable."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    cores, physical = set(), "0"
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or None


def total_memory_mb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return None


def machine_info(threads: int) -> dict:
    """CPU model, core counts, memory and the thread count the benchmark used."""
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "memory_total_mb": total_memory_mb(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries in LIBRARIES (None: not installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _status_kib(field: str) -> int | None:
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


_peak_before_resets_kib = 0  # this process's VmHWM just before its last reset


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel forbids it."""
    global _peak_before_resets_kib
    _peak_before_resets_kib = max(_peak_before_resets_kib, _status_kib("VmHWM") or 0)
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_method() -> str:
    """"VmHWM" when peaks can be reset per stage, else "ru_maxrss" (peak since process start)."""
    return "VmHWM" if reset_peak_rss() else "ru_maxrss"


def peak_rss_mb() -> float:
    """Peak resident memory in MiB since the last `reset_peak_rss()` (or process start)."""
    hwm = _status_kib("VmHWM")
    return hwm / 1024 if hwm is not None else process_peak_mb()


def process_peak_mb() -> float:
    """Peak resident memory in MiB since this process started (never reset)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return max(hwm, _peak_before_resets_kib) / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # macOS reports bytes, Linux KiB.
    return maxrss / MIB if sys.platform == "darwin" else maxrss / 1024


def current_rss_mb() -> float:
    rss = _status_kib("VmRSS")
    return rss / 1024 if rss is not None else peak_rss_mb()
