"""Download tests talk to a server they start on 127.0.0.1, never to any other address."""

from __future__ import annotations

import sys

import pytest

_guard = {"on": False}


def _local_only(event: str, args: tuple) -> None:
    if not _guard["on"]:
        return
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][0] != "127.0.0.1":
        raise RuntimeError(f"a weights test tried to connect to {args[1]}")
    if event == "socket.getaddrinfo" and args[0] not in ("127.0.0.1", b"127.0.0.1"):
        raise RuntimeError(f"a weights test tried to resolve {args[0]!r}")


sys.addaudithook(_local_only)  # audit hooks stay for the process: the flag scopes this one


@pytest.fixture(autouse=True)
def local_network_only():
    _guard["on"] = True
    yield
    _guard["on"] = False
