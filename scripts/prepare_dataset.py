"""Convert face anti-spoofing data to the CSV layout, or the CSV layout to a Hugging Face dataset.

A folder tree of images and videos -> the CSV layout (--format csv, the default for such input):

    python scripts/prepare_dataset.py --input raw/ --output my_dataset/ [--patch-types] [--face-boxes]

  Labels come from folder names, matched as whole path components (--spoof-names, --live-names); the
  split keeps each group (person, session, video) in one split; videos give --frames-per-video frames.

The CSV layout (a folder with train.csv / val.csv / test.csv) -> a self-contained dataset, images embedded:

    python scripts/prepare_dataset.py --input my_dataset/ --output my_dataset_hf/ --format disk
    python scripts/prepare_dataset.py --input my_dataset/ --output my_dataset_parquet/ --format parquet
    python scripts/prepare_dataset.py --input my_dataset/ --output user/my-dataset --format hub [--private]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from patchnet_hf.cli import positive_float, positive_int
from patchnet_hf.data import (
    CorruptImageError,
    DatasetFormatError,
    export_dataset,
    folder_to_csv_layout,
    is_csv_layout,
    load_csv_layout,
    summarize,
)
from patchnet_hf.data.prepare import DEFAULT_LIVE_NAMES, DEFAULT_SPOOF_NAMES, splits_table


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression: {error}") from None
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input", required=True, help="a folder tree of images/videos, or a CSV-layout folder"
    )
    parser.add_argument(
        "--output", required=True, help="output folder, or the repository id for --format hub"
    )
    parser.add_argument(
        "--format",
        choices=["csv", "disk", "parquet", "hub"],
        help="csv: the CSV layout (default for a folder tree); disk: save_to_disk (default for CSV-layout "
        "input); parquet: one file per split; hub: push_to_hub",
    )
    parser.add_argument(
        "--skip-corrupt", action="store_true", help="drop undecodable images instead of failing"
    )

    tree = parser.add_argument_group("folder tree -> CSV layout")
    tree.add_argument(
        "--spoof-names",
        nargs="+",
        default=list(DEFAULT_SPOOF_NAMES),
        metavar="NAME",
        help="folder names of attacks (default: %(default)s)",
    )
    tree.add_argument(
        "--live-names",
        nargs="+",
        default=list(DEFAULT_LIVE_NAMES),
        metavar="NAME",
        help="folder names of bona fide data (default: %(default)s)",
    )
    tree.add_argument(
        "--patch-types",
        action="store_true",
        help="write a patch_type column: the name of the deepest label folder of each file",
    )
    tree.add_argument(
        "--group-regex",
        type=_regex,
        help="regex on the relative path whose first group (or match) is the "
        "group kept in one split; default: the path's non-label folders, else the file",
    )
    tree.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of the groups per split (default: %(default)s)",
    )
    tree.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    tree.add_argument("--frames-per-video", type=positive_int, default=8, help="frames sampled per video (default 8)")
    tree.add_argument(
        "--face-boxes",
        action="store_true",
        help="crop faces with the box file beside each image (<stem><box-suffix>)",
    )
    tree.add_argument("--box-suffix", default=".txt", help="box file name ending (default .txt)")
    tree.add_argument(
        "--box-format", choices=["xywh", "xyxy"], default="xywh", help="box numbers (default xywh)"
    )
    tree.add_argument("--box-scale", type=positive_float, default=1.3, help="box expansion factor (default 1.3)")
    tree.add_argument(
        "--overwrite", action="store_true", help="allow an output folder that holds CSVs already"
    )

    export = parser.add_argument_group("CSV layout -> Hugging Face dataset")
    export.add_argument("--images-root", help="folder the CSV paths are relative to (default: see README)")
    export.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args(argv)
    if any(fraction < 0 for fraction in args.split) or not sum(args.split) > 0:
        parser.error(f"--split {' '.join(map(str, args.split))}: fractions must be non-negative, not all 0")
    return args


def convert_folder_tree(args: argparse.Namespace) -> None:
    if args.format not in (None, "csv"):
        sys.exit(
            f"{args.input} is a folder tree: convert it with --format csv first, then export the CSV layout."
        )
    table = folder_to_csv_layout(
        args.input,
        args.output,
        spoof_names=args.spoof_names,
        live_names=args.live_names,
        fine_grained=args.patch_types,
        group_regex=args.group_regex,
        fractions=args.split,
        seed=args.seed,
        frames_per_video=args.frames_per_video,
        face_boxes=args.face_boxes,
        box_suffix=args.box_suffix,
        box_format=args.box_format,
        box_scale=args.box_scale,
        skip_corrupt=args.skip_corrupt,
        overwrite=args.overwrite,
    )
    print(f"Wrote the CSV layout to {args.output}:")
    print(summarize(table))


def export_csv_layout(args: argparse.Namespace) -> None:
    fmt = args.format or "disk"
    if fmt == "csv":
        sys.exit(f"{args.input} is already in the CSV layout; choose --format disk, parquet or hub.")
    splits = load_csv_layout(args.input, images_root=args.images_root, skip_corrupt=args.skip_corrupt)
    export_dataset(splits, args.output, fmt, private=args.private)
    print(f"Exported {args.input} ({fmt}) to {args.output}:")
    print(summarize(splits_table(splits)))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if is_csv_layout(args.input):
            export_csv_layout(args)
        else:
            convert_folder_tree(args)
    except (DatasetFormatError, CorruptImageError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
