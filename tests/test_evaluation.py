"""Evaluation on real computations: calibration, threshold, holdout metrics, bootstrap, slices,
figures and the model card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mlplatform.ml.evaluation import (
    CostModel,
    HoldoutMetrics,
    LearningCurvePoint,
    _ap_steps,
    _weighted_average_precision,
    age_band,
    beats_baseline,
    calibration_figure,
    choose_threshold,
    confusion_figure,
    expected_calibration_error,
    fairness_slices,
    holdout_metrics,
    importance_figure,
    learning_curve_figure,
    lift_gain_figure,
    model_card,
    paired_bootstrap_ap_difference,
    precision_recall_figure,
    prevalence_baseline,
    roc_figure,
    save_figures,
)


def scored_cards(
    cards: int = 400, rows_per_card: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, card ids and two models' probabilities: a sharp challenger, a vague champion.

    Fraud is a card-level event (all rows of a fraudulent card are more likely positive), so
    rows of a card are correlated as in the real data.
    """
    rng = np.random.default_rng(seed)
    card_ids = np.repeat(np.arange(cards), rows_per_card)
    card_risk = rng.random(cards) < 0.1
    y = (rng.random(card_ids.size) < np.where(card_risk[card_ids], 0.4, 0.01)).astype(int)
    challenger = 1 / (1 + np.exp(-(3.0 * y - 3 + rng.normal(0, 1, y.size))))
    champion = 1 / (1 + np.exp(-(1.0 * y - 3 + rng.normal(0, 1, y.size))))
    return y, card_ids, challenger, champion


def test_ece_is_near_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(1)
    proba = rng.beta(1, 8, 50_000)
    y = (rng.random(proba.size) < proba).astype(int)

    assert expected_calibration_error(y, proba) < 0.01
    assert expected_calibration_error(y, np.sqrt(proba)) > 0.15  # over-confident in fraud


@pytest.mark.parametrize(
    "cost", [CostModel(), CostModel(10.0, 4.0, 0.0), CostModel(20.0, 5.0, 3.0)]
)
def test_choose_threshold_maximises_value_over_every_candidate(cost: CostModel) -> None:
    rng = np.random.default_rng(2)
    proba = rng.random(80).round(1)  # many ties
    y = (rng.random(80) < proba).astype(int)

    def value(threshold: float) -> float:
        flagged = proba >= threshold
        tp, fp = np.sum(flagged & (y == 1)), np.sum(flagged & (y == 0))
        return cost.expected_value(tp, fp, y.sum() - tp)

    candidates = [*np.unique(proba), np.inf]
    best = max(value(t) for t in candidates)
    chosen = choose_threshold(y, proba, cost)

    assert value(chosen) == best
    assert chosen == max(t for t in np.unique(proba) if value(t) == best)


def test_choose_threshold_flags_nothing_when_no_threshold_pays() -> None:
    y, cards, proba, _ = scored_cards()
    # Catching fraud is worth nothing here: the best is to flag nothing (a pure top tie at 0).
    costly = CostModel(value_true_positive=0.0, cost_false_positive=1.0)

    threshold = choose_threshold(y, proba, costly)
    metrics = holdout_metrics(y, proba, threshold, cards, k=10, cost=costly)

    assert threshold > proba.max()
    assert metrics.flagged == 0
    assert metrics.expected_value == 0.0
    assert np.isnan(metrics.precision)


def test_holdout_metrics_agree_with_sklearn_at_the_threshold() -> None:
    y, cards, proba, _ = scored_cards()
    cost = CostModel()
    threshold = choose_threshold(y, proba, cost)

    metrics = holdout_metrics(y, proba, threshold, cards, k=50, cost=cost)

    flagged = proba >= threshold
    tn, fp, fn, tp = confusion_matrix(y, flagged).ravel()
    assert (metrics.tp, metrics.fp, metrics.fn, metrics.tn) == (tp, fp, fn, tn)
    assert metrics.flagged == flagged.sum() > 0
    assert metrics.rows == y.size and metrics.positives == y.sum()
    assert metrics.precision == pytest.approx(precision_score(y, flagged))
    assert metrics.recall == pytest.approx(recall_score(y, flagged))
    assert metrics.roc_auc == pytest.approx(roc_auc_score(y, proba))
    assert metrics.average_precision == pytest.approx(average_precision_score(y, proba))
    assert metrics.expected_value == tp * 100.0 - fp * 5.0
    assert metrics.as_dict()["tp"] == tp and len(metrics.as_dict()) == 19


def test_card_precision_at_k_counts_cards_with_a_positive_among_the_top_k() -> None:
    cards = np.array(["a", "a", "b", "c", "c", "d", "e"])
    proba = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.1, 0.7])
    # a: fraud on its top row; b: clean; c: fraud on a low-scored row; d: fraud; e: clean
    y = np.array([1, 0, 0, 0, 1, 1, 0])

    def card_precision(k: int) -> tuple[float, int]:
        metrics = holdout_metrics(y, proba, 0.5, cards, k, CostModel())
        return metrics.card_precision_at_k, metrics.k

    assert card_precision(1) == (1.0, 1)
    assert card_precision(2) == (0.5, 2)
    # c and e tie at 0.7 for the third place: each is taken half the time
    assert card_precision(3) == (pytest.approx((1 + 0.5) / 3), 3)
    assert card_precision(4) == (0.5, 4)
    assert card_precision(100) == (0.6, 5)  # k is clipped to the five cards


def test_ranking_metrics_are_nan_with_a_single_class() -> None:
    metrics = holdout_metrics(
        np.zeros(5, dtype=int), np.linspace(0, 1, 5), 0.5, np.arange(5), 2, CostModel()
    )

    assert np.isnan(metrics.roc_auc) and np.isnan(metrics.average_precision)
    assert np.isnan(metrics.recall)
    assert metrics.fp == 3 and metrics.expected_value == -15.0


def test_prevalence_baseline_scores_like_a_constant() -> None:
    y, cards, _, _ = scored_cards()
    share_of_cards_with_fraud = pd.Series(y).groupby(cards).max().mean()

    rare = prevalence_baseline(0.02, y, cards, k=50, cost=CostModel())
    common = prevalence_baseline(0.2, y, cards, k=50, cost=CostModel())

    assert rare.average_precision == pytest.approx(y.mean())
    assert rare.roc_auc == 0.5
    assert rare.brier == pytest.approx(np.mean((0.02 - y) ** 2))
    assert rare.card_precision_at_k == pytest.approx(share_of_cards_with_fraud)
    # flagging a row pays only when prevalence > 5/105: the rare one flags nobody
    assert (rare.flagged, common.flagged) == (0, y.size)
    assert common.expected_value == y.sum() * 100.0 - (y.size - y.sum()) * 5.0


def test_only_a_model_better_than_the_prevalence_on_ap_and_brier_beats_the_baseline() -> None:
    y, cards, challenger, _ = scored_cards()
    cost, prevalence = CostModel(), float(y.mean())
    baseline = prevalence_baseline(prevalence, y, cards, k=50, cost=cost)
    sharp = holdout_metrics(y, challenger, 0.5, cards, 50, cost)
    noise = np.random.default_rng(1).permutation(challenger)  # same scores, no information
    useless = holdout_metrics(y, noise, 0.5, cards, 50, cost)

    assert beats_baseline(sharp, baseline)
    assert not beats_baseline(useless, baseline)  # its Brier score is worse than p(1-p)
    assert not beats_baseline(baseline, baseline)


def test_bootstrap_finds_a_clearly_better_challenger_and_its_mirror() -> None:
    y, cards, challenger, champion = scored_cards()

    better = paired_bootstrap_ap_difference(y, challenger, champion, cards)
    worse = paired_bootstrap_ap_difference(y, champion, challenger, cards)

    observed = average_precision_score(y, challenger) - average_precision_score(y, champion)
    assert better.significant and better.lower > 0
    assert better.lower < observed < better.upper
    assert better.resamples == 200 and better.confidence == 0.95
    assert not worse.significant and worse.upper < 0
    assert worse.mean_difference == pytest.approx(-better.mean_difference)


def test_bootstrap_of_identical_models_is_exactly_zero() -> None:
    y, cards, challenger, _ = scored_cards()

    result = paired_bootstrap_ap_difference(y, challenger, challenger.copy(), cards)

    assert result.lower == result.upper == result.mean_difference == 0.0
    assert not result.significant


def test_bootstrap_resamples_whole_cards() -> None:
    y, cards, challenger, champion = scored_cards(cards=200)
    copies = 5  # every card's rows repeated: more rows, but no more independent cards
    repeated = [np.tile(a, copies) for a in (y, challenger, champion, cards)]

    by_card = paired_bootstrap_ap_difference(y, challenger, champion, cards, resamples=100)
    repeated_by_card = paired_bootstrap_ap_difference(*repeated, resamples=100)
    repeated_by_row = paired_bootstrap_ap_difference(
        *repeated[:3], np.arange(repeated[0].size), resamples=100
    )

    # Drawing cards, the copies change nothing; drawing rows would fake a narrower interval.
    assert (repeated_by_card.lower, repeated_by_card.upper) == pytest.approx(
        (by_card.lower, by_card.upper)
    )
    width = by_card.upper - by_card.lower
    assert repeated_by_row.upper - repeated_by_row.lower < 0.7 * width


def test_bootstrap_of_a_single_card_reproduces_the_observed_difference() -> None:
    y, _, challenger, champion = scored_cards(cards=50)
    challenger = challenger.round(2)  # ties, handled as scikit-learn does

    result = paired_bootstrap_ap_difference(y, challenger, champion, np.zeros(y.size), 20)

    observed = average_precision_score(y, challenger) - average_precision_score(y, champion)
    assert result.lower == pytest.approx(observed) == result.upper


def test_weighted_average_precision_equals_sklearn_with_sample_weights() -> None:
    y, cards, challenger, _ = scored_cards(cards=100)
    proba = challenger.round(2)
    codes = cards  # 0..99: card i has code i
    counts = np.random.default_rng(3).integers(0, 4, 100).astype(float)

    ap = _weighted_average_precision(counts, _ap_steps(y, proba, codes))

    assert ap == pytest.approx(average_precision_score(y, proba, sample_weight=counts[codes]))


def test_bootstrap_skips_resamples_without_a_positive() -> None:
    cards = np.repeat(np.arange(20), 5)
    y = (cards == 0).astype(int)  # one fraudulent card: missed by ~36 % of resamples
    proba = np.linspace(0.9, 0.1, cards.size)

    result = paired_bootstrap_ap_difference(y, proba, proba[::-1].copy(), cards)

    assert 100 < result.resamples < 200
    assert result.lower > 0


def test_fairness_slices_partition_the_rows_and_name_missing_values() -> None:
    y, _, proba, _ = scored_cards(cards=100)
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "target": y,
            "proba": proba,
            "gender": rng.choice(["F", "M", None], y.size),
            "age": np.where(rng.random(y.size) < 0.1, np.nan, rng.integers(18, 90, y.size)),
        }
    )
    threshold = 0.3

    slices = fairness_slices(
        frame,
        "target",
        "proba",
        threshold,
        {"gender": frame.gender, "age_band": age_band(frame.age)},
    )

    for _, rows in slices.groupby("slice"):
        assert rows["rows"].sum() == len(frame)
        assert rows["positives"].sum() == y.sum()
    assert slices[slices.slice == "gender"].value.tolist() == ["F", "M", "(missing)"]
    assert slices[slices.slice == "age_band"].value.tolist() == [
        "<25",
        "25-34",
        "35-44",
        "45-54",
        "55-64",
        "65+",
        "(missing)",
    ]
    women = frame[frame.gender == "F"]
    row = slices[(slices.slice == "gender") & (slices.value == "F")].iloc[0]
    assert row["precision"] == pytest.approx(precision_score(women.target, women.proba >= 0.3))
    assert row["flagged_rate"] == pytest.approx((women.proba >= 0.3).mean())


def test_age_band_edges() -> None:
    ages = pd.Series([17, 24.9, 25, 34, 35, 64, 65, 101, np.nan])

    assert age_band(ages).tolist() == [
        "<25",
        "<25",
        "25-34",
        "25-34",
        "35-44",
        "55-64",
        "65+",
        "65+",
        "(missing)",
    ]


def _metrics() -> tuple[HoldoutMetrics, HoldoutMetrics, np.ndarray, np.ndarray]:
    y, cards, proba, _ = scored_cards(cards=100)
    cost = CostModel()
    model = holdout_metrics(y, proba, choose_threshold(y, proba, cost), cards, 20, cost)
    return model, prevalence_baseline(y.mean(), y, cards, 20, cost), y, proba


def test_figures_are_titled_labelled_and_saved_as_png(tmp_path: Path) -> None:
    metrics, _, y, proba = _metrics()
    figures = {
        "roc": roc_figure(y, proba, "lightgbm"),
        "precision_recall": precision_recall_figure(y, proba, "lightgbm", y.mean()),
        "lift_gain": lift_gain_figure(y, proba),
        "calibration": calibration_figure(y, proba),
        "confusion": confusion_figure(metrics),
        "learning_curve": learning_curve_figure(
            [LearningCurvePoint(1000, 0.9, 0.5), LearningCurvePoint(100, 0.95, 0.3)]
        ),
        "importance": importance_figure({f"f{i}": float(i) for i in range(40)}, top=10),
    }

    titles = {name: [axes.get_title() for axes in figure.axes] for name, figure in figures.items()}
    assert titles["roc"] == ["ROC curve"]
    assert titles["lift_gain"] == ["Cumulative gain", "Lift by decile"]
    assert titles["calibration"][0].startswith("Calibration (ECE = ")
    assert titles["importance"] == ["Feature importance (top 10)"]
    assert figures["precision_recall"].axes[0].get_xlabel() == "Recall"
    confusion_texts = {text.get_text() for text in figures["confusion"].axes[0].texts}
    assert confusion_texts == {f"{n:,}" for n in (metrics.tp, metrics.fp, metrics.fn, metrics.tn)}
    bars = figures["importance"].axes[0].get_yticklabels()
    assert bars[-1].get_text() == "f39" and len(bars) == 10  # largest at the top
    for figure in figures.values():
        for axes in figure.axes:
            assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel()

    paths = save_figures(figures, tmp_path / "figures")

    assert set(paths) == set(figures)
    for name, path in paths.items():
        assert path == tmp_path / "figures" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_card_reports_metrics_baseline_slices_and_limits() -> None:
    metrics, baseline, y, proba = _metrics()
    frame = pd.DataFrame({"target": y, "proba": proba})
    gender = pd.Series(np.where(np.arange(y.size) % 2, "F", "M"))
    slices = fairness_slices(frame, "target", "proba", metrics.threshold, {"gender": gender})

    card = model_card(
        model_name="fraud_detector",
        family="LightGBM",
        version="3",
        dataset_version="abc123",
        trained_at="2025-04-01T12:00:00",
        target="fraud",
        features=["amount", "tx_count_1d"],
        params={"num_leaves": 31, "learning_rate": 0.05},
        calibration="isotonic",
        metrics=metrics,
        baseline=baseline,
        slices=slices,
        holdout_period="2025-03-01 to 2025-03-14",
        limits=["Trained on simulated transactions only."],
    )

    def cells(first: str, second: str | None = None) -> list[str]:
        """Cells of the Markdown table row starting with these cells."""
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in card.splitlines()]
        return next(r for r in rows if r[0] == first and second in (None, r[1]))

    assert card.startswith("# Model card: fraud_detector version 3")
    assert cells("average_precision")[1:] == [
        f"{metrics.average_precision:.4g}",
        f"{baseline.average_precision:.4g}",
    ]
    assert cells("rows")[1:] == [f"{metrics.rows:,}"] * 2
    assert cells("num_leaves") == ["num_leaves", "31"]
    women = cells("gender", "F")
    assert women[2] == f"{(gender == 'F').sum():,}"
    assert women[-1] == f"{slices.flagged_rate[slices.value == 'F'].iloc[0]:.4g}"
    assert cells("gender", "M")
    assert "- `tx_count_1d`" in card
    assert "- Trained on simulated transactions only." in card
    assert "2025-03-01 to 2025-03-14" in card and "`abc123`" in card
