"""Settings: environment parsing, the stack.env file, secret masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticklake.catalog.connection import flink_catalog_ddl, pyiceberg_properties
from ticklake.settings import Connections
from ticklake.stack.settings import StackSettings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(__import__("os").environ):
        if key.startswith("TICKLAKE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TICKLAKE_HOME", str(tmp_path))
    return tmp_path


def test_defaults_point_at_the_default_local_stack(home: Path) -> None:
    conn = Connections.load()
    assert conn.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert conn.catalog.jdbc_url == "jdbc:postgresql://127.0.0.1:5432/ticklake_catalog"
    assert conn.catalog.name == "ticklake"


def test_stack_env_file_is_read_and_environment_wins(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "stack.env").write_text(
        "TICKLAKE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:19092\n"
        "TICKLAKE_CATALOG__PORT=15432\n"
        "TICKLAKE_CATALOG__PASSWORD=from-file\n"
    )
    monkeypatch.setenv("TICKLAKE_CATALOG__PORT", "25432")
    conn = Connections.load()
    assert conn.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert conn.catalog.port == 25432
    assert conn.catalog.password.get_secret_value() == "from-file"


def test_secrets_are_masked_when_printed(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKLAKE_S3__SECRET_KEY", "hunter2-s3")
    monkeypatch.setenv("TICKLAKE_CATALOG__PASSWORD", "hunter2-pg")
    conn = Connections.load()
    text = repr(conn) + str(conn) + conn.model_dump_json()
    assert "hunter2" not in text
    assert conn.s3.secret_key.get_secret_value() == "hunter2-s3"


def test_settings_are_frozen(home: Path) -> None:
    conn = Connections.load()
    with pytest.raises(ValueError, match="frozen"):
        conn.kafka.bootstrap_servers = "elsewhere:1"  # type: ignore[misc]


def test_stack_settings_nested_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKLAKE_STACK__KAFKA__PORT", "19092")
    monkeypatch.setenv("TICKLAKE_STACK__FLINK__TASKMANAGER_SLOTS", "4")
    monkeypatch.setenv("TICKLAKE_CACHE_DIR", str(home / "shared-cache"))
    s = StackSettings()
    assert s.kafka.port == 19092
    assert s.flink.taskmanager_slots == 4
    assert s.home == home
    assert s.cache == home / "shared-cache"


def test_invalid_port_is_a_validation_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKLAKE_STACK__KAFKA__PORT", "not-a-port")
    with pytest.raises(ValueError, match=r"kafka\.port"):
        StackSettings()


def test_flink_and_pyiceberg_share_one_catalog_definition(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKLAKE_CATALOG__PASSWORD", "it's")
    conn = Connections.load()
    ddl = flink_catalog_ddl(conn)
    assert ddl.startswith("CREATE CATALOG `ticklake` WITH (")
    assert "'catalog-impl' = 'org.apache.iceberg.jdbc.JdbcCatalog'" in ddl
    assert "'jdbc.password' = 'it''s'" in ddl  # quoted, not injected
    props = pyiceberg_properties(conn)
    assert props["uri"].startswith("postgresql+psycopg://ticklake:it's@127.0.0.1:5432/")
    assert props["warehouse"] == "s3://ticklake/warehouse"
