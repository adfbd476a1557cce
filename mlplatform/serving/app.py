"""The REST service (``mlplatform serve``): the champion over HTTP, with online features.

``POST /v1/predict`` scores transactions in the contract's canonical columns; ``GET
/v1/health`` (open) and ``/v1/health/ready`` (503 when not ready) are for probes; ``GET
/v1/model`` says what is serving; ``GET /metrics`` is Prometheus' text format; OpenAPI at
``/docs``. Every other route needs an API key (``Authorization: Bearer KEY`` or ``X-API-Key``).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlplatform.contract import CANONICAL_COLUMNS
from mlplatform.serving.config import ServiceConfig
from mlplatform.serving.metrics import ServiceMetrics
from mlplatform.serving.online import InvalidTransactions, RowError
from mlplatform.serving.service import Role, Scored, Service, UnprocessableTransactions
from mlplatform.serving.shared_state import StateUnavailable
from mlplatform.settings import get_settings
from mlplatform.warehouse.pii import mask_card_like_digits

logger = logging.getLogger(__name__)
access = logging.getLogger("mlplatform.serving.access")

#: Any JSON scalar: the landing rules (the same online as for files) judge the values.
Scalar = str | float | int | None


def _column_description(name: str) -> str:
    required, pii = CANONICAL_COLUMNS[name]
    facts = ["required" if required else "optional"]
    if pii:
        facts.append(f"PII ({pii}), never logged")
    return ", ".join(facts)


Transaction = create_model(
    "Transaction",
    __config__=ConfigDict(extra="forbid"),
    __doc__="One transaction in the contract's canonical columns (as in a landing file).",
    **{
        name: (Scalar, Field(default=None, description=_column_description(name)))
        for name in CANONICAL_COLUMNS
    },
)


class PredictRequest(BaseModel):
    transactions: list[Transaction] = Field(  # type: ignore[valid-type]
        min_length=1, description="One or more transactions (at most MLPLATFORM_MAX_BATCH)."
    )


class Prediction(BaseModel):
    transaction_id: str
    score: float = Field(description="Calibrated probability of the positive class.")
    decision: bool = Field(description="score >= the model's threshold.")
    model_version: str
    role: Role = Field(description="The model that answered: champion or canary.")


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class ErrorItem(BaseModel):
    index: int | None = Field(None, description="The transaction's position in the request.")
    field: str | None = Field(None, description="The canonical column (or request part).")
    rule: str
    detail: str


class ErrorResponse(BaseModel):
    errors: list[ErrorItem]


class Health(BaseModel):
    live: bool
    ready: bool = Field(
        description="A model is loaded, the store is young enough and the online state serves."
    )
    model_loaded: bool
    model_version: str | None
    store_age_hours: float | None
    max_store_age_hours: float
    online_state: str = Field(description="`memory` or the Redis URL (no password).")
    online_state_error: str | None = Field(
        description="Why the shared online state cannot serve now (not ready)."
    )
    last_reload_error: str | None


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    version: str
    family: str
    dataset_version: str | None
    threshold: float
    holdout_metrics: dict[str, float]
    features: list[str]


class ModelResponse(ModelInfo):
    challenger: ModelInfo | None = Field(description="The registry's challenger, when set.")
    challenger_mode: str


class ApiError(Exception):
    """An error answered as ``{"errors": [...]}`` with an HTTP status."""

    def __init__(
        self, status: int, errors: list[ErrorItem], headers: dict[str, str] | None = None
    ) -> None:
        self.status, self.errors, self.headers = status, errors, headers
        super().__init__(errors)


def _row_error(error: RowError) -> ErrorItem:
    # A rule's detail may quote the value: never a card number's.
    detail = "the card number breaks this rule" if error.field == "card_number" else error.detail
    return ErrorItem(
        index=error.index, field=error.field, rule=error.rule, detail=mask_card_like_digits(detail)
    )


def _validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[ErrorItem]:
    """Pydantic's errors, one per transaction and field, without the input they quote (it
    may be a card number)."""
    items: dict[tuple[int | None, str], ErrorItem] = {}
    for error in errors:
        location = [part for part in error["loc"] if part != "body"]
        index = next((part for part in location if isinstance(part, int)), None)
        names = [str(part) for part in location if not isinstance(part, int)]
        if index is not None and len(names) > 2:  # a member of the scalar union failed
            rule, detail = "invalid_type", "should be a string, a number or null"
        else:
            rule, detail = error["type"], mask_card_like_digits(error["msg"])
        field = names[1] if index is not None and len(names) > 1 else (names or ["body"])[-1]
        items.setdefault(
            (index, field), ErrorItem(index=index, field=field, rule=rule, detail=detail)
        )
    return list(items.values())


async def get_service(request: Request) -> Service:
    """The app's service (a dependency of the routes that use it; async: FastAPI runs a
    plain function in its thread pool, a hop per dependency and request)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def _errors_response(error: ApiError) -> JSONResponse:
    body = ErrorResponse(errors=error.errors).model_dump()
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def create_app(config: ServiceConfig) -> FastAPI:
    """The service for ``config``: loads the champion (raises
    :class:`~mlplatform.serving.model.NoModelError` without one) and opens the store."""
    service = Service(config)
    metrics = ServiceMetrics(
        lambda: {
            "champion": service.models.champion.version,
            "challenger": c.version if (c := service.models.challenger) else None,
        },
        lambda: service.health()["store_age_hours"],
    )
    keys = [key.encode() for key in config.api_keys]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.stop()

    app = FastAPI(
        title="mlplatform",
        summary="The champion model over REST, with online features.",
        lifespan=lifespan,
    )
    app.state.service = service

    async def require_key(request: Request) -> None:
        """A valid API key (Bearer or X-API-Key), compared in constant time, when any is
        configured."""
        if not keys:
            return
        bearer = request.headers.get("authorization", "")
        given = [request.headers.get("x-api-key", "")]
        if bearer[:7].lower() == "bearer ":
            given.append(bearer[7:].strip())
        valid = False
        for candidate in given:
            for key in keys:
                valid |= hmac.compare_digest(candidate.encode(), key)
        if not valid:
            detail = "send a valid key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            raise ApiError(
                401,
                [ErrorItem(field="authorization", rule="invalid_api_key", detail=detail)],
                {"WWW-Authenticate": "Bearer"},
            )

    Authorized = Depends(require_key)
    errors = {401: {"model": ErrorResponse}}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _errors_response(error)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        return _errors_response(ApiError(422, _validation_errors(error.errors())))

    app.add_middleware(CountAndTime, metrics=metrics)

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        dependencies=[Authorized],
        responses={**errors, **{s: {"model": ErrorResponse} for s in (413, 422, 503)}},
    )
    async def predict(body: PredictRequest, request: Request, service: ServiceDep) -> Response:
        """Scores in the request's order, each by the champion or (canary) the challenger."""
        # On the event loop, not in FastAPI's thread pool: a process scores one request at a
        # time anyway (Service.predict holds its lock throughout, the Redis round trips
        # included), and the hop to a thread and back cost more than the scoring's model.
        parse_ms = (time.perf_counter() - request.state.received) * 1000
        if len(body.transactions) > config.max_batch:
            detail = f"{len(body.transactions)} transactions; at most {config.max_batch}"
            too_large = ErrorItem(field="transactions", rule="batch_too_large", detail=detail)
            raise ApiError(413, [too_large])
        transactions = [t.model_dump(exclude_none=True) for t in body.transactions]
        try:
            scored = service.predict(transactions, request.state.request_id)
        except InvalidTransactions as error:
            raise ApiError(422, [_row_error(e) for e in error.errors]) from error
        except StateUnavailable as error:
            logger.warning("request %s: %s", request.state.request_id, error)
            unavailable = ErrorItem(rule="online_state_unavailable", detail=str(error))
            raise ApiError(503, [unavailable], {"Retry-After": "1"}) from error
        except UnprocessableTransactions as error:
            message = mask_card_like_digits(str(error.__cause__))[:500]
            logger.warning("request %s: %s: %s", request.state.request_id, error, message)
            unprocessable = ErrorItem(rule="unprocessable_transactions", detail=str(error))
            raise ApiError(422, [unprocessable]) from error
        _observe(metrics, scored, parse_ms)
        route = "; ".join(f"{stage} on duckdb: {why}" for stage, why in scored.fallbacks)
        timing = (
            f"parse;dur={parse_ms:.3f}, validation;dur={scored.validation_ms:.3f}, "
            f"state;dur={scored.state_ms:.3f}, "
            f"features;dur={scored.features_ms:.3f}, model;dur={scored.model_ms:.3f}, "
            f"log;dur={scored.log_ms:.3f}, route;desc={json.dumps(route or 'python')}"
        )
        # PredictResponse's shape (the OpenAPI schema), written directly: FastAPI would
        # validate the model it is given again before serialising it.
        payload = json.dumps({"predictions": [asdict(answer) for answer in scored.answers]})
        return Response(payload, media_type="application/json", headers={"Server-Timing": timing})

    @app.get("/v1/health", response_model=Health)
    def health(service: ServiceDep) -> Health:
        """Liveness (always 200 while the process answers) with the readiness facts."""
        return Health(**service.health())

    @app.get("/v1/health/ready", response_model=Health, responses={503: {"model": Health}})
    def ready(service: ServiceDep, response: Response) -> Health:
        """Readiness probe: 503 unless a model is loaded and the store is young enough."""
        state = Health(**service.health())
        if not state.ready:
            response.status_code = 503
        return state

    @app.get("/v1/model", response_model=ModelResponse, dependencies=[Authorized],
             responses=errors)  # fmt: skip
    def model(service: ServiceDep) -> ModelResponse:
        """The champion (version, dataset version, threshold, holdout metrics, features)
        and the challenger when the registry has one."""
        models = service.models
        challenger = models.challenger
        return ModelResponse(
            **models.champion.describe(),
            challenger=ModelInfo(**challenger.describe()) if challenger else None,
            challenger_mode=config.challenger_mode,
        )

    @app.get("/metrics", dependencies=[Authorized], response_class=Response, responses=errors)
    def prometheus() -> Response:
        """Prometheus' text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class CountAndTime:
    """Every HTTP request gets an id (``request.state.request_id``, the ``X-Request-ID``
    header), counts and latency by route and status, and an access log line naming the
    route (or ``other``), never the path or query string as sent: a client may put anything
    there. Plain ASGI: Starlette's ``@app.middleware("http")`` costs a task and a stream per
    request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        scope.setdefault("state", {}).update(request_id=request_id, received=started)
        status = 500  # unless a response starts

        async def respond(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, respond)
        finally:
            elapsed = time.perf_counter() - started
            path = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            client = scope.get("client")
            access.info(
                '%s - "%s %s" %d %.1f ms %s', client[0] if client else "-", scope["method"],
                path, status, elapsed * 1000, request_id,
            )  # fmt: skip


def log_to_stderr() -> None:
    """The service's log format (INFO and up, to stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")


def app_from_settings() -> FastAPI:
    """The service of the settings: each worker process of ``mlplatform serve --workers N``
    makes its own (uvicorn's app factory)."""
    log_to_stderr()
    return create_app(ServiceConfig.from_settings(get_settings()))


def _observe(metrics: ServiceMetrics, scored: Scored, parse_ms: float) -> None:
    for stage, ms in (
        ("parse", parse_ms),
        ("validation", scored.validation_ms),
        ("state", scored.state_ms),
        ("features", scored.features_ms),
        ("model", scored.model_ms),
        ("log", scored.log_ms),
    ):
        metrics.stage.labels(stage).observe(ms / 1000)
    for answer in scored.answers:
        metrics.predictions.labels(answer.role, answer.model_version).inc()
    fallbacks = dict(scored.fallbacks)
    for stage in ("rows", "features"):
        route = "duckdb" if stage in fallbacks else "python"
        metrics.routes.labels(stage, route, fallbacks.get(stage, "")).inc()
