"""Sharing a trained PatchNet on the Hugging Face Hub: the model card and the push.

`build_model_card` turns a saved model directory, the evaluation reports and the training configuration
into a `README.md` with Hub metadata (tags, datasets, `model-index`). `push_to_hub` uploads the directory;
every failure it can foresee (offline mode, unreachable endpoint, missing or rejected credentials, another
HTTP error) becomes a `HubPushError` that says what happened and how to retry. The local directory is only
read, never modified.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token, is_offline_mode
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .metrics import MetricsReport, format_markdown_table

try:  # huggingface_hub >= 2 sends its requests with httpx2, 1.x with httpx.
    from httpx2 import TimeoutException, TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TimeoutException, TransportError

__all__ = ["HubPushError", "build_model_card", "push_to_hub"]

HUB_URL = "https://huggingface.co"
TAGS = ["face-anti-spoofing", "presentation-attack-detection", "liveness-detection", "patchnet", "vision"]
# (model-index metric type, display name, MetricsReport field, depends on the threshold)
CARD_METRICS = (
    ("acer", "ACER", "acer", True),
    ("apcer", "APCER", "apcer", True),
    ("bpcer", "BPCER", "bpcer", True),
    ("hter", "HTER", "hter", True),
    ("eer", "EER", "eer", False),
    ("roc_auc", "AUC", "auc", False),
)
THRESHOLD_STRATEGIES = {
    "fixed": "a fixed value, not calibrated on data",
    "eer": "the equal-error-rate threshold of the validation (development) set, where APCER = BPCER",
    "apcer": "the lowest threshold whose APCER on the validation (development) set stays within the target",
}
# Seconds the reachability check waits for the endpoint: huggingface_hub's upload requests have no timeout,
# so without it an endpoint that silently drops packets would hang the end of a training run.
DEFAULT_TIMEOUT = 10.0

_CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ model_name }}

A [PatchNet](https://arxiv.org/abs/2203.14325) (Wang et al., CVPR 2022) face anti-spoofing (presentation
attack detection) model, built with patchnet-hf on 🤗 Transformers.

It recognises the type of small patches cropped at native resolution from a face image (capture device x
presentation material): a timm backbone gives an L2-normalised embedding and a cosine classifier, trained with
an asymmetric additive-margin softmax and a two-view similarity loss.

- Backbone: `{{ backbone }}`; patches of {{ patch_size }} x {{ patch_size }} px.
- Inference: the image processor crops a {{ grid_size }} x {{ grid_size }} grid of patches per image; the
  liveness score (`liveness_score`, in [0, 1], higher = bona fide) is aggregated over them with the
  `{{ score_aggregation }}` rule.

## Labels

{{ labels_table }}

A presentation is accepted as **bona fide** (live) iff `liveness_score >= threshold`; every class not marked
bona fide is an attack.

## Decision threshold

**{{ threshold }}** (`threshold` in `config.json`), chosen as {{ threshold_how }}
(`threshold_strategy: {{ threshold_strategy }}`).
Recalibrate it on data from your own capture conditions before deployment.

## Evaluation

{{ metrics_section }}

## Usage

```python
from transformers import pipeline
classifier = pipeline("image-classification", model="{{ repo_id }}", trust_remote_code=True)
print(classifier("face.jpg"))  # per-class probabilities
```

`trust_remote_code=True` runs the model code stored in this repository. With the package installed
(`pip install patchnet-hf`), `import patchnet_hf` registers the classes and the flag is not needed.
The liveness score and the decision:

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification
processor = AutoImageProcessor.from_pretrained("{{ repo_id }}", trust_remote_code=True)
model = AutoModelForImageClassification.from_pretrained("{{ repo_id }}", trust_remote_code=True).eval()
score = model(**processor(image, return_tensors="pt")).liveness_score
is_bona_fide = score >= model.config.threshold
```

## Training data

{{ datasets_list }}

## Training configuration

```yaml
{{ train_config_yaml }}```

## Limitations

Face anti-spoofing models degrade on attack types, sensors and lighting unseen in training: the scores above
hold for the listed test sets only. The model detects presentation attacks; it does not verify identity.
"""


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says why and how to retry. The local directory is intact.

    Attributes:
        reason: "offline", "unreachable", "credentials" or "http".
        repo_id, endpoint, model_dir: what was being pushed, and where.
    """

    def __init__(self, message: str, *, reason: str, repo_id: str, endpoint: str, model_dir: Path):
        super().__init__(message)
        self.reason, self.repo_id, self.endpoint, self.model_dir = reason, repo_id, endpoint, model_dir


# ------------------------------------------------------------------------------------------------------------
# Model card
# ------------------------------------------------------------------------------------------------------------


def build_model_card(
    model_dir: str | Path,
    *,
    repo_id: str,
    dataset_names: list[str],
    train_config: Mapping[str, Any],
    reports: Mapping[str, MetricsReport | Mapping[str, Any]],
    base_model: str | None = None,
    license: str = "apache-2.0",
) -> ModelCard:
    """Builds the model card (README.md) of a saved PatchNet directory.

    Args:
        model_dir: a directory written by `save_pretrained` (its `config.json` gives labels and threshold; a
            `preprocessor_config.json`, when present, the inference grid).
        repo_id: the Hub repository the card describes ("user/name"), used in the usage snippets.
        dataset_names: the training datasets, listed in the metadata and the body.
        train_config: the training configuration, shown as a YAML block.
        reports: evaluation source (e.g. "OULU-NPU P1 test") -> `MetricsReport` or its `to_dict()`; each
            gives one `model-index` entry per metric (ACER, APCER, BPCER, HTER, EER, AUC; as fractions).
        base_model: the Hub id of the pretrained backbone, if any (e.g. "timm/resnet18.a1_in1k").
        license: the license of the weights; check that the training datasets' terms allow it.

    Returns:
        A `huggingface_hub.ModelCard`; `card.save(Path(model_dir) / "README.md")` writes it.
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    processor_path = model_dir / "preprocessor_config.json"
    processor = json.loads(processor_path.read_text()) if processor_path.is_file() else {}
    rows = {source: _report_dict(report) for source, report in reports.items()}
    metrics_section = _metrics_section(rows)  # first: it says which report lacks which metric
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=list(dataset_names) or None,
        eval_results=_eval_results(rows) or None,
        library_name="transformers",
        license=license,
        pipeline_tag="image-classification",
        tags=TAGS,
    )
    strategy = config.get("threshold_strategy", "fixed")
    return ModelCard.from_template(
        card_data,
        template_str=_CARD_TEMPLATE,
        model_name=model_name,
        repo_id=repo_id,
        backbone=config["backbone"],
        patch_size=processor.get("patch_size", config["patch_size"]),
        grid_size=processor.get("grid_size", config["grid_size"]),
        score_aggregation=config.get("score_aggregation", "probability"),
        labels_table=_labels_table(config),
        threshold=f"{config['threshold']:.6g}",
        threshold_strategy=strategy,
        threshold_how=THRESHOLD_STRATEGIES.get(strategy, f"strategy `{strategy}`"),
        metrics_section=metrics_section,
        datasets_list="\n".join(f"- {name}" for name in dataset_names) or "Not recorded.",
        train_config_yaml=yaml.safe_dump(_plain(train_config), sort_keys=False, allow_unicode=True),
    )


def _report_dict(report: MetricsReport | Mapping[str, Any]) -> dict[str, Any]:
    return report.to_dict() if isinstance(report, MetricsReport) else dict(report)


def _eval_results(rows: Mapping[str, Mapping[str, Any]]) -> list[EvalResult]:
    """One EvalResult per (source, metric); threshold-dependent metrics carry their threshold as args."""
    results = []
    for source, row in rows.items():
        for metric_type, metric_name, key, uses_threshold in CARD_METRICS:
            args = {"threshold": row["threshold"], "level": row.get("level")} if uses_threshold else None
            results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Face anti-spoofing (presentation attack detection)",
                    dataset_type=_slug(source),
                    dataset_name=source,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(float(row[key]), 6),
                    metric_args=args,
                )
            )
    return results


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def _labels_table(config: Mapping[str, Any]) -> str:
    live = set(config.get("live_labels") or ["live"])
    lines = ["| id | label | kind |", "|---:|---|---|"]
    for class_id, name in sorted(config["id2label"].items(), key=lambda item: int(item[0])):
        lines.append(f"| {class_id} | {name} | {'bona fide' if name in live else 'attack'} |")
    return "\n".join(lines)


def _metrics_section(rows: Mapping[str, Mapping[str, Any]]) -> str:
    if not rows:
        return "No evaluation results were recorded."
    return (
        format_markdown_table(rows)
        + "\nThe `model-index` metadata holds the same values as fractions. APCER and BPCER follow ISO/IEC "
        "30107-3; ACER = (APCER + BPCER) / 2."
    )


def _plain(value: Any) -> Any:
    """`value` with only YAML-safe types: mappings, lists, str, numbers, bools and None."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _plain(value.tolist())
    return str(value)


# ------------------------------------------------------------------------------------------------------------
# Push
# ------------------------------------------------------------------------------------------------------------


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload PatchNet model",
    endpoint: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Uploads a saved model directory to a Hub model repository, creating the repository if needed.

    Args:
        model_dir: the directory to upload (model, image processor, code files, README.md, ...).
        repo_id: "user/name" or "organization/name".
        token: a token with write access; default: `HF_TOKEN` or the token saved by `hf auth login`.
        private: create the repository as private (ignored when it exists).
        commit_message: the commit's summary.
        endpoint: the Hub URL; default: `HF_ENDPOINT` or https://huggingface.co.
        timeout: seconds to wait for the endpoint's first answer; an endpoint that does not answer fails then.

    Returns:
        The URL of the commit.

    Raises:
        FileNotFoundError: `model_dir` is not a directory with a `config.json` (checked before any request).
        HubPushError: offline mode, unreachable endpoint, missing or rejected credentials, another HTTP
            error.
    """
    folder = Path(model_dir).absolute()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model directory: it has no config.json")
    api = HfApi(endpoint=endpoint, token=token)

    def failure(reason: str, what: str) -> HubPushError:
        message = _failure_message(what, reason=reason, repo_id=repo_id, endpoint=api.endpoint, folder=folder,
                                   private=private)
        return HubPushError(message, reason=reason, repo_id=repo_id, endpoint=api.endpoint, model_dir=folder)

    if is_offline_mode():
        raise failure("offline", "offline mode is enabled (HF_HUB_OFFLINE=1), so nothing was sent.")
    try:
        _check_reachable(api, repo_id, timeout)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    except OfflineModeIsEnabled as error:
        raise failure("offline", f"offline mode is enabled ({error}).") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise failure("credentials", _credentials_problem(status, token)) from error
        raise failure("http", f"the Hub answered HTTP {status}: {_first_line(error)}") from error
    except TimeoutException as error:
        what = f"the endpoint did not answer within {timeout:g} s ({type(error).__name__})."
        raise failure("unreachable", what) from error
    except TransportError as error:
        what = f"the endpoint cannot be reached ({type(error).__name__}: {error})."
        raise failure("unreachable", what) from error
    return str(commit.commit_url)


def _check_reachable(api: HfApi, repo_id: str, timeout: float) -> None:
    """Fails within `timeout` seconds if the endpoint does not answer; any HTTP answer means it is there."""
    try:
        api.model_info(repo_id, timeout=timeout)
    except HfHubHTTPError:
        pass  # e.g. 404 for a repository not created yet, 401 for a private one: the endpoint answered


def _credentials_problem(status: int, token: str | None) -> str:
    if token is None and get_token() is None:
        return f"the Hub refused the request (HTTP {status}) and no token was found (no HF_TOKEN, no login)."
    return f"the Hub refused the token (HTTP {status}): invalid, expired, or without write access here."


def _first_line(error: BaseException) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _failure_message(
    what: str, *, reason: str, repo_id: str, endpoint: str, folder: Path, private: bool
) -> str:
    command = "hf upload " + shlex.join([repo_id, str(folder), "."]) + (" --private" if private else "")
    if endpoint.rstrip("/") != HUB_URL:
        command = f"HF_ENDPOINT={shlex.quote(endpoint)} {command}"
    first_step = {
        "offline": "unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) on a machine with network access",
        "unreachable": "check the network (and HF_ENDPOINT / proxy settings) and that the endpoint is up",
        "credentials": "get a token with write access to the namespace",
        "http": "check the repository id and your access to it",
    }[reason]
    return (
        f"Could not push {folder} to the Hub repository {repo_id!r} at {endpoint}: {what}\n"
        f"The local result in {folder} is intact: nothing there was changed or deleted.\n"
        f"To retry: {first_step}; log in with `hf auth login` (formerly `huggingface-cli login`) or set "
        f"HF_TOKEN; then run\n"
        f"    {command}\n"
        f"or call patchnet_hf.hub.push_to_hub({str(folder)!r}, {repo_id!r}) again."
    )
