"""Shared test setup: everything offline, tiny backbones, tiny images."""

import os

# Read by huggingface_hub / transformers at import time: set before any test imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification  # noqa: E402

TINY_BACKBONE = "test_resnet"
TINY_PATCH = 32


def tiny_config(**overrides) -> PatchNetConfig:
    settings = dict(backbone=TINY_BACKBONE, patch_size=TINY_PATCH, embedding_dim=16)
    settings.update(overrides)
    return PatchNetConfig(**settings)


@pytest.fixture
def tiny_model() -> PatchNetForImageClassification:
    torch.manual_seed(0)
    return PatchNetForImageClassification(tiny_config()).eval()
