#!/usr/bin/env python
"""Export a saved PatchNet model to ONNX and check it against PyTorch with onnxruntime.

    python scripts/export_onnx.py --model runs/patchnet --output patchnet.onnx [--opset 18]

Writes the `.onnx` (input `pixel_values (batch, num_patches, 3, P, P)`, outputs `liveness_score` and
`probabilities`) and `<name>.preprocessing.json` beside it for deployers. Fails if onnxruntime and PyTorch
differ by 1e-4 or more.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from patchnet_hf.onnx_export import DEFAULT_OPSET, PARITY_ATOL, OnnxParityError, export_onnx


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="saved model folder or Hugging Face Hub id")
    parser.add_argument("--output", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument("--atol", type=float, default=PARITY_ATOL, help="largest difference allowed vs torch")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = export_onnx(args.model, args.output, opset=args.opset, atol=args.atol)
    except OnnxParityError as error:
        sys.exit(f"error: {error} The files are kept for inspection.")
    except OSError as error:  # no such model folder or Hub id, missing weights, an unwritable output
        sys.exit(f"error: cannot export --model {args.model} to {args.output}: {error}")
    print(f"wrote {result.onnx_path} ({result.exporter} exporter, opset {args.opset})")
    print(f"wrote {result.metadata_path}")
    print(f"parity: max abs difference onnxruntime vs PyTorch = {result.max_abs_diff:.3g} (< {args.atol:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
