"""The Accelerate training loop of PatchNet: one CPU, one GPU, many GPUs or several machines.

The `Accelerator` owns devices, mixed precision, gradient accumulation and processes; the forward always goes
through the prepared (DDP-wrapped) model. Read `train` top to bottom.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .configuration_patchnet import PatchNetConfig
from .data.loading import DatasetSpec, binary_patch_types, load_training_data, patch_type_vocabulary
from .data.sampler import ClassBalancedSampler
from .data.transforms import EvalTransform, TrainTransform
from .evaluation import ALL_SOURCES, ScoredSamples, collect_scores, reports_per_source, without_duplicate_total
from .hub import HubPushError, build_model_card, push_to_hub
from .image_processing_patchnet import IMAGENET_MEAN, IMAGENET_STD, PatchNetImageProcessor
from .metrics import MetricsReport, Threshold, choose_threshold
from .modeling_patchnet import PatchNetForImageClassification
from .training_config import HIGHER_IS_BETTER, ConfigError, TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
BEST_MODEL_DIR = "best_model"
FINAL_MODEL_DIR = "final_model"

OPTIMIZERS = {
    "sgd": lambda params, t: torch.optim.SGD(params, lr=t.learning_rate, momentum=t.momentum,
                                             weight_decay=t.weight_decay),
    "adamw": lambda params, t: torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay),
}


@dataclass
class TrainingProgress:
    """Where the loop stands; saved in every checkpoint so that a resumed run continues mid-epoch."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_value: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None
    threshold: float | None = None
    threshold_strategy: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


class Throughput:
    """Training samples per second since the last reading, pauses for evaluation and checkpoints excluded."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.start, self.samples = time.perf_counter(), 0

    def add(self, samples: int) -> None:
        self.samples += samples

    def rate(self) -> float:
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        self.restart()
        return rate


def build_model_config(config: TrainConfig, id2label: dict[int, str], live_labels: list[str]) -> PatchNetConfig:
    section = config.model
    return PatchNetConfig(
        backbone=section.backbone, backbone_kwargs=section.backbone_kwargs, embedding_dim=section.embedding_dim,
        id2label=id2label, live_labels=live_labels, scale=section.scale, margin_live=section.margin_live,
        margin_spoof=section.margin_spoof, classification_weight=section.classification_weight,
        similarity_weight=section.similarity_weight, patch_size=section.patch_size, grid_size=section.grid_size,
        score_aggregation=section.score_aggregation,
    )


def build_image_processor(config: TrainConfig) -> PatchNetImageProcessor:
    """Normalised like the backbone's pretraining (timm's pretrained config), ImageNet's otherwise."""
    pretrained = timm.get_pretrained_cfg(config.model.backbone)
    mean, std = (pretrained.mean, pretrained.std) if pretrained is not None else (IMAGENET_MEAN, IMAGENET_STD)
    return PatchNetImageProcessor(patch_size=config.model.patch_size, grid_size=config.model.grid_size,
                                  resize_to=config.model.resize_to, image_mean=mean, image_std=std)


def checkpoint_index(path: Path) -> int:
    match = re.fullmatch(r"checkpoint_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints that were written to the end (a run killed while saving leaves one without the marker)."""
    directory = output_dir / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if checkpoint_index(path) >= 0 and (path / COMPLETE_MARKER).exists()]
    return sorted(found, key=checkpoint_index)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        found = complete_checkpoints(output_dir)
        if not found:
            logger.warning("--resume latest: no complete checkpoint in %s, starting from scratch.", output_dir)
            return None
        return found[-1]
    path = Path(resume)
    if not (path / COMPLETE_MARKER).exists():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint directory (no {COMPLETE_MARKER}).")
    return path


def discard_incomplete_checkpoints(output_dir: Path) -> None:
    """Delete the checkpoints a killed run left half-written (they would also block their names)."""
    for path in (output_dir / CHECKPOINT_DIR).iterdir():
        if checkpoint_index(path) >= 0 and not (path / COMPLETE_MARKER).exists():
            shutil.rmtree(path)


def flat_scalars(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> `{"training/learning_rate": 0.01, ...}`, lists and None as text (trackers reject them)."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_scalars(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class MetricsLog:
    """Every logged metric: to Accelerate's trackers and, on the main process, to a JSON-lines file."""

    def __init__(self, accelerator: Accelerator, path: Path) -> None:
        self.accelerator = accelerator
        self.path = path

    def __call__(self, values: dict[str, float], step: int) -> None:
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")


def report_scalars(reports: dict[str, MetricsReport], prefix: str) -> dict[str, float]:
    keys = ("apcer", "bpcer", "acer", "hter", "eer", "auc", "threshold")
    return {f"{prefix}/{source}/{key}": float(getattr(report, key)) for source, report in reports.items()
            for key in keys}


def calibrate_threshold(scored: ScoredSamples, config: TrainConfig) -> Threshold:
    training = config.training
    if training.threshold_strategy == "fixed":
        return choose_threshold("fixed")
    return choose_threshold(training.threshold_strategy, scored.scores, scored.binary_labels,
                            target_apcer=training.target_apcer,
                            dev_groups=scored.group if training.group_level else None)


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


def save_model(model: torch.nn.Module, processor: PatchNetImageProcessor, directory: Path,
               threshold: Threshold | None, accelerator: Accelerator) -> None:
    """`save_pretrained` of model and image processor, the calibrated threshold stored in the config."""
    unwrapped = accelerator.unwrap_model(model)
    if threshold is not None:
        unwrapped.config.threshold = float(min(max(threshold.value, 0.0), 1.0))
        unwrapped.config.threshold_strategy = threshold.strategy
    unwrapped.save_pretrained(directory, is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save)
    if accelerator.is_main_process:
        processor.save_pretrained(directory)


def train(config: TrainConfig, resume: str | None = None) -> dict[str, Any]:
    """Train PatchNet as `config` says; returns a summary (steps, best metric, paths)."""
    training = config.training
    output_dir = Path(training.output_dir)
    accelerator = Accelerator(
        mixed_precision=training.mixed_precision,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        log_with=None if training.report_to == "none" else training.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs"),
                                            automatic_checkpoint_naming=True,
                                            total_limit=training.keep_checkpoints),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(training.seed)
    checkpoint = resolve_resume(resume, output_dir)
    if checkpoint is None and complete_checkpoints(output_dir):
        raise FileExistsError(f"{output_dir} holds checkpoints of an earlier run: pass --resume latest to continue "
                              "it, or choose another --output_dir.")

    # Data: one concatenated training set, one validation set per source.
    specs = [DatasetSpec(root=entry.root, name=entry.name, images_root=entry.images_root,
                         csv_files={"train": entry.train_csv, "val": entry.val_csv})
             for entry in config.data.datasets]
    train_set, val_sets = load_training_data(specs)
    if config.model.fine_grained:
        id2label, live_labels = patch_type_vocabulary([train_set, *val_sets.values()])
    else:
        id2label, live_labels = {0: "spoof", 1: "live"}, ["live"]
        train_set = binary_patch_types(train_set)
        val_sets = {name: binary_patch_types(dataset) for name, dataset in val_sets.items()}

    # Model and preprocessing.
    model = PatchNetForImageClassification(build_model_config(config, id2label, live_labels))
    if config.model.pretrained_backbone:
        model.load_pretrained_backbone(config.model.backbone_weights)
    processor = build_image_processor(config)
    label2id = model.config.label2id

    train_transform = TrainTransform(processor, label2id, seed=training.seed, skip_corrupt=config.data.skip_corrupt)
    sampler = (ClassBalancedSampler.from_dataset(train_set, by="label", seed=training.seed)
               if config.data.balance_classes else None)
    train_loader = DataLoader(train_transform.apply(train_set), batch_size=training.batch_size,
                              shuffle=sampler is None, sampler=sampler, drop_last=True,
                              num_workers=config.data.num_workers)
    val_loaders = {name: DataLoader(EvalTransform(processor, label2id).apply(dataset),
                                    batch_size=training.eval_batch_size, num_workers=config.data.num_workers)
                   for name, dataset in val_sets.items()}

    train_loader = accelerator.prepare(train_loader)
    if len(train_loader) == 0:  # drop_last leaves no batch: the loop would never advance
        raise ConfigError(f"training.batch_size: {training.batch_size} images x {accelerator.num_processes} "
                          f"process(es) is more than the {len(train_set)} training images.")
    # Inputs are valid: from here on the run writes into output_dir.
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    steps_per_epoch = max(1, len(train_loader) // training.gradient_accumulation_steps)
    total_steps = training.max_steps if training.max_steps is not None else training.epochs * steps_per_epoch
    optimizer = OPTIMIZERS[training.optimizer](model.parameters(), training)
    # The prepared scheduler steps once per process for every optimizer step (accelerate's convention).
    scheduler = get_scheduler(training.lr_scheduler, optimizer,
                              num_warmup_steps=training.warmup_steps * accelerator.num_processes,
                              num_training_steps=total_steps * accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    val_loaders = {name: accelerator.prepare(loader) for name, loader in val_loaders.items()}
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress)

    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        if accelerator.is_main_process:
            discard_incomplete_checkpoints(output_dir)
        accelerator.wait_for_everyone()
        # load_state does not restore the automatic-naming counter (HF-NOTES).
        accelerator.project_configuration.iteration = checkpoint_index(complete_checkpoints(output_dir)[-1]) + 1
        accelerator.print(f"Resumed from {checkpoint} at step {progress.step} (epoch {progress.epoch}).")

    if training.report_to != "none":
        accelerator.init_trackers("patchnet", config=flat_scalars(config.to_dict()))
    log = MetricsLog(accelerator, output_dir / "metrics.jsonl")

    def evaluate() -> None:
        scored = ScoredSamples.concatenate(
            collect_scores(model, loader, accelerator, f"validating {name}") for name, loader in val_loaders.items()
        )
        progress.last_eval_step = progress.step
        threshold = calibrate_threshold(scored, config)
        aggregation = config.model.score_aggregation
        calibrated = reports_per_source(scored, threshold, training.group_level, aggregation)
        at_half = reports_per_source(scored, 0.5, training.group_level, aggregation)
        log({**report_scalars(calibrated, "val"), **report_scalars(at_half, "val_at_0.5")}, progress.step)
        value = float(getattr(calibrated[ALL_SOURCES], training.best_metric))
        accelerator.print(f"step {progress.step}: validation {training.best_metric} = {value:.4f} "
                          f"at threshold {threshold.value:.4f} ({threshold.strategy})")
        if is_better(value, progress.best_value, training.best_metric):
            progress.best_value, progress.best_step = value, progress.step
            progress.threshold, progress.threshold_strategy = threshold.value, threshold.strategy
            save_best(calibrated, threshold)
        model.train()

    def save_best(reports: dict[str, MetricsReport], threshold: Threshold) -> None:
        best_dir = output_dir / BEST_MODEL_DIR
        save_model(model, processor, best_dir, threshold, accelerator)
        if accelerator.is_main_process:
            summary = {"step": progress.step, "metric": training.best_metric, "value": progress.best_value,
                       "reports": {name: report.to_dict() for name, report in reports.items()}}
            (best_dir / "validation_metrics.json").write_text(json.dumps(summary, indent=2))
            write_model_card(best_dir, config, val_sets, reports)
            if config.hub.push_to_hub and config.hub.push_on_best:
                push_best(best_dir, config, accelerator)
        accelerator.wait_for_everyone()

    def save_checkpoint() -> None:
        accelerator.save_state()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            newest = max((output_dir / CHECKPOINT_DIR).glob("checkpoint_*"), key=checkpoint_index)
            (newest / COMPLETE_MARKER).touch()
        accelerator.wait_for_everyone()

    # The loop: epochs of optimizer steps; a resumed run skips the batches its epoch already consumed.
    model.train()
    bar = tqdm(total=total_steps, initial=progress.step, desc="training", disable=not accelerator.is_local_main_process)
    running_loss, running_count = torch.zeros((), device=accelerator.device), 0
    throughput = Throughput()
    while progress.step < total_steps:
        train_loader.set_epoch(progress.epoch)
        train_transform.set_epoch(progress.epoch)
        batches = (accelerator.skip_first_batches(train_loader, progress.batches_in_epoch)
                   if progress.batches_in_epoch else train_loader)
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and training.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), training.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            progress.batches_in_epoch += 1
            throughput.add(len(batch["labels"]) * accelerator.num_processes)
            running_loss += loss.detach().float()
            running_count += 1
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            bar.update(1)
            if progress.step % training.log_every_steps == 0:
                mean_loss = accelerator.reduce(running_loss / running_count, "mean").item()
                log({"train/loss": mean_loss, "train/learning_rate": scheduler.get_last_lr()[0],
                     "train/epoch": progress.epoch, "train/samples_per_second": throughput.rate()}, progress.step)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss, running_count = torch.zeros((), device=accelerator.device), 0
            if training.eval_every_steps and progress.step % training.eval_every_steps == 0 and val_loaders:
                evaluate()
                throughput.restart()
            if progress.step % training.checkpoint_every_steps == 0:
                save_checkpoint()
                throughput.restart()
            if progress.step >= total_steps:
                break
        if progress.batches_in_epoch >= len(train_loader):  # the epoch ran to its end
            progress.epoch += 1
            progress.batches_in_epoch = 0
            if not training.eval_every_steps and val_loaders:
                evaluate()
    if val_loaders and progress.last_eval_step != progress.step:
        evaluate()
    bar.close()
    if progress.step % training.checkpoint_every_steps != 0:
        save_checkpoint()

    final_threshold = (Threshold(progress.threshold, progress.threshold_strategy, "validation calibration")
                       if progress.threshold is not None else None)
    save_model(model, processor, output_dir / FINAL_MODEL_DIR, final_threshold, accelerator)
    if config.hub.push_to_hub and accelerator.is_main_process and (output_dir / BEST_MODEL_DIR).is_dir():
        push_best(output_dir / BEST_MODEL_DIR, config, accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"steps": progress.step, "best_metric": training.best_metric, "best_value": progress.best_value,
            "best_step": progress.best_step, "threshold": progress.threshold, "output_dir": str(output_dir),
            "skipped_corrupt_images": train_transform.skipped}


def write_model_card(directory: Path, config: TrainConfig, val_sets: dict, reports: dict[str, MetricsReport]) -> None:
    card = build_model_card(directory, repo_id=config.hub.hub_model_id or directory.name,
                            dataset_names=sorted(val_sets) or [Path(e.root).name for e in config.data.datasets],
                            train_config=config.to_dict(), reports=without_duplicate_total(reports))
    card.save(directory / "README.md")


def push_best(directory: Path, config: TrainConfig, accelerator: Accelerator) -> None:
    """Push the best model; a failure is reported clearly and leaves the local result intact."""
    try:
        reference = push_to_hub(directory, config.hub.hub_model_id, private=config.hub.private,
                                commit_message="PatchNet best model")
        accelerator.print(f"Pushed {directory} to {config.hub.hub_model_id}: {reference}")
    except HubPushError as error:
        accelerator.print(f"Hub push failed: {error}")

