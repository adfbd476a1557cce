"""What the libraries under the platform print: only what a user can act on."""

import os

# Defaults only: a value set in the environment wins.
LIBRARY_ENVIRONMENT = {
    # A progress bar per model download, drawn into every run log that loads a model.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow's INFO lines ("Detected uv project", database migrations) say nothing to act on.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # Every logged model pins its requirements (`mlplatform==<version>`): looking for a uv
    # project (and saying "Detected uv project") on each one is work and noise for nothing.
    "MLFLOW_UV_AUTO_DETECT": "false",
    # "View run ... at: http://..." after every run on a tracking server: asset metadata
    # links to the run instead.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def quiet_library_output() -> None:
    """Set the libraries' output defaults for this process (before they are imported).

    MLflow's "Successfully registered model" / "Created version" lines are printed, not
    logged, by ``mlflow.register_model``: the platform registers through the client
    (:func:`mlplatform.ml.registry.register_version`) instead."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
