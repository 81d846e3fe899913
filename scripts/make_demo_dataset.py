"""Write the built-in synthetic demo dataset in the CSV layout (no download needed).

python scripts/make_demo_dataset.py --output data/demo [--num-images 600] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from patchnet_hf.cli import positive_int
from patchnet_hf.data import make_demo_dataset, summarize


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", required=True, help="folder to write images/ and train/val/test.csv into")
    parser.add_argument("--num-images", type=positive_int, default=600, help="images in all splits (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same files (default 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    table = make_demo_dataset(args.output, num_images=args.num_images, seed=args.seed)
    print(f"Wrote {len(table)} synthetic images to {args.output}:")
    print(summarize(table))


if __name__ == "__main__":
    main()
