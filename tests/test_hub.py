"""Model card and Hub push: metadata, a round trip through a local Hub, and the failures a push can meet.

Everything that talks HTTP through huggingface_hub runs in a subprocess whose environment points it at a local
server (`HF_ENDPOINT`, `HF_HUB_OFFLINE=0`, both read at import); this process stays offline. Subprocesses are
few and shared by module-scoped fixtures, because importing torch + transformers dominates their cost.
"""

import base64
import json
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_PATCH, tiny_config
from hub_server import LocalHub, git_blob_oid, hub_environment, local_hub  # noqa: F401  (a fixture)
from huggingface_hub import ModelCard

from patchnet_hf import PatchNetForImageClassification, PatchNetImageProcessor
from patchnet_hf.hub import HubPushError, build_model_card, push_to_hub
from patchnet_hf.metrics import choose_threshold, compute_metrics, format_markdown_table

REPO_ID = "tester/patchnet-tiny"
LABELS = {0: "print", 1: "live", 2: "replay"}
TRAIN_CONFIG = {
    "model": {"backbone": "test_resnet", "patch_size": TINY_PATCH},
    "training": {"epochs": 2, "learning_rate": 0.002, "output_dir": Path("outputs/tiny")},
}
CODE_FILES = {"configuration_patchnet.py", "modeling_patchnet.py", "image_processing_patchnet.py"}
MODEL_FILES = {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} | CODE_FILES


def run_python(script: str, *args, environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=180)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (hidden ones included): relative path -> bytes."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {str(path.relative_to(directory)): path.read_bytes() for path in files}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def evaluation_reports() -> dict:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(0.35 * labels + 0.65 * rng.random(300), 0, 1)
    threshold = choose_threshold("eer", scores[:150], labels[:150])
    test = compute_metrics(scores[150:], labels[150:], threshold=threshold)
    cross = compute_metrics(scores[150:] ** 2, labels[150:], threshold=threshold)
    return {"Demo P1 test": test, "Demo cross-dataset": cross.to_dict()}


def card_for(directory: Path, **overrides) -> ModelCard:
    settings = dict(repo_id=REPO_ID, dataset_names=["demo-faces"], train_config=TRAIN_CONFIG,
                    reports=evaluation_reports())
    settings.update(overrides)
    return build_model_card(directory, **settings)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved tiny model, image processor and README.md; `../io.pt` holds a fixed input and its outputs."""
    directory = tmp_path_factory.mktemp("best_model")
    torch.manual_seed(0)
    config = tiny_config(id2label=LABELS, threshold=0.37, threshold_strategy="eer")
    model = PatchNetForImageClassification(config).train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that a lost buffer would show
        model(torch.randn(8, 2, 3, TINY_PATCH, TINY_PATCH))
    model.eval().save_pretrained(directory)
    PatchNetImageProcessor(patch_size=TINY_PATCH, grid_size=2).save_pretrained(directory)
    card_for(directory).save(directory / "README.md")
    pixel_values = torch.randn(2, 4, 3, TINY_PATCH, TINY_PATCH)
    with torch.no_grad():
        liveness = model(pixel_values).liveness_score
    torch.save({"pixel_values": pixel_values, "liveness": liveness}, directory.parent / "io.pt")
    return directory


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


# ------------------------------------------------------------------------------------------------------------
# Model card
# ------------------------------------------------------------------------------------------------------------


def test_model_card_metadata(model_dir):
    reports = evaluation_reports()
    card = card_for(model_dir, dataset_names=["demo-faces", "other-faces"], reports=reports,
                    base_model="timm/resnet18.a1_in1k")
    metadata = front_matter(str(card))
    assert metadata["pipeline_tag"] == "image-classification"
    assert metadata["library_name"] == "transformers"
    assert metadata["datasets"] == ["demo-faces", "other-faces"]
    assert metadata["base_model"] == "timm/resnet18.a1_in1k"
    assert metadata["license"] == "apache-2.0"
    assert {"face-anti-spoofing", "presentation-attack-detection", "patchnet"} <= set(metadata["tags"])
    (index,) = metadata["model-index"]
    assert index["name"] == "patchnet-tiny"
    assert [result["dataset"]["name"] for result in index["results"]] == list(reports)
    fields = {"acer": "acer", "apcer": "apcer", "bpcer": "bpcer", "hter": "hter", "eer": "eer",
              "roc_auc": "auc"}
    for result, report in zip(index["results"], reports.values(), strict=True):
        report = report if isinstance(report, dict) else report.to_dict()
        assert result["task"]["type"] == "image-classification"
        values = {metric["type"]: metric["value"] for metric in result["metrics"]}
        assert set(values) == set(fields)
        for metric_type, field in fields.items():
            assert values[metric_type] == pytest.approx(report[field], abs=1e-6), metric_type
    # huggingface_hub reads the card back into the same evaluation results.
    assert len(ModelCard(str(card)).data.eval_results) == 2 * len(fields)


def test_model_card_body(model_dir):
    reports = evaluation_reports()
    text = card_for(model_dir, reports=reports).text
    assert format_markdown_table(reports) in text
    assert "**0.37**" in text and "threshold_strategy: eer" in text and "equal-error-rate" in text
    for class_id, label in LABELS.items():
        kind = "bona fide" if label == "live" else "attack"
        assert f"| {class_id} | {label} | {kind} |" in text
    assert f'pipeline("image-classification", model="{REPO_ID}", trust_remote_code=True)' in text
    assert f'AutoModelForImageClassification.from_pretrained("{REPO_ID}", trust_remote_code=True)' in text
    assert "- demo-faces" in text
    training_block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    expected = {**TRAIN_CONFIG, "training": {**TRAIN_CONFIG["training"], "output_dir": "outputs/tiny"}}
    assert yaml.safe_load(training_block) == expected


def test_model_card_without_reports_has_no_model_index(model_dir):
    card = card_for(model_dir, dataset_names=[], train_config={}, reports={})
    assert "model-index" not in front_matter(str(card))
    assert "No evaluation results were recorded." in card.text


# ------------------------------------------------------------------------------------------------------------
# The local Hub itself
# ------------------------------------------------------------------------------------------------------------


def call(hub: LocalHub, method: str, path: str, payload=None, token: str | None = "dummy"):
    """(status, headers, body) of one plain HTTP request to the local Hub (no proxy, no huggingface_hub)."""
    data = payload if isinstance(payload, bytes) or payload is None else json.dumps(payload).encode()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(hub.url + path, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_local_hub_routes_and_errors(local_hub, capfd):  # noqa: F811 - the fixture imported above
    create = {"name": "m", "organization": "me"}
    assert call(local_hub, "POST", "/api/repos/create", create, token=None)[0] == 401
    assert call(local_hub, "POST", "/api/repos/create", create)[0] == 200
    status, _, body = call(local_hub, "POST", "/api/repos/create", create)
    assert status == 409 and json.loads(body)["url"] == f"{local_hub.url}/me/m"
    commit = b"\n".join(json.dumps(line).encode() for line in [
        {"key": "header", "value": {"summary": "add", "description": ""}},
        {"key": "file", "value": {"path": "a/b.txt", "encoding": "base64",
                                  "content": base64.b64encode(b"hello").decode()}},
    ])
    status, _, body = call(local_hub, "POST", "/api/models/me/m/commit/main", commit)
    sha = json.loads(body)["commitOid"]
    assert status == 200 and local_hub.files("me/m")["a/b.txt"] == b"hello"
    status, headers, body = call(local_hub, "GET", "/me/m/resolve/main/a/b.txt")
    assert (status, body, headers["X-Repo-Commit"]) == (200, b"hello", sha)
    assert headers["ETag"] == f'"{git_blob_oid(b"hello")}"' and headers["Content-Length"] == "5"
    status, headers, _ = call(local_hub, "HEAD", "/me/m/resolve/main/missing.txt")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", sha)
    status, _, body = call(local_hub, "GET", "/api/models/me/m/tree/main?recursive=true")
    assert {entry["path"] for entry in json.loads(body)} == {".gitattributes", "a", "a/b.txt"}
    status, headers, _ = call(local_hub, "GET", "/api/models/me/unknown")
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
    assert call(local_hub, "GET", "/api/spaces/me/space")[0] == 501
    assert "501 not implemented: GET /api/spaces/me/space" in capfd.readouterr().err
    local_hub.required_token = "secret"
    assert call(local_hub, "GET", "/api/models/me/m", token="other")[0] == 401
    assert call(local_hub, "GET", "/api/models/me/m", token="secret")[0] == 200


def test_local_hub_serves_a_bounded_number_of_requests():
    with LocalHub(max_requests=2) as hub:
        assert [call(hub, "GET", "/api/models/me/m")[0] for _ in range(3)] == [404, 404, 410]


# ------------------------------------------------------------------------------------------------------------
# Through a local Hub: failures first, then a push and a load, all in one subprocess (imports are slow)
# ------------------------------------------------------------------------------------------------------------

ONLINE_SESSION = textwrap.dedent("""
    import json, os, sys, time
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification
    from patchnet_hf.hub import HubPushError, push_to_hub
    model_dir, repo_id, io_path, failing_cases = sys.argv[1:]
    # Pushes that must fail, as [name, endpoint, token, timeout]; the environment has no HF_TOKEN yet.
    for name, endpoint, token, timeout in json.loads(failing_cases):
        start = time.monotonic()
        try:
            push_to_hub(model_dir, repo_id, token=token, endpoint=endpoint, timeout=timeout)
            result = {"reason": None}
        except HubPushError as error:
            result = {"reason": error.reason, "message": str(error)}
        result["seconds"] = time.monotonic() - start
        print("FAILED_PUSH", name, json.dumps(result), flush=True)
    # The push a user makes: endpoint from HF_ENDPOINT, credentials from HF_TOKEN.
    os.environ["HF_TOKEN"] = "dummy"
    print("COMMIT", push_to_hub(model_dir, repo_id, commit_message="best model"), flush=True)
    print("AGAIN", push_to_hub(model_dir, repo_id), flush=True)  # nothing changed: no new commit
    model = AutoModelForImageClassification.from_pretrained(repo_id).eval()
    processor = AutoImageProcessor.from_pretrained(repo_id)
    assert type(model).__module__ == "patchnet_hf.modeling_patchnet", type(model).__module__
    io = torch.load(io_path)
    with torch.no_grad():
        liveness = model(io["pixel_values"]).liveness_score
    torch.testing.assert_close(liveness, io["liveness"], rtol=0, atol=0)
    print("LOADED", model.config.threshold, processor.grid_size)
""")

LOAD_WITHOUT_PACKAGE = textwrap.dedent("""
    import sys
    sys.modules["patchnet_hf"] = None  # any import of the package now fails
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline
    repo_id, io_path = sys.argv[1:]
    model = AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    io = torch.load(io_path)
    with torch.no_grad():
        liveness = model(io["pixel_values"]).liveness_score
    torch.testing.assert_close(liveness, io["liveness"], rtol=0, atol=0)
    classifier = pipeline("image-classification", model=repo_id, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    print("LABELS", sorted(prediction["label"] for prediction in classifier(image, top_k=3)))
""")


@pytest.fixture(scope="module")
def online(model_dir, tmp_path_factory):
    """Runs ONLINE_SESSION against a local Hub, a Hub that wants another token, a dead port and a silent one.

    Yields a dict: "hub" (holds the pushed model), "strict_hub", "endpoints" and "failed" (failing case ->
    result), "result" (the subprocess), "before" (the model directory's files before any push).
    """
    work = tmp_path_factory.mktemp("online")
    before = snapshot(model_dir)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    strict = LocalHub(required_token="the-right-token")
    with LocalHub() as hub, strict as strict_hub, socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody ever answers
        endpoints = {"dead": dead, "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
                     "rejected-token": strict_hub.url, "no-token": strict_hub.url}
        tokens = {"dead": "dummy", "silent": "dummy", "rejected-token": "wrong-token", "no-token": None}
        cases = [[name, endpoint, tokens[name], 1.0 if name == "silent" else 10.0]
                 for name, endpoint in endpoints.items()]
        result = run_python(ONLINE_SESSION, model_dir, REPO_ID, model_dir.parent / "io.pt", json.dumps(cases),
                            cwd=work, environment=hub_environment(work / "hf_home", hub.url, token=None))
        failed = {}
        for line in result.stdout.splitlines():
            if line.startswith("FAILED_PUSH "):
                _, name, payload = line.split(" ", 2)
                failed[name] = json.loads(payload)
        yield {"hub": hub, "strict_hub": strict_hub, "endpoints": endpoints, "failed": failed,
               "result": result, "before": before}


def test_push_uploads_every_file(online, model_dir):
    hub, result, before = online["hub"], online["result"], online["before"]
    assert result.returncode == 0, result.stderr[-3000:]
    remote = hub.files(REPO_ID)
    assert MODEL_FILES <= set(remote)
    for name, content in before.items():
        assert remote[name] == content, name
    repo = hub.repos[REPO_ID]
    assert len(repo.snapshots) == 2  # the repo's initial commit and the upload: the second push was a no-op
    assert repo.messages[repo.head] == "best model"
    commit = result.stdout.split("COMMIT ", 1)[1].split()[0]
    assert commit == f"{hub.url}/{REPO_ID}/commit/{repo.head}"
    assert result.stdout.split("AGAIN ", 1)[1].split()[0] == commit
    assert "not implemented" not in result.stderr


def test_from_pretrained_from_the_hub_gives_identical_outputs(online):
    hub, result = online["hub"], online["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED 0.37 2" in result.stdout
    downloads = {path.rsplit("/", 1)[1] for method, path, status in hub.requests
                 if method == "GET" and "/resolve/" in path and status == 200}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= downloads


def test_hub_model_loads_without_the_package(online, model_dir, tmp_path):
    hub, result = online["hub"], online["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = run_python(LOAD_WITHOUT_PACKAGE, REPO_ID, model_dir.parent / "io.pt", cwd=tmp_path,
                        environment=hub_environment(tmp_path / "hf_home", hub.url, token=None))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "LABELS ['live', 'print', 'replay']" in loaded.stdout
    downloads = {path.rsplit("/", 1)[1] for method, path, status in hub.requests if method == "GET"}
    assert CODE_FILES <= downloads


def test_pushes_leave_the_local_directory_unchanged(online, model_dir):
    assert set(online["failed"]) == set(online["endpoints"]), online["result"].stderr[-3000:]
    assert snapshot(model_dir) == online["before"]


def assert_says_local_result_is_intact(result: dict, model_dir: Path, endpoint: str) -> None:
    message = result["message"]
    assert REPO_ID in message and endpoint in message, message
    assert f"The local result in {model_dir} is intact" in message, message
    assert "hf auth login" in message and "HF_TOKEN" in message, message
    assert f"HF_ENDPOINT={endpoint} hf upload {REPO_ID} {model_dir} ." in message, message


def test_push_to_a_dead_endpoint_fails_fast(online, model_dir):
    result = online["failed"]["dead"]
    assert result["reason"] == "unreachable", result
    assert result["seconds"] < 20, result
    assert "cannot be reached (ConnectError" in result["message"], result["message"]
    assert_says_local_result_is_intact(result, model_dir, online["endpoints"]["dead"])


def test_push_to_an_endpoint_that_never_answers_times_out(online, model_dir):
    result = online["failed"]["silent"]
    assert result["reason"] == "unreachable", result
    assert result["seconds"] < 10, result
    assert "did not answer within 1 s" in result["message"], result["message"]
    assert_says_local_result_is_intact(result, model_dir, online["endpoints"]["silent"])


@pytest.mark.parametrize("case", ["rejected-token", "no-token"])
def test_push_with_bad_credentials_says_how_to_log_in(online, model_dir, case):
    result = online["failed"][case]
    assert result["reason"] == "credentials", result
    expected = "no token was found" if case == "no-token" else "refused the token (HTTP 401)"
    assert expected in result["message"], result["message"]
    assert_says_local_result_is_intact(result, model_dir, online["endpoints"][case])
    strict_hub = online["strict_hub"]
    assert strict_hub.repos == {}
    assert {status for _, _, status in strict_hub.requests} == {401}


def test_push_in_offline_mode_sends_nothing(model_dir):
    before = snapshot(model_dir)
    with pytest.raises(HubPushError, match="offline mode is enabled") as raised:
        push_to_hub(model_dir, REPO_ID, endpoint="http://127.0.0.1:9")
    assert raised.value.reason == "offline" and raised.value.repo_id == REPO_ID
    message = str(raised.value)
    assert f"The local result in {model_dir} is intact" in message and "HF_HUB_OFFLINE" in message
    assert snapshot(model_dir) == before


def test_push_of_a_directory_without_a_model_fails_before_any_request(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_to_hub(tmp_path, REPO_ID, endpoint="http://127.0.0.1:9")
