"""The challenger: the registry alias ``challenger``, which the REST service scores in shadow
or canary mode beside the champion (``mlplatform challenger VERSION`` / ``--clear``)."""

from __future__ import annotations

from mlflow import MlflowClient

from mlplatform.ml.champion import ChampionError, require_version
from mlplatform.ml.registry import CHAMPION, alias_version
from mlplatform.serving.model import CHALLENGER


def set_challenger(client: MlflowClient, model_name: str, version: str) -> str | None:
    """Point ``challenger`` at ``version``; returns the version it pointed at before.

    Raises :class:`~mlplatform.ml.champion.ChampionError` when the version does not exist or
    is the champion (a model cannot challenge itself).
    """
    require_version(client, model_name, version)
    if alias_version(client, model_name, CHAMPION) == version:
        raise ChampionError(
            f"version {version} of {model_name} is the champion: a challenger must be "
            "another version"
        )
    before = alias_version(client, model_name, CHALLENGER)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    return before


def clear_challenger(client: MlflowClient, model_name: str) -> str | None:
    """Delete the ``challenger`` alias; returns the version it pointed at (None: none set)."""
    before = alias_version(client, model_name, CHALLENGER)
    if before is not None:
        client.delete_registered_model_alias(model_name, CHALLENGER)
    return before
