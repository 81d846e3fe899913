"""Two CPU processes (gloo): the two-view loss goes through the DDP forward, so gradients are synchronised."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification

WORKER = Path(__file__).with_name("ddp_two_view_worker.py")


def test_two_view_training_keeps_ranks_identical(tmp_path):
    environment = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(WORKER), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert not torch.equal(rank0["last_views"], rank1["last_views"]), "the ranks must see different data"
    torch.manual_seed(0)
    initial = dict(PatchNetForImageClassification(
        PatchNetConfig(backbone="test_resnet", patch_size=32, embedding_dim=16)).named_parameters())
    for name, parameter in rank0["parameters"].items():
        torch.testing.assert_close(rank1["parameters"][name], parameter, rtol=0, atol=0, msg=name)
    assert not torch.equal(rank0["parameters"]["classifier.weight"], initial["classifier.weight"])
