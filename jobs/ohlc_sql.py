"""The Flink SQL of the dedup + OHLC job, generated from its settings (pure Python).

Kept apart from the job's driver so that every statement can be read, printed and unit
tested without PyFlink. ``docs/stream-jobs.md`` explains the pipeline these build:

    raw_trades (Kafka, Avro, watermark)
      -> trades_dedup      ROW_NUMBER() OVER (PARTITION BY exchange, symbol, trade_id
                           ORDER BY proc_time) = 1; the event-time attribute survives it
      -> trades_checked    late := event_time <= CURRENT_WATERMARK(event_time)
      -> bars_1m           TUMBLE 1m over the on-time trades; open/close as MIN/MAX of a
                           fixed-width (time, trade id, price) key
      -> bars_<tf>         TUMBLE <tf> over bars_1m.bar_time (cascaded windows)
      -> candles           all timeframes, in the Candle layout
    sinks: candles -> Kafka (exactly-once) + Iceberg; trades -> Iceberg;
           late trades -> Kafka (exactly-once) + Iceberg
    live (at-least-once, visible at once, no transactions; optional):
      trades_live      on-time trades that are not history backfills -> live trades topic
      live_slices      (conflated, the default) on-time trades -> partial 1m bars per
                       market per processing-time slice (TUMBLE on PROCTIME())
      forming candles  the slices (or each on-time trade), GROUP BY candle key per
                       timeframe (updating), and the final candles -> live candles topic
                       (upsert-kafka)
      and/or the same rows straight to the relay's XSUB port ('ticklake-relay', JeroMQ):
                       ``{market}|tick`` and ``{market}|ohlc:{tf}``, no Kafka hop, no bridge
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ticklake.jobs.functions import function_ddl, micros_to_ltz_sql
from ticklake.schemas.flink import (
    flink_columns,
    kafka_sink_ddl,
    kafka_table_ddl,
    model_table_ddl,
    wire_format,
)
from ticklake.schemas.models import Candle, Trade, WireModel

#: Width of the event-time part of the open/close key: epoch microseconds, zero-padded.
TS_WIDTH = 20
#: Width of the trade-id part: ids are left-padded with '0' (longer ids are cut to this).
ID_WIDTH = 32
#: 1-based position of the price in the key.
PRICE_POS = TS_WIDTH + ID_WIDTH + 1

DAY_S = 86_400
_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": DAY_S}
_UNIT_SQL = {"m": "MINUTE", "h": "HOUR", "d": "DAY"}

TRADE_FIELDS = [f["name"] for f in Trade.avro_schema()["fields"]]
CANDLE_FIELDS = [f["name"] for f in Candle.avro_schema()["fields"]]


def timeframe_seconds(timeframe: str) -> int:
    """Length of a timeframe in CCXT notation (``1m``, ``15m``, ``1h``, ``1d``).

    Only whole minutes that divide a day are candle timeframes here: Flink's tumbling
    windows are aligned to the epoch (UTC), so such windows start at 00:00 UTC like an
    exchange's klines. ``1w`` (exchanges start weeks on Monday, the epoch on a Thursday)
    and ``1M`` (months are not fixed lengths) are not supported.
    """
    match = _TIMEFRAME.match(timeframe)
    if not match:
        raise ValueError(f"timeframe {timeframe!r} is not <n>m, <n>h or <n>d")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > DAY_S or DAY_S % seconds:
        raise ValueError(f"timeframe {timeframe!r} must divide one day (1m ... 1d)")
    return seconds


def interval_sql(timeframe: str) -> str:
    """``INTERVAL '5' MINUTE`` for ``5m``."""
    timeframe_seconds(timeframe)
    match = _TIMEFRAME.match(timeframe)
    assert match is not None
    return f"INTERVAL '{match.group(1)}' {_UNIT_SQL[match.group(2)]}"


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _cols(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def order_key_sql(ts_us: str = "`exchange_ts_us`", trade_id: str = "`trade_id`") -> str:
    """The sortable open/close key of a trade: time, then trade id, then the price.

    ``TICKLAKE_OHLC_KEY(ts, trade_id, price)`` (Java, ``jobs/java/``) returns exactly
    ``CONCAT(LPAD(CAST(ts AS STRING), 20, '0'), LPAD(trade_id, 32, '0'), CAST(price AS STRING))``
    (an integration test compares the two) without the intermediate strings: fixed widths
    make string order equal (time, trade id) order, and the price rides along to be parsed
    back from position 53. ``MIN`` of it is the open, ``MAX`` the close.
    """
    return f"TICKLAKE_OHLC_KEY({ts_us}, {trade_id}, `price`)"


def key_price_sql(key: str) -> str:
    return f"CAST(SUBSTRING({key} FROM {PRICE_POS}) AS DECIMAL(18, 8))"


def key_ts_sql(key: str) -> str:
    return f"CAST(SUBSTRING({key} FROM 1 FOR {TS_WIDTH}) AS BIGINT)"


def millis_interval_sql(ms: int) -> str:
    """``INTERVAL '0 00:00:05.000' DAY TO SECOND(3)`` (Flink has no MILLISECOND literal)."""
    if not 0 <= ms < 100 * DAY_S * 1000:
        raise ValueError(f"interval of {ms} ms is out of range")
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (
        f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"
    )


def window_us_sql(column: str) -> str:
    """A window bound (``TIMESTAMP(3)``, whole minutes, UTC) as epoch microseconds."""
    return (
        f"CAST(TIMESTAMPDIFF(MINUTE, TIMESTAMP '1970-01-01 00:00:00', {column}) AS BIGINT)"
        " * 60000000"
    )


@dataclass(frozen=True)
class JobSql:
    """What the job runs: table options, setup statements, and the INSERTs of one job."""

    config: Mapping[str, str]
    setup: list[str]
    inserts: list[str]

    def script(self) -> str:
        """The whole job as one SQL script (``SET``s, DDL, INSERTs), for docs and review."""
        sets = [f"SET {_q(k)} = {_q(v)}" for k, v in self.config.items()]
        body = [*sets, *self.setup, "EXECUTE STATEMENT SET BEGIN", *self.inserts]
        return ";\n\n".join(body) + ";\nEND;\n"


@dataclass(frozen=True)
class SqlOptions:
    """The inputs of the SQL: names, bounds and sink options (from the job's settings)."""

    bootstrap_servers: str
    raw_topic: str
    candles_topic: str
    late_topic: str
    catalog: str
    namespace: str
    timeframes: tuple[str, ...]
    out_of_orderness_ms: int
    source_options: Mapping[str, str]
    sink_options: Mapping[str, str]
    transactional_id_prefix: str
    ingestor_id: str
    #: Live outputs (at-least-once, no transactions) to Kafka; both ``None``: none there.
    live_trades_topic: str | None = None
    live_candles_topic: str | None = None
    #: Live outputs straight to the relay's XSUB (publish) endpoint, e.g.
    #: ``tcp://127.0.0.1:5557`` (``'connector' = 'ticklake-relay'``); ``None``: not there.
    live_relay: str | None = None
    #: Options of the live sinks (producer ``linger.ms`` ...).
    live_sink_options: Mapping[str, str] = field(default_factory=dict)
    #: Forming candles: at most one update per candle per this many milliseconds of
    #: processing time (0: one update per trade).
    live_conflation_ms: int = 0
    #: The Iceberg writers' ``distribution-mode``: ``hash`` (by partition; the writers in
    #: their own task) or ``none`` (chained to the operator before them).
    iceberg_distribution: str = "none"
    #: How trades are deduplicated: ``fingerprints`` (the source table's
    #: ``ticklake-kafka-dedup`` connector: 128-bit fingerprints in primitive arrays, no heap
    #: object per key) or ``sql`` (Flink SQL's ``ROW_NUMBER`` deduplication, heap keys).
    dedup: str = "fingerprints"
    #: ``fingerprints``: how long a key is kept after its first arrival (0: the whole run).
    #: ``sql`` takes ``table.exec.state.ttl`` instead.
    dedup_ttl_ms: int = 0

    @property
    def live_kafka(self) -> bool:
        return self.live_trades_topic is not None and self.live_candles_topic is not None

    @property
    def live(self) -> bool:
        """Any live output (Kafka topics, the relay or both)."""
        return self.live_kafka or self.live_relay is not None


#: The key of a trade: the same trade from two ingestors, a retry or a replay has the same.
DEDUP_KEY = ("exchange", "symbol", "trade_id")
DEDUP_MODES = ("fingerprints", "sql")


def source_options(o: SqlOptions) -> dict[str, str]:
    """The raw-trades table's options beyond the Kafka defaults.

    ``fingerprints``: the ``ticklake-kafka-dedup`` connector (``jobs/java/.../dedup``), the
    Kafka connector with a dedup operator behind the source, so the table holds each trade
    once (docs/stream-jobs.md section 3).
    """
    if o.dedup not in DEDUP_MODES:
        raise ValueError(f"dedup {o.dedup!r} is not one of {', '.join(DEDUP_MODES)}")
    if o.dedup == "sql":
        return dict(o.source_options)
    return {
        "connector": "ticklake-kafka-dedup",
        "dedup.key": ";".join(DEDUP_KEY),
        "dedup.ttl": f"{o.dedup_ttl_ms} ms",
        **o.source_options,
    }


def source_ddl(o: SqlOptions) -> str:
    """The raw-trades topic with the event time, a processing time and the watermark."""
    return kafka_table_ddl(
        Trade,
        "raw_trades",
        o.raw_topic,
        bootstrap_servers=o.bootstrap_servers,
        options=source_options(o),
        extra_columns=[
            "`event_time` AS TO_TIMESTAMP_LTZ(`exchange_ts_us` / 1000, 3)",
            "`proc_time` AS PROCTIME()",
            "WATERMARK FOR `event_time` AS `event_time` - "
            + millis_interval_sql(o.out_of_orderness_ms),
        ],
    )


def dedup_view(dedup: str = "fingerprints") -> str:
    """Keep the first arrival of each (exchange, symbol, trade_id).

    ``fingerprints``: the source table did it (:func:`source_options`); the view only
    selects. ``sql``: exactly the pattern Flink recognises as deduplication
    (``Deduplicate(keep=[FirstRow], order=[PROCTIME])`` in the plan): append-only output,
    state per key bounded by ``table.exec.state.ttl``, and the ``event_time`` attribute
    passes through.
    """
    cols = _cols(TRADE_FIELDS)
    if dedup == "fingerprints":
        return f"""CREATE TEMPORARY VIEW trades_dedup AS
SELECT {cols}, `event_time`
FROM raw_trades"""
    return f"""CREATE TEMPORARY VIEW trades_dedup AS
SELECT {cols}, `event_time`
FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY `exchange`, `symbol`, `trade_id` ORDER BY `proc_time` ASC) AS row_num
  FROM raw_trades
)
WHERE row_num = 1"""


def checked_view() -> str:
    """Mark a trade late when its event time is at or below the watermark on arrival.

    Such a trade's 1m window may already have fired; it is routed to the late outputs and
    kept out of every candle (not silently dropped by the window operator).
    """
    cols = _cols(TRADE_FIELDS)
    return f"""CREATE TEMPORARY VIEW trades_checked AS
SELECT {cols}, `event_time`,
  COALESCE(`event_time` <= CURRENT_WATERMARK(`event_time`), FALSE) AS `late`
FROM trades_dedup"""


def trade_aggregates_sql() -> str:
    """A bar's columns aggregated from trades (1m windows, live slices, forming candles)."""
    key = order_key_sql()
    return f"""MIN({key}) AS open_key, MAX({key}) AS close_key,
  MAX(`price`) AS high, MIN(`price`) AS low,
  SUM(`amount`) AS volume, SUM(`price` * `amount`) AS quote_volume,
  COUNT(*) AS trade_count, MAX(`receipt_ts_us`) AS receipt_ts_us"""


#: A bar's columns merged from smaller bars (roll-ups, conflated forming candles).
BAR_MERGE_SQL = """MIN(open_key) AS open_key, MAX(close_key) AS close_key,
  MAX(high) AS high, MIN(low) AS low,
  SUM(volume) AS volume, SUM(quote_volume) AS quote_volume,
  SUM(trade_count) AS trade_count, MAX(receipt_ts_us) AS receipt_ts_us"""


def bars_1m_view() -> str:
    """1-minute bars of the on-time trades, with the open/close keys kept for roll-ups."""
    return f"""CREATE TEMPORARY VIEW bars_1m AS
SELECT `exchange`, `symbol`, window_start AS w_start, window_end AS w_end,
  window_time AS bar_time,
  {trade_aggregates_sql()}
FROM TABLE(TUMBLE(
  TABLE trades_checked, DESCRIPTOR(`event_time`), INTERVAL '1' MINUTE))
WHERE NOT `late`
GROUP BY `exchange`, `symbol`, window_start, window_end, window_time"""


def rollup_select(timeframe: str) -> str:
    """Bars of ``timeframe`` rolled up from the 1m bars (cascaded tumbling windows)."""
    return f"""SELECT `exchange`, `symbol`, window_start AS w_start, window_end AS w_end,
  {BAR_MERGE_SQL}
FROM TABLE(TUMBLE(TABLE bars_1m, DESCRIPTOR(bar_time), {interval_sql(timeframe)}))
GROUP BY `exchange`, `symbol`, window_start, window_end"""


def candles_view(o: SqlOptions) -> str:
    """Every timeframe's candles in the Candle layout (plus ``window_start`` for Iceberg)."""
    parts = []
    for tf in o.timeframes:
        if tf == "1m":
            src = (
                "SELECT `exchange`, `symbol`, w_start, w_end, open_key, close_key, high, low,"
                " volume, quote_volume, trade_count, receipt_ts_us FROM bars_1m"
            )
        else:
            src = rollup_select(tf)
        parts.append(
            f"""SELECT `exchange`, `symbol`,
  {key_ts_sql("close_key")} AS `exchange_ts_us`,
  receipt_ts_us AS `receipt_ts_us`,
  {_q(o.ingestor_id)} AS `ingestor_id`,
  {_q(tf)} AS `timeframe`,
  {window_us_sql("w_start")} AS `window_start_us`,
  {window_us_sql("w_end")} AS `window_end_us`,
  {key_price_sql("open_key")} AS `open`,
  high AS `high`, low AS `low`,
  {key_price_sql("close_key")} AS `close`,
  volume AS `volume`,
  quote_volume AS `quote_volume`,
  trade_count AS `trade_count`,
  CAST(quote_volume / volume AS DECIMAL(18, 8)) AS `vwap`,
  TRUE AS `final`,
  trade_count AS `version`,
  CAST(w_start AS TIMESTAMP_LTZ(6)) AS `window_start`
FROM ({src})"""
        )
    return "CREATE TEMPORARY VIEW candles AS\n" + "\nUNION ALL\n".join(parts)


def _kafka_sink_ddl(
    model: type[Trade] | type[Candle], table: str, topic: str, o: SqlOptions, suffix: str
) -> str:
    options = {
        "key.format": "raw",
        "key.fields": "market",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{o.transactional_id_prefix}-{suffix}",
        **o.sink_options,
    }
    return kafka_sink_ddl(
        model,
        table,
        topic,
        bootstrap_servers=o.bootstrap_servers,
        options=options,
        extra_columns=["`market` STRING NOT NULL"],
    )


def sink_ddls(o: SqlOptions) -> list[str]:
    ddls = [
        _kafka_sink_ddl(Candle, "candles_kafka", o.candles_topic, o, "candles"),
        _kafka_sink_ddl(Trade, "late_trades_kafka", o.late_topic, o, "late"),
    ]
    if o.live:
        ddls += live_sink_ddls(o)
    return ddls


def _live_options(o: SqlOptions) -> dict[str, str]:
    return {
        "key.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "at-least-once",
        **o.live_sink_options,
    }


def live_sink_ddls(o: SqlOptions) -> list[str]:
    """The live sinks: Kafka topics, the relay, or both (:func:`live_tables`)."""
    return [
        *(live_kafka_ddls(o) if o.live_kafka else []),
        *(live_relay_ddls(o) if o.live_relay is not None else []),
    ]


def live_tables(o: SqlOptions) -> list[tuple[str, str]]:
    """(live trades table, live candles table) of each live output the job writes."""
    out = []
    if o.live_kafka:
        out.append(("live_trades_kafka", "live_candles_kafka"))
    if o.live_relay is not None:
        out.append(("live_trades_relay", "live_candles_relay"))
    return out


#: Relay data types of the live tables: the bridge's default routes (``relay/bridge.py``).
RELAY_TRADES_DATA_TYPE = "tick"
RELAY_CANDLES_DATA_TYPE = "ohlc:{1}"


def relay_table_ddl(
    model: type[WireModel],
    table: str,
    endpoint: str,
    *,
    key: str,
    data_type: str,
    extra_columns: Sequence[str],
) -> str:
    """A ``ticklake-relay`` table (``jobs/java/.../relay``): ``model``'s columns and the
    ``key`` column that routes each row to ``{market}|{data_type}``; the payload is the
    model's Avro binary, byte for byte what the Kafka live topics carry."""
    options = {
        "connector": "ticklake-relay",
        "endpoint": endpoint,
        "key.field": key,
        "data-type": data_type,
        "format": wire_format(),
    }
    return model_table_ddl(model, table, options, extra_columns=extra_columns)


def live_relay_ddls(o: SqlOptions) -> list[str]:
    """The live trades and candles published straight to the relay (no Kafka, no bridge):
    the same rows as the Kafka live tables, routed as the bridge routes those topics."""
    assert o.live_relay is not None
    trade_columns = ["`market` STRING NOT NULL"]
    candle_columns = ["`candle_key` STRING NOT NULL", "PRIMARY KEY (`candle_key`) NOT ENFORCED"]
    return [
        relay_table_ddl(Trade, "live_trades_relay", o.live_relay, key="market",
                        data_type=RELAY_TRADES_DATA_TYPE, extra_columns=trade_columns),
        relay_table_ddl(Candle, "live_candles_relay", o.live_relay, key="candle_key",
                        data_type=RELAY_CANDLES_DATA_TYPE, extra_columns=candle_columns),
    ]  # fmt: skip


def live_kafka_ddls(o: SqlOptions) -> list[str]:
    """The live trades (``kafka``, keyed by market) and live candles (``upsert-kafka``).

    The live candles table's primary key is the computed ``candle_key``
    (``EXCHANGE:BASE/QUOTE|<timeframe>|<window_start_us>``), its raw UTF-8 Kafka key; the
    value is the Candle record. ``upsert-kafka`` accepts the updating stream of the forming
    candles (inserts and update-afters; the planner drops the update-befores).
    """
    assert o.live_trades_topic is not None and o.live_candles_topic is not None
    trades = kafka_sink_ddl(
        Trade,
        "live_trades_kafka",
        o.live_trades_topic,
        bootstrap_servers=o.bootstrap_servers,
        options={**_live_options(o), "key.fields": "market"},
        extra_columns=["`market` STRING NOT NULL"],
    )
    candles = kafka_sink_ddl(
        Candle,
        "live_candles_kafka",
        o.live_candles_topic,
        bootstrap_servers=o.bootstrap_servers,
        options={"connector": "upsert-kafka", **_live_options(o)},
        extra_columns=["`candle_key` STRING NOT NULL", "PRIMARY KEY (`candle_key`) NOT ENFORCED"],
    )
    return [trades, candles]


def live_trades_view() -> str:
    """The trades that feed the live outputs: on time and not history backfills."""
    return f"""CREATE TEMPORARY VIEW trades_live AS
SELECT {_cols(TRADE_FIELDS)} FROM trades_checked WHERE {LIVE}"""


def candle_key_sql(timeframe: str, window_start_us: str) -> str:
    """``EXCHANGE:BASE/QUOTE|<timeframe>|<window_start_us>``: one Kafka key per candle."""
    return (
        f"CONCAT(`exchange`, ':', `symbol`, '|', {_q(timeframe)}, '|', "
        f"CAST({window_start_us} AS STRING))"
    )


def live_slices_views(o: SqlOptions) -> list[str]:
    """Conflation of the forming candles: partial 1m bars per processing-time slice.

    A processing-time ``TUMBLE`` of ``live_conflation_ms`` over the on-time trades, grouped
    by market and the trade's 1m window (from ``exchange_ts_us``, so a slice that spans a
    minute boundary or holds out-of-order trades yields one partial per minute). Every
    timeframe's forming aggregate then merges these partials instead of single trades: per
    candle at most one update per slice, whatever the trade rate. Partials are append-only,
    so the merge needs no retraction. Flink does not fire processing-time windows at the end
    of a bounded input: in a bounded run the last slice gives no forming update (its final
    candles carry those trades).
    """
    return [
        """CREATE TEMPORARY VIEW live_slice_input AS
SELECT `exchange`, `symbol`, `trade_id`, `price`, `amount`, `exchange_ts_us`, `receipt_ts_us`,
  `exchange_ts_us` - MOD(`exchange_ts_us`, CAST(60000000 AS BIGINT)) AS w1m_start_us,
  PROCTIME() AS slice_time
FROM trades_checked WHERE NOT `late`""",
        f"""CREATE TEMPORARY VIEW live_slices AS
SELECT `exchange`, `symbol`, w1m_start_us,
  {trade_aggregates_sql()}
FROM TABLE(TUMBLE(TABLE live_slice_input, DESCRIPTOR(slice_time),
  {millis_interval_sql(o.live_conflation_ms)}))
GROUP BY `exchange`, `symbol`, w1m_start_us, window_start, window_end""",
    ]


def _forming_agg(o: SqlOptions, timeframe: str) -> str:
    """The updating aggregate of one timeframe's forming candles (per trade or per slice)."""
    size = f"CAST({timeframe_seconds(timeframe) * 1_000_000} AS BIGINT)"
    ttl_s = 2 * timeframe_seconds(timeframe)
    if o.live_conflation_ms > 0:
        aggregates, source = BAR_MERGE_SQL, "live_slices"
        w_start = f"w1m_start_us - MOD(w1m_start_us, {size})"
    else:
        aggregates, source = trade_aggregates_sql(), "trades_checked WHERE NOT `late`"
        w_start = f"`exchange_ts_us` - MOD(`exchange_ts_us`, {size})"
    return f"""SELECT /*+ STATE_TTL('t' = '{ttl_s}s') */ candle_key,
    MAX(`exchange`) AS `exchange`, MAX(`symbol`) AS `symbol`, MAX(w_start_us) AS w_start_us,
    {aggregates}
  FROM (
    SELECT *, {candle_key_sql(timeframe, "w_start_us")} AS candle_key
    FROM (SELECT *, {w_start} AS w_start_us FROM {source})
  ) AS t
  GROUP BY candle_key"""


def forming_select(o: SqlOptions, timeframe: str) -> str:
    """Every update of the forming candles of one timeframe, in the live-candles layout.

    A non-windowed ``GROUP BY candle_key`` (market, timeframe, window start from
    ``exchange_ts_us``) over exactly the trades the window candles take (every on-time
    trade): an updating aggregate that emits the candle's new value after each of them, with
    ``final = FALSE`` and ``version = trade_count - 1`` (0, 1, 2, ...: strictly increasing;
    the final candle's ``version = trade_count`` is always above every forming one).

    Grouping by the computed key alone (market and window start ride along as ``MAX``) makes
    the aggregate's upsert key exactly the sink's primary key, so the planner asks it for
    update-afters only: ``upsert-kafka`` writes an update-before as a tombstone, and none is
    written. Open/close are the same order keys as the window candles, so the last forming
    update equals the final candle field by field (except ``final``/``version``). The
    ``STATE_TTL`` hint bounds this operator's state at twice the timeframe (processing time
    since the candle's last update), independent of the dedup TTL.

    With ``live_conflation_ms > 0`` the aggregate merges the partial bars of
    ``live_slices`` instead of single trades: at most one update per candle per slice,
    versions then step by the slice's trade count (still strictly increasing).
    """
    size_us = timeframe_seconds(timeframe) * 1_000_000
    agg = _forming_agg(o, timeframe)
    return f"""SELECT `exchange`, `symbol`,
  {key_ts_sql("close_key")} AS `exchange_ts_us`,
  receipt_ts_us AS `receipt_ts_us`,
  {_q(o.ingestor_id)} AS `ingestor_id`,
  {_q(timeframe)} AS `timeframe`,
  w_start_us AS `window_start_us`,
  w_start_us + {size_us} AS `window_end_us`,
  {key_price_sql("open_key")} AS `open`,
  high AS `high`, low AS `low`,
  {key_price_sql("close_key")} AS `close`,
  volume AS `volume`,
  quote_volume AS `quote_volume`,
  trade_count AS `trade_count`,
  CAST(quote_volume / volume AS DECIMAL(18, 8)) AS `vwap`,
  FALSE AS `final`,
  trade_count - 1 AS `version`,
  candle_key
FROM (
  {agg}
)"""


def live_inserts(o: SqlOptions) -> list[str]:
    """Live trades; forming candles, one INSERT per timeframe; final candles.

    One INSERT per timeframe, not a ``UNION ALL``: a union has no upsert key, which would
    make the planner emit update-befores (tombstones in ``upsert-kafka``).
    """
    market = "CONCAT(`exchange`, ':', `symbol`)"
    final_key = (
        "CONCAT(`exchange`, ':', `symbol`, '|', `timeframe`, '|', "
        "CAST(`window_start_us` AS STRING))"
    )
    out = []
    for trades, candles in live_tables(o):
        out += [
            f"INSERT INTO {trades} SELECT {_cols(TRADE_FIELDS)}, {market} FROM trades_live",
            *(f"INSERT INTO {candles}\n{forming_select(o, tf)}" for tf in o.timeframes),
            f"INSERT INTO {candles}\nSELECT {_cols(CANDLE_FIELDS)}, {final_key} "
            "AS `candle_key` FROM candles",
        ]
    return out


def _iceberg(o: SqlOptions, table: str) -> str:
    """An Iceberg sink table, with the writers' distribution as a dynamic option.

    ``hash`` shuffles the rows by partition (day, market) to the writers, which puts them
    in a task of their own: at every checkpoint an Iceberg writer closes its Parquet files
    and uploads them to S3 before the barrier may pass, and chained to the operators that
    also feed the live sinks it would stall the live outputs for that long.
    """
    target = f"`{o.catalog}`.`{o.namespace}`.`{table}`"
    if o.iceberg_distribution == "none":
        return target
    return f"{target} /*+ OPTIONS('distribution-mode'={_q(o.iceberg_distribution)}) */"


ICEBERG_TRADE_COLUMNS = [
    "exchange",
    "symbol",
    "trade_id",
    "side",
    "price",
    "amount",
    "exchange_ts",
    "exchange_ts_us",
    "receipt_ts_us",
    "ingestor_id",
    "request_id",
]
ICEBERG_CANDLE_COLUMNS = [
    "exchange",
    "symbol",
    "timeframe",
    "window_start",
    "window_start_us",
    "window_end_us",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "vwap",
    "exchange_ts_us",
    "receipt_ts_us",
    "ingestor_id",
    "final",
    "version",
]


#: Late trades that go to the late outputs: history backfills (``request_id`` set) are
#: old by nature; they go to the trades table only.
LATE = "`late` AND `request_id` IS NULL"
#: Trades of the live trades topic: on time, not history backfills. (Forming candles take
#: every on-time trade, like the final candles, so that they converge to them.)
LIVE = "NOT `late` AND `request_id` IS NULL"


def _trade_select(where: str) -> str:
    exprs = [
        micros_to_ltz_sql("`exchange_ts_us`") if c == "exchange_ts" else f"`{c}`"
        for c in ICEBERG_TRADE_COLUMNS
    ]
    return f"SELECT {', '.join(exprs)} FROM trades_checked{where}"


def inserts(o: SqlOptions) -> list[str]:
    """The INSERTs (five, plus 2 + timeframes live ones); one statement set, one Flink job."""
    market = "CONCAT(`exchange`, ':', `symbol`)"
    return [
        f"INSERT INTO candles_kafka SELECT {_cols(CANDLE_FIELDS)}, {market} FROM candles",
        f"INSERT INTO {_iceberg(o, 'candles')} ({_cols(ICEBERG_CANDLE_COLUMNS)})\n"
        f"SELECT {_cols(ICEBERG_CANDLE_COLUMNS)} FROM candles",
        f"INSERT INTO {_iceberg(o, 'trades')} ({_cols(ICEBERG_TRADE_COLUMNS)})\n"
        + _trade_select(""),
        f"INSERT INTO late_trades_kafka SELECT {_cols(TRADE_FIELDS)}, {market}\n"
        f"FROM trades_checked WHERE {LATE}",
        f"INSERT INTO {_iceberg(o, 'late_trades')} ({_cols(ICEBERG_TRADE_COLUMNS)})\n"
        + _trade_select(f" WHERE {LATE}"),
        *(live_inserts(o) if o.live else []),
    ]


def job_sql(o: SqlOptions, config: Mapping[str, str], catalog_ddl: str) -> JobSql:
    """Everything the job runs, in order."""
    setup = [
        *function_ddl(),
        catalog_ddl,
        source_ddl(o),
        *sink_ddls(o),
        dedup_view(o.dedup),
        checked_view(),
        bars_1m_view(),
        candles_view(o),
        *([live_trades_view()] if o.live else []),
        *(live_slices_views(o) if o.live and o.live_conflation_ms > 0 else []),
    ]
    return JobSql(config=dict(config), setup=setup, inserts=inserts(o))


def physical_trade_columns() -> list[str]:
    """The raw-trades columns (for docs and tests)."""
    return flink_columns(Trade)
