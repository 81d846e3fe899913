"""save_pretrained / from_pretrained, the Auto classes, trust_remote_code export and the pipeline."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_PATCH, tiny_config
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, pipeline

from patchnet_hf import PatchNetConfig, PatchNetForImageClassification, PatchNetImageProcessor


def face_image(seed: int, size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


@pytest.fixture
def saved_model(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(id2label={0: "print", 1: "live", 2: "replay"}, live_labels=["live"], threshold=0.37)
    model = PatchNetForImageClassification(config).eval()
    # Non-trivial BatchNorm statistics, so that a forgotten buffer would show.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 2, 3, TINY_PATCH, TINY_PATCH))
    model.eval()
    model.save_pretrained(tmp_path)
    PatchNetImageProcessor(patch_size=TINY_PATCH, grid_size=2).save_pretrained(tmp_path)
    return model, tmp_path


def test_direct_and_auto_round_trip_give_identical_outputs(saved_model):
    model, directory = saved_model
    pixel_values = torch.randn(3, 4, 3, TINY_PATCH, TINY_PATCH)
    expected = model(pixel_values)
    for loader in (PatchNetForImageClassification, AutoModelForImageClassification):
        loaded = loader.from_pretrained(directory).eval()
        assert type(loaded) is PatchNetForImageClassification
        for (name, tensor), reloaded in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
            torch.testing.assert_close(reloaded, tensor, rtol=0, atol=0, msg=name)
        output = loaded(pixel_values)
        for key in ("logits", "liveness_score", "embeddings", "patch_logits"):
            torch.testing.assert_close(output[key], expected[key], rtol=0, atol=0)
    config = AutoConfig.from_pretrained(directory)
    assert isinstance(config, PatchNetConfig)
    assert config.id2label == {0: "print", 1: "live", 2: "replay"} and config.threshold == 0.37
    assert type(AutoImageProcessor.from_pretrained(directory)) is PatchNetImageProcessor


def test_saved_directory_carries_code_and_auto_map(saved_model):
    _, directory = saved_model
    files = set(os.listdir(directory))
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "configuration_patchnet.py",
            "modeling_patchnet.py", "image_processing_patchnet.py"} <= files
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_patchnet.PatchNetForImageClassification"
    processor = json.loads((directory / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_patchnet.PatchNetImageProcessor"


def test_from_pretrained_never_requests_backbone_weights(saved_model, monkeypatch):
    import timm

    calls = []
    original = timm.create_model

    def recording_create_model(*args, **kwargs):
        calls.append(kwargs.get("pretrained", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording_create_model)
    PatchNetForImageClassification.from_pretrained(saved_model[1])
    assert calls == [False]


def test_trust_remote_code_in_a_process_without_the_package(saved_model, tmp_path):
    model, directory = saved_model
    pixel_values = torch.randn(2, 3, 3, TINY_PATCH, TINY_PATCH)
    torch.save({"pixel_values": pixel_values, "liveness": model(pixel_values).liveness_score}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["patchnet_hf"] = None  # any import of the package now fails
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        try:
            import patchnet_hf  # noqa: F401
            raise SystemExit("patchnet_hf is importable")
        except ImportError:
            pass
        model = AutoModelForImageClassification.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(directory)!r}, trust_remote_code=True)
        assert "patchnet_hf" not in type(model).__module__, type(model).__module__
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            liveness = model(io["pixel_values"]).liveness_score
        torch.testing.assert_close(liveness, io["liveness"], rtol=0, atol=0)
        assert processor.patch_size == {TINY_PATCH}, processor.patch_size
        print("REMOTE_CODE_OK", type(model).__module__)
    """)
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_CODE_OK transformers_modules" in result.stdout


def test_pipeline_end_to_end_from_path_and_pil(saved_model, tmp_path):
    model, directory = saved_model
    classifier = pipeline("image-classification", model=str(directory), trust_remote_code=False)
    image = face_image(1)
    path = tmp_path / "face.png"
    image.save(path)
    processor = PatchNetImageProcessor.from_pretrained(directory)
    with torch.no_grad():
        probabilities = model(processor(image)["pixel_values"]).logits.softmax(-1)[0]
    for source in (image, str(path)):
        predictions = classifier(source, top_k=3)
        assert {p["label"] for p in predictions} == {"print", "live", "replay"}
        scores = {p["label"]: p["score"] for p in predictions}
        for class_id, label in model.config.id2label.items():
            assert scores[label] == pytest.approx(probabilities[class_id].item(), abs=1e-6)


def test_pipeline_binary_labels(tmp_path):
    torch.manual_seed(5)
    PatchNetForImageClassification(tiny_config()).save_pretrained(tmp_path)
    PatchNetImageProcessor(patch_size=TINY_PATCH).save_pretrained(tmp_path)
    predictions = pipeline("image-classification", model=str(tmp_path), trust_remote_code=False)(
        [face_image(2), face_image(3, size=(20, 30))]
    )
    for prediction in predictions:
        assert {p["label"] for p in prediction} == {"live", "spoof"}
        assert sum(p["score"] for p in prediction) == pytest.approx(1.0, abs=1e-5)
