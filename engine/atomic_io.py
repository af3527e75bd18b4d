"""Atomic file and folder writes: a reader (or a crash) sees the old version or the new one,
never half of one; and the check that an output path can be written, made before slow work."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from focsam_onnx.errors import InvalidInput


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | Path, what: str) -> None:
    """Raise ValueError unless `path` (a file or folder, existing or not) can be written: its
    nearest existing ancestor must be a writable folder, and `path` itself no file in the way."""
    path = Path(path)
    for existing in (path.parent, *path.parent.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        raise InvalidInput(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInput(f"{what} {path}: {existing} is not writable")


def probe_writable(folder: str | Path, what: str) -> None:
    """Create `folder` if needed and write and remove a file in it; InvalidInput saying why not
    (a read-only file system or missing permission passes a mode check as root, not this)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise InvalidInput(f"{what} {folder} is not writable ({err.strerror or err}); choose "
                           "a folder this user can write to") from None


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Build a folder beside `target` and swap it in for `target` only if the block succeeds.

    On any exception, Ctrl-C included, the staging folder is removed and `target` is left as it
    was. The swap (two renames) runs with SIGINT and SIGTERM blocked, so Ctrl-C cannot fall
    between them; the replaced folder is deleted after the new one is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".new"))
    old = staging.with_suffix(".old")
    try:
        with _noting_ctrl_c() as noted:
            yield staging
        if noted:  # a library caught the KeyboardInterrupt and went on: still an interrupt
            raise KeyboardInterrupt
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            _swap(staging, target, old)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _noting_ctrl_c() -> Iterator[list[int]]:
    """Ctrl-C raises KeyboardInterrupt as always, and is also noted in the yielded list, which a
    library that catches the exception cannot undo (torch's ONNX exporter, interrupted while it
    captures a graph, was seen to raise its own export error instead). Only in the main thread,
    and only where Python's own Ctrl-C handler is installed."""
    noted: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield noted
        return

    def note(signum, frame) -> None:
        noted.append(signum)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _swap(new: Path, target: Path, old: Path) -> None:
    """Put `new` at `target`, moving what was there to `old`; put it back if that fails."""
    moved = target.exists()
    if moved:
        os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if moved:
            os.rename(old, target)
        raise
