"""The champion smoke test's fresh process: ``python -m mlplatform.ml.smoke MODEL_URI SAMPLE``.

Loads the model with unpickling forbidden (an audit hook fails any pickle class lookup),
scores the Parquet sample and prints one JSON line: load seconds, predict milliseconds and
the probabilities.
"""

from __future__ import annotations

import json
import sys
import time


def _forbid_unpickling(event: str, args: tuple) -> None:
    if event == "pickle.find_class":
        raise RuntimeError(f"unpickling attempted: {args}")


def main(model_uri: str, sample_path: str) -> None:
    """Load, score, print the report."""
    import pandas as pd

    sys.addaudithook(_forbid_unpickling)
    from mlplatform.ml.registry import load_scoring_model

    sample = pd.read_parquet(sample_path)
    start = time.perf_counter()
    model = load_scoring_model(model_uri)
    loaded = time.perf_counter()
    model.predict_proba(sample.head(1))  # warm-up: first-call costs are not latency
    begin = time.perf_counter()
    proba = model.predict_proba(sample)[:, 1]
    predict_ms = (time.perf_counter() - begin) * 1000
    print(json.dumps({"load_seconds": loaded - start, "predict_ms": predict_ms,
                      "proba": proba.tolist()}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
