"""``mlplatform serve --workers N``: N uvicorn processes, each listening on a socket of its
own on the port (``SO_REUSEPORT``), and a supervisor that starts a worker again if it dies.

Why not uvicorn's own workers: they share one listening socket, and the process that wakes
first accepts every connection waiting (libuv accepts until none is left). A client's pool
opening its connections at once then lands on one worker, often all of them, and their
requests queue while the other worker idles (five bursts of 8 connections to uvicorn's two
workers: 8/0, 7/1, 2/6, 4/4, 7/1). With a socket per worker the kernel hands each new
connection to one of them by a hash of its addresses: evenly on average, and whether or not
a worker is awake.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from multiprocessing.process import BaseProcess
from types import FrameType

logger = logging.getLogger(__name__)
#: How often the supervisor looks for a worker that died (seconds).
WATCH_SECONDS = 0.5
#: How long a stopping worker gets to finish its requests before it is killed (seconds).
STOP_SECONDS = 30.0


def bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (raises OSError when it is taken), not yet
    listening: uvicorn listens on it once the worker's app has started, so that the kernel
    never queues a connection to a worker still loading (a restarted one, say)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_workers(app: str, host: str, port: int, workers: int) -> None:
    """Serve the uvicorn app factory ``app`` (``module:function``) from ``workers`` processes
    until SIGINT or SIGTERM; raises OSError when the port is taken."""
    # A socket without SO_REUSEPORT first: refused if anything (another service, another
    # `mlplatform serve`) holds the port, so that workers never share it with a stranger.
    bound_socket(host, port, reuse_port=False).close()
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start(number: int) -> BaseProcess:
        process = context.Process(
            target=_worker, args=(app, host, port), name=f"mlplatform-serve-{number}"
        )
        process.start()
        return process

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    processes = [start(number) for number in range(workers)]
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
                processes[number] = start(number)
    for process in processes:
        process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


def _worker(app: str, host: str, port: int) -> None:
    """One worker process: the app on a socket of its own."""
    import uvicorn

    config = uvicorn.Config(app, factory=True, host=host, port=port, access_log=False)
    uvicorn.Server(config).run(sockets=[bound_socket(host, port, reuse_port=True)])
