"""Image files: loading (OpenCV, BGR, as upstream's mmcv does), the content hash (a cache key),
and writing (checked before any slow work, masks losslessly, atomically)."""

from __future__ import annotations

import hashlib
import warnings
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from focsam_onnx.engine.atomic_io import atomic_write, check_writable
from focsam_onnx.errors import InvalidInput, TooLarge

# A mask is exactly 0/255: a lossy format (JPEG, WebP) would blur its edge into grey levels, so
# mask outputs are refused in those rather than silently converted to another file name.
LOSSLESS_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".pgm", ".pnm")


class ImageError(InvalidInput):
    """An image file that is missing, unreadable, corrupt, truncated or empty."""


MAX_PIXELS = 64_000_000  # beyond any photo a person labels; a bigger header is a bomb


def header_size(source: bytes | Path, what: str) -> tuple[int, int]:
    """(width, height) from the image header alone, without decoding the pixels; (0, 0) for a
    format only OpenCV reads (its decode is then checked instead)."""
    try:
        with warnings.catch_warnings():  # the caller compares the size with its own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(source) if isinstance(source, bytes) else source) as image:
                return image.size
    except Image.DecompressionBombError:
        raise TooLarge(f"{what} announces an absurd pixel count; refused unread") from None
    except (UnidentifiedImageError, OSError):
        return (0, 0)


def _check_complete(data: bytes, what: str) -> None:
    """Raise `ImageError` if Pillow finds the data truncated or corrupt.

    OpenCV decodes truncated PNG and JPEG data partially (the missing part comes back grey or
    black) with only a warning, so a second, strict decoder checks the whole stream.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as image:
                image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        # A format OpenCV reads but Pillow does not know, or one Pillow refuses to decode for
        # its size: OpenCV's verdict stands.
        return
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or truncated image {what}: {exc}") from exc


def decode_image(data: bytes, what: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image file bytes as (H, W, 3) uint8 **BGR** (cv2 IMREAD_COLOR semantics, EXIF
    orientation applied): the one guarded decoder every path uses (CLI, serve, evaluation,
    embed, SamPredictor). `what` names the image in errors.

    The header is read first, so a file announcing more than `max_pixels` pixels (a
    decompression bomb) is refused (TooLarge) before anything is decoded; then OpenCV decodes
    it, as upstream's `mmcv.imfrombytes` does, and Pillow decodes it once more to catch
    truncation (roughly doubling the load time). Raises ImageError for empty, undecodable,
    truncated or zero-size images.
    """
    if not data:
        raise ImageError(f"image file is empty: {what}")
    width, height = header_size(data, what)
    if width * height > max_pixels:
        raise TooLarge(f"{what} has {width}x{height} pixels, over the limit of {max_pixels} "
                       "pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot decode image (unknown format or corrupt data): {what}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"decoded image {what} has unusable shape {image.shape}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise TooLarge(f"{what} has {image.shape[1]}x{image.shape[0]} pixels, over the limit of "
                       f"{max_pixels} pixels")
    _check_complete(data, what)
    return image


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 in **BGR** order (see `decode_image`).

    Raises `ImageError` naming `path` if the file is missing, cannot be decoded, is truncated
    or has zero size, and `TooLarge` over `max_pixels`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    return decode_image(path.read_bytes(), str(path), max_pixels)


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
