"""The REST service's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Latency buckets in seconds: a few ms (the target) up to today's slow feature path.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """Requests by path and status, predictions by model role, latencies, model and store."""

    def __init__(
        self,
        model_versions: Callable[[], dict[str, str | None]],
        store_age_hours: Callable[[], float | None],
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlplatform_requests", "HTTP requests by route and status.", ["path", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.predictions = Counter(
            "mlplatform_predictions", "Transactions scored, by model role and version.",
            ["role", "model_version"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mlplatform_request_seconds", "HTTP request latency by route.", ["path"],
            buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.stage = Histogram(
            "mlplatform_predict_stage_seconds",
            "A prediction request's stages: parse, validation, state, features, model, log.",
            ["stage"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.routes = Counter(
            "mlplatform_feature_routes",
            "Prediction requests by the route of each stage: rows (rules and curation) and "
            "features, Python's or DuckDB's (a fallback, with why).",
            ["stage", "route", "reason"], registry=self.registry,
        )  # fmt: skip
        version = Gauge(
            "mlplatform_model_version", "Registered model version serving, by role.", ["role"],
            registry=self.registry,
        )  # fmt: skip
        for role in ("champion", "challenger"):
            version.labels(role).set_function(
                lambda role=role: float(model_versions().get(role) or "nan")
            )
        age = Gauge(
            "mlplatform_store_age_hours", "Age of the online store file (hours).",
            registry=self.registry,
        )  # fmt: skip
        age.set_function(lambda: float("nan") if (hours := store_age_hours()) is None else hours)
