"""Times the full metric set against scikit-learn's ROC on the same scores.

Ours: :func:`patchnet_hf.metrics.compute_metrics` (validation, ROC, EER, AUC, APCER/BPCER/ACER/HTER, BPCER20,
BPCER100, TPR@FPR). Reference: ``sklearn.metrics.roc_curve`` + ``roc_auc_score``, which compute less. Both run
on the same seeded scores in the same process; the best of ``--repeats`` runs is reported.

Usage::

    python benchmarks/bench_metrics.py [--n 10000000] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from patchnet_hf.metrics import compute_metrics

SPECIES = np.array(["print", "replay", "mask", "cutout"])


def make_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded scores (n,) float32 as a model emits them, labels (n,) with 30% bona fide, species (n,) str."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.int8)
    logits = rng.normal(np.where(labels == 1, 1.5, -1.5), 1.5)
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    species = SPECIES[rng.integers(0, SPECIES.size, n)]
    return scores, labels, species


def best_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time in seconds over ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="number of scores")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per implementation (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scores, labels, species = make_scores(args.n, args.seed)
    print(f"{args.n:,} scores ({np.unique(scores).size:,} distinct), {int(labels.sum()):,} bona fide")

    ours, report = best_time(lambda: compute_metrics(scores, labels), args.repeats)
    with_species, _ = best_time(lambda: compute_metrics(scores, labels, species=species), args.repeats)
    sklearn, sklearn_auc = best_time(
        lambda: (roc_curve(labels, scores), roc_auc_score(labels, scores))[1], args.repeats
    )
    print(f"patchnet_hf compute_metrics (full set)       : {ours:7.3f} s")
    print(f"patchnet_hf compute_metrics (+ 4 species)    : {with_species:7.3f} s")
    print(f"sklearn roc_curve + roc_auc_score            : {sklearn:7.3f} s")
    print(f"ratio sklearn / ours (full set)              : {sklearn / ours:7.2f}x")
    print(f"AUC ours {report.auc:.12f}, sklearn {sklearn_auc:.12f}")
    if abs(report.auc - sklearn_auc) > 1e-9:
        raise SystemExit("AUC disagrees with scikit-learn")


if __name__ == "__main__":
    main()
