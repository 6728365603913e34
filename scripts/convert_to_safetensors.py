#!/usr/bin/env python
"""Convert MAN checkpoints (official .pth, mlkasr training checkpoints) to .safetensors model files.

    python scripts/convert_to_safetensors.py MAN-light_x4.pth [more.pth ...] [--output-dir DIR]

The result loads without unpickling and carries its variant and scale in its metadata. Each converted model is
checked: it must give the same output as the original on a random image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import mlkasr
from mlkasr.errors import MlkasrError


def convert(source: Path, output_dir: Path | None) -> Path:
    model = mlkasr.load_model(source)
    target = (output_dir or source.parent) / f"{source.stem}.safetensors"
    if target.exists():
        raise MlkasrError(f"{target} exists; remove it first")
    mlkasr.save_model(model, target)
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.equal(model(x), mlkasr.load_model(target)(x)):
            target.unlink()
            raise MlkasrError(f"{target}: converted model does not reproduce {source}; removed")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--output-dir", type=Path, help="where to write (default: beside each input)")
    args = parser.parse_args()
    failed = 0
    for source in args.checkpoints:
        try:
            target = convert(source, args.output_dir)
            spec = mlkasr.load_model(target).spec
            print(f"{source} -> {target} ({spec.name} x{spec.scale})")
        except MlkasrError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
