"""Run under 2 processes: a few two-view training steps through the DDP-wrapped model, then save the
parameters of this rank. Each rank sees different data, so only synchronised gradients keep them equal."""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification

output_dir = Path(sys.argv[1])
accelerator = Accelerator(cpu=True)
torch.manual_seed(0)
model = PatchNetForImageClassification(PatchNetConfig(backbone="test_resnet", patch_size=32, embedding_dim=16))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
model, optimizer = accelerator.prepare(model, optimizer)
assert accelerator.num_processes == 2, accelerator.num_processes
data = torch.Generator().manual_seed(100 + accelerator.process_index)
for _ in range(3):
    views = torch.randn(4, 2, 3, 32, 32, generator=data)
    labels = torch.randint(0, 2, (4,), generator=data)
    loss = model(views, labels=labels).loss
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
parameters = {name: p.detach().clone() for name, p in accelerator.unwrap_model(model).named_parameters()}
torch.save({"parameters": parameters, "last_views": views}, output_dir / f"rank{accelerator.process_index}.pt")
