"""The EXIF orientation of a photo, read from its bytes, and the transform that shows it upright.

Cameras store pixels as the sensor saw them and record the rotation in EXIF tag 274 (Orientation); every viewer
applies it. OpenCV applies it only without ``IMREAD_UNCHANGED``, which mlkasr needs for 16-bit and alpha, so the
tag is parsed here (JPEG APP1 ``Exif``, PNG ``eXIf``, WebP ``EXIF``) and applied after decoding. Only the headers
are walked, never the pixel data, so this costs microseconds even for LMDB records.
"""

from __future__ import annotations

import struct

import numpy as np

ORIENTATION_TAG = 0x0112
_EXIF_PREFIX = b"Exif\x00\x00"


def exif_orientation(data: bytes | memoryview | np.ndarray) -> int:
    """The EXIF orientation (1-8) of encoded image bytes; 1 (upright) when there is none or it is unreadable."""
    view = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else memoryview(data.reshape(-1))
    try:
        if view[:2] == b"\xff\xd8":
            tiff = _jpeg_exif(view)
        elif view[:8] == b"\x89PNG\r\n\x1a\n":
            tiff = _png_exif(view)
        elif view[:4] == b"RIFF" and view[8:12] == b"WEBP":
            tiff = _webp_exif(view)
        else:
            return 1
        value = _tiff_orientation(bytes(tiff)) if tiff is not None else 1
    except (struct.error, IndexError, ValueError):  # a damaged header: show the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """``H x W x C`` as stored -> as displayed, for EXIF orientations 1-8 (5-8 swap width and height)."""
    if orientation == 2:
        image = image[:, ::-1]  # mirrored left-right
    elif orientation == 3:
        image = image[::-1, ::-1]  # rotated 180
    elif orientation == 4:
        image = image[::-1]  # mirrored top-bottom
    elif orientation == 5:
        image = image.swapaxes(0, 1)  # transposed
    elif orientation == 6:
        image = np.rot90(image, -1)  # the camera was turned 90 degrees clockwise
    elif orientation == 7:
        image = image[::-1, ::-1].swapaxes(0, 1)  # transverse
    elif orientation == 8:
        image = np.rot90(image, 1)
    else:
        return image
    return np.ascontiguousarray(image)


def _jpeg_exif(view: memoryview) -> memoryview | None:
    pos = 2
    while pos + 4 <= len(view):
        if view[pos] != 0xFF:
            return None
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no metadata follows
            return None
        (length,) = struct.unpack(">H", view[pos + 2 : pos + 4])
        segment = view[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == _EXIF_PREFIX:
            return segment[6:]
        pos += 2 + length
    return None


def _png_exif(view: memoryview) -> memoryview | None:
    pos = 8
    while pos + 8 <= len(view):
        length, kind = struct.unpack(">I4s", view[pos : pos + 8])
        if kind == b"eXIf":
            return view[pos + 8 : pos + 8 + length]
        if kind in (b"IDAT", b"IEND"):  # eXIf must precede the pixel data
            return None
        pos += 12 + length
    return None


def _webp_exif(view: memoryview) -> memoryview | None:
    pos = 12
    while pos + 8 <= len(view):
        kind, length = struct.unpack("<4sI", view[pos : pos + 8])
        if kind == b"EXIF":
            chunk = view[pos + 8 : pos + 8 + length]
            return chunk[6:] if chunk[:6] == _EXIF_PREFIX else chunk
        pos += 8 + length + (length & 1)  # chunks are padded to even sizes
    return None


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or struct.unpack(order + "H", tiff[2:4])[0] != 42:
        return 1
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == ORIENTATION_TAG and kind == 3:  # SHORT, stored in the first two bytes of the value field
            return struct.unpack(order + "H", entry[8:10])[0]
    return 1
