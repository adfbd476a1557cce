"""`mlplatform serve`: a real uvicorn server on 127.0.0.1, a real MLflow store, real DuckDB.

The module takes a copy of the suite's shared trained platform (the champion is version 1;
another family's candidate is registered as version 2 and set as `challenger`); its
warehouse file is the online store. One server (shadow mode) serves most tests; each test
uses cards and days of its own, so its answers do not depend on what the others sent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import SERVICE_KEY as KEY
from conftest import Server, TrainedPlatform, environment
from mlflow import MlflowClient

from mlplatform.contract import load_contract
from mlplatform.features.declarations import FeatureRegistry, feature_registry
from mlplatform.ml.registry import configure
from mlplatform.serving.model import CHALLENGER, load_version
from mlplatform.serving.online import OnlineFeatures
from mlplatform.serving.prediction_log import ANSWERING_ROLES, FIELDS
from mlplatform.serving.service import canary_bucket
from mlplatform.settings import DEFAULT_CONTRACT, Settings, get_settings
from mlplatform.warehouse.pii import card_pseudonym

pytestmark = pytest.mark.e2e

FILE_KEY = "key-from-the-keys-file"
MAX_BATCH = 5
#: A card the simulation never made (no history in the store).
NEW_CARD = "4000123443211234"


@dataclass
class Platform:
    home: Path
    settings: Settings
    registry: FeatureRegistry
    client: MlflowClient
    landing: pd.DataFrame  # canonical columns, one row per simulated transaction
    env: dict[str, str]
    last_event: datetime  # the store's newest event
    families: tuple[str, str]  # the champion's (version 1) and the challenger's (version 2)

    @property
    def cards(self) -> list[str]:
        return sorted(self.landing["card_number"].unique())

    def transactions(self, cards: list[str], day: int, tag: str) -> list[dict[str, Any]]:
        """One new transaction per card, ``day`` days after the store's last event, each a
        copy of the card's last simulated transaction (merchant, category, amount...)."""
        last = self.landing.drop_duplicates("card_number", keep="last").set_index("card_number")
        start = self.last_event.replace(hour=0, minute=0, second=0) + timedelta(days=day)
        rows = []
        for i, card in enumerate(cards):
            row = last.loc[card].drop(["label", "transaction_id"]).dropna().to_dict()
            rows.append({
                **row, "card_number": card, "transaction_id": f"{tag}-{i}",
                "event_time": f"{start + timedelta(minutes=i):%Y-%m-%d %H:%M:%S}",
            })  # fmt: skip
        return rows


@pytest.fixture(scope="module")
def platform(
    trained_platform: TrainedPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Platform:
    return serving_copy(trained_platform, tmp_path_factory.mktemp("serving"))


def serving_copy(trained_platform: TrainedPlatform, root: Path) -> Platform:
    """A copy of the trained platform in ``root`` to serve: version 2 (another family) is the
    challenger, the warehouse is the online store, the API keys are set."""
    copy = trained_platform.copy(root)
    with environment(copy.env):
        settings = get_settings()
        contract = load_contract(DEFAULT_CONTRACT)
        registry = feature_registry(settings, contract)
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
            last_event = conn.execute("SELECT max(event_time) FROM curated.transactions")
            last_event = last_event.fetchone()[0]
        client = configure(settings.tracking_uri)
        champion = load_version(settings.tracking_uri, settings.model_name, "1")
        # Another family's candidate (the first by name) becomes version 2, the challenger.
        experiment = client.get_experiment_by_name(settings.mlflow_experiment)
        others = {
            client.get_run(m.source_run_id).data.tags["mlplatform.family"]: m
            for m in client.search_logged_models([experiment.experiment_id])
        }
        families = (champion.model.family, min(set(others) - {champion.model.family}))
        other = others[families[1]]
        assert mlflow.register_model(other.model_uri, settings.model_name).version == 2
        client.set_registered_model_alias(settings.model_name, CHALLENGER, "2")
    settings.online_store_path.parent.mkdir(parents=True)
    settings.online_store_path.write_bytes(settings.warehouse_path.read_bytes())
    landing = pd.concat(
        pd.read_csv(p, dtype=str)
        for p in sorted((copy.home / "landing").glob("transactions_*.csv"))
    ).rename(columns={column: name for name, column in contract.columns.items()})
    (root / "keys").write_text(f"\n{FILE_KEY}\n")
    return Platform(
        copy.home, settings, registry, client, landing,
        {**os.environ, **copy.env, "MLPLATFORM_API_KEYS": f"{KEY}, another-key",
         "MLPLATFORM_API_KEYS_FILE": str(root / "keys"), "MLPLATFORM_RELOAD_SECONDS": "0.3",
         "MLPLATFORM_MAX_BATCH": str(MAX_BATCH), "MLPLATFORM_CHALLENGER_MODE": "shadow"},
        last_event, families,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(platform: Platform) -> Iterator[Server]:
    server = Server(platform.env, platform.home.parent / "server").start()
    yield server
    server.stop()


def _log_lines(platform: Platform) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(platform.settings.serving_dir.glob("predictions-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_every_route_but_health_needs_a_valid_key_in_either_header(
    platform: Platform, server: Server
) -> None:
    for path in ("/v1/model", "/metrics"):
        assert server.http.get(path).status_code == 401
        assert server.http.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
        assert server.http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert server.http.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert server.http.get(path, headers={"X-API-Key": FILE_KEY}).status_code == 200
    transaction = platform.transactions(platform.cards[:1], day=1, tag="auth")
    refused = server.predict(transaction, key="wrong")
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["rule"] == "invalid_api_key"
    assert server.predict(transaction, key=FILE_KEY).status_code == 200
    health = server.http.get("/v1/health")
    assert health.status_code == 200
    body = health.json()
    assert body["live"] and body["ready"] and body["model_loaded"]
    assert body["model_version"] == "1" and body["last_reload_error"] is None
    assert 0 <= body["store_age_hours"] <= body["max_store_age_hours"] == 36
    assert server.http.get("/v1/health/ready").status_code == 200


def test_model_route_describes_champion_and_challenger(platform: Platform, server: Server) -> None:
    body = server.http.get("/v1/model", headers={"X-API-Key": KEY}).json()
    assert body["version"] == "1" and body["challenger"]["version"] == "2"
    assert body["challenger_mode"] == "shadow"
    assert (body["family"], body["challenger"]["family"]) == platform.families
    assert 0 < body["threshold"] < 1 and len(body["dataset_version"]) == 64
    assert body["holdout_metrics"]["average_precision"] > 0 and len(body["features"]) > 20
    assert server.http.get("/openapi.json").json()["paths"].keys() >= {
        "/v1/predict", "/v1/health", "/v1/model", "/metrics"
    }  # fmt: skip


def test_invalid_transactions_get_422_naming_index_field_and_rule(
    platform: Platform, server: Server
) -> None:
    valid = platform.transactions(platform.cards[10:13], day=2, tag="invalid")
    no_amount = {k: v for k, v in valid[2].items() if k != "amount"}
    answer = server.predict([*valid[:2], no_amount])
    assert answer.status_code == 422
    assert answer.json() == {"errors": [{"index": 2, "field": "amount",
        "rule": "missing_required_field", "detail": "empty or absent"}]}  # fmt: skip
    answer = server.predict([{**valid[0], "card_number": ""}])
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert (error["index"], error["field"], error["rule"]) == (
        0, "card_number", "missing_required_field"
    )  # fmt: skip
    # A malformed body: FastAPI's own 422, in the same shape, quoting no value.
    answer = server.predict([valid[0], {**valid[1], "amount": [1], "card_numbr": "x"}])
    assert answer.status_code == 422
    assert {(e["index"], e["field"], e["rule"]) for e in answer.json()["errors"]} == {
        (1, "amount", "invalid_type"), (1, "card_numbr", "extra_forbidden")
    }  # fmt: skip
    not_json = server.http.post(
        "/v1/predict", content=b"{", headers={"X-API-Key": KEY, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 422 and not_json.json()["errors"][0]["rule"] == "json_invalid"
    empty = server.http.post("/v1/predict", json={"transactions": []}, headers={"X-API-Key": KEY})
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "transactions"


BREAKING = [
    ("event_time", "yesterday at noon", "unparsable_timestamp"),
    ("event_time", "2025-02-30 10:00:00", "unparsable_timestamp"),
    ("event_time", "2031-06-01 10:00:00", "event_time_in_future"),
    ("amount", "12,50", "unparsable_amount"),
    ("amount", -5.0, "non_positive_amount"),
    ("amount", 99_999_999.0, "amount_above_maximum"),
]


@pytest.mark.parametrize(("field_name", "value", "rule"), BREAKING)
def test_a_transaction_breaking_a_value_rule_gets_the_landing_rule(
    platform: Platform, server: Server, field_name: str, value: object, rule: str
) -> None:
    valid = platform.transactions(platform.cards[15:17], day=3, tag=f"landing-{rule}")
    answer = server.predict([valid[0], {**valid[1], field_name: value}])
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert (error["index"], error["field"], error["rule"]) == (1, field_name, rule)


def test_more_than_max_batch_transactions_get_413(platform: Platform, server: Server) -> None:
    many = platform.transactions(platform.cards[20 : 21 + MAX_BATCH], day=4, tag="big")
    answer = server.predict(many)
    assert answer.status_code == 413
    assert answer.json()["errors"][0]["rule"] == "batch_too_large"


def test_api_scores_equal_the_model_on_features_computed_in_process(
    platform: Platform, server: Server
) -> None:
    transactions = platform.transactions(platform.cards[30 : 30 + MAX_BATCH], day=5, tag="same")
    answer = server.predict(transactions)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["transaction_id"] for p in predictions] == [t["transaction_id"] for t in transactions]
    *durations, route = answer.headers["Server-Timing"].split(", ")
    timing = dict(part.split(";dur=") for part in durations)
    assert set(timing) == {"parse", "validation", "state", "features", "model", "log"}
    assert all(float(ms) >= 0 for ms in timing.values())
    assert route == 'route;desc="python"'  # rules, curation and features all in Python
    # In process: the same store, with the fresh state of what the server answered before.
    features = OnlineFeatures(
        platform.settings.online_store_path, platform.registry, platform.settings.pseudonym_key
    )
    features.restore(
        line["event"]
        for line in _log_lines(platform)
        if line["request_id"] != answer.headers["X-Request-ID"]
        and line["returned"] and line["role"] in ANSWERING_ROLES
    )  # fmt: skip
    batch = features.compute(transactions)
    features.close()
    champion = load_version(platform.settings.tracking_uri, platform.settings.model_name, "1")
    expected = champion.score(batch.frame)
    np.testing.assert_allclose([p["score"] for p in predictions], expected, rtol=0, atol=1e-12)
    assert [p["decision"] for p in predictions] == list(expected >= champion.threshold)
    # The access log names the route, the status and the request id (never the query string).
    access = '"POST /v1/predict" 200 '
    assert any(
        access in line and line.endswith(answer.headers["X-Request-ID"])
        for line in server.server_output().splitlines()
    ), server.server_output()[-2000:]
    assert {(p["model_version"], p["role"]) for p in predictions} == {("1", "champion")}


def test_shadow_challenger_is_logged_for_every_transaction_and_never_returned(
    platform: Platform, server: Server
) -> None:
    transactions = platform.transactions(platform.cards[40:43], day=6, tag="shadow")
    answer = server.predict(transactions)
    assert answer.status_code == 200, answer.text
    assert {(p["model_version"], p["role"]) for p in answer.json()["predictions"]} == {
        ("1", "champion")
    }
    lines = [x for x in _log_lines(platform) if x["request_id"] == answer.headers["X-Request-ID"]]
    assert all(list(line) == list(FIELDS) for line in lines)
    by_role = {role: [x for x in lines if x["role"] == role] for role in ("champion", "shadow")}
    ids = [t["transaction_id"] for t in transactions]
    assert [x["transaction_id"] for x in by_role["champion"]] == ids
    assert [x["transaction_id"] for x in by_role["shadow"]] == ids
    assert all(x["returned"] and x["model_version"] == "1" for x in by_role["champion"])
    assert all(not x["returned"] and x["model_version"] == "2" for x in by_role["shadow"])
    returned = {p["transaction_id"]: p["score"] for p in answer.json()["predictions"]}
    assert {x["transaction_id"]: x["score"] for x in by_role["champion"]} == returned
    day = transactions[0]["event_time"][:10]
    assert {x["partition_date"] for x in lines} == {day}
    # The server process's own file of the day (one file per process and day).
    (path,) = platform.settings.serving_dir.glob(f"predictions-{day}.*.jsonl")
    assert path.name.endswith(f"-{server.process.pid}.jsonl")
    card_ids = {
        card_pseudonym(t["card_number"], platform.settings.pseudonym_key) for t in transactions
    }
    assert {x["card_id"] for x in lines} == card_ids


def test_hot_reload_swaps_the_champion_under_load_without_a_failed_request(
    platform: Platform, server: Server
) -> None:
    name = platform.settings.model_name
    cards = platform.cards[50:90]
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=str(server.http.base_url), timeout=120) as http:
            for i in range(10_000):
                if stop.is_set():
                    return
                transactions = platform.transactions([cards[i % len(cards)]], day=7 + i // 40,
                                                     tag=f"reload-{i}")  # fmt: skip
                response = http.post("/v1/predict", json={"transactions": transactions},
                                     headers={"X-API-Key": KEY})  # fmt: skip
                version = response.json()["predictions"][0]["model_version"] if (
                    response.status_code == 200) else None  # fmt: skip
                answers.append((response.status_code, version))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        server.wait_for(lambda: len(answers) >= 2, "requests before the swap")
        platform.client.set_registered_model_alias(name, "champion", "2")
        server.wait_for(lambda: any(v == "2" for _, v in answers), "version 2 in answers")
        platform.client.set_registered_model_alias(name, "champion", "1")
        server.wait_for(lambda: answers[-1][1] == "1", "version 1 again")
    finally:
        stop.set()
        thread.join()
    assert {status for status, _ in answers} == {200}
    versions = [v for _, v in answers]
    assert versions[0] == "1" and "2" in versions and versions[-1] == "1"
    # One swap each way: once a version answers, every later request gets it.
    assert re.fullmatch("1+2+1+", "".join(versions)), versions


def test_a_champion_that_fails_to_load_leaves_the_old_one_serving(
    platform: Platform, server: Server, tmp_path: Path
) -> None:
    name, client = platform.settings.model_name, platform.client
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: {}\n")
    run_id = client.get_model_version(name, "1").run_id
    version = client.create_model_version(name, str(broken), run_id=run_id).version
    client.set_registered_model_alias(name, "champion", version)
    try:
        server.wait_for(
            lambda: f"champion version {version}" in (
                server.http.get("/v1/health").json()["last_reload_error"] or ""),
            "the reload error in health",
        )  # fmt: skip
        (transaction,) = platform.transactions(platform.cards[95:96], day=12, tag="broken")
        answer = server.predict([transaction])
        assert answer.status_code == 200
        assert answer.json()["predictions"][0]["model_version"] == "1"
        assert server.http.get("/v1/health").json()["model_version"] == "1"
    finally:
        client.set_registered_model_alias(name, "champion", "1")
    server.wait_for(
        lambda: server.http.get("/v1/health").json()["last_reload_error"] is None,
        "the reload error to clear",
    )


def test_only_a_value_python_cannot_curate_like_duckdb_takes_its_route_said_and_counted(
    platform: Platform, server: Server
) -> None:
    def routes() -> dict[str, float]:
        text = server.http.get("/metrics", headers={"X-API-Key": KEY}).text
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mlplatform_feature_routes_total")
        }

    (plain,) = platform.transactions(platform.cards[40:41], day=5, tag="ascii")
    accented = {**plain, "transaction_id": "accented", "merchant": "Caf\u00e9 M\u00fcller"}
    spaced = {**plain, "transaction_id": "spaced", "merchant": "Caf\u00e9 M\u00fcller\u00a0"}
    cased = {**plain, "transaction_id": "cased", "category": "Caf\u00e9"}
    underscored = {**plain, "transaction_id": "underscored", "amount": "1_000"}
    before = routes()
    answers = [server.predict([t]) for t in (plain, accented, spaced, cased, underscored)]
    after = routes()

    assert [a.status_code for a in answers] == [200] * 5
    for answer in answers[:4]:  # trim() of a Unicode space, lower() beyond ASCII: DuckDB's
        assert answer.headers["Server-Timing"].endswith('route;desc="python"')
    reason = "a number that is not plain decimal text (as DOUBLE)"  # 1_000: DuckDB reads it
    assert answers[4].headers["Server-Timing"].endswith(f'route;desc="rows on duckdb: {reason}"')
    python = 'mlplatform_feature_routes_total{reason="",route="python",stage="%s"}'
    duckdb_rows = (
        f'mlplatform_feature_routes_total{{reason="{reason}",route="duckdb",stage="rows"}}'
    )
    assert after[python % "rows"] - before.get(python % "rows", 0) == 4
    assert after[python % "features"] - before.get(python % "features", 0) == 5
    assert after[duckdb_rows] - before.get(duckdb_rows, 0) == 1


def test_metrics_count_requests_by_status_and_role_with_model_and_store_gauges(
    platform: Platform, server: Server
) -> None:
    assert server.http.get("/v1/model").status_code == 401  # no key
    scored = server.predict(platform.transactions(platform.cards[45:46], day=5, tag="metrics"))
    assert scored.status_code == 200, scored.text
    text = server.http.get("/metrics", headers={"X-API-Key": KEY}).text
    assert 'mlplatform_requests_total{path="/v1/predict",status="200"}' in text
    assert 'mlplatform_requests_total{path="/v1/model",status="401"}' in text
    assert 'mlplatform_predictions_total{model_version="1",role="champion"}' in text
    assert 'mlplatform_predict_stage_seconds_bucket{le="0.01",stage="features"}' in text
    assert 'mlplatform_predict_stage_seconds_count{stage="parse"}' in text
    assert 'mlplatform_model_version{role="champion"} 1.0' in text
    assert 'mlplatform_model_version{role="challenger"} 2.0' in text
    assert "mlplatform_store_age_hours " in text


def test_canary_answers_a_sticky_share_of_cards_with_the_challenger(
    platform: Platform, tmp_path: Path
) -> None:
    share = 0.3
    env = {**platform.env, "MLPLATFORM_CHALLENGER_MODE": "canary",
           "MLPLATFORM_CANARY_SHARE": str(share), "MLPLATFORM_MAX_BATCH": "100"}  # fmt: skip
    canary = Server(env, tmp_path / "canary").start()
    try:
        cards = platform.cards[100:160]
        first = canary.predict(platform.transactions(cards, day=13, tag="canary-1"))
        again = canary.predict(platform.transactions(cards[::3], day=14, tag="canary-2"))
    finally:
        canary.stop()
    assert first.status_code == again.status_code == 200
    roles = {c: p["role"] for c, p in zip(cards, first.json()["predictions"], strict=True)}
    versions = {p["role"]: p["model_version"] for p in first.json()["predictions"]}
    assert versions == {"champion": "1", "canary": "2"}
    observed = sum(role == "canary" for role in roles.values()) / len(cards)
    assert abs(observed - share) <= 3 * (share * (1 - share) / len(cards)) ** 0.5
    # The same card, the same model: the bucket of its pseudonym decides.
    for card, prediction in zip(cards[::3], again.json()["predictions"], strict=True):
        assert prediction["role"] == roles[card]
    for card, role in roles.items():
        in_canary = canary_bucket(card_pseudonym(card, platform.settings.pseudonym_key)) < share
        assert role == ("canary" if in_canary else "champion")


def test_a_restart_rebuilds_fresh_state_from_the_prediction_log(
    platform: Platform, server: Server
) -> None:
    store_day = platform.last_event.replace(hour=9, minute=0, second=0) + timedelta(days=20)
    first, second = (
        {"transaction_id": f"restart-{i}", "card_number": NEW_CARD, "amount": amount,
         "merchant": "restart-test-merchant", "category": "shopping_net",
         "event_time": f"{store_day + timedelta(minutes=10 * i):%Y-%m-%d %H:%M:%S}"}
        for i, amount in enumerate((40.0, 900.0))
    )  # fmt: skip
    # Without a restart, in process: the second purchase sees the first.
    key = platform.settings.pseudonym_key
    features = OnlineFeatures(platform.settings.online_store_path, platform.registry, key)
    features.record(features.compute([first]))
    fresh = features.compute([second]).frame
    features.close()
    stateless = OnlineFeatures(platform.settings.online_store_path, platform.registry, key)
    unaware = stateless.compute([second]).frame
    stateless.close()
    feature_names = [feature.name for feature in platform.registry.enabled]
    assert not fresh[feature_names].equals(unaware[feature_names])
    assert server.predict([first]).status_code == 200
    server.stop()
    server.start()
    answer = server.predict([second])
    assert answer.status_code == 200
    champion = load_version(platform.settings.tracking_uri, platform.settings.model_name, "1")
    assert answer.json()["predictions"][0]["score"] == pytest.approx(
        champion.score(fresh)[0], abs=1e-12
    )


def test_schemathesis_finds_no_server_error(
    platform: Platform, server: Server, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "run", f"{server.http.base_url}/openapi.json",
         "-H", f"X-API-Key: {KEY}", "--checks", "not_a_server_error", "--max-examples", "25",
         "--phases", "coverage,fuzzing", "--max-time", "30", "--seed", "7", "--workers", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache: not in the repo
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Tested: 5" in done.stdout, done.stdout[-4000:]


def test_serve_refuses_more_workers_an_open_bind_without_keys_and_no_champion(
    platform: Platform, tmp_path: Path
) -> None:
    def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlplatform.cli", "serve", *args],
            capture_output=True, text=True, env={**platform.env, **env}, timeout=300,
        )  # fmt: skip

    workers = serve("--workers", "2")
    assert workers.returncode != 0 and "one worker process" in workers.stdout
    assert "MLPLATFORM_ONLINE_STATE=redis://" in workers.stdout
    open_bind = serve("--host", "0.0.0.0", MLPLATFORM_API_KEYS="", MLPLATFORM_API_KEYS_FILE="")
    assert open_bind.returncode != 0
    assert "no API key configured" in open_bind.stdout and "0.0.0.0" in open_bind.stdout
    empty = tmp_path / "home"
    (empty / "online").mkdir(parents=True)
    (empty / "online" / "store.duckdb").write_bytes(
        platform.settings.online_store_path.read_bytes()
    )
    no_champion = serve(MLPLATFORM_HOME=str(empty))
    assert no_champion.returncode != 0 and "no champion" in no_champion.stdout


def test_no_clear_card_number_in_any_file_the_service_wrote_or_its_output(
    platform: Platform, server: Server
) -> None:
    transactions = platform.transactions(platform.cards[200:203], day=15, tag="pii")
    bad_card = {**transactions[1], "card_number": [transactions[1]["card_number"]]}
    no_amount = {k: v for k, v in transactions[2].items() if k != "amount"}
    answers = [
        server.predict(transactions[:1]),
        server.predict([transactions[0], bad_card]),
        server.predict([transactions[0], no_amount]),
        server.predict([{**transactions[0], "event_time": "not a time"}]),
        server.http.get(f"/v1/predict?card={transactions[0]['card_number']}"),
        server.http.get(f"/v1/cards/{transactions[0]['card_number']}"),
    ]
    assert [a.status_code for a in answers] == [200, 422, 422, 422, 405, 404]
    cards = {*platform.cards, NEW_CARD}
    for answer in answers:
        assert not any(card in answer.text for card in cards)
    written = [p for p in platform.settings.serving_dir.rglob("*") if p.is_file()]
    assert written, "the service wrote no prediction log"
    for path in [*written, *server.output.glob("std*")]:
        text = path.read_text()
        leaked = [card for card in cards if card in text]
        assert not leaked, f"{path} holds card numbers {leaked[:3]}"
