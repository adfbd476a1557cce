# The two commands: `make demo` (set up, run the pipeline on synthetic data), `make test`.
UV_VERSION := 0.13.8
VENV := .venv
UV := $(VENV)/bin/uv
export DAGSTER_HOME ?= $(CURDIR)/.mlplatform/dagster

.PHONY: setup demo test test-fast lint ui mlflow-ui bench clean

$(UV):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv==$(UV_VERSION)

# Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set (CI, images) every
# process would otherwise compile what it imports (a run worker, a server, the CLI: ~4 s each).
setup: $(UV)
	$(UV) sync --frozen --python $(VENV)/bin/python --compile-bytecode
	$(VENV)/bin/python -m compileall -q mlplatform
	mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml || true

demo: setup
	$(VENV)/bin/mlplatform demo

# Two workers, a module at a time each, in the order tests/conftest.py gives (longest first);
# the 25 slowest tests are printed at the end of every run.
PYTEST := $(VENV)/bin/pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

test: setup
	$(PYTEST)

# The edit-run loop: everything but the end-to-end tests (`-m e2e`), under 3 minutes.
test-fast: setup
	$(PYTEST) -m "not e2e"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

ui: setup
	$(VENV)/bin/dagster dev -w workspace.yaml

# The MLflow UI on the platform's tracking store (asset metadata links here:
# MLPLATFORM_MLFLOW_UI_URL, default http://127.0.0.1:5000). One worker: a local UI, 2 cores.
mlflow-ui: setup
	$(VENV)/bin/mlflow ui --port 5000 --workers 1 --backend-store-uri \
		"$$($(VENV)/bin/python -c 'from mlplatform.settings import get_settings; print(get_settings().tracking_uri)')"

bench: setup
	$(VENV)/bin/python bench/ingest.py

clean:
	rm -rf .mlplatform
