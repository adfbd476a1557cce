"""Training one candidate end to end: the master table's data, fit, evaluate, log to MLflow.

:func:`load_training_data` reads the master table's snapshot (the splits with the kept
features), never the warehouse, so training holds no warehouse lock or pool;
:func:`load_holdout` the holdout with every feature column from the warehouse (so any model,
e.g. an older champion, can be scored on it); :func:`train_and_evaluate` tunes,
calibrates and evaluates a family on the out-of-time holdout with plots, fairness slices and
a model card; :func:`log_candidate` records it all in the active MLflow run.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from mlplatform.features.offline import TABLE as FEATURES_TABLE
from mlplatform.ml.champion import cost_model
from mlplatform.ml.evaluation import (
    HoldoutMetrics,
    age_band,
    beats_baseline,
    calibration_figure,
    choose_threshold,
    confusion_figure,
    fairness_slices,
    holdout_metrics,
    importance_figure,
    learning_curve_figure,
    lift_gain_figure,
    model_card,
    precision_recall_figure,
    prevalence_baseline,
    roc_figure,
    save_figures,
)
from mlplatform.ml.master_table import current_dataset, snapshot_path
from mlplatform.ml.models import (
    CandidateResult,
    ModelInputs,
    TrainingPlan,
    model_inputs,
    train_candidate,
)
from mlplatform.ml.registry import log_scoring_model
from mlplatform.settings import Settings

#: Every estimator fit of a candidate's training (purpose, rows, seconds, params), per run.
FITS_FILE = "fits.csv"
#: What the model card says the model is not for, whatever its metrics.
LIMITS = (
    "Trained on the transactions of one data source and period; scores outside the "
    "training population (new markets, products, currencies) are not validated.",
    "Probabilities are calibrated on the validation split; recalibrate after drift.",
    "Fairness slices are descriptive; they do not prove the absence of bias.",
    "A decision aid: do not act on a score alone where a person is affected.",
)


@dataclass(frozen=True)
class TrainingData:
    """The master table's splits, its kept features and its dataset version. Shared by the
    candidates trained in one process: read, never modified."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    features: tuple[str, ...]
    dataset_version: str
    target: str
    holdout_period: str

    @cached_property
    def inputs(self) -> ModelInputs:
        """Train and validation as model frames, built on first use."""
        return model_inputs(self.train, self.validation, self.features)


def load_training_data(datasets_dir: Path, target: str) -> TrainingData:
    """The current master table, read from its Parquet snapshot in ``datasets_dir`` (the
    dataset version's immutable file, named by ``current_dataset``: faster than the
    warehouse, which it never opens, and unaffected by a rebuild running meanwhile);
    ``target`` names the contract's target (for the model card).

    The candidates of one run read the same dataset version: the last one read is kept in
    memory (with its model frames), so the families trained in one process read and
    prepare it once."""
    dataset = current_dataset(datasets_dir)
    path = snapshot_path(datasets_dir, dataset.version)
    return _snapshot_data(path, dataset.features, dataset.version, target)


@lru_cache(maxsize=1)  # the newest dataset version only
def _snapshot_data(
    path: Path, features: tuple[str, ...], version: str, target: str
) -> TrainingData:
    # Training never uses the transaction id: not reading its strings saves a third of the read.
    table = pq.read_table(path, columns=[c for c in pq.read_schema(path).names
                                         if c != "transaction_id"])  # fmt: skip
    # Arrow filters each split before pandas sees it (a third of pandas' read-then-groupby);
    # one block per column: the model frames take columns, never the consolidated 2-D block.
    splits = {
        name: table.filter(pc.equal(table["split"], name)).to_pandas(split_blocks=True)
        for name in ("train", "validation", "holdout")
    }
    holdout = splits["holdout"]
    dates = holdout["partition_date"]
    return TrainingData(
        train=splits["train"],
        validation=splits["validation"],
        holdout=holdout,
        features=features,
        dataset_version=version,
        target=target,
        holdout_period=f"{dates.min():%Y-%m-%d} .. {dates.max():%Y-%m-%d}",
    )


def load_holdout(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The master table's holdout rows with target, card and every feature column."""
    return conn.execute(
        f"""SELECT m.transaction_id, m.card_id, m.target,
                f.* EXCLUDE (transaction_id, card_id, event_time, partition_date),
                m.event_time, m.partition_date
            FROM ml.master_table AS m JOIN {FEATURES_TABLE} AS f USING (transaction_id)
            WHERE m.split = 'holdout' ORDER BY m.transaction_id"""
    ).df()


@dataclass(frozen=True)
class CandidateReport:
    """A trained candidate with its holdout evaluation."""

    family: str
    result: CandidateResult
    metrics: HoldoutMetrics
    baseline: HoldoutMetrics
    slices: pd.DataFrame
    figures: dict[str, Figure]
    card: str
    seconds: float


def train_and_evaluate(family: str, data: TrainingData, settings: Settings) -> CandidateReport:
    """Tune, fit and calibrate ``family``; evaluate it on the holdout against the
    prevalence-only baseline, with plots, fairness slices and a model card."""
    start = time.perf_counter()
    cost = cost_model(settings)
    plan = TrainingPlan(
        iterations=settings.search_iterations,
        folds=settings.search_folds,
        search_max_rows=settings.search_max_rows,
    )
    result = train_candidate(family, data.inputs, plan, lambda y, p: choose_threshold(y, p, cost))
    model = result.model
    y = data.holdout["target"].to_numpy(dtype=int)
    cards = data.holdout["card_id"].to_numpy()
    proba = model.predict_proba(data.holdout)[:, 1]
    k = settings.precision_at_k_cards
    metrics = holdout_metrics(y, proba, model.threshold, cards, k, cost)
    baseline = prevalence_baseline(float(data.train["target"].mean()), y, cards, k, cost)
    slices = fairness_slices(
        data.holdout.assign(proba=proba), "target", "proba", model.threshold,
        _slice_columns(data.holdout),
    )  # fmt: skip
    figures = {
        "roc": roc_figure(y, proba, family),
        "precision_recall": precision_recall_figure(y, proba, family, metrics.prevalence),
        "lift_gain": lift_gain_figure(y, proba),
        "calibration": calibration_figure(y, proba),
        "confusion_matrix": confusion_figure(metrics),
        "learning_curve": learning_curve_figure(result.learning_curve),
        "feature_importance": importance_figure(result.importances),
    }
    card = model_card(
        model_name=settings.model_name,
        family=family,
        version=None,
        dataset_version=data.dataset_version,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        target=data.target,
        features=model.feature_names,
        params=model.params,
        calibration=model.calibrator.method,
        metrics=metrics,
        baseline=baseline,
        slices=slices,
        holdout_period=data.holdout_period,
        limits=LIMITS,
    )
    return CandidateReport(
        family, result, metrics, baseline, slices, figures, card, time.perf_counter() - start
    )


def _slice_columns(holdout: pd.DataFrame) -> dict[str, pd.Series]:
    """Fairness slices: gender and age band, where the data has them."""
    slices = {}
    if "gender" in holdout:
        slices["gender"] = holdout["gender"]
    if "age" in holdout:
        slices["age_band"] = age_band(holdout["age"])
    return slices


def log_candidate(report: CandidateReport, data: TrainingData) -> str:
    """Log params, metrics, plots, slices, model card and the model to the active MLflow
    run; returns the model URI."""
    result, model = report.result, report.result.model
    mlflow.log_params({f"model.{k}": v for k, v in model.params.items()})
    mlflow.log_params({
        "family": report.family, "calibration": model.calibrator.method,
        "threshold": round(model.threshold, 6), "features": len(model.feature_names),
        "train_rows": len(data.train), "validation_rows": len(data.validation),
        "holdout_rows": len(data.holdout), "search_trials": len(result.trials),
    })  # fmt: skip
    metrics = {f"holdout_{k}": float(v) for k, v in report.metrics.as_dict().items()}
    metrics |= {f"baseline_{k}": float(v) for k, v in report.baseline.as_dict().items()}
    metrics |= {f"validation_brier_{k}": v for k, v in result.calibration_brier.items()}
    metrics |= {"search_best_average_precision": float(np.nanmax([t.score for t in result.trials])),
                "fit_seconds": result.fit_seconds, "training_seconds": report.seconds}  # fmt: skip
    mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    with tempfile.TemporaryDirectory(prefix="mlplatform-candidate-") as folder:
        out = Path(folder)
        save_figures(report.figures, out / "plots")
        report.slices.to_csv(out / "fairness_slices.csv", index=False)
        (out / "model_card.md").write_text(report.card, encoding="utf-8")
        pd.DataFrame([{**t.params, "average_precision": t.score} for t in result.trials]).to_csv(
            out / "search_trials.csv", index=False
        )
        fits = [{"purpose": f.purpose, "rows": f.rows, "seconds": f.seconds,
                 "params": json.dumps(dict(f.params))} for f in result.fits]  # fmt: skip
        pd.DataFrame(fits).to_csv(out / FITS_FILE, index=False)
        mlflow.log_artifacts(folder)
    model_uri = log_scoring_model(model)
    mlflow.set_tags({
        "mlplatform.model_uri": model_uri,
        "mlplatform.beats_baseline": str(beats_baseline(report.metrics, report.baseline)).lower(),
    })  # fmt: skip
    return model_uri
