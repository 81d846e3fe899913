"""Image processor for PatchNet: RGB and EXIF-upright images, native-resolution patches, normalisation."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[int, int, int, int]


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Grayscale 16/32-bit integer or float images -> 8-bit "L", scaled by their nominal range."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        peak = 1.0 if values.max(initial=0) <= 1.0 else 255.0
    else:
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8), mode="L")


def to_rgb_upright(image: Image.Image | np.ndarray) -> Image.Image:
    """Any PIL image (or an `(H, W, 3)` uint8 array) -> an 8-bit RGB image, rotated as its EXIF tag says.

    Transparent images are composited over white, so that the colour hidden under alpha 0 cannot leak in.
    """
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _high_bit_depth_to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def fit_image(image: Image.Image, patch_size: int, resize_to: int | None = None) -> Image.Image:
    """Optionally pre-resize to `resize_to x resize_to`, then upscale just enough that a patch fits.

    Larger images are left at their native resolution: patches must keep the capture's texture.
    """
    if resize_to is not None and image.size != (resize_to, resize_to):
        image = image.resize((resize_to, resize_to), Image.Resampling.BICUBIC)
    width, height = image.size
    if min(width, height) >= patch_size:
        return image
    factor = patch_size / min(width, height)
    size = (max(patch_size, round(width * factor)), max(patch_size, round(height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def grid_boxes(width: int, height: int, patch_size: int, grid_size: int) -> list[Box]:
    """`grid_size**2` boxes `(left, top, right, bottom)` of `patch_size` on a grid spanning the image.

    Row-major order. The outer patches touch the image borders; when the image holds fewer than
    `grid_size` patches per side they overlap. A grid of 1 is the centre patch.
    """
    if width < patch_size or height < patch_size:
        raise ValueError(f"image {width}x{height} is smaller than patch_size={patch_size}; call fit_image first.")

    def offsets(length: int) -> list[int]:
        if grid_size == 1:
            return [(length - patch_size) // 2]
        return [round(i * (length - patch_size) / (grid_size - 1)) for i in range(grid_size)]

    return [(x, y, x + patch_size, y + patch_size) for y in offsets(height) for x in offsets(width)]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor `(3, H, W)`."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


class PatchNetImageProcessor(BaseImageProcessor):
    r"""
    Turns images into the deterministic evaluation patches of PatchNet (METHOD.md, "Patches").

    Each image is converted to RGB and rotated upright (EXIF), optionally pre-resized, upscaled only if smaller
    than a patch, and cut into `grid_size x grid_size` patches of `patch_size` at native resolution (no
    resizing of the patches, so that they show the face at the scale training saw). Patches are scaled to
    [0, 1] and normalised with `image_mean` / `image_std`.

    Args:
        patch_size (`int`, defaults to 160): side of the square patches.
        grid_size (`int`, defaults to 3): patches per side of the evaluation grid.
        resize_to (`int`, *optional*): pre-resize every image to this square size first.
        flip_test (`bool`, defaults to `False`): also add the horizontally flipped patches (test-time
            augmentation; the model averages over all patches).
        image_mean / image_std (`Sequence[float]`): normalisation, ImageNet's by default.

    Returns from `__call__`: a `BatchFeature` with `pixel_values` of shape `(batch, num_patches, 3, patch_size,
    patch_size)`, `num_patches = grid_size**2` (doubled with `flip_test`).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        patch_size: int = 160,
        grid_size: int = 3,
        resize_to: int | None = None,
        flip_test: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.grid_size = grid_size
        self.resize_to = resize_to
        self.flip_test = flip_test
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)

    @property
    def num_patches(self) -> int:
        return self.grid_size**2 * (2 if self.flip_test else 1)

    def prepare(self, image: Image.Image | np.ndarray) -> Image.Image:
        """RGB, upright, pre-resized if configured, large enough for a patch."""
        return fit_image(to_rgb_upright(image), self.patch_size, self.resize_to)

    def normalize_tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 `(..., 3, H, W)` -> float32 normalised with this processor's mean and std."""
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1)
        return (pixels.float() / 255.0 - mean) / std

    def grid_patches(self, image: Image.Image | np.ndarray, grid_size: int | None = None) -> torch.Tensor:
        """One image -> uint8 patches `(grid_size**2, 3, patch_size, patch_size)`, row-major, and the flips
        after them when `flip_test` is on."""
        prepared = self.prepare(image)
        pixels = pil_to_tensor(prepared)
        boxes = grid_boxes(*prepared.size, self.patch_size, grid_size or self.grid_size)
        patches = torch.stack([pixels[:, top:bottom, left:right] for left, top, right, bottom in boxes])
        if self.flip_test:
            patches = torch.cat([patches, patches.flip(-1)])
        return patches

    def preprocess(
        self,
        images: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray],
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Images -> `BatchFeature(pixel_values=(batch, num_patches, 3, patch_size, patch_size))`."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixel_values = torch.stack([self.normalize_tensor(self.grid_patches(image)) for image in images])
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


__all__ = ["PatchNetImageProcessor", "fit_image", "grid_boxes", "to_rgb_upright"]
