"""Iceberg catalog: the shared connection (importable from Flink jobs too)."""

from ticklake.catalog.connection import (
    flink_catalog_ddl,
    flink_catalog_options,
    load_catalog,
    pyiceberg_properties,
)

__all__ = ["flink_catalog_ddl", "flink_catalog_options", "load_catalog", "pyiceberg_properties"]
