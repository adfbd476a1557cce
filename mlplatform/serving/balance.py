"""Keep-alive connections spread evenly over the worker processes of ``serve --workers N``.

The workers share one listening socket, and the kernel hands a new connection to whichever
worker's loop accepts first: clients that connect at the same moment can all land on one
worker, which then answers them in turn while another idles, for as long as they stay
connected. Each worker publishes how many connections it holds in a small shared file (one
slot per worker); a worker holding more than its share of all of them answers its next
request with ``Connection: close``, and the client's reconnect goes to a worker that is free
to accept it. An HTTP/1.1 client reconnects by itself; the request is answered in full.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import math
import mmap
import os
import tempfile
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_FIELDS = 2  # per slot: the worker's pid, the connections it holds


def slots_path(supervisor_pid: int) -> Path:
    """The shared file of the workers that ``supervisor_pid`` (the serve process) starts."""
    return Path(tempfile.gettempdir()) / f"mlplatform-serve-{supervisor_pid}.slots"


def create_slots(workers: int) -> Path:
    """Made by the serve process before it starts its ``workers``; it removes it at exit."""
    path = slots_path(os.getpid())
    path.write_bytes(bytes(8 * _FIELDS * workers))
    return path


class Slots:
    """This worker's view of the shared file: it claims a free slot (or one of a worker that
    died: uvicorn starts a replacement) and writes its count there."""

    def __init__(self, path: Path) -> None:
        with path.open("r+b") as file:
            self._fields = memoryview(mmap.mmap(file.fileno(), 0)).cast("q")
            self.workers = len(self._fields) // _FIELDS
            # One worker claims at a time. Unlocked explicitly: the map holds a duplicate of
            # the descriptor, which would keep the lock.
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                self._mine = self._claim(path)
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def _claim(self, path: Path) -> int:
        free = [i for i in range(self.workers) if not _alive(self._fields[i * _FIELDS])]
        if not free:
            raise RuntimeError(f"{path}: all {self.workers} worker slots are taken")
        mine = free[0] * _FIELDS
        self._fields[mine] = os.getpid()
        self._fields[mine + 1] = 0
        return mine

    def publish(self, held: int) -> None:
        self._fields[self._mine + 1] = held

    def over_share(self, held: int) -> bool:
        """Whether ``held`` connections are more than an even share of all the workers'."""
        total = sum(self._fields[i + 1] for i in range(0, len(self._fields), _FIELDS))
        return held > math.ceil(total / self.workers)


def _alive(pid: int) -> bool:
    if pid == 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@functools.cache
def _slots() -> Slots:
    return Slots(slots_path(os.getppid()))


_leaving: set[BalancedHttpProtocol] = set()  # answered with Connection: close, not yet closed


class BalancedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, publishing this worker's connections and closing one (after
    its answer) while the worker holds more than its share."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _slots().publish(len(self.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        _leaving.discard(self)
        _slots().publish(len(self.connections))

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.keep_alive
            and not cycle.response_complete
            and self not in _leaving
            and _slots().over_share(len(self.connections) - len(_leaving))
        ):
            cycle.keep_alive = False  # uvicorn answers with Connection: close, then closes
            _leaving.add(self)
