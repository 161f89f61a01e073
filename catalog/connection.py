"""The one Iceberg catalog connection every part of the platform uses.

A JDBC catalog in PostgreSQL, warehouse on S3 (MinIO), under one catalog name shared by
Flink (``catalog-impl`` JdbcCatalog) and pyiceberg (``SqlCatalog``): both read and write the
``iceberg_tables`` rows of that name. This module needs only pydantic, so Flink jobs use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ticklake.settings import Connections

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog


def _sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def flink_catalog_options(conn: Connections) -> dict[str, str]:
    """Options of Flink's ``CREATE CATALOG ... WITH (...)`` for the shared catalog."""
    cat, s3 = conn.catalog, conn.s3
    return {
        "type": "iceberg",
        # 'catalog-type'='jdbc' is rejected by Flink's factory; name the implementation.
        "catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        "uri": cat.jdbc_url,
        "jdbc.user": cat.user,
        "jdbc.password": cat.password.get_secret_value(),
        # V1 adds the view column pyiceberg's SqlCatalog also creates.
        "jdbc.schema-version": "V1",
        "warehouse": cat.warehouse,
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "s3.endpoint": s3.endpoint,
        "s3.path-style-access": "true",
        "s3.access-key-id": s3.access_key,
        "s3.secret-access-key": s3.secret_key.get_secret_value(),
        "client.region": s3.region,
    }


def flink_catalog_ddl(conn: Connections) -> str:
    """``CREATE CATALOG`` statement registering the shared catalog in a Flink session."""
    opts = ",\n  ".join(
        f"{_sql_quote(k)} = {_sql_quote(v)}" for k, v in flink_catalog_options(conn).items()
    )
    return f"CREATE CATALOG `{conn.catalog.name}` WITH (\n  {opts}\n)"


def mask_secrets(sql: str, conn: Connections) -> str:
    """``sql`` with the catalog password and the S3 secret key, wherever they stand as a
    quoted option value (the only way the DDL here holds them), replaced by ``**********``.

    Only the quoted value: a secret that happens to equal a name used elsewhere (the local
    stack's password is ``ticklake``) leaves the catalog name and the ``ticklake-relay``
    connector readable, so the printed script still runs once the secrets are filled in.
    """
    for secret in (conn.catalog.password, conn.s3.secret_key):
        value = secret.get_secret_value()
        if value:
            sql = sql.replace(_sql_quote(value), "'**********'")
    return sql


def pyiceberg_properties(conn: Connections) -> dict[str, str]:
    """Properties of pyiceberg's ``SqlCatalog`` for the shared catalog."""
    cat, s3 = conn.catalog, conn.s3
    return {
        "uri": cat.sqlalchemy_url,
        "warehouse": cat.warehouse,
        "s3.endpoint": s3.endpoint,
        "s3.access-key-id": s3.access_key,
        "s3.secret-access-key": s3.secret_key.get_secret_value(),
        "s3.region": s3.region,
        "s3.path-style-access": "true",
    }


def load_catalog(conn: Connections | None = None, **overrides: Any) -> SqlCatalog:
    """The shared catalog as a pyiceberg ``SqlCatalog`` (platform environment only)."""
    from pyiceberg.catalog.sql import SqlCatalog

    conn = conn or Connections.load()
    props = pyiceberg_properties(conn) | {k: str(v) for k, v in overrides.items()}
    return SqlCatalog(conn.catalog.name, **props)
