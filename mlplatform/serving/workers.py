"""``mlplatform serve --workers N``: a supervisor that accepts the connections and hands each
to the worker process holding the fewest, and starts a worker again if it dies.

Why not uvicorn's own workers: they share one listening socket, and the kernel gives a new
connection to whichever worker's loop calls accept first; that loop then accepts every
connection waiting (libuv accepts until none is left). A client pool that opens its
connections at once lands on one worker (6/2 or worse in 18 of 20 bursts of 8), and a
kept-alive connection stays where it landed: its requests queue while another worker idles.
A socket per worker (``SO_REUSEPORT``) spreads by a hash of the addresses, at random (6/2 or
worse in 6 of 20). Here the supervisor accepts and passes the socket over a Unix socket pair
(``SCM_RIGHTS``, as Node's cluster module does): least connections, whatever the pattern. It
costs one hand-over per connection, not per request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from contextlib import suppress
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)
#: How often the supervisor looks for a worker that died (seconds).
WATCH_SECONDS = 0.5
#: How long a stopping worker gets to finish its requests before it is killed (seconds).
STOP_SECONDS = 30.0
# Per worker, in memory shared with the supervisor: its pid once it is ready to take
# connections (0 before), and how many connections it has closed. Only the worker writes them.
_READY, _CLOSED, _FIELDS = 0, 1, 2


def serve_workers(app: str, host: str, port: int, workers: int) -> None:
    """Serve the uvicorn app factory ``app`` (``module:function``) from ``workers`` processes
    until SIGINT or SIGTERM; raises OSError when the port is taken."""
    listener = socket.create_server(
        (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=2048
    )
    context = multiprocessing.get_context("spawn")
    fields = context.Array("q", _FIELDS * workers, lock=False)
    stopping = threading.Event()
    channels: dict[int, socket.socket] = {}

    def start(number: int) -> BaseProcess:
        fields[number * _FIELDS + _READY] = fields[number * _FIELDS + _CLOSED] = 0
        if number in channels:
            channels[number].close()
        channels[number], theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = context.Process(
            target=_worker, args=(app, host, port, theirs, fields, number),
            name=f"mlplatform-serve-{number}",
        )  # fmt: skip
        process.start()
        theirs.close()
        return process

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    processes = [start(number) for number in range(workers)]
    dispatcher = _Dispatcher(listener, channels, fields)
    threading.Thread(target=dispatcher.run, name="accept", daemon=True).start()
    logger.info(
        "serving on %s:%d from %d worker processes (%s)", host, port, workers,
        ", ".join(str(p.pid) for p in processes),
    )  # fmt: skip
    while not stopping.wait(WATCH_SECONDS):
        for number, process in enumerate(processes):
            if not process.is_alive() and not stopping.is_set():
                logger.warning(
                    "worker %d (pid %s) exited with code %s; starting another", number,
                    process.pid, process.exitcode,
                )  # fmt: skip
                with dispatcher.lock:
                    dispatcher.handed[number] = 0
                    processes[number] = start(number)
    with suppress(OSError):  # Linux wakes the accepting thread; macOS refuses (ENOTCONN)
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for process in processes:
        process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


class _Dispatcher:
    """The accepting thread: each connection to the ready worker holding the fewest (handed
    to it less closed by it), ties taken in turn; none ready (all restarting), it waits."""

    def __init__(
        self, listener: socket.socket, channels: dict[int, socket.socket], fields: Any
    ) -> None:
        self.listener, self.channels, self.fields = listener, channels, fields
        self.handed = [0] * len(channels)
        self.lock = threading.Lock()  # against the supervisor starting a worker again
        self._turn = itertools.cycle(range(len(channels)))

    def run(self) -> None:
        # At the start, every worker ready before the first connection: a client pool that
        # connects as soon as the port answers would otherwise all land on the first one.
        while not all(self.fields[n * _FIELDS + _READY] for n in range(len(self.channels))):
            time.sleep(0.05)
        logger.info("all %d workers ready", len(self.channels))
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # the listener closed: stopping
                return
            with connection:
                # As uvicorn's own listener sets it: no Nagle delay on the small answers.
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while not self._hand(connection):
                    time.sleep(0.05)

    def _hand(self, connection: socket.socket) -> bool:
        with self.lock:
            start = next(self._turn)
            order = [(start + i) % len(self.channels) for i in range(len(self.channels))]
            ready = [n for n in order if _taking(self.fields[n * _FIELDS + _READY])]
            for number in sorted(ready, key=self._held):
                try:
                    socket.send_fds(self.channels[number], [b"c"], [connection.fileno()])
                except OSError:  # the worker died since it was ready; the watch restarts it
                    continue
                self.handed[number] += 1
                return True
        return False

    def _held(self, number: int) -> int:
        return self.handed[number] - self.fields[number * _FIELDS + _CLOSED]


def _taking(pid: int) -> bool:
    """Whether the worker ``pid`` (0: not ready) takes connections. A worker killed a moment
    ago still holds its end of the pair while the kernel frees its memory (tens of ms for a
    GB), and a connection handed to it then is lost: its flags say it is exiting (PF_EXITING,
    /proc/PID/stat's ninth field), from the kill on."""
    if pid == 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:  # exited (or no /proc: then never known before its exit)
        return not _PROC
    return not int(stat.rsplit(b")", 1)[1].split()[6]) & _PF_EXITING


_PROC = Path("/proc/self/stat").exists()
_PF_EXITING = 0x4


class _Counted:
    """This worker's field of connections closed (set in the worker process)."""

    fields: Any = None
    index = 0

    @classmethod
    def closed(cls) -> None:
        cls.fields[cls.index] += 1


class CountedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, counting the connections it closes for the supervisor."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        _Counted.closed()


class _WorkerServer(uvicorn.Server):
    """A uvicorn server that listens on nothing: its connections come from the supervisor."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket, ready: Any) -> None:
        super().__init__(config)
        self.channel, self.ready = channel, ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return CountedHttpProtocol(
                config=self.config, server_state=self.server_state, app_state=self.lifespan.state
            )

        connecting: set[asyncio.Task] = set()

        def receive() -> None:
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(self.channel, 1, 16)
                except BlockingIOError:
                    return
                if not message:  # the supervisor is gone
                    loop.remove_reader(self.channel.fileno())
                    self.should_exit = True
                    return
                for fd in fds:
                    task = loop.create_task(
                        loop.connect_accepted_socket(protocol, socket.socket(fileno=fd))
                    )
                    connecting.add(task)
                    task.add_done_callback(connecting.discard)

        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), receive)
        self.ready()


def _worker(app: str, host: str, port: int, channel: socket.socket, fields: Any, n: int) -> None:
    """One worker process: the app, on the connections the supervisor hands it."""
    _Counted.fields, _Counted.index = fields, n * _FIELDS + _CLOSED

    def ready() -> None:
        fields[n * _FIELDS + _READY] = os.getpid()

    config = uvicorn.Config(
        app, factory=True, host=host, port=port, access_log=False, http=CountedHttpProtocol
    )
    _WorkerServer(config, channel, ready).run()
