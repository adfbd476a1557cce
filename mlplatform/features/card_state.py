"""One card's online state as a value: its events of the framed windows in day tiles.

A framed window of a transaction at time ``T`` holds the card's events from ``T - span - end``
to ``T - end`` (microseconds, both ends included: same-microsecond peers are in the frame, as
in the SQL's ``RANGE`` frames). :class:`CardState` keeps the card's events in tiles of one
day (day ``us // DAY_US``, the SQL's ``event_day``), each with its partial aggregates
(:class:`TileSpec`: the exact ``sum`` of a column, decimals as scaled integers, or its
``max``; per value of a second key such as the category where the window has one). A frame
is answered from the partials of the tiles it covers whole (prefix sums across tiles for the
plain sums) and from the events of the at most two tiles its bounds cut, so its cost grows
with the days of the window and the events of one day, not with the card's events.

Why the events stay: a frame's start ``T - span`` falls anywhere in a day, and as ``T`` moves
on it passes every event of the window; answering it to the microsecond (the offline SQL
does) needs each event's time and contribution until it leaves the longest window. So the
state holds the events of the longest framed lookback before its newest event (plus a day
for late transactions, :data:`LATE_SLACK_US`) and, as events are added, drops whole tiles
older than that: its size is bounded by the windows (the events they can hold), not by the
card's history.

The state is a value: :meth:`CardState.to_bytes` writes its events in a small versioned
columnar format (no pickle; the layout's fingerprint is checked on read, so a state written
for other declarations is refused, never misread), and :meth:`CardState.from_bytes` rebuilds
the tiles from them.
"""

from __future__ import annotations

import bisect
import struct
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DAY_US = 86_400_000_000
#: How late a transaction may come (before the card's newest event) and still see every
#: event of its windows: the state keeps this much beyond the longest lookback.
LATE_SLACK_US = DAY_US
#: Events are tuples: event time (microseconds), id hash (the order of same-time events),
#: then the columns the layout names (second keys, the aggregates' arguments).
TIME, HASH = 0, 1
_MAGIC = b"MLCS"
_VERSION = 1
_HEADER = struct.Struct("<4sBII")  # magic, version, layout fingerprint, events
_KINDS = {"int": "q", "uint": "Q", "float": "d"}


class StateFormatError(ValueError):
    """Bytes that are not a card state of this layout and format version."""


@dataclass(frozen=True)
class TileSpec:
    """A partial aggregate each tile keeps: ``function`` (``sum`` or ``max``) of the event
    column at index ``column``, one value per tile, or one per value of the event columns
    at ``keys`` (a dict) when the window has a second partition key."""

    function: str
    column: int
    keys: tuple[int, ...] = ()


@dataclass(frozen=True)
class StateLayout:
    """What a card's events hold and which partials its tiles keep.

    ``columns`` names the event columns (``event_us``, ``transaction_hash``, then the
    rest), ``kinds`` says how each is stored (``int``, ``uint``, ``float``, ``str``; any
    may be None), ``lookback_us`` is the longest framed window (span plus end).
    """

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    specs: tuple[TileSpec, ...]
    lookback_us: int

    def __post_init__(self) -> None:
        if self.columns[:2] != ("event_us", "transaction_hash") or len(self.kinds) != len(
            self.columns
        ):
            raise ValueError(f"a card state's events start with time and id hash: {self.columns}")
        if unknown := set(self.kinds) - {*_KINDS, "str"}:
            raise ValueError(f"event column kinds {sorted(unknown)}: supported are int, uint, "
                             "float, str")  # fmt: skip

    @property
    def fingerprint(self) -> int:
        """A checksum of the columns, their kinds and the partials (bytes carry it)."""
        return zlib.crc32(repr((self.columns, self.kinds, self.specs)).encode())

    @property
    def horizon_us(self) -> int:
        """How far before its newest event a card keeps events."""
        return self.lookback_us + LATE_SLACK_US


class _Tile:
    """One day of a card: its events in (time, id hash) order and their partials."""

    __slots__ = ("events", "hashes", "partials", "times")

    def __init__(self, events: list[tuple]) -> None:
        self.events = events
        self.times = [e[TIME] for e in events]
        self.hashes = [e[HASH] for e in events]
        self.partials: list[Any] = []

    def between(self, lower: int, upper: int) -> list[tuple]:
        """The events from ``lower`` to ``upper`` microseconds, both included."""
        times = self.times
        return self.events[bisect.bisect_left(times, lower) : bisect.bisect_right(times, upper)]

    def position(self, time: int, transaction_hash: int) -> int:
        """Where an event of ``time`` and ``transaction_hash`` goes: after the events ordered
        before it (same-time events are ordered by id hash)."""
        lo, hi = bisect.bisect_left(self.times, time), bisect.bisect_right(self.times, time)
        return lo + bisect.bisect_left(self.hashes[lo:hi], transaction_hash)

    def insert(self, at: int, event: tuple) -> None:
        self.events.insert(at, event)
        self.times.insert(at, event[TIME])
        self.hashes.insert(at, event[HASH])

    def delete(self, at: int) -> tuple:
        event = self.events[at]
        del self.events[at], self.times[at], self.hashes[at]
        return event


class CardState:
    """One card's events of its windows, in day tiles with partial aggregates (see the
    module's docstring). Events are tuples as :class:`StateLayout` names their columns."""

    __slots__ = ("_held", "_prefix", "_stale", "days", "layout", "tiles")

    def __init__(self, layout: StateLayout) -> None:
        self.layout = layout
        self.days: list[int] = []
        self.tiles: list[_Tile] = []
        #: The id hashes of the held events (what :meth:`holds` asks, per request).
        self._held: set[int] = set()
        #: Per plain sum spec: sum of the partials of the tiles before index i (None as 0),
        #: and how many of those tiles have a value (a sum of nothing is NULL); valid below
        #: tile index ``_stale``.
        self._prefix: dict[int, tuple[list[int], list[int]]] = {
            i: ([0], [0]) for i, s in enumerate(layout.specs) if s.function == "sum" and not s.keys
        }
        self._stale = 0

    @classmethod
    def of(cls, layout: StateLayout, events: Iterable[tuple]) -> CardState:
        """A card's state from its events in (time, id hash) order, all of them: a store
        holds the windows' days only, and a warehouse read instead (ad-hoc scoring) all of a
        card's history, so that a past transaction is answered exactly. Adding events
        (:meth:`add`) drops the days the windows no longer reach."""
        state = cls(layout)
        day_events: list[tuple] = []
        day = None
        for event in events:
            event_day = event[TIME] // DAY_US
            if event_day != day and day_events:
                state._append_tile(day, day_events)
                day_events = []
            day = event_day
            day_events.append(event)
        if day_events:
            state._append_tile(day, day_events)
        return state

    def __len__(self) -> int:
        """How many events the state holds."""
        return sum(len(t.events) for t in self.tiles)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CardState)
            and self.layout == other.layout
            and list(self.events()) == list(other.events())
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def events(self) -> Iterable[tuple]:
        """The held events in (time, id hash) order."""
        for tile in self.tiles:
            yield from tile.events

    @property
    def newest_us(self) -> int | None:
        return self.tiles[-1].events[-1][TIME] if self.tiles else None

    def holds(self, transaction_hash: int) -> bool:
        return transaction_hash in self._held

    def add(self, event: tuple) -> tuple | None:
        """Add an event; drop what fell out of the windows. Returns the event of the same
        id hash that it replaced (None: none)."""
        replaced = self.remove(event[HASH])
        day = event[TIME] // DAY_US
        at = bisect.bisect_left(self.days, day)
        if at == len(self.days) or self.days[at] != day:
            self.days.insert(at, day)
            self.tiles.insert(at, _Tile([]))
        tile = self.tiles[at]
        tile.insert(tile.position(event[TIME], event[HASH]), event)
        self._held.add(event[HASH])
        self._summarise(at)
        self._prune()
        return replaced

    def remove(self, transaction_hash: int) -> tuple | None:
        """Forget the event of an id hash; returns it (None: not held)."""
        if transaction_hash not in self._held:
            return None
        self._held.discard(transaction_hash)
        for at, tile in enumerate(self.tiles):
            if transaction_hash in tile.hashes:
                event = tile.delete(tile.hashes.index(transaction_hash))
                if tile.events:
                    self._summarise(at)
                else:
                    del self.days[at], self.tiles[at]
                    self._stale = min(self._stale, at)
                return event
        return None

    def without(self, hashes: set[int]) -> CardState:
        """A copy without the events of ``hashes``: the tiles that hold none are shared."""
        copy = CardState(self.layout)
        copy.days, copy.tiles, copy._stale = list(self.days), list(self.tiles), self._stale
        copy._held = self._held - hashes
        copy._prefix = {i: (list(s), list(c)) for i, (s, c) in self._prefix.items()}
        for at in reversed(range(len(copy.tiles))):
            tile = copy.tiles[at]
            if hashes.isdisjoint(tile.hashes):
                continue
            kept = [e for e in tile.events if e[HASH] not in hashes]
            if kept:
                copy.tiles[at] = _Tile(kept)
                copy._summarise(at)
            else:
                del copy.days[at], copy.tiles[at]
                copy._stale = min(copy._stale, at)
        return copy

    def fold(self, spec: int, lower: int, upper: int, key: tuple) -> Any:
        """The partial ``spec`` over the events from ``lower`` to ``upper`` microseconds
        (both included) whose key columns equal ``key``; None when none has a value."""
        s = self.layout.specs[spec]
        first_day, last_day = lower // DAY_US, upper // DAY_US
        days, tiles = self.days, self.tiles
        i, j = bisect.bisect_left(days, first_day), bisect.bisect_right(days, last_day)
        if i == j:
            return None
        # The tiles the bounds cut are read event by event, the others by their partials.
        total = None
        if days[i] == first_day or days[i] == last_day:
            total = fold(s, tiles[i].between(lower, upper), key)
            i += 1
        if j > i and days[j - 1] == last_day:
            total = merge(s.function, total, fold(s, tiles[j - 1].between(lower, upper), key))
            j -= 1
        if j <= i:
            return total
        if s.keys:
            values = [v for t in tiles[i:j] if (v := t.partials[spec].get(key)) is not None]
        elif s.function == "sum":
            sums, counts = self._prefix_of(spec, j)
            values = [sums[j] - sums[i]] if counts[j] > counts[i] else []
        else:
            values = [v for t in tiles[i:j] if (v := t.partials[spec]) is not None]
        if not values:
            return total
        whole = sum(values) if s.function == "sum" else max(values)
        return merge(s.function, total, whole)

    def first(self, lower: int, upper: int, keys: tuple[int, ...], key: tuple) -> tuple | None:
        """The earliest event from ``lower`` to ``upper`` whose ``keys`` columns equal
        ``key`` (None: none)."""
        days = self.days
        for at in range(bisect.bisect_left(days, lower // DAY_US), len(days)):
            if days[at] > upper // DAY_US:
                return None
            for event in self.tiles[at].between(lower, upper):
                if all(event[c] == k for c, k in zip(keys, key, strict=True)):
                    return event
        return None

    def before(self, event: tuple, keys: tuple[int, ...], key: tuple) -> tuple | None:
        """The latest event ordered before ``event`` (time, then id hash) whose ``keys``
        columns equal ``key`` (None: none held)."""
        at = bisect.bisect_right(self.days, event[TIME] // DAY_US)
        for tile in reversed(self.tiles[:at]):
            for held in reversed(tile.events[: tile.position(event[TIME], event[HASH])]):
                if all(held[c] == k for c, k in zip(keys, key, strict=True)):
                    return held
        return None

    def to_bytes(self) -> bytes:
        """The state as bytes: header (format, layout fingerprint, event count), then each
        event column (zlib-compressed; see :func:`_encode_column`)."""
        events = list(self.events())
        columns = [
            _encode_column(kind, [e[c] for e in events]) for c, kind in enumerate(self.layout.kinds)
        ]
        header = _HEADER.pack(_MAGIC, _VERSION, self.layout.fingerprint, len(events))
        return header + zlib.compress(b"".join(columns), 1)

    @classmethod
    def from_bytes(cls, data: bytes, layout: StateLayout) -> CardState:
        """The state :meth:`to_bytes` wrote with ``layout``; raises :class:`StateFormatError`
        for other bytes (another format version, or a layout of other declarations)."""
        if len(data) < _HEADER.size:
            raise StateFormatError(f"{len(data)} bytes: shorter than a card state's header")
        magic, version, fingerprint, count = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise StateFormatError(f"not a card state of format {_VERSION}: {magic!r} {version}")
        if fingerprint != layout.fingerprint:
            raise StateFormatError(
                "a card state of other feature declarations (layout fingerprint "
                f"{fingerprint:#x}, these are {layout.fingerprint:#x})"
            )
        body = memoryview(zlib.decompress(data[_HEADER.size :]))
        columns, at = [], 0
        for kind in layout.kinds:
            values, at = _decode_column(kind, body, at, count)
            columns.append(values)
        if at != len(body):
            raise StateFormatError(f"{len(body) - at} bytes left after the last column")
        return cls.of(layout, zip(*columns, strict=True)) if count else cls(layout)

    def _append_tile(self, day: int, events: list[tuple]) -> None:
        self.days.append(day)
        self.tiles.append(_Tile(events))
        self._held.update(self.tiles[-1].hashes)
        self._summarise(len(self.tiles) - 1)

    def _summarise(self, at: int) -> None:
        """Recompute the partials of tile ``at`` (the prefix sums from it on are stale)."""
        events = self.tiles[at].events
        partials: list[Any] = []
        for spec in self.layout.specs:
            column, keys, add = spec.column, spec.keys, spec.function == "sum"
            if not keys:
                partials.append(fold(spec, events, ()))
                continue
            groups: dict[tuple, Any] = {}
            for event in events:
                value = event[column]
                if value is not None:
                    key = tuple(event[c] for c in keys)
                    held = groups.get(key)
                    groups[key] = (
                        value if held is None else held + value if add else max(held, value)
                    )
            partials.append(groups)
        self.tiles[at].partials = partials
        self._stale = min(self._stale, at)

    def _prune(self) -> None:
        """Drop the tiles older than the layout's horizon before the newest event."""
        if not self.tiles:
            return
        oldest = (self.newest_us - self.layout.horizon_us) // DAY_US
        drop = bisect.bisect_left(self.days, oldest)
        if drop:
            for tile in self.tiles[:drop]:
                self._held.difference_update(tile.hashes)
            del self.days[:drop], self.tiles[:drop]
            self._stale = 0  # every prefix sum counted the dropped tiles

    def _prefix_of(self, spec: int, upto: int) -> tuple[list[int], list[int]]:
        """The prefix sums of ``spec``, valid up to index ``upto`` (rebuilt from the first
        stale tile on)."""
        sums, counts = self._prefix[spec]
        if self._stale < len(self.tiles) or len(sums) != len(self.tiles) + 1:
            for index, (s, c) in self._prefix.items():
                del s[self._stale + 1 :], c[self._stale + 1 :]
                for tile in self.tiles[self._stale :]:
                    value = tile.partials[index]
                    s.append(s[-1] + (value or 0))
                    c.append(c[-1] + (value is not None))
            self._stale = len(self.tiles)
        return sums, counts


def fold(spec: TileSpec, events: Sequence[tuple], key: tuple) -> Any:
    """``spec``'s aggregate over ``events`` whose key columns equal ``key`` (SQL: NULLs
    ignored, None when no value)."""
    column = spec.column
    if spec.keys:
        values = [
            e[column]
            for e in events
            if e[column] is not None and all(e[c] == k for c, k in zip(spec.keys, key, strict=True))
        ]
    else:
        values = [e[column] for e in events if e[column] is not None]
    if not values:
        return None
    return sum(values) if spec.function == "sum" else max(values)


def merge(function: str, a: Any, b: Any) -> Any:
    """Two partials of ``function`` over disjoint events as one."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b if function == "sum" else max(a, b)


def _encode_column(kind: str, values: list[Any]) -> bytes:
    """A column: a byte saying whether it has NULLs (then one byte per value: 1 for NULL),
    then the values: ints and floats packed 8 bytes each (NULL as 0), text as its distinct
    values (count, then length-prefixed UTF-8) and one 4-byte index per value (-1 NULL)."""
    nulls = [v is None for v in values]
    head = b"\x01" + bytes(nulls) if any(nulls) else b"\x00"
    if kind == "str":
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        index = {v: i for i, v in enumerate(distinct)}
        words = [v.encode() for v in distinct]
        table = struct.pack("<I", len(words)) + b"".join(
            struct.pack("<I", len(w)) + w for w in words
        )
        return head + table + array("i", [-1 if v is None else index[v] for v in values]).tobytes()
    zero = 0.0 if kind == "float" else 0
    return head + array(_KINDS[kind], [zero if v is None else v for v in values]).tobytes()


def _decode_column(kind: str, body: memoryview, at: int, count: int) -> tuple[list[Any], int]:
    """The values of one column :func:`_encode_column` wrote at ``at``; and where the next
    starts."""
    has_nulls = body[at]
    at += 1
    nulls = bytes(body[at : at + count]) if has_nulls else b""
    at += count if has_nulls else 0
    if kind == "str":
        (distinct,) = struct.unpack_from("<I", body, at)
        at += 4
        words: list[str] = []
        for _ in range(distinct):
            (size,) = struct.unpack_from("<I", body, at)
            words.append(bytes(body[at + 4 : at + 4 + size]).decode())
            at += 4 + size
        indexes = array("i")
        indexes.frombytes(body[at : at + 4 * count])
        values: list[Any] = [None if i < 0 else words[i] for i in indexes]
        return values, at + 4 * count
    packed = array(_KINDS[kind])
    packed.frombytes(body[at : at + 8 * count])
    values = packed.tolist()
    if has_nulls:
        values = [None if n else v for v, n in zip(values, nulls, strict=True)]
    return values, at + 8 * count
