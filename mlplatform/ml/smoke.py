"""The champion smoke test's fresh process: ``python -m mlplatform.ml.smoke MODEL_DIR SAMPLE``.

Loads the registered model's files (the MLflow model folder) with unpickling forbidden (an
audit hook fails any pickle class lookup), scores the Parquet sample and prints one JSON
line: load seconds, predict milliseconds and the probabilities. It imports no MLflow, so the
process is up in the time the model's own libraries take to import.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _forbid_unpickling(event: str, args: tuple) -> None:
    if event == "pickle.find_class":
        raise RuntimeError(f"unpickling attempted: {args}")


def main(model_dir: str, sample_path: str) -> None:
    """Load, score, print the report."""
    import pandas as pd

    sys.addaudithook(_forbid_unpickling)
    from mlplatform.ml.artifacts import read_scoring_model

    sample = pd.read_parquet(sample_path)
    start = time.perf_counter()
    model = read_scoring_model(Path(model_dir))
    loaded = time.perf_counter()
    model.predict_proba(sample.head(1))  # warm-up: first-call costs are not latency
    begin = time.perf_counter()
    proba = model.predict_proba(sample)[:, 1]
    predict_ms = (time.perf_counter() - begin) * 1000
    print(json.dumps({"load_seconds": loaded - start, "predict_ms": predict_ms,
                      "proba": proba.tolist()}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
