"""How every part of the platform finds the others.

``Connections`` is read from the environment (``TICKLAKE_`` prefix, ``__`` between nested
names) and from ``<state home>/stack.env``, which ``ticklake up`` writes for the stack it
started. Environment variables win over the file. Defaults point at the default local stack.

This module imports only pydantic, so both the platform and the Flink job environment use it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticklake.home import state_home

DEFAULT_CATALOG_NAME = "ticklake"


class KafkaConnection(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"


class S3Connection(BaseModel):
    model_config = ConfigDict(frozen=True)

    endpoint: str = "http://127.0.0.1:9000"
    access_key: str = "ticklake"
    secret_key: SecretStr = SecretStr("ticklake-secret")
    region: str = "us-east-1"
    bucket: str = "ticklake"


class CatalogConnection(BaseModel):
    """The shared Iceberg catalog: JDBC catalog in PostgreSQL, warehouse on S3."""

    model_config = ConfigDict(frozen=True)

    name: str = DEFAULT_CATALOG_NAME
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "ticklake_catalog"
    user: str = "ticklake"
    password: SecretStr = SecretStr("ticklake")
    warehouse: str = "s3://ticklake/warehouse"

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    @property
    def sqlalchemy_url(self) -> str:
        """URL for pyiceberg's SqlCatalog (psycopg 3 driver); contains the password."""
        secret = self.password.get_secret_value()
        return f"postgresql+psycopg://{self.user}:{secret}@{self.host}:{self.port}/{self.database}"


class FlinkConnection(BaseModel):
    model_config = ConfigDict(frozen=True)

    rest_url: str = "http://127.0.0.1:8081"


class Connections(BaseSettings):
    """Addresses and credentials of Kafka, S3, the Iceberg catalog and the Flink cluster."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    s3: S3Connection = Field(default_factory=S3Connection)
    catalog: CatalogConnection = Field(default_factory=CatalogConnection)
    flink: FlinkConnection = Field(default_factory=FlinkConnection)

    @classmethod
    def load(cls) -> Connections:
        """Environment first, then the ``stack.env`` that ``ticklake up`` wrote."""
        env_file = state_home() / "stack.env"
        return cls(_env_file=env_file if env_file.is_file() else None)  # type: ignore[call-arg]
