"""scripts/make_demo_dataset.py: the synthetic demo data is a valid CSV layout, balanced and deterministic."""

import importlib.util
from pathlib import Path

from patchnet_hf.data import load_training_data, patch_type_vocabulary
from patchnet_hf.data.demo import render_shot

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_dataset.py"


def run_script(argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("make_demo_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def files_of(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_demo_dataset_is_deterministic_for_a_seed(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run_script(["--output", str(tmp_path / name), "--num-images", "12", "--seed", str(seed)])
    first, second, other = (files_of(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys() and first != other
    assert {"README.md", "train.csv", "val.csv", "test.csv"} <= first.keys()
    assert "synthetic" in first["README.md"].decode()


def test_demo_dataset_is_a_valid_balanced_layout_without_group_leaks(tmp_path):
    run_script(["--output", str(tmp_path / "demo"), "--num-images", "24"])
    train, val = load_training_data([tmp_path / "demo"], split_val="test")
    test = val["demo"]
    assert len(train) + len(test) + len(load_training_data([tmp_path / "demo"])[1]["demo"]) == 24
    assert set(train["group"]).isdisjoint(test["group"])
    assert sum(train["label"]) * 2 == len(train)  # as many bona fide images as attacks
    id2label, live_labels = patch_type_vocabulary([train])
    assert sorted(id2label.values()) == ["live", "print", "print_glossy", "replay"] and live_labels == [
        "live"
    ]
    sizes = {image.size for image in train["image"]}
    assert all(160 <= side <= 320 for size in sizes for side in size) and len(sizes) > 1


def test_an_image_does_not_depend_on_the_dataset_size():
    image, patch_type, quality = render_shot(seed=0, subject=1, shot=3)
    again, _, _ = render_shot(seed=0, subject=1, shot=3)
    assert patch_type == "replay" and 70 <= quality <= 95
    assert image.tobytes() == again.tobytes()
