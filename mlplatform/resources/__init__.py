"""Dagster resources: the warehouse and the landing zone."""

from mlplatform.resources.landing import LandingZoneResource
from mlplatform.resources.warehouse import WarehouseResource

__all__ = ["LandingZoneResource", "WarehouseResource"]
