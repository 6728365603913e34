"""``mlkasr prepare``: turn image folders into training data (sub-images, LR, LMDB) and check LMDBs."""

from __future__ import annotations

import argparse

HELP = "prepare training data: sub-images, bicubic LR, LMDBs, checks, or the whole DIV2K or DF2K recipe"


def configure(parser: argparse.ArgumentParser) -> None:
    steps = parser.add_subparsers(dest="prepare_step", metavar="STEP", required=True)

    def common(sub: argparse.ArgumentParser, overwrite: bool = True, workers: bool = True) -> None:
        if overwrite:
            sub.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
        if workers:
            sub.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")

    def png_level(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--png-compression", type=int, default=1, choices=range(10), metavar="0-9",
                         help="PNG level of the LMDB records (default 1 as BasicSR; 0 decodes ~2x faster in training "
                              "for ~1.7x the disk)")

    def recipe_options(sub: argparse.ArgumentParser) -> None:
        """What the DIV2K recipe (and DF2K's, which runs it twice) takes besides its folders."""
        sub.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="scales (default 2 3 4)")
        sub.add_argument("--size", type=int, default=480, help="sub-image size (default 480)")
        sub.add_argument("--step", type=int, default=240, help="sub-image step (default 240)")
        sub.add_argument("--reuse", action="store_true",
                         help="keep outputs of an earlier (interrupted) run and do the rest")
        sub.add_argument("--delete-subimages", action="store_true",
                         help="delete the sub-image folders once the LMDBs check out")
        png_level(sub)
        common(sub)

    sub = steps.add_parser("subimages", help="cut HR images (and matching LR) into overlapping sub-images")
    sub.add_argument("--input", required=True, help="folder of HR images")
    sub.add_argument("--output", required=True, help="folder for HR sub-images ({stem}_s001.png ...)")
    sub.add_argument("--size", type=int, default=480, help="sub-image size in HR pixels (default 480)")
    sub.add_argument("--step", type=int, default=240, help="step between sub-images in HR pixels (default 240)")
    sub.add_argument("--scale", type=int, help="with --lr-input: the LR scale; LR is cut at size/S, step/S")
    sub.add_argument("--lr-input", help="folder of LR images ({stem}.png or {stem}x{S}.png)")
    sub.add_argument("--lr-output", help="folder for the LR sub-images (same names as the HR ones)")
    common(sub)

    sub = steps.add_parser("lr", help="make MATLAB-bicubic LR images: OUTPUT/X{s}/{stem}x{s}.png")
    sub.add_argument("--input", required=True, help="folder of HR images")
    sub.add_argument("--output", required=True, help="root folder for X2/, X3/, ...")
    sub.add_argument("--scale", type=int, nargs="+", required=True, help="one or more scales, e.g. 2 3 4")
    common(sub)

    sub = steps.add_parser("lmdb", help="pack a folder of images into NAME.lmdb (BasicSR layout)")
    sub.add_argument("--input", required=True, help="folder of images")
    sub.add_argument("--output", required=True, help="NAME.lmdb to create")
    sub.add_argument("--scale", type=int, help="the folder holds LR images of this scale: strip an x{S} suffix from keys")
    png_level(sub)
    common(sub)

    sub = steps.add_parser("check", help="check that every record decodes, meta_info agrees and pairs match")
    sub.add_argument("lmdb", help="NAME.lmdb (the HR one when checking a pair)")
    sub.add_argument("--pair", help="the LR LMDB paired with it")
    sub.add_argument("--scale", type=int, help="scale of the pair (HR = S x LR)")
    sub.add_argument("--limit", type=int, default=20, help="how many problems to list (default 20)")
    common(sub, overwrite=False)

    sub = steps.add_parser("div2k", help="the whole recipe: LR (official or generated), sub-images, LMDBs, check")
    sub.add_argument("--hr", required=True, help="HR folder, e.g. DIV2K_train_HR (any folder of HR images works)")
    sub.add_argument("--lr-root", help="official LR root holding X2/, X3/, X4/ (default: the sibling "
                     "DIV2K_train_LR_bicubic when it exists; missing scales are generated)")
    sub.add_argument("--output", required=True, help="folder for the sub-images and LMDBs")
    recipe_options(sub)

    sub = steps.add_parser("df2k",
                           help="DF2K (DIV2K + Flickr2K): the DIV2K recipe on both, LMDBs for data.train.sources")
    sub.add_argument("--div2k", required=True, help="DIV2K's HR folder, e.g. DIV2K_train_HR")
    sub.add_argument("--flickr2k", required=True, help="Flickr2K's HR folder, e.g. Flickr2K/Flickr2K_HR")
    sub.add_argument("--div2k-lr-root", help="DIV2K's official LR root (default: its sibling DIV2K_train_LR_bicubic)")
    sub.add_argument("--flickr2k-lr-root", help="Flickr2K's official LR root (default: its sibling Flickr2K_LR_bicubic)")
    sub.add_argument("--output", required=True, help="folder for DIV2K/ and Flickr2K/ (sub-images and LMDBs)")
    recipe_options(sub)


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    # Warnings (e.g. a killed run's partial output removed) are printed as they happen, one line each.
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_args, **_kwargs: print(
            f"mlkasr prepare: warning: {message}", file=sys.stderr, flush=True
        )
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import data
    from ..errors import MlkasrError

    progress = not args.quiet
    if args.prepare_step == "subimages":
        cuts = []
        if args.lr_input or args.lr_output or args.scale:
            if not (args.lr_input and args.lr_output and args.scale):
                raise MlkasrError("cutting LR too needs all of --scale, --lr-input and --lr-output")
            cuts = [data.LrCut(Path(args.lr_input), Path(args.lr_output), args.scale)]
        report = data.extract_subimages(args.input, args.output, size=args.size, step=args.step, lr=cuts,
                                        overwrite=args.overwrite, workers=args.workers, progress=progress)
        print(f"{report.images} images -> {report.subimages} sub-images in {', '.join(map(str, report.outputs))}")
    elif args.prepare_step == "lr":
        report = data.generate_lr(args.input, args.output, args.scale, overwrite=args.overwrite, workers=args.workers,
                                  progress=progress)
        print(f"{report.images} images -> {', '.join(map(str, report.folders))}")
    elif args.prepare_step == "lmdb":
        report = data.pack_folder(args.input, args.output, scale=args.scale, overwrite=args.overwrite,
                                  workers=args.workers, progress=progress, png_compression=args.png_compression)
        print(f"{report.path}: {report.records} records, {report.bytes / 2**20:.1f} MiB of PNG")
    elif args.prepare_step == "check":
        if (args.pair is None) != (args.scale is None):
            raise MlkasrError("--pair and --scale go together")
        report = data.check_lmdb(args.lmdb, args.pair, args.scale, limit=args.limit, workers=args.workers,
                                 progress=progress)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    elif args.prepare_step in ("div2k", "df2k"):
        recipe = dict(size=args.size, step=args.step, overwrite=args.overwrite, reuse=args.reuse,
                      delete_subimages=args.delete_subimages, workers=args.workers, progress=progress, log=print,
                      png_compression=args.png_compression)
        if args.prepare_step == "div2k":
            report = data.prepare_div2k(args.hr, args.output, args.scales, lr_root=args.lr_root, **recipe)
            if not report.ok:
                return 1
            out = report.outputs
            print("training data ready:")
            print(f"  HR  {out.hr_lmdb}")
            for scale, path in out.lr_lmdb.items():
                print(f"  x{scale}  {path}")
            return 0
        from ..data.df2k import prepare_df2k

        report = prepare_df2k(args.div2k, args.flickr2k, args.output, args.scales, args.div2k_lr_root,
                              args.flickr2k_lr_root, **recipe)
        if not report.ok:
            return 1
        print("DF2K ready: in a config, under data.train (configs/df2k/ hold the paper's recipes):")
        for scale in sorted(set(args.scales)):
            print(f"x{scale}:\n" + "\n".join(f"  {line}" for line in report.sources_yaml(scale).splitlines()))
    return 0
