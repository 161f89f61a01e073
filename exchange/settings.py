"""What the local exchange simulates: its markets, its seed, how far back its history goes.

``ExchangeSettings`` is read from the environment (``TICKLAKE_EXCHANGE__`` prefix, ``__``
between nested names); the command line overrides it. Every field that shapes the trade tape
(seed, markets, rate multiplier) is part of the tape's identity: the same values give the same
trades, byte for byte, in every process and after every restart.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The tape starts here (trade ids count from this instant); 2025-01-01T00:00:00Z.
TAPE_ORIGIN_MS = 1_735_689_600_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000
_SCALE = Decimal("1e-8")  # Binance prints every price and quantity with 8 decimals
_ASSET = re.compile(r"^[A-Z0-9]{2,12}$")


class MarketSpec(BaseModel):
    """One simulated spot market and the statistics of its trade stream."""

    model_config = ConfigDict(frozen=True)

    base: str
    quote: str
    tick_size: Decimal = Field(description="PRICE_FILTER tickSize; every price is a multiple")
    step_size: Decimal = Field(description="LOT_SIZE stepSize; every quantity is a multiple")
    start_price: Decimal = Field(description="the price level the random walk reverts to")
    trades_per_second: float = Field(gt=0, description="mean arrival rate while active")
    volatility_per_minute: float = Field(default=0.0008, gt=0, description="stdev of log price")
    median_qty: Decimal = Field(description="median trade size in base units")
    qty_dispersion: float = Field(default=1.0, gt=0, description="stdev of log trade size")
    active_fraction: float = Field(
        default=1.0, gt=0, le=1, description="share of quiet-blocks with any trading at all"
    )
    quiet_block_minutes: int = Field(default=5, ge=1, description="length of an on/off block")
    first_trade_id: int = Field(default=1, ge=0, description="id of the first trade at the origin")

    @field_validator("base", "quote")
    @classmethod
    def _asset(cls, value: str) -> str:
        if not _ASSET.match(value):
            raise ValueError(f"asset {value!r} must be 2-12 upper-case letters or digits")
        return value

    @field_validator("tick_size", "step_size")
    @classmethod
    def _on_binance_scale(cls, value: Decimal) -> Decimal:
        if value <= 0 or value % _SCALE != 0:
            raise ValueError(f"{value} must be a positive multiple of 0.00000001")
        return value

    @model_validator(mode="after")
    def _price_on_tick(self) -> MarketSpec:
        if self.start_price < self.tick_size * 10:
            raise ValueError(f"start_price {self.start_price} must be at least 10 ticks")
        return self

    @property
    def symbol(self) -> str:
        """The unified symbol, ``BASE/QUOTE``."""
        return f"{self.base}/{self.quote}"

    @property
    def market_id(self) -> str:
        """Binance's symbol, ``BASEQUOTE``."""
        return f"{self.base}{self.quote}"


def default_markets() -> tuple[MarketSpec, ...]:
    """Four busy markets, one cross pair with small ticks, and one market quiet for minutes."""
    d = Decimal
    return (
        MarketSpec(
            base="BTC",
            quote="USDT",
            tick_size=d("0.01"),
            step_size=d("0.00001"),
            start_price=d("60000"),
            trades_per_second=8.0,
            median_qty=d("0.01"),
            first_trade_id=3_000_000_000,
        ),
        MarketSpec(
            base="ETH",
            quote="USDT",
            tick_size=d("0.01"),
            step_size=d("0.0001"),
            start_price=d("3000"),
            trades_per_second=5.0,
            median_qty=d("0.2"),
            first_trade_id=1_500_000_000,
        ),
        MarketSpec(
            base="SOL",
            quote="USDT",
            tick_size=d("0.01"),
            step_size=d("0.001"),
            start_price=d("150"),
            trades_per_second=3.0,
            median_qty=d("2"),
            volatility_per_minute=0.0012,
            first_trade_id=600_000_000,
        ),
        MarketSpec(
            base="DOGE",
            quote="USDT",
            tick_size=d("0.00001"),
            step_size=d("1"),
            start_price=d("0.15"),
            trades_per_second=2.0,
            median_qty=d("2000"),
            volatility_per_minute=0.0015,
            first_trade_id=800_000_000,
        ),
        MarketSpec(
            base="ETH",
            quote="BTC",
            tick_size=d("0.00001"),
            step_size=d("0.0001"),
            start_price=d("0.05"),
            trades_per_second=1.0,
            median_qty=d("0.5"),
            first_trade_id=400_000_000,
        ),
        MarketSpec(
            base="QUIET",
            quote="USDT",
            tick_size=d("0.0001"),
            step_size=d("0.1"),
            start_price=d("1.2345"),
            trades_per_second=0.2,
            median_qty=d("100"),
            active_fraction=0.3,
            quiet_block_minutes=5,
            first_trade_id=1,
        ),
    )


def default_genesis_ms(now_ms: int | None = None) -> int:
    """Midnight UTC two days before today: whole days of history, stable within a day."""
    now = datetime.now(UTC) if now_ms is None else datetime.fromtimestamp(now_ms / 1000, UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    return int(midnight.timestamp() * 1000)


class ExchangeSettings(BaseSettings):
    """The local exchange: where it listens and what it simulates."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_EXCHANGE__",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    seed: int = Field(default=42, ge=0)
    genesis_ms: int | None = Field(
        default=None, description="first instant with trades (minute-aligned); None: 2 days ago"
    )
    rate_multiplier: float = Field(default=1.0, gt=0, description="scales every market's rate")
    markets: tuple[MarketSpec, ...] = Field(default_factory=default_markets)
    ws_tick_ms: int = Field(default=10, ge=1, description="how often live trades are pushed")
    ws_queue_size: int = Field(
        default=100_000, ge=1, description="frames queued per connection before it is cut"
    )
    ws_heartbeat_s: float | None = Field(
        default=None, description="server ping interval (Binance: 20 s); None: no pings"
    )
    weight_limit_per_minute: int | None = Field(
        default=None, description="answer 429 above this REST weight per minute; None: off"
    )

    @field_validator("markets")
    @classmethod
    def _unique(cls, markets: tuple[MarketSpec, ...]) -> tuple[MarketSpec, ...]:
        ids = [m.market_id for m in markets]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"markets must be non-empty and unique, got {ids}")
        return markets

    @field_validator("genesis_ms")
    @classmethod
    def _genesis(cls, value: int | None) -> int | None:
        if value is not None and value < TAPE_ORIGIN_MS:
            raise ValueError(f"genesis_ms must not precede the tape origin {TAPE_ORIGIN_MS}")
        return value

    def resolved_genesis_ms(self, now_ms: int | None = None) -> int:
        """The genesis actually used: the configured one (floored to a minute) or the default."""
        genesis = self.genesis_ms if self.genesis_ms is not None else default_genesis_ms(now_ms)
        return max(TAPE_ORIGIN_MS, genesis - genesis % MINUTE_MS)
