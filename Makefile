# The two commands: `make demo` (set up, run the pipeline on synthetic data), `make test`.
UV_VERSION := 0.13.8
VENV := .venv
UV := $(VENV)/bin/uv
export DAGSTER_HOME ?= $(CURDIR)/.mlplatform/dagster

.PHONY: setup demo test lint ui bench clean

$(UV):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv==$(UV_VERSION)

setup: $(UV)
	$(UV) sync --frozen --python $(VENV)/bin/python
	mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml || true

demo: setup
	$(VENV)/bin/mlplatform demo

test: setup
	$(VENV)/bin/pytest -n 2 --dist loadfile

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

ui: setup
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: setup
	$(VENV)/bin/python bench/ingest.py

clean:
	rm -rf .mlplatform
