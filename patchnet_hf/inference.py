"""Scoring images, folders, globs and videos with a saved PatchNet model; patch heatmaps.

`LivenessPredictor` wraps a model and its image processor: the patches and the scores are exactly those of
`processor(images)` and `model(pixel_values).liveness_score` (METHOD.md, "Scores"), and decisions use the
threshold the model was saved with (`config.threshold`) unless told otherwise. Unreadable inputs never stop
a batch: each is logged and returned as a `Prediction` whose `error` says what went wrong.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tqdm.auto import tqdm

from .data.prepare import IMAGE_EXTENSIONS
from .data.transforms import CorruptImageError, decode_image
from .data.video import VIDEO_EXTENSIONS, sample_video_frames
from .image_processing_patchnet import PatchNetImageProcessor, grid_boxes
from .modeling_patchnet import PatchNetForImageClassification

logger = logging.getLogger(__name__)

LIVE, SPOOF = "live", "spoof"
DEFAULT_HEATMAP_GRID = 8

# What reading one input may raise; anything else is a bug and propagates.
_READ_ERRORS = (CorruptImageError, OSError, ValueError, cv2.error)

ImageInput = str | os.PathLike | Image.Image | np.ndarray


@dataclass
class Prediction:
    """The result for one input (an image, or a video scored from sampled frames).

    path: the file, or `<image i>` for an in-memory image without a file name.
    score: liveness in [0, 1], higher = bona fide (`None` when the input failed); for a video, the mean of
        its frames' scores.
    is_live: `score >= threshold`.
    threshold: the threshold the decision used.
    probabilities: class name -> probability (mean over patches, and over frames for a video).
    error: why the input could not be scored, else `None`.
    frame_indices / frame_scores: videos only: the indices of the frames scored and their scores.
    """

    path: str
    threshold: float
    score: float | None = None
    is_live: bool | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None
    frame_indices: list[int] | None = None
    frame_scores: list[float] | None = None

    @property
    def label(self) -> str | None:
        """`"live"`, `"spoof"`, or `None` when the input failed."""
        return None if self.is_live is None else (LIVE if self.is_live else SPOOF)

    @property
    def num_frames(self) -> int | None:
        """Frames scored for a video, `None` for an image."""
        return None if self.frame_indices is None else len(self.frame_indices)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the fields plus `label` and `num_frames`."""
        return {**asdict(self), "label": self.label, "num_frames": self.num_frames}


def find_inputs(sources: Iterable[str | os.PathLike]) -> list[str]:
    """Expand files, folders (searched recursively for image and video extensions) and glob patterns
    (`**` allowed) into a list of files, in order, without duplicates.

    A source that names nothing (or a folder without media) is kept as it is, so that prediction reports it
    rather than dropping it silently.
    """
    found: dict[str, None] = {}
    for source in map(os.fspath, sources):
        if os.path.isdir(source):
            matches = _media_in_folder(source) or [source]
        elif os.path.exists(source) or not any(char in source for char in "*?["):
            matches = [source]
        else:
            matches = [
                path for match in sorted(glob.glob(source, recursive=True))
                for path in (_media_in_folder(match) if os.path.isdir(match) else [match])
            ] or [source]
        found.update(dict.fromkeys(matches))
    return list(found)


def _media_in_folder(folder: str) -> list[str]:
    extensions = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    paths = Path(folder).rglob("*")
    return sorted(str(path) for path in paths if path.suffix.lower() in extensions and path.is_file())


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def load_model_and_processor(
    model_name_or_path: str | os.PathLike, **hub_kwargs: Any
) -> tuple[PatchNetForImageClassification, PatchNetImageProcessor]:
    """Load a saved model (local folder or Hub id) and its image processor, the model in eval mode.

    `hub_kwargs` (`revision`, `cache_dir`, `local_files_only`, `token`, ...) go to both `from_pretrained`.
    A folder without `preprocessor_config.json` gets a processor built from the model config's `patch_size`
    and `grid_size` (ImageNet normalisation), with a warning.
    """
    model = PatchNetForImageClassification.from_pretrained(model_name_or_path, **hub_kwargs).eval()
    try:
        processor = PatchNetImageProcessor.from_pretrained(model_name_or_path, **hub_kwargs)
    except OSError:
        logger.warning(
            "%s has no preprocessor_config.json: using patch_size=%d, grid_size=%d from its config and "
            "ImageNet normalisation.", model_name_or_path, model.config.patch_size, model.config.grid_size,
        )
        config = model.config
        processor = PatchNetImageProcessor(patch_size=config.patch_size, grid_size=config.grid_size)
    if processor.patch_size != model.config.patch_size:
        logger.warning(
            "%s: the processor's patch_size=%d differs from the model's patch_size=%d it was trained with.",
            model_name_or_path, processor.patch_size, model.config.patch_size,
        )
    return model, processor


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must lie in [0, 1] (liveness scores do).")
    return float(threshold)


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class LivenessPredictor:
    """Scores faces with a PatchNet model: images (PIL, arrays or files), folders, globs and videos.

    Args:
        model: a `PatchNetForImageClassification`, put in eval mode and moved to `device` in place (on CPU
            also to the channels-last memory format).
        processor: its `PatchNetImageProcessor`.
        threshold: decision threshold on the liveness score; `None` uses the calibrated `config.threshold`.
        device: `"cpu"`, `"cuda"`, `"cuda:1"`, ...; `None` picks CUDA when available.
    """

    def __init__(
        self,
        model: PatchNetForImageClassification,
        processor: PatchNetImageProcessor,
        threshold: float | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            # oneDNN convolutions reorder NCHW tensors at every layer: channels-last cuts resnet18's time per
            # face by 10-17% at batch 1 and raises throughput by 20-40% (benchmarks/bench_inference.py).
            self.model.to(memory_format=torch.channels_last)
        self.processor = processor
        self.threshold = _check_threshold(model.config.threshold if threshold is None else threshold)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        device: str | torch.device | None = None,
        threshold: float | None = None,
        **hub_kwargs: Any,
    ) -> LivenessPredictor:
        """Load a saved model folder or Hub id (see `load_model_and_processor`)."""
        model, processor = load_model_and_processor(model_name_or_path, **hub_kwargs)
        return cls(model, processor, threshold=threshold, device=device)

    @property
    def score_aggregation(self) -> str:
        """How patch scores become an image score: `"probability"` or `"cosine_margin"` (METHOD.md)."""
        return self.model.config.score_aggregation

    @property
    def threshold_strategy(self) -> str:
        """How the model's saved threshold was chosen, or `"user"` when this predictor overrides it."""
        overridden = self.threshold != float(self.model.config.threshold)
        return "user" if overridden else self.model.config.threshold_strategy

    @torch.inference_mode()
    def score_pixel_values(self, pixel_values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """`(B, N, 3, P, P)` processor output -> liveness scores `(B,)` and class probabilities `(B, K)`."""
        output = self.model(pixel_values.to(self.device))
        probabilities = output.logits.float().softmax(-1)
        return output.liveness_score.float().cpu().numpy(), probabilities.cpu().numpy()

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        batch_size: int = 8,
        frames_per_video: int = 8,
        progress: bool = False,
    ) -> list[Prediction]:
        """Score images and videos.

        Args:
            images: one input or a sequence of them: PIL images, `(H, W, 3)` RGB uint8 arrays, or paths to
                files, folders (searched recursively) and glob patterns (see `find_inputs`).
            batch_size: images (or video frames) per forward pass. On CPU the time per image grows with the
                batch (memory traffic), so small batches are fastest; on a GPU use larger ones.
            frames_per_video: frames sampled evenly from each video (see `sample_video_frames`).
            progress: show a tqdm bar over the inputs.
        Returns: one `Prediction` per input, in input order (folders and globs expanded, sorted).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1.")
        if frames_per_video < 1:
            raise ValueError(f"frames_per_video={frames_per_video} must be at least 1.")
        sources = self._sources(images)
        results: list[dict[str, Any]] = [{"scores": [], "probabilities": []} for _ in sources]
        inputs = tqdm(sources, desc="Scoring", unit="input", disable=not progress)
        queue = self._queue_images(inputs, frames_per_video, results)
        for batch in _batched(queue, batch_size):
            scores, probabilities = self.score_pixel_values(torch.stack([patches for _, patches in batch]))
            for (index, _), score, probability in zip(batch, scores, probabilities, strict=True):
                results[index]["scores"].append(float(score))
                results[index]["probabilities"].append(probability)
        return [self._prediction(name, result) for (name, _), result in zip(sources, results, strict=True)]

    def _sources(self, images: ImageInput | Sequence[ImageInput]) -> list[tuple[str, ImageInput]]:
        """Inputs -> `(name, image or path)`, paths expanded by `find_inputs`, each file once."""
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        sources: list[tuple[str, ImageInput]] = []
        seen: set[str] = set()
        for position, image in enumerate(images):
            if isinstance(image, (str, os.PathLike)):
                paths = [path for path in find_inputs([image]) if path not in seen]
                seen.update(paths)
                sources.extend((path, path) for path in paths)
            else:
                sources.append((getattr(image, "filename", "") or f"<image {position}>", image))
        return sources

    def _queue_images(
        self, sources: Iterable[tuple[str, ImageInput]], frames_per_video: int, results: list[dict[str, Any]]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield `(source index, (N, 3, P, P) patches)` per image or sampled frame; record read failures and
        frame indices in `results` instead of raising, so that one bad file never stops the batch."""
        for index, (name, source) in enumerate(sources):
            try:
                frame_indices, images = self._read(source, frames_per_video)
                pixel_values = self.processor(images, return_tensors="pt")["pixel_values"]
            except _READ_ERRORS as error:
                message = str(error) if name in str(error) else f"{name}: {error}"
                logger.warning("skipped %s", message)
                results[index]["error"] = message
                continue
            results[index]["frame_indices"] = frame_indices
            yield from ((index, patches) for patches in pixel_values)

    @staticmethod
    def _read(source: ImageInput, frames_per_video: int) -> tuple[list[int] | None, list[Any]]:
        """An input -> (frame indices or `None` for an image, the images to score)."""
        if isinstance(source, (Image.Image, np.ndarray)):
            return None, [source]
        if os.path.isdir(source):
            raise FileNotFoundError(f"folder {source} holds no file with an image or video extension")
        if not os.path.exists(source):
            raise FileNotFoundError(f"no such file, folder or glob match: {source}")
        if is_video(source):
            return sample_video_frames(source, frames_per_video)
        return None, [decode_image(os.fspath(source))]

    def _prediction(self, name: str, result: Mapping[str, Any]) -> Prediction:
        if "error" in result:
            return Prediction(path=name, threshold=self.threshold, error=result["error"])
        scores = result["scores"]
        score = float(np.mean(scores))
        probabilities = np.mean(result["probabilities"], axis=0)
        video = result["frame_indices"] is not None
        return Prediction(
            path=name,
            threshold=self.threshold,
            score=score,
            is_live=score >= self.threshold,
            probabilities={label: float(probabilities[i]) for i, label in self.model.config.id2label.items()},
            frame_indices=result["frame_indices"],
            frame_scores=scores if video else None,
        )

    def heatmap(self, image: ImageInput, grid_size: int = DEFAULT_HEATMAP_GRID) -> np.ndarray:
        """Liveness of a dense `grid_size x grid_size` grid of patches of one image or image file."""
        return patch_heatmap(self.model, self.processor, self._open_image(image), grid_size=grid_size)

    def save_heatmap(
        self, image: ImageInput, path: str | os.PathLike, grid_size: int = DEFAULT_HEATMAP_GRID
    ) -> np.ndarray:
        """Compute the heatmap of one image (or image file) and draw it over the image into a PNG at `path`.
        Returns the heatmap `(grid_size, grid_size)`."""
        name = Path(image).name if isinstance(image, (str, os.PathLike)) else "image"
        prepared = self.processor.prepare(self._open_image(image))  # prepared again by patch_heatmap: a no-op
        heatmap = patch_heatmap(self.model, self.processor, prepared, grid_size=grid_size)
        title = f"{name}: mean patch liveness {heatmap.mean():.3f} ({grid_size}x{grid_size} patches)"
        save_heatmap_png(prepared, heatmap, path, self.processor.patch_size, title=title)
        return heatmap

    @staticmethod
    def _open_image(image: ImageInput) -> Image.Image | np.ndarray:
        return decode_image(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else image


@torch.inference_mode()
def patch_heatmap(
    model: PatchNetForImageClassification,
    processor: PatchNetImageProcessor,
    image: Image.Image | np.ndarray,
    grid_size: int = DEFAULT_HEATMAP_GRID,
    batch_size: int = 64,
) -> np.ndarray:
    """Liveness of each patch of a dense grid: which regions of a face look like an attack.

    The patches are the processor's (`processor.grid_patches(image, grid_size)`: same scale, same
    normalisation as scoring), each scored alone by the model, so a cell uses the model's own
    `score_aggregation`; with `flip_test` a cell averages the patch and its mirror image.

    Returns: float32 `(grid_size, grid_size)` in [0, 1]; `[r, c]` is the patch in grid row `r` (top to
    bottom) and column `c` (left to right), as laid out by `grid_boxes`.
    """
    patches = processor.normalize_tensor(processor.grid_patches(image, grid_size))
    cells = grid_size**2
    # grid_patches appends the flipped copies after the originals: (views * cells, ...) -> (cells, views, ...)
    patches = patches.view(-1, cells, *patches.shape[1:]).transpose(0, 1)
    device = next(model.parameters()).device
    scores = [model(chunk.to(device)).liveness_score.float().cpu() for chunk in patches.split(batch_size)]
    return torch.cat(scores).view(grid_size, grid_size).numpy()


def _cell_edges(centres: Sequence[float], length: int) -> np.ndarray:
    """Cell edges along one axis: each pixel falls in the cell of the patch whose centre is nearest, so the
    cells cover the whole image and each holds its patch's centre."""
    centres = np.asarray(centres, dtype=np.float64)
    return np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [float(length)]])


def save_heatmap_png(
    image: Image.Image,
    heatmap: np.ndarray,
    path: str | os.PathLike,
    patch_size: int,
    title: str | None = None,
) -> Path:
    """Draw a patch heatmap over its image and write it as a PNG.

    Args:
        image: the image as the processor prepared it (`processor.prepare(image)`: upright, resized as
            configured), so that patch positions match the pixels.
        heatmap: `(G, G)` liveness in [0, 1] from `patch_heatmap`.
        path: the PNG to write (folders are created).
        patch_size: the processor's patch size, which places the cells on the patch centres (each pixel is
            coloured by the patch whose centre is nearest).
        title: optional figure title.
    Red cells look like an attack, green ones bona fide; the colour bar gives the scale.
    """
    if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1]:
        raise ValueError(f"heatmap must be a square (G, G) grid, got shape {heatmap.shape}.")
    grid_size = heatmap.shape[0]
    width, height = image.size
    boxes = grid_boxes(width, height, patch_size, grid_size)
    x_edges = _cell_edges([left + patch_size / 2 for left, _, _, _ in boxes[:grid_size]], width)
    y_edges = _cell_edges([top + patch_size / 2 for _, top, _, _ in boxes[::grid_size]], height)

    figure = Figure(figsize=(6.4, 6.4 * height / width + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(np.asarray(image.convert("RGB")))
    overlay = axes.pcolormesh(x_edges, y_edges, heatmap, cmap="RdYlGn", vmin=0.0, vmax=1.0, alpha=0.45)
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    colorbar = figure.colorbar(overlay, ax=axes, fraction=0.046, pad=0.04)
    colorbar.set_label("patch liveness (0 = attack, 1 = bona fide)")
    axes.set_title(title or f"patch liveness, {grid_size}x{grid_size} patches of {patch_size} px", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


CSV_COLUMNS = ("path", "score", "label", "threshold", "error", "num_frames")


def write_predictions(
    predictions: Sequence[Prediction], path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write predictions as CSV (`CSV_COLUMNS`, one row per input) or JSON (`{**metadata, "summary",
    "predictions"}`, per-class probabilities and per-frame scores included), chosen by `path`'s extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"output file {path} must end in .csv or .json.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        document = {**(metadata or {}), "summary": summarize(predictions),
                    "predictions": [prediction.to_dict() for prediction in predictions]}
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for prediction in predictions:
            row = prediction.to_dict()
            writer.writerow({column: "" if row[column] is None else row[column] for column in CSV_COLUMNS})
    return path


def summarize(predictions: Sequence[Prediction]) -> dict[str, int]:
    """Counts of inputs: `total`, `live`, `spoof`, `failed`."""
    labels = [prediction.label for prediction in predictions]
    return {"total": len(labels), LIVE: labels.count(LIVE), SPOOF: labels.count(SPOOF),
            "failed": labels.count(None)}


__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "LivenessPredictor",
    "Prediction",
    "find_inputs",
    "is_video",
    "load_model_and_processor",
    "patch_heatmap",
    "sample_video_frames",
    "save_heatmap_png",
    "summarize",
    "write_predictions",
]
