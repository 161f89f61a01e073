"""Replay a recorded Tardis trade tape into the raw-trades topic (``ticklake ingest replay``).

Every data line of the tape becomes exactly one message: a ``Trade`` on the raw-trades topic
(key ``EXCHANGE:BASE/QUOTE``, Avro value, header ``ticklake-schema: trade.v1``), or a
``DeadLetter`` on the dead-letter topic with the line number, the reason and the raw line.
Nothing else is dropped (blank lines carry nothing and are only counted).

Throughput (``docs/replay.md``, ``bench/replay.py``) comes from two fast paths, neither
of which builds a pydantic model. At full speed, blocks of rows are parsed by pyarrow and
validated and encoded column-wise (:class:`~ticklake.ingestors.replay_blocks.BlockEncoder`),
so the per-row Python is one positional ``produce()`` call. Rows the block path does not
take go, in tape order, to :class:`FastTradeEncoder`, which validates and encodes one row;
both accept only rows the ``Trade`` model certainly accepts and write the bytes fastavro
would write (``tests/unit/test_ingest_replay_blocks.py`` and
``tests/unit/test_ingest_replay_fast.py`` prove both on random and edge-case rows). Any row
neither accepts takes the slow path: parse (``TardisTape.parse``), build the model,
``serde.encode``; so the model stays the only judge of what is a valid trade.

Pacing (``speed``) schedules each record against a monotonic clock anchored at the first
record (``due = t0 + (ts - ts0) / speed``), so sleeps never accumulate drift.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ticklake.errors import TickLakeError
from ticklake.ingestors.replay_blocks import BlockEncoder, EncodedBlock
from ticklake.ingestors.tardis import (
    Record,
    RowError,
    SymbolResolver,
    TapeBlock,
    TapeError,
    TardisTape,
    parse_timestamp,
)
from ticklake.schemas.models import MAX_TS_US, MIN_TS_US, DeadLetter, Trade, market_key
from ticklake.schemas.serde import encode, schema_header
from ticklake.schemas.topics import DEAD_LETTERS, PRODUCER_CONFIG, RAW_TRADES, ensure_topics

log = logging.getLogger(__name__)

#: Producer settings for throughput; idempotence keeps retries from duplicating or
#: reordering. Only failed deliveries call back into Python (one callback per message
#: would cost more than the rest of the hot path).
REPLAY_PRODUCER_CONFIG: dict[str, Any] = {
    **PRODUCER_CONFIG,
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 120_000,
    "delivery.report.only.error": True,
}
#: With pacing, send promptly instead of filling large batches.
PACED_LINGER_MS = 5
FLUSH_TIMEOUT_S = 120.0
#: Poll, update progress and check for a stop between blocks, and every this many rows
#: that take the per-row path.
_HOUSEKEEPING_ROWS = 1 << 14
#: A header list, positional arguments: the cheapest ``produce()`` call (about half the
#: cost of ``headers=`` as a keyword with a dict); ``None`` callbacks mean the producer's.
Headers = list[tuple[str, bytes]]


class ReplayError(TickLakeError):
    """The replay ran, but some messages were not delivered to Kafka."""

    exit_code = 11


# -- the Avro encoding of Trade, by hand --------------------------------------------------


def avro_long(n: int) -> bytes:
    """Avro ``long``/``int``: zigzag, then a little-endian base-128 varint."""
    z = n << 1 if n >= 0 else ((-n) << 1) - 1
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def avro_string(s: str) -> bytes:
    """Avro ``string``: the byte length as a ``long``, then UTF-8."""
    data = s.encode()
    return avro_long(len(data)) + data


def avro_decimal(unscaled: int) -> bytes:
    """Avro ``bytes`` decimal: length, then big-endian two's-complement unscaled value."""
    data = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return avro_long(len(data)) + data


def encode_trade(trade: Trade) -> bytes:
    """The Avro binary of a (validated) ``Trade``, byte-identical to ``serde.encode``."""
    return b"".join(
        (
            avro_string(trade.exchange),
            avro_string(trade.symbol),
            avro_long(trade.exchange_ts_us),
            avro_long(trade.receipt_ts_us),
            avro_string(trade.ingestor_id),
            avro_string(trade.trade_id),
            avro_string(trade.side),
            avro_decimal(_unscaled(trade.price)),
            avro_decimal(_unscaled(trade.amount)),
            b"\x00" if trade.request_id is None else b"\x02" + avro_string(trade.request_id),
        )
    )


def _unscaled(value: Decimal) -> int:
    return int(value.scaleb(8))  # the model keeps exactly 8 places: exact


_LEN = tuple(avro_long(i) for i in range(1025))  # a trade id is <= 256 chars, <= 1024 bytes
_SCALE: tuple[int, ...] = tuple(10 ** (8 - k) for k in range(9))  # 10**(8 - places)
_SIDES = {side: avro_string(side) for side in ("buy", "sell", "unknown")}
#: The two low varint bytes of a timestamp, by its 14 low zigzag bits.
_TS_LOW = tuple(bytes((z & 127 | 128, z >> 7 & 127 | 128)) for z in range(1 << 14))
_CACHE_LIMIT = 1 << 18


def plain_decimal(text: str) -> bytes | None:
    """Encoded DECIMAL(18, 8) of a plain positive decimal ``123.45``; None for anything else.

    Plain means 1-10 ASCII digits, optionally a point and 0-8 digits: such a value always
    fits DECIMAL(18, 8) exactly, so only zero is refused here. Every other spelling
    (exponents, signs, more places, more digits) is left to the model.
    """
    whole, _, frac = text.partition(".")
    digits = whole + frac
    if not (0 < len(whole) <= 10 and len(frac) <= 8 and digits.isdigit() and digits.isascii()):
        return None
    n = int(digits) * _SCALE[len(frac)]
    if not n:
        return None
    data = n.to_bytes((n.bit_length() + 8) >> 3, "big")
    return _LEN[len(data)] + data


class FastTradeEncoder:
    """Validates and encodes the common shape of a tape row without a pydantic model.

    :attr:`encode` returns ``(key, value)`` only for rows the ``Trade`` model accepts, with
    the value byte-identical to fastavro's; it returns None whenever it is not certain (an
    unseen market, an unusual number spelling, any invalid value) and the caller then takes
    the slow path. Markets become known through :meth:`learn_market` once the model has
    accepted a trade of them.
    """

    def __init__(self, ingestor_id: str) -> None:
        self.ingestor = avro_string(ingestor_id)
        self.markets: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self.encode: Callable[[list[str]], tuple[bytes, bytes] | None] = self._encoder()

    def learn_market(self, tardis_exchange: str, tardis_symbol: str, trade: Trade) -> None:
        self.markets[tardis_exchange, tardis_symbol] = (
            market_key(trade.exchange, trade.symbol).encode(),
            avro_string(trade.exchange) + avro_string(trade.symbol),
        )

    def _encoder(self) -> Callable[[list[str]], tuple[bytes, bytes] | None]:
        # A closure: its state is in local cells, cheaper per row than attribute lookups.
        markets, ingestor = self.markets, self.ingestor
        decimals: dict[str, bytes] = {}
        ts_high: dict[int, bytes] = {}
        sides, ts_low, lengths = _SIDES, _TS_LOW, _LEN
        z_min, z_max = MIN_TS_US << 1, MAX_TS_US << 1

        def decimal(text: str) -> bytes | None:
            data = plain_decimal(text)
            if data is not None:
                if len(decimals) >= _CACHE_LIMIT:
                    decimals.clear()
                decimals[text] = data
            return data

        def high(z: int) -> bytes:
            # Every valid timestamp (2000..2100 in µs) zigzags to 2**49 <= z < 2**56: exactly
            # eight varint bytes. The six high ones change every 8 ms; they are cached.
            if len(ts_high) >= _CACHE_LIMIT:
                ts_high.clear()
            data = bytes(
                (z >> 14 & 127 | 128, z >> 21 & 127 | 128, z >> 28 & 127 | 128,
                 z >> 35 & 127 | 128, z >> 42 & 127 | 128, z >> 49)
            )  # fmt: skip
            ts_high[z >> 14] = data
            return data

        def encode(f: list[str]) -> tuple[bytes, bytes] | None:
            """``(key, value)`` of split tape fields, or None: take the slow path."""
            try:
                exchange, symbol, ts, lts, trade_id, side, price, amount = f
                market = markets.get((exchange, symbol))
                if market is None or not (ts.isdigit() and lts.isdigit()):
                    return None
                z, zl = int(ts) << 1, int(lts) << 1  # ValueError for odd digits: slow path
                if not (z_min <= z <= z_max and z_min <= zl <= z_max):
                    return None
                if not 0 < len(trade_id) <= 256:
                    return None
                tid = trade_id.encode()  # UnicodeEncodeError (undecodable bytes): slow path
                side_b = sides.get(side)
                price_b = decimals.get(price) or decimal(price)
                amount_b = decimals.get(amount) or decimal(amount)
                if side_b is None or price_b is None or amount_b is None:
                    return None
                value = b"".join(
                    (market[1], ts_low[z & 16383], ts_high.get(z >> 14) or high(z),
                     ts_low[zl & 16383], ts_high.get(zl >> 14) or high(zl), ingestor,
                     lengths[len(tid)], tid, side_b, price_b, amount_b, b"\x00")
                )  # fmt: skip
            except (ValueError, UnicodeEncodeError):
                return None
            return market[0], value

        return encode


# -- pacing -------------------------------------------------------------------------------


class Pacer:
    """Holds records back to ``speed`` x real time by their exchange timestamps.

    The first record anchors the schedule; record ``ts`` is due at
    ``t0 + (ts - ts0) / (1e6 * speed)`` on the monotonic ``clock``. Waiting computes from the
    anchor every time, so oversleeping never accumulates. Records whose time is earlier than
    one already sent (out-of-order tapes) are due at once.
    """

    def __init__(
        self,
        speed: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self._t0: float | None = None
        self._ts0 = 0

    def paced(
        self, records: Iterator[tuple[int, str, list[str]]], stop: Callable[[], bool]
    ) -> Iterator[tuple[int, str, list[str]]]:
        """Yield tape records, each when it is due (records without a timestamp at once)."""
        for record in records:
            if stop():
                yield record  # the consumer sees stop() too and ends before using it
                return
            fields = record[2]
            ts = parse_timestamp(fields[2]) if len(fields) > 2 else None
            if ts is not None:
                self.wait(ts)
            yield record

    def wait(self, ts_us: int) -> None:
        """Return when the record with exchange time ``ts_us`` is due."""
        if self._t0 is None:
            self._t0, self._ts0 = self.clock(), ts_us
            return
        due = self._t0 + (ts_us - self._ts0) / (1e6 * self.speed)
        while (remaining := due - self.clock()) > 0:
            self.sleep(remaining)


# -- the replay ---------------------------------------------------------------------------


@dataclass
class ReplayResult:
    """What a replay did. ``failed`` counts messages Kafka did not acknowledge."""

    file: str
    rows_read: int = 0
    produced: int = 0
    dead_lettered: int = 0
    failed: int = 0
    blank_lines: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    #: True when the replay was stopped (Ctrl-C, SIGTERM) before the end of the tape.
    interrupted: bool = False
    failures: list[str] = field(default_factory=list)

    @property
    def trades_per_s(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trades_per_s": round(self.trades_per_s, 1)}


_REASONS = {
    "price": "INVALID_PRICE",
    "amount": "INVALID_AMOUNT",
    "exchange_ts_us": "INVALID_TIMESTAMP",
    "receipt_ts_us": "INVALID_TIMESTAMP",
    "trade_id": "INVALID_TRADE_ID",
    "exchange": "UNKNOWN_EXCHANGE",
    "symbol": "UNKNOWN_SYMBOL",
}


def _validation_reason(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors()
    first = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else ""
    message = "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in errors
    )
    return _REASONS.get(first, "INVALID_TRADE"), message


class _Replay:
    """One replay run: the producer, the counters, the slow path."""

    def __init__(
        self,
        tape: TardisTape,
        producer: Any,
        topic: str,
        dead_letter_topic: str,
        ingestor_id: str,
    ) -> None:
        self.tape = tape
        self.producer = producer
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.ingestor_id = ingestor_id
        self.fast = FastTradeEncoder(ingestor_id)
        self.headers: Headers = [schema_header(Trade)]
        self.result = ReplayResult(file=str(tape.path))
        self.trades_sent = 0
        self.letters_sent = 0
        self.failed_trades = 0
        self.failed_letters = 0
        self.rows = 0
        self.fatal: str | None = None

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:  # pragma: no cover - only errors are reported
            return
        if msg.topic() == self.dead_letter_topic:
            self.failed_letters += 1
        else:
            self.failed_trades += 1
        if len(self.result.failures) < 10:
            self.result.failures.append(f"{msg.topic()}: {err}")

    def on_error(self, err: Any) -> None:
        if err.fatal():
            self.fatal = str(err)
        log.warning("kafka: %s", err)

    def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, -1, None, None, 0, headers)
                return
            except BufferError:  # the local queue is full: let librdkafka drain it
                self.producer.poll(0.05)

    def row(self, n: int, raw: str, fields: list[str]) -> None:
        """One row on the per-row path: the fast encoder, else the slow path."""
        encoded = self.fast.encode(fields)
        if encoded is None:
            self.slow(n, raw, fields)
            return
        self.send(self.topic, encoded[0], encoded[1], self.headers)
        self.trades_sent += 1

    def slow(self, n: int, raw: str, fields: list[str]) -> None:
        """Parse, validate with the model, then produce the trade or its dead letter."""
        item = self.tape.parse(n, raw, fields)
        if isinstance(item, RowError):
            self.dead_letter(item)
            return
        try:
            trade = Trade(
                exchange=item.exchange,
                symbol=item.symbol,
                exchange_ts_us=item.timestamp_us,
                receipt_ts_us=item.local_timestamp_us,
                ingestor_id=self.ingestor_id,
                trade_id=item.trade_id,
                side=item.side,
                price=item.price,
                amount=item.amount,
            )
        except ValidationError as exc:
            code, reason = _validation_reason(exc)
            self.dead_letter(
                RowError(n, raw, code, reason, item.exchange, item.symbol, item.timestamp_us)
            )
            return
        self.fast.learn_market(fields[0], fields[1], trade)
        self.send(self.topic, RAW_TRADES.key(trade), encode(trade), self.headers)
        self.trades_sent += 1

    def dead_letter(self, row: RowError) -> None:
        ts = row.timestamp_us
        fields: dict[str, Any] = {
            "source_component": self.ingestor_id,
            "reason_code": row.reason_code,
            "reason_message": row.reason,
            "payload": row.raw.encode("utf-8", "surrogateescape"),
            "source_file": self.tape.path.name[:256] or None,
            "source_line": row.line,
            "dead_lettered_ts_us": time.time_ns() // 1000,
        }
        context: dict[str, Any] = {
            "exchange": row.exchange,
            "symbol": row.symbol,
            "original_ts_us": ts if ts is not None and MIN_TS_US <= ts <= MAX_TS_US else None,
        }
        try:
            letter = DeadLetter(**fields, **context)
        except ValidationError:  # e.g. a symbol too long for the contract: keep the rest
            letter = DeadLetter(**fields)
        self.send(
            self.dead_letter_topic,
            DEAD_LETTERS.key(letter),
            encode(letter),
            [schema_header(DeadLetter)],
        )
        self.letters_sent += 1


def replay(
    path: Path,
    *,
    bootstrap_servers: str,
    topic: str = RAW_TRADES.name,
    dead_letter_topic: str = DEAD_LETTERS.name,
    speed: float | None = None,
    symbols: SymbolResolver | None = None,
    limit: int | None = None,
    progress: bool = False,
    producer_config: dict[str, Any] | None = None,
    stop: Callable[[], bool] | None = None,
) -> ReplayResult:
    """Publish the tape at ``path``; returns the counts. Creates missing topics.

    ``speed`` None replays as fast as possible, else at ``speed`` x real time by exchange
    timestamps. ``limit`` stops after that many data lines; ``stop`` returning True ends the
    replay early (between rows; the result says ``interrupted``). Raises :class:`TapeError` for a
    file that is not a Tardis trades CSV; delivery failures are counted in the result
    (``failed``), never raised here, so the caller sees the whole summary.
    """
    from confluent_kafka import Producer

    ensure_topics(
        bootstrap_servers,
        [RAW_TRADES.renamed(topic), DEAD_LETTERS.renamed(dead_letter_topic)],
    )
    config: dict[str, Any] = {**REPLAY_PRODUCER_CONFIG, "bootstrap.servers": bootstrap_servers}
    if speed is not None:
        config["linger.ms"] = PACED_LINGER_MS
    config.update(producer_config or {})
    ingestor_id = f"replay:{Path(path).name}"[:256]
    cpu0, t0 = time.process_time(), time.monotonic()
    with TardisTape(Path(path), symbols) as tape:
        run: _Replay | None = None

        def deliver(err: Any, msg: Any) -> None:
            if run is not None:
                run.on_delivery(err, msg)

        def error(err: Any) -> None:
            if run is not None:
                run.on_error(err)

        producer = Producer({**config, "on_delivery": deliver, "error_cb": error})
        run = _Replay(tape, producer, topic, dead_letter_topic, ingestor_id)
        try:
            _pump(
                run,
                tape,
                speed=speed,
                limit=limit,
                progress=progress,
                stop=stop or (lambda: False),
            )
        finally:
            remaining = producer.flush(FLUSH_TIMEOUT_S)
        result = run.result
        result.rows_read = run.rows
        result.blank_lines = tape.blank_lines
        # Undelivered after the flush timeout counts as failed (we cannot tell which).
        result.failed = run.failed_trades + run.failed_letters + remaining
        result.produced = run.trades_sent - run.failed_trades
        result.dead_lettered = run.letters_sent - run.failed_letters
        if remaining:
            result.produced -= remaining
            result.failures.append(f"{remaining} messages undelivered after flush")
        if run.fatal:
            result.failures.append(f"fatal producer error: {run.fatal}")
        # The callbacks reference the run, which references the producer: break the cycle so
        # the producer (and its connections) go away now, not at some garbage collection.
        run = None
        del producer
    result.elapsed_s = time.monotonic() - t0
    result.cpu_s = time.process_time() - cpu0
    return result


def _pump(
    run: _Replay,
    tape: TardisTape,
    *,
    speed: float | None,
    limit: int | None,
    progress: bool,
    stop: Callable[[], bool],
) -> None:
    """The hot loop: read, encode, produce; with a progress bar on stderr if asked."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("[bold]replay[/bold] {task.fields[rows]:,} rows"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("replay", total=tape.size, rows=0)

        def housekeeping() -> bool:
            """Between rows: True to stop; else poll and show progress."""
            if stop():  # checked between rows, so every count stays exact
                run.result.interrupted = True
                return True
            run.producer.poll(0)
            bar.update(task, completed=tape.bytes_read(), rows=run.rows)
            if run.fatal:
                raise ReplayError(f"the Kafka producer failed: {run.fatal}")
            return False

        if speed is None:
            _pump_blocks(run, tape, limit, housekeeping)
        else:
            _pump_paced(run, tape, speed=speed, limit=limit, housekeeping=housekeeping, stop=stop)
        bar.update(task, completed=tape.size, rows=run.rows)


def _pump_blocks(
    run: _Replay, tape: TardisTape, limit: int | None, housekeeping: Callable[[], bool]
) -> None:
    """Full speed: blocks of rows encoded at once (:class:`BlockEncoder`), each row a bare
    ``produce()``; rows the block path rejects, and lines pyarrow does not take, go through
    :meth:`_Replay.row` in tape order."""
    blocks = BlockEncoder(run.fast.ingestor, run.fast.markets)
    since = 0  # rows on the per-row path since the last housekeeping
    for item in tape.blocks():
        if isinstance(item, TapeBlock):
            since = 0
            if housekeeping():
                return
            if limit is not None and run.rows + item.rows > limit:  # the limit ends in here
                _per_row(run, tape, item.records(), limit)
                return
            _send_block(run, tape, item, blocks.encode(item))
            continue
        if since >= _HOUSEKEEPING_ROWS:  # a record of a part read line by line
            since = 0
            if housekeeping():
                return
        if limit is not None and run.rows >= limit:
            return
        run.row(*item)
        run.rows += 1
        since += 1


def _send_block(run: _Replay, tape: TardisTape, block: TapeBlock, encoded: EncodedBlock) -> None:
    """Produce the encoded rows and the rejected ones (per row), in tape order."""
    keys, values, rejected = encoded.keys, encoded.values, encoded.rejected
    if not rejected:
        _produce_all(run, values, keys)
        return
    records = block.records()
    start = 0
    for end in [*rejected, block.rows]:  # the runs of encoded rows between rejected ones
        _produce_all(run, values[start:end], keys[start:end])
        if end < block.rows:
            _per_row(run, tape, records[end : end + 1], None)
        start = end + 1


def _produce_all(run: _Replay, values: list[bytes], keys: list[bytes]) -> None:
    """The hot loop: one positional ``produce()`` per encoded trade."""
    produce, topic, headers = run.producer.produce, run.topic, run.headers
    for value, key in zip(values, keys, strict=True):
        try:
            produce(topic, value, key, -1, None, None, 0, headers)
        except BufferError:  # the local queue is full: poll until it takes the message
            run.send(topic, key, value, headers)
    run.trades_sent += len(values)
    run.rows += len(values)


def _per_row(
    run: _Replay, tape: TardisTape, records: list[Record | None], limit: int | None
) -> None:
    """Rows of a block on the per-row path (None: a blank line), up to ``limit`` rows."""
    for record in records:
        if limit is not None and run.rows >= limit:
            return
        if record is None:
            tape.blank_lines += 1
        else:
            run.row(*record)
            run.rows += 1


def _pump_paced(
    run: _Replay,
    tape: TardisTape,
    *,
    speed: float,
    limit: int | None,
    housekeeping: Callable[[], bool],
    stop: Callable[[], bool],
) -> None:
    """At ``speed`` x real time: row by row, each when it is due (:class:`Pacer`)."""
    poll = run.producer.poll
    records: Iterator[Record] = Pacer(speed, sleep=lambda s: poll(min(s, 0.1))).paced(
        tape.records(), stop
    )
    row = run.row
    for n, raw, fields in itertools.islice(records, limit):
        if (stop() or not (run.rows + 1) % _HOUSEKEEPING_ROWS) and housekeeping():
            return
        row(n, raw, fields)
        run.rows += 1


# -- the command --------------------------------------------------------------------------


@click.command("replay", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--speed",
    type=float,
    default=None,
    help="replay at N x real time by exchange timestamps (default: full speed)",
)
@click.option("--topic", default=RAW_TRADES.name, show_default=True, help="raw-trades topic")
@click.option(
    "--dead-letter-topic",
    default=DEAD_LETTERS.name,
    show_default=True,
    help="topic for rows that are not valid trades",
)
@click.option(
    "--symbol-map",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='JSON file {"BTCUSDT": "BTC/USDT", "deribit:X": "B/Q"}',
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="stop after N data lines")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="progress bar on stderr (default: when stderr is a terminal)",
)
def replay_command(  # noqa: PLR0917 - click passes options positionally
    file: Path,
    speed: float | None,
    topic: str,
    dead_letter_topic: str,
    symbol_map: Path | None,
    limit: int | None,
    output: str,
    progress: bool | None,
) -> None:  # fmt: skip
    """Publish a Tardis trades CSV (plain or .gz) into the raw-trades topic.

    Each data line becomes one trade keyed EXCHANGE:BASE/QUOTE, or one dead letter (with
    its line number, reason and raw text) when it is not a valid trade. Exit code 0 when
    every message was delivered, 11 when some were not, 10 when FILE is not a Tardis
    trades CSV.
    """
    from ticklake.settings import Connections

    if speed is not None and not speed > 0:
        raise click.BadParameter("must be > 0", param_hint="--speed")
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stopping:  # a second signal: stop waiting for the flush too
            raise KeyboardInterrupt
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        symbols = SymbolResolver.from_file(symbol_map) if symbol_map else None
        result = replay(
            file,
            bootstrap_servers=Connections.load().kafka.bootstrap_servers,
            topic=topic,
            dead_letter_topic=dead_letter_topic,
            speed=speed,
            symbols=symbols,
            limit=limit,
            progress=sys.stderr.isatty() if progress is None else progress,
            stop=lambda: bool(stopping),
        )
        _print_summary(result, output)
        if result.failed:
            raise ReplayError(
                f"{result.failed} message(s) were not delivered to Kafka",
                detail="\n".join(result.failures),
                hint="check that Kafka is up (`ticklake status`) and replay the file again; "
                "duplicates are removed downstream",
            )
    except TickLakeError as exc:
        click.echo(exc.render(), err=True)
        raise SystemExit(exc.exit_code) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result.interrupted:
        click.echo("interrupted: the rows read so far were flushed to Kafka", err=True)
        raise SystemExit(130)


def _print_summary(result: ReplayResult, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(
        f"{result.file}: {result.rows_read:,} rows read, {result.produced:,} trades produced, "
        f"{result.dead_lettered:,} dead-lettered, {result.failed:,} failed, "
        f"{result.blank_lines:,} blank lines skipped"
        f"{' (interrupted)' if result.interrupted else ''}; {result.elapsed_s:.2f}s, "
        f"{result.trades_per_s:,.0f} trades/s"
    )


__all__ = [
    "FastTradeEncoder",
    "Pacer",
    "ReplayError",
    "ReplayResult",
    "TapeError",
    "encode_trade",
    "replay",
    "replay_command",
]
