"""Beyond one machine (`platform/`): on the Postgres instance the daemon's landing sensor runs
the reference and daily jobs and `dagster job execute` runs the training job, their runs, ticks
and check results in Postgres; MLflow on a Postgres backend store registers and promotes, and
`load_champion()` and the API load from it. The Docker and Kubernetes configurations and the
compose file are checked against what they configure (a real Postgres; there is no Docker
engine or cluster here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from mlplatform.contract import load_contract
from mlplatform.settings import Settings, get_settings
from tests.conftest import (
    BIN,
    FINISHED,
    REPO,
    SERVICE_KEY,
    PlatformHome,
    Server,
    TrainedPlatform,
    dagster_cli,
    dagster_daemon,
    environment,
    simulate_landing,
    wait_until,
)
from tests.postgres import Postgres

PLATFORM = REPO / "platform"
POSTGRES_FIELDS = {
    "hostname": "DAGSTER_POSTGRES_HOST", "port": "DAGSTER_POSTGRES_PORT",
    "username": "DAGSTER_POSTGRES_USER", "password": "DAGSTER_POSTGRES_PASSWORD",
    "db_name": "DAGSTER_POSTGRES_DB",
}  # fmt: skip


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _database(postgres: Postgres, purpose: str) -> str:
    return postgres.create_database(f"{purpose}_{uuid.uuid4().hex[:8]}")


def _use_postgres_instance(dagster_home: Path, postgres: Postgres, database: str) -> dict:
    """Make ``dagster_home`` the Postgres instance (platform/dagster.yaml) on ``database``;
    the environment it reads."""
    shutil.copy(PLATFORM / "dagster.yaml", dagster_home / "dagster.yaml")
    return postgres.dagster_env(database)


def _dagster_job(job: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`dagster job execute` of the code location, as a user runs a job from a shell."""
    return subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "mlplatform.definitions", "-j", job,
         *args],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _runs(postgres: Postgres, database: str) -> dict[str, str]:
    """Job name -> status of every run in the instance's Postgres `runs` table."""
    rows = postgres.query(database, "SELECT pipeline_name, status FROM runs")
    return dict(rows)


def _check_results(postgres: Postgres, database: str, job: str) -> dict[str, str]:
    """Check name -> status of the checks that `job`'s runs evaluated, from Postgres."""
    rows = postgres.query(
        database,
        "SELECT c.check_name, c.execution_status FROM asset_check_executions c "
        "JOIN runs r ON r.run_id = c.run_id WHERE r.pipeline_name = %s",
        job,
    )
    return dict(rows)


# --- the Postgres instance --------------------------------------------------------------------


@pytest.mark.e2e
def test_the_daemon_on_the_postgres_instance_runs_the_landing_sensors_runs_and_checks_there(
    platform_home: PlatformHome, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = _database(postgres, "dagster")
    for name, value in _use_postgres_instance(
        platform_home.dagster_home, postgres, database
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLPLATFORM_SENSOR_INTERVAL_SECONDS", "1")
    simulate_landing(platform_home.landing, days=2, cards=20)
    log = platform_home.dagster_home / "daemon.log"

    with dg.DagsterInstance.get() as instance, dagster_daemon(platform_home.dagster_home):
        dagster_cli("sensor", "start", "landing_sensor")
        # The card reference and the days: one run each.
        runs = wait_until(
            lambda: _finished_sensor_runs(instance, 2), "the landing sensor's two runs", log=log
        )

    statuses = {r.dagster_run.job_name: r.dagster_run.status for r in runs}
    assert statuses == dict.fromkeys(("reference_data", "daily_ingestion"), _SUCCESS), statuses
    assert _runs(postgres, database) == {"reference_data": "SUCCESS", "daily_ingestion": "SUCCESS"}
    checks = _check_results(postgres, database, "daily_ingestion")
    assert checks and set(checks.values()) == {"SUCCEEDED"}, checks
    # No SQLite storage in DAGSTER_HOME (only the steps' compute logs are files there).
    assert not list(platform_home.dagster_home.rglob("*.db"))
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        (days,) = conn.execute(
            "SELECT count(DISTINCT partition_date) FROM curated.transactions"
        ).fetchone()
    assert days == 2
    (ticks,) = postgres.query(database, "SELECT count(*) FROM job_ticks WHERE status = 'SUCCESS'")[
        0
    ]
    assert ticks >= 1  # the sensor's state is in Postgres too


_SUCCESS = dg.DagsterRunStatus.SUCCESS


def _finished_sensor_runs(instance: dg.DagsterInstance, count: int) -> list[dg.RunRecord] | None:
    """The landing sensor's runs once there are ``count`` and all have finished."""
    runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": "landing_sensor"}))
    return (
        runs if len(runs) >= count and all(r.dagster_run.status in FINISHED for r in runs) else None
    )


# --- MLflow on a Postgres backend store --------------------------------------------------------


@dataclass
class Trained:
    """A copy of the shared platform retrained on Postgres: Dagster's instance and MLflow's
    backend store there, the artifacts in a shared folder."""

    platform: TrainedPlatform
    env: dict[str, str]
    dagster_db: str
    mlflow_db: str
    training: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def trained(
    trained_platform: TrainedPlatform, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    root = tmp_path_factory.mktemp("postgres-platform")
    platform = trained_platform.copy(root)
    # A fresh instance and registry: the copy's SQLite ones are not used.
    dagster_db, mlflow_db = _database(postgres, "dagster"), _database(postgres, "mlflow")
    env = {
        **platform.env, **_use_postgres_instance(platform.dagster_home, postgres, dagster_db),
        "MLPLATFORM_MLFLOW_TRACKING_URI": postgres.url(mlflow_db),
        "MLPLATFORM_MLFLOW_ARTIFACTS": str(root / "shared-artifacts"),
        "MLPLATFORM_CANDIDATE_FAMILIES": '["lightgbm"]', "MLPLATFORM_SEARCH_ITERATIONS": "1",
    }  # fmt: skip
    training = _dagster_job("training", env)
    return Trained(platform, env, dagster_db, mlflow_db, training)


@pytest.mark.e2e
def test_the_training_job_on_postgres_registers_and_promotes_in_the_postgres_registry(
    trained: Trained, postgres: Postgres
) -> None:
    assert trained.training.returncode == 0, trained.training.stderr[-3000:]
    assert _runs(postgres, trained.dagster_db) == {"training": "SUCCESS"}
    checks = _check_results(postgres, trained.dagster_db, "training")
    assert checks and "FAILED" not in checks.values(), checks
    aliases = postgres.query(
        trained.mlflow_db, "SELECT name, alias, version FROM registered_model_aliases"
    )
    with environment(trained.env):
        settings = get_settings()
    assert aliases == [(settings.model_name, "champion", 1)]
    (location,) = postgres.query(
        trained.mlflow_db, "SELECT artifact_location FROM experiments WHERE name = %s",
        settings.mlflow_experiment,
    )[0]  # fmt: skip
    shared = Path(trained.env["MLPLATFORM_MLFLOW_ARTIFACTS"])
    assert location == shared.resolve().as_uri() and any(shared.rglob("MLmodel"))


@pytest.mark.e2e
def test_load_champion_and_the_api_load_the_champion_from_postgres(
    trained: Trained, tmp_path: Path
) -> None:
    import mlplatform

    assert trained.training.returncode == 0, trained.training.stderr[-3000:]
    with environment(trained.env):
        settings = get_settings()
        store = settings.online_store_path
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(settings.warehouse_path, store)
        champion = mlplatform.load_champion()
        transactions = _new_transactions(settings, 5)
        in_process = champion.predict_proba(transactions)[:, 1]
    env = {**os.environ, **trained.env, "MLPLATFORM_API_KEYS": SERVICE_KEY}
    server = Server(env, tmp_path / "server").start()
    try:
        health = server.http.get("/v1/health").json()
        answer = server.predict([row.dropna().to_dict() for _, row in transactions.iterrows()])
    finally:
        server.stop()

    assert champion.version == "1" and health["model_version"] == "1"
    assert answer.status_code == 200, answer.text
    scores = [p["score"] for p in answer.json()["predictions"]]
    assert scores == pytest.approx(list(in_process), abs=1e-9)


def _new_transactions(settings: Settings, count: int) -> pd.DataFrame:
    """A new transaction of each of ``count`` cards (canonical columns): a copy of the card's
    last landed one, a day after the last landed day."""
    contract = load_contract(settings.contract)
    landed = pd.concat(
        pd.read_csv(path, dtype=str)
        for path in sorted(settings.landing_dir.glob("transactions_*.csv"))
    ).rename(columns={column: name for name, column in contract.columns.items()})
    last = landed.drop_duplicates("card_number", keep="last").head(count)
    day = pd.Timestamp(landed["event_time"].max()).normalize() + pd.Timedelta(days=1)
    return last.drop(columns=["label", "transaction_id"]).assign(
        transaction_id=[f"postgres-{i}" for i in range(len(last))],
        event_time=[f"{day + pd.Timedelta(minutes=i):%Y-%m-%d %H:%M:%S}" for i in range(len(last))],
    )


# --- the Docker, Kubernetes and compose configurations -----------------------------------------


def test_the_postgres_instance_has_the_embedded_pools_logs_and_run_monitoring() -> None:
    embedded, local = _yaml(REPO / "dagster.yaml"), _yaml(PLATFORM / "dagster.yaml")
    docker = _yaml(PLATFORM / "docker" / "dagster.yaml")

    for section in ("python_logs", "run_monitoring", "telemetry"):
        assert local[section] == embedded[section], section
    assert local["concurrency"]["pools"] == embedded["concurrency"]["pools"]
    assert (
        local["concurrency"]["runs"]["max_concurrent_runs"]
        == (embedded["concurrency"]["runs"]["max_concurrent_runs"])
    )
    assert local["storage"]["postgres"]["postgres_db"] == {
        **{field: {"env": variable} for field, variable in POSTGRES_FIELDS.items()},
        "scheme": "postgresql+psycopg2",
    }
    # The Docker variant differs in its run launcher only.
    assert docker["run_launcher"]["class"] == "DockerRunLauncher"
    assert {k: v for k, v in docker.items() if k != "run_launcher"} == {
        k: v for k, v in local.items() if k != "run_launcher"
    }


def test_the_docker_launcher_passes_runs_the_instance_the_data_volume_and_the_network(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_docker import DockerRunLauncher

    compose = _yaml(PLATFORM / "compose.yaml")
    shutil.copy(PLATFORM / "docker" / "dagster.yaml", tmp_path / "dagster.yaml")
    for name, value in postgres.dagster_env(_database(postgres, "dagster")).items():
        monkeypatch.setenv(name, value)

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        # A run container reaches the instance's Postgres and reads the platform's settings.
        platform_env = compose["x-platform-env"]
        passed = set(launcher.env_vars)
        assert set(POSTGRES_FIELDS.values()) <= passed
        assert {name for name in platform_env if name.startswith("MLPLATFORM_")} <= passed
        # ... on the compose network, with the data volume where the data home is.
        assert launcher.networks == [compose["networks"]["mlplatform"]["name"]]
        (volume,) = launcher.container_kwargs["volumes"]
        name, path = volume.split(":")
        assert compose["volumes"][name]["name"] == name and path == platform_env["MLPLATFORM_HOME"]
        assert instance.run_storage.get_runs() == []  # the storage is the Postgres database


def test_compose_runs_every_role_from_the_image_with_what_each_role_reads() -> None:
    compose = _yaml(PLATFORM / "compose.yaml")
    services = compose["services"]
    entrypoint = (PLATFORM / "entrypoint.sh").read_text()
    workspace = _yaml(PLATFORM / "docker" / "workspace.yaml")

    assert {"postgres", "redis", "mlflow", "codeserver", "webserver", "daemon", "api"} <= set(
        services
    )
    roles = {name: s["command"][0] for name, s in services.items() if "entrypoint" not in s
             and s.get("image", "").startswith("${MLPLATFORM_IMAGE")}  # fmt: skip
    assert roles == {"codeserver": "code-server", "webserver": "webserver", "daemon": "daemon",
                     "api": "api"}  # fmt: skip
    assert all(f"    {role})" in entrypoint for role in roles.values())
    assert services["api"]["deploy"]["replicas"] == 2
    # ... of two worker processes each, sharing the online state in the compose's Redis.
    assert services["api"]["command"] == ["api", "--workers", "2"]
    state = urlsplit(compose["x-platform-env"]["MLPLATFORM_ONLINE_STATE"])
    assert state.scheme == "redis" and state.hostname == "redis"
    assert "redis" in services["api"]["depends_on"] and "redis" in services
    # The webserver and the daemon load the code server's location on the port it serves.
    for name in ("webserver", "daemon"):
        env = services[name]["environment"]
        assert REPO / Path(env["DAGSTER_WORKSPACE"]).relative_to("/app") == (
            PLATFORM / "docker" / "workspace.yaml"
        )
    (location,) = workspace["load_from"]
    assert location["grpc_server"]["host"] == "codeserver"
    assert f'grpc_port="${{DAGSTER_GRPC_PORT:-{location["grpc_server"]["port"]}}}"' in entrypoint
    # Every process of the instance has its configuration and every variable it reads.
    instance_env = set(POSTGRES_FIELDS.values())
    for name in ("codeserver", "webserver", "daemon"):
        service = services[name]
        mount = next(v for v in service["volumes"] if isinstance(v, dict))
        assert (PLATFORM / mount["source"]).resolve() == PLATFORM / "docker" / "dagster.yaml"
        assert mount["target"] == f"{service['environment']['DAGSTER_HOME']}/dagster.yaml"
        assert instance_env <= set(service["environment"])
    # MLflow's backend store is the database the init script creates; the platform uses it.
    mlflow = services["mlflow"]
    store = next(a for a in mlflow["command"] if a.startswith("--backend-store-uri="))
    assert store.rsplit("/", 1)[1] == "mlflow"
    assert "CREATE DATABASE mlflow" in (PLATFORM / "postgres-init.sql").read_text()
    assert compose["x-platform-env"]["MLPLATFORM_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # The warehouse is a DuckLake whose catalog is the init script's `lake` database on the
    # compose Postgres, its files on the data volume.
    platform_env = compose["x-platform-env"]
    warehouse = platform_env["MLPLATFORM_WAREHOUSE"]
    assert warehouse.startswith("ducklake:postgres:dbname=lake host=postgres port=5432 ")
    assert "CREATE DATABASE lake OWNER mlplatform" in (PLATFORM / "postgres-init.sql").read_text()
    data_path = Path(platform_env["MLPLATFORM_WAREHOUSE_DATA_PATH"])
    assert data_path.is_relative_to(platform_env["MLPLATFORM_HOME"])
    assert "mlflow:5000" in mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_the_helm_values_run_the_images_code_server_and_the_k8s_executor(tmp_path: Path) -> None:
    values = _yaml(PLATFORM / "k8s" / "values.yaml")
    embedded = _yaml(REPO / "dagster.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "mlplatform.definitions"]
    assert "dagster api grpc -m mlplatform.definitions" in (PLATFORM / "entrypoint.sh").read_text()
    settings = {f"MLPLATFORM_{name.upper()}" for name in Settings.model_fields}
    assert set(deployment["env"]) <= settings, set(deployment["env"]) - settings
    assert deployment["env"]["MLPLATFORM_EXECUTOR"] == "k8s"
    # The runs publish each store to the Redis the API's pods share (api.yaml).
    manifests = yaml.safe_load_all((PLATFORM / "k8s" / "api.yaml").read_text())
    api = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    (container,) = api["mlplatform-api"]["spec"]["template"]["spec"]["containers"]
    pod_env = {e["name"]: e["value"] for e in container["env"]}
    assert pod_env["MLPLATFORM_ONLINE_STATE"] == deployment["env"]["MLPLATFORM_ONLINE_STATE"]
    assert urlsplit(pod_env["MLPLATFORM_ONLINE_STATE"]).hostname == "mlplatform-redis" in api
    assert api["mlplatform-api"]["spec"]["replicas"] == 2 and "--workers" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert container["envFrom"][0]["secretRef"]["name"] == deployment["envSecrets"][0]["name"]
    assert (
        values["additionalInstanceConfig"]["concurrency"]["pools"]
        == (embedded["concurrency"]["pools"])
    )
    assert (
        values["pythonLogs"]["managedPythonLoggers"]
        == (embedded["python_logs"]["managed_python_loggers"])
    )
    # The code location those pods load: a step of a multi-step job is a Kubernetes job; the
    # jobs whose steps share one process keep it.
    probe = (
        "from mlplatform.definitions import defs\n"
        "print(defs.resolve_job_def('daily_ingestion').executor_def.name,"
        " defs.resolve_job_def('training_data').executor_def.name,"
        " defs.resolve_job_def('training').executor_def.name)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, **deployment["env"], "MLPLATFORM_HOME": str(tmp_path)},
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split() == ["in_process", "k8s", "in_process"]


def test_a_database_tracking_store_needs_a_shared_artifacts_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLPLATFORM_MLFLOW_ARTIFACTS", raising=False)
    for database in ("postgresql://u:p@db:5432/mlflow", "mysql+pymysql://u:p@db/mlflow"):
        monkeypatch.setenv("MLPLATFORM_MLFLOW_TRACKING_URI", database)
        with pytest.raises(ValidationError, match="set MLPLATFORM_MLFLOW_ARTIFACTS"):
            get_settings()
    monkeypatch.setenv("MLPLATFORM_MLFLOW_ARTIFACTS", "s3://models/mlplatform")
    assert get_settings().artifact_location == "s3://models/mlplatform"
    monkeypatch.setenv("MLPLATFORM_MLFLOW_ARTIFACTS", str(tmp_path / "shared"))
    assert get_settings().artifact_location == (tmp_path / "shared").resolve().as_uri()
    # A server or a file store keeps the artifacts itself; the default store beside it.
    for own in ("http://mlflow:5000", (tmp_path / "mlruns").as_uri()):
        monkeypatch.setenv("MLPLATFORM_MLFLOW_TRACKING_URI", own)
        assert get_settings().artifact_location is None
    monkeypatch.delenv("MLPLATFORM_MLFLOW_TRACKING_URI")
    assert get_settings().artifact_location == (tmp_path / "home" / "mlartifacts").as_uri()
