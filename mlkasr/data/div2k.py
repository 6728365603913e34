"""``prepare div2k``: the whole DIV2K recipe (LR, sub-images, LMDBs, check) for DIV2K or any folder of HR images.

Outputs use BasicSR's names, so existing configs and tools find them::

    {output}/{HR}_sub/                    HR sub-images, 480x480 step 240
    {output}/{HR}_sub.lmdb
    {output}/{LR}/X{s}/                   full LR images, only when no official LR was found (generated here)
    {output}/{LR}/X{s}_sub/               LR sub-images aligned with the HR ones
    {output}/{LR}_X{s}_sub.lmdb

``{HR}`` is the HR folder's name (``DIV2K_train_HR``) and ``{LR}`` the LR root's (``DIV2K_train_LR_bicubic``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..imaging.io import list_images, write_bytes_atomic
from ..paths import check_output_folder
from .check import CheckReport, check_inspected, inspect_lmdb
from .errors import DataError
from .extract import LrCut, extract_subimages
from .lr import generate_lr, lr_folder
from .pack import pack_folder
from .staging import remove_dead_partials


def default_lr_root(hr_dir: Path) -> Path:
    """DIV2K's sibling LR folder: ``DIV2K_train_HR`` -> ``DIV2K_train_LR_bicubic``."""
    name = hr_dir.name
    lr_name = name.replace("HR", "LR_bicubic") if "HR" in name else f"{name}_LR_bicubic"
    return hr_dir.parent / lr_name


@dataclass(frozen=True)
class Div2kOutputs:
    hr_sub: Path
    hr_lmdb: Path
    lr_sub: dict[int, Path]
    lr_lmdb: dict[int, Path]


@dataclass
class Div2kReport:
    outputs: Div2kOutputs
    lr_sources: dict[int, str] = field(default_factory=dict)  # scale -> "official: path" / "generated: path"
    subimages: int = 0
    checks: list[CheckReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


RECIPE_FILE = "prepare_div2k.json"


def _check_recipe(output: Path, recipe: dict, reuse: bool) -> None:
    """Record the recipe of this run; with ``reuse``, refuse outputs that an earlier run cut differently.

    Sub-images are cut on a grid set by size, step and lcm(scales): reusing an HR LMDB from another grid next to a
    newly cut LR LMDB would pair mismatched patches under the same keys, which no shape check can see.
    """
    path = output / RECIPE_FILE
    if reuse and path.exists():
        earlier = json.loads(path.read_text())
        if earlier != recipe:
            raise DataError(f"{path}: the outputs there were made with {earlier}, this run asks for {recipe}; "
                            "reusing them would mix two sub-image grids: use --overwrite, or the same options")
        return
    if reuse and any(output.glob("*_sub.lmdb")):
        raise DataError(f"{output}: holds LMDBs but no {RECIPE_FILE} saying how they were cut; --reuse cannot "
                        "check them: use --overwrite")
    output.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(recipe, indent=1) + "\n").encode())


def plan_outputs(hr_dir: Path, lr_root: Path, output: Path, scales: Sequence[int]) -> Div2kOutputs:
    return Div2kOutputs(
        hr_sub=output / f"{hr_dir.name}_sub",
        hr_lmdb=output / f"{hr_dir.name}_sub.lmdb",
        lr_sub={s: output / lr_root.name / f"X{s}_sub" for s in scales},
        lr_lmdb={s: output / f"{lr_root.name}_X{s}_sub.lmdb" for s in scales},
    )


def prepare_div2k(hr_dir: str | os.PathLike, output: str | os.PathLike, scales: Sequence[int] = (2, 3, 4),
                  lr_root: str | os.PathLike | None = None, size: int = 480, step: int = 240,
                  overwrite: bool = False, reuse: bool = False, delete_subimages: bool = False,
                  workers: int | None = None, progress: bool = True,
                  log: Callable[[str], None] = lambda message: None, png_compression: int = 1) -> Div2kReport:
    """Run the recipe; ``reuse`` keeps outputs of an earlier run (complete by construction: each is renamed into
    place only when finished), so an interrupted run continues where it stopped."""
    hr_dir, output = Path(hr_dir), Path(output)
    scales = sorted(set(scales))
    if not scales or any(s < 2 for s in scales):
        raise DataError(f"scales must be integers >= 2, got {list(scales)}")
    if not hr_dir.is_dir():
        raise DataError(f"{hr_dir}: HR folder not found")
    explicit_lr = lr_root is not None
    lr_root = Path(lr_root) if explicit_lr else default_lr_root(hr_dir)
    if explicit_lr and not lr_root.is_dir():
        raise DataError(f"{lr_root}: LR root not found (expected {lr_root}/X2/0001x2.png ...)")
    outputs = plan_outputs(hr_dir, lr_root, output, scales)
    report = Div2kReport(outputs)
    check_output_folder(output, "--output")
    # Leftovers of a killed run go first, also those of steps that --reuse will skip.
    for target in (outputs.hr_sub, outputs.hr_lmdb, *outputs.lr_sub.values(), *outputs.lr_lmdb.values(),
                   *(lr_folder(output / lr_root.name, s) for s in scales)):
        remove_dead_partials(target)
    if not (reuse or overwrite):  # say it once, up front, with both ways out
        planned = [outputs.hr_sub, outputs.hr_lmdb, *outputs.lr_sub.values(), *outputs.lr_lmdb.values(),
                   *(lr_folder(output / lr_root.name, s) for s in scales)]
        existing = [str(p) for p in planned if p.exists()]
        if existing:
            raise DataError(f"{existing[0]} already exists (and {len(existing) - 1} more outputs): pass --reuse to keep "
                            "them and finish an earlier run, or --overwrite to rebuild")
    _check_recipe(output, {"size": size, "step": step, "scales": scales, "png_compression": png_compression}, reuse)
    skip = lambda *paths: reuse and all(p.exists() for p in paths)  # noqa: E731

    # 1. LR: the official images where present, else MATLAB-bicubic ones generated into the output folder.
    lr_dirs: dict[int, Path] = {}
    missing = []
    for s in scales:
        official = lr_folder(lr_root, s)
        if official.is_dir() and list_images(official):
            lr_dirs[s] = official
            report.lr_sources[s] = f"official: {official}"
        else:
            generated = lr_folder(output / lr_root.name, s)
            lr_dirs[s] = generated
            report.lr_sources[s] = f"generated: {generated}"
            if not skip(generated):
                missing.append(s)
    for s in scales:
        log(f"x{s} LR: {report.lr_sources[s]}")
    if missing:
        generate_lr(hr_dir, output / lr_root.name, missing, overwrite=overwrite, workers=workers, progress=progress)

    # 2. Sub-images, HR and every scale's LR cut on one grid aligned to lcm(scales).
    if skip(outputs.hr_sub, *outputs.lr_sub.values()):
        log(f"sub-images: reusing {outputs.hr_sub}")
        report.subimages = len(list_images(outputs.hr_sub))
    else:
        cuts = [LrCut(lr_dirs[s], outputs.lr_sub[s], s) for s in scales]
        sub = extract_subimages(hr_dir, outputs.hr_sub, size, step, cuts, overwrite, workers, progress)
        report.subimages = sub.subimages
        log(f"sub-images: {sub.images} images -> {sub.subimages} sub-images of {size}x{size} (step {step})")

    # 3. LMDBs, keys already stripped of the x{s} suffix by the sub-image step.
    for folder, lmdb_path in [(outputs.hr_sub, outputs.hr_lmdb), *((outputs.lr_sub[s], outputs.lr_lmdb[s]) for s in scales)]:
        if skip(lmdb_path):
            log(f"lmdb: reusing {lmdb_path}")
            continue
        packed = pack_folder(folder, lmdb_path, overwrite=overwrite, workers=workers, progress=progress,
                             png_compression=png_compression)
        log(f"lmdb: {packed.path} ({packed.records} records, {packed.bytes / 2**20:.1f} MiB)")

    # 4. Check each pair: decodes, meta_info, keys, sizes.
    hr_inspection = inspect_lmdb(outputs.hr_lmdb, workers, progress)  # decoded once for every scale
    for s in scales:
        check = check_inspected(hr_inspection, inspect_lmdb(outputs.lr_lmdb[s], workers, progress), s)
        report.checks.append(check)
        log(f"check x{s}: " + ("OK" if check.ok else f"{check.problem_count} problem(s)"))
        for line in check.lines()[2:]:
            log(line)
    if delete_subimages and report.ok:
        for folder in (outputs.hr_sub, *outputs.lr_sub.values()):
            shutil.rmtree(folder, ignore_errors=True)
        log("deleted the sub-image folders (the LMDBs hold the same images)")
    return report
