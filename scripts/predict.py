#!/usr/bin/env python
"""Score face images and videos with a saved PatchNet model; write CSV or JSON.

    python scripts/predict.py --model runs/patchnet INPUT... --output scores.csv \
        [--threshold T] [--batch-size B] [--frames-per-video N] [--heatmap-dir DIR] [--device cpu]

INPUT: image or video files, folders (searched recursively) or quoted glob patterns ("faces/**/*.jpg").
Videos (.mp4, .avi, .mov, .mkv) are scored by frames sampled evenly; their score is the mean frame score.
The decision uses the model's calibrated threshold unless --threshold is given. Unreadable inputs are
listed with their error and do not stop the run. Exit status: 0, or 1 when some input failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from patchnet_hf.cli import positive_int, unit_interval
from patchnet_hf.inference import LivenessPredictor, Prediction, is_video, summarize, write_predictions


def _device(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image/video files, folders or globs")
    parser.add_argument("--model", required=True, help="saved model folder or Hugging Face Hub id")
    parser.add_argument("--output", required=True, type=Path, help="results file, .csv or .json")
    parser.add_argument("--threshold", type=unit_interval, help="decision threshold (default: the model's)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images or frames per forward pass")
    parser.add_argument("--frames-per-video", type=positive_int, default=8, help="frames sampled per video")
    parser.add_argument("--heatmap-dir", type=Path, help="also write a patch heatmap PNG per image here")
    parser.add_argument("--heatmap-grid", type=positive_int, default=8, help="heatmap patches per side")
    parser.add_argument("--device", type=_device, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    args = parser.parse_args(argv)
    if args.output.suffix.lower() not in (".csv", ".json"):
        parser.error(f"--output {args.output} must end in .csv or .json")
    return args


def write_heatmaps(
    predictor: LivenessPredictor, predictions: Sequence[Prediction], folder: Path, grid_size: int
) -> None:
    """One `<name>.heatmap.png` per scored image (videos and in-memory inputs are skipped)."""
    used: set[str] = set()
    for prediction in predictions:
        if prediction.error is not None or is_video(prediction.path):
            continue
        stem = Path(prediction.path).stem
        name, copy = f"{stem}.heatmap.png", 1
        while name in used:  # same file name in two folders
            copy += 1
            name = f"{stem}-{copy}.heatmap.png"
        used.add(name)
        predictor.save_heatmap(prediction.path, folder / name, grid_size=grid_size)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        predictor = LivenessPredictor.from_pretrained(args.model, device=args.device, threshold=args.threshold)
    except (OSError, ValueError) as error:  # no such folder or Hub id, missing weights, a broken config
        sys.exit(f"error: cannot load --model {args.model}: {error}")
    predictions = predictor.predict(
        args.inputs, batch_size=args.batch_size, frames_per_video=args.frames_per_video, progress=True
    )
    metadata = {
        "model": args.model,
        "threshold": predictor.threshold,
        "threshold_strategy": predictor.threshold_strategy,
        "score_aggregation": predictor.score_aggregation,
    }
    write_predictions(predictions, args.output, metadata)
    if args.heatmap_dir is not None:
        write_heatmaps(predictor, predictions, args.heatmap_dir, args.heatmap_grid)
    counts = summarize(predictions)
    print(
        f"{counts['total']} inputs: {counts['live']} live, {counts['spoof']} spoof, "
        f"{counts['failed']} failed "
        f"(threshold {predictor.threshold:g}, {predictor.threshold_strategy}; "
        f"{predictor.score_aggregation} aggregation) -> {args.output}"
    )
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
