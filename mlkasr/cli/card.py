"""``mlkasr card``: a model's card for another catalogue (OpenModelDB), made from its weights and mlkasr card."""

from __future__ import annotations

import argparse

HELP = "write a model's OpenModelDB card (JSON); with --shipped, the cards of every shipped model"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="a shipped model name (man-tiny_x4, ...) or a weights file (its mlkasr card NAME.json "
                             "beside it, when there is one, gives the training facts)")
    parser.add_argument("--shipped", action="store_true",
                        help="every shipped model instead of MODEL: writes OUTPUT/<id>.json per model and "
                             "OUTPUT/architecture.json (the entry OpenModelDB's architecture list needs)")
    parser.add_argument("--format", default="openmodeldb", choices=("openmodeldb",),
                        help="the card's format: OpenModelDB's data/models/<id>.json (default)")
    parser.add_argument("--output", "-o", metavar="PATH",
                        help="the JSON file to write (a folder with --shipped); default: print the card")
    parser.add_argument("--url-base", metavar="URL",
                        help="where the files can be downloaded: each resource gets URL/<file name> (OpenModelDB "
                             "needs a URL per file; default: none listed)")
    parser.add_argument("--onnx", metavar="FILE", help="an exported ONNX file (mlkasr export) to list as well")
    parser.add_argument("--author", default=None, metavar="ID", help="OpenModelDB user id (default: mlkasr)")
    parser.add_argument("--license", default=None, metavar="SPDX", help="SPDX license id (default: Apache-2.0)")
    parser.add_argument("--date", default=None, metavar="YYYY-MM-DD",
                        help="publication date (default: that of the card at OUTPUT when its weights are the same, "
                             "else today)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import MlkasrError
    from ..integrations import openmodeldb

    options = {"url_base": args.url_base, "date": args.date,
               "author": args.author or openmodeldb.DEFAULT_AUTHOR,
               "license": args.license or openmodeldb.DEFAULT_LICENSE}
    if args.shipped:
        if args.model is not None or args.onnx is not None:
            raise MlkasrError("--shipped makes the cards of the shipped models: give no MODEL and no --onnx")
        if args.output is None:
            raise MlkasrError("--shipped needs --output FOLDER (one JSON file per model)")
        for path in openmodeldb.write_shipped_cards(args.output, **options):
            print(f"wrote {path}")
        return 0
    if args.model is None:
        raise MlkasrError("give a MODEL (a shipped model name or a weights file), or --shipped")
    output = None if args.output is None else Path(args.output)
    previous = openmodeldb.read_card(output) if output is not None and output.is_file() else None
    card = openmodeldb.openmodeldb_card(args.model, onnx=args.onnx, previous=previous, **options)
    if output is None:
        print(card.to_json())
    else:
        print(f"wrote {openmodeldb.write_card(card, output)} (OpenModelDB id {card.model_id})")
    return 0
