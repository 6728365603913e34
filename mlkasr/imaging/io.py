"""Reading and writing images with OpenCV, in RGB channel order, without losing bit depth or alpha.

Every image in mlkasr is an ``H x W x C`` numpy array (C = 1 grey, 2 grey+alpha, 3 RGB or 4 RGBA; uint8 or
uint16), upright as a viewer shows it (the EXIF orientation applied). OpenCV's BGR order stops at this module.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from ..errors import MlkasrError, OutputWriteError
from ..temporaries import write_atomic
from ..paths import display_path, special_file_problem
from .exif import apply_orientation, exif_orientation
from .grey_alpha import encode_grey_alpha_png, is_grey_alpha_png

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 40_000_000  # the default --max-pixels: an 8K frame (33 MP) passes, a 20k x 20k "image" does not


class ImageReadError(MlkasrError):
    """A file that exists but does not decode to a supported image."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of a folder by extension, sorted by name (stable across machines)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MlkasrError(f"{folder}: not a folder")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))


class ImageTooLargeError(ImageReadError):
    """An image over the pixel limit (``--max-pixels``), refused from its header where possible."""


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """``H x W x C`` grey/RGB(A) array, uint8 or uint16, as stored (no colour conversion beyond BGR->RGB) and
    turned upright by its EXIF orientation.

    ``max_pixels``: refuse (ImageTooLargeError) an image of more pixels, from its header before decoding when the
    format is known (a few bytes can claim gigabytes: a decompression bomb), else after decoding.
    """
    path = Path(path)
    if max_pixels is not None and (size := read_image_size(path)) is not None:
        _check_pixels(path, *size, max_pixels, "the header says ")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    image = decode_image(data, str(path))
    if max_pixels is not None:
        _check_pixels(path, image.shape[1], image.shape[0], max_pixels, "")
    return image


def _check_pixels(path: Path, width: int, height: int, max_pixels: int, source: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{path}: refused: {source}{width}x{height} = {width * height:,} pixels, more than --max-pixels "
            f"{max_pixels:,} (a possible decompression bomb); pass --allow-large or a larger --max-pixels to "
            "process it")


def _has_several_frames(path: str | os.PathLike) -> bool:
    """True for an animated PNG or WebP or a multi-page TIFF, of which the decoder reads the first frame only."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                idat = head.find(b"IDAT")  # an APNG declares acTL before its first image data
                return b"acTL" in (head if idat < 0 else head[:idat])
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return head[12:16] == b"VP8X" and bool(head[20] & 0x02)  # the animation flag
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                order = "<" if head[:2] == b"II" else ">"
                f.seek(4)
                (ifd,) = struct.unpack(order + "I", f.read(4))
                f.seek(ifd)
                (count,) = struct.unpack(order + "H", f.read(2))
                f.seek(ifd + 2 + 12 * count)
                (next_ifd,) = struct.unpack(order + "I", f.read(4))  # 0 ends the chain of pages
                return next_ifd != 0
    except (OSError, ValueError, IndexError, struct.error):
        return False
    return False


def several_frames_note(path: str | os.PathLike) -> str | None:
    """The warning for a file with several frames (see _has_several_frames), or None."""
    if _has_several_frames(path):
        return f"{display_path(path)}: has several frames (animated or multi-page); only the first is used"
    return None


def decode_image(data: bytes | memoryview | np.ndarray, source: str) -> np.ndarray:
    """Decode encoded image bytes (a file's or an LMDB record's) the way ``read_image`` does; ``source`` names them."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    except cv2.error as exc:  # e.g. a header beyond OpenCV's pixel limit: this file fails, not the whole run
        raise ImageReadError(f"{source}: cannot be decoded (OpenCV: {getattr(exc, 'err', exc)})") from None
    except MemoryError:
        raise ImageReadError(f"{source}: too large to decode in the memory available") from None
    if image is None:
        raise ImageReadError(f"{source}: not a decodable image ({buffer.size} bytes)")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{source}: unsupported sample type {image.dtype}; expected 8- or 16-bit")
    return apply_orientation(_to_rgb_order(image, buffer, source), exif_orientation(buffer))


def _to_rgb_order(image: np.ndarray, buffer: np.ndarray, source: str) -> np.ndarray:
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 3:
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.shape[2] == 4:
        if is_grey_alpha_png(buffer):  # OpenCV expands grey+alpha to BGRA with B = G = R: keep it grey
            return np.ascontiguousarray(image[:, :, [0, 3]])
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    raise ImageReadError(f"{source}: unsupported channel count {image.shape[2]}")


def read_rgb(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """``H x W x 3`` RGB, uint8 or uint16: grey is replicated, alpha dropped. What a network sees."""
    return to_rgb(read_image(path, max_pixels))


def to_rgb(image: np.ndarray) -> np.ndarray:
    channels = image.shape[2]
    if channels in (1, 2):  # grey (+ alpha, dropped)
        return np.repeat(image[:, :, :1], 3, axis=2)
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def encode_image(image: np.ndarray, extension: str, png_compression: int = 3, jpeg_quality: int = 95) -> bytes:
    """Encode an RGB(A)/grey array to the bytes of a file with this extension."""
    extension = extension.lower() if extension.startswith(".") else "." + extension.lower()
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 2:
        if extension != ".png":
            raise MlkasrError(f"a grey+alpha image can be written as .png only, not as {extension}")
        return encode_grey_alpha_png(image, png_compression)
    if image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    params: list[int] = []
    if extension == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    elif extension in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    ok, buffer = cv2.imencode(extension, np.ascontiguousarray(image), params)
    if not ok:
        raise MlkasrError(f"OpenCV cannot encode a {image.dtype} image with {image.shape[2]} channels as {extension}")
    return buffer.tobytes()


def write_image(path: str | os.PathLike, image: np.ndarray, **encode_options) -> Path:
    """Write atomically: encode, write a hidden temporary file beside the target, then rename over it.

    An interrupted write therefore never leaves a truncated image under the final name.
    """
    path = Path(path)
    write_bytes_atomic(path, encode_image(image, path.suffix, **encode_options))
    return path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path`` (its folder made if needed), then rename it over
    ``path``.

    A failed write (a full disk, an I/O error) raises OutputWriteError naming the file and the cause, and leaves
    neither a truncated ``path`` nor the temporary file.
    """
    if (special := special_file_problem(path)) is not None:  # the last guard: os.replace would swap it for a file
        raise OutputWriteError(f"{path}: is {special}, not a regular file; it is never written over")
    write_atomic(path, data)




def read_image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` from the file header, without decoding the pixels; None for an unrecognised header.

    Used to refuse decompression bombs before they are decoded: a few bytes decide whether a file would expand to
    gigabytes. PNG, JPEG, BMP, WebP and TIFF (first image) are parsed; anything else returns None and is left to
    the decoder (OpenCV's own limit, OPENCV_IO_MAX_IMAGE_PIXELS, still applies there).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                return _png_size(head)
            if head.startswith(b"\xff\xd8"):
                f.seek(2)
                return _jpeg_size(f)
            if head.startswith(b"BM"):
                return _bmp_size(head)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return _webp_size(head)
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff_size(f, "<" if head[:2] == b"II" else ">")
    except (OSError, ValueError, IndexError, struct.error):
        return None
    return None


def _png_size(head: bytes) -> tuple[int, int] | None:
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _jpeg_size(f) -> tuple[int, int] | None:
    # Walk the marker segments up to the first start-of-frame (SOF0..SOF15 except DHT/JPG/DAC).
    while True:
        byte = f.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:  # standalone markers
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
            data = f.read(5)
            height, width = struct.unpack(">HH", data[1:5])
            return width, height
        f.seek(length - 2, os.SEEK_CUR)


def _bmp_size(head: bytes) -> tuple[int, int] | None:
    (dib_size,) = struct.unpack("<I", head[14:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # negative height = top-down rows


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
        return width, height
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", head[21:25])
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff_size(f, order: str) -> tuple[int, int] | None:
    f.seek(4)
    (ifd,) = struct.unpack(order + "I", f.read(4))  # the first image directory may sit after the pixel data
    f.seek(ifd)
    (count,) = struct.unpack(order + "H", f.read(2))
    entries = f.read(12 * count)
    found: dict[int, int] = {}
    for i in range(count):
        entry = entries[12 * i : 12 * i + 12]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            value = entry[8:10] if kind == 3 else entry[8:12]
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value)[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None
