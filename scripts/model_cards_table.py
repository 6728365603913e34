#!/usr/bin/env python
"""Print the README's model-card tables from the shipped cards (mlkasr/weights/*.json) and published numbers.

    python scripts/model_cards_table.py [--shared ../shared/data]

Bicubic is measured here with the same code (`mlkasr eval --model bicubic`); SRCNN and FSRCNN are the published
figures as usually tabulated (trained on the 91/291-image sets, the same data as ours); MAN-tiny's are the paper's
(DIV2K + Flickr2K, 1.6M iterations on GPUs). "-" where a paper gives no figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlkasr.evaluation import evaluate, load_benchmark_set
from mlkasr.weights import shipped_models

REPO = Path(__file__).resolve().parents[1]
# (set, scale) -> PSNR / SSIM of SRCNN, FSRCNN and the paper's MAN-tiny: kept in one place, the docs generator
from mlkasr.docs_gen import PUBLISHED  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    folders = {"Set5": REPO / "datasets" / "samples" / "Set5", "Set14": args.shared / "benchmark" / "Set14",
               "B100": args.shared / "benchmark" / "B100"}
    for name, shipped in shipped_models().items():
        card = shipped.card
        s = card.scale
        print(f"\n**{name}** — {card.variant} x{s}, trained on {card.training_data} with `{card.config}`"
              f"{f' from {card.initialised_from}' if card.initialised_from else ''}: {card.iterations:,} iterations, "
              f"batch {card.batch_size}, LR patch {card.patch_size}, {card.hardware}, {card.wall_time}.\n")
        sets = [n for n in ("Set5", "Set14", "B100") if n in card.scores]
        print("| model | " + " | ".join(sets) + " |")
        print("|---|" + "---|" * len(sets))
        bicubic = [evaluate(None, [load_benchmark_set(folders[n], s, name=n)])[n] for n in sets]
        print("| bicubic | " + " | ".join(f"{r.psnr:.2f} / {r.ssim:.4f}" for r in bicubic) + " |")
        for model, table in PUBLISHED.items():
            cells = [f"{table[(n, s)][0]:.2f} / {table[(n, s)][1]:.4f}" if (n, s) in table else "-" for n in sets]
            print(f"| {model} | " + " | ".join(cells) + " |")
        print(f"| **{name}** | " + " | ".join(f"**{card.scores[n].psnr:.2f}** / {card.scores[n].ssim:.4f}"
                                               for n in sets) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
