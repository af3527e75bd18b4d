"""serve's scratch embedding cache, when no --cache-dir is given.

Pre-encodes reach the click path through a disk cache. Without --cache-dir that cache is a
temporary folder named after the server's process id, removed when the server closes; a server
that was killed cannot remove its own, so each server that starts removes those of processes
that no longer run (a process id reused since is only left for a later sweep).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "focsam-serve-cache-"


def make_scratch_cache(root: Path | None = None) -> Path:
    """A new scratch cache folder for this process, after sweeping dead processes' ones."""
    root = Path(tempfile.gettempdir()) if root is None else root
    sweep_dead_caches(root)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))


def sweep_dead_caches(root: Path) -> list[Path]:
    """Remove the scratch caches in `root` whose process no longer runs; returns them."""
    removed = []
    for folder in root.glob(PREFIX + "*"):
        pid = folder.name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
