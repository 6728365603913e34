"""Grey+alpha PNGs, which OpenCV reads as 4-channel BGRA and cannot write.

mlkasr keeps such images as ``H x W x 2`` (grey, alpha) so that grey+alpha in gives grey+alpha out, and writes
them here: a plain PNG (IHDR colour type 4, one zlib stream, filter 0), 8 or 16 bits.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GREY_ALPHA = 4  # the PNG colour type


def is_grey_alpha_png(data: bytes | memoryview | np.ndarray) -> bool:
    """True for a PNG whose header says grey+alpha (IHDR is always the first chunk: byte 25 is the colour type)."""
    head = bytes(memoryview(data)[:26]) if not isinstance(data, np.ndarray) else data[:26].tobytes()
    return len(head) == 26 and head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and head[25] == GREY_ALPHA


def encode_grey_alpha_png(image: np.ndarray, compression: int = 3) -> bytes:
    """``H x W x 2`` uint8/uint16 (grey, alpha) -> PNG bytes."""
    if image.ndim != 3 or image.shape[2] != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected H x W x 2 uint8/uint16, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    depth = 16 if image.dtype == np.uint16 else 8
    samples = image.astype(">u2") if depth == 16 else np.ascontiguousarray(image)  # 16-bit: big-endian
    rows = samples.reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter type 0 before each row
    header = struct.pack(">IIBBBBB", width, height, depth, GREY_ALPHA, 0, 0, 0)
    return b"".join([
        PNG_SIGNATURE,
        _chunk(b"IHDR", header),
        _chunk(b"IDAT", zlib.compress(raw.tobytes(), compression)),
        _chunk(b"IEND", b""),
    ])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
