"""Settings of the local stack service (``ticklake up``): ports, memory, versions, credentials.

Environment: ``TICKLAKE_STACK__KAFKA__PORT=19092`` and so on. Credentials left unset are
generated on the first ``up`` and kept in ``<state home>/secrets.env`` (mode 600).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticklake.home import cache_dir, state_home

LOOPBACK = "127.0.0.1"


class KafkaStackSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    transaction_max_timeout_ms: int = 3_600_000 * 2
    retention_hours: int = 168


class MinioStackSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    port: int = 9000
    console_port: int = 9001
    root_user: str = "ticklake"
    root_password: SecretStr | None = None
    buckets: tuple[str, ...] = ("ticklake",)


class PostgresStackSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    port: int = 5432
    os_user: str = "ticklake"
    user: str = "ticklake"
    password: SecretStr | None = None
    database: str = "ticklake_catalog"


class FlinkStackSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    rest_port: int = 8081
    jobmanager_rpc_port: int = 6123
    taskmanager_slots: int = 2
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "2048m"


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_STACK__",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        populate_by_name=True,
    )

    #: the state directory (env TICKLAKE_HOME, as for every ticklake process)
    home: Path = Field(default_factory=state_home, validation_alias="TICKLAKE_HOME")
    #: downloads and builds (env TICKLAKE_CACHE_DIR), shareable between state directories
    cache: Path = Field(default_factory=cache_dir, validation_alias="TICKLAKE_CACHE_DIR")
    startup_timeout_s: float = 120.0
    kafka: KafkaStackSettings = Field(default_factory=KafkaStackSettings)
    minio: MinioStackSettings = Field(default_factory=MinioStackSettings)
    postgres: PostgresStackSettings = Field(default_factory=PostgresStackSettings)
    flink: FlinkStackSettings = Field(default_factory=FlinkStackSettings)
