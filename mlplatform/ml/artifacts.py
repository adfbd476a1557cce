"""A logged scoring model's files read back without MLflow and without pickle.

:func:`mlplatform.ml.registry.log_scoring_model` writes an MLflow model folder: LightGBM
boosters in LightGBM's native text format, scikit-learn pipelines through skops, and the
calibrator, threshold and feature spec in the MLmodel file's metadata. :func:`read_scoring_model`
reads such a folder itself: a skops file loads only when every type it holds is on this
module's allow-list (decided here, never by the model file), and nothing is unpickled. It
imports no MLflow, so the champion's smoke test can load a model in a fresh process quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import skops.io
import yaml

from mlplatform.ml.models import Calibrator, FeatureSpec, ScoringModel

METADATA_KEY = "mlplatform"
#: Types a skops file may hold beyond skops' own defaults (found with skops'
#: ``get_untrusted_types`` on every family's pipeline).
TRUSTED_SKOPS_TYPES = frozenset({"numpy.dtype", "sklearn.tree._tree.Tree"})


class ModelLoadError(RuntimeError):
    """A model cannot be loaded safely (not ours, unknown format or untrusted types)."""


def read_scoring_model(folder: Path, source: str | None = None) -> ScoringModel:
    """The scoring model in the MLflow model ``folder`` (``source`` names it in errors)."""
    source = source or str(folder)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    meta = (mlmodel.get("metadata") or {}).get(METADATA_KEY)
    if meta is None:
        raise ModelLoadError(f"{source} was not logged by mlplatform (no metadata)")
    return ScoringModel(
        family=meta["family"],
        spec=FeatureSpec.from_dict(meta["spec"]),
        estimator=_load_estimator(folder, mlmodel.get("flavors", {}), source),
        calibrator=Calibrator.from_dict(meta["calibrator"]),
        threshold=float(meta["threshold"]),
        params=meta["params"],
    )


def _load_estimator(folder: Path, flavors: dict[str, Any], source: str) -> Any:
    if "lightgbm" in flavors:
        flavor = flavors["lightgbm"]
        if flavor.get("model_class") != "lightgbm.basic.Booster":
            raise ModelLoadError(f"{source}: only native LightGBM boosters are loaded")
        return lgb.Booster(model_file=str(folder / flavor["data"]))
    flavor = flavors.get("sklearn", {})
    if flavor.get("serialization_format") != "skops":
        raise ModelLoadError(f"{source}: not a skops model; pickled models are never loaded")
    path = folder / flavor["pickled_model"]
    untrusted = set(skops.io.get_untrusted_types(file=path))
    if not untrusted <= TRUSTED_SKOPS_TYPES:
        raise ModelLoadError(
            f"{source}: the skops file holds types outside the allow-list: "
            f"{sorted(untrusted - TRUSTED_SKOPS_TYPES)}"
        )
    return skops.io.load(path, trusted=sorted(untrusted))
