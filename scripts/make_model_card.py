#!/usr/bin/env python
"""Turn a finished training run into a shipped model: copy its EMA weights into mlkasr/weights/ and write the card.

    python scripts/make_model_card.py --run-dir runs/zoo-man-tiny_x4 --name man-tiny_x4 \
        --config configs/zoo/man-tiny_x4.yaml --threads 1 \
        --set Set5=datasets/samples/Set5 --set Set14=../shared/data/benchmark/Set14 --set B100=../shared/data/benchmark/B100

The card records the training recipe (read from the run's resolved config.yaml), the wall time (from the
time-stamped train.log, summed over resumed segments) and the PSNR/SSIM measured here with `mlkasr eval`'s code.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from datetime import datetime
from pathlib import Path

import torch
import yaml

import mlkasr
from mlkasr.evaluation import evaluate, load_benchmark_set
from mlkasr.evaluation.degrade import parse_degradation
from mlkasr.inference import Upscaler
from mlkasr.inference.auto import cpu_name
from mlkasr.weights import WEIGHTS_DIR, ModelCard, Score

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")


def wall_time(log: Path) -> float:
    """Seconds from each start line ("... on cpu | ...") to the last line of that segment, summed."""
    total, start, last = 0.0, None, None
    for line in log.read_text(encoding="utf-8").splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        if " parameters) on " in m.group(2):  # a (re)start of the run
            if start is not None:
                total += (last - start).total_seconds()
            start = stamp
        last = stamp
    if start is not None:
        total += (last - start).total_seconds()
    return total


def current_config(run_dir: Path) -> dict:
    """The run's config as it ended: config.yaml (the original) with config_changes.yaml's accepted changes applied."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    changes = run_dir / "config_changes.yaml"
    for record in (yaml.safe_load(changes.read_text()) or []) if changes.is_file() else []:
        for dotted, change in record["changes"].items():
            *parents, leaf = dotted.split(".")
            node = config
            for key in parents:
                node = node[key]
            node[leaf] = change["new"]
    return config


def final_weights(run_dir: Path):
    """The network (not the EMA) of the run's newest checkpoint."""
    from mlkasr.models.zoo import spec_from_dict
    from mlkasr.training import load_checkpoint

    newest = sorted((run_dir / "checkpoints").glob("iter_*.pth"))[-1]
    state = load_checkpoint(newest)
    model = mlkasr.models.MAN(spec_from_dict(state["spec"], source=newest))
    model.load_state_dict(state["model"])
    return model.eval()


def degraded_scores(upscaler: Upscaler, args: argparse.Namespace) -> dict[str, dict[str, Score]]:
    result: dict[str, dict[str, Score]] = {}
    for spec in args.degrade:
        degradation = parse_degradation(spec)
        for item in args.set:
            name, folder = item.split("=", 1)
            sets = [load_benchmark_set(folder, upscaler.scale, name=name)]
            r = evaluate(upscaler, sets, degradation=degradation)[name]
            result.setdefault(spec, {})[name] = Score(round(r.psnr, 4), round(r.ssim, 5))
            print(f"{args.name} {name} --degrade {spec}: {r.psnr:.3f} dB / {r.ssim:.4f}")
    return result


def rescore(args: argparse.Namespace) -> int:
    card_path = WEIGHTS_DIR / f"{args.name}.json"
    card = ModelCard.from_json(card_path)
    scores = degraded_scores(Upscaler(mlkasr.load_model(args.name)), args)
    card = dataclasses.replace(card, degraded_scores={**card.degraded_scores, **scores})
    card_path.write_text(card.to_json(), encoding="utf-8")
    print(f"updated {card_path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--name", required=True, help="shipped name, e.g. man-tiny_x4")
    parser.add_argument("--config", help="the config file that made the run (repo-relative)")
    parser.add_argument("--threads", type=int, help="intra-op threads the run used")
    parser.add_argument("--training-data", default="T91 + BSD200 (291 images)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=DIR", help="benchmark set to score")
    parser.add_argument("--notes", default="", help="anything about the run the card's fields do not say")
    parser.add_argument("--degrade", action="append", default=[], metavar="SPEC",
                        help="also score every --set with `mlkasr eval --degrade SPEC` (repeatable)")
    parser.add_argument("--rescore", action="store_true",
                        help="keep the shipped model NAME and its card; only (re)measure its --degrade scores")
    parser.add_argument("--final-weights", action="store_true",
                        help="ship the run's final weights (its last checkpoint's model) instead of its EMA export")
    args = parser.parse_args()

    if args.rescore:
        return rescore(args)
    if args.run_dir is None or args.config is None or args.threads is None:
        parser.error("--run-dir, --config and --threads are required (except with --rescore)")
    config = current_config(args.run_dir)
    model = final_weights(args.run_dir) if args.final_weights else mlkasr.load_model(args.run_dir / "model.safetensors")
    upscaler = Upscaler(model)
    scores = {}
    for item in args.set:
        name, folder = item.split("=", 1)
        result = evaluate(upscaler, [load_benchmark_set(folder, model.scale, name=name)])[name]
        scores[name] = Score(round(result.psnr, 4), round(result.ssim, 5))
        print(f"{args.name} {name}: {result.psnr:.3f} dB / {result.ssim:.4f}")
    seconds = wall_time(args.run_dir / "train.log")
    card = ModelCard(
        name=args.name,
        variant=model.spec.name,
        scale=model.scale,
        training_data=args.training_data,
        config=args.config,
        iterations=config["train"]["iterations"],
        batch_size=config["train"]["batch_size"],
        patch_size=config["data"]["train"]["patch_size"],
        hardware=f"{cpu_name()}, {args.threads} thread{'s' if args.threads > 1 else ''}, torch {torch.__version__}",
        wall_time=f"{seconds / 60:.0f} min",
        initialised_from=config["model"].get("init_weights"),
        scores=scores,
        notes=args.notes,
        degraded_scores=degraded_scores(upscaler, args),
    )
    WEIGHTS_DIR.mkdir(exist_ok=True)
    mlkasr.save_model(model, WEIGHTS_DIR / f"{args.name}.safetensors")
    (WEIGHTS_DIR / f"{args.name}.json").write_text(card.to_json(), encoding="utf-8")
    print(f"wrote {WEIGHTS_DIR / args.name}.safetensors and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
