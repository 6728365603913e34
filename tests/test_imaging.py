"""Image I/O: EXIF orientation, grey+alpha, and files OpenCV refuses to decode."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from mlkasr.imaging.exif import exif_orientation
from mlkasr.imaging.io import ImageReadError, decode_image, encode_image, read_image, read_rgb, write_image


def _tiff_orientation(orientation: int, order: str = ">") -> bytes:
    marker = b"MM" if order == ">" else b"II"
    return (marker + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 1)
            + struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(order + "I", 0))


def _jpeg_with_orientation(image: np.ndarray, orientation: int, order: str = ">") -> bytes:
    ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    payload = b"Exif\x00\x00" + _tiff_orientation(orientation, order)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg.tobytes()[:2] + app1 + jpeg.tobytes()[2:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _asymmetric(height: int = 24, width: int = 40) -> np.ndarray:
    """Blocks of distinct colours, so that every flip and rotation gives a different image."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:8, :16] = (255, 0, 0)
    image[-8:, :8] = (0, 255, 0)
    image[:8, -8:] = (0, 0, 255)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied_as_viewers_and_opencv_imread_do(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(_jpeg_with_orientation(_asymmetric(), orientation, "<" if orientation % 2 else ">"))
    upright = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]  # OpenCV applies EXIF without UNCHANGED
    got = read_image(path)
    assert got.shape == upright.shape == ((40, 24, 3) if orientation >= 5 else (24, 40, 3))
    assert np.array_equal(got, upright)
    assert np.array_equal(read_rgb(path), upright)


def test_orientation_6_is_a_clockwise_quarter_turn(tmp_path):
    image = _asymmetric()
    path = tmp_path / "o6.jpg"
    path.write_bytes(_jpeg_with_orientation(image, 6))
    got = read_image(path).astype(int)
    stored = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert np.array_equal(got, np.rot90(stored, -1))
    assert got[2, -2, 0] > 200 and got[2, -2, 1] < 60  # the red top-left block is now top-right


def test_png_exif_orientation_is_applied_too(tmp_path):
    png = encode_image(_asymmetric(), ".png")
    exif = _png_chunk(b"eXIf", _tiff_orientation(8))
    path = tmp_path / "o8.png"
    path.write_bytes(png[:33] + exif + png[33:])  # right after IHDR
    assert np.array_equal(read_image(path), np.rot90(_asymmetric(), 1))


def test_orientation_parser_survives_damaged_or_absent_metadata():
    assert exif_orientation(encode_image(_asymmetric(), ".png")) == 1
    assert exif_orientation(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*") == 1  # truncated TIFF
    assert exif_orientation(b"not an image") == 1
    assert exif_orientation(_jpeg_with_orientation(_asymmetric(), 9)) == 1  # out of range: ignored


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_alpha_png_stays_grey_alpha_through_read_and_write(tmp_path, dtype):
    rng = np.random.default_rng(0)
    image = rng.integers(0, np.iinfo(dtype).max, (5, 7, 2), dtype=dtype)
    path = write_image(tmp_path / "ga.png", image)
    assert path.read_bytes()[25] == 4  # PNG colour type grey+alpha
    got = read_image(path)
    assert got.shape == (5, 7, 2) and got.dtype == dtype and np.array_equal(got, image)
    assert np.array_equal(read_rgb(path), np.repeat(image[:, :, :1], 3, axis=2))
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # what other programs see: the same pixels
    assert np.array_equal(bgra[:, :, 0], image[:, :, 0]) and np.array_equal(bgra[:, :, 3], image[:, :, 1])
    with pytest.raises(Exception, match="grey\\+alpha image can be written as .png only"):
        write_image(tmp_path / "ga.jpg", image)


def test_a_header_beyond_opencvs_pixel_limit_is_an_image_error_not_a_crash():
    png = encode_image(np.zeros((1, 1, 3), np.uint8), ".png")
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = png[:8] + _png_chunk(b"IHDR", header) + png[33:]
    with pytest.raises(ImageReadError, match=r"bomb\.png: cannot be decoded \(OpenCV: .*CV_IO_MAX_IMAGE_PIXELS"):
        decode_image(bomb, "bomb.png")


def _tiff_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """OpenCV's TIFF with an Orientation entry added to its first IFD (rewritten at the end of the file)."""
    data = bytearray(encode_image(image, ".tif"))
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    entries = [bytes(data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]) for i in range(count)]
    entries.append(struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0))
    entries.sort(key=lambda entry: struct.unpack(order + "H", entry[:2])[0])  # TIFF wants tags in order
    data += b"\0" * (len(data) & 1)
    offset = len(data)
    data += struct.pack(order + "H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    data[4:8] = struct.pack(order + "I", offset)
    return bytes(data)


def _webp_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A VP8X WebP: OpenCV's lossless image chunk plus an EXIF chunk."""
    ok, plain = cv2.imencode(".webp", image[:, :, ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101])
    plain = plain.tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)

    h, w = image.shape[:2]
    vp8x = chunk(b"VP8X", b"\x08\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little"))
    body = b"WEBP" + vp8x + plain[12:] + chunk(b"EXIF", _tiff_orientation(orientation))  # raw TIFF, as specified
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("kind", ["tif", "webp"])
def test_tiff_and_webp_orientation_match_opencv_imread_without_double_rotation(tmp_path, kind):
    # OpenCV applies a TIFF's orientation itself even with IMREAD_UNCHANGED, a WebP's only without it
    path = tmp_path / f"o6.{kind}"
    make = _tiff_with_orientation if kind == "tif" else _webp_with_orientation
    path.write_bytes(make(_asymmetric(), 6))
    # (imdecode: OpenCV 5's imread fails on an oriented TIFF, "original_ptr == real_mat.data")
    upright = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert upright.shape == (40, 24, 3)
    assert np.array_equal(read_image(path), upright)
