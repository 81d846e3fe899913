"""The CSV dataset layout as Hugging Face `datasets.Dataset`s, with validation of the input.

Layout (README, "Data"):

    my_dataset/
        images/...                 image files, any sub-folders
        train.csv val.csv test.csv image_name,label[,patch_type][,group]   0 = spoof, 1 = bona fide

Every loaded dataset has the columns of `FEATURES`, in that order, so that datasets from several sources
concatenate without `concatenate_datasets` silently filling missing columns with None.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, Features, Value

LABEL_NAMES = ["spoof", "live"]
"""Binary label names: 0 = spoof (attack), 1 = bona fide (live)."""

FEATURES = Features(
    {
        "image": datasets.Image(),
        "label": ClassLabel(names=LABEL_NAMES),
        "patch_type": Value("string"),
        "group": Value("string"),
        "source": Value("string"),
        "image_name": Value("string"),
    }
)
"""Columns of every dataset this module returns."""

CSV_COLUMNS = ("image_name", "label", "patch_type", "group")
"""Columns a CSV may have, in the order a CSV without header gives them; the first two are required."""

MAX_ROWS_SHOWN = 5


class DatasetFormatError(ValueError):
    """An input dataset breaks the layout's rules; the message names the file and the offending rows."""


@dataclass
class _Row:
    line: int
    image_name: str
    label: str
    patch_type: str | None
    group: str | None


def _describe(rows: Sequence[_Row], what: str, detail=lambda row: repr(row.image_name)) -> str:
    """`"3 rows with X: line 4 ('a.jpg'), ... and 1 more"`, at most `MAX_ROWS_SHOWN` rows spelled out."""
    shown = ", ".join(f"line {row.line} ({detail(row)})" for row in rows[:MAX_ROWS_SHOWN])
    more = f" and {len(rows) - MAX_ROWS_SHOWN} more" if len(rows) > MAX_ROWS_SHOWN else ""
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''} {what}: {shown}{more}"


def _read_rows(csv_path: Path) -> list[_Row]:
    """Parse a CSV with or without header into rows of stripped strings (blank lines skipped).

    A first row is a header when one of its cells is a known column name (`CSV_COLUMNS`); then columns
    are found by name and others are ignored. Without header, columns are taken by position.
    """
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        records = [(reader.line_num, [cell.strip() for cell in cells]) for cells in reader if any(cells)]
    if not records:
        raise DatasetFormatError(f"{csv_path}: the CSV is empty (expected rows 'image_name,label').")

    header = [cell.lower() for cell in records[0][1]]
    if any(cell in CSV_COLUMNS for cell in header):
        missing = [name for name in CSV_COLUMNS[:2] if name not in header]
        if missing:
            raise DatasetFormatError(
                f"{csv_path}: missing columns {missing}: the header {records[0][1]} must name "
                f"image_name and label (optional: patch_type, group)."
            )
        positions = {name: header.index(name) for name in CSV_COLUMNS if name in header}
        records = records[1:]
    else:
        positions = {name: index for index, name in enumerate(CSV_COLUMNS)}
    if not records:
        raise DatasetFormatError(f"{csv_path}: the CSV has a header but no rows.")

    short = [
        (line, cells)
        for line, cells in records
        if len(cells) <= max(positions["image_name"], positions["label"])
    ]
    if short:
        rows = [_Row(line, ",".join(cells), "", None, None) for line, cells in short]
        problem = _describe(rows, "with fewer cells than the image_name and label columns")
        raise DatasetFormatError(f"{csv_path}: missing columns: {problem}.")

    def cell(cells: list[str], name: str) -> str | None:
        index = positions.get(name)
        return cells[index] if index is not None and index < len(cells) else None

    return [
        _Row(
            line,
            cell(cells, "image_name"),
            cell(cells, "label"),
            cell(cells, "patch_type"),
            cell(cells, "group"),
        )
        for line, cells in records
    ]


def _is_absolute(name: str) -> bool:
    # Windows drive letters and UNC paths count too: a CSV written on Windows must not escape on Linux.
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None


def _normalised(name: str) -> str:
    """The CSV path with "/" separators (Windows CSVs use "\\"), normalised lexically."""
    return posixpath.normpath(name.replace("\\", "/"))


def _escapes(name: str) -> bool:
    normal = _normalised(name)
    return normal == ".." or normal.startswith("../")


def _is_safe(name: str) -> bool:
    """A non-empty path relative to the dataset root that stays inside it."""
    return bool(name) and not _is_absolute(name) and not _escapes(name)


def _check_rows(rows: list[_Row], has_patch_type: bool) -> list[str]:
    """Problems that need no file system: labels, patch types, unsafe paths, duplicates (warned)."""
    problems = []
    empty_names = [row for row in rows if not row.image_name]
    if empty_names:
        problems.append(
            _describe(empty_names, "with an empty image_name", lambda row: f"label {row.label!r}")
        )
    bad_labels = [row for row in rows if row.label not in ("0", "1")]
    if bad_labels:
        problems.append(
            _describe(
                bad_labels,
                "with labels outside {0, 1}",
                lambda row: f"{row.image_name!r}, label {row.label!r}",
            )
        )
    unsafe = [row for row in rows if row.image_name and not _is_safe(row.image_name)]
    if unsafe:
        problems.append(
            _describe(
                unsafe, "with paths that are absolute or escape the dataset root (paths must be relative)"
            )
        )
    if has_patch_type:
        empty_types = [row for row in rows if not row.patch_type]
        if empty_types:
            problems.append(_describe(empty_types, "with an empty patch_type"))
        problems.extend(
            _patch_type_conflicts([row for row in rows if row.patch_type and row.label in ("0", "1")])
        )
    return problems


def _patch_type_conflicts(rows: list[_Row]) -> list[str]:
    """A patch type is live or spoof for every row: the rows of its minority label contradict it."""
    by_type: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        by_type[row.patch_type].append(row)
    problems = []
    for patch_type, typed_rows in sorted(by_type.items()):
        counts = Counter(row.label for row in typed_rows)
        # The reserved binary names fix their label; any other type takes its majority label.
        expected = {"spoof": "0", "live": "1"}.get(patch_type) or counts.most_common(1)[0][0]
        wrong = [row for row in typed_rows if row.label != expected]
        if wrong:
            kind = LABEL_NAMES[int(expected)]
            problems.append(
                _describe(
                    wrong,
                    f"whose patch type {patch_type!r} contradicts the binary label (it is a {kind} type, "
                    f"label {expected})",
                    lambda row: f"{row.image_name!r}, label {row.label}",
                )
            )
    return problems


def _warn_duplicates(rows: list[_Row], csv_path: Path) -> list[str]:
    """Warn about images listed twice; an image listed with two labels is an error (returned)."""
    by_name: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        by_name[_normalised(row.image_name)].append(row)
    repeated = [row for same in by_name.values() if len(same) > 1 for row in same[1:]]
    if not repeated:
        return []
    conflicting = [row for same in by_name.values() if len({r.label for r in same}) > 1 for row in same]
    if conflicting:
        return [
            _describe(
                conflicting,
                "listing the same image with different labels",
                lambda r: f"{r.image_name!r}, label {r.label}",
            )
        ]
    warnings.warn(
        f"{csv_path}: duplicated images, {_describe(repeated, 'repeating an earlier row')}.", stacklevel=3
    )
    return []


def _resolve_root(
    rows: list[_Row], csv_path: Path, images_root: str | os.PathLike | None
) -> tuple[Path, list[_Row]]:
    """Pick the folder the CSV paths are relative to, and the rows whose file is missing there.

    Without `images_root`: `images/` beside the CSV when it holds the listed files, otherwise the CSV's
    own folder (whichever misses fewer files; `images/` on a tie).
    """
    folder = csv_path.parent.absolute()  # absolute: the dataset must not depend on the working directory
    candidates = [Path(images_root).absolute()] if images_root is not None else [folder / "images", folder]
    candidates = [root for root in candidates if root.is_dir()] or candidates[:1]
    best: tuple[Path, list[_Row]] | None = None
    for root in candidates:
        missing = [row for row in rows if not (root / _normalised(row.image_name)).is_file()]
        if best is None or len(missing) < len(best[1]):
            best = (root, missing)
        if not missing:
            break
    return best


def load_csv_dataset(
    csv_path: str | os.PathLike,
    images_root: str | os.PathLike | None = None,
    source: str | None = None,
    check_files: bool = True,
) -> Dataset:
    """Load one CSV of the layout as a `Dataset` with the columns of `FEATURES`.

    Args:
        csv_path: CSV with rows `image_name,label[,patch_type][,group]`, with or without header.
        images_root: folder the CSV paths are relative to. Default: `images/` beside the CSV when it holds
            the files, else the CSV's own folder.
        source: dataset name stored in the `source` column. Default: the name of the CSV's folder.
        check_files: check that every image file exists (a stat per row).

    Returns:
        A `Dataset` whose `image` column decodes lazily from the file; `patch_type` defaults to
        "spoof"/"live" from the label, `group` to the CSV path of the image.

    Raises:
        DatasetFormatError: naming the file and the offending rows (a few shown, with a count) for missing
            columns, labels outside {0, 1}, patch types contradicting the label, unsafe or missing paths,
            an empty CSV. Duplicated rows only warn.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such CSV file.")
    rows = _read_rows(csv_path)
    has_patch_type = any(row.patch_type is not None for row in rows)
    problems = _check_rows(rows, has_patch_type)
    problems += _warn_duplicates(rows, csv_path)
    root, missing = _resolve_root([row for row in rows if _is_safe(row.image_name)], csv_path, images_root)
    if check_files and missing:
        problems.append(_describe(missing, f"whose image file does not exist under {root}"))
    if problems:
        raise DatasetFormatError(f"{csv_path}: invalid dataset CSV:\n  - " + "\n  - ".join(problems))

    source = source or csv_path.resolve().parent.name
    return Dataset.from_dict(
        {
            "image": [str(root / _normalised(row.image_name)) for row in rows],
            "label": [int(row.label) for row in rows],
            "patch_type": [row.patch_type or LABEL_NAMES[int(row.label)] for row in rows],
            "group": [row.group or row.image_name for row in rows],
            "source": [source] * len(rows),
            "image_name": [row.image_name for row in rows],
        },
        features=FEATURES,
    )


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the CSV layout: a root folder with `images/` and `{split}.csv` files.

    Args:
        root: the dataset folder.
        name: the `source` name. Default: the folder's name.
        images_root: folder the CSV paths are relative to (see `load_csv_dataset`).
        csv_files: explicit CSV path per split, overriding `root/{split}.csv` (relative paths are taken
            from `root`; None keeps the default).
    """

    root: str | os.PathLike
    name: str | None = None
    images_root: str | os.PathLike | None = None
    csv_files: Mapping[str, str | os.PathLike] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.name or Path(self.root).resolve().name

    def csv_path(self, split: str) -> Path:
        return Path(self.root) / (self.csv_files.get(split) or f"{split}.csv")

    def has_split(self, split: str) -> bool:
        return self.csv_path(split).is_file()

    def load(self, split: str) -> Dataset:
        """The split's CSV as a `Dataset` (see `load_csv_dataset`)."""
        return load_csv_dataset(self.csv_path(split), images_root=self.images_root, source=self.source)


def _as_spec(spec: DatasetSpec | str | os.PathLike) -> DatasetSpec:
    return spec if isinstance(spec, DatasetSpec) else DatasetSpec(root=spec)


def load_training_data(
    specs: Sequence[DatasetSpec | str | os.PathLike],
    split_train: str = "train",
    split_val: str = "val",
) -> tuple[Dataset, dict[str, Dataset]]:
    """Load several datasets: one concatenated training set, and one validation set per source.

    Args:
        specs: datasets (a `DatasetSpec` or a dataset folder each); their source names must differ.
        split_train / split_val: CSV names (without `.csv`). Every dataset needs a training CSV; one
            without a validation CSV is only trained on (warned).

    Returns:
        `(train, val)`: `train` concatenates the training splits (its `source` column tells them apart);
        `val` maps each source name to its validation `Dataset`.
    """
    specs = [_as_spec(spec) for spec in specs]
    if not specs:
        raise ValueError("load_training_data needs at least one dataset.")
    sources = Counter(spec.source for spec in specs)
    duplicated = sorted(name for name, count in sources.items() if count > 1)
    if duplicated:
        raise ValueError(
            f"several datasets share the source name(s) {duplicated}; give each a distinct name."
        )

    train_parts, val = [], {}
    for spec in specs:
        if not spec.has_split(split_train):
            raise FileNotFoundError(
                f"{spec.csv_path(split_train)}: training CSV not found for dataset {spec.source!r}."
            )
        train_parts.append(spec.load(split_train))
        if spec.has_split(split_val):
            val[spec.source] = spec.load(split_val)
        else:
            warnings.warn(
                f"{spec.csv_path(split_val)} not found: dataset {spec.source!r} is not validated.",
                stacklevel=2,
            )
    patch_type_vocabulary([*train_parts, *val.values()])  # raises on types that contradict across datasets
    train = train_parts[0] if len(train_parts) == 1 else datasets.concatenate_datasets(train_parts)
    return train, val


def column_values(dataset: Dataset, column: str) -> list:
    """A column as a Python list, without decoding images or running a transform set on the dataset."""
    return dataset.with_format("arrow")[column].to_pylist()


def binary_patch_types(dataset: Dataset) -> Dataset:
    """`dataset` with every patch type replaced by "spoof" / "live" from its label (a binary model on
    fine-grained data). Reads only the label column: no image is decoded."""
    return dataset.map(
        lambda labels: {"patch_type": [LABEL_NAMES[label] for label in labels]},
        input_columns="label",
        batched=True,
        desc="binary patch types",
    )


def patch_type_vocabulary(dataset_list: Iterable[Dataset]) -> tuple[dict[int, str], list[str]]:
    """The model's classes from the patch types of some datasets.

    Returns:
        `(id2label, live_labels)`: spoof types first, then live types, each sorted by name, so that the
        binary case gives `{0: "spoof", 1: "live"}` (class id = binary label).

    Raises:
        DatasetFormatError: when a patch type is live in one place and spoof in another.
    """
    labels_of: dict[str, set[int]] = defaultdict(set)
    sources_of: dict[str, set[str]] = defaultdict(set)
    for dataset in dataset_list:
        for patch_type, label, source in zip(
            *(column_values(dataset, name) for name in ("patch_type", "label", "source")), strict=True
        ):
            labels_of[patch_type].add(label)
            sources_of[patch_type].add(source)
    conflicts = sorted(name for name, labels in labels_of.items() if len(labels) > 1)
    if conflicts:
        raise DatasetFormatError(
            "patch types that are live in one dataset and spoof in another: "
            + ", ".join(f"{name!r} (sources {sorted(sources_of[name])})" for name in conflicts)
        )
    spoof = sorted(name for name, labels in labels_of.items() if labels == {0})
    live = sorted(name for name, labels in labels_of.items() if labels == {1})
    return dict(enumerate(spoof + live)), live


def _image_paths(dataset: Dataset) -> list[str | None]:
    """The `path` of every image cell (None where only bytes are stored), read without loading the bytes."""
    import pyarrow.compute as pc

    column = dataset.cast_column("image", datasets.Image(decode=False)).with_format("arrow")["image"]
    if not hasattr(column, "type") or not hasattr(column.type, "get_field_index"):
        return [str(value) for value in column.to_pylist()]  # a plain string column of paths
    return pc.struct_field(column, "path").to_pylist()


def conform_dataset(dataset: Dataset, source: str) -> Dataset:
    """Give a dataset from elsewhere (`save_to_disk`, parquet, the Hub) the columns of `FEATURES`.

    `image` and `label` (0 = spoof, 1 = bona fide, or a `ClassLabel` naming "spoof" and "live") are
    required; `patch_type`, `group`, `source` and `image_name` are filled in as `load_csv_dataset` does,
    `image_name` from the image's file name or else the row number.
    """
    missing = [name for name in ("image", "label") if name not in dataset.column_names]
    if missing:
        raise DatasetFormatError(
            f"{source}: missing columns {missing}; the dataset has {dataset.column_names}."
        )
    label_feature = dataset.features["label"]
    if isinstance(label_feature, ClassLabel) and label_feature.names != LABEL_NAMES:
        if sorted(label_feature.names) != sorted(LABEL_NAMES):
            raise DatasetFormatError(
                f"{source}: label names {label_feature.names} are not {LABEL_NAMES}; cast the label column "
                "to integers 0 = spoof, 1 = bona fide first."
            )
        dataset = dataset.align_labels_with_mapping({name: i for i, name in enumerate(LABEL_NAMES)}, "label")
    labels = column_values(dataset, "label")
    bad = [index for index, label in enumerate(labels) if label not in (0, 1)]
    if bad:
        shown = ", ".join(f"row {i} (label {labels[i]!r})" for i in bad[:MAX_ROWS_SHOWN])
        raise DatasetFormatError(f"{source}: {len(bad)} rows with labels outside {{0, 1}}: {shown}.")

    names = column_values(dataset, "image_name") if "image_name" in dataset.column_names else None
    if names is None:
        paths = _image_paths(dataset)
        names = [path if path else str(index) for index, path in enumerate(paths)]
        dataset = dataset.add_column("image_name", names)
    fill = {
        "patch_type": lambda: [LABEL_NAMES[label] for label in labels],
        "group": lambda: names,
        "source": lambda: [source] * len(labels),
    }
    for name, values in fill.items():
        if name not in dataset.column_names:
            dataset = dataset.add_column(name, values())
    dataset = dataset.select_columns(list(FEATURES)).cast(FEATURES)
    patch_type_vocabulary([dataset])  # patch types must agree with the labels
    return dataset


def load_any_dataset(
    path_or_id: str | os.PathLike,
    split: str = "test",
    images_root: str | os.PathLike | None = None,
    source: str | None = None,
) -> Dataset:
    """Load one split from any of the supported forms, with the columns of `FEATURES`.

    Accepted, tried in this order:
        - a CSV file, or a folder of the CSV layout with `{split}.csv`;
        - a parquet file, or a folder with `{split}.parquet` (`prepare_dataset.py --format parquet` output);
        - a folder written by `save_to_disk` (a `DatasetDict`: its `split`; a `Dataset`: itself);
        - otherwise a dataset id on the Hugging Face Hub (`datasets.load_dataset(path_or_id, split)`).

    `source` defaults to the dataset folder's name, or the Hub id's last part.
    """
    path = Path(path_or_id)
    if path.is_file() and path.suffix == ".csv":
        return load_csv_dataset(path, images_root=images_root, source=source)
    if path.is_file() and path.suffix == ".parquet":
        return conform_dataset(Dataset.from_parquet(str(path)), source or path.resolve().parent.name)
    if path.is_dir():
        source = source or path.resolve().name
        if (path / f"{split}.csv").is_file():
            return load_csv_dataset(path / f"{split}.csv", images_root=images_root, source=source)
        if (path / f"{split}.parquet").is_file():
            return conform_dataset(Dataset.from_parquet(str(path / f"{split}.parquet")), source)
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DatasetFormatError(f"{path}: no split {split!r}; the saved dataset has {list(loaded)}.")
                loaded = loaded[split]
            return conform_dataset(loaded, source)
        raise FileNotFoundError(
            f"{path}: found neither {split}.csv, {split}.parquet nor a dataset written by save_to_disk."
        )
    if path.exists():
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected .csv or .parquet.")
    try:
        loaded = datasets.load_dataset(str(path_or_id), split=split)
    except Exception as error:  # offline mode, network, unknown id: all mean "not available"
        raise FileNotFoundError(
            f"{path_or_id}: no such local file or folder, and loading it from the Hugging Face Hub failed "
            f"({type(error).__name__}: {error})."
        ) from error
    return conform_dataset(loaded, source or str(path_or_id).rstrip("/").split("/")[-1])
