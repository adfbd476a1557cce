"""The REST service's runtime: the models it follows, its online features, its prediction log.

:class:`Service` holds the champion (and the challenger) loaded from the registry, the
:class:`~mlplatform.serving.online.OnlineFeatures` over the online store, and the
:class:`~mlplatform.serving.prediction_log.PredictionLog`. A background thread follows the
registry's aliases and the store file: a new model is loaded and smoke-scored before it
replaces the old one in one reference swap, so a request scores on the models it started with.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from mlplatform.ml.registry import CHAMPION, alias_version, configure
from mlplatform.serving.config import ServiceConfig
from mlplatform.serving.model import CHALLENGER, ModelHandle, load_model, load_version
from mlplatform.serving.online import FeatureBatch, InvalidTransactions, OnlineFeatures
from mlplatform.serving.prediction_log import PredictionLog
from mlplatform.serving.shared_state import LOCK_MS, StateUnavailable

logger = logging.getLogger(__name__)

Role = Literal["champion", "canary", "shadow"]
#: Times a request is computed again when its cards' shared state changed meanwhile.
COMMIT_ATTEMPTS = 20


@dataclass(frozen=True)
class Models:
    """The models serving now; replaced as a whole, never changed in place."""

    champion: ModelHandle
    challenger: ModelHandle | None = None


@dataclass(frozen=True)
class Answer:
    """The prediction returned for one transaction."""

    transaction_id: str
    score: float
    decision: bool
    model_version: str
    role: Role


@dataclass(frozen=True)
class Scored:
    """A request's answers in its order, its id and its latency split (milliseconds)."""

    request_id: str
    answers: list[Answer]
    validation_ms: float
    features_ms: float
    model_ms: float
    #: The stages that took DuckDB's route, with why (see FeatureBatch.fallbacks).
    fallbacks: tuple[tuple[str, str], ...] = ()
    state_ms: float = 0.0  # reading (and committing) the cards' state
    log_ms: float = 0.0


class UnprocessableTransactions(ValueError):
    """Transactions the rules let through but the feature path cannot take (the client's
    input, not a fault of the service); the cause says why, its message never goes back."""


def canary_bucket(card_id: str) -> float:
    """Where a card pseudonym (hex) falls in [0, 1): the same card, the same bucket."""
    return int(card_id[:8], 16) / 2**32


def smoke_scored(handle: ModelHandle, sample: list[dict[str, Any]] | None) -> ModelHandle:
    """``handle`` once it scored ``sample`` (feature rows; None: one row of missing
    features) to probabilities; raises ValueError otherwise."""
    if sample is None:
        sample = [dict.fromkeys(handle.feature_names, np.nan)]
    scores = np.asarray(handle.score(pd.DataFrame(sample)), dtype=float)
    if scores.shape != (len(sample),) or not np.all((scores >= 0) & (scores <= 1)):
        raise ValueError(f"smoke test: version {handle.version} scored {scores[:5]!r}")
    return handle


class Service:
    """Scores transactions with the champion (and the challenger) on online features."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.log = PredictionLog(config.serving_dir)
        self.last_reload_error: str | None = None
        #: The last request's feature rows: a new model is smoke-scored on them.
        self._last_rows: list[dict[str, Any]] | None = None
        # OnlineFeatures takes one caller at a time, and a batch's features, scores, record
        # and log lines go together so that the next request sees it.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warmed: str | None = None  # the shared version whose cards were decoded ahead
        champion = smoke_scored(load_model(config.tracking_uri, config.model_name, CHAMPION), None)
        # In memory, every card read when the store is (re)attached: no request waits for its
        # card. In Redis, the cards' state is published there (by one process).
        shared = config.online_state != "memory"
        self.features = OnlineFeatures(
            config.store_path, config.registry, config.pii_key,
            max_amount=config.max_amount, preload=not shared, online_state=config.online_state,
        )  # fmt: skip
        try:
            challenger = self._challenger(None)
        except Exception as error:  # a broken challenger must not keep the champion down
            challenger, self.last_reload_error = None, f"challenger failed to load: {error}"
        self.models = Models(champion, challenger)
        assert self.features.info is not None
        logger.info("serving %s version %s", config.model_name, champion.version)
        if not shared:
            since = self.features.info.last_event_time
            restored = self.features.restore(self.log.answered_events(since))
            logger.info("%d logged transactions newer than the store restored", restored)
            gc.freeze()
            return
        try:  # every card decoded before the first request, as the memory state preloads
            self._sync_shared()
            # Another process may be publishing the store (a first start of several workers).
            self.features.shared.wait_for_version(LOCK_MS / 1000)
            self._warm()
        except StateUnavailable as error:  # not ready until Redis is back (health says why)
            logger.warning("online state: %s", error)
        gc.freeze()

    def _challenger(self, current: ModelHandle | None) -> ModelHandle | None:
        """The challenger the registry names now (``current`` when unchanged)."""
        client = configure(self.config.tracking_uri)
        version = alias_version(client, self.config.model_name, CHALLENGER)
        if version is None or (current is not None and current.version == version):
            return None if version is None else current
        handle = load_version(self.config.tracking_uri, self.config.model_name, version)
        return smoke_scored(handle, self._last_rows)

    def start(self) -> None:
        """Follow the registry and the store in a background thread."""
        self._thread = threading.Thread(target=self._follow, name="model-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self.features.close()

    def _follow(self) -> None:
        while not self._stop.wait(self.config.reload_seconds):
            try:
                self.reload()
            except Exception as error:  # the thread must outlive a registry hiccup
                logger.exception("reload failed")
                self.last_reload_error = f"reload: {error}"

    def reload(self) -> None:
        """Reopen a replaced store; load, smoke-score and swap in models the aliases moved
        to. A model that fails leaves the old one serving and its error in health."""
        errors = []
        # Read beside the serving state, without the lock: requests go on meanwhile and wait
        # for the swap only.
        with _collector_paused():
            loaded = self.features.load_store()
        if loaded is not None:
            with self._lock:
                began = time.perf_counter()
                retired = self.features.swap(loaded)
                held = (time.perf_counter() - began) * 1000
            retired.close()  # the old state is freed outside the lock
            gc.freeze()
            logger.info(
                "online store reopened: %s (read in %.0f ms beside the serving state; the "
                "swap held the request lock %.2f ms)", loaded.info, loaded.seconds * 1000, held,
            )  # fmt: skip
        if self.features.shared is not None:
            try:
                self._sync_shared()
                self._warm()
            except StateUnavailable as error:
                errors.append(f"online state: {error}")
        current = self.models
        client = configure(self.config.tracking_uri)
        champion = current.champion
        wanted = alias_version(client, self.config.model_name, CHAMPION)
        if wanted is None:
            errors.append(f"the registry has no champion; still serving version {champion.version}")
        elif wanted != champion.version:
            try:
                handle = load_version(self.config.tracking_uri, self.config.model_name, wanted)
                champion = smoke_scored(handle, self._last_rows)
            except Exception as error:
                errors.append(f"champion version {wanted} failed to load: {error}")
        try:
            challenger = self._challenger(current.challenger)
        except Exception as error:
            challenger = current.challenger
            errors.append(f"challenger failed to load: {error}")
        if champion is not current.champion or challenger is not current.challenger:
            self.models = Models(champion, challenger)
            logger.info(
                "now serving champion %s, challenger %s",
                champion.version, challenger.version if challenger else None,
            )  # fmt: skip
        self.last_reload_error = "; ".join(errors) or None

    def _warm(self) -> None:
        """Decode every stored card's state of a new shared version ahead of its requests
        (as the memory state preloads them): a card's first request then reads only what
        other processes added."""
        shared = self.features.shared
        version = None if shared is None else shared.version()
        if version is None or version == self._warmed:
            return
        began = time.perf_counter()
        warmed = shared.warm(version, self.features.stored_cards(), self._lock)
        self._warmed = version
        gc.freeze()
        logger.info(
            "online state version %s: %d cards decoded ahead in %.1f s", version, warmed,
            time.perf_counter() - began,
        )  # fmt: skip

    def _sync_shared(self) -> None:
        """Publish the store to the shared state when Redis lacks it (see
        :meth:`~mlplatform.serving.online.OnlineFeatures.sync_shared`)."""
        published = self.features.sync_shared(self.log.answered_events)
        if published is not None:
            logger.info(
                "online state version %s published to %s: %d cards, %d scored transactions "
                "carried, %d bytes in %.2f s", published.version, self.features.shared.url,
                published.cards, published.carried, published.bytes, published.seconds,
            )  # fmt: skip

    def predict(self, transactions: Sequence[Mapping[str, Any]], request_id: str) -> Scored:
        """Answers for ``transactions`` (canonical columns) in their order, logged per model
        that scored them under ``request_id``.

        Raises :class:`~mlplatform.serving.online.InvalidTransactions`, and
        :class:`~mlplatform.serving.shared_state.StateUnavailable` when the shared state
        cannot be used.
        """
        models = self.models  # this request's models, whatever a reload swaps in meanwhile
        with self._lock:
            for _ in range(COMMIT_ATTEMPTS):
                batch = self._compute(transactions)
                try:
                    answers, lines, model_ms = self._score(batch, models, request_id)
                except BaseException:
                    self.features.discard(batch)
                    raise
                committed = time.perf_counter()
                if self.features.record(batch):
                    break
            else:
                raise StateUnavailable(
                    f"the cards' online state changed under this request {COMMIT_ATTEMPTS} "
                    "times in a row; retry"
                )
            logged = time.perf_counter()
            self.log.append(lines)
            done = time.perf_counter()
            self._last_rows = batch.rows
        return Scored(
            request_id,
            answers,
            batch.validation_ms,
            batch.features_ms,
            model_ms,
            batch.fallbacks,
            batch.state_ms + (logged - committed) * 1000,
            (done - logged) * 1000,
        )

    def _compute(self, transactions: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        """The request's features; what the rules let through but the feature path cannot
        take is :class:`UnprocessableTransactions`."""
        try:
            return self.features.compute(transactions)
        except InvalidTransactions:
            raise
        except (ValueError, TypeError, KeyError, ArithmeticError, duckdb.Error) as error:
            raise UnprocessableTransactions(
                f"the transactions could not be scored ({type(error).__name__})"
            ) from error

    def _score(
        self, batch: FeatureBatch, models: Models, request_id: str
    ) -> tuple[list[Answer], list[dict[str, Any]], float]:
        """The answers of ``batch`` by the champion (and the challenger: shadow or canary),
        the prediction log's lines and the models' time (ms)."""
        mode = self.config.challenger_mode
        challenger = models.challenger if mode != "off" else None
        rows = batch.rows
        canary = np.zeros(len(rows), dtype=bool)
        if challenger is not None and mode == "canary":
            share = self.config.canary_share
            canary = np.array([canary_bucket(row["card_id"]) < share for row in rows])
        runs: list[tuple[ModelHandle, Role, np.ndarray, bool]] = [
            (models.champion, "champion", ~canary, True)
        ]
        if challenger is not None and mode == "canary":
            runs.append((challenger, "canary", canary, True))
        elif challenger is not None:
            runs.append((challenger, "shadow", np.ones(len(rows), dtype=bool), False))
        answers: list[Answer | None] = [None] * len(rows)
        lines = []
        model_ms = 0.0
        logged_at = datetime.now(UTC).isoformat()
        for handle, role, mask, returned in runs:
            if not mask.any():
                continue
            started = time.perf_counter()
            chosen = np.flatnonzero(mask)
            run_scores = handle.score_rows([rows[i] for i in chosen])
            elapsed = (time.perf_counter() - started) * 1000
            model_ms += elapsed
            for i, score in zip(chosen, run_scores, strict=True):
                row = rows[i]
                decision = bool(score >= handle.threshold)
                transaction_id = str(row["transaction_id"])
                if returned:
                    answers[i] = Answer(
                        transaction_id, float(score), decision, handle.version, role
                    )
                lines.append({
                    "request_id": request_id, "logged_at": logged_at,
                    "event_time": pd.Timestamp(row["event_time"]).isoformat(sep=" "),
                    "partition_date": pd.Timestamp(row["partition_date"]).date().isoformat(),
                    "card_id": row["card_id"], "transaction_id": transaction_id,
                    "model_name": handle.model_name, "model_version": handle.version,
                    "role": role, "returned": returned, "score": float(score),
                    "decision": decision, "validation_ms": batch.validation_ms,
                    "features_ms": batch.features_ms, "model_ms": elapsed,
                    "event": batch.events[i],
                })  # fmt: skip
        return [a for a in answers if a is not None], lines, model_ms

    def health(self) -> dict[str, Any]:
        """Liveness and readiness facts (readiness: a model and a store young enough)."""
        info = self.features.info
        age = info.age_hours() if info is not None else None
        max_age = self.config.max_store_age_hours
        shared = self.features.shared
        state_error = None if shared is None else shared.status()
        return {
            "live": True,
            "ready": age is not None and age <= max_age and state_error is None,
            "online_state": "memory" if shared is None else shared.url,
            "online_state_error": state_error,
            "model_loaded": True,
            "model_version": self.models.champion.version,
            "store_age_hours": age,
            "max_store_age_hours": max_age,
            "last_reload_error": self.last_reload_error,
        }


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a store's state is read beside the serving one.

    The state of a store is about a million long-lived objects. Python's full collection walks
    every tracked object (0.3-0.6 s here for a 2,000-card store) and holds the interpreter
    meanwhile: one triggered by the load's allocations would stall every request. After a
    load (and at start) the state is frozen (:func:`gc.freeze`: kept out of every later
    collection; a card's states hold no reference cycles, so reference counting still frees a
    replaced one), and a request's collections walk only what is newer.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
