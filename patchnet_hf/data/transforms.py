"""On-the-fly training and evaluation transforms for datasets of `FEATURES` (METHOD.md, "Patches").

Both are callables for `Dataset.with_transform` / `set_transform`: they receive a batch (a dict of lists)
and return only the model's inputs and the columns metrics need. `transform.apply(dataset)` also switches
the image column to undecoded file references, so that the transform decodes each image itself and an
unreadable file gets an error that names it (or is skipped, for training, when asked).
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
from collections.abc import Mapping
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from ..image_processing_patchnet import PatchNetImageProcessor

logger = logging.getLogger(__name__)


class CorruptImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def decode_image(value: Any) -> Image.Image:
    """Decode an image cell: a PIL image, an undecoded `{"bytes", "path"}` dict, or a path string.

    The pixels are read now (not lazily), so that a truncated file fails here, naming the file.
    """
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str):
        value = {"path": value, "bytes": None}
    name = value.get("path") or "<embedded image bytes>"
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        image = Image.open(source)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CorruptImageError(f"cannot decode image {name}: {error}") from error
    return image


def class_id(patch_type: str, label2id: Mapping[str, int], image_name: str) -> int:
    """The model's class id of a patch type; an unknown type is an error naming it and the image."""
    try:
        return label2id[patch_type]
    except KeyError:
        raise ValueError(
            f"patch type {patch_type!r} of image {image_name!r} is not a class of the model (classes: "
            f"{sorted(label2id)}). Build the config's id2label with patch_type_vocabulary() over the data."
        ) from None


def _undecoded(dataset: datasets.Dataset) -> datasets.Dataset:
    return dataset.cast_column("image", datasets.Image(decode=False))


class TrainTransform:
    """Two independent random native-resolution patches per image, flipped and rotated (training views).

    Each image is made RGB and upright, optionally pre-resized and upscaled just enough to hold a patch
    (`processor.prepare`); each view is a random `patch_size` crop, flipped horizontally with probability
    1/2 and rotated by a random multiple of 90 degrees. The two views of an image never share all of
    (position, flip, rotation).

    Randomness: each batch draws from a NumPy generator seeded by `(seed, epoch, the batch's images)` (their
    sources and names, in order), its rows in turn. The crops are thus a function of the data order alone:
    the same whatever the number of DataLoader workers or processes, and reproduced exactly by a run
    resumed with `accelerator.skip_first_batches`; and they differ for an image drawn again in another batch
    or at another position, and between epochs. Call `set_epoch(epoch)` at the start of every epoch, before
    iterating the loader (with `persistent_workers=True` the workers keep the epoch they started with, and
    only the batches' new composition changes the crops).

    Args:
        processor: gives `patch_size`, the pre-resize, and the normalisation (`normalize_tensor`).
        label2id: the model's classes (`config.label2id`); `labels` are the class ids of the patch types.
        seed: mixed into every generator.
        num_views: views per image (METHOD.md: 2).
        skip_corrupt: skip undecodable images instead of raising: each is logged, counted in `skipped`
            (over this process and its DataLoader workers), and its place in the batch is taken by another
            image of the batch.

    Returns from `__call__(batch)`: `pixel_values` float32 `(B, num_views, 3, P, P)`, `labels` int64 `(B,)`.
    """

    def __init__(
        self,
        processor: PatchNetImageProcessor,
        label2id: Mapping[str, int],
        seed: int = 0,
        num_views: int = 2,
        skip_corrupt: bool = False,
    ) -> None:
        if not 1 <= num_views <= 8:
            # An image of exactly the patch size has 8 distinct views (flips x rotations), no more.
            raise ValueError(f"num_views={num_views} must be between 1 and 8.")
        self.processor = processor
        self.label2id = dict(label2id)
        self.seed = seed
        self.num_views = num_views
        self.skip_corrupt = skip_corrupt
        self._skipped = multiprocessing.Value("q", 0)  # shared with DataLoader workers
        self.epoch = 0

    @property
    def skipped(self) -> int:
        """Undecodable images skipped so far by this process and its DataLoader workers."""
        return self._skipped.value

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if multiprocessing.context.get_spawning_popen() is None:
            # Pickled for something else than starting a worker (datasets' fingerprint, a copy): a shared
            # counter cannot be pickled there, so the copy gets a counter of its own.
            state["_skipped"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._skipped is None:
            self._skipped = multiprocessing.Value("q", 0)

    def apply(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """`dataset` with this transform set on the fly (no copy of the data), images decoded by it."""
        return _undecoded(dataset).with_transform(self)

    def set_epoch(self, epoch: int) -> None:
        """Draw the crops of `epoch` (call before iterating the loader, so that workers start with it)."""
        self.epoch = epoch

    def _batch_generator(self, batch: dict[str, list]) -> np.random.Generator:
        digest = hashlib.blake2b(digest_size=8)
        for source, image_name in zip(batch["source"], batch["image_name"], strict=True):
            digest.update(f"{source}\0{image_name}\0".encode())
        return np.random.default_rng([self.seed, self.epoch, int.from_bytes(digest.digest(), "little")])

    def _draw(self, rng: np.random.Generator, width: int, height: int) -> tuple[int, int, bool, int]:
        patch = self.processor.patch_size
        return (
            int(rng.integers(width - patch + 1)),
            int(rng.integers(height - patch + 1)),
            bool(rng.random() < 0.5),
            int(rng.integers(4)),
        )

    def views(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """One image -> uint8 views `(num_views, 3, P, P)`, drawn from `rng`."""
        pixels = np.asarray(self.processor.prepare(image))
        height, width = pixels.shape[:2]
        patch = self.processor.patch_size
        drawn: list[tuple[int, int, bool, int]] = []
        while len(drawn) < self.num_views:
            params = self._draw(rng, width, height)
            if params not in drawn:  # two identical views would teach the similarity loss nothing
                drawn.append(params)
        crops = []
        for left, top, flip, quarter_turns in drawn:
            crop = pixels[top : top + patch, left : left + patch]
            crop = crop[:, ::-1] if flip else crop
            crops.append(np.rot90(crop, quarter_turns))
        # Channels-first and contiguous here: stacking strided uint8 tensors later is very slow.
        return torch.from_numpy(np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2)))

    def _decode_or_skip(self, image: Any) -> Image.Image | None:
        """The decoded image, or None for an undecodable one when skipping (logged and counted)."""
        try:
            return decode_image(image)
        except CorruptImageError as error:
            if not self.skip_corrupt:
                raise
            with self._skipped.get_lock():
                self._skipped.value += 1
            logger.warning("skipped %s (%d undecodable images skipped so far)", error, self.skipped)
            return None

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        labels = [
            class_id(patch_type, self.label2id, image_name)
            for patch_type, image_name in zip(batch["patch_type"], batch["image_name"], strict=True)
        ]
        images = [self._decode_or_skip(image) for image in batch["image"]]
        readable = [index for index, image in enumerate(images) if image is not None]
        if not readable:
            raise CorruptImageError(
                f"all {len(images)} images of a batch are undecodable (see the warnings above); nothing to "
                "take their place: use a larger batch or remove the files."
            )
        # A skipped image's place goes to another image of the batch (with fresh views), so that batches
        # keep their size: equal across processes, and never empty.
        rng = self._batch_generator(batch)
        sources = [
            index if images[index] is not None else int(rng.choice(readable)) for index in range(len(images))
        ]
        return {
            "pixel_values": self.processor.normalize_tensor(
                torch.stack([self.views(images[i], rng) for i in sources])
            ),
            "labels": torch.tensor([labels[i] for i in sources], dtype=torch.long),
        }


class EvalTransform:
    """The deterministic evaluation patches of the processor, plus the columns metrics need.

    Args:
        processor: the model's `PatchNetImageProcessor`; its patch grid is used as is, so that evaluation
            sees exactly what inference sees.
        label2id: the model's classes; when given, `labels` holds the class ids of the patch types
            (an unknown type is an error). Leave it out to evaluate on patch types the model lacks.

    Returns from `__call__(batch)`: `pixel_values` float32 `(B, N, 3, P, P)` with `N = processor.num_patches`,
    `binary_labels` int64 `(B,)` (0 = spoof, 1 = bona fide), `labels` int64 `(B,)` (with `label2id`), and the
    lists `patch_type`, `group`, `source`, `image_name`.
    """

    def __init__(self, processor: PatchNetImageProcessor, label2id: Mapping[str, int] | None = None) -> None:
        self.processor = processor
        self.label2id = dict(label2id) if label2id is not None else None

    def apply(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """`dataset` with this transform set on the fly, images decoded by it."""
        return _undecoded(dataset).with_transform(self)

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        images = [decode_image(image) for image in batch["image"]]
        output = {
            "pixel_values": self.processor(images, return_tensors="pt")["pixel_values"],
            "binary_labels": torch.tensor(batch["label"], dtype=torch.long),
        }
        if self.label2id is not None:
            output["labels"] = torch.tensor(
                [
                    class_id(t, self.label2id, n)
                    for t, n in zip(batch["patch_type"], batch["image_name"], strict=True)
                ],
                dtype=torch.long,
            )
        for name in ("patch_type", "group", "source", "image_name"):
            output[name] = list(batch[name])
        return output
