"""What the libraries under the platform print: only what a user can act on."""

import os

# Defaults only: a value set in the environment wins.
LIBRARY_ENVIRONMENT = {
    # A progress bar per model download, drawn into every run log that loads a model.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow's INFO lines ("Detected uv project", database migrations) say nothing to act on.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def quiet_library_output() -> None:
    """Set the libraries' output defaults for this process (before they are imported)."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
