"""Compute cost of every asset materialization, as metadata and in ``monitoring.compute_cost``.

Apply :func:`with_compute_cost` between ``@dg.asset(...)`` and the function (the one line every
asset of the platform carries)::

    @dg.asset(...)
    @with_compute_cost
    def my_asset(context, warehouse): ...

The asset's computation is measured (:class:`~mlplatform.monitoring.compute_cost.CostMeter`)
and its materialization gets ``compute_seconds``, ``cpu_seconds`` and ``peak_mb`` (plotted over
time in the UI). The figures, with the run, the partition and the materialization's
``dagster/row_count``, are written as a file under ``MLPLATFORM_HOME/compute_cost/``: no
warehouse needed, so an asset outside the warehouse pool (a candidate training from the
Parquet snapshot) records its cost without waiting for the pool. Each asset of the pool
``warehouse`` then loads every pending file into the table after its own work, while it holds
the pool anyway; loading is idempotent (key: run, asset, partition). Recording never fails a
materialization: a problem is logged as a warning.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from mlplatform.monitoring.compute_cost import (
    CostMeter,
    CostRecord,
    cost_record,
    load_compute_cost,
    write_cost_record,
)
from mlplatform.resources.warehouse import warehouse_pool
from mlplatform.settings import get_settings

#: The pool of the warehouse-writing assets (none on a DuckLake: any of them may write).
WAREHOUSE_POOL = warehouse_pool(get_settings())
F = TypeVar("F", bound=Callable[..., object])


def with_compute_cost(compute: F) -> F:
    """``compute`` (an asset function) measured, its cost added to the materialization's
    metadata and recorded for ``monitoring.compute_cost``."""

    @functools.wraps(compute)
    def measured(*args: object, **kwargs: object) -> object:
        try:
            context = dg.AssetExecutionContext.get()
        except dg.DagsterInvariantViolationError:  # called as a plain function: nothing to record
            return compute(*args, **kwargs)
        with CostMeter() as meter:
            result = compute(*args, **kwargs)
        cost = meter.cost
        context.add_asset_metadata(
            {
                "compute_seconds": round(cost.seconds, 3),
                "cpu_seconds": round(cost.cpu_seconds, 3),
                **({"peak_mb": round(cost.peak_mb, 1)} if cost.peak_mb is not None else {}),
            }
        )
        try:
            _record(context, cost_record(
                cost, run_id=context.run.run_id, asset=context.asset_key.to_user_string(),
                partition=_partition(context), rows=_row_count(result),
            ))  # fmt: skip
        except Exception as error:  # the asset's own work is done and valid: keep it
            context.log.warning(f"compute cost not recorded: {error!r}")
        return result

    measured.records_compute_cost = True  # type: ignore[attr-defined] (see tests)
    return measured  # type: ignore[return-value]


def _record(context: dg.AssetExecutionContext, record: CostRecord) -> None:
    """Write the record; a warehouse-writing asset loads the pending records."""
    folder = get_settings().compute_cost_dir
    write_cost_record(folder, record)
    if context.op_def.pool == WAREHOUSE_POOL and hasattr(context.resources, "warehouse"):
        with context.resources.warehouse.connection() as conn:
            loaded = load_compute_cost(conn, folder)
        context.log.debug(f"{loaded} compute-cost records loaded into monitoring.compute_cost")


def _partition(context: dg.AssetExecutionContext) -> str | None:
    """The run's partition key, ``first..last`` for a range of several, None when the asset
    is not partitioned (even in a partitioned run)."""
    if context.assets_def.partitions_def is None:
        return None
    if context.has_partition_key:
        return context.partition_key
    if not context.has_partition_key_range:
        return None
    keys = context.partition_key_range
    return keys.start if keys.start == keys.end else f"{keys.start}..{keys.end}"


def _row_count(result: object) -> int | None:
    """The ``dagster/row_count`` the asset reported, when it did."""
    metadata = getattr(result, "metadata", None) or {}
    value = metadata.get("dagster/row_count")
    value = getattr(value, "value", value)
    return int(value) if isinstance(value, int) else None
