"""Task images, downloaded from Label Studio with the token it handed the backend in /setup.

A task's image field is a path on Label Studio (`/data/upload/<project>/<file>` for uploads,
`/data/local-files/?d=<path>` for local storage) or a full URL. Paths are joined to the host
Label Studio gave in /setup and sent with `Authorization: Token <key>`; a full URL gets the token
only when it points at that same host, so the key never leaves for another server.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from focsam_onnx.engine.image_io import decode_image
from focsam_onnx.errors import InvalidInput, NotFound, TooLarge, Unavailable

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 100 << 20
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LabelStudioLink:
    """What /setup told us: Label Studio's base URL and the project owner's API key."""

    hostname: str
    access_token: str | None


def image_url(value: str, link: LabelStudioLink | None) -> tuple[str, bool]:
    """(absolute URL, whether to send the token) for a task's image field `value`."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"the task's image field is {value!r}, not a URL")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme in ("http", "https"):
        same_host = link is not None and _origin(value) == _origin(link.hostname)
        return value, same_host
    if parts.scheme:
        raise InvalidInput(f"cannot fetch {value!r}: only http(s) URLs and Label Studio paths "
                           "(uploads, local files) are supported; cloud storage needs "
                           "'Use pre-signed URLs' on in Label Studio")
    if link is None:
        raise Unavailable(f"the image {value!r} is a path on Label Studio, but Label Studio has "
                          "not called /setup for this project yet; re-save the model connection")
    return urllib.parse.urljoin(link.hostname.rstrip("/") + "/", value.lstrip("/")), True


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class ImageFetcher:
    """Downloads and decodes task images, keeping the last few decoded (a person clicks many
    times on one image; Label Studio's upload and storage URLs name a file that does not
    change)."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, value: str, link: LabelStudioLink | None) -> np.ndarray:
        """(H, W, 3) uint8 BGR of the task image `value`."""
        url, with_token = image_url(value, link)
        with self._lock:
            if url in self._images:
                self._images.move_to_end(url)
                return self._images[url]
        image = decode_image(self._download(url, link.access_token if with_token else None),
                             f"the task image {value}")
        with self._lock:
            self._images[url] = image
            while len(self._images) > self.keep:
                self._images.popitem(last=False)
        return image

    @staticmethod
    def _download(url: str, token: str | None) -> bytes:
        request = urllib.request.Request(url)
        if token:
            request.add_header("Authorization", f"Token {token}")
        try:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
                data = response.read(MAX_IMAGE_BYTES + 1)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise Unavailable(
                    f"Label Studio refused the image {url} ({err.code}); start Label Studio "
                    "with LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true so that the token it gives "
                    "ML backends is accepted") from None
            if err.code == 404:
                raise NotFound(f"the image {url} does not exist (404)") from None
            raise Unavailable(f"downloading {url} failed: HTTP {err.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise Unavailable(f"cannot download {url}: {getattr(err, 'reason', err)}") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise TooLarge(f"the image {url} is over {MAX_IMAGE_BYTES >> 20} MB")
        log.debug("downloaded %s (%d bytes)", url, len(data))
        return data
