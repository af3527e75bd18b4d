"""Label Studio's brush RLE, written with numpy.

Label Studio stores a brush mask as RGBA bytes (four per pixel, row-major) packed by thi-ng's
rle-pack and draws the fourth byte. The packed stream is MSB-first bits: a 32-bit value count, a
5-bit word size minus 1, four 4-bit run-length field sizes minus 1, then chunks until the count
is reached: 1 bit (1: a run of one repeated word, 0: literal words), 2 bits choosing one of the
four field sizes, that many bits holding the chunk's length minus 1, then the repeated word (or
the literal words). Every pixel gives four equal bytes, so a mask is written as repeat chunks only.

label-studio-sdk's `mask2rle` writes the same format, but the SDK caps opencv-python-headless
below 4.13, whose `distanceTransform` differs from 5.x in the last bit (it fails the upstream
clicker's golden test): installing it beside focsam-onnx would change evaluation results. The end
-to-end test decodes these bytes with the SDK's decoder, in Label Studio's own environment.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 8
LENGTH_BITS = (3, 4, 8, 16)  # the four run-length field sizes (the SDK's choice too)
MAX_CHUNK = 1 << LENGTH_BITS[-1]


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """(H, W) bool or 0/1 mask -> Label Studio brush RLE bytes (a list of ints 0-255) of an
    RGBA image whose four channels are 255 on the mask and 0 elsewhere."""
    pixels = np.asarray(mask).astype(bool).ravel()
    if pixels.size == 0:
        raise ValueError("an empty mask has no RLE")
    if 4 * pixels.size >= 1 << 32:
        raise ValueError(f"{pixels.size} pixels do not fit the RLE's 32-bit count")
    edges = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [pixels.size]])) * 4  # four bytes a pixel
    values = np.where(pixels[starts], 255, 0)
    # runs longer than the widest length field are split into chunks of MAX_CHUNK
    pieces = (lengths + MAX_CHUNK - 1) // MAX_CHUNK
    chunk_values = np.repeat(values, pieces)
    chunk_lengths = np.full(int(pieces.sum()), MAX_CHUNK, np.int64)
    chunk_lengths[np.cumsum(pieces) - 1] = lengths - (pieces - 1) * MAX_CHUNK
    size_index = np.searchsorted(1 << np.array(LENGTH_BITS), chunk_lengths, side="left")
    # chunk fields: repeat flag, size index, length - 1, word
    n = chunk_lengths.size
    field_values = np.stack([np.ones(n, np.int64), size_index, chunk_lengths - 1,
                             chunk_values], axis=1).ravel()
    field_bits = np.stack([np.ones(n, np.int64), np.full(n, 2), np.array(LENGTH_BITS)[size_index],
                           np.full(n, WORD_BITS)], axis=1).ravel()
    header_values = [4 * pixels.size, WORD_BITS - 1, *(b - 1 for b in LENGTH_BITS)]
    header_bits = [32, 5, 4, 4, 4, 4]
    return _pack(np.concatenate([header_values, field_values]).astype(np.uint64),
                 np.concatenate([header_bits, field_bits]).astype(np.int64))


def _pack(values: np.ndarray, widths: np.ndarray) -> list[int]:
    """Concatenate each value's `widths` low bits, most significant first, into bytes (the
    last byte padded with zeros)."""
    field = np.repeat(np.arange(values.size), widths)
    ends = np.cumsum(widths)
    position = np.arange(int(ends[-1])) - np.repeat(ends - widths, widths)
    shift = (widths[field] - 1 - position).astype(np.uint64)
    bits = ((values[field] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tolist()
