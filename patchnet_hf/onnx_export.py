"""ONNX export of a saved PatchNet model, checked against PyTorch with onnxruntime.

The graph takes the processor's output, normalised patches `pixel_values (batch, num_patches, 3, P, P)`
float32, and keeps the per-image aggregation inside: it returns `liveness_score (batch,)` and
`probabilities (batch, K)` (mean over patches of the patch softmax). Both `batch` and `num_patches` are
dynamic. Cropping and normalising the patches stays outside the graph: a JSON file written beside the
`.onnx` (`<name>.preprocessing.json`) says how, with the labels, the aggregation and the calibrated threshold.

Exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript), the default in torch 2.x, is tried
first. On torch 2.14 it exported resnet18, test_resnet, efficientnet_b0, convnext_atto, regnetx_002 and
vit_tiny_patch16_224 backbones, with both score aggregations (the boolean live-class mask included), all
within 1e-6 of PyTorch, so no fallback was needed. The TorchScript exporter (`dynamo=False`, also checked to
work here) is the fallback for backbones whose ops torch.export cannot trace; the JSON records which
exporter was used.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from PIL import Image
from torch import nn

from . import __version__
from .image_processing_patchnet import PatchNetImageProcessor
from .inference import load_model_and_processor
from .modeling_patchnet import PatchNetForImageClassification

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
PARITY_ATOL = 1e-4
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("liveness_score", "probabilities")


class OnnxParityError(RuntimeError):
    """The exported graph disagrees with PyTorch by more than the tolerance."""


@dataclass(frozen=True)
class OnnxExport:
    """Where the export went and how closely it matches PyTorch."""

    onnx_path: Path
    metadata_path: Path
    max_abs_diff: float
    exporter: str


class _ScoringGraph(nn.Module):
    """The model as the ONNX graph sees it: patches -> (liveness score, class probabilities)."""

    def __init__(self, model: PatchNetForImageClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, N, 3, P, P)` -> `liveness_score (B,)`, `probabilities (B, K)`."""
        output = self.model(pixel_values)
        # For 5-D input the logits are the log of the mean patch probabilities: softmax gives them back.
        return output.liveness_score, output.logits.softmax(-1)


def _export(graph: _ScoringGraph, example: torch.Tensor, path: Path, opset: int) -> str:
    """Export with the dynamo exporter, else with the TorchScript one; returns which one worked."""
    names = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset)
    try:
        batch, patches = torch.export.Dim("batch"), torch.export.Dim("num_patches")
        torch.onnx.export(
            graph, (example,), path, dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={INPUT_NAME: {0: batch, 1: patches}}, **names,
        )
        return "dynamo"
    except Exception as error:  # torch.export raises many unrelated types for untraceable ops
        logger.warning("dynamo ONNX export failed (%s: %s); retrying with dynamo=False.",
                       type(error).__name__, error)
    dynamic_axes = {INPUT_NAME: {0: "batch", 1: "num_patches"}, OUTPUT_NAMES[0]: {0: "batch"},
                    OUTPUT_NAMES[1]: {0: "batch"}}
    torch.onnx.export(graph, (example,), path, dynamo=False, dynamic_axes=dynamic_axes, **names)
    return "torchscript"


def parity_inputs(processor: PatchNetImageProcessor, seed: int = 0) -> list[torch.Tensor]:
    """Real processor outputs for checking an export: three generated images of different sizes (noise, a
    smooth gradient, a grayscale image smaller than a patch) as a batch of 3, and the first alone as a batch
    of 1, so that the dynamic batch is exercised on sizes the export was not traced with."""
    rng = np.random.default_rng(seed)
    side = processor.patch_size
    noise = rng.integers(0, 256, (side * 2, side + side // 2, 3), dtype=np.uint8)
    across, down = np.meshgrid(np.linspace(0, 255, side * 3), np.linspace(255, 0, side * 2))
    gradient = np.dstack([across, down, np.full_like(across, 128)]).astype(np.uint8)
    small_gray = rng.integers(0, 256, (side // 2, side // 2 + 3), dtype=np.uint8)
    images = [Image.fromarray(noise), Image.fromarray(gradient), Image.fromarray(small_gray)]
    batch = processor(images, return_tensors="pt")["pixel_values"]
    return [batch, batch[:1]]


def max_abs_difference(
    model: PatchNetForImageClassification, onnx_path: str | os.PathLike, inputs: list[torch.Tensor]
) -> float:
    """Largest absolute difference between PyTorch and onnxruntime (CPU) over both outputs and all inputs."""
    session = onnxruntime.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    graph = _ScoringGraph(model).eval()
    difference = 0.0
    with torch.inference_mode():
        for pixel_values in inputs:
            expected = graph(pixel_values)
            actual = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixel_values.numpy()})
            for reference, value in zip(expected, actual, strict=True):
                difference = max(difference, float(np.abs(reference.numpy() - value).max()))
    return difference


def deployment_metadata(
    model: PatchNetForImageClassification, processor: PatchNetImageProcessor, **extra: Any
) -> dict[str, Any]:
    """What a deployer needs to feed the graph and read its outputs, as a JSON-ready dict."""
    config = model.config
    patch = processor.patch_size
    return {
        "format": "patchnet-hf-onnx",
        "patchnet_hf_version": __version__,
        "input_name": INPUT_NAME,
        "input_shape": ["batch", "num_patches", 3, patch, patch],
        "input_dtype": "float32",
        "output_names": list(OUTPUT_NAMES),
        "output_shapes": {OUTPUT_NAMES[0]: ["batch"], OUTPUT_NAMES[1]: ["batch", config.num_labels]},
        "patch_size": patch,
        "grid_size": processor.grid_size,
        "num_patches": processor.num_patches,
        "resize_to": processor.resize_to,
        "flip_test": processor.flip_test,
        "image_mean": list(processor.image_mean),
        "image_std": list(processor.image_std),
        "preprocessing": [
            "decode to 8-bit RGB, rotated upright as the EXIF orientation says (alpha composited over white)",
            "if resize_to is set: resize to resize_to x resize_to (bicubic)",
            "if the smaller side is below patch_size: upscale (bicubic) so that it equals patch_size",
            "crop grid_size x grid_size patches of patch_size at native resolution, row-major; along an axis "
            "of length L the offsets are round(i * (L - patch_size) / (grid_size - 1)) (round half to even),"
            " or (L - patch_size) // 2 when grid_size is 1",
            "if flip_test: append the horizontally mirrored patches after them",
            "pixels / 255, then (x - image_mean) / image_std per channel; layout (3, patch_size, patch_size)",
        ],
        "labels": {str(index): name for index, name in config.id2label.items()},
        "live_labels": list(config.live_labels),
        "live_label_ids": config.live_label_ids,
        "score_aggregation": config.score_aggregation,
        "threshold": float(config.threshold),
        "threshold_strategy": config.threshold_strategy,
        "decision": f"bona fide (live) iff {OUTPUT_NAMES[0]} >= threshold, else attack (spoof)",
        "backbone": config.backbone,
        **extra,
    }


def export_onnx(
    model_dir: str | os.PathLike,
    output_path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    atol: float = PARITY_ATOL,
) -> OnnxExport:
    """Export a saved model (folder or Hub id) to ONNX, check it against PyTorch, write the deployer JSON.

    Args:
        model_dir: what `save_pretrained` wrote (model and image processor).
        output_path: the `.onnx` file; `<stem>.preprocessing.json` is written beside it.
        opset: ONNX opset version.
        atol: largest absolute difference allowed between onnxruntime and PyTorch (fp32), on real processor
            outputs (`parity_inputs`).
    Raises: `OnnxParityError` (the files are kept for inspection) when the difference exceeds `atol`.
    """
    model, processor = load_model_and_processor(model_dir)
    model = model.float().cpu().eval()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # Tracing needs only shapes; 2 images x 3 patches keeps both dynamic dimensions away from the 0/1 sizes
    # that torch.export specialises on, and from each other.
    example = torch.zeros(2, 3, 3, processor.patch_size, processor.patch_size)
    exporter = _export(_ScoringGraph(model).eval(), example, output_path, opset)
    difference = max_abs_difference(model, output_path, parity_inputs(processor))
    metadata = deployment_metadata(
        model, processor, onnx_file=output_path.name, opset=opset, exporter=exporter,
        parity_max_abs_diff=difference, source_model=os.fspath(model_dir),
    )
    metadata_path = output_path.with_name(f"{output_path.stem}.preprocessing.json")
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    if not difference < atol:
        raise OnnxParityError(
            f"{output_path}: onnxruntime and PyTorch differ by up to {difference:.3g} (tolerance {atol:g})."
        )
    return OnnxExport(output_path, metadata_path, difference, exporter)


__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "OnnxExport",
    "OnnxParityError",
    "deployment_metadata",
    "export_onnx",
    "max_abs_difference",
    "parity_inputs",
]
