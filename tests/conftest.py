"""Shared test setup: everything offline, tiny backbones, tiny images."""

import os

# Read by huggingface_hub / transformers at import time: set before any test imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402
from hub_server import hub_environment, local_hub  # noqa: E402, F401  (local_hub is a fixture)

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


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """A small synthetic dataset of the CSV layout (images/ + train/val/test.csv), shared by the session."""
    from patchnet_hf.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_data")
    make_demo_dataset(root, num_images=60, seed=0)
    return root


def assert_reports_close(first, second, path: str = "report") -> None:
    """Nested reports equal: counts, names and rates exactly, real-valued scores and thresholds to 1e-5.

    Scores computed in batches of another composition (another process count) differ by ~1e-7: the CPU
    kernels accumulate in another order. Rates are counts at a threshold, so they must agree exactly.
    """
    if isinstance(first, dict):
        assert first.keys() == second.keys(), path
        for key in first:
            assert_reports_close(first[key], second[key], f"{path}.{key}")
    elif isinstance(first, float) and ("threshold" in path or "score" in path):
        assert first == pytest.approx(second, abs=1e-5), path
    else:
        assert first == second, path
