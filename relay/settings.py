"""Settings of the relay and of its clients: one frozen class, env prefix ``TICKLAKE_RELAY__``.

The relay binds its four channels on ``bind_host``; clients (the SDK, publishers, workers)
connect to ``host``. Both sides read the same class, so one set of environment variables
(``TICKLAKE_RELAY__HOST``, ``TICKLAKE_RELAY__SUBSCRIBE_PORT``, ...) configures a deployment.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = int


class RelaySettings(BaseSettings):
    """Ports, high-water marks and timeouts of the relay (see docs/relay.md)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_RELAY__",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    host: str = Field(default="127.0.0.1", description="where clients connect")
    bind_host: str = Field(default="127.0.0.1", description="where the relay binds (0.0.0.0, *)")
    request_port: Port = Field(default=5559, ge=1, le=65535, description="ROUTER: client requests")
    work_port: Port = Field(default=5555, ge=1, le=65535, description="XPUB: ingestor work queue")
    publish_port: Port = Field(default=5557, ge=1, le=65535, description="XSUB: publishers")
    subscribe_port: Port = Field(default=5558, ge=1, le=65535, description="XPUB: subscribers")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no /metrics server")
    fanout_sndhwm: int = Field(
        default=10_000, ge=1, description="messages queued per subscriber before it loses data"
    )
    fanout_sndbuf: int = Field(default=0, ge=0, description="kernel send buffer; 0: OS default")
    publish_rcvhwm: int = Field(default=100_000, ge=1, description="per publisher, inbound")
    work_sndhwm: int = Field(default=10_000, ge=1, description="work items queued per ingestor")
    capture_hwm: int = Field(
        default=1_000_000, ge=1, description="subscription copies queued for the control loop"
    )
    lvc_max_topics: int = Field(
        default=100_000, ge=1, description="last-value cache size of each publisher"
    )
    stats_interval_s: float = Field(default=1.0, gt=0, description="proxy counters refresh")
    reconnect_ivl_ms: int = Field(default=100, ge=1, description="client reconnect interval")
    reconnect_ivl_max_ms: int = Field(default=2_000, ge=0, description="client reconnect cap")

    def bind(self, port: int) -> str:
        return f"tcp://{self.bind_host}:{port}"

    def connect(self, port: int) -> str:
        return f"tcp://{self.host}:{port}"
