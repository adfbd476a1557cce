"""Data-quality validation of warehouse frames with Great Expectations 1.x.

This module knows nothing about Dagster: asset checks call :func:`validate_frame` (usually with
the suite from :func:`transaction_rules`) and turn the returned :class:`QualityReport` into
``AssetCheckResult`` metadata via :meth:`QualityReport.to_metadata` /
:meth:`QualityReport.to_markdown`.

Great Expectations is imported lazily: importing it costs several seconds, which should not be
paid by every process that merely imports this module (e.g. Dagster loading the code location).
The GX data context (ephemeral, in memory) and its pandas data source are created once per
process on first use and reused; validations are serialised through a lock because they share
the data source's execution engine, whose batch cache is keyed by the (fixed) asset name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.data_context import AbstractDataContext

__all__ = [
    "ExpectationOutcome",
    "QualityReport",
    "Rule",
    "transaction_rules",
    "validate_days",
    "validate_frame",
]

MAX_EXAMPLES = 5
"""Maximum number of unexpected values kept per outcome."""

_RULE_META_KEY = "mlplatform_rule"
_DATASOURCE_NAME = "mlplatform_quality"
_ASSET_NAME = "frame"
# GX returns at most this many unexpected values; we de-duplicate them and keep MAX_EXAMPLES, so
# ask for more than MAX_EXAMPLES in case the first few are repeats (e.g. duplicated ids).
_PARTIAL_UNEXPECTED_COUNT = 20
# BASIC gives element_count / unexpected_count / partial_unexpected_list without the extra
# index-list and value-count metrics that SUMMARY computes.
_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": _PARTIAL_UNEXPECTED_COUNT,
}
_MAX_RENDERED_LIST = 5
_MAX_ERROR_CHARS = 300
_NS_DTYPE = np.dtype("datetime64[ns]")
# In-set rules with more values than this are reduced to the values present in the frame.
_LARGE_VALUE_SET = 1_000


# --------------------------------------------------------------------------------------------
# Report types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectationOutcome:
    """The outcome of one rule on one frame.

    Attributes:
        rule: Short stable id of the rule, e.g. ``"transaction_id_unique"``.
        expectation: Readable GX expectation, e.g.
            ``"expect_column_values_to_be_unique(column='transaction_id')"``.
        success: Whether the expectation passed.
        element_count: Number of rows the expectation looked at (the frame's row count).
        unexpected_count: Number of offending rows for column-value expectations. For
            ``expect_table_columns_to_match_set`` the number of missing plus unexpected
            columns; for ``expect_table_row_count_to_equal`` the absolute difference between
            the observed and expected row count; for other aggregate expectations 1 when failed.
        examples: Up to 5 distinct unexpected values (stringified); for schema failures
            ``"missing: <col>"`` / ``"unexpected: <col>"``; for aggregate failures
            ``"observed: <value>"``; ``"error: <message>"`` when the expectation could not be
            evaluated (e.g. its column is absent). Empty when passed.
    """

    rule: str
    expectation: str
    success: bool
    element_count: int
    unexpected_count: int
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class QualityReport:
    """The outcomes of validating one frame against one suite of rules."""

    suite: str
    outcomes: tuple[ExpectationOutcome, ...]

    @property
    def passed(self) -> bool:
        """True when every rule passed (vacuously true for an empty suite)."""
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        """The outcomes that failed, in rule order."""
        return tuple(o for o in self.outcomes if not o.success)

    def outcome(self, rule: str) -> ExpectationOutcome:
        """Return the outcome of ``rule``; raise ``KeyError`` if the suite has no such rule."""
        for o in self.outcomes:
            if o.rule == rule:
                return o
        raise KeyError(rule)

    def to_metadata(self) -> dict[str, object]:
        """A JSON-serialisable summary, suitable for Dagster ``AssetCheckResult`` metadata.

        Keys: ``suite``, ``passed``, ``failed_rules`` (rule ids) and ``outcomes`` (one dict per
        rule with the :class:`ExpectationOutcome` fields, ``examples`` as a list).
        """
        return {
            "suite": self.suite,
            "passed": self.passed,
            "failed_rules": [o.rule for o in self.failures],
            "outcomes": [{**asdict(o), "examples": list(o.examples)} for o in self.outcomes],
        }

    def to_markdown(self) -> str:
        """A small markdown table of the outcomes, failing rules first."""
        n_failed = len(self.failures)
        status = "passed" if self.passed else f"{n_failed} of {len(self.outcomes)} rules failed"
        lines = [
            f"**{_md_escape(self.suite)}**: {status}",
            "",
            "| status | rule | unexpected | rows | examples |",
            "|---|---|---:|---:|---|",
        ]
        ordered = sorted(self.outcomes, key=lambda o: o.success)  # stable: failures first
        for o in ordered:
            examples = ", ".join(f"`{_md_escape(e)}`" for e in o.examples)
            lines.append(
                f"| {'PASS' if o.success else 'FAIL'} | `{o.rule}` | {o.unexpected_count} "
                f"| {o.element_count} | {examples} |"
            )
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Rule:
    """A named expectation. ``rule`` must be unique within a suite."""

    rule: str
    expectation: gx.expectations.Expectation


# --------------------------------------------------------------------------------------------
# GX runtime (one per process)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GxRuntime:
    context: AbstractDataContext
    batch_definition: BatchDefinition


_RUNTIME: _GxRuntime | None = None
_RUNTIME_LOCK = threading.Lock()
_VALIDATE_LOCK = threading.Lock()


def _gx() -> Any:
    """Import (once, ~5 s) and return the ``great_expectations`` module, quietly."""
    if "great_expectations" not in sys.modules:
        # Must be set before GX is imported. This GX build no longer ships telemetry, but keep
        # it off for any version that still reads the variable.
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        # GX logs dozens of INFO lines while importing and creating a context ("Skipping
        # registering function ...", "Loading 'datasources'"); keep them out of INFO-level
        # logs unless the application configured the "great_expectations" logger itself.
        gx_logger = logging.getLogger("great_expectations")
        if gx_logger.level == logging.NOTSET:
            gx_logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            # GX imports the deprecated stdlib modules sre_constants / sre_parse.
            warnings.filterwarnings(
                "ignore", message=r"module 'sre_\w+' is deprecated", category=DeprecationWarning
            )
            import great_expectations
    import great_expectations

    return great_expectations


def _runtime() -> _GxRuntime:
    """Return the process-wide GX context + batch definition, creating them on first use."""
    global _RUNTIME
    runtime = _RUNTIME
    if runtime is not None:
        return runtime
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            gx = _gx()
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(),
                analytics_enabled=False,
                # Without this, every validation draws a tqdm "Calculating Metrics" bar on stderr.
                progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            )
            context = gx.get_context(mode="ephemeral", project_config=config)
            # GX md5-hashes every pandas batch (pd.util.hash_pandas_object over all cells) just
            # to put a "pandas_data_fingerprint" in the batch markers, twice per validation
            # (get_batch, then again inside Batch.validate): ~1 s per million rows each time.
            # We never read the markers. GX skips the hash for frames whose memory_usage() is at
            # least this module-level threshold (1 GB by default); 0 skips it for every frame in
            # this process.
            from great_expectations.execution_engine import pandas_execution_engine

            if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
                pandas_execution_engine.HASH_THRESHOLD = 0
            datasource = context.data_sources.add_pandas(name=_DATASOURCE_NAME)
            asset = datasource.add_dataframe_asset(name=_ASSET_NAME)
            batch_definition = asset.add_batch_definition_whole_dataframe("whole_dataframe")
            _RUNTIME = _GxRuntime(context=context, batch_definition=batch_definition)
        return _RUNTIME


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_frame(df: pd.DataFrame, suite: str, rules: Sequence[Rule]) -> QualityReport:
    """Validate ``df`` against ``rules`` and return one outcome per rule, in rule order.

    All rules run in one GX suite validation, so metrics shared between expectations are
    computed once. An expectation that cannot be evaluated (e.g. its column is missing) fails
    with an ``"error: ..."`` example instead of raising.

    Args:
        df: The frame to validate (not modified).
        suite: A name for the suite, reported back in :attr:`QualityReport.suite`.
        rules: The rules; their ``rule`` ids must be unique. The expectations are copied, so the
            same ``Rule`` objects can be reused across calls.

    Raises:
        ValueError: If two rules share an id.
    """
    ids = [r.rule for r in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate rule ids in suite {suite!r}: {duplicates}")
    if not rules:
        return QualityReport(suite=suite, outcomes=())

    gx = _gx()
    runtime = _runtime()
    expectations = []
    for r in rules:
        meta = {**(r.expectation.meta or {}), _RULE_META_KEY: r.rule}
        # A suite takes ownership of the expectations it is given (it rejects ones that already
        # have an id and registers a save callback), so hand it copies.
        update: dict[str, Any] = {"meta": meta, "id": None}
        value_set = _shrink_value_set(r.expectation, df)
        if value_set is not None:
            update["value_set"] = value_set
        expectations.append(r.expectation.copy(update=update))
    # Unique name: nothing is persisted, but names show up in GX results and logs.
    gx_suite = gx.ExpectationSuite(
        name=f"{suite}-{uuid.uuid4().hex[:12]}", expectations=expectations
    )

    frame = _prepare_frame(df)
    with _VALIDATE_LOCK:
        batch = runtime.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(gx_suite, result_format=_RESULT_FORMAT)
        _release_batch_data(runtime)

    by_rule: dict[str, ExpectationValidationResult] = {}
    for res in result.results:
        meta = res.expectation_config.meta if res.expectation_config is not None else None
        if meta and _RULE_META_KEY in meta:
            by_rule[meta[_RULE_META_KEY]] = res

    outcomes = []
    n_rows = len(df)
    for r in rules:
        res = by_rule.get(r.rule)
        readable = _describe(r.expectation)
        if res is None:  # GX dropped it; should not happen, but never report a silent pass.
            outcomes.append(
                ExpectationOutcome(r.rule, readable, False, n_rows, 0, ("error: not evaluated",))
            )
        else:
            outcomes.append(_outcome(r.rule, readable, res, n_rows))
    return QualityReport(suite=suite, outcomes=tuple(outcomes))


def _shrink_value_set(expectation: Any, df: pd.DataFrame) -> list[Any] | None:
    """For a large ``ExpectColumnValuesToBeInSet``, the part of its set that occurs in ``df``.

    GX rebuilds an expectation's configuration with pydantic ``.dict()`` dozens of times per
    validation, walking the whole ``value_set`` each time: ~65 ms per 1,000 values per rule,
    whatever the row count (100k reference cards: +6.5 s). Keeping only the set members that
    actually occur in the column gives the same outcome for every row. Returns None (leave the
    expectation as it is) for small or parameterised sets, or when the column is absent.
    """
    if type(expectation).__name__ != "ExpectColumnValuesToBeInSet":
        return None
    value_set = getattr(expectation, "value_set", None)
    column = getattr(expectation, "column", None)
    if (
        not isinstance(value_set, list | tuple | set | frozenset)
        or len(value_set) <= _LARGE_VALUE_SET
        or not df.columns.is_unique
        or column not in df.columns
    ):
        return None
    try:
        present = set(df[column].dropna().unique())
        return [v for v in value_set if v in present]
    except TypeError:  # unhashable values: leave it to GX
        return None


def _prepare_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` laid out so GX's pandas engine runs fast; ``df`` itself is not touched.

    Two GX/pandas performance traps, both worth seconds per million rows:

    - ``expect_column_values_to_be_between`` is vectorised only for ``datetime64[ns]`` (and
      tz-aware) columns; a ``datetime64[us]`` column falls back to a per-element Python
      ``Series.map``. Such columns are cast to ``datetime64[ns]`` (left as they are if a value
      is outside the ns range).
    - every column-value metric filters nulls with ``df[df[col].notnull()]``, which deep-copies
      the whole frame, and a deep copy of a non-consolidated frame (one block per column, as
      frames built column by column or read from DuckDB are) first merges the blocks. The copy
      is consolidated once here instead of once per metric.
    """
    frame = df.copy(deep=False)
    if df.columns.is_unique:
        for col, dtype in df.dtypes.items():
            if isinstance(dtype, np.dtype) and dtype.kind == "M" and dtype != _NS_DTYPE:
                # Out of the ns range (OutOfBoundsDatetime is a ValueError): keep the slow path.
                with contextlib.suppress(ValueError, OverflowError):
                    frame[col] = df[col].astype(_NS_DTYPE)
    consolidate = getattr(frame, "_consolidate_inplace", None)  # private pandas API
    if consolidate is not None:
        consolidate()
    return frame


def _release_batch_data(runtime: _GxRuntime) -> None:
    """Drop the execution engine's reference to the last validated frame (best effort)."""
    try:
        engine = runtime.batch_definition.data_asset.datasource.get_execution_engine()
        engine.batch_manager.batch_data_cache.clear()
        engine.batch_manager.reset_batch_cache()
    except Exception:  # pragma: no cover - GX internals; only a memory optimisation
        pass


def _outcome(
    rule: str, readable: str, res: ExpectationValidationResult, n_rows: int
) -> ExpectationOutcome:
    """Convert one GX result into an :class:`ExpectationOutcome`."""
    error = _error_message(res.exception_info)
    if error is not None:
        return ExpectationOutcome(rule, readable, False, n_rows, 0, (f"error: {error}",))

    result: Mapping[str, Any] = res.result or {}
    success = bool(res.success)
    element_count = _to_int(result.get("element_count", n_rows))
    kind = res.expectation_config.type if res.expectation_config is not None else ""

    if "unexpected_count" in result:  # column-map expectations
        unexpected = _to_int(result["unexpected_count"])
        examples = () if success else _distinct_strings(result.get("partial_unexpected_list"))
    elif kind == "expect_table_columns_to_match_set":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        missing = [f"missing: {c}" for c in mismatched.get("missing", [])]
        extra = [f"unexpected: {c}" for c in mismatched.get("unexpected", [])]
        unexpected = len(missing) + len(extra)
        examples = () if success else tuple((missing + extra)[:MAX_EXAMPLES])
    elif kind == "expect_table_row_count_to_equal":
        observed = _to_int(result.get("observed_value", n_rows))
        expected = _to_int(res.expectation_config.kwargs.get("value", observed))
        unexpected = abs(observed - expected)
        examples = () if success else (f"observed: {observed}",)
    else:  # other aggregate expectations
        unexpected = 0 if success else 1
        examples = () if success else (f"observed: {_stringify(result.get('observed_value'))}",)
    return ExpectationOutcome(rule, readable, success, element_count, unexpected, examples)


def _error_message(exception_info: Any) -> str | None:
    """Extract the first error message from GX's ``exception_info`` (flat or per-metric)."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else exception_info.values()
    for info in infos:
        if isinstance(info, Mapping) and info.get("raised_exception"):
            message = str(info.get("exception_message") or "unknown error")
            return message[:_MAX_ERROR_CHARS]
    return None


def _distinct_strings(values: Any) -> tuple[str, ...]:
    """Up to MAX_EXAMPLES distinct stringified values, in order of first appearance."""
    out: list[str] = []
    for v in values or []:
        s = _stringify(v)
        if s not in out:
            out.append(s)
            if len(out) == MAX_EXAMPLES:
                break
    return tuple(out)


def _stringify(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "null"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _to_int(value: Any) -> int:
    return int(value) if value is not None else 0


def _describe(expectation: Any) -> str:
    """Readable one-line form of an expectation: ``type(kwarg=value, ...)``."""
    config = expectation.configuration
    args = ", ".join(f"{k}={_render_value(v)}" for k, v in config.kwargs.items() if k != "batch_id")
    return f"{config.type}({args})"


def _render_value(value: Any) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        if len(items) > _MAX_RENDERED_LIST:
            return f"<{len(items)} values>"
        return "[" + ", ".join(_render_value(v) for v in items) + "]"
    if isinstance(value, datetime | date):
        return repr(value.isoformat())
    return repr(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


# --------------------------------------------------------------------------------------------
# The transaction suite
# --------------------------------------------------------------------------------------------


def _day_in_utc(day: date, timezone: str | None) -> tuple[datetime, datetime]:
    """A day's first instant and the next day's, as naive UTC times (the day local to
    ``timezone`` when given)."""
    start, end = (datetime.combine(d, time.min) for d in (day, day + timedelta(days=1)))
    if timezone is None:
        return start, end
    zone = ZoneInfo(timezone)
    return tuple(t.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None) for t in (start, end))


def transaction_rules(
    *,
    columns: Sequence[str],
    required: Sequence[str],
    partition_date: date,
    known_categories: Sequence[str] | None,
    max_amount: float,
    reference_card_ids: Sequence[str] | None = None,
    expected_row_count: int | None = None,
    timezone: str | None = None,
) -> list[Rule]:
    """Build the rule suite shared by the raw and curated transaction tables.

    The caller decides which rules are blocking. Rules (ids):

    - ``schema``: the frame has exactly ``columns`` (any order).
    - ``<col>_not_null`` for every ``col`` in ``required``.
    - ``transaction_id_unique``.
    - ``amount_range``: ``0 < amount <= max_amount``.
    - ``event_time_in_partition``: ``partition_date 00:00 <= event_time < next day 00:00``
      (event times are UTC; with a source ``timezone``, the day's midnights are local).
    - ``category_known`` (if ``known_categories`` is given): category in that set.
    - ``card_in_reference`` (if ``reference_card_ids`` is given): card_id in that set.
    - ``row_count`` (if ``expected_row_count`` is given): exactly that many rows.

    Null values are ignored by the range / set / uniqueness rules; ``<col>_not_null`` catches
    them for required columns.
    """
    gxe = _gx().expectations
    start, end = _day_in_utc(partition_date, timezone)
    rules = [
        Rule(
            "schema",
            gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=True),
        ),
        *(
            Rule(f"{col}_not_null", gxe.ExpectColumnValuesToNotBeNull(column=col))
            for col in required
        ),
        Rule(
            "transaction_id_unique",
            gxe.ExpectColumnValuesToBeUnique(column="transaction_id"),
        ),
        Rule(
            "amount_range",
            gxe.ExpectColumnValuesToBeBetween(
                column="amount", min_value=0.0, strict_min=True, max_value=float(max_amount)
            ),
        ),
        Rule(
            "event_time_in_partition",
            gxe.ExpectColumnValuesToBeBetween(
                column="event_time", min_value=start, max_value=end, strict_max=True
            ),
        ),
    ]
    if known_categories is not None:
        rules.append(
            Rule(
                "category_known",
                gxe.ExpectColumnValuesToBeInSet(
                    column="category", value_set=list(known_categories)
                ),
            )
        )
    if reference_card_ids is not None:
        rules.append(
            Rule(
                "card_in_reference",
                gxe.ExpectColumnValuesToBeInSet(
                    column="card_id", value_set=list(reference_card_ids)
                ),
            )
        )
    if expected_row_count is not None:
        rules.append(
            Rule("row_count", gxe.ExpectTableRowCountToEqual(value=int(expected_row_count)))
        )
    return rules


# --------------------------------------------------------------------------------------------
# A suite on many days at once
# --------------------------------------------------------------------------------------------

#: Rules of :func:`transaction_rules` whose expectation depends on the day.
_DAY_RULES = frozenset({"event_time_in_partition", "row_count"})


def validate_days(
    frame: pd.DataFrame,
    suite: str,
    days: Sequence[date],
    rules_of_day: Callable[[date], list[Rule]],
    *,
    timezone: str | None,
    expected_row_counts: Mapping[date, int] | None = None,
) -> dict[date, QualityReport]:
    """Each day's report: the same as :func:`validate_frame` of that day's rows of ``frame``
    (column ``partition_date``) with ``rules_of_day(day)`` (a :func:`transaction_rules`
    suite), at the cost of a few validations instead of one per day.

    The rules that do not depend on the day run once over the rows of all ``days``: a rule
    that passes on all rows passes on each day's. If one fails, each half of the days is
    validated again, down to the single days it fails on. The two rules that depend on the
    day are screened per day against the same values: every event time inside the day's
    bounds (:func:`_day_in_utc`, as the rule), the row count the expected one. A day that
    is not cleared so is validated on its own (its exact report); every other day gets its
    suite's outcomes as passed (rows checked: the day's rows, none failing).
    """
    rows_of = _rows_by_day(frame, days)
    range_rules = [r for r in rules_of_day(days[0]) if r.rule not in _DAY_RULES]
    suspects = set(_failing_days(frame, suite, list(days), rows_of, range_rules))
    suspects |= _days_outside_their_bounds(frame, rows_of, timezone)
    if expected_row_counts is not None:
        suspects |= {d for d in days if len(rows_of[d]) != expected_row_counts[d]}
    reports = {}
    for day in days:
        rules = rules_of_day(day)
        name = f"{suite}:{day}"
        if day in suspects:
            reports[day] = validate_frame(_rows(frame, rows_of[day]), name, rules)
        else:
            outcomes = tuple(
                ExpectationOutcome(r.rule, _describe(r.expectation), True, len(rows_of[day]), 0)
                for r in rules
            )
            reports[day] = QualityReport(suite=name, outcomes=outcomes)
    return reports


def _rows_by_day(frame: pd.DataFrame, days: Sequence[date]) -> dict[date, np.ndarray]:
    """The positions of each day's rows in ``frame`` (in frame order; none for a day
    without rows)."""
    found = {
        pd.Timestamp(key).date(): positions
        for key, positions in frame.groupby("partition_date", sort=False).indices.items()
    }
    empty = np.zeros(0, dtype=np.intp)
    return {day: found.get(day, empty) for day in days}


def _rows(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    return frame.iloc[np.sort(positions)].reset_index(drop=True)


def _failing_days(
    frame: pd.DataFrame,
    suite: str,
    days: list[date],
    rows_of: Mapping[date, np.ndarray],
    rules: Sequence[Rule],
) -> list[date]:
    """The days on whose rows ``rules`` fail: all days validated at once, halves of the days
    again where that fails (a few validations when none or few fail)."""
    rows = np.concatenate([rows_of[day] for day in days])
    if validate_frame(_rows(frame, rows), f"{suite}:{days[0]}..{days[-1]}", rules).passed:
        return []
    if len(days) == 1:
        return days
    middle = len(days) // 2
    return [
        *_failing_days(frame, suite, days[:middle], rows_of, rules),
        *_failing_days(frame, suite, days[middle:], rows_of, rules),
    ]


def _days_outside_their_bounds(
    frame: pd.DataFrame, rows_of: Mapping[date, np.ndarray], timezone: str | None
) -> set[date]:
    """The days with an event time outside the day (nulls aside, as the rule ignores them);
    every day when ``frame`` has no naive timestamp column ``event_time`` to compare."""
    column = frame.get("event_time")
    if column is None or column.dtype.kind != "M" or getattr(column.dtype, "tz", None):
        return set(rows_of)
    times = column.to_numpy()
    outside = set()
    for day, positions in rows_of.items():
        start, end = (np.datetime64(t) for t in _day_in_utc(day, timezone))
        values = times[positions]
        values = values[~np.isnat(values)]
        if ((values < start) | (values >= end)).any():
            outside.add(day)
    return outside
