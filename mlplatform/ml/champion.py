"""Model competition: the best candidate against the champion, and the promotion log.

A challenger is promoted only when (a) it beats the prevalence-only baseline and clears the
absolute floors (holdout average precision, calibration error), (b) it beats the champion on
the same holdout under a paired card bootstrap (lower bound of the average-precision
difference above zero; the first model skips this), and (c) a smoke test passes: the
registered model's files load in a fresh process with pickle disabled and score a sample
exactly as here, within the latency budget (the process runs while the holdout is scored).
Every decision, rejections included, is appended to ``ml.promotion_log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlplatform.ml.artifacts import read_scoring_model
from mlplatform.ml.evaluation import (
    BootstrapResult,
    CostModel,
    HoldoutMetrics,
    holdout_metrics,
    paired_bootstrap_ap_difference,
)
from mlplatform.ml.models import ScoringModel, feature_importances
from mlplatform.ml.registry import (
    CHAMPION,
    PREVIOUS,
    alias_version,
    download_model,
    load_scoring_model,
    register_version,
    set_champion,
)
from mlplatform.settings import Settings

PROMOTION_LOG = "ml.promotion_log"
SMOKE_ROWS = 100
#: A fresh process must reproduce this process's probabilities to this tolerance.
SMOKE_TOLERANCE = 1e-9


class ChampionError(RuntimeError):
    """A rollback or manual promotion that cannot be done (no such version, no previous)."""


@dataclass(frozen=True)
class Candidate:
    """A trained candidate as its MLflow run recorded it."""

    family: str
    run_id: str
    model_uri: str
    average_precision: float
    beats_baseline: bool


@dataclass(frozen=True)
class SmokeResult:
    """The registered model, loaded in a fresh process with pickle disabled."""

    passed: bool
    load_seconds: float
    predict_ms: float
    max_abs_difference: float
    detail: str


@dataclass(frozen=True)
class Decision:
    """Promote or not, why, and each criterion's outcome."""

    promote: bool
    reason: str
    checks: dict[str, bool]


@dataclass(frozen=True)
class Election:
    """The outcome of one competition."""

    decision: Decision
    challenger: Candidate
    version: str
    champion_before: str | None
    champion_after: str | None
    metrics: HoldoutMetrics
    champion_metrics: HoldoutMetrics | None
    comparison: BootstrapResult | None
    smoke: SmokeResult
    holdout_scores: np.ndarray  # the challenger's, row by row of the holdout
    importances: dict[str, float]  # the challenger's feature importances (sum 1)


def latest_candidates(
    client: MlflowClient, experiment_id: str, dataset_version: str, families: Sequence[str]
) -> list[Candidate]:
    """The latest finished candidate run of each family on ``dataset_version``."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlplatform.dataset_version` = '{dataset_version}' "
        "AND tags.`mlplatform.model_uri` != '' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    latest: dict[str, Candidate] = {}
    for run in runs:
        family = run.data.tags.get("mlplatform.family")
        if family in families and family not in latest:
            latest[family] = Candidate(
                family=family,
                run_id=run.info.run_id,
                model_uri=run.data.tags["mlplatform.model_uri"],
                average_precision=run.data.metrics["holdout_average_precision"],
                beats_baseline=run.data.tags.get("mlplatform.beats_baseline") == "true",
            )
    return list(latest.values())


def cost_model(settings: Settings) -> CostModel:
    """The value and costs the threshold and expected value are computed with."""
    return CostModel(
        value_true_positive=settings.value_true_positive,
        cost_false_positive=settings.cost_false_positive,
    )


def decide(
    metrics: HoldoutMetrics,
    beats_prevalence: bool,
    comparison: BootstrapResult | None,
    smoke: SmokeResult,
    settings: Settings,
) -> Decision:
    """Apply the promotion rules (see the module docstring) and say why in one line."""
    checks = {
        "beats_prevalence_baseline": beats_prevalence,
        "average_precision_floor": metrics.average_precision >= settings.min_average_precision,
        "calibration_error_ceiling": metrics.ece <= settings.max_calibration_error,
        "beats_champion": comparison is None or comparison.lower > 0,
        "smoke_test": smoke.passed,
    }
    reasons = {
        "beats_prevalence_baseline": "beats the prevalence-only baseline"
        if beats_prevalence
        else "does not beat the prevalence-only baseline (average precision and Brier score)",
        "average_precision_floor": f"average precision {metrics.average_precision:.4f} "
        f"{'>=' if checks['average_precision_floor'] else '<'} floor "
        f"{settings.min_average_precision}",
        "calibration_error_ceiling": f"calibration error {metrics.ece:.4f} "
        f"{'<=' if checks['calibration_error_ceiling'] else '>'} ceiling "
        f"{settings.max_calibration_error}",
        "beats_champion": "no champion yet"
        if comparison is None
        else f"AP difference vs champion {comparison.mean_difference:+.4f}, "
        f"{comparison.confidence:.0%} lower bound {comparison.lower:+.4f} "
        f"{'>' if checks['beats_champion'] else '<='} 0",
        "smoke_test": f"smoke test: {smoke.detail}",
    }
    promote = all(checks.values())
    shown = reasons.values() if promote else [reasons[k] for k, ok in checks.items() if not ok]
    return Decision(promote, "; ".join(shown), checks)


class SmokeTest:
    """The registered model's files loaded in a fresh Python process with pickle disabled
    (MLflow's switch, plus an audit hook that fails any unpickling), scoring a sample. The
    process starts at once and imports the model libraries while this one registers the
    model; :meth:`load` hands it the downloaded model folder and the sample, and it runs
    while this process scores the holdout; :meth:`result` waits for it and compares. A
    context manager: leaving it stops a process still running and removes the sample."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="mlplatform-smoke-")
        self.rows = 0
        env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mlplatform.ml.smoke"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    def load(self, model_dir: Path, sample: pd.DataFrame) -> None:
        """Have the process load ``model_dir`` (an MLflow model folder) and score ``sample``."""
        sample_path = Path(self._folder.name) / "sample.parquet"
        sample.to_parquet(sample_path)
        self.rows = len(sample)
        request = {"model_dir": str(model_dir), "sample": str(sample_path)}
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()  # communicate() closes it
        except BrokenPipeError:  # the process died importing: result() reports its error
            pass

    def __enter__(self) -> SmokeTest:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()
        self._folder.cleanup()

    def result(
        self, expected: np.ndarray, budget_ms: float, timeout_seconds: float = 300
    ) -> SmokeResult:
        """Wait for the process (at most ``timeout_seconds``); pass when it reproduced
        ``expected`` (this process's probabilities of the sample) within budget."""
        try:
            stdout, stderr = self._process.communicate(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            detail = f"fresh process did not finish in {timeout_seconds:g} s"
            return SmokeResult(False, 0.0, 0.0, float("nan"), detail)
        if self._process.returncode != 0:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            return SmokeResult(False, 0.0, 0.0, float("nan"), f"fresh process failed: {last}")
        report = json.loads(stdout.strip().splitlines()[-1])
        difference = float(np.max(np.abs(np.asarray(report["proba"]) - expected)))
        problems = []
        if not difference <= SMOKE_TOLERANCE:
            problems.append(f"scores differ from this process by {difference:.2e}")
        if report["predict_ms"] > budget_ms:
            problems.append(f"{report['predict_ms']:.0f} ms > budget {budget_ms:.0f} ms")
        detail = (
            f"loaded in {report['load_seconds']:.2f} s without pickle, scored {self.rows} rows"
            f" in {report['predict_ms']:.1f} ms" + (f" ({'; '.join(problems)})" if problems else "")
        )
        return SmokeResult(
            not problems, report["load_seconds"], report["predict_ms"], difference, detail
        )


def elect_champion(
    client: MlflowClient,
    conn: duckdb.DuckDBPyConnection,
    settings: Settings,
    candidates: Sequence[Candidate],
    holdout: pd.DataFrame,
    dataset_version: str,
    actor: str,
    smoke_test: SmokeTest,
) -> Election:
    """Register the best candidate, compete it against the champion on ``holdout`` (rows
    with ``target``, ``card_id`` and every feature either model needs) and record the result.
    ``smoke_test`` is a started :class:`SmokeTest` (started early, its process imports
    meanwhile); it is handed the registered model.
    """
    if not candidates:
        raise ValueError(f"no candidate models were trained on dataset {dataset_version}")
    best = max(candidates, key=lambda c: c.average_precision)
    name = settings.model_name
    version = register_version(
        client, name, best.model_uri,
        tags={"mlplatform.family": best.family, "mlplatform.dataset_version": dataset_version},
    )  # fmt: skip
    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="mlplatform-model-") as folder:
        model_dir = download_model(uri, Path(folder))
        challenger = read_scoring_model(model_dir, uri)
        smoke_test.load(model_dir, holdout.head(SMOKE_ROWS)[list(challenger.feature_names)])
        # the fresh process loads and scores while this one scores the holdout
        proba, metrics = _scored(challenger, holdout, settings)
        champion_before = alias_version(client, name, CHAMPION)
        champion_metrics = comparison = None
        if champion_before is not None:
            champion = load_scoring_model(f"models:/{name}/{champion_before}")
            champion_proba, champion_metrics = _scored(champion, holdout, settings)
            comparison = paired_bootstrap_ap_difference(
                holdout["target"].to_numpy(dtype=int), proba, champion_proba,
                holdout["card_id"].to_numpy(), resamples=settings.bootstrap_resamples,
                confidence=settings.bootstrap_confidence,
            )  # fmt: skip
        smoke = smoke_test.result(proba[: smoke_test.rows], settings.smoke_latency_ms)
    decision = decide(metrics, best.beats_baseline, comparison, smoke, settings)
    champion_after = champion_before
    if decision.promote:
        set_champion(client, name, version)
        champion_after = version
    client.set_model_version_tag(
        name, version, "mlplatform.decision", "promoted" if decision.promote else "rejected"
    )
    client.set_model_version_tag(name, version, "mlplatform.reason", decision.reason[:4000])
    append_promotion_log(
        conn,
        model_name=name,
        decision="promoted" if decision.promote else "rejected",
        version=version,
        family=best.family,
        champion_before=champion_before,
        champion_after=champion_after,
        dataset_version=dataset_version,
        metrics=metrics,
        champion_metrics=champion_metrics,
        comparison=comparison,
        reason=decision.reason,
        actor=actor,
    )
    return Election(
        decision, best, version, champion_before, champion_after, metrics, champion_metrics,
        comparison, smoke, proba, feature_importances(challenger.estimator, challenger.spec),
    )  # fmt: skip


def _scored(
    model: ScoringModel, holdout: pd.DataFrame, settings: Settings
) -> tuple[np.ndarray, HoldoutMetrics]:
    """A model's probabilities on the holdout and its holdout metrics."""
    proba = model.predict_proba(holdout)[:, 1]
    metrics = holdout_metrics(
        holdout["target"].to_numpy(dtype=int), proba, model.threshold,
        holdout["card_id"].to_numpy(), settings.precision_at_k_cards, cost_model(settings),
    )  # fmt: skip
    return proba, metrics


def log_election(election: Election) -> None:
    """Record the competition in the active MLflow run: decision, versions, metrics."""
    decision = election.decision
    mlflow.set_tags({
        "mlplatform.decision": "promoted" if decision.promote else "rejected",
        "mlplatform.challenger_version": election.version,
        "mlplatform.champion_before": election.champion_before or "",
        "mlplatform.champion_after": election.champion_after or "",
        "mlplatform.challenger_family": election.challenger.family,
    })  # fmt: skip
    metrics = {f"challenger_{k}": float(v) for k, v in election.metrics.as_dict().items()}
    if election.champion_metrics is not None:
        metrics |= {
            f"champion_{k}": float(v) for k, v in election.champion_metrics.as_dict().items()
        }
    if election.comparison is not None:
        metrics |= {"ap_difference_mean": election.comparison.mean_difference,
                    "ap_difference_lower": election.comparison.lower,
                    "ap_difference_upper": election.comparison.upper}  # fmt: skip
    metrics |= {"smoke_load_seconds": election.smoke.load_seconds,
                "smoke_predict_ms": election.smoke.predict_ms}  # fmt: skip
    mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    mlflow.log_dict({"reason": decision.reason, "checks": decision.checks}, "decision.json")


def append_promotion_log(
    conn: duckdb.DuckDBPyConnection,
    *,
    model_name: str,
    decision: str,
    version: str | None,
    reason: str,
    actor: str,
    champion_before: str | None,
    champion_after: str | None,
    family: str | None = None,
    dataset_version: str | None = None,
    metrics: HoldoutMetrics | None = None,
    champion_metrics: HoldoutMetrics | None = None,
    comparison: BootstrapResult | None = None,
) -> None:
    """Append one decision to ``ml.promotion_log``."""
    conn.execute(
        f"INSERT INTO {PROMOTION_LOG} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            datetime.now(),
            model_name,
            decision,
            version,
            family,
            champion_before,
            champion_after,
            dataset_version,
            metrics.average_precision if metrics else None,
            metrics.ece if metrics else None,
            champion_metrics.average_precision if champion_metrics else None,
            comparison.lower if comparison else None,
            comparison.mean_difference if comparison else None,
            reason,
            actor,
        ],
    )


def rollback(
    client: MlflowClient, conn: duckdb.DuckDBPyConnection, model_name: str, reason: str, actor: str
) -> str:
    """Move ``champion`` back to the ``previous`` version (which then loses that alias);
    returns the version now champion."""
    current = alias_version(client, model_name, CHAMPION)
    previous = alias_version(client, model_name, PREVIOUS)
    if previous is None:
        raise ChampionError(f"{model_name} has no previous champion to roll back to")
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.delete_registered_model_alias(model_name, PREVIOUS)
    append_promotion_log(
        conn, model_name=model_name, decision="rollback", version=previous, reason=reason,
        actor=actor, champion_before=current, champion_after=previous,
    )  # fmt: skip
    return previous


def require_version(client: MlflowClient, model_name: str, version: str) -> None:
    """Raise :class:`ChampionError` (listing the versions) unless ``version`` is registered."""
    known = {str(v.version) for v in client.search_model_versions(f"name = '{model_name}'")}
    if version not in known:
        raise ChampionError(
            f"{model_name} has no version {version}; versions: {sorted(known, key=int)}"
        )


def promote_manually(
    client: MlflowClient,
    conn: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str,
    reason: str,
    actor: str,
) -> str | None:
    """Make ``version`` the champion by hand (the old one becomes ``previous``); returns the
    old champion."""
    require_version(client, model_name, version)
    before = set_champion(client, model_name, version)
    append_promotion_log(
        conn, model_name=model_name, decision="manual_promotion", version=version,
        reason=reason, actor=actor, champion_before=before, champion_after=version,
    )  # fmt: skip
    return before
