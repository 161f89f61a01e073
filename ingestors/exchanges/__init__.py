"""Exchange adapters, one exchange's quirks per module, and the registry that finds them.

To add an exchange: write ``<ccxt id>.py`` with an ``ExchangeAdapter`` subclass and list it in
``ADAPTERS``. An exchange without its own module still works through the generic adapter
(``adapter_for`` falls back to it for any exchange CCXT knows).
"""

from __future__ import annotations

from typing import Any

import ccxt

from ticklake.errors import ConfigError
from ticklake.ingestors.exchanges.base import BadFrame, Cursor, ExchangeAdapter, GapFill
from ticklake.ingestors.exchanges.binance import BinanceAdapter

ADAPTERS: dict[str, type[ExchangeAdapter]] = {BinanceAdapter.ccxt_id: BinanceAdapter}


def adapter_for(exchange: str, **kwargs: Any) -> ExchangeAdapter:
    """The adapter of a CCXT exchange id (``binance``); generic for ids without a module."""
    key = exchange.lower()
    cls = ADAPTERS.get(key)
    if cls is not None:
        return cls(**kwargs)
    if key not in ccxt.exchanges:
        raise ConfigError(
            f"unknown exchange {exchange!r}",
            hint=f"use a CCXT exchange id; adapters with quirks handled: {sorted(ADAPTERS)}",
        )
    generic: type[ExchangeAdapter] = type(
        f"{key.title()}Adapter", (ExchangeAdapter,), {"ccxt_id": key}
    )
    return generic(**kwargs)


__all__ = [
    "ADAPTERS",
    "BadFrame",
    "BinanceAdapter",
    "Cursor",
    "ExchangeAdapter",
    "GapFill",
    "adapter_for",
]
