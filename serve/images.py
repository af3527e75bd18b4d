"""The image folder being labelled: its listing, safe name lookup, guarded decoding and uploads.

A name is only ever looked up among the files the listing shows (top-level image files of the
folder), so no request can reach a path outside it. Pixel counts are read from the file header
before anything is decoded (a decompression-bomb guard).
"""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from focsam_onnx.engine.atomic_io import atomic_write
from focsam_onnx.engine.image_io import MAX_PIXELS, decode_image, header_size, load_image
from focsam_onnx.errors import InvalidInput, NotFound, TooLarge

MAX_NAME_CHARS = 200  # file systems take 255 bytes; room for a suffix and a counter
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Pillow's format name -> the suffix an upload is saved with (MPO: phone cameras' JPEGs).
_FORMAT_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tiff",
                  "WEBP": ".webp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UnknownImage(NotFound):
    """A name that is not one of the folder's images."""


class UploadTooLarge(TooLarge):
    """An upload over the size limit."""


class ImageFolder:
    """The images of `root`, looked up by file name."""

    def __init__(self, root: str | Path, max_pixels: int = MAX_PIXELS,
                 max_upload_bytes: int = 50 << 20):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidInput(f"image folder {self.root} does not exist")
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes

    def names(self) -> list[str]:
        """The folder's image files; a symlink that leads out of the folder is none of them."""
        root = self.root.resolve()
        return sorted(p.name for p in self.root.iterdir()
                      if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                      and p.is_file() and p.resolve().is_relative_to(root))

    def path(self, name: str) -> Path:
        if name not in self.names():
            raise UnknownImage(f"no image named {name!r} in {self.root}")
        return self.root / name

    def check(self, path: Path) -> None:
        """Refuse an image whose header announces more than `max_pixels` pixels."""
        width, height = header_size(path, path.name)
        if width * height > self.max_pixels:
            raise TooLarge(f"{path.name} has {width}x{height} pixels, over the limit of "
                           f"{self.max_pixels} pixels")

    def load(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 BGR, EXIF orientation applied: the pixels the engine segments."""
        return load_image(self.path(name), self.max_pixels)

    def save_upload(self, filename: str, data: bytes) -> str:
        """Validate an uploaded image and add it to the folder under a fresh, safe name."""
        if len(data) > self.max_upload_bytes:
            raise UploadTooLarge(f"upload of {len(data)} bytes is over the limit of "
                                 f"{self.max_upload_bytes} bytes")
        if not data:
            raise InvalidInput("the upload is empty")
        if len(filename) > MAX_NAME_CHARS:
            raise InvalidInput(f"the upload's file name has {len(filename)} characters; at most "
                               f"{MAX_NAME_CHARS}")
        decode_image(data, repr(filename), self.max_pixels)  # the engine's own guarded decoder
        with Image.open(BytesIO(data)) as image:
            kind = image.format or ""
        suffix = _FORMAT_SUFFIX.get(kind, "")
        if not suffix:
            raise InvalidInput(f"{filename!r} is a {kind} image; accepted: "
                               f"{', '.join(sorted(set(_FORMAT_SUFFIX)))}")
        stem = _UNSAFE.sub("_", Path(filename).stem).strip("._") or "upload"
        name, n = f"{stem}{suffix}", 1
        while (self.root / name).exists():
            n += 1
            name = f"{stem}_{n}{suffix}"
        atomic_write(self.root / name, data)
        return name
