"""Tests of patchnet_hf.metrics and patchnet_hf.plotting.

Oracles: scikit-learn's ``roc_curve`` / ``roc_auc_score`` on random scores with many ties, exact rational
arithmetic (``fractions.Fraction``) by direct counting at every threshold, and small examples worked by hand.
Conventions: label 1 = bona fide, 0 = attack; accept as bona fide iff score >= threshold.
"""

import json
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from patchnet_hf.metrics import (
    Threshold,
    aggregate_by_group,
    auc,
    bpcer_at_apcer,
    choose_threshold,
    compute_metrics,
    equal_error_rate,
    format_markdown_table,
    roc_points,
    threshold_at_apcer,
    tpr_at_fpr,
)
from patchnet_hf.plotting import _thin, plot_det, plot_roc, plot_score_histograms, probit

TARGETS = (0.0, 1e-3, 5e-3, 1e-2, 0.05, 0.1, 1 / 3, 0.5, 1.0)


def _tied_scores(seed: int, n: int, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping bona fide and attack scores rounded to ``decimals``: many scores tie across classes."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int64)
    scores = np.round(np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0.0, 1.0), decimals)
    return scores, labels


RANDOM_CASES = [(seed, n, decimals) for seed in range(3) for n, decimals in ((60, 1), (400, 2), (3000, 2))]


def _rates_by_counting(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[Fraction, Fraction]:
    """Exact (APCER, BPCER) at one threshold, counted directly."""
    attacks, bona_fide = scores[labels == 0], scores[labels == 1]
    apcer = Fraction(int(np.sum(attacks >= threshold)), attacks.size)
    bpcer = Fraction(int(np.sum(bona_fide < threshold)), bona_fide.size)
    return apcer, bpcer


# ------------------------------------------------------------------------------------------------------------
# Against scikit-learn and exact counting on random data with ties
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n", "decimals"), RANDOM_CASES)
def test_roc_points_match_sklearn(seed, n, decimals):
    scores, labels = _tied_scores(seed, n, decimals)
    roc = roc_points(scores, labels)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    # sklearn's "accept nothing" threshold is +inf; ours is the float just above the top score.
    np.testing.assert_array_equal(roc.thresholds[1:], thresholds[1:])
    assert roc.thresholds[0] > scores.max()
    np.testing.assert_allclose(roc.apcer, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(roc.bpcer, 1.0 - tpr, rtol=0, atol=1e-15)
    assert (roc.apcer[0], roc.bpcer[0], roc.apcer[-1], roc.bpcer[-1]) == (0.0, 1.0, 1.0, 0.0)


@pytest.mark.parametrize(("seed", "n", "decimals"), RANDOM_CASES)
def test_auc_matches_sklearn(seed, n, decimals):
    scores, labels = _tied_scores(seed, n, decimals)
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "decimals"), RANDOM_CASES[:6])
def test_eer_matches_exact_search(seed, n, decimals):
    scores, labels = _tied_scores(seed, n, decimals)
    # Documented rule, by brute force in exact arithmetic: minimise |APCER - BPCER|, then APCER + BPCER,
    # then prefer the higher threshold.
    candidates = []
    for threshold in np.unique(scores):
        apcer, bpcer = _rates_by_counting(scores, labels, threshold)
        candidates.append((abs(apcer - bpcer), apcer + bpcer, -threshold))
    gap, total, negative_threshold = min(candidates)
    eer, threshold = equal_error_rate(scores, labels)
    assert eer == pytest.approx(float(total / 2), abs=1e-15)
    assert threshold == -negative_threshold
    # The reported EER is achieved at the reported threshold with the >= rule.
    apcer, bpcer = _rates_by_counting(scores, labels, threshold)
    assert eer == pytest.approx(float((apcer + bpcer) / 2), abs=1e-15)
    assert abs(apcer - bpcer) == gap


@pytest.mark.parametrize(("seed", "n", "decimals"), RANDOM_CASES)
def test_operating_points_match_sklearn(seed, n, decimals):
    scores, labels = _tied_scores(seed, n, decimals)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    for target in TARGETS:
        index = np.flatnonzero(fpr <= target).max()  # the most lenient point meeting the target
        threshold = threshold_at_apcer(scores, labels, target)
        if index == 0:
            assert threshold > scores.max()
        else:
            assert threshold == thresholds[index]
        assert bpcer_at_apcer(scores, labels, target) == pytest.approx(1.0 - tpr[index], abs=1e-15)
        assert tpr_at_fpr(scores, labels, target) == pytest.approx(tpr[index], abs=1e-15)
        # Any lower threshold would accept more attacks than the target allows.
        lower = scores[scores < threshold]
        if lower.size:
            assert _rates_by_counting(scores, labels, lower.max())[0] > target


@pytest.mark.parametrize(("seed", "n", "decimals"), RANDOM_CASES)
def test_compute_metrics_matches_independent_figures(seed, n, decimals):
    scores, labels = _tied_scores(seed, n, decimals)
    threshold = 0.5
    report = compute_metrics(scores, labels, threshold=threshold)
    apcer, bpcer = _rates_by_counting(scores, labels, threshold)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert report.apcer == pytest.approx(float(apcer)) and report.far == pytest.approx(float(apcer))
    assert report.bpcer == pytest.approx(float(bpcer))
    assert report.acer == pytest.approx(float((apcer + bpcer) / 2))
    assert report.hter == pytest.approx(float((apcer + bpcer) / 2))
    assert report.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert report.bpcer20 == pytest.approx(1.0 - tpr[np.flatnonzero(fpr <= 0.05).max()])
    assert report.bpcer100 == pytest.approx(1.0 - tpr[np.flatnonzero(fpr <= 0.01).max()])
    for name, target in (("1e-2", 1e-2), ("5e-3", 5e-3), ("1e-3", 1e-3)):
        assert report.tpr_at_fpr[name] == pytest.approx(tpr[np.flatnonzero(fpr <= target).max()])
    assert (report.eer, report.eer_threshold) == equal_error_rate(scores, labels)
    assert report.n_bona_fide == labels.sum() and report.n_attacks == (labels == 0).sum()


# ------------------------------------------------------------------------------------------------------------
# Hand-worked examples
# ------------------------------------------------------------------------------------------------------------

# Bona fide: 0.9, 0.8, 0.6. Attacks: 0.8, 0.4, 0.3 (one tie across classes at 0.8).
HAND_SCORES = np.array([0.9, 0.8, 0.8, 0.6, 0.4, 0.3])
HAND_LABELS = np.array([1, 1, 0, 1, 0, 0])


def test_hand_worked_roc_with_ties():
    roc = roc_points(HAND_SCORES, HAND_LABELS)
    # threshold 0.9: accepts {0.9 b}                  -> APCER 0/3, BPCER 2/3
    # threshold 0.8: accepts {0.9 b, 0.8 b, 0.8 a}    -> APCER 1/3, BPCER 1/3 (the tied pair moves together)
    # threshold 0.6: + {0.6 b}                        -> APCER 1/3, BPCER 0/3
    # threshold 0.4: + {0.4 a}                        -> APCER 2/3, BPCER 0
    # threshold 0.3: everything                       -> APCER 3/3, BPCER 0
    np.testing.assert_array_equal(roc.thresholds[1:], [0.9, 0.8, 0.6, 0.4, 0.3])
    np.testing.assert_allclose(roc.apcer, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(roc.bpcer, [1, 2 / 3, 1 / 3, 0, 0, 0])
    # |APCER - BPCER| is 0 only at 0.8: EER = (1/3 + 1/3) / 2.
    assert equal_error_rate(HAND_SCORES, HAND_LABELS) == (pytest.approx(1 / 3), 0.8)
    # Pairs (bona fide, attack) won: 0.9 beats 3; 0.8 ties 0.8 (1/2) and beats 2; 0.6 beats 2 -> 7.5 / 9.
    assert auc(HAND_SCORES, HAND_LABELS) == pytest.approx(7.5 / 9)
    # APCER <= 0 holds down to threshold 0.9 (BPCER 2/3); APCER <= 1/3 down to 0.6 (BPCER 0).
    assert threshold_at_apcer(HAND_SCORES, HAND_LABELS, 0.0) == 0.9
    assert bpcer_at_apcer(HAND_SCORES, HAND_LABELS, 0.0) == pytest.approx(2 / 3)
    assert threshold_at_apcer(HAND_SCORES, HAND_LABELS, 1 / 3) == 0.6
    assert tpr_at_fpr(HAND_SCORES, HAND_LABELS, 0.2) == pytest.approx(1 / 3)


def test_hand_worked_report_at_fixed_threshold():
    # threshold 0.5: attack 0.8 accepted, 0.4 and 0.3 rejected -> APCER 1/3; no bona fide below it -> BPCER 0.
    report = compute_metrics(HAND_SCORES, HAND_LABELS, threshold=0.5)
    assert report.apcer == pytest.approx(1 / 3) and report.bpcer == 0.0
    assert report.acer == pytest.approx(1 / 6) and report.hter == pytest.approx(1 / 6)
    assert (report.threshold, report.threshold_strategy, report.level) == (0.5, "fixed", "sample")
    # threshold 0.8 equals two scores: both are accepted (>=); 0.6 is rejected -> APCER 1/3, BPCER 1/3.
    at_tie = compute_metrics(HAND_SCORES, HAND_LABELS, threshold=0.8)
    assert at_tie.apcer == pytest.approx(1 / 3) and at_tie.bpcer == pytest.approx(1 / 3)


def test_apcer_is_the_maximum_over_species():
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.2, 0.6, 0.1, 0.05, 0.02])
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0])
    species = np.array([None, None, None, "print", "print", "replay", "replay", "replay", "replay"])
    report = compute_metrics(scores, labels, species=species, threshold=0.5)
    # print: 0.7 accepted of 2 -> 1/2; replay: 0.6 accepted of 4 -> 1/4; APCER = max = 1/2 (print).
    assert report.apcer_per_species == pytest.approx({"print": 0.5, "replay": 0.25})
    assert report.n_attacks_per_species == {"print": 2, "replay": 4}
    assert report.apcer == 0.5 and report.apcer_worst_species == "print"
    # Pooled: 2 of 6 attacks accepted -> FAR 1/3. BPCER: 0.4 rejected -> 1/3.
    assert report.far == pytest.approx(1 / 3) and report.bpcer == pytest.approx(1 / 3)
    # ACER uses the worst species: (1/2 + 1/3) / 2 = 5/12; HTER pools: (1/3 + 1/3) / 2 = 1/3.
    assert report.acer == pytest.approx(5 / 12) and report.hter == pytest.approx(1 / 3)


def test_threshold_from_dev_set_applied_to_test_set():
    dev_scores, dev_labels = np.array([0.9, 0.7, 0.6, 0.3, 0.2]), np.array([1, 1, 0, 1, 0])
    # Dev (3 bona fide, 2 attacks):  threshold  0.9   0.7   0.6   0.3   0.2
    #                                APCER      0     0     1/2   1/2   1
    #                                BPCER      2/3   1/3   1/3   0     0
    #                                |gap|      2/3   1/3   1/6   1/2   1   -> EER at 0.6 = (1/2 + 1/3) / 2
    threshold = choose_threshold("eer", dev_scores, dev_labels)
    assert (threshold.value, threshold.strategy) == (0.6, "eer")
    assert "41.67%" in threshold.description
    # Test: bona fide 0.65 accepted, 0.55 rejected; attack 0.6 accepted (ties the threshold), 0.5 rejected.
    test_scores, test_labels = np.array([0.65, 0.55, 0.6, 0.5]), np.array([1, 1, 0, 0])
    report = compute_metrics(test_scores, test_labels, threshold=threshold)
    assert (report.apcer, report.bpcer, report.acer) == (0.5, 0.5, 0.5)
    assert (report.threshold, report.threshold_strategy) == (0.6, "eer")
    assert report.threshold_description == threshold.description
    # Target APCER 0 on dev: the lowest threshold with no attack accepted is 0.7 (dev BPCER 1/3); on test
    # it rejects both bona fide presentations.
    strict = choose_threshold("apcer", dev_scores, dev_labels, target_apcer=0.0)
    assert strict.value == 0.7
    assert (compute_metrics(test_scores, test_labels, threshold=strict).bpcer) == 1.0
    assert choose_threshold("apcer", dev_scores, dev_labels, target_apcer=0.5).value == 0.3


def test_eer_tie_break_prefers_lower_error():
    # 1 bona fide (0.5), 2 attacks (0.9, 0.1). Thresholds 0.9: APCER 1/2, BPCER 1; 0.5: APCER 1/2, BPCER 0.
    # Both have |gap| = 1/2; the rule keeps the lower mean: 0.5 with EER (1/2 + 0) / 2 = 1/4.
    assert equal_error_rate([0.5, 0.9, 0.1], [1, 0, 0]) == (0.25, 0.5)


def test_all_scores_tied():
    scores, labels = np.full(4, 0.3), np.array([1, 0, 1, 0])
    assert auc(scores, labels) == 0.5
    # "Accept nothing" (APCER 0, BPCER 1) and "accept all" (1, 0) tie; the higher threshold wins.
    eer, threshold = equal_error_rate(scores, labels)
    assert eer == 0.5 and threshold > 0.3
    assert compute_metrics(scores, labels, threshold=threshold).bpcer == 1.0


# ------------------------------------------------------------------------------------------------------------
# Polarity: the score direction and the label convention must matter
# ------------------------------------------------------------------------------------------------------------


def test_reversed_scores_or_labels_give_complementary_auc():
    scores, labels = _tied_scores(0, 500, 2)
    value = auc(scores, labels)
    assert value > 0.8
    assert auc(-scores, labels) == pytest.approx(1.0 - value, abs=1e-12)
    assert auc(scores, 1 - labels) == pytest.approx(1.0 - value, abs=1e-12)


def test_reversed_convention_swaps_apcer_and_bpcer():
    scores, labels = _tied_scores(1, 500, 2)
    threshold = 0.505  # between score values, so that >= and > agree
    report = compute_metrics(scores, labels, threshold=threshold)
    reversed_report = compute_metrics(-scores, 1 - labels, threshold=-threshold)
    assert reversed_report.apcer == pytest.approx(report.bpcer)
    assert reversed_report.bpcer == pytest.approx(report.apcer)
    assert report.apcer != pytest.approx(report.bpcer, abs=0.02)
    # Reading attacks as bona fide turns the attack acceptance into 1 - BPCER: clearly different.
    swapped_labels = compute_metrics(scores, 1 - labels, threshold=threshold)
    assert swapped_labels.apcer == pytest.approx(1.0 - report.bpcer)
    assert abs(swapped_labels.apcer - report.apcer) > 0.3


# ------------------------------------------------------------------------------------------------------------
# Groups
# ------------------------------------------------------------------------------------------------------------

GROUP_SCORES = np.array([0.2, 0.9, 0.5, 0.7, 0.55, 0.1])
GROUP_LABELS = np.array([0, 1, 1, 0, 1, 0])
GROUP_IDS = np.array(["v2", "v1", "v1", "v2", "v3", "v4"])
GROUP_SPECIES = np.array(["print", None, None, "print", None, "replay"])


def test_aggregate_by_group_means():
    grouped = aggregate_by_group(GROUP_SCORES, GROUP_LABELS, GROUP_IDS, GROUP_SPECIES)
    # v1 = (0.9 + 0.5) / 2, v2 = (0.2 + 0.7) / 2, v3 = 0.55, v4 = 0.1
    np.testing.assert_array_equal(grouped.groups, ["v1", "v2", "v3", "v4"])
    np.testing.assert_allclose(grouped.scores, [0.7, 0.45, 0.55, 0.1])
    np.testing.assert_array_equal(grouped.labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(grouped.sizes, [2, 2, 1, 1])
    np.testing.assert_array_equal(grouped.species, ["", "print", "", "replay"])


def test_group_level_metrics_differ_from_sample_level():
    # Samples at 0.6: bona fide 0.5 and 0.55 rejected -> BPCER 2/3; print 0.7 accepted -> APCER 1/2.
    samples = compute_metrics(GROUP_SCORES, GROUP_LABELS, species=GROUP_SPECIES, threshold=0.6)
    assert samples.level == "sample" and samples.bpcer == pytest.approx(2 / 3) and samples.apcer == 0.5
    # Groups at 0.6: v1 0.7 accepted, v3 0.55 rejected -> BPCER 1/2; v2 0.45 and v4 0.1 rejected -> APCER 0.
    groups = compute_metrics(GROUP_SCORES, GROUP_LABELS, GROUP_SPECIES, GROUP_IDS, threshold=0.6)
    assert groups.level == "group" and groups.bpcer == 0.5 and groups.apcer == 0.0
    assert (groups.n_samples, groups.n_bona_fide, groups.n_attacks) == (6, 2, 2)
    assert groups.n_attacks_per_species == {"print": 1, "replay": 1}
    # A threshold chosen on groups uses the group means: bona fide 0.7, 0.55; attacks 0.45, 0.1. At 0.55 no
    # attack is accepted and no bona fide rejected: EER 0. (Per sample, bona fide 0.5 < attack 0.7: EER > 0.)
    dev = choose_threshold("eer", GROUP_SCORES, GROUP_LABELS, dev_groups=GROUP_IDS)
    assert dev.value == 0.55
    assert "(4 groups, dev EER 0.00%)" in dev.description
    assert equal_error_rate(GROUP_SCORES, GROUP_LABELS)[0] > 0


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([], [], "empty"),
        (
            [0.1, np.nan, 0.3, np.inf],
            [1, 0, 1, 0],
            r"2 non-finite value\(s\) \(NaN or inf\); first indices: \[1, 3\]",
        ),
        ([0.1, 0.2, 0.3], [1, 2, 0], r"found 1 other value\(s\) \[2\] at indices \[1\]"),
        ([0.1, 0.2], ["live", "spoof"], r"labels must be 0 \(attack\) or 1 \(bona fide\), got dtype"),
        ([0.1, 0.2, 0.3], [1, 0], "length mismatch: 3 scores but 2 labels"),
        ([[0.1, 0.2]], [[1, 0]], r"scores must be 1-D, got an array of shape \(1, 2\)"),
        (["a", "b"], [1, 0], "scores must be numeric"),
    ],
)
def test_invalid_inputs_raise(scores, labels, message):
    for function in (roc_points, auc, equal_error_rate, compute_metrics):
        with pytest.raises(ValueError, match=message):
            function(scores, labels)


@pytest.mark.parametrize(
    ("labels", "message"),
    [([1, 1, 1], r"no attack samples \(label 0\)"), ([0, 0, 0], r"no bona fide samples \(label 1\)")],
)
def test_single_class_raises_naming_the_missing_class(labels, message):
    scores = [0.2, 0.5, 0.7]
    for function in (roc_points, auc, equal_error_rate, compute_metrics):
        with pytest.raises(ValueError, match=message):
            function(scores, labels)
    with pytest.raises(ValueError, match=message):
        bpcer_at_apcer(scores, labels, 0.05)
    with pytest.raises(ValueError, match=message):
        choose_threshold("eer", scores, labels)


def test_species_and_group_errors():
    with pytest.raises(ValueError, match="length mismatch: 6 scores but 5 species"):
        compute_metrics(GROUP_SCORES, GROUP_LABELS, species=GROUP_SPECIES[:5])
    with pytest.raises(ValueError, match=r"species missing \(None, NaN or empty\) for 1 sample\(s\)"):
        compute_metrics(GROUP_SCORES, GROUP_LABELS, species=["print", None, None, None, None, "replay"])
    with pytest.raises(ValueError, match="group 'v1' mixes bona fide and attack samples"):
        aggregate_by_group(GROUP_SCORES, [0, 1, 0, 0, 1, 0], GROUP_IDS)
    with pytest.raises(ValueError, match="group 'v2' mixes attack species 'print' and 'replay'"):
        aggregate_by_group(GROUP_SCORES, GROUP_LABELS, GROUP_IDS, ["print", "", "", "replay", "", "replay"])
    with pytest.raises(ValueError, match=r"groups missing \(None, NaN or empty\) for 1 sample"):
        compute_metrics(GROUP_SCORES, GROUP_LABELS, groups=["v2", "v1", "v1", None, "v3", "v4"])


def test_threshold_errors():
    scores, labels = HAND_SCORES, HAND_LABELS
    with pytest.raises(ValueError, match=r"target APCER must be a rate in \[0, 1\], got 5.0"):
        threshold_at_apcer(scores, labels, 5.0)
    with pytest.raises(ValueError, match="unknown threshold strategy 'median'"):
        choose_threshold("median", scores, labels)
    with pytest.raises(ValueError, match="strategy 'eer' needs dev_scores and dev_labels"):
        choose_threshold("eer")
    with pytest.raises(ValueError, match="strategy 'apcer' needs target_apcer"):
        choose_threshold("apcer", scores, labels)
    with pytest.raises(ValueError, match="target_apcer is only used by strategy 'apcer'"):
        choose_threshold("eer", scores, labels, target_apcer=0.1)
    with pytest.raises(ValueError, match="value is only used by strategy 'fixed'"):
        choose_threshold("eer", scores, labels, value=0.3)
    with pytest.raises(ValueError, match="strategy 'fixed' takes no development set"):
        choose_threshold("fixed", scores, labels)
    with pytest.raises(ValueError, match="threshold value must be finite, got nan"):
        compute_metrics(scores, labels, threshold=float("nan"))


def test_fixed_threshold_defaults_to_one_half():
    threshold = choose_threshold("fixed")
    assert threshold == Threshold(0.5, "fixed", "fixed threshold 0.5")
    assert choose_threshold("fixed", value=0.7).value == 0.7


# ------------------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------------------


def test_report_to_dict_is_json_ready():
    threshold = choose_threshold("apcer", HAND_SCORES, HAND_LABELS, target_apcer=0.05)
    report = compute_metrics(HAND_SCORES, HAND_LABELS, threshold=threshold, score_aggregation="probability")
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["threshold_strategy"] == "apcer" and as_dict["threshold"] == 0.9
    assert as_dict["score_aggregation"] == "probability"
    assert set(as_dict["tpr_at_fpr"]) == {"1e-2", "5e-3", "1e-3"}


def test_markdown_table():
    hand = compute_metrics(HAND_SCORES, HAND_LABELS, threshold=0.5)
    table = format_markdown_table({"hand": hand, "hand (dict)": hand.to_dict()})
    lines = table.splitlines()
    assert lines[0] == "| Source | APCER (%) | BPCER (%) | ACER (%) | HTER (%) | EER (%) | AUC (%) |"
    # APCER 1/3, BPCER 0, ACER 1/6, HTER 1/6, EER 1/3, AUC 5/6, in %.
    assert lines[2] == "| hand | 33.33 | 0.00 | 16.67 | 16.67 | 33.33 | 83.33 |"
    assert lines[-1] == "Threshold: fixed threshold 0.5, sample level."
    other = compute_metrics(
        HAND_SCORES, HAND_LABELS, threshold=choose_threshold("eer", HAND_SCORES, HAND_LABELS)
    )
    mixed = format_markdown_table({"fixed": hand, "eer": other}).splitlines()
    assert mixed[-2] == "Threshold (fixed): fixed threshold 0.5, sample level."
    assert mixed[-1].startswith("Threshold (eer): EER threshold 0.8 of the development set")
    with pytest.raises(ValueError, match=r"report 'x' lacks \['hter'\]"):
        format_markdown_table({"x": {key: value for key, value in hand.to_dict().items() if key != "hter"}})
    with pytest.raises(ValueError, match="at least one report"):
        format_markdown_table({})


# ------------------------------------------------------------------------------------------------------------
# Plotting
# ------------------------------------------------------------------------------------------------------------


def test_probit_matches_normal_dist():
    tail = np.logspace(-12, np.log10(0.5), 400)
    p = np.concatenate([tail, 1.0 - tail])
    expected = np.array([NormalDist().inv_cdf(value) for value in p])
    np.testing.assert_allclose(probit(p), expected, rtol=2e-9, atol=1e-12)
    with pytest.raises(ValueError, match=r"strictly inside \(0, 1\)"):
        probit([0.0, 0.5])


def test_thinning_drops_only_points_inside_a_kept_cell():
    x = np.sort(np.random.default_rng(0).random(100_000))
    y = np.sqrt(x)
    keep = _thin(x, y, (1.0, 1.0))
    assert keep[0] == 0 and keep[-1] == x.size - 1 and keep.size < x.size // 10
    cells = np.stack([np.floor(x * 2048), np.floor(y * 2048)], axis=1)
    dropped = np.setdiff1d(np.arange(x.size), keep)
    before = keep[np.searchsorted(keep, dropped) - 1]
    after = keep[np.searchsorted(keep, dropped)]
    np.testing.assert_array_equal(cells[dropped], cells[before])
    np.testing.assert_array_equal(cells[dropped], cells[after])


def _assert_png(path, min_bytes=10_000):
    assert path.stat().st_size > min_bytes
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (960, 750)
        image.verify()


def test_plots_write_valid_pngs(tmp_path):
    scores, labels = _tied_scores(0, 3000, 3)
    species = np.where(labels == 1, None, np.array(["print", "replay", "mask"])[np.arange(labels.size) % 3])
    curves = {"dev": (scores[:1500], labels[:1500]), "test": roc_points(scores[1500:], labels[1500:])}
    _assert_png(plot_roc(curves, tmp_path / "roc.png"))
    _assert_png(plot_det(curves, tmp_path / "nested" / "det.png"))
    threshold = choose_threshold("eer", scores[:1500], labels[:1500])
    _assert_png(plot_score_histograms(scores, labels, species, threshold, tmp_path / "hist.png"))
    _assert_png(plot_roc((scores, labels), tmp_path / "single_roc.png"))
