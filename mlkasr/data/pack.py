"""``prepare lmdb``: pack a folder of images into a BasicSR-layout LMDB (PNG level 1, stem keys, meta_info.txt)."""

from __future__ import annotations

import os
from functools import partial
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..imaging.io import list_images, read_image
from .codec import PNG_COMPRESSION, encode_png
from .errors import DataError
from .keys import keyed_files
from .lmdb_store import LmdbWriter
from .parallel import default_workers, ordered_map
from .staging import check_target


@dataclass(frozen=True)
class PackReport:
    path: Path
    records: int
    bytes: int


def _encode(path: Path, level: int) -> tuple[bytes, tuple[int, ...]]:
    image = read_image(path)
    return encode_png(image, level), image.shape


def pack_folder(input_dir: str | os.PathLike, output: str | os.PathLike, scale: int | None = None,
                overwrite: bool = False, workers: int | None = None, progress: bool = True,
                png_compression: int = PNG_COMPRESSION) -> PackReport:
    """Pack every image of ``input_dir`` into ``output`` (``NAME.lmdb``).

    ``scale``: the folder holds LR images of this scale; a ``x{scale}`` stem suffix is stripped from keys so they
    match the HR LMDB's. Images are re-encoded as PNG at ``png_compression`` (default 1, BasicSR's choice: decoding
    speed matters more than size in training; 0 decodes faster still, see ``codec``).
    """
    check_target(Path(output), overwrite, inputs=[input_dir])
    files = keyed_files(list_images(input_dir), scale=scale)
    if not files:
        raise DataError(f"{input_dir}: no images (expected .png, .jpg, .bmp, ...)")
    total = 0
    workers = workers or default_workers()
    encode = partial(_encode, level=png_compression)
    with LmdbWriter(output, overwrite=overwrite, png_compression=png_compression) as writer, tqdm(
        total=len(files), desc=Path(output).name, unit="img", disable=not progress, dynamic_ncols=True
    ) as bar:
        # Encoding is the cost: it runs in a pool while this process writes in order (LMDB has one writer).
        for (key, path), (png, shape) in zip(files.items(), ordered_map(encode, list(files.values()), workers)):
            writer.put_encoded(key, png, shape, path)
            total += len(png)
            bar.update()
    return PackReport(Path(output), len(files), total)
