"""Training throughput: the full loop of `patchnet_hf.training.train` (data loading, two views, DDP-ready
forward, backward, clipping, optimizer and schedule) against the bare model forward/backward/step on
ready-made tensors of the same batch. Prints samples per second of both and the loop's overhead.

    python benchmarks/bench_train.py [--backbone resnet18] [--patch-size 160] [--batch-size 16] [--steps 30]
        [--mixed-precision no|bf16]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification  # noqa: E402
from patchnet_hf.data.demo import make_demo_dataset  # noqa: E402
from patchnet_hf.training import train  # noqa: E402
from patchnet_hf.training_config import load_config  # noqa: E402

WARMUP_STEPS = 5


def loop_throughput(args: argparse.Namespace, workdir: Path) -> float:
    data = workdir / "data"
    make_demo_dataset(data, num_images=max(240, 2 * args.batch_size * 4), seed=0)
    overrides = [
        f"model.backbone={args.backbone}", f"model.patch_size={args.patch_size}", "model.embedding_dim=512",
        f"data.datasets=[{{root: {data}}}]", f"training.output_dir={workdir / 'run'}",
        f"training.batch_size={args.batch_size}", f"training.max_steps={args.steps}", "training.log_every_steps=1",
        f"training.checkpoint_every_steps={args.steps}", "training.report_to=none",
        f"training.mixed_precision={args.mixed_precision}", "training.eval_every_steps=100000",
        f"data.num_workers={args.num_workers}",
    ]
    train(load_config(None, overrides))
    logged = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").open()]
    rates = [entry["train/samples_per_second"] for entry in logged
             if "train/samples_per_second" in entry and entry["step"] > WARMUP_STEPS]
    return len(rates) / sum(1.0 / rate for rate in rates)  # harmonic mean = total samples / total time


def bare_model_throughput(args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    config = PatchNetConfig(backbone=args.backbone, patch_size=args.patch_size, embedding_dim=512,
                            id2label={0: "print", 1: "print_glossy", 2: "replay", 3: "live"}, live_labels=["live"])
    model = PatchNetForImageClassification(config).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    views = torch.randn(args.batch_size, 2, 3, args.patch_size, args.patch_size)
    labels = torch.randint(0, 4, (args.batch_size,))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16")
    for step in range(WARMUP_STEPS + args.steps):
        if step == WARMUP_STEPS:
            start = time.perf_counter()
        with autocast:
            loss = model(views, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad()
    return args.batch_size * args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--patch-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.backbone}, patch {args.patch_size}, "
          f"batch {args.batch_size} images x 2 views, {args.steps} timed steps, precision {args.mixed_precision}")
    bare = bare_model_throughput(args)
    print(f"bare model forward/backward/step: {bare:8.2f} images/s")
    with tempfile.TemporaryDirectory() as workdir:
        loop = loop_throughput(args, Path(workdir))
    print(f"full training loop:               {loop:8.2f} images/s")
    print(f"loop overhead: {100 * (bare / loop - 1):.1f}% of the bare step time (target < 10%)")


if __name__ == "__main__":
    main()
