"""`mlplatform serve` with its online state in Redis: several processes, one card's answer.

A real `redis-server` (a temp folder, a free port, no persistence) and real uvicorn servers
on a copy of the suite's shared trained platform. Its online store is the warehouse as of the
evening before the last scored day; two service processes share the Redis and take that day's
transactions alternately, as a load balancer would hand them out.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pandas as pd
import pytest
from conftest import SERVICE_KEY, Server, TrainedPlatform, environment, free_port
from redis_server import RedisServer, redis_server
from test_serving import Platform, serving_copy

from mlplatform.assets.serving import online_feature_store, serving_log
from mlplatform.definitions import build_resources
from mlplatform.features.card_state import HASH
from mlplatform.serving.model import load_version
from mlplatform.serving.online import OnlineFeatures
from mlplatform.serving.shared_state import RedisState
from mlplatform.settings import get_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(
    trained_platform: TrainedPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Platform:
    """test_serving's copy, its store cut back to the evening before the last scored day."""
    platform = serving_copy(trained_platform, tmp_path_factory.mktemp("serving-redis"))
    day = trained_platform.scored_days[1]
    with duckdb.connect(str(platform.settings.online_store_path)) as conn:
        conn.execute("DELETE FROM curated.transactions WHERE partition_date >= ?", [day])
        last = conn.execute("SELECT max(event_time) FROM curated.transactions").fetchone()[0]
    platform.last_event = last
    return platform


@pytest.fixture(scope="module")
def redis(platform: Platform) -> Iterator[RedisServer]:
    with redis_server(free_port) as server:
        yield server


def _env(platform: Platform, redis: RedisServer) -> dict[str, str]:
    return {**platform.env, "MLPLATFORM_ONLINE_STATE": redis.url,
            "MLPLATFORM_CHALLENGER_MODE": "off", "MLPLATFORM_MAX_BATCH": "50"}  # fmt: skip


@pytest.fixture(scope="module")
def pair(platform: Platform, redis: RedisServer) -> Iterator[tuple[Server, Server]]:
    """Two service processes on one Redis (the first publishes the store there)."""
    root = platform.home.parent
    servers = []
    for name in ("a", "b"):
        servers.append(Server(_env(platform, redis), root / f"server-{name}").start())
        servers[-1].wait_for(lambda: _ready(servers[-1]), "the online state in Redis")
    yield servers[0], servers[1]
    for server in servers:
        server.stop()


def _ready(server: Server) -> bool:
    return server.http.get("/v1/health/ready").status_code == 200


def _day_rows(platform: Platform, day: date) -> list[dict[str, Any]]:
    """The landing rows of ``day`` (canonical columns), in time order."""
    landing = platform.landing
    rows = landing[landing["event_time"].str.startswith(day.isoformat())]
    rows = rows.sort_values("event_time", kind="stable")
    return [{k: v for k, v in row.items() if isinstance(v, str)} for row in rows.to_dict("records")]


@contextmanager
def _one_process(platform: Platform, store: Path | None = None) -> Iterator[OnlineFeatures]:
    """One process's feature source with its state in memory, over ``store`` (default: the
    whole warehouse, i.e. the store plus the replayed day); closed afterwards (the warehouse
    is then free for a run)."""
    settings = platform.settings
    features = OnlineFeatures(
        store or settings.warehouse_path, platform.registry, settings.pseudonym_key
    )
    try:
        yield features
    finally:
        features.close()


def _champion_score(platform: Platform, features: OnlineFeatures, transaction: dict) -> float:
    champion = load_version(platform.settings.tracking_uri, platform.settings.model_name, "1")
    return float(champion.score(features.compute([transaction]).frame)[0])


def _purchases(platform: Platform, card: str, day: int, tag: str, count: int) -> list[dict]:
    base = platform.transactions([card], day=day, tag=tag)[0]
    start = pd.Timestamp(base["event_time"])
    return [
        {**base, "transaction_id": f"{tag}-{i}", "amount": f"{10 + i}.25",
         "event_time": f"{start + timedelta(minutes=3 * i):%Y-%m-%d %H:%M:%S}"}
        for i in range(count)
    ]  # fmt: skip


def test_two_processes_on_one_redis_answer_a_replayed_day_as_the_batch_predictions(
    platform: Platform, trained_platform: TrainedPlatform, pair: tuple[Server, Server]
) -> None:
    day = trained_platform.scored_days[1]
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        batch = dict(
            conn.execute(
                "SELECT transaction_id, score FROM ml.predictions WHERE partition_date = ?", [day]
            ).fetchall()
        )
    # The day's rows that ingestion kept (the simulation quarantines a few), in time order.
    rows = [t for t in _day_rows(platform, day) if t["transaction_id"] in batch]
    scores = {}
    for i, start in enumerate(range(0, len(rows), 20)):  # 20 transactions a request
        answer = pair[i % 2].predict(rows[start : start + 20])
        assert answer.status_code == 200, answer.text
        scores |= {p["transaction_id"]: p["score"] for p in answer.json()["predictions"]}
    assert len(scores) == len(rows) == len(batch) > 100
    worst = max(abs(scores[t] - batch[t]) for t in batch)
    assert worst <= 1e-9, worst


def test_purchases_of_one_card_posted_to_two_processes_at_once_are_each_counted_once(
    platform: Platform, redis: RedisServer, pair: tuple[Server, Server]
) -> None:
    card = platform.cards[7]
    purchases = _purchases(platform, card, day=3, tag="together", count=16)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: pair[i % 2].predict([purchases[i]]), range(16)))
    assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers]
    # A later purchase sees the 16 exactly once each, as one process that took them all does.
    probe = _purchases(platform, card, day=4, tag="after-together", count=1)[0]
    answer = pair[0].predict([probe])
    with _one_process(platform) as memory:
        for purchase in purchases:
            memory.record(memory.compute([purchase]))
        assert answer.json()["predictions"][0]["score"] == pytest.approx(
            _champion_score(platform, memory, probe), abs=1e-12
        )
        shared = RedisState(redis.url, memory.compiled)
        batch = memory.compute([probe])
        pending = shared.read(batch.records)
        shared.release(pending)
        held = pending.state.cards[batch.records[0][3]]
        ids = {memory.compute([p]).records[0][1] for p in purchases}
    assert ids <= {event[HASH] for event in held.events()}


def test_redis_killed_answers_503_with_the_reason_then_recovers_from_the_log_by_itself(
    platform: Platform, redis: RedisServer, pair: tuple[Server, Server]
) -> None:
    card = platform.cards[11]
    before = _purchases(platform, card, day=6, tag="before-kill", count=3)
    for i, purchase in enumerate(before):
        assert pair[i % 2].predict([purchase]).status_code == 200
    redis.kill()
    probe = _purchases(platform, card, day=7, tag="while-down", count=1)[0]
    down = pair[1].predict([probe])
    assert down.status_code == 503 and down.headers["Retry-After"] == "1"
    error = down.json()["errors"][0]
    assert error["rule"] == "online_state_unavailable" and "unreachable" in error["detail"]
    ready = pair[0].http.get("/v1/health/ready")
    assert ready.status_code == 503 and "unreachable" in ready.json()["online_state_error"]
    redis.start()  # the same port, empty: the state is rebuilt from the store and the log
    for server in pair:
        server.wait_for(lambda s=server: _ready(s), "the state rebuilt in Redis")
    answer = pair[1].predict([probe])
    assert answer.status_code == 200, answer.text
    logged = [line["event"] for line in _returned_lines(platform)]
    # The store the services read (not the warehouse: it also holds the day after the store,
    # which only reaches the services' state if a test before this one replayed it).
    with _one_process(platform, platform.settings.online_store_path) as memory:
        memory.restore(logged)  # every transaction answered since the store, as logged
        assert answer.json()["predictions"][0]["score"] == pytest.approx(
            _champion_score(platform, memory, probe), abs=1e-12
        )
    # The purchases both processes answered before the kill are in the log it was rebuilt from.
    assert {p["transaction_id"] for p in before} <= {e["transaction_id"] for e in logged}


def test_the_store_asset_publishes_a_version_the_processes_follow_with_fresh_ones_carried(
    platform: Platform, redis: RedisServer, pair: tuple[Server, Server]
) -> None:
    with (
        environment({**platform.env, "MLPLATFORM_ONLINE_STATE": redis.url}),
        dg.DagsterInstance.get() as instance,
    ):
        result = dg.materialize(
            [online_feature_store], instance=instance, resources=build_resources(get_settings())
        )
    metadata = {
        k: v.value
        for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()
    }
    assert metadata["online_state"].startswith("version ")
    assert metadata["online_state_cards"] == metadata["cards"]
    # Purchases scored after the warehouse's last event, which the new store lacks: carried.
    after = [e for e in _returned_lines(platform) if e["transaction_id"].startswith("together-")]
    assert metadata["online_state_carried"] >= len(after) == 16
    for server in pair:
        server.wait_for(lambda s=server: "online store reopened" in s.server_output(), "reload")
    with _one_process(platform, platform.settings.online_store_path) as memory:
        memory.restore(line["event"] for line in _returned_lines(platform))
        # A card of each earlier test (its purchases carried), each asked of another process.
        for server, card in zip(pair, (platform.cards[7], platform.cards[11]), strict=True):
            tag = f"after-publish-{card[-4:]}"
            probe = _purchases(platform, card, day=8, tag=tag, count=1)[0]
            answer = server.predict([probe])
            assert answer.json()["predictions"][0]["score"] == pytest.approx(
                _champion_score(platform, memory, probe), abs=1e-12
            )


def _returned_lines(platform: Platform) -> list[dict[str, Any]]:
    return [
        line
        for path in sorted(platform.settings.serving_dir.glob("predictions-*.jsonl"))
        for text in path.read_text().splitlines()
        if (line := json.loads(text))["returned"] and line["role"] == "champion"
    ]


def _worker_pids(server: Server) -> list[int]:
    """The uvicorn worker processes of ``server`` (children running multiprocessing's spawn)."""
    assert server.process is not None
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server.process.pid and b"spawn_main" in command:
            pids.append(int(stat.parent.name))
    return pids


@contextmanager
def _two_workers(platform: Platform, redis: RedisServer, name: str) -> Iterator[Server]:
    """`mlplatform serve --workers 2` on the module's Redis, both workers up; stopped after."""
    server = Server(
        _env(platform, redis), platform.home.parent / name, args=("--workers", "2")
    ).start()
    try:
        server.wait_for(lambda: len(_worker_pids(server)) == 2 and _ready(server), "2 workers")
        yield server
    finally:
        server.stop()


def test_two_workers_under_load_log_every_answer_once_and_survive_a_killed_worker(
    platform: Platform, redis: RedisServer, pair: tuple[Server, Server]
) -> None:
    with _two_workers(platform, redis, "workers") as server:
        day = 9
        cards = platform.cards[40:120]
        transactions = platform.transactions(cards, day=day, tag="load")

        def send(i: int) -> tuple[str, int]:
            try:
                status = server.predict([transactions[i]]).status_code
            except httpx.TransportError:  # in flight on the killed worker
                status = 0
            return transactions[i]["transaction_id"], status

        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(send, range(40)))
            pids_before = _worker_pids(server)
            killed = pids_before[0]
            os.kill(killed, signal.SIGKILL)
            second = list(pool.map(send, range(40, len(transactions))))
        # The supervisor starts a worker in its place, which takes new connections once it
        # has loaded (it holds none: the fewest).
        server.wait_for(
            lambda: killed not in (pids := _worker_pids(server)) and len(pids) == 2,
            "a worker in place of the killed one",
        )
        workers = _worker_pids(server)
        replacement = next(pid for pid in workers if pid not in set(pids_before))

        def lands_on_the_replacement() -> bool:
            with socket.create_connection(("127.0.0.1", server.port)) as probe:
                return _owner(server, workers, probe) == replacement

        server.wait_for(lands_on_the_replacement, "a connection handed to the replacement")
        answered = [t for t, status in first + second if status == 200]
        # Only requests in flight on the killed worker may fail; the other worker answers.
        assert len(answered) >= len(transactions) - 8
        assert sum(status == 200 for _, status in second[8:]) == len(second) - 8
    # No card's state half-updated: every answered purchase is in its card's state in Redis.
    with _one_process(platform) as memory:
        kept = [t for t in transactions if t["transaction_id"] in answered]
        records = memory.compute(kept).records
        shared = RedisState(redis.url, memory.compiled)
        pending = shared.read(records)
        shared.release(pending)
    for record in records:
        assert record[1] in {event[HASH] for event in pending.state.cards[record[3]].events()}
    event_day = pd.Timestamp(transactions[0]["event_time"]).date()
    with environment(platform.env), dg.DagsterInstance.get() as instance:
        dg.materialize(
            [serving_log], partition_key=event_day.isoformat(), instance=instance,
            resources=build_resources(get_settings()),
        )  # fmt: skip
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        logged = conn.execute(
            "SELECT transaction_id, count(*) FROM monitoring.serving_log "
            "WHERE role = 'champion' AND transaction_id LIKE 'load-%' GROUP BY ALL"
        ).fetchall()
    counts = dict(logged)
    assert set(answered) <= set(counts) and set(counts.values()) == {1}


@pytest.mark.parametrize(("reuse_port", "workers"), [(False, "2"), (True, "1")])
def test_serve_refuses_a_port_another_process_listens_on(
    platform: Platform, redis: RedisServer, reuse_port: bool, workers: str
) -> None:
    """A port held by another process (even one that lets others share it) is refused,
    naming it, before the model and the store are loaded; nothing starts."""
    with socket.create_server(("127.0.0.1", 0), reuse_port=reuse_port) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mlplatform.cli", "serve", "--port", str(port),
             "--workers", workers],
            env=_env(platform, redis), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stdout
    assert "Address already in use" in result.stdout


def _held_connections(server: Server, workers: list[int]) -> dict[int, set[int]]:
    """The client ports of the connections each worker holds open (/proc): a connection the
    client closed counts until the worker closes it too."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if int(local.split(":")[1], 16) == server.port and state != "0A":  # not LISTEN
            inodes[f"socket:[{inode}]"] = int(remote.split(":")[1], 16)
    held: dict[int, set[int]] = {pid: set() for pid in workers}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target in inodes:
                held[pid].add(inodes[target])
    return held


def _owner(server: Server, workers: list[int], sock: socket.socket) -> int:
    """The worker that accepted ``sock``'s connection."""
    port = sock.getsockname()[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid, ports in _held_connections(server, workers).items():
            if port in ports:
                return pid
        time.sleep(0.01)
    raise AssertionError(f"no worker accepted the connection from port {port}")


def test_two_workers_each_take_a_new_connection_on_the_one_holding_fewer(
    platform: Platform, redis: RedisServer, pair: tuple[Server, Server]
) -> None:
    with _two_workers(platform, redis, "spread") as server:
        server.http.close()  # only this test's connections from here on
        workers = _worker_pids(server)

        def held() -> list[int]:
            return sorted(len(ports) for ports in _held_connections(server, workers).values())

        # A pool opening its 8 connections at once, before any request (with one listening
        # socket shared by the workers, 6/2 or worse in 18 of 20 bursts).
        with ThreadPoolExecutor(8) as pool:
            socks = list(
                pool.map(lambda _: socket.create_connection(("127.0.0.1", server.port)), range(8))
            )
        server.wait_for(lambda: sum(held()) == 8, "the workers to take the 8 connections")
        assert held() == [4, 4]
        clients = []
        for sock in socks:
            client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            client.sock = sock
            clients.append(client)
        transactions = platform.transactions(platform.cards[120:128], day=20, tag="spread")
        for client, transaction in zip(clients, transactions, strict=True):
            client.request(
                "POST", "/v1/predict", body=json.dumps({"transactions": [transaction]}),
                headers={"X-API-Key": SERVICE_KEY, "Content-Type": "application/json"},
            )  # fmt: skip
            response = client.getresponse()
            assert response.status == 200 and json.loads(response.read())["predictions"]
        # Three of one worker's connections close: the next three connections go to it.
        first = _held_connections(server, workers)[workers[0]]
        for client in [c for c in clients if c.sock.getsockname()[1] in first][:3]:
            client.close()
        server.wait_for(lambda: held() == [1, 4], "the worker to see 3 connections close")
        more = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        server.wait_for(lambda: sum(held()) == 8, "the workers to take 3 more connections")
        assert held() == [4, 4]
        for sock in more:
            sock.close()
