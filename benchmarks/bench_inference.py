#!/usr/bin/env python
"""Inference speed on this machine's CPU: PyTorch eager vs onnxruntime, same model, same inputs.

    python benchmarks/bench_inference.py [--backbone resnet18] [--patch-size 160] [--threads N]

The model is PatchNet with a randomly initialised backbone (speed does not depend on the weights), saved and
exported with `export_onnx` as a user would. Measured:
- latency: one face per call (batch 1, its `grid_size**2` patches), median and best of the calls;
- throughput: `--batch` faces per call, in images per second;
- preprocessing: the image processor on one 640x480 image (the same for both engines).
Rows: PyTorch in NCHW and in channels-last memory format (what `LivenessPredictor` uses on CPU), onnxruntime
with `--threads` intra-op threads (default `torch.get_num_threads()`, as PyTorch), and onnxruntime with its
default session options, which shows what the thread setting is worth. Other processes on the machine slow
every row: the load average printed says whether the figures are trustworthy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification, PatchNetImageProcessor
from patchnet_hf.onnx_export import INPUT_NAME, export_onnx


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--patch-size", type=int, default=160)
    parser.add_argument("--grid-size", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="faces per call for the throughput test")
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--throughput-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    return parser.parse_args(argv)


def save_random_model(directory: Path, backbone: str, patch_size: int, grid_size: int) -> None:
    torch.manual_seed(0)
    config = PatchNetConfig(backbone=backbone, patch_size=patch_size, grid_size=grid_size)
    PatchNetForImageClassification(config).eval().save_pretrained(directory)
    PatchNetImageProcessor(patch_size=patch_size, grid_size=grid_size).save_pretrained(directory)


def seconds_per_call(function: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of `repeats` calls, after `warmup` untimed ones (allocator, thread pool start)."""
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return timings


def ort_session(path: Path, threads: int | None) -> onnxruntime.InferenceSession:
    """CPU session with every graph optimisation; `threads=None` keeps onnxruntime's default thread pool."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def report(name: str, latency: list[float], throughput: list[float], batch: int) -> str:
    """One table row: median and best latency (ms per face), throughput (faces per second)."""
    images_per_second = batch / statistics.median(throughput)
    median_ms, best_ms = statistics.median(latency) * 1e3, min(latency) * 1e3
    return f"{name:<42} {median_ms:9.1f} {best_ms:9.1f} {images_per_second:12.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # Other processes competing for the cores inflate every figure: the load average says how much.
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        model_dir, onnx_path = Path(workdir) / "model", Path(workdir) / "patchnet.onnx"
        save_random_model(model_dir, args.backbone, args.patch_size, args.grid_size)
        exported = export_onnx(model_dir, onnx_path)
        model = PatchNetForImageClassification.from_pretrained(model_dir).eval()
        processor = PatchNetImageProcessor.from_pretrained(model_dir)

        face = Image.fromarray(np.random.default_rng(0).integers(0, 256, (640, 480, 3), dtype=np.uint8))
        preprocessing = seconds_per_call(lambda: processor(face), args.latency_repeats)
        one = processor(face)["pixel_values"]
        many = one.expand(args.batch, *one.shape[1:]).contiguous()

        def measure(engine: Callable[[torch.Tensor], object]) -> tuple[list[float], list[float]]:
            latency = seconds_per_call(lambda: engine(one), args.latency_repeats)
            # No warm-up for the long batch calls: the latency runs have warmed the engine, and a first-call
            # allocation is negligible next to a call of several seconds.
            return latency, seconds_per_call(lambda: engine(many), args.throughput_repeats, warmup=0)

        def torch_engine(pixel_values: torch.Tensor) -> object:
            with torch.inference_mode():
                return model(pixel_values).liveness_score

        torch_threads = torch.get_num_threads()
        rows = [report(f"PyTorch eager ({torch_threads} threads, NCHW)", *measure(torch_engine), args.batch)]
        model.to(memory_format=torch.channels_last)  # what LivenessPredictor does on CPU
        name = f"PyTorch eager ({torch_threads} threads, channels_last)"
        rows.append(report(name, *measure(torch_engine), args.batch))
        for threads, name in ((args.threads, f"onnxruntime ({args.threads} threads)"),
                              (None, "onnxruntime (default options)")):
            session = ort_session(onnx_path, threads)
            timings = measure(lambda pixel_values, s=session: s.run(None, {INPUT_NAME: pixel_values.numpy()}))
            rows.append(report(name, *timings, args.batch))

    patches = one.shape[1]
    print(f"\n{args.backbone}, random init, {patches} patches of {args.patch_size} px per face; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(f"{os.cpu_count()} CPUs; load average before the run {load_before:.1f} (near 0 when idle)")
    print(f"ONNX ({exported.exporter} exporter) vs PyTorch: max abs difference {exported.max_abs_diff:.2g}")
    print(f"preprocessing (processor, one 480x640 image): {statistics.median(preprocessing) * 1e3:.1f} ms")
    print(f"{'engine':<42} {'ms/face':>9} {'best ms':>9} {'faces/s @' + str(args.batch):>12}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
