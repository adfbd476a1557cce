"""A throwaway PostgreSQL cluster for the tests: `initdb` in a temp folder, `pg_ctl` on a free
port of 127.0.0.1, a password user (SCRAM), stopped and deleted afterwards. As root (CI), the
server runs as the `postgres` user through `runuser`, as PostgreSQL refuses to run as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

USER, PASSWORD = "mlplatform", "a-test-password"
#: Where Debian puts the server programs when they are not on PATH.
DEBIAN_BIN = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class Postgres:
    """A running cluster: its address and the test user's credentials."""

    port: int
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD

    def create_database(self, name: str) -> str:
        """A new, empty database ``name`` (its name)."""
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def conninfo(self, database: str) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} password={self.password} "
            f"dbname={database}"
        )

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of ``database`` (what MLflow takes)."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def dagster_env(self, database: str) -> dict[str, str]:
        """The variables `platform/dagster.yaml` reads, for ``database``."""
        return {
            "DAGSTER_POSTGRES_HOST": self.host, "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user, "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": database,
        }  # fmt: skip

    def query(self, database: str, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.conninfo(database)) as conn:
            return conn.execute(sql, params).fetchall()


def _program(name: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's versioned folder."""
    if found := shutil.which(name):
        return found
    for folder in sorted(DEBIAN_BIN.glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise AssertionError(
        f"PostgreSQL's {name} is not installed: install PostgreSQL 15 "
        "(`apt-get install -y postgresql-15`; .ci/run does it in CI)"
    )


@contextmanager
def postgres_cluster(free_port: Callable[[], int], *, durable: bool = False) -> Iterator[Postgres]:
    """A cluster that lives as long as the context; its log is in the error if it fails.

    Not ``durable`` (the tests'): no fsync, commits not waited for. ``durable``: PostgreSQL's
    defaults, each commit flushed to disk before it returns (what a benchmark compares)."""
    root = Path(tempfile.mkdtemp(prefix="mlplatform-postgres-"))
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    data, log, password_file = root / "data", root / "server.log", root / "password"
    password_file.write_text(PASSWORD)
    if as_root:
        root.chmod(0o755)
        shutil.chown(root, "postgres")
        shutil.chown(password_file, "postgres")
    subprocess.run(
        [*run_as, _program("initdb"), "-D", str(data), "-U", USER, f"--pwfile={password_file}",
         "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        postgres = _start(run_as, data, log, root, free_port, durable)
        yield postgres
    finally:
        subprocess.run(
            [*run_as, _program("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _start(
    run_as: list[str],
    data: Path,
    log: Path,
    socket_dir: Path,
    free_port: Callable[[], int],
    durable: bool,
) -> Postgres:
    """Start the server on a free port (another, if a process took the port meanwhile)."""
    for _ in range(5):
        port = free_port()
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {socket_dir}"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        started = subprocess.run(
            [*run_as, _program("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
             "-w", "-t", "60", "start"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        if started.returncode == 0:
            return Postgres(port)
        if "could not bind" not in log.read_text() and "in use" not in log.read_text():
            break
    raise AssertionError(f"PostgreSQL did not start:\n{started.stderr}\n{log.read_text()[-3000:]}")
