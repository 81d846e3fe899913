"""The training configuration: YAML sections as dataclasses, checked before any training starts.

Every error names the offending key (`training.learning_rate`, `data.datasets[1].root`, ...).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import SchedulerType

from .configuration_patchnet import PatchNetConfig

LOWER_IS_BETTER = ("acer", "apcer", "bpcer", "hter", "eer", "bpcer20", "bpcer100")
HIGHER_IS_BETTER = ("auc",)


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the key."""


@dataclass
class DatasetEntry:
    """One dataset of the CSV layout (`root/images/`, `root/train.csv`, `root/val.csv`)."""

    root: str
    name: str | None = None
    images_root: str | None = None
    train_csv: str = "train.csv"
    val_csv: str = "val.csv"


@dataclass
class ModelSection:
    backbone: str = "resnet18"
    backbone_kwargs: dict[str, Any] | None = None
    pretrained_backbone: bool = False
    backbone_weights: str | None = None
    embedding_dim: int | None = 512
    fine_grained: bool = True
    scale: float = 30.0
    margin_live: float = 0.4
    margin_spoof: float = 0.1
    classification_weight: float = 1.0
    similarity_weight: float = 1.0
    patch_size: int = 160
    grid_size: int = 3
    resize_to: int | None = None
    score_aggregation: Literal["probability", "cosine_margin"] = "probability"


@dataclass
class DataSection:
    datasets: list[DatasetEntry] = field(default_factory=list)
    balance_classes: bool = False
    skip_corrupt: bool = False
    num_workers: int = 0


@dataclass
class TrainingSection:
    output_dir: str = "outputs/patchnet"
    seed: int = 42
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float | None = 5.0
    eval_every_steps: int | None = None
    checkpoint_every_steps: int = 200
    keep_checkpoints: int = 3
    best_metric: str = "acer"
    threshold_strategy: Literal["eer", "apcer", "fixed"] = "eer"
    target_apcer: float | None = None
    group_level: bool = False
    log_every_steps: int = 10
    report_to: Literal["tensorboard", "none"] = "tensorboard"


@dataclass
class HubSection:
    push_to_hub: bool = False
    hub_model_id: str | None = None
    push_on_best: bool = False
    private: bool = False


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    hub: HubSection = field(default_factory=HubSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _convert(value: Any, hint: Any, key: str) -> Any:
    """`value` checked against the type `hint` (ints accepted for floats), dataclasses built recursively."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        if value is False and "no" in typing.get_args(hint):
            value = "no"  # YAML 1.1 reads an unquoted `no` as False
        if value not in typing.get_args(hint):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(hint))}.")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}.")
        (item,) = typing.get_args(hint)
        return [_convert(entry, item, f"{key}[{i}]") for i, entry in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}.")
        return value
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}.")
    return value


def build_section(cls: type, values: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise `ConfigError`."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(values).__name__} {values!r}.")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown key '{prefix + '.' if prefix else ''}{key}' (known keys: {', '.join(known)}).")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in values:
            raise ConfigError(f"missing key '{prefix + '.' if prefix else ''}{name}'.")
    return cls(**{key: _convert(value, hints[key], f"{prefix + '.' if prefix else ''}{key}")
                  for key, value in values.items()})


def apply_override(values: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` command-line override (the value parsed as YAML) to raw config values."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value.")
    path, raw = assignment.split("=", 1)
    *parents, leaf = path.strip().split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: '{part}' is not a section.")
    node[leaf] = yaml.safe_load(raw)


def _check_model_section(section: ModelSection) -> None:
    """The values PatchNetConfig checks, checked now (its messages start with the field name)."""
    fields = {f.name for f in dataclasses.fields(PatchNetConfig)} & {f.name for f in dataclasses.fields(section)}
    try:
        PatchNetConfig(**{name: getattr(section, name) for name in fields})
    except ValueError as error:
        raise ConfigError(f"model.{error}") from error


def _check_values(config: TrainConfig, base_dir: Path) -> None:
    training = config.training
    _check_model_section(config.model)
    schedulers = [kind.value for kind in SchedulerType]
    if training.lr_scheduler not in schedulers:
        raise ConfigError(f"training.lr_scheduler: {training.lr_scheduler!r} is not one of {schedulers}.")
    positive = ("epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "checkpoint_every_steps",
                "keep_checkpoints", "log_every_steps")
    for name in positive:
        if getattr(training, name) <= 0:
            raise ConfigError(f"training.{name}: must be positive, got {getattr(training, name)}.")
    if training.max_steps is not None and training.max_steps < 0:
        raise ConfigError(f"training.max_steps: must be 0 or more, got {training.max_steps}.")
    if training.learning_rate <= 0:
        raise ConfigError(f"training.learning_rate: must be positive, got {training.learning_rate}.")
    if training.best_metric not in LOWER_IS_BETTER + HIGHER_IS_BETTER:
        raise ConfigError(f"training.best_metric: {training.best_metric!r} is not one of "
                          f"{list(LOWER_IS_BETTER + HIGHER_IS_BETTER)}.")
    if (training.threshold_strategy == "apcer") != (training.target_apcer is not None):
        raise ConfigError("training.target_apcer: set it exactly when training.threshold_strategy is 'apcer'.")
    if not config.data.datasets:
        raise ConfigError("data.datasets: list at least one dataset (root: DIR).")
    for index, entry in enumerate(config.data.datasets):
        root = Path(entry.root)
        if not root.is_absolute():
            entry.root = str((base_dir / root).resolve()) if not root.exists() else str(root.resolve())
        train_csv = Path(entry.root) / entry.train_csv
        if not train_csv.is_file():
            raise ConfigError(f"data.datasets[{index}].root: training CSV {train_csv} does not exist.")
    if config.hub.push_to_hub and not config.hub.hub_model_id:
        raise ConfigError("hub.hub_model_id: required with hub.push_to_hub (e.g. your-name/patchnet-demo).")
    if config.model.pretrained_backbone is False and config.model.backbone_weights:
        raise ConfigError("model.backbone_weights: set model.pretrained_backbone: true to load them.")


def load_config(path: str | Path | None, overrides: list[str] = (), **flags: Any) -> TrainConfig:
    """Read a YAML config, apply `section.key=value` overrides and flags given as `section__key=value`, check
    everything. Relative dataset roots are taken from the working directory, else from the config's folder."""
    values: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist.")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections (model, data, training, hub).")
        base_dir = path.resolve().parent
    for assignment in overrides:
        apply_override(values, assignment)
    for name, value in flags.items():
        if value is not None:
            section, key = name.split("__")
            values.setdefault(section, {})[key] = value
    config = build_section(TrainConfig, values, "")
    _check_values(config, base_dir)
    return config
