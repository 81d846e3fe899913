"""Evaluate a PatchNet model on one or more test sets with the field's metrics.

    accelerate launch scripts/evaluate.py --model DIR_OR_HUB_ID --data TEST [--data TEST2 ...] [--dev DEV]
        --output DIR

A test set is a CSV-layout folder (its test.csv), a CSV file, a parquet file, a `save_to_disk` folder or a
Hub dataset id. With --dev, the threshold is chosen on that development set (its val split; EER by default,
or --threshold-strategy apcer --target-apcer 0.05); otherwise the threshold stored in the model is used.
Writes report.json, report.md (table for papers and model cards), scores.csv and ROC / DET / histogram PNGs.
"""

import argparse
import json
import sys

from patchnet_hf.cli import positive_int, unit_interval
from patchnet_hf.evaluation import evaluate_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved model directory or Hub model id")
    parser.add_argument("--data", action="append", required=True, help="test set (repeat for several)")
    parser.add_argument("--dev", help="development set for the threshold (default: the model's stored threshold)")
    parser.add_argument("--output", required=True, help="folder for the report files")
    parser.add_argument("--threshold-strategy", choices=["eer", "apcer"], default="eer")
    parser.add_argument("--target-apcer", type=unit_interval, help="APCER target for --threshold-strategy apcer")
    parser.add_argument("--group-level", action="store_true", help="average scores per group (video) first")
    parser.add_argument("--split", default="test", help="split of the test sets (default test)")
    parser.add_argument("--dev-split", default="val", help="split of the development set (default val)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.threshold_strategy == "apcer") != (args.target_apcer is not None):
        parser.error("--target-apcer goes with --threshold-strategy apcer (and only with it)")
    if args.target_apcer is not None and args.dev is None:
        parser.error("--threshold-strategy apcer needs --dev")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        report = evaluate_model(
            args.model, args.data, args.output, dev_set=args.dev, threshold_strategy=args.threshold_strategy,
            target_apcer=args.target_apcer, group_level=args.group_level, batch_size=args.batch_size,
            num_workers=args.num_workers, split=args.split, dev_split=args.dev_split,
        )
    except (OSError, ValueError) as error:
        # Input problems (model or data set missing or unreadable, a set the metrics reject): the message names
        # the model, file or source.
        sys.exit(f"error: {error}")
    overall = report["reports"]["all"]
    print(report["threshold"]["description"])
    print(json.dumps({key: overall[key] for key in ("n_samples", "apcer", "bpcer", "acer", "hter", "eer", "auc")},
                     indent=2))
    return report


if __name__ == "__main__":
    main()
