"""Data loading against training consumption: is the input pipeline the bottleneck?

Data: decoded two-view training samples per second (`TrainTransform`, patch 160) from a CSV-layout
dataset, through a `DataLoader` with the class-balanced sampler, for each `--num-workers` value. Model:
training samples per second of `PatchNetForImageClassification` with a resnet18 backbone (forward with the
loss, backward, SGD step) at the same batch size, on random inputs of the same shape. Without `--data`, the
demo data is generated into a temporary folder first.

Usage::

    python benchmarks/bench_data.py [--data DIR] [--num-images 400] [--batch-size 32] [--num-workers 0 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification, PatchNetImageProcessor
from patchnet_hf.data import (
    ClassBalancedSampler,
    TrainTransform,
    load_training_data,
    make_demo_dataset,
    patch_type_vocabulary,
)


def data_rate(
    data_dir: Path, patch_size: int, batch_size: int, num_workers: int, batches: int, repeats: int
) -> float:
    """Two-view samples per second from the loader: the best of `repeats` passes over `batches` batches,
    each after one warm-up batch (worker start-up excluded)."""
    train, _ = load_training_data([data_dir])
    id2label, _ = patch_type_vocabulary([train])
    label2id = {name: index for index, name in id2label.items()}
    transform = TrainTransform(PatchNetImageProcessor(patch_size=patch_size), label2id)
    sampler = ClassBalancedSampler.from_dataset(train, num_samples=batch_size * (batches + 1))
    dataset = transform.apply(train)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    best = 0.0
    for epoch in range(repeats):
        sampler.set_epoch(epoch)
        iterator = iter(loader)
        next(iterator)
        start, count = time.perf_counter(), 0
        for batch in iterator:
            count += batch["labels"].shape[0]
        best = max(best, count / (time.perf_counter() - start))
    return best


def model_rate(patch_size: int, batch_size: int, steps: int) -> float:
    """Training samples (two views each) per second of a resnet18 PatchNet: batch size over the median time
    of `steps` training steps, after one warm-up step."""
    torch.manual_seed(0)
    model = PatchNetForImageClassification(PatchNetConfig(backbone="resnet18", patch_size=patch_size)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    views = torch.randn(batch_size, 2, 3, patch_size, patch_size)
    labels = torch.randint(0, 2, (batch_size,))

    def step() -> float:
        start = time.perf_counter()
        model(views, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    step()
    return batch_size / statistics.median(step() for _ in range(steps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="CSV-layout dataset (default: generated demo data)")
    parser.add_argument("--num-images", type=int, default=400, help="demo images to generate without --data")
    parser.add_argument("--patch-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10, help="timed data batches per worker setting")
    parser.add_argument("--repeats", type=int, default=3, help="passes per worker setting; the best counts")
    parser.add_argument("--model-steps", type=int, default=5, help="timed training steps; the median counts")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data
        if data_dir is None:
            data_dir = Path(scratch) / "demo"
            make_demo_dataset(data_dir, num_images=args.num_images, progress=False)
        rates = {
            workers: data_rate(
                data_dir, args.patch_size, args.batch_size, workers, args.batches, args.repeats
            )
            for workers in args.num_workers
        }
    consumption = model_rate(args.patch_size, args.batch_size, args.model_steps)
    print(
        f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, patch {args.patch_size}, 2 views"
    )
    for workers, rate in rates.items():
        ratio = rate / consumption
        print(f"data, {workers} workers: {rate:8.1f} samples/s  ({ratio:5.1f}x the model's consumption)")
    print(f"resnet18 training: {consumption:8.1f} samples/s")


if __name__ == "__main__":
    main()
