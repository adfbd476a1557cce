"""Shared fixtures: a data home, a Dagster home and landing files, all in tmp dirs."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import duckdb
import httpx
import pandas as pd
import pytest

from mlplatform.datagen import SimulationConfig, SimulationSummary, simulate
from tests.postgres import Postgres, postgres_cluster
from tests.redis_server import RedisServer, redis_server

START = date(2025, 1, 1)
#: Environment of a small trained platform (test_models, test_scoring, test_serving).
TRAINING_ENV = {
    "MLPLATFORM_PII_KEY": "test-pii-key",
    "MLPLATFORM_START_DATE": START.isoformat(),
    "MLPLATFORM_SEARCH_ITERATIONS": "2",
    "MLPLATFORM_MIN_TRAIN_POSITIVES": "5",
    "MLPLATFORM_MIN_AVERAGE_PRECISION": "0.05",
    "MLPLATFORM_MAX_CALIBRATION_ERROR": "0.05",
    "MLPLATFORM_SMOKE_LATENCY_MS": "5000",  # a busy CI machine: latency is the bench's job
}
T = TypeVar("T")
#: The end states of a run.
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}


#: Modules handed out first, the longest first. `make test` runs them on two workers with
#: `--dist loadfile`, each worker taking the next module when it is nearly done: a long module
#: handed out last would run alone at the end (the demo test did: 8 of 10 minutes on two
#: cores, then 2 on one). Every run prints its `--durations` table: a module that shows up
#: near its top belongs here.
LONGEST_FIRST = (
    "test_cli.py",
    "test_serving.py",
    "test_serving_redis.py",
    "test_recovery.py",
    "test_sensor_daemon.py",
    "test_bring_your_own_data.py",
    "test_models.py",
    "test_platform.py",
    "test_ducklake.py",
    "test_drift.py",  # between two modules that wait for the shared trained platform
    "test_monitoring_assets.py",
    "test_image.py",
    "test_ui.py",
    "test_quiet_output.py",
    "test_pipeline.py",
    "test_retraining_daemon.py",
)


#: A RAM-backed file system for the run's temporary folders, where the machine has one.
RAM_DISK = Path("/dev/shm")


#: What a full run writes there (~2.6 GB, the last run kept), with room to spare: a smaller
#: RAM disk (a container's 64 MB /dev/shm) is left alone.
RAM_DISK_NEEDED = 6 * 2**30


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _is_tmpfs(path: Path) -> bool:
    """Whether ``path`` is the mount point of a tmpfs (from /proc/mounts; False without it)."""
    with suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount_point, kind, *_ = line.split()
            if mount_point == str(path) and kind == "tmpfs":
                return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    """Workers share the cores: each worker, and every process it starts, gets its share as
    ``OMP_NUM_THREADS`` (LightGBM's OpenMP threads run 10-30x slower on oversubscribed cores;
    see :func:`mlplatform.ml.models.available_threads`). Set before any test module imports
    LightGBM.

    The run's temporary folders (``tmp_path``, the shared trained platform: every data home,
    Dagster instance, MLflow store and DuckDB file the tests make) are on :data:`RAM_DISK`
    when it is a writable tmpfs, as pytest's numbered ``pytest-of-<user>/pytest-N`` folders
    there (the last run kept: pyproject.toml). The files are the same real files; only
    ``fsync`` costs nothing there. Dagster's SQLite event log commits every event on its own
    connection, each commit and close an fsync (~8 ms each on this machine's disk, more when
    other processes write): a 20-day range run of `daily_ingestion` took 25 s with its
    instance in /tmp and 9.7 s on the RAM disk, for the same 10 s of CPU. ``--basetemp`` or
    ``PYTEST_DEBUG_TEMPROOT`` choose another place. (On xdist workers ``basetemp`` is the
    controller's folder: the workers follow it.)"""
    if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        cores = len(os.sched_getaffinity(0))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // int(workers))))
    if (
        not config.option.basetemp
        and "PYTEST_DEBUG_TEMPROOT" not in os.environ
        and _is_tmpfs(RAM_DISK)
        and os.access(RAM_DISK, os.W_OK)
        and _free_bytes(RAM_DISK) >= RAM_DISK_NEEDED
    ):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(RAM_DISK)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """:data:`LONGEST_FIRST` modules first; the others after them, in their usual order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@dataclass(frozen=True)
class PlatformHome:
    home: Path
    landing: Path
    warehouse: Path
    dagster_home: Path


def new_platform_home(root: Path) -> tuple[PlatformHome, dict[str, str]]:
    """A fresh platform in ``root`` (an empty landing folder, the repo's dagster.yaml) and the
    environment that points at it: MLPLATFORM_HOME, DAGSTER_HOME, a PII key."""
    home = root / "home"
    dagster_home = root / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(
        (Path(__file__).parents[1] / "dagster.yaml").read_text()
    )
    (home / "landing").mkdir(parents=True)
    env = {
        "MLPLATFORM_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
        "MLPLATFORM_PII_KEY": "test-pii-key", "MLPLATFORM_START_DATE": START.isoformat(),
        "MLPLATFORM_LANDING_SETTLE_SECONDS": "0",
    }  # fmt: skip
    return PlatformHome(home, home / "landing", home / "warehouse.duckdb", dagster_home), env


@pytest.fixture
def platform_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformHome:
    """Environment of a fresh platform: MLPLATFORM_HOME, DAGSTER_HOME, a PII key."""
    platform, env = new_platform_home(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return platform


def simulate_landing(landing: Path, days: int = 3, cards: int = 60, **options) -> SimulationSummary:
    """Small simulated landing files starting on START."""
    config = SimulationConfig(n_cards=cards, days=days, start_date=START, seed=7, **options)
    return simulate(config, landing)


@pytest.fixture
def instance(platform_home: PlatformHome):
    with dg.DagsterInstance.get() as instance:
        yield instance


def load_warehouse(
    landing: Path,
    warehouse: Path | str,
    contract_path: Path | None = None,
    *,
    data_path: str | None = None,
    reference_only: bool = False,
) -> None:
    """Ingest and curate every landing file with the domain functions (no Dagster), into a
    DuckDB file or a DuckLake (``data_path``); ``reference_only``: the card reference only."""
    from mlplatform.contract import load_contract
    from mlplatform.ingestion import (
        curate_partition,
        ingest_partition,
        load_card_reference,
        partition_date_of,
    )
    from mlplatform.settings import DEFAULT_CONTRACT
    from mlplatform.warehouse.connection import connect

    contract = load_contract(contract_path or DEFAULT_CONTRACT)
    with connect(warehouse, data_path=data_path) as conn:
        load_card_reference(conn, landing, contract.reference, b"test-pii-key")
        for path in [] if reference_only else sorted(landing.glob("transactions_*.csv")):
            day = partition_date_of(path)
            ingest_partition(
                conn, files=[path], partition_date=day, contract=contract,
                pii_key=b"test-pii-key", max_amount=1e5, max_line_bytes=1_000_000,
            )  # fmt: skip
            curate_partition(conn, day)


def insert_curated(conn: duckdb.DuckDBPyConnection, events: pd.DataFrame) -> None:
    """Insert hand-built curated-shaped events (feature input columns) into the warehouse."""
    conn.register("hand_built", events)
    conn.execute(
        "INSERT INTO curated.transactions BY NAME SELECT *, 'hand-built' AS source_file, "
        "1 AS source_line FROM hand_built"
    )
    conn.unregister("hand_built")


HOLD_SCRIPT = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read_only")
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@contextmanager
def warehouse_held_open(warehouse: Path, *, read_only: bool = False) -> Iterator[subprocess.Popen]:
    """Another process (as a person in the DuckDB CLI would) holding the warehouse file open
    until the block ends, or until the test closes the process's stdin."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(warehouse), "read_only" if read_only else "rw"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()


REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@contextmanager
def process_group(command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """``command`` started in the repo with the test's environment, output to ``log``; it and
    every process it starts (code server, runs) are killed when the block ends."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            with suppress(ProcessLookupError):  # whatever of the group is still there
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def dagster_daemon(dagster_home: Path) -> AbstractContextManager[subprocess.Popen]:
    """`dagster-daemon run` on the code location, with the test's environment and the
    instance of ``dagster_home`` (which must be DAGSTER_HOME); its log is daemon.log there."""
    command = [str(BIN / "dagster-daemon"), "run", "-m", "mlplatform.definitions"]
    return process_group(command, dagster_home / "daemon.log")


def dagster_cli(*args: str) -> None:
    """Run the `dagster` command on the code location (e.g. `sensor start landing_sensor`)."""
    subprocess.run(
        [str(BIN / "dagster"), *args, "-m", "mlplatform.definitions"], cwd=REPO, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip


def wait_until(
    condition: Callable[[], T | None], what: str, timeout: float = 300, log: Path | None = None
) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` (and the
    end of ``log``) when it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def sensor_ticks(instance: dg.DagsterInstance, name: str) -> list:
    """The ticks of a sensor or schedule, newest first."""
    for state in instance.all_instigator_state():
        if state.instigator_name == name:
            return list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return []


def retraining_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """The runs `retraining_sensor` requested."""
    return list(
        instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": "retraining_sensor"}))
    )


# What nobody can act on: warnings, MLflow's INFO lines, artifact download bars.
NOISE = (
    "warning", "detected uv project", "downloading artifacts", "info mlflow",
    "successfully registered model", "created version", "view run",
)  # fmt: skip


def noise_lines(output: str) -> list[str]:
    """The lines of a command's output that are noise (see NOISE)."""
    return [line for line in output.splitlines() if any(n in line.lower() for n in NOISE)]


def build_training_data(home: Path, cards: int = 250, days: int = 60, seed: int = 5) -> None:
    """Simulate ``days`` from START into ``home``'s landing folder and build the warehouse up
    to the master table (domain functions, no Dagster); the environment must point at
    ``home`` (MLPLATFORM_HOME) with :data:`TRAINING_ENV`."""
    from mlplatform.contract import load_contract
    from mlplatform.features.declarations import feature_registry
    from mlplatform.features.offline import build_card_features
    from mlplatform.ml.master_table import build_master_table
    from mlplatform.settings import DEFAULT_CONTRACT, get_settings
    from mlplatform.warehouse.connection import connect
    from mlplatform.warehouse.targets import build_targets

    settings = get_settings()
    contract = load_contract(DEFAULT_CONTRACT)
    simulate(SimulationConfig(n_cards=cards, days=days, start_date=START, seed=seed),
             home / "landing")  # fmt: skip
    load_warehouse(home / "landing", settings.warehouse_path)
    registry = feature_registry(settings, contract)
    with connect(settings.warehouse_path) as conn:
        build_card_features(conn, registry, START, START + timedelta(days=days - 1))
        build_targets(conn, settings, contract)
        build_master_table(conn, registry, settings, settings.datasets_dir)


@dataclass
class Webhook:
    """A local HTTP endpoint (outside-the-machine stand-in) that records what is POSTed."""

    url: str
    received: list[dict]
    status: int = 200
    delay_seconds: float = 0.0


@contextmanager
def webhook_server() -> Iterator[Webhook]:
    """A real HTTP server on 127.0.0.1 (a thread) answering ``status`` after
    ``delay_seconds`` to every POST; the JSON bodies are in ``received``."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hook = Webhook(url="", received=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.received.append(
                {"content_type": self.headers["Content-Type"], "json": json.loads(body)}
            )
            time.sleep(hook.delay_seconds)
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:  # the test's output is not its log
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


#: Ports for the servers the tests start: below Linux's ephemeral range (32768-60999), so that
#: no other process's bind to port 0 or outgoing connection takes one between the probe and
#: the server's own bind (a port probed with bind(("127.0.0.1", 0)) is an ephemeral one).
SERVER_PORTS = range(20_000, 32_000)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now, for a server a test starts: one of
    :data:`SERVER_PORTS` at random (workers and runs side by side rarely meet), bound once to
    check it is free."""
    import random
    import socket

    for _ in range(100):
        port = random.choice(SERVER_PORTS)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free port of 127.0.0.1 in {SERVER_PORTS} after 100 tries")


#: The API key of the services the tests start (MLPLATFORM_API_KEYS).
SERVICE_KEY = "serving-test-key"


@dataclass
class Server:
    """`mlplatform serve` in a subprocess; its stdout and stderr in files."""

    env: dict[str, str]
    output: Path
    port: int = 0
    process: subprocess.Popen | None = None
    http: httpx.Client = field(init=False)
    args: tuple[str, ...] = ()  # more options of `mlplatform serve` (e.g. --workers)

    def start(self) -> Server:
        self.port = free_port()
        self.output.mkdir(parents=True, exist_ok=True)
        started = len(list(self.output.glob("stdout-*")))
        with (
            (self.output / f"stdout-{started}").open("w") as stdout,
            (self.output / f"stderr-{started}").open("w") as stderr,
        ):
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlplatform.cli", "serve", "--port", str(self.port),
                 *self.args],
                env=self.env, stdout=stdout, stderr=stderr,
            )  # fmt: skip
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        deadline = time.monotonic() + 400  # a loaded machine: imports, model, store
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.server_output()[-3000:]
            try:
                if self.http.get("/v1/health").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError(f"server did not start: {self.server_output()[-3000:]}")

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=60)
        self.http.close()

    def server_output(self) -> str:
        return "".join(p.read_text() for p in sorted(self.output.glob("std*")))

    def predict(self, transactions: list[dict[str, Any]], key: str = SERVICE_KEY) -> httpx.Response:
        return self.http.post(
            "/v1/predict", json={"transactions": transactions}, headers={"X-API-Key": key}
        )

    def wait_for(self, ready: Any, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster for this worker's tests (tests/postgres.py); each test
    creates the databases it needs."""
    with postgres_cluster(free_port) as server:
        yield server


@pytest.fixture
def redis_service() -> Iterator[RedisServer]:
    """A Redis server of this test's own (tests/redis_server.py), empty, without persistence."""
    with redis_server(free_port) as server:
        yield server


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/hook"


def shuffle_training_labels(conn: duckdb.DuckDBPyConnection) -> None:
    """A worse dataset: the matured targets before the holdout shuffled among their rows
    (rebuild the master table after it for a new dataset version)."""
    conn.execute(
        """CREATE TEMP TABLE shuffled AS
           WITH rows AS (SELECT transaction_id, target FROM ml.targets
                         WHERE target IS NOT NULL AND partition_date < (
                             SELECT min(partition_date) FROM ml.master_table
                             WHERE split = 'holdout')),
                ids AS (SELECT transaction_id, row_number() OVER (ORDER BY transaction_id)
                        AS i FROM rows),
                labels AS (SELECT target, row_number() OVER (
                               ORDER BY hash(transaction_id || 'shuffle')) AS i FROM rows)
           SELECT transaction_id, target FROM ids JOIN labels USING (i);
           UPDATE ml.targets AS t SET target = s.target
           FROM shuffled AS s WHERE t.transaction_id = s.transaction_id;"""
    )


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """The process environment with ``values`` set within the block (for module fixtures,
    which cannot use the function-scoped ``monkeypatch``)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield


#: Simulated days of the shared trained platform (250 cards).
TRAINED_DAYS = 60


@dataclass(frozen=True)
class TrainedPlatform:
    """A trained platform's data home and Dagster home: 60 simulated days ingested, curated
    and featured, the master table, the `training` assets (every candidate family, version 1
    the champion) and the days after the master table scored by `predictions`."""

    home: Path
    dagster_home: Path
    scored_days: tuple[date, date]  # first and last day after the master table

    @property
    def env(self) -> dict[str, str]:
        """The environment that points the platform at this copy."""
        return {**TRAINING_ENV, "MLPLATFORM_HOME": str(self.home),
                "DAGSTER_HOME": str(self.dagster_home)}  # fmt: skip

    def copy(self, folder: Path) -> TrainedPlatform:
        """A copy of the platform in ``folder``, which works as the original does (the data
        home is relocatable: nothing in it names its own absolute path)."""
        home, dagster_home = folder / "home", folder / "dagster"
        shutil.copytree(self.home, home)
        shutil.copytree(self.dagster_home, dagster_home)
        return TrainedPlatform(home, dagster_home, self.scored_days)


def _build_trained_platform(root: Path) -> TrainedPlatform:
    """Build :class:`TrainedPlatform` in ``root`` with the asset definitions the platform runs."""
    from mlplatform.assets.models import candidate_asset, champion_asset
    from mlplatform.assets.partitions import partition_range_tags
    from mlplatform.assets.scoring import predictions
    from mlplatform.assets.training_data import training_reference_profile
    from mlplatform.definitions import build_resources
    from mlplatform.ml.models import FAMILIES
    from mlplatform.settings import get_settings

    home, dagster_home = root / "home", root / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")  # as `make` sets it up
    last = START + timedelta(days=TRAINED_DAYS - 1)
    with environment(TrainedPlatform(home, dagster_home, (last, last)).env):
        settings = get_settings()
        resources = build_resources(settings)
        build_training_data(home, days=TRAINED_DAYS)
        training = [training_reference_profile, *map(candidate_asset, FAMILIES),
                    champion_asset(FAMILIES)]  # fmt: skip
        with dg.DagsterInstance.get() as instance:
            dg.materialize(training, instance=instance, resources=resources, raise_on_error=True)
            with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
                trained = conn.execute("SELECT max(partition_date) FROM ml.master_table")
                first = trained.fetchone()[0] + timedelta(days=1)
            dg.materialize(
                [predictions], instance=instance, resources=resources, raise_on_error=True,
                tags=partition_range_tags(first, last),
            )  # fmt: skip
    return TrainedPlatform(home, dagster_home, (first, last))


@pytest.fixture(scope="session")
def trained_platform(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedPlatform:
    """The shared trained platform, built once per pytest run (with ``-n 2`` too: the first
    worker that needs it builds it under a file lock, the others wait and reuse it). Never
    change it: take a :meth:`TrainedPlatform.copy`."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the run's folder, common to its workers
    root, failed = shared / "trained-platform", shared / "trained-platform.failed"
    with (shared / "trained-platform.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():
            pytest.fail(f"the shared trained platform failed to build:\n{failed.read_text()}")
        if not (root / "scored_days").exists():
            try:
                platform = _build_trained_platform(root)
            except BaseException:
                failed.write_text(traceback.format_exc())
                raise
            (root / "scored_days").write_text(" ".join(map(str, platform.scored_days)))
    first, last = map(date.fromisoformat, (root / "scored_days").read_text().split())
    return TrainedPlatform(root / "home", root / "dagster", (first, last))


@pytest.fixture(autouse=True)
def sigterm_not_ignored() -> None:
    """Each test starts with SIGTERM's default action, as a process does.

    Dagster's ``capture_interrupts()`` (every ``materialize`` on the main thread) leaves
    SIGTERM with SIGINT's handler, and an xdist worker ignores SIGINT: from then on SIGTERM
    was ignored, also by every process the worker started (an ignored signal stays ignored
    through exec). A session fixture that runs Dagster (the shared trained platform) left it
    so for every later test of the worker; Dagster's compute-log ``tail`` and its watcher then
    ignored ``terminate()``, and each step of a run in a thread waited twice Dagster's 30 s
    for them (test_warehouse_lock's run: 61 s in every full run, 2 s alone; 88 s alone with
    SIGTERM ignored beforehand). A module or session fixture that runs Dagster and then starts
    a process calls :func:`default_sigterm` itself."""
    default_sigterm()


def default_sigterm() -> None:
    """SIGTERM's default action again, if it is ignored (see :func:`sigterm_not_ignored`)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def no_dagster_instance_left_current() -> Iterator[None]:
    """A test leaves Dagster's current definitions-state storage as it found it.

    A Dagster instance makes its storage current when it is entered and restores the previous one
    on exit. A context that opens an instance of its own and is never closed (e.g.
    `build_schedule_context(instance=...)` outside a `with`) leaves the storage of a dead instance
    current, and a later definitions load in the same worker fails with "Attempted to resolve
    undefined DagsterInstance weakref", far from the test that caused it. No storage at all (None)
    is harmless, and Dagster itself leaves it: `Definitions.load_asset_value` builds its input and
    output contexts outside a `with`, each entering an ephemeral instance that has no storage.
    """
    from dagster._core.storage.defs_state.base import DefsStateStorage

    before = DefsStateStorage.get()
    yield
    if DefsStateStorage.get() not in (before, None):
        pytest.fail(
            "the test left a Dagster instance's definitions-state storage current: enter every "
            "instance and every build_*_context(...) in a `with` block"
        )
