"""Fresh online state shared by every service process, in Redis (``MLPLATFORM_ONLINE_STATE``).

With ``memory`` (the default) one process holds the state of its cards. With a Redis URL
every process reads and writes it there, so that any process (``mlplatform serve --workers
N``, replicas on other machines) answers a card as one process would. The keys, under
:data:`PREFIX`:

- ``current``: the version served (a number and a random suffix); ``v{N}:meta``: what it
  was built from (the store file's identity) and its size;
- ``v{N}:card:{card}``: a card's :class:`~mlplatform.features.card_state.CardState` as bytes,
  as the version was published (never changed afterwards);
- ``v{N}:fresh:{card}``: the card's transactions scored since (JSON, in commit order);
- ``v{N}:daily:{key}``: the daily partials of a key (e.g. a merchant), JSON;
- ``v{N}:journal``: every transaction scored since the store was written (JSON), which the
  next version carries over where its store lacks them.

A request is one optimistic transaction (two round trips on the process's request
connection: WATCH with the reads, then MULTI/EXEC): it reads the version, its cards' fresh
lists (from where this process last read them: a card's bytes are decoded once per process
and version) and daily partials, computes the features, appends its events and commits only
if no key it watched changed meanwhile; otherwise it is computed again on what changed. So
two purchases of a card taken by two processes at once are each counted once, and a request
sees every event of its card committed before it.

A new store is published by one process (a lock key): every card's state goes under a new
version (pipelined, beside the served one), the journal's transactions the store lacks are
added, and one transaction switches ``current`` once no request appended to the journal since
it was read; the old version is deleted afterwards. No request waits for it. When Redis holds
no version (a first start, or restarted empty), requests are answered 503 and the state is
rebuilt from the store and the prediction log the same way.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from mlplatform.features.card_state import CardState, StateFormatError
from mlplatform.features.online_state import CompiledFeatures, FeatureState

PREFIX = "mlplatform:online:"
#: A publishing process holds the lock this long past its last sign of life.
LOCK_MS = 60_000
#: Cards written per round trip when a version is published.
BATCH = 500
#: Cards whose decoded state a process keeps beside their bytes (reused while Redis holds the
#: same bytes: decoding a card's state costs more than the rest of its read).
DECODED_CARDS = 50_000
#: Why requests get 503 while Redis holds no state.
EMPTY = (
    "Redis holds no online state (first start, or restarted empty): it is being rebuilt "
    "from the online store and the prediction log; retry shortly"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


class StateUnavailable(RuntimeError):
    """The shared state cannot be used now (Redis unreachable, or holding no state): the
    reason says which. Answered 503, never a score from missing state."""


def redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    netloc = user + parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Pending:
    """A request's read of the shared state (watched on the request connection until
    committed or released): its version, a :class:`FeatureState` of its cards and daily
    keys, and those partials as read (only what changed is written back)."""

    version: str
    state: FeatureState = field(repr=False)
    daily: dict[tuple, dict[int, list[Any]] | None] = field(repr=False)


@dataclass
class _Decoded:
    """A card's state as this process last read it: of ``version``, with the first
    ``applied`` entries of the version's fresh list of the card added to its bytes."""

    version: str
    applied: int
    state: CardState = field(repr=False)


@dataclass(frozen=True)
class Published:
    """A version written by :meth:`Publisher.publish` and made current."""

    version: str
    cards: int
    carried: int  # scored transactions the store lacked, carried into the version
    bytes: int
    seconds: float


class RedisState:
    """The online state of every card in Redis at ``url`` (see the module's docstring)."""

    def __init__(self, url: str, compiled: CompiledFeatures, prefix: str = PREFIX) -> None:
        self.url = redacted(url)
        self.compiled = compiled
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        # The requests' own connection (one request at a time: the service's lock): WATCH,
        # the reads and MULTI/EXEC of a request go on it, two round trips.
        self._requests = redis.Redis(
            connection_pool=redis.ConnectionPool.from_url(
                url, max_connections=1, socket_timeout=5, socket_connect_timeout=2
            )
        )
        self._prefix = prefix
        self._current = prefix + "current"
        self._lock = prefix + "publishing"
        self._version: str | None = None
        self._release = self.redis.register_script(_RELEASE)
        #: The cards' states as last read or written, least recently used first.
        self._decoded: OrderedDict[str, _Decoded] = OrderedDict()

    def key(self, version: str, kind: str, name: str = "") -> str:
        """The key of a version's ``meta`` or ``journal``, or of a ``card``, its ``fresh``
        list or a ``daily`` key (``name``)."""
        return f"{self._prefix}v{version}:{kind}" + (f":{name}" if name else "")

    def daily_name(self, key: tuple) -> str:
        return json.dumps(list(key), separators=(",", ":"))

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Redis' connection errors as :class:`StateUnavailable`, saying what to do."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as error:
            raise StateUnavailable(
                f"Redis at {self.url} is unreachable ({error}); the service answers again "
                "once it is back"
            ) from error

    def status(self) -> str | None:
        """Why the state cannot serve now (None: it can)."""
        try:
            return EMPTY if self.version() is None else None
        except StateUnavailable as error:
            return str(error)

    def meta(self) -> dict[str, Any] | None:
        """What the current version was built from (None: no version)."""
        version = self.version()
        if version is None:
            return None
        with self.reachable():
            data = self.redis.get(self.key(version, "meta"))
        return None if data is None else json.loads(data)

    def read(self, records: Sequence[tuple]) -> Pending:
        """The current state of the cards of ``records`` and the daily partials they read,
        watched until :meth:`commit` (or :meth:`release`)."""
        with self.reachable():
            for _ in range(3):
                version = self._version or self._current_version()
                pending = self._read(version, records)
                if pending is not None:
                    return pending
        raise StateUnavailable("the online state's version changed three times in one read")

    def _current_version(self) -> str:
        version = self.version()
        if version is None:
            raise StateUnavailable(EMPTY)
        self._version = version
        return version

    def _read(self, version: str, records: Sequence[tuple]) -> Pending | None:
        """The read at ``version`` (one round trip: WATCH and the reads pipelined on the
        request connection); None when another version is current (noted)."""
        state = FeatureState(self.compiled)
        cards = sorted({r[3] for r in records})
        daily = sorted({k for r in records for k in state.daily_keys(state.event(r))}, key=repr)
        daily_keys = [self.key(version, "daily", self.daily_name(k)) for k in daily]
        held = {c: d for c in cards if (d := self._decoded.get(c)) and d.version == version}
        commands: list[tuple] = [
            ("WATCH", self._current, *(self.key(version, "fresh", c) for c in cards), *daily_keys),
            ("GET", self._current),
        ]
        for card in cards:
            if card not in held:
                commands.append(("GET", self.key(version, "card", card)))
            applied = held[card].applied if card in held else 0
            commands.append(("LRANGE", self.key(version, "fresh", card), applied, -1))
        if daily_keys:
            commands.append(("MGET", *daily_keys))
        try:
            _, current, *values = self._send(commands)
            if current is None or current.decode() != version:
                self._requests.execute_command("UNWATCH")
                if current is None:
                    self._version = None
                    raise StateUnavailable(EMPTY)
                self._version = current.decode()
                return None
            at = 0
            for card in cards:
                base = None if card in held else values[at]
                at += card not in held
                decoded = held.get(card) or self._decode(card, version, base)
                for entry in values[at]:  # the events other requests added since
                    decoded.state.add(tuple(json.loads(entry)[2:]))
                decoded.applied += len(values[at])
                at += 1
                state.cards[card] = decoded.state
        except BaseException:
            self._requests.execute_command("UNWATCH")
            raise
        read: dict[tuple, dict[int, list[Any]] | None] = {}
        for key, data in zip(daily, values[at] if daily_keys else [], strict=True):
            read[key] = None
            if data is not None:
                days = state.partials[key] = _days(data)
                read[key] = {day: list(sums) for day, sums in days.items()}  # as read
        return Pending(version, state, read)

    def version(self) -> str | None:
        """The version served now (None: Redis holds none)."""
        with self.reachable():
            version = self.redis.get(self._current)
        return None if version is None else version.decode()

    def wait_for_version(self, seconds: float) -> str | None:
        """The version served, once there is one (another process may be publishing it),
        waiting at most ``seconds``; None if there is none by then."""
        deadline = time.monotonic() + seconds
        while (version := self.version()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return version

    def warm(self, version: str, cards: Sequence[str], lock: AbstractContextManager) -> int:
        """Decode the states of ``cards`` (up to :data:`DECODED_CARDS`) of ``version`` ahead
        of their requests, in batches, each kept under ``lock`` (the requests' lock: decoding
        runs beside them); how many."""
        warmed = 0
        cards = list(cards)[:DECODED_CARDS]
        for start in range(0, len(cards), BATCH):
            batch = cards[start : start + BATCH]
            with self.reachable():
                values = self.redis.mget([self.key(version, "card", c) for c in batch])
            states = [
                (card, CardState.from_bytes(data, self.compiled.layout))
                for card, data in zip(batch, values, strict=True)
                if data is not None
            ]
            with lock:
                for card, state in states:
                    held = self._decoded.get(card)
                    if held is None or held.version != version:
                        self._decoded[card] = _Decoded(version, 0, state)
                        warmed += 1
                while len(self._decoded) > DECODED_CARDS:
                    self._decoded.popitem(last=False)
        return warmed

    def _send(self, commands: list[tuple]) -> list[Any]:
        """``commands`` in one round trip on the request connection, their raw replies (a
        redis-py pipeline would send UNWATCH after a WATCH: the request's must stay until its
        MULTI/EXEC; and it costs more than the round trip)."""
        pool = self._requests.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            return [connection.read_response() for _ in commands]
        except BaseException:
            connection.disconnect()  # whatever it watched is dropped with it
            raise
        finally:
            pool.release(connection)

    def _decode(self, card: str, version: str, data: bytes | None) -> _Decoded:
        """A card's state of ``version`` from its bytes (none: a card the store lacks), kept
        for the next requests of the card (see :data:`DECODED_CARDS`)."""
        if data is None:
            state = CardState(self.compiled.layout)
        else:
            try:
                state = CardState.from_bytes(data, self.compiled.layout)
            except StateFormatError as error:
                raise StateUnavailable(
                    f"card state {card} in Redis at {self.url} cannot be read ({error}): give "
                    "each platform its own Redis database in MLPLATFORM_ONLINE_STATE"
                ) from error
        decoded = self._decoded[card] = _Decoded(version, 0, state)
        self._decoded.move_to_end(card)
        if len(self._decoded) > DECODED_CARDS:
            self._decoded.popitem(last=False)
        return decoded

    def commit(self, pending: Pending, records: Sequence[tuple]) -> bool:
        """Add ``records`` (the request's events) to the state read; False (nothing
        written) when a key read was changed since by another request or a publish."""
        state = pending.state
        entries: dict[str, list[str]] = {}
        for record in records:
            entries.setdefault(record[3], []).append(_entry(record))
        state.add(records)  # changes the kept states in place: forgotten unless written
        commands: list[tuple] = [("MULTI",)]
        for card, added in entries.items():
            commands.append(("RPUSH", self.key(pending.version, "fresh", card), *added))
        for key, before in pending.daily.items():
            after = state.partials.get(key)
            if after != before:
                name = self.key(pending.version, "daily", self.daily_name(key))
                commands.append(("SET", name, _days_bytes(after)) if after else ("DEL", name))
        journal = [e for added in entries.values() for e in added]
        commands += [("RPUSH", self.key(pending.version, "journal"), *journal), ("EXEC",)]
        try:
            with self.reachable():
                *_, replies = self._send(commands)
            if replies is None:  # a watched key changed: nothing written
                raise redis.WatchError
            errors = [r for r in replies if isinstance(r, redis.ResponseError)]
            if errors:
                raise errors[0]
        except BaseException as error:
            for card in entries:
                self._decoded.pop(card, None)
            if isinstance(error, redis.WatchError):
                return False
            raise
        for card, added in entries.items():
            if (decoded := self._decoded.get(card)) is not None:
                decoded.applied += len(added)
        return True

    def release(self, pending: Pending) -> None:
        """Give up a read without writing (the request failed)."""
        with self.reachable():
            self._requests.execute_command("UNWATCH")

    @contextmanager
    def publishing(self, identity: dict[str, Any]) -> Iterator[Publisher | None]:
        """A :class:`Publisher` of the store ``identity`` names, holding the publishing
        lock; None when the current version is of that store or a newer one, or another
        process is publishing."""
        with self.reachable():
            current = self.version()
            meta = self.meta() if current is not None else None
            if meta is not None and not _newer(identity, meta["store"]):
                yield None
                return
            token = uuid.uuid4().hex
            if not self.redis.set(self._lock, token, nx=True, px=LOCK_MS):
                yield None
                return
        try:
            yield Publisher(self, current, token, identity)
        finally:
            with self.reachable():
                self._release(keys=[self._lock], args=[token])

    def drop(self, version: str) -> int:
        """Delete the keys of ``version``; how many."""
        deleted = 0
        with self.reachable():
            batch: list[bytes] = []
            for key in self.redis.scan_iter(match=f"{self._prefix}v{version}:*", count=1000):
                batch.append(key)
                if len(batch) >= BATCH:
                    deleted += self.redis.unlink(*batch)
                    batch = []
            if batch:
                deleted += self.redis.unlink(*batch)
        return deleted


class Publisher:
    """Writes a store's state as a new version and makes it current (see the module)."""

    def __init__(
        self, shared: RedisState, previous: str | None, token: str, identity: dict[str, Any]
    ) -> None:
        self.shared, self.previous, self.token, self.identity = shared, previous, token, identity

    @property
    def empty(self) -> bool:
        """Redis holds no version: the state is rebuilt (the prediction log has the
        transactions scored since the store)."""
        return self.previous is None

    def publish(
        self,
        state: FeatureState,
        restored: Sequence[tuple],
        held: Callable[[list[str]], set[str]],
    ) -> Published:
        """Write ``state`` (every card of the store) plus the scored transactions the store
        lacks (``held`` says which transaction ids it holds): the previous version's journal,
        and ``restored`` records (from the prediction log, when Redis was empty); then
        switch ``current`` to it and delete the previous version."""
        started = time.perf_counter()
        shared, r = self.shared, self.shared.redis
        with shared.reachable():
            # Unique even across a Redis restarted empty (its counter restarts): a process
            # must never take a new version's card for one it decoded before.
            version = f"{r.incr(shared._prefix + 'next')}-{uuid.uuid4().hex[:12]}"
            journal = shared.key(self.previous, "journal") if self.previous else None
            entries = [_entry(rec) for rec in restored]
            if journal is not None:
                entries += [e.decode() for e in r.lrange(journal, 0, -1)]
            seen = 0 if journal is None else len(entries) - len(restored)
            carried = _carry(state, entries, held)
            size = self._write(version, state, carried)
            dirty_cards: set[str] = set()
            dirty_daily: set[tuple] = set()
            while True:
                with r.pipeline() as pipe:
                    pipe.watch(shared._current, *([journal] if journal else []))
                    now = pipe.get(shared._current)
                    if (now.decode() if now else None) != self.previous:
                        raise StateUnavailable(
                            f"another process switched the online state to version {now!r} "
                            "while this one published (its lock had expired)"
                        )
                    late = [e.decode() for e in pipe.lrange(journal, seen, -1)] if journal else []
                    new = _carry(state, late, held)
                    carried += new
                    for entry in new:
                        dirty_cards.add(json.loads(entry)[1])
                    dirty_daily |= {
                        k for e in new for k in state.daily_keys(tuple(json.loads(e)[2:]))
                    }
                    pipe.multi()
                    for card in dirty_cards:
                        pipe.set(shared.key(version, "card", card), state.cards[card].to_bytes())
                    for key in dirty_daily:
                        days = state.partials.get(key)
                        name = shared.key(version, "daily", shared.daily_name(key))
                        if days:
                            pipe.set(name, _days_bytes(days))
                        else:
                            pipe.delete(name)
                    if new:
                        pipe.rpush(shared.key(version, "journal"), *new)
                    pipe.set(shared._current, version)
                    try:
                        pipe.execute()
                        break
                    except redis.WatchError:
                        seen += len(late)
            shared._version = version
            if self.previous is not None:
                shared.drop(self.previous)
        return Published(
            version, len(state.cards), len(carried), size, time.perf_counter() - started
        )

    def _write(self, version: str, state: FeatureState, carried: list[str]) -> int:
        """Every card, daily partial and carried journal entry under ``version``, pipelined
        (no transaction: the version is not current yet); the bytes written."""
        shared, r = self.shared, self.shared.redis
        size = 0
        pipe = r.pipeline(transaction=False)
        for count, (card, card_state) in enumerate(state.cards.items(), start=1):
            data = card_state.to_bytes()
            size += len(data)
            pipe.set(shared.key(version, "card", card), data)
            if count % BATCH == 0:
                pipe.pexpire(shared._lock, LOCK_MS)
                pipe.execute()
        for key, days in state.partials.items():
            data = _days_bytes(days)
            size += len(data)
            pipe.set(shared.key(version, "daily", shared.daily_name(key)), data)
        if carried:
            pipe.rpush(shared.key(version, "journal"), *carried)
        meta = {"store": self.identity, "cards": len(state.cards), "bytes": size}
        pipe.set(shared.key(version, "meta"), json.dumps(meta))
        pipe.execute()
        return size


def _carry(
    state: FeatureState, entries: Iterable[str], held: Callable[[list[str]], set[str]]
) -> list[str]:
    """Add the journal ``entries`` whose transactions the store lacks to ``state``; those."""
    entries = list(entries)
    if not entries:
        return []
    stored = held([json.loads(e)[0] for e in entries])
    kept = []
    for entry in entries:
        transaction_id, card_id, *event = json.loads(entry)
        if transaction_id not in stored:
            state.add_event(card_id, tuple(event))
            kept.append(entry)
    return kept


def _entry(record: tuple) -> str:
    """A journal entry: transaction id, card, then the event a card's state keeps."""
    return json.dumps([record[2], record[3], *FeatureState.event(record)], separators=(",", ":"))


def _days(data: bytes) -> dict[int, list[Any]]:
    return {int(day): values for day, values in json.loads(data).items()}


def _days_bytes(days: dict[int, list[Any]]) -> str:
    return json.dumps({str(d): v for d, v in sorted(days.items())}, separators=(",", ":"))


def _newer(identity: dict[str, Any], built: dict[str, Any]) -> bool:
    """Whether the store ``identity`` names replaced the one a version was ``built`` from."""
    return identity != built and identity["modified_ns"] >= built["modified_ns"]
