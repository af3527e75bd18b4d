"""A resumable, verified HTTP download (standard library only).

Bytes go to `<file>.part` beside the target; a later call resumes it with an HTTP Range request
(or starts over when the server ignores Range). Only a file whose sha256 matches is moved into
place; a mismatch deletes the partial file. Every failure is a `DownloadError` whose one-line
message says what to do; a stalled or dropped transfer keeps its partial file for the rerun.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from focsam_onnx.errors import Unavailable

CHUNK = 1 << 20
DEFAULT_TIMEOUT_S = 30.0
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class DownloadError(Unavailable):
    """The download failed; the message says why and what to do."""


def fetch(url: str, sha256: str, dest: Path, size: int | None = None,
          timeout: float = DEFAULT_TIMEOUT_S, on_progress: Progress | None = None) -> Path:
    """Download `url` to the file `dest` unless it is already there with this `sha256`.

    `timeout`: seconds to wait for the connection and for each read; `size` (bytes, if known)
    lets the free disk space be checked first. Returns `dest`.
    """
    sha256 = sha256.strip().lower()
    if not SHA256_RE.match(sha256):
        raise DownloadError(f"{sha256!r} is not a sha256 (64 hexadecimal digits)")
    dest = Path(dest)
    if dest.is_file():
        if HashedFile(dest).digest.hexdigest() == sha256:
            return dest
        raise DownloadError(f"{dest} exists but its sha256 is not {sha256}; move it away or "
                            "choose another --dest")
    part = HashedFile(dest.with_name(dest.name + ".part"))
    _transfer(url, part, size, timeout, on_progress or (lambda done, total: None))
    got = part.digest.hexdigest()
    if got != sha256:
        part.path.unlink()
        raise DownloadError(f"{url} gave {part.size} bytes with sha256 {got}, expected {sha256}; "
                            "the partial file was deleted (the server holds another file, or "
                            "the transfer was corrupted: run again, or check the checksum)")
    os.replace(part.path, dest)
    return dest


class HashedFile:
    """A file being written (the `.part`), and the sha256 of the bytes it holds so far."""

    def __init__(self, path: Path):
        self.path, self.digest, self.size = path, hashlib.sha256(), 0
        if path.is_file():
            with open(path, "rb") as f:
                self._absorb(f)

    def restart(self) -> None:
        self.digest, self.size = hashlib.sha256(), 0
        self.path.write_bytes(b"")

    def append_from(self, response: BinaryIO, on_chunk: Callable[[], None]) -> None:
        with open(self.path, "ab") as out:
            self._absorb(response, out, on_chunk)

    def _absorb(self, source: BinaryIO, out: BinaryIO | None = None,
                on_chunk: Callable[[], None] = lambda: None) -> None:
        while block := source.read1(CHUNK):  # what has arrived: a stall loses no bytes
            if out is not None:
                out.write(block)
                out.flush()  # what was received survives an interrupt, for the resume
            self.digest.update(block)
            self.size += len(block)
            on_chunk()


def _transfer(url: str, part: HashedFile, size: int | None, timeout: float,
              on_progress: Progress) -> None:
    """Bring `part` up to the whole file at `url`, resuming from what it holds."""
    if size is not None and part.size > size:
        part.restart()  # longer than the published file: not a prefix of it
    if size is not None and part.size == size:
        return  # complete from an earlier run: only the checksum is left to check
    host = urllib.parse.urlsplit(url).netloc or url
    headers = {"Range": f"bytes={part.size}-"} if part.size else {}
    resume = f"the partial download is kept in {part.path}: run the same command to resume"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as response:
            if part.size and response.status != 206:
                part.restart()  # the server ignores Range and sends the whole file
            part.path.parent.mkdir(parents=True, exist_ok=True)  # only once there is a file
            length = response.headers.get("Content-Length")
            total = part.size + int(length) if length is not None else size
            _check_space(part.path.parent, total, part.size)
            on_progress(part.size, total)
            part.append_from(response, lambda: on_progress(part.size, total))
    except urllib.error.HTTPError as err:
        if err.code == 416 and part.size:
            return  # nothing left to send: the partial file is whole, the checksum decides
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = getattr(err.reason, "strerror", None) or err.reason
        raise DownloadError(f"cannot reach {host} ({reason}); check the network connection, "
                            f"or download {url} by hand") from None
    except TimeoutError:
        raise DownloadError(f"{host} sent nothing for {timeout:g} s after {part.size} bytes; "
                            f"{resume}") from None
    except (http.client.HTTPException, ConnectionError) as err:
        raise DownloadError(f"the connection to {host} broke after {part.size} bytes "
                            f"({type(err).__name__}); {resume}") from None
    except OSError as err:  # the local side: disk full, permissions
        raise DownloadError(f"cannot write {part.path}: {err.strerror or err}") from None
    if total is not None and part.size < total:
        raise DownloadError(f"{host} closed the connection after {part.size} of {total} bytes; "
                            f"{resume}")


def _check_space(folder: Path, total: int | None, done: int) -> None:
    if total is None:
        return
    free = shutil.disk_usage(folder).free
    if free < total - done:
        raise DownloadError(f"{folder} has {free / 1e6:.0f} MB free, the download needs "
                            f"{(total - done) / 1e6:.0f} MB more; free space or choose another "
                            "--dest")

