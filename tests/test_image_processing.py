"""PatchNetImageProcessor: odd image modes, EXIF rotation, the evaluation grid, save/load."""

import numpy as np
import pytest
import torch
from PIL import Image

from patchnet_hf import PatchNetImageProcessor
from patchnet_hf.image_processing_patchnet import fit_image, grid_boxes, to_rgb_upright


def quadrant_image(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue, a green top-left corner marker."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    pixels[:4, :4] = (0, 255, 0)
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    "image,expected",
    [
        (Image.new("L", (8, 8), 100), (100, 100, 100)),
        (Image.new("1", (8, 8), 1), (255, 255, 255)),
        (Image.new("CMYK", (8, 8), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("I;16", (8, 8), 65535), (255, 255, 255)),
        (Image.fromarray(np.full((8, 8), 32768, dtype=np.int32), mode="I"), (128, 128, 128)),
        (Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), mode="F"), (128, 128, 128)),
        (Image.new("RGBA", (8, 8), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("RGBA", (8, 8), (10, 20, 30, 0)), (255, 255, 255)),
        (Image.new("LA", (8, 8), (50, 255)), (50, 50, 50)),
    ],
    ids=["L", "1", "CMYK", "I;16", "I", "F", "RGBA-opaque", "RGBA-transparent", "LA"],
)
def test_odd_modes_become_8bit_rgb(image, expected):
    converted = to_rgb_upright(image)
    assert converted.mode == "RGB" and converted.size == (8, 8)
    assert converted.getpixel((3, 3)) == expected


def test_palette_images_with_and_without_transparency():
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert to_rgb_upright(palette).getpixel((0, 0)) == (200, 100, 50)
    palette.info["transparency"] = 1
    assert to_rgb_upright(palette).getpixel((0, 0)) == (255, 255, 255)


def test_16bit_png_file_round_trip(tmp_path):
    values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        converted = np.asarray(to_rgb_upright(image))
    np.testing.assert_allclose(converted[..., 0], np.rint(values / 257.0), atol=1)


@pytest.mark.parametrize("orientation,transform", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270),
                                                  (8, Image.Transpose.ROTATE_90), (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_is_applied(tmp_path, orientation, transform):
    stored = quadrant_image()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated_{orientation}.png"
    stored.save(path, exif=exif)
    with Image.open(path) as image:
        upright = to_rgb_upright(image)
    np.testing.assert_array_equal(np.asarray(upright), np.asarray(stored.transpose(transform)))


def test_fit_image_upscales_just_enough_and_keeps_large_images():
    assert fit_image(Image.new("RGB", (20, 40)), 32).size == (32, 64)
    assert fit_image(Image.new("RGB", (100, 33)), 32).size == (100, 33)
    assert fit_image(Image.new("RGB", (100, 33)), 32, resize_to=48).size == (48, 48)


def test_grid_boxes_span_the_image_and_overlap_when_small():
    boxes = grid_boxes(100, 70, 32, 3)
    assert len(boxes) == 9
    assert boxes[0] == (0, 0, 32, 32) and boxes[-1] == (68, 38, 100, 70)
    assert boxes[4] == (34, 19, 66, 51)
    assert set(grid_boxes(32, 32, 32, 3)) == {(0, 0, 32, 32)}
    assert grid_boxes(50, 40, 32, 1) == [(9, 4, 41, 36)]
    with pytest.raises(ValueError, match="smaller than patch_size=32"):
        grid_boxes(20, 40, 32, 3)


def test_patches_are_native_resolution_crops():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    processor = PatchNetImageProcessor(patch_size=32, grid_size=3, image_mean=[0, 0, 0], image_std=[1, 1, 1])
    batch = processor([Image.fromarray(pixels)] * 2, return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 9, 3, 32, 32) and batch.dtype == torch.float32
    last = torch.from_numpy(pixels[38:70, 68:100]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(batch[1, 8], last)


def test_normalisation_and_flip_test():
    processor = PatchNetImageProcessor(patch_size=32, grid_size=2, flip_test=True,
                                       image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    image = quadrant_image(64, 64)
    values = processor(image)["pixel_values"][0]
    assert values.shape == (8, 3, 32, 32) and processor.num_patches == 8
    torch.testing.assert_close(values[4:], values[:4].flip(-1))
    assert values[0, 0, 10, 10].item() == pytest.approx((1.0 - 0.5) / 0.25)


def test_processor_save_and_load(tmp_path):
    processor = PatchNetImageProcessor(patch_size=48, grid_size=4, resize_to=96, flip_test=True,
                                       image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2])
    processor.save_pretrained(tmp_path)
    loaded = PatchNetImageProcessor.from_pretrained(tmp_path)
    for key in ("patch_size", "grid_size", "resize_to", "flip_test", "image_mean", "image_std"):
        assert getattr(loaded, key) == getattr(processor, key), key
    image = quadrant_image(120, 80)
    torch.testing.assert_close(loaded(image)["pixel_values"], processor(image)["pixel_values"])
