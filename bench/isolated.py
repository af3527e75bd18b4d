"""Run a benchmark stage or an export in a fresh Python process and bring back its result.

A fresh process per stage group holds one big model at a time, so its peak memory is that
stage's, and torch's or an exporter's state never leaks into onnxruntime's timings.
"""

from __future__ import annotations

import multiprocessing
import traceback
import warnings
from collections.abc import Callable
from typing import Any


def _child(conn, fn: Callable, args: tuple) -> None:
    warnings.simplefilter("ignore")  # exporter deprecation chatter; results are checked
    try:
        reply = ("ok", fn(*args))
    except BaseException:  # report anything, KeyboardInterrupt included, to the parent
        reply = ("error", traceback.format_exc())
    conn.send(reply)
    conn.close()


def in_subprocess(fn: Callable, *args: Any) -> Any:
    """Run `fn(*args)` in a fresh (spawned) Python process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    # Not daemonic: a stage may start processes of its own (the precision stage measures each
    # encoder's peak memory in a fresh one); the parent joins it either way.
    proc = ctx.Process(target=_child, args=(sender, fn, args), daemon=False)
    proc.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"{fn.__name__} died in its subprocess with exit code "
                           f"{proc.exitcode} (killed for memory?)") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed in its subprocess:\n{payload}")
    return payload
