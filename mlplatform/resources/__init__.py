"""Dagster resources: the warehouse, the landing zone, the MLflow store and the notifier."""

from mlplatform.resources.alerts import NotifierResource
from mlplatform.resources.landing import LandingZoneResource
from mlplatform.resources.mlflow import MlflowResource
from mlplatform.resources.warehouse import WarehouseResource

__all__ = ["LandingZoneResource", "MlflowResource", "NotifierResource", "WarehouseResource"]
