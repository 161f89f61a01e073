"""A local exchange that speaks Binance spot public market-data APIs (REST + websocket), so unmodified CCXT runs end to end without internet."""
