"""Data: the CSV dataset layout as Hugging Face datasets, on-the-fly transforms, a class-balanced sampler,
conversion tools and the built-in demo data."""

from .demo import make_demo_dataset
from .loading import (
    FEATURES,
    LABEL_NAMES,
    DatasetFormatError,
    DatasetSpec,
    binary_patch_types,
    column_values,
    conform_dataset,
    load_any_dataset,
    load_csv_dataset,
    load_training_data,
    patch_type_vocabulary,
)
from .prepare import (
    export_dataset,
    folder_to_csv_layout,
    is_csv_layout,
    label_from_path,
    load_csv_layout,
    scan_folder_tree,
    split_by_group,
    square_box,
    summarize,
)
from .sampler import ClassBalancedSampler
from .transforms import CorruptImageError, EvalTransform, TrainTransform, decode_image

__all__ = [
    "FEATURES",
    "LABEL_NAMES",
    "ClassBalancedSampler",
    "CorruptImageError",
    "DatasetFormatError",
    "DatasetSpec",
    "EvalTransform",
    "TrainTransform",
    "binary_patch_types",
    "column_values",
    "conform_dataset",
    "decode_image",
    "export_dataset",
    "folder_to_csv_layout",
    "is_csv_layout",
    "label_from_path",
    "load_any_dataset",
    "load_csv_dataset",
    "load_csv_layout",
    "load_training_data",
    "make_demo_dataset",
    "patch_type_vocabulary",
    "scan_folder_tree",
    "split_by_group",
    "square_box",
    "summarize",
]
