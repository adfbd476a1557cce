"""MLflow tracking and registry as a Dagster resource (dagster-mlflow is not needed).

MLflow and the model libraries are imported when the resource is used, not when it is
defined: every Dagster process loads the code location, and only training needs them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote

import dagster as dg

if TYPE_CHECKING:
    import mlflow
    from mlflow import MlflowClient


class MlflowResource(dg.ConfigurableResource):
    """Where runs and models go: by default SQLite and an artifact folder in the data home."""

    tracking_uri: str
    artifact_location: str | None = None
    experiment: str = "mlplatform"
    model_name: str = "mlplatform-transactions"
    ui_url: str = "http://127.0.0.1:5000"

    def client(self) -> MlflowClient:
        """A client of the tracking and registry store (and MLflow's fluent API set to it)."""
        from mlplatform.ml.registry import configure

        return configure(self.tracking_uri)

    def experiment_id(self) -> str:
        """The experiment's id, created if missing."""
        from mlplatform.ml.registry import ensure_experiment

        return ensure_experiment(self.client(), self.experiment, self.artifact_location)

    @contextmanager
    def run(
        self, context: dg.AssetExecutionContext, tags: dict[str, str]
    ) -> Iterator[mlflow.ActiveRun]:
        """One MLflow run for this asset materialization, tagged with the Dagster run id,
        the asset key and the code version (plus ``tags``)."""
        import mlflow

        from mlplatform.ml.registry import code_version

        experiment_id = self.experiment_id()
        asset = context.asset_key.to_user_string()
        all_tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": asset,
            "mlplatform.code_version": code_version(),
            **tags,
        }
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=f"{asset}-{context.run.run_id[:8]}", tags=all_tags
        ) as active:
            yield active

    def ui_base(self) -> str:
        """The MLflow UI: the tracking server itself when there is one, else ``ui_url``
        (``make mlflow-ui`` serves the local store there)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return self.ui_url.rstrip("/")

    def run_url(self, experiment_id: str, run_id: str, artifacts: str | None = None) -> str:
        """The run's page in the MLflow UI (its ``artifacts`` folder's view, if given)."""
        page = f"{self.ui_base()}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"{page}/artifacts/{artifacts}" if artifacts else page

    def run_link(self, run: mlflow.entities.Run, artifacts: str | None = None) -> dg.MetadataValue:
        """:meth:`run_url` of ``run`` as asset metadata."""
        return dg.MetadataValue.url(
            self.run_url(run.info.experiment_id, run.info.run_id, artifacts)
        )

    def model_version_link(self, version: str) -> dg.MetadataValue:
        """The registered model version's page in the MLflow UI."""
        return dg.MetadataValue.url(
            f"{self.ui_base()}/#/models/{quote(self.model_name, safe='')}/versions/{version}"
        )
