"""Retraining does not stall the daily runs: a candidate trains from the master table's
Parquet snapshot without the `warehouse` pool and without opening the warehouse, while the
champion step (which writes `ml.promotion_log`) keeps the pool."""

from __future__ import annotations

import dagster as dg
import pytest

from mlplatform.assets.models import candidate_asset
from mlplatform.definitions import build_resources, defs
from mlplatform.ml.master_table import current_dataset
from mlplatform.settings import get_settings
from tests.conftest import TRAINING_ENV, PlatformHome, build_training_data, warehouse_held_open


def test_candidates_hold_no_pool_and_every_other_training_step_keeps_the_warehouse_pool() -> None:
    pools = {a.key.to_user_string(): a.op.pool for a in defs.assets}
    candidates = {k: v for k, v in pools.items() if k.startswith("candidate_")}
    assert set(candidates) == {f"candidate_{f}" for f in get_settings().candidate_families}
    assert set(candidates.values()) == {None}
    assert {k: v for k, v in pools.items() if k not in candidates} == dict.fromkeys(
        set(pools) - set(candidates), "warehouse"
    )


def test_a_candidate_trains_while_another_process_holds_the_warehouse(
    platform_home: PlatformHome, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TRAINING_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLPLATFORM_WAREHOUSE_LOCK_TIMEOUT_SECONDS", "0")  # opening would fail
    settings = get_settings()
    build_training_data(platform_home.home)
    candidate = candidate_asset("logistic_regression")

    with warehouse_held_open(platform_home.warehouse):  # as a daily run writing would
        result = dg.materialize([candidate], instance=instance, resources=build_resources(settings))

    assert result.success
    (materialization,) = result.asset_materializations_for_node(candidate.op.name)
    dataset = current_dataset(settings.datasets_dir)
    assert materialization.metadata["dataset_version"].value == dataset.version
    assert materialization.metadata["holdout_average_precision"].value > 0
