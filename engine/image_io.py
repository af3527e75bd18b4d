"""Image files: loading (OpenCV, BGR, as upstream's mmcv does), the content hash (a cache key),
and writing (checked before any slow work, masks losslessly, atomically)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from focsam_onnx.engine.atomic_io import atomic_write, check_writable
from focsam_onnx.errors import InvalidInput

# A mask is exactly 0/255: a lossy format (JPEG, WebP) would blur its edge into grey levels, so
# mask outputs are refused in those rather than silently converted to another file name.
LOSSLESS_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".pgm", ".pnm")


class ImageError(InvalidInput):
    """An image file that is missing, unreadable, corrupt, truncated or empty."""


def _check_complete(path: Path) -> None:
    """Raise `ImageError` if Pillow finds the file truncated or corrupt.

    OpenCV decodes truncated PNG and JPEG data partially (the missing part comes back grey or
    black) with only a warning, so a second, strict decoder checks the whole stream.
    """
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        # A format OpenCV reads but Pillow does not know, or one Pillow refuses to decode for
        # its size: OpenCV's verdict stands.
        return
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or truncated image {path}: {exc}") from exc


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 in **BGR** order (cv2 IMREAD_COLOR semantics).

    Decodes the file's bytes with `cv2.imdecode`, as upstream's `mmcv.imfrombytes` does, then
    has Pillow decode it once more to catch truncation (roughly doubling the load time).

    Raises `ImageError` naming `path` if the file is missing, cannot be decoded, is truncated
    or has zero size.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"image file is empty: {path}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot decode image (unknown format or corrupt data): {path}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"decoded image {path} has unusable shape {image.shape}")
    _check_complete(path)
    return image


def image_content_hash(image: np.ndarray) -> str:
    """sha256 hex digest of `image`'s shape, dtype and bytes (C order): an embedding cache key."""
    contiguous = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    digest.update(repr((contiguous.shape, contiguous.dtype.str)).encode())
    digest.update(contiguous.data)
    return digest.hexdigest()


def check_image_output(path: str | Path, what: str, lossless: bool = False) -> None:
    """Raise ImageError unless `path` can be written as an image (an extension OpenCV writes,
    lossless if asked, in a writable folder); cheap, so it runs before the model loads."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ImageError(f"{what} {path} is a folder; give a file name such as {path / 'mask.png'}")
    if lossless and suffix not in LOSSLESS_EXTENSIONS:
        kind = f"a lossy {suffix} file would blur it" if cv2.haveImageWriter(f"x{suffix}") \
            else f"{suffix or 'no extension'} is not an image format"
        raise ImageError(f"{what} {path}: a mask needs a lossless format ({kind}); "
                         f"use one of {', '.join(LOSSLESS_EXTENSIONS)}, e.g. {path.stem}.png")
    if not suffix or not cv2.haveImageWriter(f"x{suffix}"):
        kind = suffix or "a file name without an extension"
        raise ImageError(f"{what} {path}: OpenCV cannot write {kind}; use .png or .jpg")
    try:
        check_writable(path, what)
    except ValueError as err:
        raise ImageError(str(err)) from None


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write `image` (BGR or single-channel uint8) in the format its extension names, atomically
    (an interrupted write leaves no partial file)."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise ImageError(f"OpenCV could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, encoded.tobytes())
