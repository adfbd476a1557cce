"""The champion smoke test's fresh process: ``python -m mlplatform.ml.smoke``.

Forbids unpickling (an audit hook fails any pickle class lookup), imports the model libraries,
then reads one JSON line from stdin naming the registered model's files (the MLflow model
folder) and a Parquet sample; loads the model, scores the sample and prints one JSON line:
load seconds, predict milliseconds and the probabilities. Started before the model is
registered, it imports while the caller registers and downloads; it imports no MLflow.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _forbid_unpickling(event: str, args: tuple) -> None:
    if event == "pickle.find_class":
        raise RuntimeError(f"unpickling attempted: {args}")


def main() -> None:
    """Import, wait for the request, load, score, print the report."""
    sys.addaudithook(_forbid_unpickling)
    import pandas as pd

    from mlplatform.ml.artifacts import read_scoring_model

    request = json.loads(sys.stdin.readline())
    sample = pd.read_parquet(request["sample"])
    start = time.perf_counter()
    model = read_scoring_model(Path(request["model_dir"]))
    loaded = time.perf_counter()
    model.predict_proba(sample.head(1))  # warm-up: first-call costs are not latency
    begin = time.perf_counter()
    proba = model.predict_proba(sample)[:, 1]
    predict_ms = (time.perf_counter() - begin) * 1000
    print(json.dumps({"load_seconds": loaded - start, "predict_ms": predict_ms,
                      "proba": proba.tolist()}))  # fmt: skip


if __name__ == "__main__":
    main()
