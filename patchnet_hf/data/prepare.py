"""Conversion tools behind `scripts/prepare_dataset.py`.

- A folder tree of images and videos -> the CSV layout (labels from folder names, group-wise split,
  optional face crops from box files, sampled video frames).
- The CSV layout -> a self-contained Hugging Face dataset (`save_to_disk`, parquet, or the Hub).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import datasets
import numpy as np
import pandas as pd
from datasets.table import embed_table_storage
from PIL import Image
from tqdm.auto import tqdm

from ..image_processing_patchnet import to_rgb_upright
from .loading import (
    LABEL_NAMES,
    MAX_ROWS_SHOWN,
    DatasetFormatError,
    _image_paths,
    column_values,
    load_csv_dataset,
)
from .transforms import CorruptImageError, decode_image
from .video import VIDEO_EXTENSIONS, sample_video_frames

logger = logging.getLogger(__name__)

DEFAULT_SPOOF_NAMES = ("spoof", "attack", "fake", "print", "replay", "mask", "paper", "screen", "display")
DEFAULT_LIVE_NAMES = ("live", "real", "bonafide", "bona_fide", "genuine")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
LAYOUT_CSVS = tuple(f"{split}.csv" for split in SPLITS)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(str(item) for item in items[:MAX_ROWS_SHOWN])
    return shown + (f" and {len(items) - MAX_ROWS_SHOWN} more" if len(items) > MAX_ROWS_SHOWN else "")


# --- folder tree -> CSV layout ---------------------------------------------------------------------------


@dataclass
class SourceFile:
    """A media file of the input tree and what its path says about it."""

    path: Path
    rel_path: str  # POSIX path relative to the input folder
    label: int
    patch_type: str
    group: str  # the CSV's group: for a video, the video itself
    split_key: str  # the unit kept whole by the split (a person or a recording session)

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_EXTENSIONS


def label_from_path(
    rel_path: str, spoof_names: Sequence[str], live_names: Sequence[str]
) -> tuple[int, str] | None:
    """`(binary label, patch type)` from the folders of a relative path, or None when no folder is a label.

    Folder names match whole path components, case-insensitively ("print" does not match "fingerprint").
    The patch type is the deepest matching folder's name (`spoof/print/x.jpg` -> "print").

    Raises:
        ValueError: when the path has both a live and a spoof folder.
    """
    spoof, live = {name.lower() for name in spoof_names}, {name.lower() for name in live_names}
    matches = [
        (int(folder in live), folder)
        for folder in (part.lower() for part in PurePosixPath(rel_path).parts[:-1])
        if folder in spoof or folder in live
    ]
    if not matches:
        return None
    if len({label for label, _ in matches}) > 1:
        raise ValueError(f"{rel_path}: has both live and spoof folders {[name for _, name in matches]}.")
    return matches[-1]


def _folder_group(rel_path: str, label_folders: set[str]) -> str:
    """The folders of a path that are not label names ("live/s01/a.jpg" -> "s01"); "" for none."""
    return "/".join(part for part in PurePosixPath(rel_path).parts[:-1] if part.lower() not in label_folders)


def scan_folder_tree(
    input_dir: str | os.PathLike,
    spoof_names: Sequence[str] = DEFAULT_SPOOF_NAMES,
    live_names: Sequence[str] = DEFAULT_LIVE_NAMES,
    fine_grained: bool = False,
    group_regex: str | None = None,
) -> list[SourceFile]:
    """Find the images and videos under `input_dir` and label them from their folder names.

    Groups: by default the non-label folders of the path (`live/s01/a.jpg` and `print/s01/b.jpg` share
    "s01"), or the file itself when there are none. `group_regex` takes the group from the relative path
    instead (its first capture group, else the whole match). A video's frames form one group, the video;
    the split keeps whole the group the path or regex gives.

    Args:
        fine_grained: patch types from the deepest label folder's name; otherwise "spoof" / "live".

    Raises:
        DatasetFormatError: naming the files without a label folder, with contradictory label folders, or
            not matched by `group_regex`.
    """
    input_dir = Path(input_dir)
    media = sorted(
        path
        for path in input_dir.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    )
    if not media:
        raise DatasetFormatError(f"{input_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) or videos found.")
    label_folders = {name.lower() for name in (*spoof_names, *live_names)}
    pattern = re.compile(group_regex) if group_regex else None
    files, unlabelled, ambiguous, unmatched = [], [], [], []
    for path in media:
        rel_path = path.relative_to(input_dir).as_posix()
        try:
            found = label_from_path(rel_path, spoof_names, live_names)
        except ValueError:
            ambiguous.append(rel_path)
            continue
        if found is None:
            unlabelled.append(rel_path)
            continue
        label, folder = found
        if pattern is not None:
            match = pattern.search(rel_path)
            if match is None:
                unmatched.append(rel_path)
                continue
            key = match.group(1) if pattern.groups else match.group(0)
        else:
            key = _folder_group(rel_path, label_folders) or rel_path
        patch_type = folder if fine_grained else LABEL_NAMES[label]
        is_video = path.suffix.lower() in VIDEO_EXTENSIONS
        files.append(SourceFile(path, rel_path, label, patch_type, rel_path if is_video else key, key))

    problems = []
    if unlabelled:
        problems.append(
            f"{len(unlabelled)} files with no label folder (spoof names {list(spoof_names)}, live names "
            f"{list(live_names)}, matched as whole folder names): {_listing(unlabelled)}"
        )
    if ambiguous:
        problems.append(f"{len(ambiguous)} files under both a live and a spoof folder: {_listing(ambiguous)}")
    if unmatched:
        problems.append(
            f"{len(unmatched)} files not matched by --group-regex {group_regex!r}: {_listing(unmatched)}"
        )
    if problems:
        raise DatasetFormatError(
            f"{input_dir}: cannot label the folder tree:\n  - " + "\n  - ".join(problems)
        )
    return files


def split_by_group(
    keys: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    names: Sequence[str] = SPLITS,
) -> list[str]:
    """Assign each sample a split so that all samples of a group land in the same split.

    The distinct groups are shuffled with `seed` and cut by `fractions` of the number of groups; a split
    with a positive fraction gets at least one group when there are enough groups.

    Returns: the split name of every key, in order.
    """
    if len(fractions) != len(names) or any(f < 0 for f in fractions) or not sum(fractions) > 0:
        raise ValueError(
            f"split fractions {list(fractions)} must be {len(names)} non-negative numbers, not all 0."
        )
    groups = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(groups))
    weights = np.asarray(fractions, dtype=float) / sum(fractions)
    sizes = np.floor(weights * len(groups)).astype(int)
    for index in np.argsort(-(weights * len(groups) - sizes))[: len(groups) - sizes.sum()]:
        sizes[index] += 1  # largest remainders first
    for index in np.flatnonzero((weights > 0) & (sizes == 0)):
        donor = int(np.argmax(sizes))
        if sizes[donor] > 1:
            sizes[donor] -= 1
            sizes[index] += 1
    bounds = np.cumsum(sizes)
    split_of = {
        groups[g]: names[int(np.searchsorted(bounds, rank, side="right"))] for rank, g in enumerate(order)
    }
    return [split_of[key] for key in keys]


def read_face_box(box_path: str | os.PathLike, box_format: str = "xywh") -> tuple[float, float, float, float]:
    """`(left, top, right, bottom)` in pixels from the first line of a box file.

    The line holds at least four numbers separated by spaces or commas: `x y width height` ("xywh") or
    `x1 y1 x2 y2` ("xyxy"); further numbers (a score) are ignored.

    Raises:
        DatasetFormatError: naming the file, when the line does not start with four numbers.
    """
    with open(box_path, encoding="utf-8") as handle:
        line = handle.readline().strip()
    try:
        numbers = [float(value) for value in re.split(r"[\s,]+", line) if value][:4]
    except ValueError:
        numbers = []
    if len(numbers) < 4:
        raise DatasetFormatError(f"{box_path}: expected 4 numbers on the first line, got {line!r}.")
    left, top, third, fourth = numbers
    if box_format == "xywh":
        return left, top, left + third, top + fourth
    if box_format == "xyxy":
        return left, top, third, fourth
    raise ValueError(f"unknown box format {box_format!r}; expected 'xywh' or 'xyxy'.")


def square_box(
    box: tuple[float, float, float, float], scale: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Expand a box about its centre by `scale` into a square, then fit it in a `width x height` image.

    The square is shifted inside the image, and shrunk only when it is larger than the image.
    """
    left, top, right, bottom = box
    side = min(max(right - left, bottom - top) * scale, width, height)
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    x = int(round(min(max(centre_x - side / 2, 0), width - side)))
    y = int(round(min(max(centre_y - side / 2, 0), height - side)))
    side = int(side)
    return x, y, x + side, y + side


def verify_images(paths: Sequence[str | os.PathLike], progress: bool = True) -> list[tuple[str, str]]:
    """Decode every image fully; returns `(path, reason)` for those that cannot be decoded."""
    failures = []
    for path in tqdm(paths, desc="verifying images", unit="img", disable=not progress):
        try:
            decode_image(str(path))
        except CorruptImageError as error:
            failures.append((str(path), str(error.__cause__ or error)))
    return failures


def _handle_corrupt(failures: list[tuple[str, str]], where: str, skip_corrupt: bool) -> set[str]:
    """Raise on undecodable files, or warn and return them when skipping was asked for."""
    if not failures:
        return set()
    listing = _listing([f"{path} ({reason})" for path, reason in failures])
    if not skip_corrupt:
        raise CorruptImageError(
            f"{where}: {len(failures)} undecodable files: {listing}. Fix or remove them, or pass "
            "--skip-corrupt."
        )
    logger.warning("%s: skipped %d undecodable files: %s", where, len(failures), listing)
    return {path for path, _ in failures}


def _write_image(item: SourceFile, images_dir: Path, face_boxes: dict | None) -> str:
    """Copy (or face-crop) one image into `images_dir`; returns its CSV path."""
    if face_boxes is None:
        target = images_dir / item.rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)  # the original bytes: re-encoding would alter spoof cues
        return item.rel_path
    box_path = item.path.with_name(item.path.stem + face_boxes["suffix"])
    if not box_path.is_file():
        raise FileNotFoundError(f"{item.path}: face box file {box_path.name} not found beside it.")
    image = to_rgb_upright(decode_image(str(item.path)))
    face = read_face_box(box_path, face_boxes["format"])
    box = square_box(face, face_boxes["scale"], *image.size)
    if box[2] - box[0] < 1:
        raise DatasetFormatError(
            f"{box_path}: the face box (left, top, right, bottom) = {face}, scaled by {face_boxes['scale']}, "
            f"leaves nothing of {item.path} ({image.width}x{image.height}) to crop."
        )
    rel_path = PurePosixPath(item.rel_path).with_suffix(".png").as_posix()  # lossless: no new JPEG artefacts
    target = images_dir / rel_path
    target.parent.mkdir(parents=True, exist_ok=True)
    image.crop(box).save(target)
    return rel_path


def _write_frames(item: SourceFile, images_dir: Path, frames_per_video: int) -> list[str]:
    """Sampled frames of one video as PNG files in a folder named after it; returns their CSV paths."""
    folder = PurePosixPath(item.rel_path).with_suffix("")
    (images_dir / folder).mkdir(parents=True, exist_ok=True)
    rel_paths = []
    for index, frame in enumerate(sample_video_frames(item.path, frames_per_video)[1]):
        rel_path = (folder / f"frame_{index:04d}.png").as_posix()
        Image.fromarray(frame).save(images_dir / rel_path)
        rel_paths.append(rel_path)
    return rel_paths


def folder_to_csv_layout(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    spoof_names: Sequence[str] = DEFAULT_SPOOF_NAMES,
    live_names: Sequence[str] = DEFAULT_LIVE_NAMES,
    fine_grained: bool = False,
    group_regex: str | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    frames_per_video: int = 8,
    face_boxes: bool = False,
    box_suffix: str = ".txt",
    box_format: str = "xywh",
    box_scale: float = 1.3,
    skip_corrupt: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Convert a folder tree of images and videos into the CSV layout in `output_dir`.

    See `scan_folder_tree` for labels and groups, `split_by_group` for the split, `square_box` for face
    crops (a box file `<image stem><box_suffix>` beside every image). Images are copied byte for byte, or
    cropped and saved as PNG; videos give `frames_per_video` PNG frames each, in a folder named after the
    video. Undecodable images are found by a verify pass before anything is written.

    Returns: one row per written image: `image_name, label, patch_type, group, split`.
    """
    output_dir = Path(output_dir)
    existing = [name for name in LAYOUT_CSVS if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{output_dir}: already holds {existing}; choose another folder or pass --overwrite."
        )
    files = scan_folder_tree(input_dir, spoof_names, live_names, fine_grained, group_regex)
    images = [item for item in files if not item.is_video]
    corrupt = _handle_corrupt(
        verify_images([item.path for item in images], progress), str(input_dir), skip_corrupt
    )
    files = [item for item in files if str(item.path) not in corrupt]
    keys = [item.split_key for item in files]
    wanted = sum(fraction > 0 for fraction in fractions)
    if len(set(keys)) < wanted:
        raise DatasetFormatError(
            f"{input_dir}: only {len(set(keys))} group(s) {sorted(set(keys))[:MAX_ROWS_SHOWN]} for {wanted} "
            "splits. A file's group is the path's non-label folders: pass --group-regex to take it from "
            "elsewhere, or --split with fewer splits."
        )
    splits = split_by_group(keys, fractions, seed)

    boxes = {"suffix": box_suffix, "format": box_format, "scale": box_scale} if face_boxes else None
    images_dir = output_dir / "images"
    rows, broken_videos = [], []
    for item, split in zip(
        tqdm(files, desc="writing", unit="file", disable=not progress), splits, strict=True
    ):
        if item.is_video:
            try:
                names = _write_frames(item, images_dir, frames_per_video)
            except CorruptImageError as error:
                broken_videos.append((str(item.path), str(error)))
                continue
        else:
            names = [_write_image(item, images_dir, boxes)]
        rows += [
            dict(image_name=name, label=item.label, patch_type=item.patch_type, group=item.group, split=split)
            for name in names
        ]
    _handle_corrupt(broken_videos, str(input_dir), skip_corrupt)

    table = pd.DataFrame(rows, columns=["image_name", "label", "patch_type", "group", "split"])
    columns = (
        ["image_name", "label", "patch_type", "group"] if fine_grained else ["image_name", "label", "group"]
    )
    for split in SPLITS:
        part = table[table["split"] == split]
        if len(part):
            part[columns].to_csv(output_dir / f"{split}.csv", index=False)
    return table


# --- CSV layout -> Hugging Face dataset ------------------------------------------------------------------


def is_csv_layout(path: str | os.PathLike) -> bool:
    """Whether a folder is in the CSV layout (holds a train, val or test CSV)."""
    return any((Path(path) / name).is_file() for name in LAYOUT_CSVS)


def load_csv_layout(
    input_dir: str | os.PathLike,
    images_root: str | os.PathLike | None = None,
    source: str | None = None,
    verify: bool = True,
    skip_corrupt: bool = False,
    progress: bool = True,
) -> datasets.DatasetDict:
    """Every `*.csv` of a CSV-layout folder as one split (named after the file), validated and verified."""
    input_dir = Path(input_dir)
    csv_files = sorted(input_dir.glob("*.csv"))
    if not csv_files:
        raise FileNotFoundError(f"{input_dir}: no CSV files; expected {', '.join(LAYOUT_CSVS)}.")
    splits = datasets.DatasetDict()
    for csv_path in csv_files:
        dataset = load_csv_dataset(
            csv_path, images_root=images_root, source=source or input_dir.resolve().name
        )
        if verify:
            paths = _image_paths(dataset)
            corrupt = _handle_corrupt(verify_images(paths, progress), str(csv_path), skip_corrupt)
            if corrupt:
                dataset = dataset.select([i for i, path in enumerate(paths) if path not in corrupt])
        splits[csv_path.stem] = dataset
    return splits


def _embedded(dataset: datasets.Dataset) -> datasets.Dataset:
    """Image bytes read into the table (parquet does not embed local files by itself)."""
    return (
        dataset.with_format("arrow")
        .map(embed_table_storage, batched=True, desc="embedding images")
        .with_format()
    )


def export_dataset(splits: datasets.DatasetDict, output: str, fmt: str, private: bool = False) -> None:
    """Write `splits` as a self-contained dataset, the images embedded.

    Args:
        output: a folder ("disk": `save_to_disk`; "parquet": one `{split}.parquet` per split) or, for
            "hub", a repository id (`push_to_hub`, needing the network and a write token).
    """
    if fmt == "disk":
        splits.save_to_disk(output)
    elif fmt == "parquet":
        Path(output).mkdir(parents=True, exist_ok=True)
        for split, dataset in splits.items():
            _embedded(dataset).to_parquet(str(Path(output) / f"{split}.parquet"))
    elif fmt == "hub":
        try:
            splits.push_to_hub(output, private=private)
        except Exception as error:  # offline mode, no network, no or bad token: nothing local is at risk
            raise RuntimeError(
                f"could not push to the Hub repository {output!r} ({type(error).__name__}: {error}). "
                "Check the network and your credentials (`hf auth login` or HF_TOKEN). Nothing local was "
                "changed; --format disk or parquet writes a local copy."
            ) from error
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected 'disk', 'parquet' or 'hub'.")


def summarize(table: pd.DataFrame) -> str:
    """Counts per split, binary label and patch type, as a printable table.

    Args:
        table: columns `split`, `label` (0/1) and `patch_type`.
    """
    table = table.assign(label=table["label"].map(dict(enumerate(LABEL_NAMES))))
    counts = pd.crosstab(
        table["split"], [table["label"], table["patch_type"]], margins=True, margins_name="total"
    )
    return counts.to_string()


def splits_table(splits: datasets.DatasetDict) -> pd.DataFrame:
    """The `split`, `label` and `patch_type` of every row of a `DatasetDict`, for `summarize`."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "split": name,
                    "label": column_values(dataset, "label"),
                    "patch_type": column_values(dataset, "patch_type"),
                }
            )
            for name, dataset in splits.items()
        ],
        ignore_index=True,
    )
