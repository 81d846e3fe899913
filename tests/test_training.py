"""scripts/train.py: processes, checkpoints and exact resume, best model, bad configs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_reports_close, hub_environment
from safetensors.torch import load_file

from patchnet_hf import PatchNetForImageClassification

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"


def write_config(tmp_path: Path, data_root: Path, **training) -> Path:
    config = {
        "model": {"backbone": "test_resnet", "embedding_dim": 16, "patch_size": 32, "grid_size": 2},
        "data": {"datasets": [{"root": str(data_root)}]},
        "training": {"output_dir": str(tmp_path / "run"), "seed": 7, "epochs": 2, "batch_size": 8,
                     "eval_batch_size": 4, "optimizer": "adamw", "learning_rate": 0.001, "warmup_steps": 1,
                     "checkpoint_every_steps": 3, "keep_checkpoints": 2, "log_every_steps": 1,
                     "report_to": "none", **training},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_training(config: Path, *extra: str, processes: int = 1, wait: bool = True, environment=None):
    environment = dict(environment or os.environ, OMP_NUM_THREADS="1" if processes > 1 else "2")
    environment.setdefault("HF_HUB_OFFLINE", "1")
    if processes > 1:
        environment["ACCELERATE_USE_CPU"] = "1"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                    "--master_port", "29531"]
    else:
        launcher = [sys.executable]
    command = [*launcher, str(TRAIN), "--config", str(config), *extra]
    if not wait:
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def csv_rows(path: Path) -> int:
    return sum(1 for _ in path.open()) - 1


def test_one_and_two_processes_gather_exactly_the_validation_set(tmp_path, demo_dataset):
    # No training step: both runs validate the same seeded initial model, so the metrics must agree exactly.
    reports = []
    for processes in (1, 2):
        config = write_config(tmp_path / str(processes), demo_dataset, max_steps=0, eval_batch_size=4)
        run_training(config, processes=processes)
        metrics = json.loads((tmp_path / str(processes) / "run" / "best_model" / "validation_metrics.json").read_text())
        reports.append(metrics["reports"]["all"])
    n_val = csv_rows(demo_dataset / "val.csv")
    assert n_val % 8 != 0, "the validation set must not split evenly, to exercise the padding removal"
    assert reports[0]["n_samples"] == reports[1]["n_samples"] == n_val
    assert_reports_close(reports[0], reports[1])


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path, demo_dataset):
    straight = write_config(tmp_path / "straight", demo_dataset)
    run_training(straight)
    interrupted = write_config(tmp_path / "interrupted", demo_dataset)
    process = run_training(interrupted, wait=False)
    first_checkpoint = tmp_path / "interrupted" / "run" / "checkpoints" / "checkpoint_0" / "COMPLETE"
    deadline = time.time() + 300
    while not first_checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first_checkpoint.exists(), "no checkpoint was written"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "interrupted" / "run" / "final_model").exists(), "the run finished before the kill"
    half_written = tmp_path / "interrupted" / "run" / "checkpoints" / "checkpoint_40"
    half_written.mkdir()  # as if killed while saving: no COMPLETE marker
    (half_written / "model.safetensors").write_bytes(b"trunc")
    restart = subprocess.run([sys.executable, str(TRAIN), "--config", str(interrupted)], capture_output=True,
                             text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
    assert restart.returncode == 1 and "error: " in restart.stderr and "--resume latest" in restart.stderr
    assert "Traceback" not in restart.stderr, "a fresh run into a resumable directory must be refused clearly"
    result = run_training(interrupted, "--resume", "latest")
    assert not half_written.exists()
    assert "Resumed from" in result.stdout + result.stderr
    final = [load_file(tmp_path / name / "run" / "final_model" / "model.safetensors")
             for name in ("straight", "interrupted")]
    assert final[0].keys() == final[1].keys()
    for name, tensor in final[0].items():
        torch.testing.assert_close(final[1][name], tensor, rtol=0, atol=0, msg=name)


def test_checkpoint_rotation_and_best_model_threshold(tmp_path, demo_dataset):
    config = write_config(tmp_path, demo_dataset, checkpoint_every_steps=1, keep_checkpoints=2,
                          report_to="tensorboard")
    run_training(config)
    run = tmp_path / "run"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    steps = sum(1 for line in (run / "metrics.jsonl").open() if "train/loss" in line)
    assert len(checkpoints) == 2 and checkpoints == [f"checkpoint_{steps - 2}", f"checkpoint_{steps - 1}"]
    metrics = json.loads((run / "best_model" / "validation_metrics.json").read_text())
    model = PatchNetForImageClassification.from_pretrained(run / "best_model")
    assert model.config.threshold == pytest.approx(metrics["reports"]["all"]["threshold"])
    assert model.config.threshold_strategy == "eer"
    assert (run / "best_model" / "preprocessor_config.json").exists()
    assert (run / "best_model" / "README.md").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["checkpoint_every_steps"] == 1
    assert list((run / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert any("val/all/acer" in entry for entry in logged)


@pytest.mark.parametrize(
    "override,message",
    [
        ("training.lerning_rate=0.1", "unknown key 'training.lerning_rate'"),
        ("training.batch_size=eight", "training.batch_size: expected int, got str 'eight'"),
        ("model.patch_size=1.5", "model.patch_size: expected int"),
        ("data.datasets=[{root: /nonexistent/dataset}]", r"data.datasets\[0\].root: training CSV"),
        ("training.best_metric=accuracy", "training.best_metric: 'accuracy' is not one of"),
        ("training.batch_size=500", "training.batch_size: 500 images x 1 process\\(es\\) is more than the 42"),
        ("training.lr_scheduler=cosine_annealing", "training.lr_scheduler: 'cosine_annealing' is not one of"),
        ("model.margin_live=1.2", r"model.margin_live=1.2 must lie in \[0, 1\)"),
        ("model.backbone=resnet_unknown", "model.backbone='resnet_unknown' is not a timm model name"),
        ("training.mixed_precision=fp8", "training.mixed_precision: 'fp8' is not one of"),
        ("training.mixed_precision=yes", r"training.mixed_precision: True is not one of \['no', 'bf16', 'fp16'\]"),
    ],
)
def test_bad_configs_fail_before_training_naming_the_key(tmp_path, demo_dataset, override, message, capsys):
    sys.path.insert(0, str(TRAIN.parent))
    try:
        import train as train_script
    finally:
        sys.path.pop(0)
    config = write_config(tmp_path, demo_dataset)
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--config", str(config), override])
    assert exit_info.value.code.startswith("config error: ")
    assert __import__("re").search(message, exit_info.value.code), exit_info.value.code
    assert not (tmp_path / "run").exists(), "nothing may be written before the config is valid"


def test_push_to_hub_sends_card_and_weights_that_load_back(tmp_path, demo_dataset, local_hub):
    config = write_config(tmp_path, demo_dataset, epochs=1)
    environment = hub_environment(tmp_path / "hf_home", local_hub.url)
    run_training(config, "--push_to_hub", "--hub_model_id", "tester/patchnet-demo", environment=environment)
    files = local_hub.files("tester/patchnet-demo")
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= set(files)
    local = tmp_path / "run" / "best_model"
    assert files["model.safetensors"] == (local / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "model-index" in card and "acer" in card.lower()
    script = (
        "import torch, patchnet_hf\n"
        "from transformers import AutoModelForImageClassification\n"
        "model = AutoModelForImageClassification.from_pretrained('tester/patchnet-demo')\n"
        "print('THRESHOLD', model.config.threshold)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stored = PatchNetForImageClassification.from_pretrained(local).config.threshold
    assert f"THRESHOLD {stored}" in result.stdout


def test_push_without_network_keeps_the_local_result(tmp_path, demo_dataset):
    config = write_config(tmp_path, demo_dataset, max_steps=2)
    environment = hub_environment(tmp_path / "hf_home", "http://127.0.0.1:9")  # nothing listens on port 9
    result = run_training(config, "--push_to_hub", "--hub_model_id", "tester/unreachable", environment=environment)
    output = result.stdout + result.stderr
    assert "Hub push failed" in output and "tester/unreachable" in output and "intact" in output
    assert (tmp_path / "run" / "best_model" / "model.safetensors").exists()


def test_unquoted_yaml_no_means_no_mixed_precision(tmp_path, demo_dataset):
    from patchnet_hf.training_config import load_config

    config = load_config(write_config(tmp_path, demo_dataset), ["training.mixed_precision=no"])
    assert config.training.mixed_precision == "no"


def test_invalid_dataset_rows_stop_training_with_the_file_and_rows(tmp_path, demo_dataset):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(demo_dataset, broken)
    lines = (broken / "train.csv").read_text().splitlines()
    first = lines[1].split(",")
    lines[1] = ",".join([first[0], "7", *first[2:]])
    (broken / "train.csv").write_text("\n".join(lines) + "\n")
    sys.path.insert(0, str(TRAIN.parent))
    try:
        import train as train_script
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--config", str(write_config(tmp_path, broken))])
    message = exit_info.value.code
    assert message.startswith("error: ") and str(broken / "train.csv") in message
    assert "label" in message and first[0] in message


def test_several_datasets_train_together_and_validate_separately(tmp_path, demo_dataset):
    config = write_config(tmp_path, demo_dataset, max_steps=2)
    values = yaml.safe_load(config.read_text())
    values["data"]["datasets"] = [{"root": str(demo_dataset), "name": "first"},
                                  {"root": str(demo_dataset), "name": "second", "val_csv": "test.csv"}]
    config.write_text(yaml.safe_dump(values))
    run_training(config)
    reports = json.loads((tmp_path / "run" / "best_model" / "validation_metrics.json").read_text())["reports"]
    n_val, n_test = csv_rows(demo_dataset / "val.csv"), csv_rows(demo_dataset / "test.csv")
    assert set(reports) == {"first", "second", "all"}
    assert (reports["first"]["n_samples"], reports["second"]["n_samples"]) == (n_val, n_test)
    assert reports["all"]["n_samples"] == n_val + n_test
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert any("val/first/acer" in entry and "val/second/acer" in entry for entry in logged)
