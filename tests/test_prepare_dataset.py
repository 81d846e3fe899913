"""scripts/prepare_dataset.py: folder trees and videos -> the CSV layout -> a self-contained HF dataset."""

import importlib.util
import socket
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import cv2
import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import hub_environment
from PIL import Image

from patchnet_hf.data import (
    CorruptImageError,
    DatasetFormatError,
    label_from_path,
    load_any_dataset,
    load_csv_dataset,
    scan_folder_tree,
    split_by_group,
    square_box,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_dataset.py"


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_dataset = load_script()


def write_image(path: Path, size=(40, 36), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def split_of_groups(output: Path) -> dict[str, set[str]]:
    splits = defaultdict(set)
    for split in ("train", "val", "test"):
        if (output / f"{split}.csv").exists():
            for group in load_csv_dataset(output / f"{split}.csv")["group"]:
                splits[group].add(split)
    return splits


# --- labels from folder names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        ("print/a.jpg", (0, "print")),
        ("subject/Live/a.jpg", (1, "live")),
        ("spoof/replay/a.jpg", (0, "replay")),  # the deepest label folder is the patch type
        ("fingerprint/a.jpg", None),  # whole components only, never substrings
        ("prints/a.jpg", None),
        ("live.jpg", None),  # file names are not folders
    ],
)
def test_folder_names_match_whole_components(path, expected):
    names = dict(spoof_names=("spoof", "print", "replay"), live_names=("live",))
    assert label_from_path(path, **names) == expected


def test_live_and_spoof_folders_together_are_ambiguous(tmp_path):
    write_image(tmp_path / "live" / "print" / "a.jpg")
    write_image(tmp_path / "fingerprint" / "b.jpg")
    with pytest.raises(DatasetFormatError) as error:
        scan_folder_tree(tmp_path)
    message = str(error.value)
    assert "1 files with no label folder" in message and "fingerprint/b.jpg" in message
    assert "1 files under both a live and a spoof folder: live/print/a.jpg" in message


# --- group split --------------------------------------------------------------------------------------------


def test_group_split_never_leaks_a_group_and_is_seeded():
    rng = np.random.default_rng(0)
    keys = [f"person{rng.integers(40)}" for _ in range(500)]
    splits = split_by_group(keys, (0.7, 0.2, 0.1), seed=3)
    assert splits == split_by_group(keys, (0.7, 0.2, 0.1), seed=3)
    assert splits != split_by_group(keys, (0.7, 0.2, 0.1), seed=4)
    split_of = defaultdict(set)
    for key, split in zip(keys, splits, strict=True):
        split_of[key].add(split)
    assert all(len(found) == 1 for found in split_of.values())
    groups_per_split = {
        name: sum(found == {name} for found in split_of.values()) for name in ("train", "val", "test")
    }
    assert groups_per_split == {"train": 28, "val": 8, "test": 4}


def test_group_split_gives_every_asked_split_a_group():
    assert sorted(set(split_by_group(["a", "b", "c"], (0.9, 0.05, 0.05)))) == ["test", "train", "val"]
    assert set(split_by_group(["a", "b"], (1, 0, 0))) == {"train"}


def test_folder_tree_to_csv_layout_by_subject(tmp_path, capsys):
    raw = tmp_path / "raw"
    for subject in range(10):
        write_image(raw / f"s{subject}" / "live" / "a.jpg", seed=subject)
        write_image(raw / f"s{subject}" / "live" / "b.jpg", seed=subject + 100)
        write_image(raw / f"s{subject}" / "print" / "c.png", seed=subject + 200)
        write_image(raw / f"s{subject}" / "replay" / "d.jpg", seed=subject + 300)
    (raw / "notes.txt").write_text("not an image")  # other files are ignored
    output = tmp_path / "dataset"
    prepare_dataset.main(
        ["--input", str(raw), "--output", str(output), "--patch-types", "--split", "0.6", "0.2", "0.2"]
    )

    split_of = split_of_groups(output)
    assert sorted(split_of) == [f"s{subject}" for subject in range(10)]
    assert all(len(found) == 1 for found in split_of.values()), split_of
    train = load_csv_dataset(output / "train.csv")
    assert sorted(set(train["patch_type"])) == ["live", "print", "replay"] and len(train) == 24
    assert (output / "images" / "s0" / "print" / "c.png").read_bytes() == (
        raw / "s0" / "print" / "c.png"
    ).read_bytes()
    summary = capsys.readouterr().out
    assert "train" in summary and "replay" in summary and "total" in summary


def test_group_regex_and_binary_patch_types(tmp_path):
    raw = tmp_path / "raw"
    for index in range(6):
        write_image(raw / "live" / f"p{index % 3}_{index}.jpg", seed=index)
        write_image(raw / "attack" / f"p{index % 3}_{index}.jpg", seed=index + 10)
    output = tmp_path / "out"
    prepare_dataset.main(["--input", str(raw), "--output", str(output), "--group-regex", r"(p\d+)_"])
    split_of = split_of_groups(output)
    assert sorted(split_of) == ["p0", "p1", "p2"] and all(len(found) == 1 for found in split_of.values())
    assert set(load_csv_dataset(output / "train.csv")["patch_type"]) <= {"live", "spoof"}


def test_too_few_groups_for_the_splits_is_explained(tmp_path):
    for index in range(4):
        write_image(tmp_path / "raw" / "session1" / "live" / f"{index}.jpg", seed=index)
        write_image(tmp_path / "raw" / "session1" / "print" / f"{index}.jpg", seed=index + 9)
    with pytest.raises(SystemExit, match=r"only 1 group\(s\) \['session1'\] for 3 splits.*--group-regex"):
        prepare_dataset.main(["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "out")])


def test_existing_output_is_not_overwritten(tmp_path):
    write_image(tmp_path / "raw" / "live" / "a.jpg")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train.csv").write_text("image_name,label\n")
    with pytest.raises(SystemExit, match="already holds"):
        prepare_dataset.main(["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "out")])


# --- face crops ---------------------------------------------------------------------------------------------


def test_square_box_expands_and_clamps():
    assert square_box((40, 30, 60, 70), 1.5, 200, 200) == (20, 20, 80, 80)  # 40 px high -> 60 px square
    assert square_box((0, 0, 20, 20), 2.0, 100, 100) == (0, 0, 40, 40)  # shifted inside, not cut
    assert square_box((10, 10, 90, 50), 2.0, 100, 60) == (20, 0, 80, 60)  # shrunk to the image


def test_face_crops_from_box_files(tmp_path):
    raw = tmp_path / "raw"
    write_image(raw / "live" / "a.jpg", size=(120, 100))
    (raw / "live" / "a_BB.txt").write_text("30 20 40 50 0.99\n")  # x y w h score
    write_image(raw / "spoof" / "b.png", size=(80, 80), seed=1)
    (raw / "spoof" / "b_BB.txt").write_text("60,60,20,20\n")  # at the corner: the square is shifted inside
    output = tmp_path / "out"
    box_options = ["--face-boxes", "--box-suffix", "_BB.txt", "--box-scale", "1.2"]
    prepare_dataset.main(
        ["--input", str(raw), "--output", str(output), *box_options, "--split", "1", "0", "0"]
    )
    train = load_csv_dataset(output / "train.csv")
    assert train["image_name"][:] == ["live/a.png", "spoof/b.png"]
    crop = np.asarray(Image.open(output / "images" / "live" / "a.png"))
    original = np.asarray(Image.open(raw / "live" / "a.jpg").convert("RGB"))
    assert crop.shape == (60, 60, 3)  # 50 px high x 1.2, square
    np.testing.assert_array_equal(crop, original[15:75, 20:80])  # centred on (50, 45)
    assert Image.open(output / "images" / "spoof" / "b.png").size == (24, 24)


def test_missing_box_file_is_named(tmp_path):
    write_image(tmp_path / "raw" / "live" / "a.jpg")
    with pytest.raises(FileNotFoundError, match="a.txt not found"):
        prepare_dataset.folder_to_csv_layout(
            tmp_path / "raw", tmp_path / "out", fractions=(1, 0, 0), face_boxes=True, progress=False
        )


# --- videos -------------------------------------------------------------------------------------------------


def write_video(path: Path, frames=10, size=(64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), index * 20, dtype=np.uint8))
    writer.release()


def test_videos_give_sampled_frames_grouped_by_video(tmp_path):
    raw = tmp_path / "raw"
    for subject in ("s1", "s2", "s3"):
        write_video(raw / subject / "live" / "v.avi")
        write_video(raw / subject / "replay" / "v.avi")
    output = tmp_path / "out"
    prepare_dataset.main(["--input", str(raw), "--output", str(output), "--frames-per-video", "4"])
    rows = [load_csv_dataset(output / f"{split}.csv") for split in ("train", "val", "test")]
    merged = datasets.concatenate_datasets(rows)
    assert len(merged) == 24
    frames_of = defaultdict(list)
    for name, group in zip(merged["image_name"], merged["group"], strict=True):
        frames_of[group].append(name)
    assert sorted(frames_of) == [
        f"{s}/{kind}/v.avi" for s in ("s1", "s2", "s3") for kind in ("live", "replay")
    ]
    assert sorted(frames_of["s1/live/v.avi"]) == [f"s1/live/v/frame_{i:04d}.png" for i in range(4)]
    # The split keeps a subject's videos together.
    split_of = {
        group: split
        for split, data in zip(("train", "val", "test"), rows, strict=True)
        for group in data["group"]
    }
    for subject in ("s1", "s2", "s3"):
        assert split_of[f"{subject}/live/v.avi"] == split_of[f"{subject}/replay/v.avi"]
    # Evenly spread frames: the first and the last of the 10 written.
    first, last = (
        np.asarray(Image.open(output / "images" / "s1" / "live" / "v" / f"frame_{i:04d}.png")) for i in (0, 3)
    )
    assert abs(int(first.mean()) - 0) < 8 and abs(int(last.mean()) - 180) < 8


# --- verify pass --------------------------------------------------------------------------------------------


def test_verify_pass_finds_undecodable_images(tmp_path):
    raw = tmp_path / "raw"
    write_image(raw / "live" / "good.jpg")
    broken = write_image(raw / "spoof" / "broken.jpg", seed=1)
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    with pytest.raises(CorruptImageError, match=r"1 undecodable files: .*broken.jpg"):
        prepare_dataset.folder_to_csv_layout(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "train.csv").exists()  # nothing written

    table = prepare_dataset.folder_to_csv_layout(
        raw, tmp_path / "out", fractions=(1, 0, 0), skip_corrupt=True, progress=False
    )
    assert table["image_name"].tolist() == ["live/good.jpg"]

    layout = tmp_path / "layout"
    write_image(layout / "images" / "a.jpg")
    (layout / "images" / "b.jpg").write_bytes(broken.read_bytes())
    (layout / "test.csv").write_text("image_name,label\na.jpg,1\nb.jpg,0\n")
    with pytest.raises(SystemExit, match=r"test.csv: 1 undecodable files: .*b.jpg"):
        prepare_dataset.main(["--input", str(layout), "--output", str(tmp_path / "hf")])


# --- export to Hugging Face formats -------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "mydata"
    rows = {
        "train": [("live/a.jpg", 1, "live", "p1"), ("print/b.png", 0, "print", "p1")],
        "test": [("c.jpg", 0, "print", "p2")],
    }
    for split, split_rows in rows.items():
        lines = ["image_name,label,patch_type,group"]
        for index, (name, label, patch_type, group) in enumerate(split_rows):
            write_image(root / "images" / name, size=(30 + index, 20), seed=index + len(split))
            lines.append(f"{name},{label},{patch_type},{group}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def assert_same_rows_and_pixels(exported: datasets.Dataset, original: datasets.Dataset) -> None:
    assert exported.features == original.features
    for column in ("label", "patch_type", "group", "source", "image_name"):
        assert exported[column][:] == original[column][:]
    for left, right in zip(exported, original, strict=True):
        np.testing.assert_array_equal(np.asarray(left["image"]), np.asarray(right["image"]))


@pytest.mark.parametrize("fmt", ["disk", "parquet"])
def test_export_round_trips_self_contained(layout, tmp_path, fmt):
    output = tmp_path / f"exported_{fmt}"
    prepare_dataset.main(["--input", str(layout), "--output", str(output), "--format", fmt])
    originals = {split: load_csv_dataset(layout / f"{split}.csv") for split in ("train", "test")}
    # Pixels are read before the originals go away, then compared after: the export must stand alone.
    expected = {split: [np.asarray(row["image"]) for row in data] for split, data in originals.items()}
    for split, data in originals.items():
        reloaded = (
            datasets.load_from_disk(str(output))[split] if fmt == "disk" else load_any_dataset(output, split)
        )
        assert_same_rows_and_pixels(reloaded, data)
    for path in (layout / "images").rglob("*.*"):
        path.unlink()
    again = load_any_dataset(output, "train")
    for row, pixels in zip(again, expected["train"], strict=True):
        np.testing.assert_array_equal(np.asarray(row["image"]), pixels)


def test_push_to_hub_failure_is_clear(layout):
    # The tests run with HF_HUB_OFFLINE=1: the push fails at once, as it would without network.
    with pytest.raises(SystemExit) as error:
        prepare_dataset.main(["--input", str(layout), "--output", "someone/mydata", "--format", "hub"])
    message = str(error.value.code)
    assert (
        "could not push to the Hub repository 'someone/mydata'" in message
        and "Nothing local was changed" in message
    )


def test_wrong_direction_is_explained(tmp_path, layout):
    write_image(tmp_path / "raw" / "live" / "a.jpg")
    with pytest.raises(SystemExit, match="convert it with --format csv first"):
        prepare_dataset.main(
            ["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "x"), "--format", "disk"]
        )
    with pytest.raises(SystemExit, match="already in the CSV layout"):
        prepare_dataset.main(["--input", str(layout), "--output", str(tmp_path / "y"), "--format", "csv"])


# --- through a local Hub ------------------------------------------------------------------------------------
# huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import: the Hub is reached from subprocesses whose
# environment comes from hub_environment (tests/hub_server.py); this process stays offline.

HUB_DATASET = "tester/demo-ds"

LOAD_FROM_HUB = textwrap.dedent("""
    import json, sys
    import datasets
    from huggingface_hub import HfApi
    repo_id, output = sys.argv[1:]
    datasets.load_dataset(repo_id).save_to_disk(output)  # for the test process, which stays offline
    found = HfApi().get_paths_info(repo_id, ["README.md", "data", "missing.txt"], repo_type="dataset")
    print("PATHS", json.dumps([entry.path for entry in found]))
""")


def run_script(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=environment, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=180)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`: relative path -> bytes."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def test_push_to_a_local_hub_loads_back_identical(tmp_path, local_hub):
    from patchnet_hf.data.demo import make_demo_dataset

    root = tmp_path / "demo"
    make_demo_dataset(root, num_images=12, seed=0)
    before = snapshot(root)
    push = run_script(str(SCRIPT), "--input", str(root), "--output", HUB_DATASET, "--format", "hub",
                      environment=hub_environment(tmp_path / "hf_home", local_hub.url))
    assert push.returncode == 0, push.stderr[-3000:]
    assert snapshot(root) == before

    files = local_hub.files(HUB_DATASET, repo_type="dataset")
    splits = ("test", "train", "val")
    assert {f"data/{split}-00000-of-00001.parquet" for split in splits} <= set(files), sorted(files)
    card = files["README.md"].decode()  # datasets' card: features, split sizes and which files form each split
    assert "dataset_info" in card and all(f"path: data/{split}-*" in card for split in splits)
    for split in splits:
        # The images travel inside the shards, byte for byte, not as paths to the local files.
        shard = pq.read_table(pa.BufferReader(files[f"data/{split}-00000-of-00001.parquet"]))
        for name, image in zip(shard["image_name"].to_pylist(), shard["image"].to_pylist(), strict=True):
            assert image["bytes"] == (root / "images" / name).read_bytes(), name

    # A new, empty cache: everything comes from the Hub.
    reloaded_dir = tmp_path / "reloaded"
    load = run_script("-c", LOAD_FROM_HUB, HUB_DATASET, str(reloaded_dir),
                      environment=hub_environment(tmp_path / "hf_home_load", local_hub.url))
    assert load.returncode == 0, load.stderr[-3000:]
    assert '["README.md", "data"]' in load.stdout  # paths-info leaves out what does not exist
    reloaded = datasets.load_from_disk(str(reloaded_dir))
    assert sorted(reloaded) == list(splits)
    for split in splits:
        # Every column and every image's pixels, against the local CSV and image files.
        assert_same_rows_and_pixels(reloaded[split], load_csv_dataset(root / f"{split}.csv"))
    assert not [request for request in local_hub.requests if request[2] >= 500]


def test_push_to_a_dead_endpoint_fails_clearly_and_keeps_the_data(layout, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there once the probe is closed
    before = snapshot(layout)
    push = run_script(str(SCRIPT), "--input", str(layout), "--output", HUB_DATASET, "--format", "hub",
                      environment=hub_environment(tmp_path / "hf_home", dead))
    assert push.returncode == 1
    message = push.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: could not push to the Hub repository '{HUB_DATASET}' (ConnectError")
    assert "Nothing local was changed" in message and "Traceback" not in push.stderr
    assert snapshot(layout) == before
