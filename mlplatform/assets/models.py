"""Training: one candidate asset per model family, and the champion competition.

The ML libraries (MLflow, LightGBM, scikit-learn, matplotlib) are imported inside the assets:
every Dagster process loads this code location (the UI's code server, each run), and only
training runs need them.
"""

import json
from typing import TYPE_CHECKING

import dagster as dg

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.training_data import ML_OWNERS, master_table
from mlplatform.resources import LandingZoneResource, MlflowResource, WarehouseResource
from mlplatform.settings import get_settings

if TYPE_CHECKING:
    from mlplatform.serving.champion import Champion

FAMILY_DESCRIPTIONS = {
    "logistic_regression": "the baseline: logistic regression with mean imputation, missing "
    "indicators, scaling and one-hot encoding",
    "random_forest": "a scikit-learn random forest (bagged trees on missing-aware splits)",
    "lightgbm": "LightGBM gradient-boosted trees (native categorical handling)",
}
#: Holdout metrics shown on a candidate's materialization (and plotted over time in the UI).
SHOWN_METRICS = (
    "average_precision", "roc_auc", "brier", "ece", "precision", "recall",
    "card_precision_at_k", "expected_value", "threshold",
)  # fmt: skip


def candidate_asset(family: str) -> dg.AssetsDefinition:
    """The asset ``candidate_<family>``: tune, calibrate, evaluate and log one family."""

    @dg.asset(
        name=f"candidate_{family}",
        group_name="training",
        kinds={"mlflow", "lightgbm" if family == "lightgbm" else "scikitlearn"},
        owners=ML_OWNERS,
        # No pool: a candidate reads the master table's Parquet snapshot, never the
        # warehouse, so daily runs go on while it fits.
        deps=[master_table],
        check_specs=[dg.AssetCheckSpec("beats_prevalence_baseline", asset=f"candidate_{family}")],
        description=f"Candidate model: {FAMILY_DESCRIPTIONS[family]}. Random search on "
        "card-grouped folds of train, refit, calibration on validation (sigmoid or isotonic, "
        "lower Brier), threshold by expected value; evaluated on the out-of-time holdout "
        "against a prevalence-only baseline, with plots, fairness slices and a model card, "
        "all logged to one MLflow run.",
    )
    @with_compute_cost
    def _candidate(
        context: dg.AssetExecutionContext,
        landing: LandingZoneResource,
        mlflow_store: MlflowResource,
    ) -> dg.MaterializeResult:
        from mlplatform.ml.evaluation import beats_baseline
        from mlplatform.ml.training import load_training_data, log_candidate, train_and_evaluate

        settings = get_settings()
        data = load_training_data(settings.datasets_dir, landing.contract.target)
        report = train_and_evaluate(family, data, settings)
        tags = {"mlplatform.family": family, "mlplatform.dataset_version": data.dataset_version}
        with mlflow_store.run(context, tags) as run:
            model_uri = log_candidate(report, data)
        metrics = report.metrics.as_dict()
        model = report.result.model
        context.log.info(
            "%s: holdout AP %.4f (baseline %.4f), fits %.1f s of %.1f s", family,
            report.metrics.average_precision, report.baseline.average_precision,
            report.result.fit_seconds, report.seconds,
        )  # fmt: skip
        baseline = report.baseline
        check = dg.AssetCheckResult(
            check_name="beats_prevalence_baseline",
            passed=beats_baseline(report.metrics, baseline),
            severity=dg.AssetCheckSeverity.ERROR,
            description="Higher average precision and lower Brier score than predicting the "
            "train prevalence for every holdout row; a candidate that fails does not compete.",
            metadata={
                "average_precision": float(report.metrics.average_precision),
                "baseline_average_precision": float(baseline.average_precision),
                "brier": float(report.metrics.brier),
                "baseline_brier": float(baseline.brier),
            },
        )
        return dg.MaterializeResult(
            check_results=[check],
            metadata={
                "mlflow_run": mlflow_store.run_link(run),
                "model_uri": model_uri,
                "dataset_version": data.dataset_version,
                **{f"holdout_{name}": float(metrics[name]) for name in SHOWN_METRICS},
                "baseline_average_precision": float(report.baseline.average_precision),
                "calibration": model.calibrator.method,
                "params": dg.MetadataValue.json(model.metadata()["params"]),
                "search": dg.MetadataValue.md(
                    "| trial | average precision | params |\n|---|---|---|\n"
                    + "\n".join(
                        f"| {i} | {t.score:.4f} | `{json.dumps(t.params)}` |"
                        for i, t in enumerate(report.result.trials, 1)
                    )
                ),
                "fit_seconds": round(report.result.fit_seconds, 2),
                "training_seconds": round(report.seconds, 2),
                "plots": mlflow_store.run_link(run, artifacts="plots"),
                "fairness_slices": dg.MetadataValue.md(
                    report.slices.to_markdown(index=False, floatfmt=".4g")
                ),
                "model_card": dg.MetadataValue.md(report.card),
            },
        )

    return _candidate


class ChampionIOManager(dg.ConfigurableIOManager):
    """The champion lives in the MLflow registry: storing is the alias, loading is
    :func:`mlplatform.load_champion` (so ``defs.load_asset_value("champion_model")`` works)."""

    def handle_output(self, context: dg.OutputContext, obj: None) -> None:
        """Nothing to write: ``champion_model`` has set the registry alias already."""

    def load_input(self, context: dg.InputContext) -> "Champion":
        from mlplatform.serving.champion import load_champion

        return load_champion()


def champion_asset(families: tuple[str, ...]) -> dg.AssetsDefinition:
    """``champion_model``: the best candidate of ``families`` against the champion."""

    @dg.asset(
        name="champion_model",
        group_name="training",
        kinds={"mlflow"},
        owners=ML_OWNERS,
        pool=WAREHOUSE_POOL,
        deps=[f"candidate_{family}" for family in families],
        io_manager_key="champion_io_manager",
        description="Model competition on the holdout: the best candidate (by average "
        "precision) is registered and promoted to the MLflow alias `champion` only if it "
        "clears the floors, beats the current champion under a paired card bootstrap and "
        "passes a smoke test (fresh process, pickle disabled, latency budget). Every decision "
        "is appended to `ml.promotion_log`; the challenger's holdout score distribution and "
        "feature importances go to `ml.champion_score_profile` and "
        "`ml.champion_feature_importance` (prediction drift's reference, drift's watched "
        "features). Loads as the champion (`load_champion()`).",
    )
    @with_compute_cost
    def _champion(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        mlflow_store: MlflowResource,
    ) -> dg.Output[None]:
        from mlplatform.ml.champion import (
            SmokeTest,
            elect_champion,
            latest_candidates,
            log_election,
        )
        from mlplatform.ml.training import load_holdout
        from mlplatform.monitoring.profile import record_model_profile

        settings = get_settings()
        # The smoke test's fresh process imports the model libraries while this one
        # finds, registers and scores the challenger.
        with SmokeTest() as smoke_test, warehouse.connection() as conn:
            client = mlflow_store.client()
            dataset_version = conn.execute(
                "SELECT any_value(dataset_version) FROM ml.feature_selection"
            ).fetchone()[0]
            candidates = latest_candidates(
                client, mlflow_store.experiment_id(), dataset_version, families
            )
            tags = {"mlplatform.dataset_version": dataset_version}
            with mlflow_store.run(context, tags) as run:
                election = elect_champion(
                    client, conn, settings, candidates, load_holdout(conn), dataset_version,
                    actor=context.run.run_id, smoke_test=smoke_test,
                )  # fmt: skip
                log_election(election)
            # Prediction drift compares days with this version's holdout scores (also kept
            # when rejected: a manual promotion may make it the champion).
            record_model_profile(
                conn, election.version, dataset_version, election.holdout_scores,
                election.importances, settings.profile_bins,
            )  # fmt: skip
        decision = election.decision
        (context.log.info if decision.promote else context.log.warning)(
            "version %s (%s): %s — %s", election.version, election.challenger.family,
            "promoted" if decision.promote else "rejected", decision.reason,
        )  # fmt: skip
        metadata = {
            "mlflow_run": mlflow_store.run_link(run),
            "model_uri": f"models:/{settings.model_name}/{election.version}",
            "model_page": mlflow_store.model_version_link(election.version),
            "decision": "promoted" if decision.promote else "rejected",
            "reason": decision.reason,
            "challenger_version": election.version,
            "challenger_family": election.challenger.family,
            "champion_version": election.champion_after or "(none)",
            "previous_champion": election.champion_before or "(none)",
            "checks": dg.MetadataValue.json(decision.checks),
            "holdout_average_precision": float(election.metrics.average_precision),
            "holdout_ece": float(election.metrics.ece),
            "smoke_test": election.smoke.detail,
            "candidates": dg.MetadataValue.md(
                "| family | holdout AP | run |\n|---|---|---|\n"
                + "\n".join(
                    f"| {c.family} | {c.average_precision:.4f} | "
                    f"[{c.run_id[:8]}]({mlflow_store.run_url(run.info.experiment_id, c.run_id)}) |"
                    for c in sorted(candidates, key=lambda c: -c.average_precision)
                )
            ),
        }
        if election.comparison is not None:
            metadata |= {
                "champion_average_precision": float(election.champion_metrics.average_precision),
                "ap_difference_mean": election.comparison.mean_difference,
                "ap_difference_lower": election.comparison.lower,
            }
        return dg.Output(None, metadata=metadata)

    return _champion
