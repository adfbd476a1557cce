"""Serving benchmark: `mlplatform serve` (online features included) beside `mlflow models serve`.

In one run, on a copy of a demo data home (default: /work/main/.mlplatform, 2,000 cards x 90
days, a LightGBM champion; never written to): the online store is the warehouse as it was at
the end of the day before the last day (the last day's curated rows deleted from the copy),
and the last day's transactions are sent one per request, in time order, at each concurrency.
Beside it, the champion's LightGBM booster, re-logged with `mlflow.lightgbm.log_model` into a
scratch MLflow store and served by `mlflow models serve --env-manager local`, is sent the same
transactions' precomputed feature vectors (from `features.card_features`).

Ours runs in each configuration of ``--ours`` (``STATE:WORKERS``: ``memory:1`` is one process
holding the fresh state; ``redis:2`` is `serve --workers 2` with MLPLATFORM_ONLINE_STATE on a
`redis-server` the script starts in the work folder), each on a fresh copy of the home.

Usage: python bench/serving.py [--source DIR] [--work DIR] [--requests 100]
       [--concurrency 1,8,32] [--ours memory:1,redis:2]
Prints latency p50/p99 (client side, ms) and throughput per concurrency for both, their
ratios, the share of our latency spent on online features, and where the time of one of our
requests goes (the Server-Timing header's stages, mean ms, beside the client's latency).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"{what} did not start:\n{log.read_text()[-3000:]}")


def prepare_home(source: Path, work: Path) -> tuple[Path, str]:
    """A copy of the data home with an online store as of the day before the last day;
    returns the home and that last day."""
    import duckdb

    home = work / "home"
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(source, home, ignore=shutil.ignore_patterns("dagster", "serving", "online"))
    store = home / "online" / "store.duckdb"
    store.parent.mkdir()
    shutil.copy(home / "warehouse.duckdb", store)
    with duckdb.connect(str(store)) as conn:
        (day,) = conn.execute("SELECT max(partition_date) FROM curated.transactions").fetchone()
        conn.execute("DELETE FROM curated.transactions WHERE partition_date = ?", [day])
        conn.execute("CHECKPOINT")
    return home, day.isoformat()


def load_requests(home: Path, day: str) -> tuple[list[dict], list[dict], list[str], np.ndarray]:
    """The day's curated transactions (canonical columns, time order), their precomputed feature
    vectors as the booster takes them, and the vectors' column names."""
    import duckdb
    import pandas as pd

    from mlplatform.contract import load_contract
    from mlplatform.serving.model import load_model
    from mlplatform.settings import get_settings

    settings = get_settings()
    contract = load_contract(settings.contract)
    landing = pd.read_csv(home / "landing" / f"transactions_{day}.csv", dtype=str)
    canonical = landing.rename(columns={c: name for name, c in contract.columns.items()})
    canonical = canonical.drop(columns=["label"], errors="ignore").sort_values("event_time")
    champion = load_model(settings.tracking_uri, settings.model_name, "champion")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        features = conn.execute(
            "SELECT * FROM features.card_features WHERE partition_date = ?", [day]
        ).df()
    # Rows the landing rules quarantined have no features: not a transaction to send.
    canonical = canonical[canonical["transaction_id"].isin(features["transaction_id"])]
    features = features.set_index("transaction_id").loc[canonical["transaction_id"]]
    frame = champion.model.spec.frame(features)
    for name in champion.model.spec.categorical:  # the booster's own category codes
        frame[name] = frame[name].cat.codes.replace(-1, np.nan).astype(float)
    vectors = [
        {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]
    transactions = [
        {k: v for k, v in row.items() if isinstance(v, str)} for row in canonical.to_dict("records")
    ]
    return transactions, vectors, list(frame.columns), champion.model.raw_score(features)


def start_redis(work: Path) -> tuple[subprocess.Popen, str]:
    """A `redis-server` without persistence in ``work``; its URL."""
    import redis

    port = _free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work),
         "--save", "", "--appendonly", "no"],
        stdout=(work / "redis.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return process, url
        except redis.ConnectionError as error:
            if time.monotonic() > deadline or process.poll() is not None:
                log = (work / "redis.log").read_text()
                raise SystemExit(f"redis-server did not start:\n{log}") from error
            time.sleep(0.05)


def start_ours(home: Path, work: Path, state: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = work / f"serve-{workers}.log"
    env = {**os.environ, "MLPLATFORM_HOME": str(home), "MLPLATFORM_API_KEYS": KEY,
           "MLPLATFORM_MAX_STORE_AGE_HOURS": "100000",
           "MLPLATFORM_ONLINE_STATE": state}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "mlplatform.cli", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_until_up(f"{url}/v1/health/ready", process, "mlplatform serve", log)
    return process, url


def start_mlflow(home: Path, work: Path, columns: list[str]) -> tuple[subprocess.Popen, str]:
    """The champion's booster re-logged into a scratch store and served by MLflow."""
    import lightgbm as lgb
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from mlplatform.serving.model import load_model
    from mlplatform.settings import get_settings

    settings = get_settings()
    champion = load_model(settings.tracking_uri, settings.model_name, "champion")
    booster = lgb.Booster(model_str=champion.model.estimator.model_to_string())
    # JSON has no categoricals: the categories arrive as the codes the booster splits on.
    booster.pandas_categorical = None
    scratch = work / "mlflow-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("bench", artifact_location=(scratch / "art").as_uri())
    example = pd.DataFrame([dict.fromkeys(columns, 0.0)])
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.lightgbm.log_model(
            booster, name="booster", signature=infer_signature(example, np.zeros(1))
        )
    port = _free_port()
    log = work / "mlflow-serve.log"
    bin_dir = Path(sys.executable).parent  # it runs `uvicorn` from PATH
    process = subprocess.Popen(
        [str(bin_dir / "mlflow"), "models", "serve", "-m", info.model_uri,
         "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_until_up(f"{url}/ping", process, "mlflow models serve", log)
    return process, url


#: The stages of our Server-Timing header, in a request's order.
STAGES = ("parse", "validation", "state", "features", "model", "log")


@dataclass
class Run:
    latencies_ms: list[float]
    seconds: float
    timings: list[dict[str, float]]  # each response's Server-Timing stages (ms)

    @property
    def features_ms(self) -> list[float]:
        return [t.get("features", 0.0) for t in self.timings]

    def stage_mean(self, stage: str) -> float:
        return float(np.mean([t.get(stage, 0.0) for t in self.timings]))

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.latencies_ms, q))

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class KeepAliveClient:
    """HTTP/1.1 POSTs of JSON over one kept-alive socket: the load's client. httpx spent
    ~1 ms of Python per request (counted in the latency) and, with 8 threads, CPU that the
    2 cores' servers needed; this writes the request bytes and reads the Content-Length body.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        address, self.path = url.removeprefix("http://").split("/", 1)
        host, port = address.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fixed = {"Host": address, "Content-Type": "application/json", **headers}
        self.head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self.buffer = b""

    def post(self, body: dict) -> Reply:
        payload = json.dumps(body).encode()
        request = f"POST /{self.path} HTTP/1.1\r\n{self.head}Content-Length: {len(payload)}\r\n\r\n"
        self.sock.sendall(request.encode() + payload)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._receive()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        if "content-length" not in headers:
            raise SystemExit(f"an answer without Content-Length: {status_line} {headers}")
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self.buffer += self._receive()
        body_bytes, self.buffer = self.buffer[:length], self.buffer[length:]
        return Reply(int(status_line.split()[1]), headers, body_bytes)

    def _receive(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def load(
    url: str,
    headers: dict[str, str],
    bodies: list[dict],
    concurrency: int,
    check: Callable[[Reply], dict[str, float]],
) -> Run:
    """Send ``bodies`` (one per request) from ``concurrency`` threads, each on its own
    kept-alive connection; ``check`` returns the stages of a response (from Server-Timing,
    none for mlflow's)."""
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    lock = threading.Lock()
    queue = iter(enumerate(bodies))

    def worker() -> None:
        client = KeepAliveClient(url, headers)
        try:
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                started = time.perf_counter()
                response = client.post(item[1])
                elapsed = (time.perf_counter() - started) * 1000
                stages = check(response)
                with lock:
                    latencies.append(elapsed)
                    timings.append(stages)
        finally:
            client.close()

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            worker()
        except BaseException as error:  # a thread's SystemExit would pass unseen
            errors.append(error)

    threads = [threading.Thread(target=guarded) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Run(latencies, time.perf_counter() - started, timings)


def _ours_stages(response: Reply) -> dict[str, float]:
    if response.status != 200:
        raise SystemExit(f"mlplatform serve answered {response.status}: {response.body!r}")
    parts = [p.strip() for p in response.headers["server-timing"].split(",")]
    return {k: float(v) for k, v in (p.split(";dur=") for p in parts if ";dur=" in p)}


def _mlflow_ok(response: Reply) -> dict[str, float]:
    if response.status != 200:
        raise SystemExit(f"mlflow models serve answered {response.status}: {response.body!r}")
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/main/.mlplatform"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/mlplatform-bench-serving"))
    parser.add_argument("--requests", type=int, default=100, help="per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--ours", default="memory:1,redis:2", help="STATE:WORKERS, ...")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    configurations = [(c.split(":")[0], int(c.split(":")[1])) for c in args.ours.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    home, day = prepare_home(args.source.resolve(), args.work)
    os.environ["MLPLATFORM_HOME"] = str(home)
    transactions, vectors, columns, raw_scores = load_requests(home, day)
    needed = args.requests * len(levels) + 10
    if len(transactions) < needed:
        raise SystemExit(f"{day} has {len(transactions)} transactions; {needed} needed")
    ours_bodies = [{"transactions": [t]} for t in transactions]
    mlflow_bodies = [
        {"dataframe_split": {"columns": columns, "data": [list(v.values())]}} for v in vectors
    ]
    parts = [
        slice(10 + n * args.requests, 10 + (n + 1) * args.requests) for n in range(len(levels))
    ]
    processes: list[subprocess.Popen] = []
    try:
        theirs, theirs_url = start_mlflow(home, args.work, columns)
        processes.append(theirs)
        mlflow_run = (f"{theirs_url}/invocations", {})
        load(*mlflow_run, mlflow_bodies[:10], 1, _mlflow_ok)  # warm-up
        sample = [list(v.values()) for v in vectors[:50]]
        served = httpx.post(
            mlflow_run[0], json={"dataframe_split": {"columns": columns, "data": sample}}
        ).json()["predictions"]
        difference = float(np.max(np.abs(np.asarray(served) - raw_scores[:50])))
        rows = []
        for state, workers in configurations:
            shutil.rmtree(home / "serving", ignore_errors=True)  # no fresh state of the last
            url = "memory"
            if state == "redis":
                redis_server, url = start_redis(args.work)
                processes.append(redis_server)
            ours, ours_url = start_ours(home, args.work, url, workers)
            processes.append(ours)
            ours_run = (f"{ours_url}/v1/predict", {"X-API-Key": KEY})
            load(*ours_run, ours_bodies[:10], 1, _ours_stages)  # warm-up
            for concurrency, part in zip(levels, parts, strict=True):
                mine = load(*ours_run, ours_bodies[part], concurrency, _ours_stages)
                base = load(*mlflow_run, mlflow_bodies[part], concurrency, _mlflow_ok)
                rows.append((f"{state}:{workers}", concurrency, mine, base))
            for process in processes[-2 if state == "redis" else -1 :][::-1]:
                process.terminate()
                process.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)
    print(f"day {day}: {len(transactions):,} transactions; {args.requests} single-transaction "
          f"requests per level; store as of the day before; mlflow's booster vs in process: "
          f"max |difference| {difference:.1e} over 50 rows")  # fmt: skip
    print(
        "| ours | concurrency | ours p50 ms | ours p99 ms | ours req/s | features share "
        "| mlflow p50 ms | mlflow p99 ms | mlflow req/s | p50 ratio | p99 ratio | req/s ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, concurrency, mine, base in rows:
        share = sum(mine.features_ms) / sum(mine.latencies_ms)
        print(
            f"| {name} | {concurrency} | {mine.quantile(0.5):.1f} | {mine.quantile(0.99):.1f} "
            f"| {mine.throughput:.1f} | {share:.0%} | {base.quantile(0.5):.1f} "
            f"| {base.quantile(0.99):.1f} | {base.throughput:.1f} "
            f"| {mine.quantile(0.5) / base.quantile(0.5):.1f} "
            f"| {mine.quantile(0.99) / base.quantile(0.99):.1f} "
            f"| {mine.throughput / base.throughput:.2f} |"
        )
    print("\nWhere one request's time goes (mean ms: the server's stages, then the client's "
          "latency; the rest is HTTP, JSON and the framework):")  # fmt: skip
    print(f"| ours | concurrency | {' | '.join(STAGES)} | client | rest |")
    print("|---|---:|" + "---:|" * (len(STAGES) + 2))
    for name, concurrency, mine, _ in rows:
        stages = [mine.stage_mean(s) for s in STAGES]
        client = float(np.mean(mine.latencies_ms))
        print(
            f"| {name} | {concurrency} | {' | '.join(f'{v:.2f}' for v in stages)} "
            f"| {client:.2f} | {client - sum(stages):.2f} |"
        )


if __name__ == "__main__":
    main()
