"""Scoring datasets with a PatchNet model under Accelerate, and metrics per source: the one path shared by
validation during training and `scripts/evaluate.py`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .metrics import MetricsReport, Threshold, compute_metrics

ALL_SOURCES = "all"
_TEXT_COLUMNS = ("patch_type", "group", "source", "image_name")


@dataclass
class ScoredSamples:
    """Liveness scores of a dataset, one entry per image, with what the metrics need.

    Attributes:
        scores: `(n,)` liveness in [0, 1], higher = bona fide.
        binary_labels: `(n,)` 1 = bona fide, 0 = attack.
        patch_type / group / source / image_name: `n` strings each (the attack species is the patch type).
    """

    scores: np.ndarray
    binary_labels: np.ndarray
    patch_type: list[str]
    group: list[str]
    source: list[str]
    image_name: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, mask: np.ndarray) -> ScoredSamples:
        """The samples where the `(n,)` bool `mask` is True."""
        picked = np.flatnonzero(mask)
        return ScoredSamples(
            self.scores[picked], self.binary_labels[picked],
            *([getattr(self, name)[i] for i in picked] for name in _TEXT_COLUMNS),
        )

    def by_source(self) -> dict[str, ScoredSamples]:
        """The samples of each source, by source name in sorted order."""
        source = np.asarray(self.source)
        return {name: self.select(source == name) for name in sorted(set(self.source))}

    @classmethod
    def concatenate(cls, parts: Iterable[ScoredSamples]) -> ScoredSamples:
        parts = list(parts)
        return cls(
            np.concatenate([part.scores for part in parts]),
            np.concatenate([part.binary_labels for part in parts]),
            *([value for part in parts for value in getattr(part, name)] for name in _TEXT_COLUMNS),
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per image: `source, image_name, group, patch_type, label, score`."""
        return pd.DataFrame({
            "source": self.source, "image_name": self.image_name, "group": self.group,
            "patch_type": self.patch_type, "label": self.binary_labels, "score": self.scores,
        })

    def metrics(self, threshold: float | Threshold, group_level: bool = False,
                score_aggregation: str | None = None) -> MetricsReport:
        """The full metric set (attack species = patch type; per group first when `group_level`)."""
        return compute_metrics(
            self.scores, self.binary_labels, species=self.patch_type,
            groups=self.group if group_level else None, threshold=threshold, score_aggregation=score_aggregation,
        )


@torch.no_grad()
def collect_scores(
    model: torch.nn.Module, dataloader: Iterable[Mapping], accelerator: Accelerator, description: str = "scoring"
) -> ScoredSamples:
    """Score every image of a prepared evaluation dataloader (batches from `EvalTransform`).

    Runs on every process; `gather_for_metrics` collects the results so that each process returns exactly
    the dataset's samples, in the dataset's order, without the padding of an uneven last batch.
    """
    model.eval()
    scores, labels, texts = [], [], {name: [] for name in _TEXT_COLUMNS}
    progress = tqdm(dataloader, desc=description, disable=not accelerator.is_local_main_process, leave=False)
    for batch in progress:
        output = model(pixel_values=batch["pixel_values"])
        batch_scores, batch_labels = accelerator.gather_for_metrics(
            (output.liveness_score.float(), batch["binary_labels"])
        )
        scores.append(batch_scores.cpu().numpy())
        labels.append(batch_labels.cpu().numpy())
        for name in _TEXT_COLUMNS:
            texts[name].extend(accelerator.gather_for_metrics(list(batch[name]), use_gather_object=True))
    return ScoredSamples(np.concatenate(scores).astype(np.float64), np.concatenate(labels).astype(np.int64),
                         **texts)


def without_duplicate_total(reports: dict[str, MetricsReport]) -> dict[str, MetricsReport]:
    """For tables and model cards: drop `"all"` when it only repeats the one source."""
    return {name: report for name, report in reports.items() if name != ALL_SOURCES or len(reports) > 2}


def reports_per_source(
    scored: ScoredSamples, threshold: float | Threshold, group_level: bool = False,
    score_aggregation: str | None = None,
) -> dict[str, MetricsReport]:
    """Metrics of each source separately and of all sources together (key `"all"`).

    Raises:
        ValueError: on input the metrics reject (e.g. a source without attacks); the message names the source.
    """
    parts = scored.by_source()
    reports = {}
    for name, part in parts.items():
        try:
            reports[name] = part.metrics(threshold, group_level, score_aggregation)
        except ValueError as error:
            raise ValueError(f"source {name!r}: {error}") from error
    sources = list(parts)
    if len(sources) > 1:
        reports[ALL_SOURCES] = scored.metrics(threshold, group_level, score_aggregation)
    else:
        reports[ALL_SOURCES] = reports[sources[0]]
    return reports


def _score_split(model, processor, accelerator: Accelerator, path: str, split: str, batch_size: int,
                 num_workers: int) -> ScoredSamples:
    from torch.utils.data import DataLoader

    from .data.loading import load_any_dataset
    from .data.transforms import EvalTransform

    dataset = load_any_dataset(path, split=split)
    loader = accelerator.prepare(DataLoader(EvalTransform(processor).apply(dataset), batch_size=batch_size,
                                            num_workers=num_workers))
    return collect_scores(model, loader, accelerator, f"scoring {path}")


def evaluate_model(
    model_name_or_path: str,
    test_sets: list[str],
    output_dir: str | Path,
    dev_set: str | None = None,
    threshold_strategy: str = "eer",
    target_apcer: float | None = None,
    group_level: bool = False,
    batch_size: int = 16,
    num_workers: int = 0,
    split: str = "test",
    dev_split: str = "val",
) -> dict:
    """Score test sets with a saved model (local directory or Hub id) on every process, and write the report.

    The threshold is chosen on `dev_set` with `threshold_strategy` (`"eer"` or `"apcer"` with `target_apcer`),
    or, without a development set, is the threshold stored in the model. Writes into `output_dir` (main process):
    `report.json`, `report.md`, `scores.csv`, `roc.png`, `det.png`, `score_histograms.png`.
    Returns the content of `report.json`.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from .hub import _first_line
    from .metrics import choose_threshold, format_markdown_table
    from .plotting import plot_det, plot_roc, plot_score_histograms

    accelerator = Accelerator()
    try:
        model = AutoModelForImageClassification.from_pretrained(model_name_or_path, trust_remote_code=False)
        processor = AutoImageProcessor.from_pretrained(model_name_or_path, trust_remote_code=False)
    except OSError as error:  # transformers' messages for a missing folder or Hub id may not name it
        where = "" if Path(model_name_or_path).is_dir() else "no such folder, and as a Hub model id: "
        raise OSError(f"cannot load the model {model_name_or_path}: {where}{_first_line(error)}") from error
    aggregation = model.config.score_aggregation
    stored = float(model.config.threshold)
    stored_strategy = model.config.threshold_strategy
    model = accelerator.prepare_model(model, evaluation_mode=True)  # no DDP wrapper: nothing to synchronise

    if dev_set is not None:
        dev = _score_split(model, processor, accelerator, dev_set, dev_split, batch_size, num_workers)
        threshold = choose_threshold(threshold_strategy, dev.scores, dev.binary_labels, target_apcer=target_apcer,
                                     dev_groups=dev.group if group_level else None)
    else:
        threshold = Threshold(stored, "fixed", f"threshold {stored:.6g} stored in the model "
                                               f"(chosen by '{stored_strategy}' when it was saved)")
    scored = ScoredSamples.concatenate(
        _score_split(model, processor, accelerator, path, split, batch_size, num_workers) for path in test_sets
    )
    reports = reports_per_source(scored, threshold, group_level, aggregation)
    report = {
        "model": str(model_name_or_path),
        "test_sets": list(test_sets),
        "dev_set": dev_set,
        "threshold": asdict(threshold),
        "score_aggregation": aggregation,
        "level": "group" if group_level else "sample",
        "reports": {name: item.to_dict() for name, item in reports.items()},
    }
    if accelerator.is_main_process:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "report.json").write_text(json.dumps(report, indent=2))
        (output_dir / "report.md").write_text(
            f"Model `{model_name_or_path}`; {threshold.description}; scores aggregated by {aggregation}.\n\n"
            + format_markdown_table(without_duplicate_total(reports)) + "\n"
        )
        scored.to_frame().to_csv(output_dir / "scores.csv", index=False)
        curves = {name: (part.scores, part.binary_labels) for name, part in scored.by_source().items()}
        plot_roc(curves, output_dir / "roc.png")
        plot_det(curves, output_dir / "det.png")
        plot_score_histograms(scored.scores, scored.binary_labels, scored.patch_type, threshold,
                              output_dir / "score_histograms.png")
    accelerator.wait_for_everyone()
    return report
