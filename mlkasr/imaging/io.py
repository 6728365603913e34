"""Reading and writing images with OpenCV, in RGB channel order, without losing bit depth or alpha.

Every image in mlkasr is an ``H x W x C`` numpy array (C = 1, 3 or 4; uint8 or uint16) in RGB(A) order.
OpenCV's BGR order stops at this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..errors import MlkasrError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


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


def read_image(path: str | os.PathLike) -> np.ndarray:
    """``H x W x C`` RGB(A) array, uint8 or uint16, exactly as stored (no colour conversion beyond BGR->RGB)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a decodable image")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: unsupported sample type {image.dtype}; expected 8- or 16-bit")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 3:
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    raise ImageReadError(f"{path}: unsupported channel count {image.shape[2]}")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """``H x W x 3`` RGB, uint8 or uint16: grey is replicated, alpha dropped. What a network sees."""
    return to_rgb(read_image(path))


def to_rgb(image: np.ndarray) -> np.ndarray:
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def encode_image(image: np.ndarray, extension: str, png_compression: int = 3, jpeg_quality: int = 95) -> bytes:
    """Encode an RGB(A)/grey array to the bytes of a file with this extension."""
    extension = extension.lower() if extension.startswith(".") else "." + extension.lower()
    if image.ndim == 2:
        image = image[:, :, None]
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
    data = encode_image(image, path.suffix, **encode_options)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def iter_image_files(paths: Iterable[Path]) -> Iterable[Path]:
    return (p for p in paths if is_image_file(p))
