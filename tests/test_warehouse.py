"""Warehouse basics: schema, column lists, pseudonyms in SQL and Python, the PII key file."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb
import pytest

from mlplatform.settings import Settings
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.pii import card_pseudonym, card_pseudonym_sql, hmac_pads
from mlplatform.warehouse.tables import CURATED_TRANSACTION_COLUMNS, RAW_TRANSACTION_COLUMNS


@pytest.mark.parametrize("key", [b"k", b"a-longer-key" * 10])
@pytest.mark.parametrize("card", ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111"])
def test_sql_pseudonym_equals_python_hmac(key: bytes, card: str) -> None:
    with duckdb.connect() as conn:
        sql = conn.execute(
            f"SELECT {card_pseudonym_sql('$card')}", {**hmac_pads(key), "card": card}
        ).fetchone()[0]
    assert sql == card_pseudonym(card, key) == card_pseudonym("4111111111111111", key)


def test_column_lists_match_the_tables(tmp_path: Path) -> None:
    with connect(tmp_path / "w.duckdb") as conn:

        def columns(schema: str) -> tuple[str, ...]:
            return tuple(
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
                    "AND table_name = 'transactions' ORDER BY ordinal_position",
                    [schema],
                ).fetchall()
            )

        assert columns("raw") == RAW_TRANSACTION_COLUMNS
        assert columns("curated") == CURATED_TRANSACTION_COLUMNS


def test_pii_key_is_created_once_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLPLATFORM_PII_KEY", raising=False)
    first = Settings(home=tmp_path).pseudonym_key
    second = Settings(home=tmp_path).pseudonym_key
    key_file = tmp_path / "pii.key"
    assert first == second and len(first) == 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Settings(home=tmp_path, pii_key="explicit").pseudonym_key == b"explicit"
