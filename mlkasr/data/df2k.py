"""``prepare df2k``: the MAN paper's training set, DF2K = DIV2K's 800 + Flickr2K's 2,650 training images.

Each download goes through the DIV2K recipe (``prepare_div2k``: LR official or generated, 480/240 sub-images,
LMDBs, check) into its own folder, and training reads the two LMDB pairs as one stream through
``data.train.sources`` drawn by image count, which is one epoch of the merged set (no merged copy on disk)::

    {output}/DIV2K/DIV2K_train_HR_sub.lmdb      {output}/DIV2K/DIV2K_train_LR_bicubic_X{s}_sub.lmdb
    {output}/Flickr2K/Flickr2K_HR_sub.lmdb      {output}/Flickr2K/Flickr2K_LR_bicubic_X{s}_sub.lmdb
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .div2k import Div2kReport, prepare_div2k


@dataclass
class Df2kReport:
    parts: dict[str, Div2kReport]  # "DIV2K" / "Flickr2K" -> its recipe's report

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.parts.values())

    def sources_yaml(self, scale: int) -> str:
        """The ``data.train.sources`` block of a config training on these LMDBs at ``scale``."""
        lines = ["sources:      # DF2K: drawn by image count, one epoch of the merged set"]
        for report in self.parts.values():
            out = report.outputs
            lines.append(f"  - {{hr: {out.hr_lmdb}, lr: {out.lr_lmdb[scale]}}}")
        return "\n".join(lines)


def prepare_df2k(div2k_hr: str | os.PathLike, flickr2k_hr: str | os.PathLike, output: str | os.PathLike,
                 scales: Sequence[int] = (2, 3, 4), div2k_lr_root: str | os.PathLike | None = None,
                 flickr2k_lr_root: str | os.PathLike | None = None,
                 log: Callable[[str], None] = lambda message: None, **recipe) -> Df2kReport:
    """Run the DIV2K recipe on both downloads into ``output/DIV2K`` and ``output/Flickr2K``; ``recipe``: the
    options of ``prepare_div2k`` (size, step, overwrite, reuse, delete_subimages, workers, progress,
    png_compression)."""
    output = Path(output)
    parts = {}
    for name, hr, lr_root in (("DIV2K", div2k_hr, div2k_lr_root), ("Flickr2K", flickr2k_hr, flickr2k_lr_root)):
        log(f"{name}: {hr}")
        parts[name] = prepare_div2k(hr, output / name, scales, lr_root=lr_root, log=log, **recipe)
    return Df2kReport(parts)
