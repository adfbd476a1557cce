"""Quiet, truthful output: the documented commands print no warning a user cannot act on."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import BIN, REPO, PlatformHome, noise_lines, simulate_landing

pytestmark = pytest.mark.e2e


def test_dg_launch_of_a_partition_prints_no_warning(platform_home: PlatformHome) -> None:
    simulate_landing(platform_home.landing, days=1)
    completed = subprocess.run(
        [str(BIN / "dg"), "launch", "--assets", "raw_transactions", "--partition", "2025-01-01"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    assert "RUN_SUCCESS" in completed.stdout + completed.stderr
    assert noise_lines(completed.stdout + completed.stderr) == []


# A model's life in the platform's own functions, in a fresh process started in the repo (a
# uv project, as `mlplatform demo` is): log, register twice, download, as training does.
MODEL_LIFE = """
from mlplatform.library_output import quiet_library_output
quiet_library_output()
import sys, tempfile
import mlflow, numpy as np, pandas as pd
from mlplatform.ml.models import TrainingPlan, model_inputs, train_candidate
from mlplatform.ml.registry import configure, download_model, log_scoring_model, register_version

rng = np.random.default_rng(1)
frame = pd.DataFrame({"card_id": [f"c{i % 100}" for i in range(2000)],
                      "amount": rng.gamma(2.0, 30.0, 2000)})
frame["target"] = (rng.random(2000) < frame["amount"] / 200).astype(int)
train = frame["card_id"].str[1:].astype(int) < 70
inputs = model_inputs(frame[train], frame[~train], ["amount"])
model = train_candidate("logistic_regression", inputs, TrainingPlan(1, 2, 2000),
                        lambda y, p: 0.5).model
client = configure(f"sqlite:///{sys.argv[1]}/mlflow.db")
experiment = client.create_experiment("quiet", artifact_location=f"{sys.argv[1]}/artifacts")
with mlflow.start_run(experiment_id=experiment):
    uri = log_scoring_model(model)
for _ in range(2):
    version = register_version(client, "quiet-model", uri, {"purpose": "test"})
download_model(f"models:/quiet-model/{version}", tempfile.mkdtemp())
print("version", version)
"""


def _model_life(tmp_path, **environment: str) -> str:
    import os
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", MODEL_LIFE, str(tmp_path)], cwd=REPO, capture_output=True,
        text=True, timeout=300, env={**os.environ, **environment},
    )  # fmt: skip
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    return completed.stdout + completed.stderr


def test_logging_registering_and_downloading_a_model_prints_no_library_chatter(tmp_path) -> None:
    output = _model_life(tmp_path)
    assert "version 2" in output
    assert noise_lines(output) == []


def test_the_silenced_chatter_is_what_mlflow_prints_by_default(tmp_path) -> None:
    """The check above can fail: with MLflow's own defaults the same life is noisy."""
    output = _model_life(
        tmp_path, MLFLOW_LOGGING_LEVEL="INFO", MLFLOW_UV_AUTO_DETECT="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="true",
    )  # fmt: skip
    assert any("detected uv project" in line.lower() for line in noise_lines(output)), output
