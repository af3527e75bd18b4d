"""The errors the library raises on purpose, under one base; each edge maps them once.

Every message says what is wrong and what to do. The command line prints it as one `error:`
line with the kind's exit code; the HTTP server answers the kind's status. Anything that is not
a `FocSAMError` is a bug: the CLI names it as unexpected, the server logs its traceback and
answers 500 with a short error id. The built-in mixins (ValueError, LookupError) keep the
errors catchable the way Python code expects, as `requests` does with its family.
"""

from __future__ import annotations


class FocSAMError(Exception):
    """Base of every error focsam-onnx raises on purpose."""

    exit_code = 2  # the CLI's status for it (2: the input or the set-up needs a change)
    http_status = 400


class InvalidInput(FocSAMError, ValueError):
    """A bad argument, prompt, image or request: the caller has to change it."""


class TooLarge(InvalidInput):
    """An input over a stated limit (pixels, bytes, points)."""

    http_status = 413


class NotFound(FocSAMError, LookupError):
    """Something named that does not exist: an image, an object, a session, a file."""

    http_status = 404


class Conflict(FocSAMError):
    """The request is stale: someone else changed the thing first; reload and retry."""

    http_status = 409


class DamagedData(FocSAMError, ValueError):
    """A file we wrote (model folder, cache, record, checkpoint) that is missing, altered or of
    another format: the message says how to make it again. Over HTTP a 409: the request is fine,
    the stored state it needs is not."""

    http_status = 409


class Unavailable(FocSAMError):
    """Not possible right now or here: not ready yet, a cluster that cannot be reached."""

    http_status = 503


class Busy(Unavailable):
    """A bounded resource is full of live work (sessions, queued requests): retry later."""

    http_status = 429


class MissingExtra(Unavailable, ValueError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, what: str, extra: str):
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'focsam-onnx[{extra}]'")
        self.extra = extra


def require(module: str, what: str, extra: str):
    """Import `module`, or raise MissingExtra naming `extra` (one line, no traceback)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(what, extra) from None
