"""The CSV layout as datasets: path rules, validation errors, several sources, transforms, sampler."""

import csv
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from patchnet_hf import PatchNetImageProcessor
from patchnet_hf.data import (
    ClassBalancedSampler,
    CorruptImageError,
    DatasetFormatError,
    DatasetSpec,
    EvalTransform,
    TrainTransform,
    binary_patch_types,
    load_any_dataset,
    load_csv_dataset,
    load_training_data,
    patch_type_vocabulary,
)

PATCH = 32
BINARY = {"spoof": 0, "live": 1}


def write_image(path: Path, size=(48, 40), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_csv(path: Path, rows, header=("image_name", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def make_layout(root: Path, rows, header=("image_name", "label"), split="train") -> Path:
    """A dataset folder: images/<name> for every row, and <split>.csv."""
    for index, row in enumerate(rows):
        write_image(root / "images" / row[0], seed=index)
    return write_csv(root / f"{split}.csv", rows, header)


@pytest.fixture
def processor():
    return PatchNetImageProcessor(patch_size=PATCH, grid_size=2)


# --- loading and path rules -------------------------------------------------------------------------------


def test_header_and_headerless_csvs_load_the_same(tmp_path):
    rows = [("a/x.jpg", 0), ("b/y.png", 1)]
    with_header = load_csv_dataset(make_layout(tmp_path / "one", rows))
    without = load_csv_dataset(make_layout(tmp_path / "two", rows, header=None))
    for dataset in (with_header, without):
        assert dataset.column_names == ["image", "label", "patch_type", "group", "source", "image_name"]
        assert dataset["label"][:] == [0, 1]
        assert dataset["image_name"][:] == ["a/x.jpg", "b/y.png"]
        assert dataset["patch_type"][:] == ["spoof", "live"]  # filled from the binary label
        assert dataset["group"][:] == ["a/x.jpg", "b/y.png"]  # defaults to the image path
        assert dataset.features["label"].names == ["spoof", "live"]
        assert dataset[0]["image"].size == (48, 40)  # decoded lazily from the file
    assert with_header["source"][0] == "one" and without["source"][0] == "two"


def test_paths_relative_to_images_folder_or_to_the_csv(tmp_path):
    # Rule 1: images/ beside the CSV holds the files.
    layout = make_layout(tmp_path / "layout", [("x.jpg", 1)])
    assert Path(
        load_csv_dataset(layout).cast_column("image", datasets.Image(decode=False))[0]["image"]["path"]
    ) == (tmp_path / "layout" / "images" / "x.jpg")
    # Rule 2: a CSV kept beside its images, paths relative to the CSV's folder.
    write_image(tmp_path / "flat" / "faces" / "y.jpg")
    beside = write_csv(tmp_path / "flat" / "list.csv", [("faces/y.jpg", 0)])
    loaded = load_csv_dataset(beside).cast_column("image", datasets.Image(decode=False))
    assert Path(loaded[0]["image"]["path"]) == tmp_path / "flat" / "faces" / "y.jpg"
    # An explicit images_root wins.
    write_image(tmp_path / "elsewhere" / "z.jpg")
    explicit = write_csv(tmp_path / "csvs" / "test.csv", [("z.jpg", 1)])
    assert len(load_csv_dataset(explicit, images_root=tmp_path / "elsewhere")) == 1


def test_optional_columns_by_header_or_position(tmp_path):
    rows = [("a.jpg", 1, "live", "s1"), ("b.jpg", 0, "print", "s1"), ("c.jpg", 0, "replay", "")]
    named = load_csv_dataset(
        make_layout(tmp_path / "named", rows, header=("image_name", "label", "patch_type", "group")),
        source="mine",
    )
    positional = load_csv_dataset(make_layout(tmp_path / "positional", rows, header=None))
    for dataset in (named, positional):
        assert dataset["patch_type"][:] == ["live", "print", "replay"]
        assert dataset["group"][:] == ["s1", "s1", "c.jpg"]  # an empty group is the image itself
    assert named["source"][:] == ["mine"] * 3


def test_header_columns_in_any_order_and_extra_columns_ignored(tmp_path):
    rows = [("note", "1", "a.jpg"), ("note", "0", "b.jpg")]
    for index, (_, _, name) in enumerate(rows):
        write_image(tmp_path / "images" / name, seed=index)
    dataset = load_csv_dataset(
        write_csv(tmp_path / "train.csv", rows, header=("comment", "label", "image_name"))
    )
    assert dataset["image_name"][:] == ["a.jpg", "b.jpg"] and dataset["label"][:] == [1, 0]


# --- validation errors --------------------------------------------------------------------------------------


def csv_error(tmp_path, rows, header=("image_name", "label"), files=None) -> str:
    """Load a CSV whose listed images exist (or only `files`) and return the error message."""
    for index, name in enumerate(files if files is not None else [row[0] for row in rows]):
        write_image(tmp_path / "images" / name, seed=index)
    path = write_csv(tmp_path / "train.csv", rows, header)
    with pytest.raises(DatasetFormatError) as error:
        load_csv_dataset(path)
    message = str(error.value)
    assert str(path) in message
    return message


def test_missing_columns(tmp_path):
    message = csv_error(tmp_path, [("a.jpg",)], header=("image_name",))
    assert "missing columns ['label']" in message


def test_rows_missing_the_label_cell(tmp_path):
    message = csv_error(tmp_path / "headerless", [("a.jpg", 1), ("b.jpg",)], header=None)
    assert "missing columns" in message and "line 2" in message


def test_labels_outside_binary(tmp_path):
    message = csv_error(tmp_path, [("a.jpg", 1), ("b.jpg", 2), ("c.jpg", "live")])
    assert "2 rows with labels outside {0, 1}" in message
    assert "line 3 ('b.jpg', label '2')" in message and "line 4 ('c.jpg', label 'live')" in message


def test_many_offending_rows_are_shown_in_part_and_counted(tmp_path):
    rows = [(f"{index}.jpg", 7) for index in range(8)]
    message = csv_error(tmp_path, rows)
    assert "8 rows with labels outside {0, 1}" in message
    assert "and 3 more" in message and "line 7" not in message


def test_patch_type_contradicting_label(tmp_path):
    header = ("image_name", "label", "patch_type")
    rows = [("a.jpg", 0, "print"), ("b.jpg", 0, "print"), ("c.jpg", 1, "print"), ("d.jpg", 0, "live")]
    message = csv_error(tmp_path, rows, header=header)
    assert (
        "patch type 'print' contradicts the binary label" in message
        and "line 4 ('c.jpg', label 1)" in message
    )
    assert "patch type 'live' contradicts" in message and "line 5 ('d.jpg', label 0)" in message


def test_missing_image_files(tmp_path):
    message = csv_error(tmp_path, [("here.jpg", 0), ("gone.jpg", 1)], files=["here.jpg"])
    assert "1 row whose image file does not exist" in message and "line 3 ('gone.jpg')" in message


@pytest.mark.parametrize(
    "name",
    ["../outside.jpg", "a/../../outside.jpg", "/etc/outside.jpg", "C:\\x\\outside.jpg", "..\\outside.jpg"],
)
def test_path_traversal_and_absolute_paths_rejected(tmp_path, name):
    write_image(tmp_path / "outside.jpg")  # the file exists: the path itself must be refused
    message = csv_error(tmp_path / "dataset", [(name, 1)], files=[])
    assert "absolute or escape the dataset root" in message and repr(name) in message


def test_inner_dot_dot_that_stays_inside_is_allowed(tmp_path):
    make_layout(tmp_path, [("a/b.jpg", 1)])
    dataset = load_csv_dataset(write_csv(tmp_path / "val.csv", [("a/../a/b.jpg", 1)]))
    assert len(dataset) == 1


def test_empty_csv(tmp_path):
    (tmp_path / "train.csv").write_text("")
    with pytest.raises(DatasetFormatError, match="train.csv: the CSV is empty"):
        load_csv_dataset(tmp_path / "train.csv")
    (tmp_path / "val.csv").write_text("image_name,label\n")
    with pytest.raises(DatasetFormatError, match="val.csv: the CSV has a header but no rows"):
        load_csv_dataset(tmp_path / "val.csv")


def test_duplicated_rows_warn(tmp_path):
    path = make_layout(tmp_path, [("a.jpg", 1), ("b.jpg", 0)])
    write_csv(path, [("a.jpg", 1), ("b.jpg", 0), ("a.jpg", 1)])
    with pytest.warns(
        UserWarning, match=r"train.csv: duplicated images, 1 row repeating an earlier row: line 4"
    ):
        assert len(load_csv_dataset(path)) == 3


def test_same_image_with_two_labels_is_an_error(tmp_path):
    message = csv_error(tmp_path, [("a.jpg", 1), ("a.jpg", 0)])
    assert "listing the same image with different labels" in message


# --- several datasets ---------------------------------------------------------------------------------------


def test_concatenation_keeps_the_sources_apart(tmp_path):
    header = ("image_name", "label", "patch_type", "group")
    make_layout(tmp_path / "alpha", [("a.jpg", 1, "live", "p1"), ("b.jpg", 0, "print", "p1")], header)
    make_layout(tmp_path / "alpha", [("c.jpg", 1, "live", "p2")], header, split="val")
    make_layout(
        tmp_path / "beta", [("a.jpg", 0, "spoof", "v1"), ("b.jpg", 1, "live", "v1")]
    )  # binary, no types
    make_layout(tmp_path / "beta", [("c.jpg", 0)], split="val")
    train, val = load_training_data([tmp_path / "alpha", DatasetSpec(tmp_path / "beta", name="B")])

    assert train["source"][:] == ["alpha", "alpha", "B", "B"]
    assert train["patch_type"][:] == ["live", "print", "spoof", "live"]
    assert None not in train["group"][:]  # features were aligned, nothing filled with None
    assert sorted(val) == ["B", "alpha"]
    assert val["alpha"]["image_name"][:] == ["c.jpg"] and val["B"]["source"][:] == ["B"]
    id2label, live_labels = patch_type_vocabulary([train, *val.values()])
    assert id2label == {0: "print", 1: "spoof", 2: "live"} and live_labels == ["live"]


def test_several_datasets_need_distinct_names_and_agreeing_patch_types(tmp_path):
    make_layout(
        tmp_path / "one" / "data",
        [("a.jpg", 1, "live"), ("b.jpg", 0, "mask")],
        ("image_name", "label", "patch_type"),
    )
    make_layout(
        tmp_path / "two" / "data",
        [("a.jpg", 1, "mask"), ("b.jpg", 0, "print")],
        ("image_name", "label", "patch_type"),
    )
    with pytest.raises(ValueError, match="share the source name"):
        load_training_data([tmp_path / "one" / "data", tmp_path / "two" / "data"])
    with (
        pytest.warns(UserWarning, match="val.csv not found"),
        pytest.raises(DatasetFormatError, match="'mask'"),
    ):
        load_training_data(
            [
                DatasetSpec(tmp_path / "one" / "data", name="one"),
                DatasetSpec(tmp_path / "two" / "data", name="two"),
            ]
        )


def test_binary_vocabulary_matches_the_binary_label(tmp_path):
    dataset = load_csv_dataset(make_layout(tmp_path, [("a.jpg", 1), ("b.jpg", 0)]))
    assert patch_type_vocabulary([dataset]) == ({0: "spoof", 1: "live"}, ["live"])
    fine = load_csv_dataset(
        make_layout(
            tmp_path / "f",
            [("a.jpg", 1, "live"), ("b.jpg", 0, "print")],
            ("image_name", "label", "patch_type"),
        )
    )
    assert binary_patch_types(fine)["patch_type"][:] == ["live", "spoof"]


def test_load_any_dataset_accepts_every_form(tmp_path):
    make_layout(tmp_path / "layout", [("a.jpg", 1), ("b.jpg", 0)], split="test")
    from_csv = load_any_dataset(tmp_path / "layout")
    assert from_csv["image_name"][:] == ["a.jpg", "b.jpg"] and from_csv["source"][0] == "layout"
    assert len(load_any_dataset(tmp_path / "layout" / "test.csv")) == 2

    datasets.DatasetDict(test=from_csv).save_to_disk(str(tmp_path / "saved"))
    from_disk = load_any_dataset(tmp_path / "saved", split="test")
    assert from_disk["image_name"][:] == ["a.jpg", "b.jpg"] and from_disk["source"][0] == "layout"

    # A foreign dataset with only image and label: the other columns are filled in.
    bare = datasets.Dataset.from_dict(
        {"image": [str(tmp_path / "layout" / "images" / "a.jpg")], "label": [1]},
        features=datasets.Features(image=datasets.Image(), label=datasets.Value("int64")),
    )
    (tmp_path / "pq").mkdir()
    bare.to_parquet(str(tmp_path / "pq" / "test.parquet"))
    from_parquet = load_any_dataset(tmp_path / "pq")
    assert from_parquet["patch_type"][:] == ["live"] and from_parquet["source"][:] == ["pq"]
    assert from_parquet["image_name"][0].endswith("a.jpg")
    assert from_parquet.features == from_csv.features

    with pytest.raises(FileNotFoundError, match="no-such-user/no-such-dataset"):
        load_any_dataset("no-such-user/no-such-dataset")  # offline in the tests: a clear error


# --- transforms ---------------------------------------------------------------------------------------------


@pytest.fixture
def fine_dataset(tmp_path):
    rows = [("live/a.jpg", 1, "live"), ("print/b.png", 0, "print"), ("small/c.jpg", 0, "print")]
    root = tmp_path / "fine"
    write_image(root / "images" / "live" / "a.jpg", size=(64, 48), seed=1)
    write_image(root / "images" / "print" / "b.png", size=(40, 70), seed=2)
    write_image(root / "images" / "small" / "c.jpg", size=(20, 24), seed=3)  # smaller than a patch
    return load_csv_dataset(write_csv(root / "train.csv", rows, ("image_name", "label", "patch_type")))


def test_two_views_have_the_right_shape_and_differ(fine_dataset, processor):
    transform = TrainTransform(processor, {"print": 0, "live": 1}, seed=0)
    batch = transform.apply(fine_dataset)[:]
    assert (
        batch["pixel_values"].shape == (3, 2, 3, PATCH, PATCH)
        and batch["pixel_values"].dtype == torch.float32
    )
    assert batch["labels"].tolist() == [1, 0, 0]
    assert set(batch) == {"pixel_values", "labels"}
    for views in batch["pixel_values"]:
        assert not torch.equal(views[0], views[1])
    # Normalised with the processor's mean and std: an all-white patch maps to (1 - mean) / std.
    assert batch["pixel_values"].max() <= max(
        (1 - m) / s for m, s in zip(processor.image_mean, processor.image_std, strict=True)
    )


def test_views_are_reproducible_and_change_between_epochs(fine_dataset, processor):
    def epochs(count):
        transform = TrainTransform(processor, {"print": 0, "live": 1}, seed=3)
        dataset = transform.apply(fine_dataset)
        views = []
        for epoch in range(count):
            transform.set_epoch(epoch)
            views.append(dataset[:]["pixel_values"])
        return views

    first, second = epochs(2), epochs(2)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], first[1])


def test_views_depend_on_the_data_order_only(fine_dataset, processor):
    transform = TrainTransform(processor, {"print": 0, "live": 1}, seed=0)
    dataset = transform.apply(fine_dataset.select([0, 1, 0, 2, 0, 1]))  # image 0 three times

    def views(num_workers, skip=0):
        sampler = list(range(6))[2 * skip :]  # skipping batches as a resumed run does
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=num_workers)
        return torch.cat([batch["pixel_values"] for batch in loader])

    in_process = views(0)
    torch.testing.assert_close(views(2), in_process, rtol=0, atol=0)  # workers do not change the crops
    torch.testing.assert_close(views(0, skip=1), in_process[2:], rtol=0, atol=0)  # nor resuming
    assert not torch.equal(in_process[0], in_process[2]) and not torch.equal(in_process[2], in_process[4])


def test_unknown_patch_type_is_named(fine_dataset, processor):
    transform = TrainTransform(processor, {"spoof": 0, "live": 1})
    with pytest.raises(
        ValueError, match=r"patch type 'print' of image 'print/b.png' is not a class of the model"
    ):
        transform.apply(fine_dataset)[:]


def test_corrupt_image_error_names_the_file_or_is_skipped(fine_dataset, processor, tmp_path, caplog):
    broken = tmp_path / "fine" / "images" / "print" / "b.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    with pytest.raises(CorruptImageError, match=str(broken)):
        TrainTransform(processor, {"print": 0, "live": 1}).apply(fine_dataset)[:]

    transform = TrainTransform(processor, {"print": 0, "live": 1}, skip_corrupt=True)
    loader = DataLoader(transform.apply(fine_dataset), batch_size=3)
    with caplog.at_level("WARNING"):
        batch = next(iter(loader))
    # The batch keeps its size: the broken image's place goes to another image of the batch.
    assert batch["pixel_values"].shape[0] == 3 and batch["labels"].tolist() in ([1, 1, 0], [1, 0, 0])
    assert transform.skipped == 1 and "1 undecodable images skipped so far" in caplog.text
    with pytest.raises(CorruptImageError, match="all 1 images of a batch are undecodable"):
        transform.apply(fine_dataset)[1:2]

    counted = TrainTransform(processor, {"print": 0, "live": 1}, skip_corrupt=True)
    batches = list(DataLoader(counted.apply(fine_dataset), batch_size=2, num_workers=2))
    assert [len(batch["labels"]) for batch in batches] == [2, 1]
    assert counted.skipped == 1, "a skip in a DataLoader worker must be counted in the main process"


def test_eval_transform_gives_the_processor_grid_and_metric_columns(fine_dataset, processor):
    batch = EvalTransform(processor, {"print": 0, "live": 1}).apply(fine_dataset)[:2]
    assert batch["pixel_values"].shape == (2, 4, 3, PATCH, PATCH)
    first = Image.open(fine_dataset.cast_column("image", datasets.Image(decode=False))[0]["image"]["path"])
    torch.testing.assert_close(batch["pixel_values"][0], processor(first)["pixel_values"][0])
    assert batch["binary_labels"].tolist() == [1, 0] and batch["labels"].tolist() == [1, 0]
    assert batch["patch_type"] == ["live", "print"] and batch["image_name"] == ["live/a.jpg", "print/b.png"]
    assert batch["group"] == ["live/a.jpg", "print/b.png"] and batch["source"] == ["fine", "fine"]
    again = EvalTransform(processor).apply(fine_dataset)[:2]
    assert torch.equal(again["pixel_values"], batch["pixel_values"]) and "labels" not in again


def test_images_are_rgb_and_exif_upright(tmp_path, processor):
    pixels = np.zeros((36, 60, 3), dtype=np.uint8)
    pixels[:, :30] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displays turned 90 degrees clockwise
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=95)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "rotated.jpg").write_bytes(buffer.getvalue())
    Image.fromarray(pixels[..., 0]).save(tmp_path / "images" / "grey.png")  # 8-bit grayscale
    dataset = load_csv_dataset(write_csv(tmp_path / "test.csv", [("rotated.jpg", 1), ("grey.png", 1)]))
    batch = EvalTransform(processor).apply(dataset)[:]
    upright = processor(Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_270))["pixel_values"][0]
    torch.testing.assert_close(batch["pixel_values"][0], upright, atol=0.1, rtol=0)  # JPEG rounding
    assert batch["pixel_values"].shape[2] == 3


# --- class balance ------------------------------------------------------------------------------------------


def test_balanced_sampler_draws_classes_evenly_and_is_seeded_per_epoch():
    classes = ["live"] * 900 + ["spoof"] * 100
    sampler = ClassBalancedSampler(classes, num_samples=4000, seed=5)
    first = list(sampler)
    share = sum(classes[i] == "spoof" for i in first) / len(first)
    assert 0.45 < share < 0.55
    assert first == list(sampler)  # same epoch, same draw
    sampler.set_epoch(1)
    assert first != list(sampler)


def test_balanced_sampler_shards_are_disjoint_and_equal():
    classes = [0, 0, 0, 1, 1, 0, 1]
    whole = list(ClassBalancedSampler(classes, num_samples=8, seed=2))
    shards = [
        list(ClassBalancedSampler(classes, num_samples=7, seed=2, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 4
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]  # positions of one sequence, interleaved


def test_balanced_sampler_from_dataset_columns(tmp_path):
    header = ("image_name", "label", "patch_type")
    rows = [("a.jpg", 1, "live"), ("b.jpg", 0, "print"), ("c.jpg", 0, "print"), ("d.jpg", 0, "replay")]
    dataset = load_csv_dataset(make_layout(tmp_path, rows, header))
    by_type = ClassBalancedSampler.from_dataset(dataset, by="patch_type")
    torch.testing.assert_close(by_type.weights, torch.tensor([1.0, 0.5, 0.5, 1.0], dtype=torch.double))
    by_pair = ClassBalancedSampler.from_dataset(dataset, by=("source", "label"))
    assert by_pair.class_counts == {(tmp_path.name, 1): 1, (tmp_path.name, 0): 3}


SHARD_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from patchnet_hf.data.sampler import ClassBalancedSampler

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    sampler = ClassBalancedSampler([0] * 30 + [1] * 10, num_samples=24, seed=7)
    loader = accelerator.prepare(DataLoader(list(range(40)), batch_size=3, sampler=sampler))
    epochs = [torch.cat(list(loader)).tolist() for _ in range(2)]
    with open(f"{sys.argv[1]}/rank{accelerator.process_index}.json", "w") as handle:
        json.dump(epochs, handle)
    """
)


def test_balanced_sampler_under_accelerate_with_two_processes(tmp_path):
    import json

    script = tmp_path / "worker.py"
    script.write_text(SHARD_WORKER)
    environment = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        str(script),
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in (0, 1):
        sampler = ClassBalancedSampler([0] * 30 + [1] * 10, num_samples=24, seed=7)
        sampler.set_epoch(epoch)
        batches = [list(sampler)[i : i + 3] for i in range(0, 24, 3)]
        # accelerate gives every other batch of the one shared sequence to each process: no re-sharding.
        assert ranks[0][epoch] == sum(batches[0::2], []) and ranks[1][epoch] == sum(batches[1::2], [])
    assert ranks[0][0] != ranks[0][1], "set_epoch must be forwarded by the prepared loader"
