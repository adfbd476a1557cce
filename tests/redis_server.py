"""A throwaway Redis 7 server for the tests: `redis-server` in a temp folder on a free port of
127.0.0.1, without persistence (a restart is empty, as the service's recovery test needs),
stopped and deleted afterwards."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis


@dataclass
class RedisServer:
    """A `redis-server` process on ``port`` (restartable on the same port, empty)."""

    folder: Path
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        program = shutil.which("redis-server")
        assert program, (
            "redis-server is not installed: `apt-get install -y redis-server` "
            "(.ci/run does it in CI)"
        )
        log = (self.folder / "server.log").open("a")
        self.process = subprocess.Popen(
            [program, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not answer in 30 s"
                time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: everything it held is gone."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)


@contextmanager
def redis_server(free_port: Callable[[], int]) -> Iterator[RedisServer]:
    folder = Path(tempfile.mkdtemp(prefix="mlplatform-redis-"))
    server = RedisServer(folder, free_port()).start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
