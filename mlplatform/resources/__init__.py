"""Dagster resources: the warehouse, the landing zone and the MLflow store."""

from mlplatform.resources.landing import LandingZoneResource
from mlplatform.resources.mlflow import MlflowResource
from mlplatform.resources.warehouse import WarehouseResource

__all__ = ["LandingZoneResource", "MlflowResource", "WarehouseResource"]
