"""A class-balanced sampler that is seeded per epoch and shards correctly across processes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator, Sequence

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from .loading import column_values


class ClassBalancedSampler(Sampler[int]):
    """Draws indices with replacement, each class equally often in expectation.

    Every sample's weight is `1 / (number of samples of its class)`. Each epoch draws one sequence of
    `num_replicas * len(self)` indices from a generator seeded by `(seed, epoch)`, so every process
    computes the same sequence; process `rank` takes the positions `rank, rank + num_replicas, ...`, a
    disjoint shard of equal length.

    Two ways to use it with several processes (never both, or each process sees a shard of a shard):

    - With `accelerator.prepare(dataloader)` (recommended): keep `num_replicas=1` and the same `seed` on every
      process; accelerate's `BatchSamplerShard` hands each process every `num_processes`-th batch of the
      shared sequence. Accelerate calls `set_epoch` on the sampler at each pass over the prepared loader
      (`DataLoaderShard.set_epoch`); call `dataloader.set_epoch(epoch)` yourself after resuming.
    - With a plain `DataLoader` that is not prepared: `num_replicas=world_size, rank=rank`, and call
      `sampler.set_epoch(epoch)` before every epoch.

    Args:
        classes: one hashable class key per sample (a label, a patch type, a `(source, label)` pair...).
        num_samples: samples per epoch over all processes. Default: `len(classes)`.
        seed: seed of the epoch sequences; the same on every process.
        num_replicas / rank: shard for process `rank` of `num_replicas` (see above).
    """

    def __init__(
        self,
        classes: Sequence[Hashable],
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not classes:
            raise ValueError("ClassBalancedSampler needs at least one sample.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas}).")
        counts = Counter(classes)
        self.weights = torch.tensor([1.0 / counts[key] for key in classes], dtype=torch.double)
        self.class_counts = dict(counts)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        total = num_samples if num_samples is not None else len(classes)
        self.num_samples_per_replica = -(
            -total // num_replicas
        )  # ceil: every sample has a chance to be drawn

    @classmethod
    def from_dataset(
        cls, dataset: datasets.Dataset, by: str | Sequence[str] = "label", **kwargs
    ) -> ClassBalancedSampler:
        """Balance over the values of a column (`"label"`, `"patch_type"`, `"source"`), or over the
        combinations of several (`("source", "label")`). Reads the columns without decoding images."""
        columns = [by] if isinstance(by, str) else list(by)
        values = [column_values(dataset, column) for column in columns]
        keys = values[0] if len(values) == 1 else list(zip(*values, strict=True))
        return cls(keys, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Use the sequence of `epoch`: a different one each epoch, the same on every process."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples_per_replica

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0] >> 1)
        generator = torch.Generator().manual_seed(seed)
        total = self.num_samples_per_replica * self.num_replicas
        indices = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(indices[self.rank :: self.num_replicas].tolist())
