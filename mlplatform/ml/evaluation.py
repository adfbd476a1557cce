"""Evaluation of a calibrated binary classifier on an out-of-time holdout.

Pure functions the training assets call: calibration error, a value-maximising decision
threshold, holdout metrics next to a prevalence-only baseline, a paired card-level bootstrap
of the average-precision difference between two models, fairness slices, figures and a
Markdown model card. Probabilities are in [0, 1]; labels are 0/1; a row is flagged when its
probability is ``>= threshold``. A metric that is undefined on the data (AUC with one class,
precision with nothing flagged, recall with no positive) is NaN rather than a made-up number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Slice value standing for a missing attribute in :func:`fairness_slices` and :func:`age_band`.
MISSING = "(missing)"
AGE_BANDS = ("<25", "25-34", "35-44", "45-54", "55-64", "65+")
FAIRNESS_COLUMNS = (
    "slice",
    "value",
    "rows",
    "positives",
    "prevalence",
    "roc_auc",
    "average_precision",
    "precision",
    "recall",
    "flagged_rate",
)


@dataclass(frozen=True)
class CostModel:
    """Value of a caught positive and cost of each error, in currency units per transaction."""

    value_true_positive: float = 100.0
    cost_false_positive: float = 5.0
    cost_false_negative: float = 0.0

    def expected_value(
        self, tp: float | np.ndarray, fp: float | np.ndarray, fn: float | np.ndarray
    ) -> float | np.ndarray:
        """Value in currency units of these counts (elementwise for arrays)."""
        return (
            tp * self.value_true_positive
            - fp * self.cost_false_positive
            - fn * self.cost_false_negative
        )


@dataclass(frozen=True)
class HoldoutMetrics:
    """Metrics of one model on the holdout; shares in [0, 1], value in currency units."""

    rows: int
    positives: int
    prevalence: float
    roc_auc: float
    average_precision: float
    brier: float
    ece: float
    log_loss: float
    threshold: float
    precision: float
    recall: float
    flagged: int
    tp: int
    fp: int
    fn: int
    tn: int
    card_precision_at_k: float
    k: int
    expected_value: float

    def as_dict(self) -> dict[str, float | int]:
        """Field name -> value, e.g. to log as MLflow metrics."""
        return asdict(self)


@dataclass(frozen=True)
class BootstrapResult:
    """Challenger minus champion average precision: mean and percentile interval."""

    mean_difference: float
    lower: float
    upper: float
    resamples: int
    confidence: float

    @property
    def significant(self) -> bool:
        """Whether the whole interval is above zero (the challenger is better)."""
        return self.lower > 0


@dataclass(frozen=True)
class LearningCurvePoint:
    """Average precision on train and validation for a model fitted on ``train_rows`` rows."""

    train_rows: int
    train_score: float
    validation_score: float


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error, in probability units.

    Equal-width bins over [0, 1]; the mean over bins of |mean(proba) - mean(y)| weighted by the
    share of rows in the bin.
    """
    y, p = _validated(y_true, proba)
    counts, mean_proba, positive_rate = _calibration_bins(y, p, bins)
    filled = counts > 0
    gaps = np.abs(mean_proba[filled] - positive_rate[filled])
    return float(np.sum(counts[filled] * gaps) / y.size)


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, cost: CostModel) -> float:
    """The probability threshold that maximises the value of flagging on (validation) data.

    Value = TP * value_true_positive - FP * cost_false_positive - FN * cost_false_negative,
    flagging rows with ``proba >= threshold``. Candidates are the distinct predicted values
    (one sort, O(n log n)); ties in value go to the higher threshold. When no candidate beats
    flagging nothing (with the default costs: when none has positive value), the result is the
    smallest float above ``max(proba)``, which flags no row of these data.
    """
    y, p = _validated(y_true, proba)
    order, last_of_tie = _descending(p)
    tp = np.cumsum(y[order])[last_of_tie]
    fp = last_of_tie + 1 - tp
    positives = tp[-1]
    values = cost.expected_value(tp, fp, positives - tp)
    best = int(np.argmax(values))  # first maximum = highest threshold among equal values
    if values[best] <= cost.expected_value(0, 0, positives):
        return float(np.nextafter(p[order[0]], np.inf))
    return float(p[order[last_of_tie[best]]])


def holdout_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    card_ids: np.ndarray,
    k: int,
    cost: CostModel,
) -> HoldoutMetrics:
    """Ranking, calibration and decision metrics of ``proba`` on the holdout.

    ``card_precision_at_k`` ranks cards by their maximum probability over the holdout and
    gives the share of the top ``k`` cards (``k`` clipped to the number of cards) having at
    least one positive row, the "card precision@k" of Le Borgne et al.; cards tied at the
    cut-off count with their average, the expected value under random tie-breaking. AUC and
    average precision are NaN when only one class is present.
    """
    y, p = _validated(y_true, proba)
    tp, fp, fn, tn = _confusion(y, p, threshold)
    card_precision, k_used = card_precision_at_k(y, p, card_ids, k)
    roc_auc, average_precision = ranking_scores(y, p)
    return HoldoutMetrics(
        rows=int(y.size),
        positives=int(y.sum()),
        prevalence=float(y.mean()),
        roc_auc=roc_auc,
        average_precision=average_precision,
        brier=float(brier_score_loss(y, p, labels=[0, 1])),
        ece=expected_calibration_error(y, p),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        threshold=float(threshold),
        precision=_share(tp, tp + fp),
        recall=_share(tp, tp + fn),
        flagged=tp + fp,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        card_precision_at_k=card_precision,
        k=k_used,
        expected_value=float(cost.expected_value(tp, fp, fn)),
    )


def prevalence_baseline(
    train_prevalence: float,
    y_true: np.ndarray,
    card_ids: np.ndarray,
    k: int,
    cost: CostModel,
) -> HoldoutMetrics:
    """Holdout metrics of the prevalence-only model: every row scores ``train_prevalence``.

    Its threshold is decided from the train prevalence and the costs alone, as
    :func:`choose_threshold` would in expectation: the prevalence itself (flag everyone) when
    flagging a row is worth more than leaving it, else the next float up (flag nobody; ties
    go to flagging nobody). With the default costs it flags everyone only above 5/105 ≈ 4.8 %.
    On the holdout its AUC is 0.5, its average precision the holdout prevalence, its Brier
    score about p(1 - p) and its card precision@k the share of cards with a positive.
    """
    p = float(train_prevalence)
    flag_everyone = cost.expected_value(p, 1 - p, 0) > cost.expected_value(0, 0, p)
    threshold = p if flag_everyone else float(np.nextafter(p, np.inf))
    return holdout_metrics(y_true, np.full(len(y_true), p), threshold, card_ids, k, cost)


def beats_baseline(metrics: HoldoutMetrics, baseline: HoldoutMetrics) -> bool:
    """A model worth considering: higher average precision and lower Brier score than the
    prevalence-only baseline on the same holdout."""
    return bool(
        metrics.average_precision > baseline.average_precision and metrics.brier < baseline.brier
    )


def paired_bootstrap_ap_difference(
    y_true: np.ndarray,
    proba_challenger: np.ndarray,
    proba_champion: np.ndarray,
    groups: np.ndarray,
    resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Average precision of challenger minus champion on the same rows, with its interval.

    A paired cluster bootstrap: each resample draws the groups (cards, whose rows are
    correlated) with replacement and weighs every row by how often its group was drawn; both
    models are scored on the same resample. The interval is the percentile interval at
    ``confidence``. Resamples without a positive are skipped and not counted in
    ``resamples``. One sort per model; a resample costs a cumulative sum over the rows per model.
    """
    y, challenger = _validated(y_true, proba_challenger)
    _, champion = _validated(y, proba_champion)
    if len(groups) != y.size:
        raise ValueError(f"groups has {len(groups)} entries for {y.size} rows")
    if y.sum() == 0:
        raise ValueError("average precision needs at least one positive row")
    codes, uniques = pd.factorize(np.asarray(groups))
    challenger_steps, champion_steps = (_ap_steps(y, p, codes) for p in (challenger, champion))
    positive_groups = np.unique(codes[y == 1])
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        drawn = rng.integers(0, uniques.size, size=uniques.size)
        counts = np.bincount(drawn, minlength=uniques.size).astype(np.float64)
        if counts[positive_groups].any():
            differences.append(
                _weighted_average_precision(counts, challenger_steps)
                - _weighted_average_precision(counts, champion_steps)
            )
    difference = np.array(differences)
    if difference.size == 0:
        raise ValueError("no bootstrap resample contains a positive row")
    tail = (1 - confidence) / 2
    lower, upper = np.quantile(difference, [tail, 1 - tail])
    return BootstrapResult(
        mean_difference=float(difference.mean()),
        lower=float(lower),
        upper=float(upper),
        resamples=int(difference.size),
        confidence=confidence,
    )


def fairness_slices(
    frame: pd.DataFrame,
    y_col: str,
    proba_col: str,
    threshold: float,
    slice_columns: Mapping[str, pd.Series],
) -> pd.DataFrame:
    """One row per (slice, value) with the model's metrics on those rows, at ``threshold``.

    Columns: slice, value (a string), rows, positives, prevalence, roc_auc, average_precision,
    precision, recall, flagged_rate (shares in [0, 1]; NaN where undefined). Slice columns are
    aligned with ``frame`` by position; missing values are the value ``"(missing)"``. Values
    come in category order for categorical columns, else sorted, ``"(missing)"`` last.
    """
    y, p = _validated(frame[y_col].to_numpy(), frame[proba_col].to_numpy())
    rows = []
    for name, column in slice_columns.items():
        if len(column) != y.size:
            raise ValueError(f"slice {name!r} has {len(column)} values for {y.size} rows")
        values = column.astype(object).where(column.notna(), MISSING).astype(str).to_numpy()
        for value in _slice_value_order(column):
            rows.append(
                {"slice": name, "value": value, **_slice_metrics(y, p, values == value, threshold)}
            )
    return pd.DataFrame(rows, columns=list(FAIRNESS_COLUMNS))


def age_band(age: pd.Series) -> pd.Series:
    """Age in years as bands '<25', '25-34', ..., '65+', and '(missing)' for NaN.

    A categorical of strings, categories in age order then '(missing)', so slices sort by age.
    """
    bands = pd.cut(
        age,
        bins=[-np.inf, 25, 35, 45, 55, 65, np.inf],
        right=False,
        labels=list(AGE_BANDS),
    )
    return bands.cat.add_categories([MISSING]).fillna(MISSING).rename("age_band")


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure (Agg canvas, no pyplot); matplotlib is imported on the first plot only, so
    loading and scoring models (e.g. the champion smoke test's fresh process) never pays it."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def roc_figure(y_true: np.ndarray, proba: np.ndarray, label: str) -> Figure:
    """ROC curve of ``proba`` (legend with its AUC) against the chance diagonal."""
    y, p = _validated(y_true, proba)
    fpr, tpr, _ = roc_curve(y, p)
    figure = _new_figure((6, 5))
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, label=f"{label} (AUC = {ranking_scores(y, p)[0]:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="Chance")
    axes.set(title="ROC curve", xlabel="False positive rate", ylabel="True positive rate")
    axes.legend(loc="lower right")
    return figure


def precision_recall_figure(
    y_true: np.ndarray, proba: np.ndarray, label: str, prevalence: float
) -> Figure:
    """Precision-recall curve of ``proba`` (legend with its AP) and the prevalence baseline."""
    y, p = _validated(y_true, proba)
    precision, recall, _ = precision_recall_curve(y, p)
    figure = _new_figure((6, 5))
    axes = figure.add_subplot()
    axes.step(
        recall, precision, where="post", label=f"{label} (AP = {ranking_scores(y, p)[1]:.3f})"
    )
    axes.axhline(prevalence, linestyle="--", color="grey", label=f"Prevalence ({prevalence:.2%})")
    axes.set(title="Precision-recall curve", xlabel="Recall", ylabel="Precision", ylim=(0, 1.02))
    axes.legend(loc="upper right")
    return figure


def lift_gain_figure(y_true: np.ndarray, proba: np.ndarray) -> Figure:
    """Cumulative gain against the share of rows reviewed, and lift per score decile."""
    y, p = _validated(y_true, proba)
    if y.sum() == 0:
        raise ValueError("gain and lift need at least one positive row")
    y_ranked = y[_descending(p)[0]]
    population_share = np.arange(1, y.size + 1) / y.size
    gain = np.cumsum(y_ranked) / y.sum()
    decile_rates = np.array([chunk.mean() for chunk in np.array_split(y_ranked, 10) if chunk.size])
    figure = _new_figure((11, 4.5))
    gain_axes, lift_axes = figure.subplots(1, 2)
    gain_axes.plot(np.r_[0, population_share], np.r_[0, gain], label="Model")
    gain_axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="Random")
    gain_axes.set(
        title="Cumulative gain",
        xlabel="Share of rows reviewed (highest scores first)",
        ylabel="Share of positives caught",
    )
    gain_axes.legend(loc="lower right")
    lift_axes.bar(np.arange(1, decile_rates.size + 1), decile_rates / y.mean())
    lift_axes.axhline(1, linestyle="--", color="grey")
    lift_axes.set(
        title="Lift by decile",
        xlabel="Score decile (1 = highest)",
        ylabel="Positive rate / overall rate",
        xticks=np.arange(1, decile_rates.size + 1),
    )
    figure.tight_layout()
    return figure


def calibration_figure(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> Figure:
    """Reliability diagram (observed vs predicted rate per bin) over a histogram of ``proba``."""
    y, p = _validated(y_true, proba)
    counts, mean_proba, positive_rate = _calibration_bins(y, p, bins)
    filled = counts > 0
    figure = _new_figure((6, 7))
    reliability, histogram = figure.subplots(2, 1, height_ratios=[3, 1])
    reliability.plot([0, 1], [0, 1], linestyle="--", color="grey", label="Perfectly calibrated")
    reliability.plot(mean_proba[filled], positive_rate[filled], marker="o", label="Model")
    reliability.set(
        title=f"Calibration (ECE = {expected_calibration_error(y, p, bins):.4f})",
        xlabel="Mean predicted probability in bin",
        ylabel="Observed positive rate",
        xlim=(0, 1),
    )
    reliability.legend(loc="upper left")
    histogram.hist(p, bins=np.linspace(0, 1, bins + 1))
    # Probabilities of rare events pile up near 0: a log scale keeps the tail bins visible.
    histogram.set(
        title="Predicted probabilities",
        xlabel="Predicted probability",
        ylabel="Rows",
        yscale="log",
        xlim=(0, 1),
    )
    figure.tight_layout()
    return figure


def confusion_figure(metrics: HoldoutMetrics) -> Figure:
    """Confusion matrix at the metrics' threshold, each cell annotated with its count."""
    cells = np.array([[metrics.tn, metrics.fp], [metrics.fn, metrics.tp]])
    figure = _new_figure((5, 4.5))
    axes = figure.add_subplot()
    axes.imshow(cells, cmap="Blues")
    for (row, column), count in np.ndenumerate(cells):
        colour = "white" if count > cells.max() / 2 else "black"
        axes.text(column, row, f"{count:,}", ha="center", va="center", color=colour)
    axes.set(
        title=f"Confusion matrix (threshold = {metrics.threshold:.4g})",
        xlabel="Predicted",
        ylabel="Actual",
        xticks=[0, 1],
        xticklabels=["not flagged", "flagged"],
        yticks=[0, 1],
        yticklabels=["negative", "positive"],
    )
    return figure


def learning_curve_figure(points: Sequence[LearningCurvePoint]) -> Figure:
    """Train and validation average precision against the number of training rows."""
    ordered = sorted(points, key=lambda point: point.train_rows)
    rows = [point.train_rows for point in ordered]
    figure = _new_figure((6, 4.5))
    axes = figure.add_subplot()
    axes.plot(rows, [point.train_score for point in ordered], marker="o", label="Train")
    axes.plot(rows, [point.validation_score for point in ordered], marker="o", label="Validation")
    axes.set(
        title="Learning curve", xlabel="Training rows", ylabel="Average precision", xscale="log"
    )
    axes.legend(loc="lower right")
    return figure


def importance_figure(importances: Mapping[str, float], top: int = 25) -> Figure:
    """Horizontal bars of the ``top`` largest importances, largest at the top."""
    # barh draws the first bar at the bottom: smallest of the top first puts the largest on top
    ranked = sorted(importances.items(), key=lambda item: item[1], reverse=True)[:top][::-1]
    figure = _new_figure((7, 1.5 + 0.3 * len(ranked)))
    axes = figure.add_subplot()
    axes.barh([name for name, _ in ranked], [value for _, value in ranked])
    axes.set(title=f"Feature importance (top {len(ranked)})", xlabel="Importance", ylabel="Feature")
    figure.tight_layout()
    return figure


def save_figures(figures: Mapping[str, Figure], folder: Path) -> dict[str, Path]:
    """Write each figure as ``<name>.png`` (100 dpi) into ``folder`` (created); name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, figure in figures.items():
        paths[name] = folder / f"{name}.png"
        figure.savefig(paths[name], dpi=100)
    return paths


def model_card(
    *,
    model_name: str,
    family: str,
    version: str | None,
    dataset_version: str,
    trained_at: str,
    target: str,
    features: Sequence[str],
    params: Mapping[str, object],
    calibration: str,
    metrics: HoldoutMetrics,
    baseline: HoldoutMetrics,
    slices: pd.DataFrame,
    holdout_period: str,
    limits: Sequence[str],
) -> str:
    """A Markdown model card: data, model, holdout metrics vs baseline, slices, features, limits."""
    title = f"{model_name} version {version}" if version else f"{model_name} (unregistered)"
    comparison = pd.DataFrame(
        {
            "metric": list(metrics.as_dict()),
            "model": list(metrics.as_dict().values()),
            "prevalence baseline": list(baseline.as_dict().values()),
        },
        dtype=object,  # keeps counts as integers next to the float metrics
    )
    parameters = pd.DataFrame({"parameter": list(params), "value": list(params.values())})
    lines = [
        f"# Model card: {title}",
        "",
        f"{family} model of `{target}`, calibrated with {calibration}, trained {trained_at}. "
        f"On the out-of-time holdout ({holdout_period}) its average precision is "
        f"{metrics.average_precision:.4f} against {baseline.average_precision:.4f} for the "
        f"prevalence-only baseline (ROC AUC {metrics.roc_auc:.4f}).",
        "",
        "## Data",
        "",
        f"- Dataset version: `{dataset_version}`",
        f"- Target: `{target}`",
        f"- Holdout period: {holdout_period}",
        f"- Holdout rows: {metrics.rows:,}, of which positive: {metrics.positives:,} "
        f"(prevalence {metrics.prevalence:.4%})",
        "",
        "## Model",
        "",
        f"- Family: {family}",
        f"- Calibration: {calibration}",
        f"- Decision threshold: {metrics.threshold:.6g} (flag when probability >= threshold)",
        "",
        _markdown(parameters) if params else "(default parameters)",
        "",
        "## Holdout metrics",
        "",
        _markdown(comparison),
        "",
        "## Fairness slices",
        "",
        _markdown(slices) if len(slices) else "(no slices)",
        "",
        f"## Features ({len(features)})",
        "",
        *(f"- `{feature}`" for feature in features),
        "",
        "## Intended use and limits",
        "",
        f"- Intended use: rank transactions by their probability of `{target}` and flag those "
        "at or above the decision threshold for review; not for decisions without review.",
        *(f"- {limit}" for limit in limits),
        "",
    ]
    return "\n".join(lines)


def _validated(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and probabilities as float64 in [0, 1], of equal non-zero length."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape or y.size == 0:
        raise ValueError(f"need two equally long non-empty 1-d arrays, got {y.shape} and {p.shape}")
    if not np.isin(y, [0, 1]).all():
        raise ValueError("labels must be 0 or 1")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("probabilities must be in [0, 1] (and not NaN)")
    return y.astype(np.int64), p


def _share(part: float, whole: float) -> float:
    """part / whole, NaN when whole is 0."""
    return part / whole if whole else float("nan")


def _descending(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by descending probability and, in that order, the last index of each tie."""
    order = np.argsort(proba, kind="stable")[::-1]
    ranked = proba[order]
    return order, np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1]


def _calibration_bins(
    y: np.ndarray, p: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: row count, mean probability, positive rate (NaN when empty)."""
    index = np.minimum((p * bins).astype(np.int64), bins - 1)  # p = 1 belongs to the last bin
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_proba = np.bincount(index, weights=p, minlength=bins) / counts
        positive_rate = np.bincount(index, weights=y, minlength=bins) / counts
    return counts, mean_proba, positive_rate


def _confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN when rows with ``p >= threshold`` are flagged."""
    flagged = p >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged)) - tp
    fn = int(y.sum()) - tp
    return tp, fp, fn, y.size - tp - fp - fn


def ranking_scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision of probabilities ``p`` for 0/1 labels ``y``, both NaN
    when only one class is present."""
    if y.min() == y.max():
        return float("nan"), float("nan")
    return float(roc_auc_score(y, p)), float(average_precision_score(y, p))


def card_precision_at_k(
    y: np.ndarray, p: np.ndarray, card_ids: np.ndarray, k: int
) -> tuple[float, int]:
    """Share of the top-k cards (by max probability) with a positive row, and the k used.

    ``k`` is clipped to the number of cards; cards tied at the cut-off count with their
    average (see :func:`holdout_metrics`).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(card_ids) != y.size:
        raise ValueError(f"card_ids has {len(card_ids)} entries for {y.size} rows")
    rows = pd.DataFrame({"card": card_ids, "score": p, "positive": y})
    cards = rows.groupby("card", dropna=False).max()
    k = min(k, len(cards))
    cut_off = cards["score"].nlargest(k).iloc[-1]
    above = cards[cards["score"] > cut_off]
    tied = cards[cards["score"] == cut_off]
    # Tied cards fill the remaining places in expectation, so the result ignores card order.
    caught = above["positive"].sum() + (k - len(above)) * tied["positive"].mean()
    return float(caught / k), k


@dataclass(frozen=True)
class _APSteps:
    """One model's ranking, reduced to what weighted average precision needs.

    Rows in descending score order are given by their group code; a recall step is a distinct
    score with a positive row (ties form one step, as in scikit-learn).
    """

    ranked_codes: np.ndarray  # group of each row, highest score first
    positive_codes: np.ndarray  # group of each positive row, highest score first
    step_ends: np.ndarray  # per step: index of its last row in the ranking
    positives_through: np.ndarray  # per step: positive rows ranked up to its end


def _ap_steps(y: np.ndarray, p: np.ndarray, codes: np.ndarray) -> _APSteps:
    """The recall steps of ``p`` for :func:`_weighted_average_precision`."""
    order, last_of_tie = _descending(p)
    y_ranked = y[order]
    positives_through = np.cumsum(y_ranked)[last_of_tie]
    is_step = np.diff(positives_through, prepend=0) > 0
    return _APSteps(
        ranked_codes=codes[order],
        positive_codes=codes[order][y_ranked == 1],
        step_ends=last_of_tie[is_step],
        positives_through=positives_through[is_step],
    )


def _weighted_average_precision(counts: np.ndarray, steps: _APSteps) -> float:
    """Average precision with each row weighted by its group's entry in ``counts``.

    Equals scikit-learn's ``average_precision_score`` with ``sample_weight``; needs some
    positive row with a non-zero weight.
    """
    # Recall only moves at positive rows, so the caught weight needs only their weights.
    caught = np.cumsum(counts[steps.positive_codes])[steps.positives_through - 1]
    flagged = np.cumsum(counts[steps.ranked_codes])[steps.step_ends]
    precision = np.divide(caught, flagged, out=np.zeros_like(caught), where=flagged > 0)
    return float(np.sum(np.diff(caught, prepend=0) * precision) / caught[-1])


def _markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table, numbers formatted by :func:`_format_cell`."""
    # disable_numparse: tabulate would otherwise re-format the already formatted numbers
    return table.map(_format_cell).to_markdown(index=False, disable_numparse=True)


def _format_cell(value: object) -> str:
    """Integers with thousands separators, floats to 4 significant digits, NaN as 'n/a'."""
    if isinstance(value, bool | str) or not isinstance(value, int | float | np.number):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    if np.isnan(value):
        return "n/a"
    return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.4g}"


def _slice_value_order(column: pd.Series) -> list[str]:
    """Values of a slice column as strings, in display order, with '(missing)' last."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        present = set(column.dropna().astype(str))
        ordered = [str(c) for c in column.cat.categories if str(c) in present]
    else:
        ordered = sorted({str(value) for value in column.dropna()})
    if column.isna().any() and MISSING not in ordered:
        ordered.append(MISSING)
    return ordered


def _slice_metrics(
    y: np.ndarray, p: np.ndarray, mask: np.ndarray, threshold: float
) -> dict[str, float | int]:
    """Metrics of the rows in ``mask`` for :func:`fairness_slices`."""
    y, p = y[mask], p[mask]
    tp, fp, fn, _ = _confusion(y, p, threshold)
    roc_auc, average_precision = ranking_scores(y, p)
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "prevalence": float(y.mean()),
        "roc_auc": roc_auc,
        "average_precision": average_precision,
        "precision": _share(tp, tp + fp),
        "recall": _share(tp, tp + fn),
        "flagged_rate": (tp + fp) / y.size,
    }
