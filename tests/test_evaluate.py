"""scripts/evaluate.py: report files, thresholds, one vs two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_reports_close, tiny_config
from PIL import Image
from sklearn.metrics import roc_auc_score

from patchnet_hf import PatchNetForImageClassification, PatchNetImageProcessor

EVALUATE = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    PatchNetForImageClassification(tiny_config(threshold=0.42, threshold_strategy="eer")).save_pretrained(directory)
    PatchNetImageProcessor(patch_size=32, grid_size=2).save_pretrained(directory)
    return directory


def run_evaluate(*arguments: str, processes: int = 1) -> None:
    environment = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                 "--master_port", "29541"] if processes > 1 else [sys.executable])
    result = subprocess.run([*launcher, str(EVALUATE), *arguments], env=environment, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def test_report_files_and_stored_threshold(tmp_path, saved_model, demo_dataset):
    run_evaluate("--model", str(saved_model), "--data", str(demo_dataset), "--output", str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["threshold"]["value"] == 0.42 and "stored in the model" in report["threshold"]["description"]
    overall = report["reports"]["all"]
    rows = [line.split(",") for line in (tmp_path / "scores.csv").read_text().splitlines()[1:]]
    labels = np.array([int(row[4]) for row in rows])
    scores = np.array([float(row[5]) for row in rows])
    assert overall["n_samples"] == len(rows) == sum(1 for _ in (demo_dataset / "test.csv").open()) - 1
    assert overall["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert overall["bpcer"] == pytest.approx(np.mean(scores[labels == 1] < 0.42))
    assert "| Source |" in (tmp_path / "report.md").read_text()
    for name in ("roc.png", "det.png", "score_histograms.png"):
        path = tmp_path / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) >= 300


def test_threshold_from_a_development_set(tmp_path, saved_model, demo_dataset):
    run_evaluate("--model", str(saved_model), "--data", str(demo_dataset), "--dev", str(demo_dataset),
                 "--output", str(tmp_path / "eer"))
    run_evaluate("--model", str(saved_model), "--data", str(demo_dataset), "--dev", str(demo_dataset),
                 "--threshold-strategy", "apcer", "--target-apcer", "0.05", "--output", str(tmp_path / "apcer"))
    eer = json.loads((tmp_path / "eer" / "report.json").read_text())["threshold"]
    apcer = json.loads((tmp_path / "apcer" / "report.json").read_text())["threshold"]
    assert eer["strategy"] == "eer" and "development set" in eer["description"]
    assert apcer["strategy"] == "apcer" and apcer["value"] >= eer["value"] - 1e-12


def test_one_and_two_processes_give_the_same_report(tmp_path, saved_model, demo_dataset):
    for processes in (1, 2):
        run_evaluate("--model", str(saved_model), "--data", str(demo_dataset), "--output",
                     str(tmp_path / str(processes)), "--batch-size", "4", processes=processes)
    reports = [json.loads((tmp_path / str(n) / "report.json").read_text()) for n in (1, 2)]
    assert_reports_close(reports[0]["reports"], reports[1]["reports"])
    n_test = sum(1 for _ in (demo_dataset / "test.csv").open()) - 1
    assert reports[0]["reports"]["all"]["n_samples"] == n_test
    rows = [(tmp_path / str(n) / "scores.csv").read_text().splitlines() for n in (1, 2)]
    assert [row.rsplit(",", 1)[0] for row in rows[0]] == [row.rsplit(",", 1)[0] for row in rows[1]]
    scores = [np.array([float(row.rsplit(",", 1)[1]) for row in table[1:]]) for table in rows]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)


def test_input_errors_end_in_one_line_naming_the_input(tmp_path, saved_model, demo_dataset):
    environment = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    missing_model, no_csv = tmp_path / "no_model", tmp_path / "no_csv"
    no_csv.mkdir()
    cases = [
        (missing_model, demo_dataset, f"error: cannot load the model {missing_model}: no such folder"),
        (saved_model, no_csv, f"error: {no_csv}: found neither test.csv"),
    ]
    for model, data, message in cases:
        arguments = ["--model", str(model), "--data", str(data), "--output", str(tmp_path / "out")]
        result = subprocess.run([sys.executable, str(EVALUATE), *arguments], env=environment, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 1, result.stderr[-4000:]
        assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith(message)
    assert not (tmp_path / "out").exists()
