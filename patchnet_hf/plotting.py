"""Evaluation figures: ROC, DET and score histograms, written as PNG files.

The curves come from :func:`patchnet_hf.metrics.roc_points`; nothing here computes a metric. Figures are drawn
on matplotlib's Agg canvas through the object-oriented API (no pyplot), so plotting works headless and leaves
the global matplotlib backend alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import DEFAULT_SPECIES, RocCurve, Threshold, _as_column, _as_threshold, check_scores_labels, roc_points

__all__ = ["plot_det", "plot_roc", "plot_score_histograms", "probit"]

# A curve is a RocCurve or the (scores, labels) pair to build one from; several curves are named by source.
CurveInput = RocCurve | tuple[npt.ArrayLike, npt.ArrayLike]
Curves = CurveInput | Mapping[str, CurveInput]

FIGSIZE = (6.4, 5.0)
DPI = 150
# DET axes use the normal-deviate scale, where 0 and 1 are infinitely far: rates are clipped to this range.
DET_CLIP = 1e-4
# DET axes end at 50%: beyond it a detector is worse than chance at that operating point.
DET_MAX = 0.5
DET_TICKS = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)
# Curves are thinned to about this many points per axis before drawing; finer detail is below a pixel.
_PLOT_RESOLUTION = 2048

# Coefficients of Acklam's rational approximation of the inverse normal CDF.
_PROBIT_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
             -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_PROBIT_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
             -1.328068155288572e01, 1.0)  # fmt: skip
_PROBIT_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
             4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_PROBIT_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00, 1.0)
_PROBIT_TAIL = 0.02425


def probit(p: npt.ArrayLike) -> np.ndarray:
    """Inverse of the standard normal CDF, vectorised (scipy is not a dependency).

    Uses P. J. Acklam's rational approximation (relative error below 1.2e-9), the same function as
    ``statistics.NormalDist().inv_cdf`` without a Python loop.

    Args:
        p: (...) probabilities, strictly inside (0, 1).

    Returns:
        (...) float64 normal deviates.
    """
    p = np.asarray(p, dtype=np.float64)
    if not np.all((p > 0.0) & (p < 1.0)):
        raise ValueError("probit is only defined for probabilities strictly inside (0, 1)")
    # probit(1 - p) = -probit(p): evaluate the lower half only.
    q = np.minimum(p, 1.0 - p)
    tail_r = np.sqrt(-2.0 * np.log(q))
    tail = np.polyval(_PROBIT_C, tail_r) / np.polyval(_PROBIT_D, tail_r)
    t = q - 0.5
    central = t * np.polyval(_PROBIT_A, t * t) / np.polyval(_PROBIT_B, t * t)
    lower = np.where(q < _PROBIT_TAIL, tail, central)
    return np.where(p <= 0.5, lower, -lower)


def _as_curves(curves: Curves) -> dict[str, RocCurve]:
    """Normalises the accepted curve inputs to {source name ("" when unnamed): RocCurve}."""
    if isinstance(curves, RocCurve | tuple):
        curves = {"": curves}
    if not curves:
        raise ValueError("no curves to plot")
    return {
        name: curve if isinstance(curve, RocCurve) else roc_points(*curve) for name, curve in curves.items()
    }


def _curve_label(name: str, curve: RocCurve) -> str:
    eer, _ = curve.equal_error_rate()
    summary = f"EER {eer:.2%}, AUC {curve.auc():.4f}"
    return f"{name} ({summary})" if name else summary


def _thin(x: np.ndarray, y: np.ndarray, spans: tuple[float, float]) -> np.ndarray:
    """Indices of the points of a monotone curve (x, y) (m,) worth drawing.

    Points are quantised to a grid of ``_PLOT_RESOLUTION`` cells per axis span; the first and last point of
    each run falling in the same cell are kept, so the drawn polyline differs by less than a cell.
    """
    cells = np.stack([np.floor(x * _PLOT_RESOLUTION / spans[0]), np.floor(y * _PLOT_RESOLUTION / spans[1])])
    changes = np.any(cells[:, 1:] != cells[:, :-1], axis=0)
    keep = np.ones(x.size, dtype=bool)
    keep[1:-1] = changes[:-1] | changes[1:]
    return np.flatnonzero(keep)


def _new_axes() -> Axes:
    """The axes of a new figure on its own Agg canvas."""
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure.add_subplot()


def _save(axes: Axes, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes.figure.savefig(path, format="png")
    return path


def plot_roc(curves: Curves, path: str | os.PathLike[str], *, title: str = "ROC") -> Path:
    """Plots ROC curves: attack acceptance (APCER, FPR) against bona fide acceptance (1 - BPCER, TPR).

    Args:
        curves: a :class:`~patchnet_hf.metrics.RocCurve`, a ``(scores (n,), labels (n,))`` pair, or a mapping
            source name -> either of those to overlay several sources.
        path: PNG file to write (parent folders are created).
        title: figure title.

    Returns:
        The path written.
    """
    axes = _new_axes()
    for name, curve in _as_curves(curves).items():
        keep = _thin(curve.apcer, curve.tpr, (1.0, 1.0))
        axes.plot(curve.apcer[keep], curve.tpr[keep], label=_curve_label(name, curve))
    axes.plot([0.0, 1.0], [0.0, 1.0], linestyle=":", color="grey", linewidth=1)
    axes.set(
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
        xlabel="APCER (attacks accepted, FPR)",
        ylabel="1 - BPCER (bona fide accepted, TPR)",
        title=title,
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return _save(axes, path)


def plot_det(curves: Curves, path: str | os.PathLike[str], *, title: str = "DET") -> Path:
    """Plots DET curves: APCER against BPCER on normal-deviate axes, with each curve's EER point marked.

    Rates are clipped to ``(DET_CLIP, 1 - DET_CLIP)`` because 0 and 1 lie at infinity on these axes.

    Args:
        curves: a :class:`~patchnet_hf.metrics.RocCurve`, a ``(scores (n,), labels (n,))`` pair, or a mapping
            source name -> either of those to overlay several sources.
        path: PNG file to write (parent folders are created).
        title: figure title.

    Returns:
        The path written.
    """
    axes = _new_axes()
    low, high = probit(DET_CLIP), probit(DET_MAX)
    for name, curve in _as_curves(curves).items():
        x = probit(np.clip(curve.apcer, DET_CLIP, 1.0 - DET_CLIP))
        y = probit(np.clip(curve.bpcer, DET_CLIP, 1.0 - DET_CLIP))
        keep = _thin(x - low, y - low, (high - low, high - low))
        (line,) = axes.plot(x[keep], y[keep], label=_curve_label(name, curve))
        eer = probit(np.clip(curve.equal_error_rate()[0], DET_CLIP, 1.0 - DET_CLIP))
        axes.plot([eer], [eer], marker="o", color=line.get_color())
    ticks = probit(DET_TICKS)
    tick_labels = [f"{100.0 * rate:g}" for rate in DET_TICKS]
    axes.plot([low, high], [low, high], linestyle=":", color="grey", linewidth=1)
    axes.set(
        xlim=(low, high),
        ylim=(low, high),
        xticks=ticks,
        yticks=ticks,
        xticklabels=tick_labels,
        yticklabels=tick_labels,
        xlabel="APCER (%)",
        ylabel="BPCER (%)",
        title=title,
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return _save(axes, path)


def plot_score_histograms(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    species: npt.ArrayLike | None,
    threshold: float | Threshold,
    path: str | os.PathLike[str],
    *,
    bins: int = 50,
    title: str = "Score distributions",
) -> Path:
    """Plots the score density of bona fide presentations and of each attack species, with the threshold.

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack.
        species: optional (n,) attack species per sample (bona fide entries ignored); None draws all
            attacks as one species.
        threshold: the decision threshold, drawn as a vertical line (a Threshold also names its strategy).
        path: PNG file to write (parent folders are created).
        bins: number of bins shared by all histograms.
        title: figure title.

    Returns:
        The path written.
    """
    scores, is_bona_fide = check_scores_labels(scores, labels)
    is_attack = ~is_bona_fide
    if species is None:
        attack_species = np.full(int(is_attack.sum()), DEFAULT_SPECIES)
    else:
        attack_species = _as_column(species, scores.size, "species")[is_attack].astype(str)
    edges = np.histogram_bin_edges(scores, bins=bins)
    axes = _new_axes()
    if is_bona_fide.any():
        axes.hist(scores[is_bona_fide], bins=edges, density=True, alpha=0.4, label="bona fide")
    attack_scores = scores[is_attack]
    for name in np.unique(attack_species):
        axes.hist(attack_scores[attack_species == name], bins=edges, density=True, histtype="step",
                  linewidth=1.5, label=f"attack: {name}")  # fmt: skip
    threshold = _as_threshold(threshold)
    label = f"threshold {threshold.value:.4g} ({threshold.strategy})"
    axes.axvline(threshold.value, color="black", linestyle="--", label=label)
    axes.set(xlabel="liveness score (higher = bona fide)", ylabel="density", title=title)
    axes.legend(fontsize="small")
    return _save(axes, path)
