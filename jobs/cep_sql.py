"""The Flink SQL of the CEP job, generated from pattern files and settings (pure Python).

A pattern is one SQL file (``jobs/patterns/<name>.sql``): a header of ``-- key: value`` lines
(name, input, severity, parameters) and one ``SELECT`` over an input view that yields the
match columns (:data:`MATCH_COLUMNS`). This module parses those files, substitutes the
parameters (per market where they can differ per row, per query where Flink needs a constant),
wraps every query into the alert layout with its deterministic id, and writes the job:

    candles topic (Candle Avro, read_committed)   heartbeats topic (FeedHeartbeat Avro)
      -> candles      final candles of one timeframe + ATR(14), event time = window start
      -> heartbeats                                  event time = heartbeat receipt time
      -> <pattern>    one SELECT per pattern and parameter group (MATCH_RECOGNIZE, OVER, joins)
      -> alerts       UNION ALL, in the Alert layout
    sinks: alerts -> Kafka (exactly-once, keyed by market) + Iceberg <namespace>.alerts

Everything here is plain Python, so the SQL can be printed and unit tested without PyFlink.
``docs/cep.md`` documents the patterns and how to add one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Literal

from ticklake.jobs.functions import function_ddl, micros_to_ltz_sql
from ticklake.jobs.ohlc_sql import JobSql, millis_interval_sql
from ticklake.schemas.alerts import ALERT_ID_LENGTH, Alert
from ticklake.schemas.flink import kafka_sink_ddl, kafka_table_ddl
from ticklake.schemas.models import Candle, FeedHeartbeat

InputName = Literal["candles", "heartbeats"]
ParamKind = Literal["decimal", "duration", "interval", "rows"]

#: Columns (in order) every pattern's SELECT yields; the job adds id, pattern and severity.
MATCH_COLUMNS = (
    "exchange",
    "symbol",
    "ingestor_id",
    "window_start_us",
    "window_end_us",
    "exchange_ts_us",
    "receipt_ts_us",
    "observed",
    "threshold",
    "reference",
    "unit",
    "message",
)
ALERT_FIELDS = [f["name"] for f in Alert.avro_schema()["fields"]]
ICEBERG_ALERT_COLUMNS = [*ALERT_FIELDS[:6], "window_start", *ALERT_FIELDS[6:]]

#: Per-market parameters are exact ``DECIMAL(10, 4)`` columns (6 digits before the point).
PARAM_DECIMAL = (10, 4)
#: ATR length (candles) of the ``atr`` column of the candles view.
ATR_LENGTH = 14
SEVERITIES = ("info", "warning", "critical")
KINDS: tuple[ParamKind, ...] = ("decimal", "duration", "interval", "rows")
#: Kinds that must be constants in the SQL (WITHIN, ROWS BETWEEN): markets that set them
#: differently run in separate queries. The others become per-row columns ``p_<name>``.
CONST_KINDS = ("interval", "rows")

_HEADER = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|m|h|d)\s*$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]*)\}")
#: ``${num:<expr>}``: an exact decimal as its shortest text (for messages); no braces inside.
_NUM = re.compile(r"\$\{num:([^{}]+)\}")


class PatternError(ValueError):
    """A pattern file or its configuration is invalid (the message names the file and why)."""


@dataclass(frozen=True)
class Param:
    """A pattern parameter declared in the header: ``-- param: <name> <kind> <default> doc``."""

    name: str
    kind: ParamKind
    default: str
    doc: str = ""


@dataclass(frozen=True)
class Pattern:
    """One pattern file: its header and its SELECT body."""

    name: str
    input: InputName
    severity: str
    params: tuple[Param, ...]
    body: str
    doc: str = ""
    source: str = ""

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise PatternError(f"pattern {self.name} has no parameter {name!r}")


def parse_pattern(text: str, source: str = "<string>") -> Pattern:
    """Parse a pattern file: header lines ``-- key: value``, free ``--`` doc lines, the body."""
    meta: dict[str, str] = {}
    params: list[Param] = []
    doc: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) and (lines[i].startswith("--") or not lines[i].strip()):
        line = lines[i]
        match = _HEADER.match(line)
        if match and match.group(1) in {"pattern", "input", "severity", "param"}:
            key, value = match.groups()
            if key == "param":
                params.append(_parse_param(value, source))
            elif key in meta:
                raise PatternError(f"{source}: header '{key}' repeats")
            else:
                meta[key] = value
        elif line.startswith("--"):
            doc.append(line[2:].strip())
        i += 1
    body = "\n".join(lines[i:]).strip().rstrip(";").strip()
    name, input_, severity = _check_header(meta, source)
    if not body.upper().startswith("SELECT"):
        raise PatternError(f"{source}: the body after the header must be one SELECT")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise PatternError(f"{source}: a parameter is declared twice")
    pattern = Pattern(
        name=name,
        input=input_,
        severity=severity,
        params=tuple(params),
        body=body,
        doc="\n".join(doc).strip(),
        source=source,
    )
    for p in params:
        normalize(p, p.default, source)
    _check_placeholders(pattern)
    return pattern


def _check_header(meta: Mapping[str, str], source: str) -> tuple[str, InputName, str]:
    for key in ("pattern", "input", "severity"):
        if key not in meta:
            raise PatternError(f"{source}: header line '-- {key}: ...' is missing")
    name, input_, severity = meta["pattern"], meta["input"], meta["severity"]
    if not _NAME.match(name):
        raise PatternError(f"{source}: pattern name {name!r} is not lower_snake_case")
    if input_ not in ("candles", "heartbeats"):
        raise PatternError(f"{source}: input {input_!r} is not candles or heartbeats")
    if severity not in SEVERITIES:
        raise PatternError(f"{source}: severity {severity!r} is not one of {SEVERITIES}")
    return name, input_, severity  # type: ignore[return-value]


def _parse_param(value: str, source: str) -> Param:
    parts = value.split(None, 3)
    if len(parts) < 3:
        raise PatternError(f"{source}: '-- param: {value}' needs <name> <kind> <default> [doc]")
    name, kind, default = parts[:3]
    if not _NAME.match(name):
        raise PatternError(f"{source}: parameter name {name!r} is not lower_snake_case")
    if kind not in KINDS:
        raise PatternError(f"{source}: parameter {name} has kind {kind!r}, not one of {KINDS}")
    return Param(name, kind, default, parts[3] if len(parts) > 3 else "")


def _allowed_placeholders(pattern: Pattern) -> set[str]:
    allowed: set[str] = {pattern.input}
    for p in pattern.params:
        if p.kind == "interval":
            allowed |= {p.name, f"{p.name}_us", f"{p.name}_text"}
        elif p.kind == "rows":
            allowed.add(p.name)
    return allowed


def _check_placeholders(pattern: Pattern) -> None:
    used = set(_PLACEHOLDER.findall(pattern.body))
    unknown = used - _allowed_placeholders(pattern)
    if unknown:
        raise PatternError(
            f"{pattern.source}: unknown placeholder(s) {sorted(unknown)}; per-market "
            "parameters (decimal, duration) are columns p_<name>, not placeholders"
        )
    if pattern.input not in used:
        raise PatternError(f"{pattern.source}: the body never reads ${{{pattern.input}}}")


def duration_ms(value: str) -> int:
    """``500ms``, ``5s``, ``2m``/``2min``, ``1h``, ``1d`` in milliseconds."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like 500ms, 60s, 5m, 1h")
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def normalize(param: Param, value: object, source: str = "") -> str:
    """Validate a parameter value for its kind; returns its canonical text."""
    where = f"{source}: " if source else ""
    text = str(value).strip()
    try:
        if param.kind == "decimal":
            number = Decimal(text)
            precision, scale = PARAM_DECIMAL
            if not number.is_finite() or number < 0:
                raise ValueError("must be a finite decimal >= 0")
            if number != number.quantize(Decimal(1).scaleb(-scale)):
                raise ValueError(f"at most {scale} decimal places")
            if number >= Decimal(10) ** (precision - scale):
                raise ValueError(f"at most {precision - scale} digits before the point")
            return format(number.normalize(), "f")
        if param.kind == "rows":
            rows = int(text)
            if rows < 1 or str(rows) != text:
                raise ValueError("must be a whole number >= 1")
            return text
        if duration_ms(text) <= 0:
            raise ValueError("must be positive")
        return text
    except (ValueError, InvalidOperation) as exc:
        raise PatternError(f"{where}parameter {param.name} = {value!r}: {exc}") from exc


def load_patterns(directories: Sequence[Path] = ()) -> dict[str, Pattern]:
    """The built-in patterns (``jobs/patterns/*.sql``) plus those in ``directories``.

    A file in a later directory replaces a pattern of the same name.
    """
    found: dict[str, Pattern] = {}
    builtin = resources.files("ticklake.jobs") / "patterns"
    files = [(f.name, f.read_text(encoding="utf-8")) for f in builtin.iterdir()]
    for name, text in sorted(files):
        if name.endswith(".sql"):
            p = parse_pattern(text, f"jobs/patterns/{name}")
            found[p.name] = p
    for directory in directories:
        for path in sorted(Path(directory).glob("*.sql")):
            p = parse_pattern(path.read_text(encoding="utf-8"), str(path))
            found[p.name] = p
    return found


@dataclass(frozen=True)
class PatternConfig:
    """Parameter values of one pattern: defaults, and overrides per market ``EX:BASE/QUOTE``."""

    values: Mapping[str, str] = field(default_factory=dict)
    markets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def _market_parts(market: str) -> tuple[str, str]:
    exchange, sep, symbol = market.partition(":")
    if not sep or not exchange or "/" not in symbol:
        raise PatternError(f"market {market!r} is not EXCHANGE:BASE/QUOTE")
    return exchange, symbol


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _market_sql(market: str, prefix: str = "") -> str:
    exchange, symbol = _market_parts(market)
    return f"({prefix}`exchange` = {_q(exchange)} AND {prefix}`symbol` = {_q(symbol)})"


def _literal(param: Param, value: str) -> str:
    if param.kind == "decimal":
        precision, scale = PARAM_DECIMAL
        return f"CAST({_q(value)} AS DECIMAL({precision}, {scale}))"
    if param.kind == "duration":
        return f"CAST({duration_ms(value) * 1000} AS BIGINT)"
    raise AssertionError(param.kind)


def resolve(
    pattern: Pattern, config: PatternConfig
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Validated defaults and per-market values (only markets that override something)."""
    for key in config.values:
        pattern.param(key)
    defaults = {p.name: normalize(p, config.values.get(p.name, p.default), pattern.name)
                for p in pattern.params}  # fmt: skip
    markets: dict[str, dict[str, str]] = {}
    for market, values in config.markets.items():
        _market_parts(market)
        for key in values:
            pattern.param(key)
        markets[market] = {
            p.name: normalize(p, values[p.name], f"{pattern.name} {market}")
            if p.name in values
            else defaults[p.name]
            for p in pattern.params
        }
    return defaults, markets


@dataclass(frozen=True)
class QueryGroup:
    """Markets that share the constant parameters of a pattern: one query."""

    consts: Mapping[str, str]
    #: Markets of this group; None = every market not named by another group.
    markets: tuple[str, ...] | None
    excluded: tuple[str, ...] = ()


def query_groups(pattern: Pattern, config: PatternConfig) -> list[QueryGroup]:
    """Split the markets by their constant (interval, rows) parameter values."""
    defaults, markets = resolve(pattern, config)
    const_names = [p.name for p in pattern.params if p.kind in CONST_KINDS]

    def consts(values: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple((n, values[n]) for n in const_names)

    default_key = consts(defaults)
    others: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for market, values in sorted(markets.items()):
        key = consts(values)
        if key != default_key:
            others.setdefault(key, []).append(market)
    moved = tuple(m for ms in others.values() for m in ms)
    groups = [QueryGroup(dict(default_key), None, moved)]
    groups += [QueryGroup(dict(k), tuple(ms)) for k, ms in others.items()]
    return groups


def _case(param: Param, default: str, markets: Mapping[str, Mapping[str, str]]) -> str:
    overrides = [(m, v[param.name]) for m, v in sorted(markets.items()) if v[param.name] != default]
    if not overrides:
        return _literal(param, default)
    whens = " ".join(f"WHEN {_market_sql(m)} THEN {_literal(param, v)}" for m, v in overrides)
    return f"CASE {whens} ELSE {_literal(param, default)} END"


def input_sql(pattern: Pattern, config: PatternConfig, group: QueryGroup) -> str:
    """The pattern's input: the view, plus ``p_<name>`` columns, filtered to the group."""
    defaults, markets = resolve(pattern, config)
    cols = [
        f"{_case(p, defaults[p.name], markets)} AS p_{p.name}"
        for p in pattern.params
        if p.kind not in CONST_KINDS
    ]
    select = ", ".join(["*", *cols])
    where = ""
    if group.markets is not None:
        where = " WHERE " + " OR ".join(_market_sql(m) for m in group.markets)
    elif group.excluded:
        where = " WHERE NOT (" + " OR ".join(_market_sql(m) for m in group.excluded) + ")"
    return f"(SELECT {select} FROM {pattern.input}{where})"


def render(pattern: Pattern, config: PatternConfig, group: QueryGroup) -> str:
    """The pattern's body with every placeholder substituted for one query group."""
    values: dict[str, str] = {pattern.input: input_sql(pattern, config, group)}
    for p in pattern.params:
        if p.kind == "interval":
            text = group.consts[p.name]
            ms = duration_ms(text)
            values[p.name] = millis_interval_sql(ms)
            values[f"{p.name}_us"] = f"CAST({ms * 1000} AS BIGINT)"
            values[f"{p.name}_text"] = text.replace("'", "")
        elif p.kind == "rows":
            values[p.name] = group.consts[p.name]
    body = _PLACEHOLDER.sub(lambda m: values[m.group(1)], pattern.body)
    return _NUM.sub(lambda m: num_text_sql(m.group(1).strip()), body)


def num_text_sql(expr: str) -> str:
    """An exact decimal as text without trailing zeros: ``12.50000000`` -> ``12.5``,
    ``24.000`` -> ``24`` (text without a point, e.g. an integer, stays as it is)."""
    text = f"CAST(({expr}) AS STRING)"
    return (
        f"CASE WHEN POSITION('.' IN {text}) > 0 "
        f"THEN REGEXP_REPLACE({text}, '\\.?0+$', '') ELSE {text} END"
    )


def alert_id_sql(pattern: str, prefix: str = "m.") -> str:
    """Flink SQL of :func:`ticklake.schemas.alerts.alert_id` over the match columns."""
    parts = [
        _q(pattern + "|"),
        f"{prefix}`exchange`",
        "':'",
        f"{prefix}`symbol`",
        "'|'",
        f"COALESCE({prefix}`ingestor_id`, '')",
        "'|'",
        f"CAST({prefix}`window_start_us` AS STRING)",
        "'|'",
        f"CAST({prefix}`window_end_us` AS STRING)",
    ]
    return f"SUBSTRING(SHA256(CONCAT({', '.join(parts)})) FROM 1 FOR {ALERT_ID_LENGTH})"


def alert_select(pattern: Pattern, config: PatternConfig) -> str:
    """Every query of the pattern (one per group) in the Alert layout, UNION ALL."""
    numbers = ("observed", "threshold", "reference")
    cols = ", ".join(
        f"{num_text_sql(f'm.`{c}`')} AS `{c}`" if c in numbers else f"m.`{c}`"
        for c in MATCH_COLUMNS
    )
    parts = [
        f"SELECT {alert_id_sql(pattern.name)} AS `alert_id`, {_q(pattern.name)} AS `pattern`, "
        f"{_q(pattern.severity)} AS `severity`, {cols}\n"
        f"FROM (\n{render(pattern, config, group)}\n) AS m"
        for group in query_groups(pattern, config)
    ]
    return "\nUNION ALL\n".join(parts)


@dataclass(frozen=True)
class CepSqlOptions:
    """Inputs of the SQL (from the job's settings)."""

    bootstrap_servers: str
    candles_topic: str
    heartbeats_topic: str
    alerts_topic: str
    catalog: str
    namespace: str
    timeframe: str
    #: Only candles of this producer (``ingestor_id``); empty: every final candle.
    candle_producer: str
    out_of_orderness_ms: int
    source_options: Mapping[str, str]
    sink_options: Mapping[str, str]
    transactional_id_prefix: str
    patterns: Sequence[Pattern]
    configs: Mapping[str, PatternConfig]
    #: The heartbeats' event time follows the wall clock once their topic is idle (the
    #: ``clock_source``, see :func:`clock_source_ddl`); ``False`` for replays and bounded runs.
    liveness_clock: bool = False


def _watermarked(ts_us: str, bound_ms: int) -> list[str]:
    return [
        f"`event_time` AS TO_TIMESTAMP_LTZ({ts_us} / 1000, 3)",
        f"WATERMARK FOR `event_time` AS `event_time` - {millis_interval_sql(bound_ms)}",
    ]


def source_ddls(o: CepSqlOptions) -> list[str]:
    """The candles and heartbeats topics, read_committed, with event time and watermark."""
    options = {"properties.isolation.level": "read_committed", **o.source_options}
    return [
        kafka_table_ddl(
            Candle,
            "candles_source",
            o.candles_topic,
            bootstrap_servers=o.bootstrap_servers,
            options=options | {"properties.group.id": options["properties.group.id"] + "-c"},
            extra_columns=_watermarked("`window_start_us`", o.out_of_orderness_ms),
        ),
        kafka_table_ddl(
            FeedHeartbeat,
            "heartbeats_source",
            o.heartbeats_topic,
            bootstrap_servers=o.bootstrap_servers,
            options=options | {"properties.group.id": options["properties.group.id"] + "-h"},
            extra_columns=_watermarked("`receipt_ts_us`", o.out_of_orderness_ms),
        ),
    ]


#: Rows per second of the liveness clock: the resolution of its watermark.
CLOCK_ROWS_PER_SECOND = 4


def clock_source_ddl(o: CepSqlOptions) -> str:
    """A generated source whose event time is the wall clock: the heartbeats' liveness clock.

    Absence needs event time to move without events: ``dead_feed`` reports a feed when the
    watermark passes its last heartbeat + ``max_gap``, and the watermark comes from the
    heartbeats of every feed. If every feed stops at once (the only ingestor crashed), the
    Kafka source goes idle after ``idle_timeout``, an idle input no longer holds the
    watermark back, and this source (``datagen``, a few rows per second, watermark
    ``CURRENT_TIMESTAMP`` - the bound) carries it on with the wall clock. While heartbeats
    flow, their own watermark is the lower one and decides. Its rows never reach a pattern
    (:func:`heartbeats_view` filters all of them out; the filter passes the watermark on).
    """
    return f"""CREATE TEMPORARY TABLE clock_source (
  `tick` INT,
  `event_time` AS CAST(CURRENT_TIMESTAMP AS TIMESTAMP_LTZ(3)),
  WATERMARK FOR `event_time` AS `event_time` - {millis_interval_sql(o.out_of_orderness_ms)}
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '{CLOCK_ROWS_PER_SECOND}',
  'fields.tick.kind' = 'random',
  'fields.tick.min' = '0',
  'fields.tick.max' = '9'
)"""


def candles_view(o: CepSqlOptions) -> str:
    """Final candles of one timeframe with ATR(14) (simple mean of the true range).

    True range = max(high - low, |high - previous close|, |low - previous close|) (high - low
    for a market's first candle); ``atr`` is the mean of the last 14 true ranges including the
    candle's own, ``DECIMAL(18, 8)`` rounded HALF_UP, NULL until 14 candles were seen.
    """
    producer = f" AND `ingestor_id` = {_q(o.candle_producer)}" if o.candle_producer else ""
    return f"""CREATE TEMPORARY VIEW candles AS
SELECT `exchange`, `symbol`, `window_start_us`, `window_end_us`, `exchange_ts_us`,
  `receipt_ts_us`, `open`, `high`, `low`, `close`, `volume`, `trade_count`,
  CASE WHEN atr_n >= {ATR_LENGTH} THEN atr END AS atr, `event_time`
FROM (
  SELECT *,
    CAST(AVG(tr) OVER w AS DECIMAL(18, 8)) AS atr,
    COUNT(*) OVER w AS atr_n
  FROM (
    SELECT *,
      GREATEST(`high` - `low`, ABS(`high` - COALESCE(prev_close, `high`)),
               ABS(`low` - COALESCE(prev_close, `low`))) AS tr
    FROM (
      SELECT `exchange`, `symbol`, `window_start_us`, `window_end_us`, `exchange_ts_us`,
        `receipt_ts_us`, `open`, `high`, `low`, `close`,
        CAST(`volume` AS DECIMAL(28, 8)) AS `volume`, `trade_count`, `event_time`,
        LAG(`close`) OVER (
          PARTITION BY `exchange`, `symbol` ORDER BY `event_time`) AS prev_close
      FROM candles_source
      WHERE `timeframe` = {_q(o.timeframe)} AND `final`{producer}
    )
  )
  WINDOW w AS (
    PARTITION BY `exchange`, `symbol` ORDER BY `event_time`
    ROWS BETWEEN {ATR_LENGTH - 1} PRECEDING AND CURRENT ROW)
)"""


def heartbeats_view(o: CepSqlOptions) -> str:
    """The heartbeats; with the liveness clock, its watermark joins theirs (no rows)."""
    view = """CREATE TEMPORARY VIEW heartbeats AS
SELECT `exchange`, `symbol`, `exchange_ts_us`, `receipt_ts_us`, `ingestor_id`, `state`,
  `interval_ms`, `trades_since_last`, `last_trade_id`, `last_receipt_ts_us`, `event_time`
FROM heartbeats_source"""
    if not o.liveness_clock:
        return view
    # `tick` is 0..9, so no clock row passes; the planner cannot know that and keeps the
    # source (a constant FALSE would let it prune the branch, and its watermark with it).
    return f"""{view}
UNION ALL
SELECT '', '', CAST(NULL AS BIGINT), CAST(0 AS BIGINT), '', '', 0, CAST(0 AS BIGINT),
  CAST(NULL AS STRING), CAST(NULL AS BIGINT), `event_time`
FROM clock_source WHERE `tick` < 0"""


def alerts_view(o: CepSqlOptions) -> str:
    if not o.patterns:
        raise PatternError("no pattern is enabled")
    selects = [alert_select(p, o.configs.get(p.name, PatternConfig())) for p in o.patterns]
    return "CREATE TEMPORARY VIEW alerts AS\n" + "\nUNION ALL\n".join(selects)


def alerts_sink_ddl(o: CepSqlOptions) -> str:
    """The alerts topic: Avro values, the market as the raw key, exactly-once."""
    options = {
        "key.format": "raw",
        "key.fields": "market",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{o.transactional_id_prefix}-alerts",
        **o.sink_options,
    }
    return kafka_sink_ddl(
        Alert,
        "alerts_kafka",
        o.alerts_topic,
        bootstrap_servers=o.bootstrap_servers,
        options=options,
        extra_columns=["`market` STRING NOT NULL"],
    )


def inserts(o: CepSqlOptions) -> list[str]:
    fields = ", ".join(f"`{c}`" for c in ALERT_FIELDS)
    iceberg_exprs = ", ".join(
        micros_to_ltz_sql("`window_start_us`") if c == "window_start" else f"`{c}`"
        for c in ICEBERG_ALERT_COLUMNS
    )
    iceberg_cols = ", ".join(f"`{c}`" for c in ICEBERG_ALERT_COLUMNS)
    table = f"`{o.catalog}`.`{o.namespace}`.`alerts`"
    return [
        f"INSERT INTO alerts_kafka SELECT {fields}, CONCAT(`exchange`, ':', `symbol`) FROM alerts",
        f"INSERT INTO {table} ({iceberg_cols})\nSELECT {iceberg_exprs} FROM alerts",
    ]


def job_sql(o: CepSqlOptions, config: Mapping[str, str], catalog_ddl: str) -> JobSql:
    """Everything the CEP job runs, in order."""
    inputs = {p.input for p in o.patterns}
    setup = [*function_ddl(), catalog_ddl, *source_ddls(o), alerts_sink_ddl(o)]
    if "candles" in inputs:
        setup.append(candles_view(o))
    if "heartbeats" in inputs:
        if o.liveness_clock:
            setup.append(clock_source_ddl(o))
        setup.append(heartbeats_view(o))
    setup.append(alerts_view(o))
    return JobSql(config=dict(config), setup=setup, inserts=inserts(o))
