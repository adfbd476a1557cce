"""Data and prediction drift of a day against the reference of the champion that scored it.

The champion that scored day D is the model version (and dataset version) of D's rows of
``ml.predictions``. Data drift compares each feature of that dataset version's training
profile (``ml.training_reference_profile``) with D's feature rows; prediction drift compares
that version's holdout scores (``ml.champion_score_profile``) with D's batch scores and, when
the REST service logged any, its served scores. DuckDB bins the day with the stored edges
(:func:`~mlplatform.monitoring.profile.bin_sql`) and computes the statistics from the bins
(``drift_statistics.sql``): the training data is never read again.

A feature drifts when its distance (normed Wasserstein for numbers with more than five
values, Jensen-Shannon otherwise: Evidently's defaults for large samples) reaches the
threshold **and** a chi-square test of the day's bins against the reference shares rejects
"unchanged" at ``p_value``. On a large day the test rejects any change of that size, so the
verdict is Evidently's; on a small day sampling noise alone moves the distances past the
threshold, and the test keeps unchanged days flagged at about the nominal rate.

A day's rows are not independent draws: the rows of one card share its cardholder's values
and its slow windows, and the rows of one merchant share its daily windows exactly. The test
therefore counts a card's or merchant's feature at Kish's effective sample size of the day's
rows clustered by that key (n² / Σ n_k², the number of keys when each has as many rows):
counted as 842 independent rows, a clean 250-card day flagged 17 of 49 features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import duckdb
import pandas as pd
import pyarrow as pa

from mlplatform.features.offline import TABLE as FEATURES_TABLE
from mlplatform.monitoring.profile import (
    IMPORTANCE_TABLE,
    PROFILE_TABLE,
    SCORE_PROFILE_TABLE,
    bin_sql,
)
from mlplatform.warehouse.connection import read_sql, transactions

TABLE = "monitoring.drift"
PREDICTION = "prediction"
DATA_KINDS = ("numeric", "categorical")
WASSERSTEIN, JENSEN_SHANNON = "wasserstein_normed", "jensen_shannon"
#: Numbers with at most this many distinct values are compared as categories (Evidently).
MAX_DISCRETE_VALUES = 5
#: The key of each clustering entity (a feature's ``entity``) in a day's feature rows.
ENTITY_KEYS = {"card": "card_id", "merchant": "merchant"}


@dataclass(frozen=True)
class DriftRule:
    """When a feature drifts: distance >= ``distance_threshold`` and chi-square p < ``p_value``."""

    distance_threshold: float = 0.1
    p_value: float = 0.05


@dataclass(frozen=True)
class FeatureDrift:
    """One feature (or score) of one day against its reference."""

    feature: str
    kind: str
    rows: int
    effective_rows: float  # what the chi-square test counts the rows as (clustered rows: fewer)
    psi: float
    distance: float | None
    distance_name: str
    threshold: float
    p_value: float
    significant: bool  # p_value below the rule's: the day's bins differ beyond chance
    drifted: bool


@dataclass(frozen=True)
class Scorer:
    """The champion that scored a day: its model and dataset versions and the rows scored."""

    model_version: str
    dataset_version: str | None
    rows: int


@dataclass(frozen=True)
class DayDrift:
    """A day's drift: the features compared, or why nothing was (``status``)."""

    partition_date: date
    status: str
    scorer: Scorer | None = None
    features: tuple[FeatureDrift, ...] = ()

    @property
    def computed(self) -> bool:
        return bool(self.features)

    @property
    def drifted(self) -> tuple[FeatureDrift, ...]:
        return tuple(f for f in self.features if f.drifted)

    @property
    def drifted_share(self) -> float:
        """Share of the compared features that drifted (0 when none was compared)."""
        return len(self.drifted) / len(self.features) if self.features else 0.0


def day_scorer(conn: duckdb.DuckDBPyConnection, day: date) -> Scorer | None:
    """The model (and dataset) version that scored most of ``day``'s rows of ``ml.predictions``."""
    rows = conn.execute(  # fetchall: a result left half-read blocks DuckDB's register()
        "SELECT model_version, any_value(dataset_version), count(*) FROM ml.predictions "
        "WHERE partition_date = ? GROUP BY model_version ORDER BY count(*) DESC LIMIT 1",
        [day],
    ).fetchall()
    return Scorer(*rows[0]) if rows else None


def reference_profile(conn: duckdb.DuckDBPyConnection, dataset_version: str) -> pd.DataFrame:
    """The training profile rows of ``dataset_version`` (empty when it was never built)."""
    return conn.execute(
        f"SELECT * EXCLUDE (dataset_version) FROM {PROFILE_TABLE} WHERE dataset_version = ?",
        [dataset_version],
    ).df()


def score_profile(conn: duckdb.DuckDBPyConnection, model_version: str) -> pd.DataFrame:
    """The holdout score profile of ``model_version`` as profile rows of feature ``score``."""
    return conn.execute(
        f"""SELECT 'score' AS feature, 'numeric' AS kind, bin, NULL::VARCHAR AS category,
                   lower, upper, count, share, mean, std, n_distinct
            FROM {SCORE_PROFILE_TABLE} WHERE model_version = ?""",
        [model_version],
    ).df()


def top_features(conn: duckdb.DuckDBPyConnection, model_version: str, n: int) -> list[str]:
    """The ``n`` most important features of ``model_version`` (empty when not recorded)."""
    rows = conn.execute(
        f"SELECT feature FROM {IMPORTANCE_TABLE} WHERE model_version = ? AND rank <= ? "
        "ORDER BY rank",
        [model_version, n],
    ).fetchall()
    return [feature for (feature,) in rows]


def _edges(profile: pd.DataFrame, feature: str) -> list[float]:
    """The stored bin edges of a numeric ``feature``, ascending."""
    bins = profile[(profile.feature == feature) & (profile.bin >= 0)].sort_values("bin")
    return [float(e) for e in bins.upper.dropna()]


def binned_sql(profile: pd.DataFrame, source: str) -> str:
    """SQL of ``source``'s rows binned as ``profile`` bins them: feature, bin, category,
    count, mean (one row per feature and bin or value). Each feature's part reads its own
    column of ``source`` (inlined, not materialized: a columnar scan each)."""
    parts = []
    for feature, kind in profile.groupby("feature", sort=True)["kind"].first().items():
        if kind == "categorical":
            parts.append(
                f"SELECT '{feature}' AS feature, NULL::INTEGER AS bin, {feature}::VARCHAR AS "
                f"category, count(*) AS count, NULL::DOUBLE AS mean FROM day GROUP BY ALL"
            )
        else:
            value = f"{feature}::DOUBLE"
            parts.append(
                f"SELECT '{feature}' AS feature, {bin_sql(value, _edges(profile, feature))} AS "
                f"bin, NULL::VARCHAR AS category, count(*) AS count, avg({value}) AS mean "
                "FROM day GROUP BY ALL"
            )
    return f"WITH day AS NOT MATERIALIZED ({source}) " + " UNION ALL ".join(parts)


def effective_rows(
    conn: duckdb.DuckDBPyConnection, source: str, key: str, params: dict[str, object]
) -> float:
    """Kish's effective sample size of ``source``'s rows clustered by ``key``: n² / Σ n_k²
    over the keys' row counts n_k (n when every row has its own key; rows without a key
    count as one cluster)."""
    ((size,),) = conn.execute(  # fetchall: a half-read result blocks DuckDB's register()
        f"WITH day AS ({source}) SELECT coalesce(sum(n) ** 2 / sum(n * n), 0) "
        f"FROM (SELECT count(*) AS n FROM day GROUP BY {key})",
        params,
    ).fetchall()
    return float(size)


def compare(
    conn: duckdb.DuckDBPyConnection,
    profile: pd.DataFrame,
    source: str,
    params: dict[str, object] | None = None,
    rule: DriftRule = DriftRule(),
    kind: str | None = None,
    effective: Mapping[str, float] | None = None,
) -> list[FeatureDrift]:
    """Each feature of ``profile`` (rows of a reference profile) in ``source`` (a SELECT of
    at least those columns; ``params`` its parameters) against the profile. ``kind``
    overrides the kind recorded (e.g. ``prediction``); ``effective`` gives the effective
    sample size of a feature whose rows are clustered (see :func:`effective_rows`): its
    chi-square statistic is scaled by it over the rows."""
    from scipy.special import chdtrc  # chi-square survival; scipy loads only where used

    current = conn.sql(binned_sql(profile, source), params=params or {}).to_arrow_table()
    reference = pa.Table.from_pandas(profile, preserve_index=False)
    conn.register("reference", reference)
    conn.register("current", current)
    try:
        rows = conn.execute(read_sql("drift_statistics")).fetchall()
    finally:
        conn.unregister("reference")
        conn.unregister("current")
    results = []
    for feature, feature_kind, n, psi, js, wasserstein, n_distinct, statistic, dof in rows:
        numeric = feature_kind != "categorical" and (n_distinct or 0) > MAX_DISCRETE_VALUES
        distance = wasserstein if numeric else js
        distance = None if distance is None or math.isnan(distance) else float(distance)
        size = min(float(n), (effective or {}).get(feature, float(n)))
        statistic = statistic * size / n if statistic is not None and n else statistic
        p = float(chdtrc(dof, statistic)) if dof and dof > 0 else 1.0
        results.append(
            FeatureDrift(
                feature=feature,
                kind=kind or feature_kind,
                rows=int(n),
                effective_rows=size,
                psi=float(psi),
                distance=distance,
                distance_name=WASSERSTEIN if numeric else JENSEN_SHANNON,
                threshold=rule.distance_threshold,
                p_value=p,
                significant=p < rule.p_value,
                drifted=distance is not None
                and distance >= rule.distance_threshold
                and p < rule.p_value,
            )
        )
    return results


def data_drift(
    conn: duckdb.DuckDBPyConnection,
    day: date,
    rule: DriftRule,
    entities: Mapping[str, str] | None = None,
) -> DayDrift:
    """Every feature of the profile of the dataset version of ``day``'s champion, on the
    day's rows of ``features.card_features``. ``entities`` (feature -> entity, as the
    registry declares them) says which features' rows are clustered by a card or merchant
    (:data:`ENTITY_KEYS`); the others' rows count as independent."""
    scorer = day_scorer(conn, day)
    if scorer is None:
        return DayDrift(day, "no champion has scored the day (ml.predictions)")
    if scorer.dataset_version is None:
        return DayDrift(day, f"version {scorer.model_version} records no dataset version", scorer)
    profile = reference_profile(conn, scorer.dataset_version)
    if profile.empty:
        return DayDrift(
            day, f"no reference profile of dataset {scorer.dataset_version[:16]}", scorer
        )
    features = list(profile.feature.unique())
    clustered = {f: e for f, e in (entities or {}).items() if f in features and e in ENTITY_KEYS}
    params = {"day": day}
    columns = ", ".join(f"f.{name}" for name in features)
    merchant = "merchant" in clustered.values()  # a curated column, not a feature
    join = " JOIN curated.transactions AS t USING (transaction_id, partition_date)"
    source = (f"SELECT {columns}, f.card_id{', t.merchant' if merchant else ''} "
              f"FROM {FEATURES_TABLE} AS f{join if merchant else ''} "
              "WHERE f.partition_date = $day")  # fmt: skip
    sizes = {e: effective_rows(conn, source, ENTITY_KEYS[e], params) for e in {*clustered.values()}}
    effective = {feature: sizes[entity] for feature, entity in clustered.items()}
    results = compare(conn, profile, source, params, rule, effective=effective)
    return DayDrift(day, "computed", scorer, tuple(results))


def prediction_drift(conn: duckdb.DuckDBPyConnection, day: date, rule: DriftRule) -> DayDrift:
    """The day's batch scores (``score``) and, when the service logged the champion's answers
    that day, its served scores (``served_score``) against the champion's holdout scores."""
    scorer = day_scorer(conn, day)
    if scorer is None:
        return DayDrift(day, "no champion has scored the day (ml.predictions)")
    profile = score_profile(conn, scorer.model_version)
    if profile.empty:
        return DayDrift(day, f"no holdout score profile of version {scorer.model_version}", scorer)
    params = {"day": day, "version": scorer.model_version}
    features = compare(
        conn, profile,
        "SELECT score FROM ml.predictions WHERE partition_date = $day AND model_version = $version",
        params, rule, PREDICTION,
    )  # fmt: skip
    served = conn.execute(
        "SELECT count(*) FROM monitoring.serving_log WHERE partition_date = $day "
        "AND model_version = $version AND returned",
        params,
    ).fetchall()[0][0]
    if served:
        features += compare(
            conn, profile.assign(feature="served_score"),
            "SELECT score AS served_score FROM monitoring.serving_log WHERE partition_date = $day "
            "AND model_version = $version AND returned",
            params, rule, PREDICTION,
        )  # fmt: skip
    return DayDrift(day, "computed", scorer, tuple(features))


def store_drift(
    conn: duckdb.DuckDBPyConnection, results: Sequence[DayDrift], kinds: Sequence[str]
) -> None:
    """Replace the rows of ``kinds`` of each day of ``results`` in ``monitoring.drift`` (a day
    with nothing computed keeps no rows), in one transaction."""
    rows = [
        {
            "partition_date": day.partition_date,
            "feature": f.feature,
            "kind": f.kind,
            "psi": f.psi,
            "distance": f.distance,
            "distance_name": f.distance_name,
            "threshold": f.threshold,
            "p_value": f.p_value,
            "drifted": f.drifted,
            "reference_dataset_version": day.scorer.dataset_version,
            "model_version": day.scorer.model_version,
            "rows": f.rows,
            "effective_rows": f.effective_rows,
            "computed_at": datetime.now(UTC).replace(tzinfo=None),
        }
        for day in results
        for f in day.features
    ]
    frame = pd.DataFrame(rows, columns=[
        "partition_date", "feature", "kind", "psi", "distance", "distance_name", "threshold",
        "p_value", "drifted", "reference_dataset_version", "model_version", "rows",
        "effective_rows", "computed_at",
    ])  # fmt: skip
    days = [day.partition_date for day in results]
    conn.register("drift_rows", frame)
    try:
        for attempt in transactions(conn):
            with attempt:
                conn.execute(
                    f"DELETE FROM {TABLE} WHERE partition_date IN (SELECT unnest($days)) "
                    "AND list_contains($kinds, kind)",
                    {"days": days, "kinds": list(kinds)},
                )
                conn.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM drift_rows")
    finally:
        conn.unregister("drift_rows")


@dataclass(frozen=True)
class Judgement:
    """A day judged by a drift check: passed or not, and the reasons it failed."""

    partition_date: date
    passed: bool
    reasons: tuple[str, ...]
    share: float
    watched: tuple[FeatureDrift, ...]  # the features that failed the check


def judge_data_drift(
    day: DayDrift, important: Sequence[str], share_threshold: float, psi_threshold: float
) -> Judgement:
    """Fail when the share of drifted features reaches ``share_threshold`` or one of the
    ``important`` features' PSI passes ``psi_threshold`` significantly (a small day's PSI
    is noisy: the chi-square test of its bins must also reject "unchanged")."""
    reasons, failed = [], list(day.drifted)
    if day.computed and day.drifted_share >= share_threshold:
        reasons.append(
            f"{len(day.drifted)} of {len(day.features)} features drifted "
            f"({day.drifted_share:.0%} >= {share_threshold:.0%})"
        )
    hot = [f for f in day.features
           if f.feature in important and f.psi > psi_threshold and f.significant]  # fmt: skip
    if hot:
        reasons.append(
            "important features over PSI "
            f"{psi_threshold}: " + ", ".join(f"{f.feature} ({f.psi:.3f})" for f in hot)
        )
        failed += [f for f in hot if not f.drifted]
    return Judgement(day.partition_date, not reasons, tuple(reasons), day.drifted_share,
                     tuple(failed) if reasons else ())  # fmt: skip


def judge_prediction_drift(day: DayDrift, psi_threshold: float) -> Judgement:
    """Fail when a score's PSI passes ``psi_threshold`` significantly. The distance alone
    does not fail it: scores crowd near 0, so their normed Wasserstein distance (divided by
    a small std) passes 0.1 on days whose PSI is 0.02 (no practical change)."""
    failed = [f for f in day.features if f.psi > psi_threshold and f.significant]
    reasons = tuple(
        f"{f.feature}: PSI {f.psi:.3f}, {f.distance_name} {f.distance or 0:.3f} "
        f"(threshold {f.threshold}), p {f.p_value:.2g}"
        for f in failed
    )
    return Judgement(day.partition_date, not failed, reasons, day.drifted_share, tuple(failed))


def worst(judgements: Sequence[Judgement]) -> Judgement:
    """The day a range's check reports: the failing day with the most drift, else the last."""
    failing = [j for j in judgements if not j.passed]
    if not failing:
        return judgements[-1]
    return max(failing, key=lambda j: (j.share, max((f.psi for f in j.watched), default=0)))
