"""Inference: LivenessPredictor on files, folders, globs and videos; heatmaps; ONNX export; the CLIs."""

import csv
import importlib.util
import json
import logging
import statistics
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import TINY_PATCH, tiny_config
from PIL import Image
from transformers import pipeline

from patchnet_hf import PatchNetForImageClassification, PatchNetImageProcessor
from patchnet_hf import onnx_export as onnx_export_module
from patchnet_hf.inference import LivenessPredictor, patch_heatmap
from patchnet_hf.onnx_export import OnnxParityError, export_onnx

REPO = Path(__file__).resolve().parents[1]
THRESHOLD = 0.37
LABELS = {0: "print", 1: "live", 2: "replay"}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def noise_image(seed: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """`size` is (width, height)."""
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode=mode)


def save_model(directory: Path, **overrides) -> Path:
    """A random tiny model. Its low cosine scale keeps the patch softmax far from saturation: scores spread
    over (0, 1) instead of sitting at 1e-8, so that comparing them with a tolerance means something."""
    torch.manual_seed(0)
    settings = dict(id2label=LABELS, threshold=THRESHOLD, scale=2.0, **overrides)
    model = PatchNetForImageClassification(tiny_config(**settings))
    # Non-trivial BatchNorm statistics, so that scoring in train mode would show.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 2, 3, TINY_PATCH, TINY_PATCH))
    model.eval().save_pretrained(directory)
    PatchNetImageProcessor(patch_size=TINY_PATCH, grid_size=2).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A folder with an RGB JPEG, a grayscale PNG narrower than a patch, a truncated JPEG and a text file."""
    folder = tmp_path_factory.mktemp("media")
    noise_image(1, (60, 50)).save(folder / "rgb.jpg", quality=95)
    noise_image(2, (28, 70), mode="L").save(folder / "gray.png")
    jpeg = (folder / "rgb.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.txt").write_text("not an image")
    return folder


def reference(model_dir: Path, images: list) -> tuple[np.ndarray, np.ndarray]:
    """Liveness scores and class probabilities straight from the model and processor."""
    model = PatchNetForImageClassification.from_pretrained(model_dir).eval()
    processor = PatchNetImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        output = model(processor(images)["pixel_values"])
    return output.liveness_score.numpy(), output.logits.softmax(-1).numpy()


def write_video(path: Path, num_frames: int = 10, size: tuple[int, int] = (64, 48)) -> None:
    """MJPG video whose frames differ, and whose red and blue channels differ (to catch a BGR mix-up)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    rng = np.random.default_rng(3)
    for index in range(num_frames):
        frame = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        frame[..., 0] = 20 * index  # blue in OpenCV's BGR order
        writer.write(frame)
    writer.release()


def read_frames_rgb(path: Path, indices: list[int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        assert ok, index
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_folder_reports_corrupt_file_and_scores_the_others(model_dir, media, caplog):
    predictor = LivenessPredictor.from_pretrained(model_dir, device="cpu")
    with caplog.at_level(logging.WARNING, logger="patchnet_hf.inference"):
        predictions = predictor.predict(media, batch_size=2)
    by_name = {Path(p.path).name: p for p in predictions}
    assert sorted(by_name) == ["corrupt.jpg", "gray.png", "rgb.jpg"]

    corrupt = by_name["corrupt.jpg"]
    assert corrupt.score is None and corrupt.label is None and corrupt.probabilities is None
    assert "corrupt.jpg" in corrupt.error and "truncated" in corrupt.error
    assert any("corrupt.jpg" in record.getMessage() for record in caplog.records)

    images = [Image.open(media / "gray.png"), Image.open(media / "rgb.jpg")]
    scores, probabilities = reference(model_dir, images)
    for name, score, probability in zip(["gray.png", "rgb.jpg"], scores, probabilities, strict=True):
        prediction = by_name[name]
        assert prediction.error is None and prediction.threshold == THRESHOLD
        assert prediction.score == pytest.approx(float(score), abs=1e-6)
        assert prediction.is_live == (prediction.score >= THRESHOLD)
        assert prediction.label == ("live" if prediction.is_live else "spoof")
        assert list(prediction.probabilities) == list(LABELS.values())
        np.testing.assert_allclose(list(prediction.probabilities.values()), probability, atol=1e-6)


def test_glob_inputs_and_missing_inputs(model_dir, media):
    predictor = LivenessPredictor.from_pretrained(model_dir, device="cpu")
    predictions = predictor.predict([str(media / "*.png"), str(media / "nothing-*.jpg"), media / "gray.png"])
    assert [Path(p.path).name for p in predictions] == ["gray.png", "nothing-*.jpg"]  # each file once
    assert predictions[0].error is None and 0.0 <= predictions[0].score <= 1.0
    assert predictions[1].score is None and "no such file" in predictions[1].error


def test_video_is_scored_from_evenly_sampled_frames(model_dir, tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, num_frames=10)
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(600))
    predictor = LivenessPredictor.from_pretrained(model_dir, device="cpu")
    broken, clip = predictor.predict(tmp_path, frames_per_video=4, batch_size=3)

    assert broken.score is None and "broken.mp4" in broken.error
    assert clip.frame_indices == [0, 3, 6, 9] and clip.num_frames == 4
    frames = read_frames_rgb(video, clip.frame_indices)
    expected = [p.score for p in predictor.predict(frames)]
    np.testing.assert_allclose(clip.frame_scores, expected, atol=1e-6)
    assert clip.score == pytest.approx(statistics.fmean(clip.frame_scores), abs=1e-9)
    # The comparison can tell RGB from BGR: the model scores the channel-swapped frames differently.
    swapped = [p.score for p in predictor.predict([frame[..., ::-1].copy() for frame in frames])]
    assert not np.allclose(swapped, expected, atol=1e-6)


def test_patch_heatmap_scores_each_grid_patch_and_draws_a_png(model_dir, tmp_path):
    model = PatchNetForImageClassification.from_pretrained(model_dir).eval()
    image = noise_image(4, (80, 64))
    for flip_test in (False, True):
        processor = PatchNetImageProcessor(patch_size=TINY_PATCH, flip_test=flip_test)
        heatmap = patch_heatmap(model, processor, image, grid_size=5)
        assert heatmap.shape == (5, 5) and heatmap.dtype == np.float32
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
        patches = processor.normalize_tensor(processor.grid_patches(image, 5))
        with torch.no_grad():
            # Row 0 column 4 is the top-right patch (row-major); with flips, a cell averages both views.
            top_right, bottom_left = patches[4::25][None], patches[20::25][None]
            assert heatmap[0, 4] == pytest.approx(model(top_right).liveness_score.item(), abs=1e-6)
            assert heatmap[4, 0] == pytest.approx(model(bottom_left).liveness_score.item(), abs=1e-6)

    predictor = LivenessPredictor.from_pretrained(model_dir, device="cpu")
    saved = predictor.save_heatmap(image, tmp_path / "maps" / "face.png", grid_size=4)
    assert saved.shape == (4, 4) and 0.0 <= saved.min() <= saved.max() <= 1.0
    with Image.open(tmp_path / "maps" / "face.png") as png:
        assert png.format == "PNG" and png.width > 100 and png.height > 100
        png.verify()


def test_onnx_export_matches_pytorch_and_describes_preprocessing(model_dir, tmp_path):
    result = export_onnx(model_dir, tmp_path / "patchnet.onnx")
    assert result.exporter == "dynamo" and result.max_abs_diff < 1e-4
    metadata = json.loads(result.metadata_path.read_text())
    assert result.metadata_path.name == "patchnet.preprocessing.json"
    geometry = dict(patch_size=TINY_PATCH, grid_size=2, num_patches=4, resize_to=None, flip_test=False)
    assert {key: metadata[key] for key in geometry} == geometry
    assert metadata["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert metadata["image_std"] == pytest.approx([0.229, 0.224, 0.225])
    assert metadata["threshold"] == THRESHOLD and metadata["threshold_strategy"] == "fixed"
    assert metadata["labels"] == {"0": "print", "1": "live", "2": "replay"}
    assert metadata["live_labels"] == ["live"] and metadata["live_label_ids"] == [1]
    assert metadata["score_aggregation"] == "probability"
    assert metadata["input_name"] == "pixel_values"
    assert metadata["output_names"] == ["liveness_score", "probabilities"]
    assert metadata["parity_max_abs_diff"] == result.max_abs_diff

    # A batch size the export never saw, fed as a deployer would: processor output into onnxruntime.
    images = [noise_image(seed, (40 + 7 * seed, 50)) for seed in range(5)]
    pixel_values = PatchNetImageProcessor.from_pretrained(model_dir)(images)["pixel_values"].numpy()
    session = onnxruntime.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    liveness, probabilities = session.run(None, {"pixel_values": pixel_values})
    scores, expected_probabilities = reference(model_dir, images)
    np.testing.assert_allclose(liveness, scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-4, rtol=0)


def test_onnx_export_raises_when_parity_fails(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export_module, "_export", lambda *args: "dynamo")
    monkeypatch.setattr(onnx_export_module, "max_abs_difference", lambda *args: 3e-3)
    with pytest.raises(OnnxParityError, match=r"bad\.onnx.*0\.003"):
        export_onnx(model_dir, tmp_path / "bad.onnx")


def test_export_cli_cosine_margin_model(tmp_path, capsys):
    model_dir = save_model(tmp_path / "model", score_aggregation="cosine_margin")
    export_cli = load_script("export_onnx")
    assert export_cli.main(["--model", str(model_dir), "--output", str(tmp_path / "m.onnx")]) == 0
    printed = capsys.readouterr().out
    difference = float(printed.split("max abs difference onnxruntime vs PyTorch = ")[1].split()[0])
    assert difference < 1e-4
    assert json.loads((tmp_path / "m.preprocessing.json").read_text())["score_aggregation"] == "cosine_margin"
    images = [noise_image(seed, (48, 40)) for seed in range(3)]
    pixel_values = PatchNetImageProcessor.from_pretrained(model_dir)(images)["pixel_values"].numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["liveness_score"], {"pixel_values": pixel_values})[0],
                               reference(model_dir, images)[0], atol=1e-4, rtol=0)


def test_pipeline_and_predict_give_the_same_scores(model_dir, media):
    classifier = pipeline("image-classification", model=str(model_dir), trust_remote_code=False)
    predictor = LivenessPredictor.from_pretrained(model_dir, device="cpu")
    paths = [str(media / "rgb.jpg"), str(media / "gray.png")]
    for path, prediction in zip(paths, predictor.predict(paths), strict=True):
        scores = {entry["label"]: entry["score"] for entry in classifier(path, top_k=len(LABELS))}
        assert scores["live"] == pytest.approx(prediction.score, abs=1e-6)
        assert scores == pytest.approx(prediction.probabilities, abs=1e-6)


def test_threshold_defaults_to_the_calibrated_one_and_can_be_overridden(model_dir, media):
    assert LivenessPredictor.from_pretrained(model_dir).threshold == THRESHOLD
    default = LivenessPredictor.from_pretrained(model_dir, device="cpu").predict(media / "rgb.jpg")[0]
    override = default.score + 1e-6
    strict = LivenessPredictor.from_pretrained(model_dir, device="cpu", threshold=override)
    assert strict.threshold_strategy == "user"
    prediction = strict.predict(media / "rgb.jpg")[0]
    assert prediction.threshold == override and prediction.label == "spoof"
    assert LivenessPredictor.from_pretrained(model_dir, threshold=default.score).predict(
        media / "rgb.jpg")[0].label == "live"
    with pytest.raises(ValueError, match="threshold=1.5"):
        LivenessPredictor.from_pretrained(model_dir, threshold=1.5)


def test_predict_cli_writes_csv_and_json(model_dir, media, tmp_path, capsys):
    predict = load_script("predict")
    write_video(tmp_path / "clip.avi", num_frames=6)
    inputs = [str(media), str(tmp_path / "clip.avi")]

    status = predict.main(["--model", str(model_dir), *inputs, "--output", str(tmp_path / "out.csv"),
                           "--heatmap-dir", str(tmp_path / "maps"), "--frames-per-video", "3"])
    assert status == 1  # the corrupt file
    with (tmp_path / "out.csv").open() as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    assert list(next(iter(rows.values()))) == ["path", "score", "label", "threshold", "error", "num_frames"]
    assert set(rows) == {"corrupt.jpg", "gray.png", "rgb.jpg", "clip.avi"}
    assert {row["threshold"] for row in rows.values()} == {str(THRESHOLD)}  # the model's calibrated one
    assert rows["corrupt.jpg"]["score"] == "" and "corrupt.jpg" in rows["corrupt.jpg"]["error"]
    assert rows["clip.avi"]["num_frames"] == "3" and rows["rgb.jpg"]["num_frames"] == ""
    for name in ("gray.png", "rgb.jpg", "clip.avi"):
        expected = "live" if float(rows[name]["score"]) >= THRESHOLD else "spoof"
        assert rows[name]["label"] == expected and rows[name]["error"] == ""
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["gray.heatmap.png", "rgb.heatmap.png"]
    summary = capsys.readouterr().out
    assert "4 inputs:" in summary and "1 failed" in summary

    # Override: a threshold between the two image scores splits them.
    scores = sorted(float(rows[name]["score"]) for name in ("gray.png", "rgb.jpg"))
    threshold = statistics.fmean(scores)
    assert predict.main(["--model", str(model_dir), str(media / "*.png"), str(media / "rgb.jpg"), "--output",
                         str(tmp_path / "out.json"), "--threshold", str(threshold)]) == 0
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["threshold"] == threshold and document["threshold_strategy"] == "user"
    assert document["score_aggregation"] == "probability"
    assert document["summary"] == {"total": 2, "live": 1, "spoof": 1, "failed": 0}
    for entry in document["predictions"]:
        assert entry["threshold"] == threshold
        assert entry["label"] == ("live" if entry["score"] >= threshold else "spoof")
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_cli_rejects_bad_options(model_dir, media, capsys):
    predict = load_script("predict")
    bad = (("--output", "scores.txt"), ("--threshold", "1.5"), ("--batch-size", "0"), ("--device", "gpu"))
    for option, value in bad:
        arguments = ["--model", str(model_dir), str(media), "--output", "scores.csv", option, value]
        with pytest.raises(SystemExit):
            predict.main(arguments)
        assert option in capsys.readouterr().err
