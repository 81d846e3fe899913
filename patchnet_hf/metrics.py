"""Presentation attack detection metrics in ISO/IEC 30107-3 terms (numpy only).

This module is the only place in the project where metrics are computed. Conventions (METHOD.md, "Metrics"):

* ``labels``: ``1`` = bona fide (live), ``0`` = attack (spoof).
* ``scores``: liveness scores, higher = more likely bona fide.
* A presentation is accepted as bona fide iff ``score >= threshold``.

Every curve-based metric (EER, AUC, BPCER20, TPR@FPR, ...) is derived from a :class:`RocCurve`, built from
one sort of the scores (per class, then merged): O(n log n) in the number of samples, with no Python loop
over samples or thresholds. Inputs are validated strictly: empty input, non-finite scores, labels outside
{0, 1}, length mismatches and a missing class raise a ``ValueError`` that says what is wrong instead of
returning a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "GroupedScores",
    "MetricsReport",
    "RocCurve",
    "Threshold",
    "aggregate_by_group",
    "auc",
    "bpcer_at_apcer",
    "check_scores_labels",
    "choose_threshold",
    "compute_metrics",
    "equal_error_rate",
    "format_markdown_table",
    "roc_points",
    "threshold_at_apcer",
    "tpr_at_fpr",
]

DEFAULT_THRESHOLD = 0.5
# Name given to all attacks when no species are known.
DEFAULT_SPECIES = "attack"
# CelebA-Spoof reports TPR at these FPRs; keys are the names used in reports.
TPR_AT_FPR_TARGETS: dict[str, float] = {"1e-2": 1e-2, "5e-3": 5e-3, "1e-3": 1e-3}
ThresholdStrategy = Literal["fixed", "eer", "apcer"]
_STRATEGIES = ("fixed", "eer", "apcer")
# Category names that mean "missing" once converted to str (None, NaN from pandas, empty cell).
_MISSING_NAMES = frozenset({"", "None", "nan"})
# Number of offending indices quoted in error messages.
_QUOTE = 5


# ------------------------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------------------------


def _as_1d(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {array.shape}")
    return array


def check_scores_labels(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates scores and labels the way every metric here does.

    Args:
        scores: (n,) numeric liveness scores, all finite.
        labels: (n,) 0 (attack) or 1 (bona fide).

    Returns:
        (scores, is_bona_fide): (n,) float64 scores and (n,) bool mask of the bona fide samples.

    Raises:
        ValueError: on empty or non-1-D input, length mismatch, non-finite scores (with their count and first
            indices) or labels outside {0, 1}.
    """
    scores = _as_1d(scores, "scores")
    labels = _as_1d(labels, "labels")
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"length mismatch: {scores.shape[0]} scores but {labels.shape[0]} labels")
    if scores.shape[0] == 0:
        raise ValueError("scores and labels are empty: metrics need at least one sample")
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    finite = np.isfinite(scores)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"scores contain {bad.size} non-finite value(s) (NaN or inf); "
            f"first indices: {bad[:_QUOTE].tolist()}"
        )
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"labels must be 0 (attack) or 1 (bona fide), got dtype {labels.dtype}")
    valid = (labels == 0) | (labels == 1)
    if not valid.all():
        bad = np.flatnonzero(~valid)
        raise ValueError(
            f"labels must be 0 (attack) or 1 (bona fide); found {bad.size} other value(s) "
            f"{np.unique(labels[bad])[:_QUOTE].tolist()} at indices {bad[:_QUOTE].tolist()}"
        )
    return scores, labels == 1


def _require_both_classes(n_bona_fide: int, n_attacks: int, what: str) -> None:
    if n_attacks == 0:
        raise ValueError(f"{what} needs both classes, but there are no attack samples (label 0)")
    if n_bona_fide == 0:
        raise ValueError(f"{what} needs both classes, but there are no bona fide samples (label 1)")


def _check_rate(target: float, name: str) -> float:
    target = float(target)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"{name} must be a rate in [0, 1], got {target}")
    return target


def _as_column(values: npt.ArrayLike, n: int, name: str) -> np.ndarray:
    """Returns ``values`` as a 1-D array, checking that it has one entry per score."""
    values = _as_1d(values, name)
    if values.shape[0] != n:
        raise ValueError(f"length mismatch: {n} scores but {values.shape[0]} {name}")
    return values


def _encode_categories(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Encodes categorical values (n,) as (unique names (k,), codes (n,)); missing values raise ValueError."""
    if values.dtype == object:
        # Mixed Python objects (str and None) cannot be sorted; their str form can.
        values = values.astype(str)
    names, codes = np.unique(values, return_inverse=True)
    # Checking the k unique names instead of the n values keeps this O(k) after the sort.
    missing = np.flatnonzero(np.isin(names.astype(str), list(_MISSING_NAMES)))
    if missing.size:
        bad = np.flatnonzero(np.isin(codes, missing))
        raise ValueError(
            f"{name} missing (None, NaN or empty) for {bad.size} sample(s); "
            f"first indices: {bad[:_QUOTE].tolist()}"
        )
    return names, codes


# ------------------------------------------------------------------------------------------------------------
# ROC curve and the metrics derived from it
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RocCurve:
    """Error rates at every distinct score used as threshold, from the strictest to the most lenient.

    Point ``i`` accepts the presentations with ``score >= thresholds[i]``. Point 0 is the "accept nothing"
    extreme (threshold just above the highest score, APCER = 0, BPCER = 1); the last point is the lowest score
    ("accept everything", APCER = 1, BPCER = 0). Equal scores are accepted or rejected together, so every
    point is reachable with a real threshold.

    Attributes:
        thresholds: (m + 1,) float64, strictly decreasing; ``m`` = number of distinct scores.
        apcer: (m + 1,) float64, non-decreasing; share of attacks accepted (pooled over species), = FPR.
        bpcer: (m + 1,) float64, non-increasing; share of bona fide presentations rejected, = 1 - TPR.
        accepted_attacks: (m + 1,) int64, attack counts behind ``apcer``.
        rejected_bona_fide: (m + 1,) int64, bona fide counts behind ``bpcer``.
        n_attacks: number of attack samples (> 0).
        n_bona_fide: number of bona fide samples (> 0).
    """

    thresholds: np.ndarray
    apcer: np.ndarray
    bpcer: np.ndarray
    accepted_attacks: np.ndarray
    rejected_bona_fide: np.ndarray
    n_attacks: int
    n_bona_fide: int

    @property
    def tpr(self) -> np.ndarray:
        """(m + 1,) bona fide acceptance rate, 1 - BPCER (true positive rate with bona fide positive)."""
        return 1.0 - self.bpcer

    def equal_error_rate(self) -> tuple[float, float]:
        """EER and its threshold, taken at an ROC point (no interpolation).

        The point minimising ``|APCER - BPCER|`` is chosen; the EER reported is the mean of its APCER and
        BPCER, so it is a rate actually achieved by the returned threshold. Among equally close points the one
        with the lower mean wins, then the higher threshold. Rates are compared on integer counts, so ties are
        exact rather than subject to rounding.

        Returns:
            (eer, threshold): the threshold is one of the scores (or the "accept nothing" extreme).
        """
        n_attacks, n_bona_fide = self.n_attacks, self.n_bona_fide
        # APCER - BPCER and APCER + BPCER, both scaled by n_attacks * n_bona_fide to stay integers.
        gap = np.abs(self.accepted_attacks * n_bona_fide - self.rejected_bona_fide * n_attacks)
        total = self.accepted_attacks * n_bona_fide + self.rejected_bona_fide * n_attacks
        closest = np.flatnonzero(gap == gap.min())
        best = closest[np.argmin(total[closest])]
        return float((self.apcer[best] + self.bpcer[best]) / 2.0), float(self.thresholds[best])

    def auc(self) -> float:
        """Area under the ROC curve with bona fide as the positive class.

        One trapezoid per run of tied scores counts each tied (bona fide, attack) pair as 1/2, which makes
        this the Mann-Whitney statistic P(bona fide score > attack score) + P(equal) / 2.
        """
        accepted_bona_fide = self.n_bona_fide - self.rejected_bona_fide
        # Twice the area in count units: exact in int64 up to ~2e9 samples per class.
        trapezoid_heights = accepted_bona_fide[1:] + accepted_bona_fide[:-1]
        twice_area = np.sum(np.diff(self.accepted_attacks) * trapezoid_heights)
        return float(twice_area) / (2.0 * self.n_attacks * self.n_bona_fide)

    def operating_point(self, target_apcer: float) -> int:
        """Index of the most lenient point whose APCER <= ``target_apcer``.

        APCER never decreases as the threshold falls while BPCER never increases, so this is also the point
        with the lowest BPCER among those meeting the target. Point 0 (APCER = 0) always qualifies.
        """
        target = _check_rate(target_apcer, "target APCER")
        return int(np.searchsorted(self.apcer, target, side="right")) - 1

    def threshold_at_apcer(self, target_apcer: float) -> float:
        """Lowest threshold (accepting most bona fide presentations) whose APCER <= ``target_apcer``."""
        return float(self.thresholds[self.operating_point(target_apcer)])

    def bpcer_at_apcer(self, target_apcer: float) -> float:
        """BPCER at :meth:`threshold_at_apcer`; BPCER20 is ``target_apcer=0.05``, BPCER100 is ``0.01``."""
        return float(self.bpcer[self.operating_point(target_apcer)])

    def tpr_at_fpr(self, target_fpr: float) -> float:
        """Bona fide acceptance (TPR) at the most lenient threshold with attack acceptance (FPR) <= target."""
        return 1.0 - self.bpcer_at_apcer(target_fpr)


def _roc_from_validated(scores: np.ndarray, is_bona_fide: np.ndarray, what: str) -> RocCurve:
    """Builds the ROC from validated scores (n,) float64 and the bona fide mask (n,) bool."""
    bona_fide = scores[is_bona_fide]
    attacks = scores[~is_bona_fide]
    _require_both_classes(bona_fide.size, attacks.size, what)
    # Each class is sorted on its own: np.sort is about twice as fast as an argsort followed by a gather.
    # Boolean indexing copied the scores, so sorting in place leaves the caller's array alone.
    bona_fide.sort()
    attacks.sort()
    # Numpy's stable sort (timsort) merges the two sorted runs in linear time.
    merged = np.sort(np.concatenate((bona_fide, attacks)), kind="stable")
    distinct = merged[np.concatenate(([True], merged[1:] != merged[:-1]))]
    # Scores >= each distinct value, i.e. accepted with it as threshold; equal scores move together.
    accepted_bona_fide = bona_fide.size - np.searchsorted(bona_fide, distinct, side="left")
    accepted_attacks = attacks.size - np.searchsorted(attacks, distinct, side="left")
    # Descending thresholds after the "accept nothing" point, whose finite threshold (unlike +inf) stays
    # serialisable to JSON.
    thresholds = np.concatenate(([np.nextafter(distinct[-1], np.inf)], distinct[::-1]))
    accepted_bona_fide = np.concatenate(([0], accepted_bona_fide[::-1]))
    accepted_attacks = np.concatenate(([0], accepted_attacks[::-1]))
    rejected_bona_fide = bona_fide.size - accepted_bona_fide
    return RocCurve(
        thresholds=thresholds,
        apcer=accepted_attacks / attacks.size,
        bpcer=rejected_bona_fide / bona_fide.size,
        accepted_attacks=accepted_attacks,
        rejected_bona_fide=rejected_bona_fide,
        n_attacks=attacks.size,
        n_bona_fide=bona_fide.size,
    )


def _roc(scores: npt.ArrayLike, labels: npt.ArrayLike, what: str) -> RocCurve:
    """Validates raw scores and labels (:func:`check_scores_labels`) and builds their ROC; ``what`` names the
    metric in the error raised when a class is missing."""
    scores, is_bona_fide = check_scores_labels(scores, labels)
    return _roc_from_validated(scores, is_bona_fide, what)


def roc_points(scores: npt.ArrayLike, labels: npt.ArrayLike) -> RocCurve:
    """APCER and BPCER at every distinct score used as threshold, plus the "accept nothing" extreme.

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack; both classes must be present.

    Returns:
        A :class:`RocCurve` with ``m + 1`` points for ``m`` distinct scores (its docstring gives the layout).
    """
    return _roc(scores, labels, "the ROC curve")


def equal_error_rate(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """EER (pooled attacks) and its threshold; see :meth:`RocCurve.equal_error_rate` for the exact rule.

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack; both classes must be present.
    """
    return _roc(scores, labels, "the EER").equal_error_rate()


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """ROC AUC, bona fide as the positive class, tied pairs counting 1/2 (equals sklearn ``roc_auc_score``).

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack; both classes must be present.
    """
    return _roc(scores, labels, "the AUC").auc()


def threshold_at_apcer(scores: npt.ArrayLike, labels: npt.ArrayLike, target: float) -> float:
    """Lowest threshold whose APCER <= ``target``: the one accepting most bona fide presentations.

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack; both classes must be present.
        target: APCER target in [0, 1].
    """
    return _roc(scores, labels, "a threshold at target APCER").threshold_at_apcer(target)


def bpcer_at_apcer(scores: npt.ArrayLike, labels: npt.ArrayLike, target: float) -> float:
    """BPCER at :func:`threshold_at_apcer`; BPCER20 = ``target=0.05``, BPCER100 = ``target=0.01``.

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack; both classes must be present.
        target: APCER target in [0, 1].
    """
    return _roc(scores, labels, "BPCER at target APCER").bpcer_at_apcer(target)


def tpr_at_fpr(scores: npt.ArrayLike, labels: npt.ArrayLike, target: float) -> float:
    """CelebA-Spoof TPR@FPR: bona fide acceptance at the most lenient threshold with attack acceptance <= FPR.

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack; both classes must be present.
        target: FPR (= APCER, pooled) target in [0, 1], e.g. 1e-2, 5e-3, 1e-3.
    """
    return _roc(scores, labels, "TPR at target FPR").tpr_at_fpr(target)


# ------------------------------------------------------------------------------------------------------------
# Group (video) aggregation
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GroupedScores:
    """Scores averaged per group (e.g. the frames of one video), sorted by group id.

    Attributes:
        groups: (g,) the distinct group ids.
        scores: (g,) float64 mean score of each group.
        labels: (g,) int64 label of each group (1 = bona fide, 0 = attack).
        sizes: (g,) int64 number of samples in each group.
        species: (g,) str attack species of each group ("" for bona fide groups), or None when not given.
    """

    groups: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    species: np.ndarray | None


def _species_per_group(
    species: np.ndarray, is_attack: np.ndarray, group_codes: np.ndarray, group_ids: np.ndarray
) -> np.ndarray:
    """(g,) str species of each group ("" for bona fide groups); an attack group must have one species."""
    names, codes = _encode_categories(species[is_attack], "species")
    names = names.astype(str)
    attack_groups = group_codes[is_attack]
    lowest = np.full(group_ids.size, names.size, dtype=np.int64)
    highest = np.full(group_ids.size, -1, dtype=np.int64)
    np.minimum.at(lowest, attack_groups, codes)
    np.maximum.at(highest, attack_groups, codes)
    mixed = np.flatnonzero((highest >= 0) & (lowest != highest))
    if mixed.size:
        first = mixed[0]
        raise ValueError(
            f"group {group_ids[first].item()!r} mixes attack species {str(names[lowest[first]])!r} and "
            f"{str(names[highest[first]])!r}; each group must have one species "
            f"({mixed.size} group(s) affected: {group_ids[mixed[:_QUOTE]].tolist()})"
        )
    per_group = np.full(group_ids.size, "", dtype=names.dtype)
    is_attack_group = highest >= 0
    per_group[is_attack_group] = names[highest[is_attack_group]]
    return per_group


def _aggregate_validated(
    scores: np.ndarray, is_bona_fide: np.ndarray, groups: npt.ArrayLike, species: np.ndarray | None
) -> GroupedScores:
    group_ids, group_codes = _encode_categories(_as_column(groups, scores.size, "groups"), "groups")
    sizes = np.bincount(group_codes, minlength=group_ids.size)
    n_bona_fide = np.bincount(group_codes, weights=is_bona_fide, minlength=group_ids.size)
    mixed = np.flatnonzero((n_bona_fide > 0) & (n_bona_fide < sizes))
    if mixed.size:
        raise ValueError(
            f"group {group_ids[mixed[0]].item()!r} mixes bona fide and attack samples (labels 1 and 0); each "
            f"group must have one label ({mixed.size} group(s) affected: "
            f"{group_ids[mixed[:_QUOTE]].tolist()})"
        )
    if species is not None:
        species = _species_per_group(species, ~is_bona_fide, group_codes, group_ids)
    return GroupedScores(
        groups=group_ids,
        scores=np.bincount(group_codes, weights=scores, minlength=group_ids.size) / sizes,
        labels=(n_bona_fide == sizes).astype(np.int64),
        sizes=sizes.astype(np.int64),
        species=species,
    )


def aggregate_by_group(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    groups: npt.ArrayLike,
    species: npt.ArrayLike | None = None,
) -> GroupedScores:
    """Averages scores per group (METHOD.md: a video's score is the mean of its frames' scores).

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack.
        groups: (n,) group id of each sample (str or int).
        species: optional (n,) attack species per sample; entries of bona fide samples are ignored.

    Raises:
        ValueError: when a group mixes labels or attack species (the message names the group), or on the input
            errors of :func:`roc_points`.
    """
    scores, is_bona_fide = check_scores_labels(scores, labels)
    species = None if species is None else _as_column(species, scores.size, "species")
    return _aggregate_validated(scores, is_bona_fide, groups, species)


# ------------------------------------------------------------------------------------------------------------
# Thresholds
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A decision threshold together with how it was chosen, so that every report can state both.

    Attributes:
        value: accept as bona fide iff ``score >= value``.
        strategy: "fixed", "eer" (EER threshold of a development set) or "apcer" (target APCER on a
            development set).
        description: one human-readable line, e.g. for a model card.
    """

    value: float
    strategy: ThresholdStrategy
    description: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"threshold value must be finite, got {self.value}")
        if self.strategy not in _STRATEGIES:
            raise ValueError(f"unknown threshold strategy {self.strategy!r}; expected one of {_STRATEGIES}")


def _as_threshold(threshold: float | Threshold) -> Threshold:
    if isinstance(threshold, Threshold):
        return threshold
    value = float(threshold)
    return Threshold(value, "fixed", f"fixed threshold {value:g}")


def choose_threshold(
    strategy: ThresholdStrategy,
    dev_scores: npt.ArrayLike | None = None,
    dev_labels: npt.ArrayLike | None = None,
    *,
    value: float | None = None,
    target_apcer: float | None = None,
    dev_groups: npt.ArrayLike | None = None,
) -> Threshold:
    """Chooses a decision threshold, to be applied unchanged to test sets.

    Args:
        strategy: "fixed" uses ``value`` (default 0.5); "eer" takes the EER threshold of the development set
            (OULU-NPU protocol); "apcer" takes the lowest development threshold with
            APCER <= ``target_apcer``.
        dev_scores: (n,) development-set scores, required by "eer" and "apcer".
        dev_labels: (n,) development-set labels, required by "eer" and "apcer".
        value: the threshold for "fixed" only.
        target_apcer: the APCER target in [0, 1] for "apcer" only.
        dev_groups: optional (n,) group ids; scores are then averaged per group before choosing, as
            :func:`compute_metrics` does for the test set.

    Returns:
        A :class:`Threshold` whose description states the strategy and the development-set figures.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown threshold strategy {strategy!r}; expected one of {_STRATEGIES}")
    if value is not None and strategy != "fixed":
        raise ValueError(f"value is only used by strategy 'fixed', not {strategy!r}")
    if target_apcer is not None and strategy != "apcer":
        raise ValueError(f"target_apcer is only used by strategy 'apcer', not {strategy!r}")
    if strategy == "fixed":
        if dev_scores is not None or dev_labels is not None:
            raise ValueError("strategy 'fixed' takes no development set; pass value instead")
        return _as_threshold(DEFAULT_THRESHOLD if value is None else value)
    if dev_scores is None or dev_labels is None:
        raise ValueError(f"strategy {strategy!r} needs dev_scores and dev_labels")
    if strategy == "apcer" and target_apcer is None:
        raise ValueError("strategy 'apcer' needs target_apcer")
    scores, is_bona_fide = check_scores_labels(dev_scores, dev_labels)
    level = "samples"
    if dev_groups is not None:
        grouped = _aggregate_validated(scores, is_bona_fide, dev_groups, None)
        scores, is_bona_fide, level = grouped.scores, grouped.labels == 1, "groups"
    roc = _roc_from_validated(scores, is_bona_fide, f"threshold strategy {strategy!r}")
    if strategy == "eer":
        eer, threshold = roc.equal_error_rate()
        return Threshold(
            threshold,
            "eer",
            f"EER threshold {threshold:.6g} of the development set ({scores.size} {level}, "
            f"dev EER {eer:.2%})",
        )
    point = roc.operating_point(target_apcer)
    threshold = float(roc.thresholds[point])
    return Threshold(
        threshold,
        "apcer",
        f"threshold {threshold:.6g} for APCER <= {target_apcer:.2%} on the development set ({scores.size} "
        f"{level}, dev APCER {roc.apcer[point]:.2%}, dev BPCER {roc.bpcer[point]:.2%})",
    )


# ------------------------------------------------------------------------------------------------------------
# Full report
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsReport:
    """All metrics of one evaluation; rates are fractions in [0, 1]. ``to_dict()`` gives a JSON-ready dict.

    ``apcer`` is the maximum over attack species (ISO/IEC 30107-3), ``far`` the APCER of all attacks pooled,
    ``acer = (apcer + bpcer) / 2`` (OULU-NPU) and ``hter = (far + bpcer) / 2`` (FRR = BPCER). EER, AUC,
    BPCER20, BPCER100 and TPR@FPR pool the attacks and do not depend on the threshold.
    """

    level: Literal["sample", "group"]
    score_aggregation: str | None
    n_samples: int
    n_bona_fide: int
    n_attacks: int
    n_attacks_per_species: dict[str, int]
    threshold: float
    threshold_strategy: ThresholdStrategy
    threshold_description: str
    apcer: float
    apcer_worst_species: str
    apcer_per_species: dict[str, float]
    bpcer: float
    acer: float
    far: float
    hter: float
    eer: float
    eer_threshold: float
    auc: float
    bpcer20: float
    bpcer100: float
    tpr_at_fpr: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _apcer_per_species(
    accepted: np.ndarray, is_attack: np.ndarray, species: np.ndarray | None
) -> tuple[dict[str, int], dict[str, float]]:
    """Attack counts and APCER per species, from the accept decisions (n,) bool and the attack mask (n,)."""
    if species is None:
        return {DEFAULT_SPECIES: int(is_attack.sum())}, {DEFAULT_SPECIES: float(accepted[is_attack].mean())}
    names, codes = _encode_categories(species[is_attack], "species")
    counts = np.bincount(codes, minlength=names.size)
    rates = np.bincount(codes, weights=accepted[is_attack], minlength=names.size) / counts
    names = names.astype(str).tolist()
    return dict(zip(names, counts.tolist(), strict=True)), dict(zip(names, rates.tolist(), strict=True))


def compute_metrics(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    species: npt.ArrayLike | None = None,
    groups: npt.ArrayLike | None = None,
    threshold: float | Threshold = DEFAULT_THRESHOLD,
    *,
    score_aggregation: str | None = None,
) -> MetricsReport:
    """Computes the full metric set of METHOD.md at one threshold.

    Args:
        scores: (n,) liveness scores, higher = bona fide.
        labels: (n,) 1 = bona fide, 0 = attack; both classes must be present.
        species: optional (n,) attack species per sample (e.g. the fine-grained patch type); entries of bona
            fide samples are ignored. When None, all attacks form one species named "attack".
        groups: optional (n,) group ids (e.g. video ids); scores are then averaged per group first and every
            count and rate is per group (``level == "group"``).
        threshold: a :class:`Threshold` (see :func:`choose_threshold`) or a float, taken as a fixed threshold.
        score_aggregation: how the scores were produced (e.g. "probability", "cosine_margin"), recorded as is.

    Returns:
        A :class:`MetricsReport`.
    """
    scores, is_bona_fide = check_scores_labels(scores, labels)
    n_samples = scores.size
    species = None if species is None else _as_column(species, n_samples, "species")
    level: Literal["sample", "group"] = "sample"
    if groups is not None:
        grouped = _aggregate_validated(scores, is_bona_fide, groups, species)
        scores, is_bona_fide, species, level = grouped.scores, grouped.labels == 1, grouped.species, "group"
    threshold = _as_threshold(threshold)
    roc = _roc_from_validated(scores, is_bona_fide, "compute_metrics")
    accepted = scores >= threshold.value
    is_attack = ~is_bona_fide
    n_attacks_per_species, apcer_per_species = _apcer_per_species(accepted, is_attack, species)
    worst_species = max(apcer_per_species, key=apcer_per_species.__getitem__)
    apcer = apcer_per_species[worst_species]
    bpcer = float(np.count_nonzero(~accepted & is_bona_fide)) / roc.n_bona_fide
    far = float(np.count_nonzero(accepted & is_attack)) / roc.n_attacks
    eer, eer_threshold = roc.equal_error_rate()
    return MetricsReport(
        level=level,
        score_aggregation=score_aggregation,
        n_samples=n_samples,
        n_bona_fide=roc.n_bona_fide,
        n_attacks=roc.n_attacks,
        n_attacks_per_species=n_attacks_per_species,
        threshold=threshold.value,
        threshold_strategy=threshold.strategy,
        threshold_description=threshold.description,
        apcer=apcer,
        apcer_worst_species=worst_species,
        apcer_per_species=apcer_per_species,
        bpcer=bpcer,
        acer=(apcer + bpcer) / 2.0,
        far=far,
        hter=(far + bpcer) / 2.0,
        eer=eer,
        eer_threshold=eer_threshold,
        auc=roc.auc(),
        bpcer20=roc.bpcer_at_apcer(0.05),
        bpcer100=roc.bpcer_at_apcer(0.01),
        tpr_at_fpr={name: roc.tpr_at_fpr(target) for name, target in TPR_AT_FPR_TARGETS.items()},
    )


_TABLE_COLUMNS = (
    ("APCER", "apcer"),
    ("BPCER", "bpcer"),
    ("ACER", "acer"),
    ("HTER", "hter"),
    ("EER", "eer"),
    ("AUC", "auc"),
)


def format_markdown_table(reports: Mapping[str, MetricsReport | Mapping[str, Any]]) -> str:
    """Formats reports as a Markdown table (rows = sources, rates in %) followed by the threshold line(s).

    Args:
        reports: source name (e.g. "OULU-NPU P1 test") -> :class:`MetricsReport` or its ``to_dict()``.
    """
    if not reports:
        raise ValueError("format_markdown_table needs at least one report")
    rows = {
        name: report.to_dict() if isinstance(report, MetricsReport) else dict(report)
        for name, report in reports.items()
    }
    required = [key for _, key in _TABLE_COLUMNS] + ["threshold_description", "level"]
    for name, row in rows.items():
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"report {name!r} lacks {missing}")
    lines = [
        "| Source | " + " | ".join(f"{title} (%)" for title, _ in _TABLE_COLUMNS) + " |",
        "|---|" + "---:|" * len(_TABLE_COLUMNS),
    ]
    for name, row in rows.items():
        cells = " | ".join(f"{100.0 * row[key]:.2f}" for _, key in _TABLE_COLUMNS)
        lines.append(f"| {name} | {cells} |")
    lines.append("")
    lines.append(
        "APCER is the maximum over attack species; HTER pools all attacks; EER and AUC do not depend on the "
        "threshold."
    )
    descriptions = {f"{row['threshold_description']}, {row['level']} level" for row in rows.values()}
    if len(descriptions) == 1:
        lines.append(f"Threshold: {descriptions.pop()}.")
    else:
        lines.extend(
            f"Threshold ({name}): {row['threshold_description']}, {row['level']} level."
            for name, row in rows.items()
        )
    return "\n".join(lines) + "\n"
