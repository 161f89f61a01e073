"""A streaming reader of Tardis CSV trade tapes (``exchange,symbol,timestamp,...``).

Tardis (https://docs.tardis.dev/downloadable-csv-files#trades) writes one trade per line::

    exchange,symbol,timestamp,local_timestamp,id,side,price,amount
    binance,BTCUSDT,1585699200245000,1585699200250000,270083464,sell,6455.41,0.033

with timestamps in epoch microseconds, usually gzipped. :class:`TardisTape` reads such a file
(gzip detected by its magic bytes, not by the name) line by line in constant memory and
yields, per data line, either a :class:`TardisRow` or a :class:`RowError` (line number, raw
line, reason code, reason); :meth:`TardisTape.blocks` reads it in blocks parsed by pyarrow
(:class:`TapeBlock`) with the same line numbers, for the replay's columnar path. It only
parses: whether a row is a valid trade (timestamps in range, positive prices that fit
``DECIMAL(18, 8)``) is the wire model's call (``ticklake.schemas.Trade``), which the replay
applies.

Normalization (``docs/replay.md``):

- exchange: :data:`EXCHANGE_IDS` maps Tardis ids whose CCXT id differs (``binance-futures``
  -> ``BINANCEUSDM``), so replayed and realtime trades of a market share a key; any other id
  is upper-cased as is (``bitmex`` -> ``BITMEX``, ``bybit-spot`` -> ``BYBIT-SPOT``).
- symbol: an explicit symbol map first (``{"binance:BTCUSD_PERP": "BTC/USD"}``, or a key
  without exchange for every exchange), then ``BASE/QUOTE`` / ``BASE-QUOTE`` /
  ``BASE_QUOTE`` whose quote is a known quote asset, then a concatenated symbol split at the
  longest known quote asset suffix (:data:`QUOTE_ASSETS`, ``BTCUSDT`` -> ``BTC/USDT``).
  A symbol none of these splits is a row error (``UNKNOWN_SYMBOL``), never a guess.
- prices and amounts: exact ``Decimal`` from the text (never through ``float``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Literal

import pyarrow as pa
import pyarrow.csv as pacsv

from ticklake.errors import TickLakeError

#: The header of a Tardis trades CSV, in order.
TARDIS_COLUMNS = ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price",
                  "amount")  # fmt: skip

#: Tardis exchange ids whose CCXT id (upper-cased, the platform's ``EXCHANGE``) differs.
#: Every other Tardis id is used upper-cased as it is.
EXCHANGE_IDS: dict[str, str] = {
    "binance-futures": "BINANCEUSDM",
    "binance-delivery": "BINANCECOINM",
    "binance-us": "BINANCEUS",
    "okex": "OKX",
    "huobi": "HTX",
}

#: Quote assets a concatenated symbol may end with; the longest match wins.
QUOTE_ASSETS: tuple[str, ...] = tuple(
    sorted(
        {
            "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "USDS", "USDD", "DAI", "PAX",
            "UST", "USD", "EUR", "GBP", "JPY", "AUD", "CAD", "CHF", "TRY", "BRL", "RUB",
            "UAH", "NGN", "ZAR", "PLN", "RON", "ARS", "MXN", "IDR", "IDRT", "BIDR", "BKRW",
            "KRW", "AEUR", "EURI", "VAI", "BTC", "XBT", "ETH", "BNB", "XRP", "TRX", "DOGE",
            "DOT", "SOL",
        },
        key=lambda q: (-len(q), q),
    )
)  # fmt: skip

#: Assets that settle an ambiguous split: ``XBTUSD`` ends with both ``TUSD`` and ``USD``;
#: the longest quote whose base is a known asset wins (``XBT/USD``, ``BTC/FDUSD``), and
#: without one the longest quote does.
KNOWN_BASES: frozenset[str] = frozenset(QUOTE_ASSETS) | frozenset(
    ("XBT", "BTC", "ETH", "SOL", "ADA", "LTC", "BCH", "LINK", "AVAX", "MATIC", "ATOM", "XLM",
     "XMR", "ETC", "FIL", "NEAR", "APT", "ARB", "OP", "SHIB", "PEPE", "TON", "SUI", "UNI")
)  # fmt: skip

_SIDES = frozenset(("buy", "sell", "unknown"))
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?\Z")
_EXCHANGE = re.compile(r"[A-Z0-9][A-Z0-9_-]*\Z")
_ASSET = re.compile(r"[A-Za-z0-9._-]+\Z")
_GZIP_MAGIC = b"\x1f\x8b"
#: Bytes of the file read per block by :meth:`TardisTape.blocks` (then cut after a newline).
BLOCK_BYTES = 1 << 21

#: ``(line number, raw line without its end, fields)``: one data line, split.
Record = tuple[int, str, list[str]]

_CSV_PARSE = pacsv.ParseOptions(
    delimiter=",",
    quote_char=False,
    double_quote=False,
    escape_char=False,
    newlines_in_values=False,
    ignore_empty_lines=False,  # a blank line stays a row: row i is line first_line + i
)
_CSV_CONVERT = pacsv.ConvertOptions(
    column_types=dict.fromkeys(TARDIS_COLUMNS, pa.binary()),  # the bytes, unconverted
    strings_can_be_null=False,
    quoted_strings_can_be_null=False,
    check_utf8=False,
)

ReasonCode = Literal[
    "MALFORMED_ROW",
    "UNKNOWN_EXCHANGE",
    "UNKNOWN_SYMBOL",
    "INVALID_TIMESTAMP",
    "INVALID_TRADE_ID",
    "INVALID_SIDE",
    "INVALID_PRICE",
    "INVALID_AMOUNT",
]


class TapeError(TickLakeError):
    """A tape cannot be read at all: missing, not a Tardis trades CSV, corrupt gzip."""

    exit_code = 10


@dataclass(frozen=True, slots=True)
class TardisRow:
    """One parsed data line, normalized (the model has not validated it yet)."""

    line: int
    raw: str
    exchange: str
    symbol: str
    timestamp_us: int
    local_timestamp_us: int
    trade_id: str
    side: Literal["buy", "sell", "unknown"]
    price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class RowError:
    """A data line that is not a trade: where, what it was, and why."""

    line: int
    raw: str
    reason_code: str
    reason: str
    #: Normalized market and exchange time, when they could be read (for dead letters).
    exchange: str | None = None
    symbol: str | None = None
    timestamp_us: int | None = None


@dataclass(frozen=True, slots=True)
class TapeBlock:
    """Consecutive data lines of a tape, parsed by pyarrow's CSV reader into eight binary
    columns (the raw bytes of each field; no quoting, since the lines have no quote).

    Row ``i`` of :attr:`table` is physical line ``first_line + i``: pyarrow and
    :meth:`TardisTape.records` split lines alike (at ``\\n``, ``\\r\\n`` or a lone ``\\r``),
    and a blank line is a row whose fields are all empty (not a record:
    :meth:`records` skips it, the caller counts it in ``TardisTape.blank_lines``).
    """

    first_line: int
    data: bytes
    table: pa.Table

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def records(self) -> list[Record | None]:
        """Per row, the record :meth:`TardisTape.records` gives, or None for a blank line."""
        text = io.StringIO(self.data.decode("utf-8", "surrogateescape"), newline="")
        out: list[Record | None] = []
        for n, line in enumerate(text, self.first_line):
            raw = line.rstrip("\r\n")
            out.append((n, raw, raw.split(",")) if raw else None)
        return out


class SymbolError(ValueError):
    """A Tardis symbol that cannot be split into ``BASE/QUOTE``."""


def normalize_exchange(tardis_id: str) -> str:
    """``binance`` -> ``BINANCE``, ``binance-futures`` -> ``BINANCEUSDM`` (ValueError if odd)."""
    exchange = EXCHANGE_IDS.get(tardis_id, tardis_id.upper())
    if len(exchange) > 64 or not _EXCHANGE.match(exchange):
        raise ValueError(f"exchange id {tardis_id!r} is not a valid exchange id")
    return exchange


class SymbolResolver:
    """Tardis symbols -> ``BASE/QUOTE``: explicit map, separators, known quote suffixes."""

    def __init__(self, symbol_map: Mapping[str, str] | None = None) -> None:
        self._map: dict[str, str] = {}
        for raw, symbol in (symbol_map or {}).items():
            base, slash, quote = symbol.partition("/")
            if not slash or not _ASSET.match(base) or not _ASSET.match(quote):
                raise TapeError(
                    f"symbol map entry {raw!r}: {symbol!r} is not BASE/QUOTE",
                    hint='map Tardis symbols to normalized ones, e.g. {"BTCUSDT": "BTC/USDT"}',
                )
            exchange, colon, sym = raw.rpartition(":")
            key = f"{exchange.lower()}:{sym.upper()}" if colon else sym.upper()
            self._map[key] = symbol

    @classmethod
    def from_file(cls, path: Path) -> SymbolResolver:
        """A JSON object file ``{"BTCUSDT": "BTC/USDT", "deribit:BTC-PERPETUAL": "BTC/USD"}``."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TapeError(f"cannot read symbol map {path}: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise TapeError(
                f"symbol map {path} must be a JSON object of strings",
                hint='e.g. {"BTCUSDT": "BTC/USDT", "deribit:BTC-PERPETUAL": "BTC/USD"}',
            )
        return cls(data)

    def resolve(self, tardis_exchange: str, raw: str) -> str:
        """The normalized symbol of ``raw`` on ``tardis_exchange``; SymbolError if unknown."""
        upper = raw.upper()
        mapped = self._map.get(f"{tardis_exchange}:{upper}") or self._map.get(upper)
        if mapped is not None:
            return mapped
        for sep in "/-_":
            base, found, quote = upper.partition(sep)
            if found and quote in QUOTE_ASSETS and _ASSET.match(base) and sep not in quote:
                return f"{base}/{quote}"
        if upper.isascii() and upper.isalnum():
            splits = [(upper[: -len(q)], q) for q in QUOTE_ASSETS
                      if len(upper) > len(q) and upper.endswith(q)]  # fmt: skip
            known = [s for s in splits if s[0] in KNOWN_BASES]
            if splits:
                base, quote = (known or splits)[0]
                return f"{base}/{quote}"
        raise SymbolError(
            f"cannot split symbol {raw!r} into BASE/QUOTE (no known quote asset); "
            "add it to a --symbol-map file"
        )


def parse_timestamp(text: str) -> int | None:
    """A tape timestamp: decimal digits only (``str.isdigit``), as an int; else None."""
    if not text.isdigit():
        return None
    try:
        return int(text)
    except ValueError:  # digits int() does not take, e.g. superscripts
        return None


def _parse_decimal(text: str) -> Decimal | None:
    if not _DECIMAL.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        return None


class TardisTape:
    """One Tardis trades CSV (plain or gzipped), read as a stream; use as a context manager.

    ``for item in tape`` yields :class:`TardisRow` or :class:`RowError` per data line, in
    file order; blank lines are skipped and counted in :attr:`blank_lines`.
    :meth:`records` yields the raw split lines for callers with their own fast path.
    """

    def __init__(self, path: Path, symbols: SymbolResolver | None = None) -> None:
        self.path = Path(path)
        self.symbols = symbols or SymbolResolver()
        self.blank_lines = 0
        self.gzipped = False
        self._raw: IO[bytes] | None = None
        self._text: io.TextIOWrapper | None = None
        self._header_bytes = 0
        self._markets: dict[tuple[str, str], tuple[str, str] | RowError] = {}

    # -- opening ---------------------------------------------------------------------------

    def __enter__(self) -> TardisTape:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the file, detect gzip by magic bytes, validate the header."""
        try:
            raw = self.path.open("rb")
        except OSError as exc:
            raise TapeError(f"cannot open tape {self.path}: {exc.strerror or exc}") from exc
        self._raw = raw
        self.gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        binary = self._binary(raw)
        self._text = io.TextIOWrapper(
            binary, encoding="utf-8", errors="surrogateescape", newline=""
        )
        self._text._CHUNK_SIZE = 1 << 20  # type: ignore[attr-defined]  # decode in 1 MiB steps
        try:
            header = self._text.readline()
        except (OSError, EOFError) as exc:
            self.close()
            raise TapeError(f"cannot read tape {self.path}: {exc}") from exc
        columns = tuple(c.strip() for c in header.lstrip("\ufeff").rstrip("\r\n").split(","))
        if columns != TARDIS_COLUMNS:
            self.close()
            shown = header[:200].rstrip("\r\n") if header else "(empty file)"
            raise TapeError(
                f"{self.path} is not a Tardis trades CSV: its header is {shown!r}",
                detail=f"expected header: {','.join(TARDIS_COLUMNS)}",
                hint="replay reads Tardis 'trades' CSV files (plain or .gz), "
                "not book, quote or derivative-ticker data",
            )
        # Decoding with surrogateescape is lossless: this is the header's length in the file.
        self._header_bytes = len(header.encode("utf-8", "surrogateescape"))

    def _binary(self, raw: IO[bytes]) -> IO[bytes]:
        if self.gzipped:  # a large buffer: GzipFile's own reads are small and slow in Python
            return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), 1 << 20)
        return raw

    def close(self) -> None:
        if self._text is not None:
            self._text.close()
            self._text = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    @property
    def size(self) -> int:
        """Size of the file on disk (compressed size for a gzipped tape)."""
        return self.path.stat().st_size

    def bytes_read(self) -> int:
        """Bytes of the file consumed so far (for progress)."""
        raw = self._raw
        return raw.tell() if raw is not None and not raw.closed else self.size

    # -- reading ---------------------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        """``(line number, raw line without its end, fields)`` per non-blank data line.

        The header is line 1. Lines without quotes are split on commas; a line with quotes
        goes through the ``csv`` module (a quoted field may span lines: the number is the
        record's first line, the raw text all of its lines).
        """
        text = self._text
        if text is None:
            raise TapeError(f"tape {self.path} is not open")
        yield from self._line_records(text, text.readline, 1)

    def _line_records(
        self, lines: Iterable[str], readline: Callable[[], str], n: int
    ) -> Generator[Record, None, int]:
        """The records of ``lines`` after line ``n``; returns the last line number."""
        try:
            for line in lines:
                n += 1
                if '"' in line:
                    parts = [line]
                    while sum(p.count('"') for p in parts) % 2:
                        more = readline()
                        if not more:
                            break
                        parts.append(more)
                    first = n
                    n += len(parts) - 1
                    raw = "".join(parts).rstrip("\r\n")
                    fields = next(csv.reader(parts), [])
                    yield first, raw, fields
                    continue
                raw = line.rstrip("\r\n")
                if not raw:
                    self.blank_lines += 1
                    continue
                yield n, raw, raw.split(",")
        except (OSError, EOFError) as exc:  # corrupt or truncated gzip stream
            raise self._read_error(n, exc) from exc
        return n

    def _read_error(self, n: int, exc: Exception) -> TapeError:
        return TapeError(
            f"cannot read tape {self.path} after line {n}: {exc}",
            hint="the file is truncated or corrupt; re-download it",
        )

    def blocks(self, size: int = BLOCK_BYTES) -> Iterator[TapeBlock | Record]:
        """The data lines in blocks of about ``size`` bytes, for a columnar reader.

        Lines without quotes come as a :class:`TapeBlock` (parsed by pyarrow); a block with a
        quote, or with a line that has not eight fields, is read line by line exactly as
        :meth:`records` reads it and comes as its records. Line numbers and
        :attr:`blank_lines` are those :meth:`records` gives. Reads the file from the start
        again: use either this or :meth:`records` on an open tape.
        """
        if self._text is None:
            raise TapeError(f"tape {self.path} is not open")
        self.close()
        raw = self._raw = self.path.open("rb")
        binary = self._binary(raw)
        n = 1
        pending = b""

        def chunk() -> bytes:
            """The next bytes of whole lines (the last line of the file may have no end)."""
            nonlocal pending
            while True:
                try:
                    data = binary.read(size)
                except (OSError, EOFError) as exc:
                    raise self._read_error(n, exc) from exc
                if not data:
                    out, pending = pending, b""
                    return out
                data = pending + data if pending else data
                cut = data.rfind(b"\n") + 1
                if cut:
                    out, pending = data[:cut], data[cut:]
                    return out
                pending = data

        try:
            skip = binary.read(self._header_bytes)
        except (OSError, EOFError) as exc:
            raise self._read_error(n, exc) from exc
        if len(skip) != self._header_bytes:
            raise self._read_error(n, EOFError("the header changed while reading"))
        while data := chunk():
            table = _parse_block(data) if b'"' not in data else None
            if table is not None:
                block = TapeBlock(n + 1, data, table)
                yield block
                n += block.rows
            else:
                feed = _LineFeed(data, chunk)
                n = yield from self._line_records(feed, feed.readline, n)

    def __iter__(self) -> Iterator[TardisRow | RowError]:
        for n, raw, fields in self.records():
            yield self.parse(n, raw, fields)

    def market(self, tardis_exchange: str, tardis_symbol: str) -> tuple[str, str] | RowError:
        """Normalized ``(EXCHANGE, BASE/QUOTE)``, or the error (line 0), cached per market."""
        key = (tardis_exchange, tardis_symbol)
        found = self._markets.get(key)
        if found is None:
            try:
                found = (
                    normalize_exchange(tardis_exchange),
                    self.symbols.resolve(tardis_exchange, tardis_symbol),
                )
            except SymbolError as exc:
                found = RowError(0, "", "UNKNOWN_SYMBOL", str(exc))
            except ValueError as exc:
                found = RowError(0, "", "UNKNOWN_EXCHANGE", str(exc))
            self._markets[key] = found
        return found

    def parse(  # noqa: PLR0911 - one return per reason
        self, line: int, raw: str, fields: list[str]
    ) -> TardisRow | RowError:
        """Parse one split line (see :meth:`records`)."""
        if len(fields) != len(TARDIS_COLUMNS):
            found = f"expected {len(TARDIS_COLUMNS)} fields, found {len(fields)}"
            return RowError(line, raw, "MALFORMED_ROW", found)
        ex, sym, ts, lts, trade_id, side, price, amount = fields
        market = self.market(ex, sym)
        if isinstance(market, RowError):
            return RowError(line, raw, market.reason_code, market.reason)
        exchange, symbol = market

        def error(code: ReasonCode, reason: str, ts_us: int | None = None) -> RowError:
            return RowError(line, raw, code, reason, exchange, symbol, ts_us)

        ts_us = parse_timestamp(ts)
        if ts_us is None:
            return error("INVALID_TIMESTAMP", f"timestamp {ts!r} is not an integer (µs)")
        lts_us = parse_timestamp(lts)
        if lts_us is None:
            return error("INVALID_TIMESTAMP", f"local_timestamp {lts!r} is not an integer (µs)")
        try:
            trade_id.encode()
        except UnicodeEncodeError:
            return error("INVALID_TRADE_ID", f"trade id {trade_id!r} is not valid UTF-8", ts_us)
        if side not in _SIDES:
            return error("INVALID_SIDE", f"side {side!r} is not buy, sell or unknown", ts_us)
        price_d = _parse_decimal(price)
        if price_d is None:
            return error("INVALID_PRICE", f"price {price!r} is not a decimal number", ts_us)
        amount_d = _parse_decimal(amount)
        if amount_d is None:
            return error("INVALID_AMOUNT", f"amount {amount!r} is not a decimal number", ts_us)
        return TardisRow(line, raw, exchange, symbol, ts_us, lts_us, trade_id,
                         side, price_d, amount_d)  # type: ignore[arg-type]  # fmt: skip


def _parse_block(data: bytes) -> pa.Table | None:
    """Lines without quotes as eight binary columns; None if a line has not eight fields."""
    try:
        return pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(
                column_names=TARDIS_COLUMNS, use_threads=False, block_size=len(data) + 1
            ),
            parse_options=_CSV_PARSE,
            convert_options=_CSV_CONVERT,
        )
    except pa.ArrowInvalid:
        return None


class _LineFeed:
    """The lines of one block's text (as a text file with ``newline=""`` splits them);
    :meth:`readline` goes on into the next blocks, for a quoted field spanning lines."""

    def __init__(self, data: bytes, more: Callable[[], bytes]) -> None:
        self._lines = self._split(data)
        self._more = more

    @staticmethod
    def _split(data: bytes) -> Iterator[str]:
        return iter(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._lines)

    def readline(self) -> str:
        line = next(self._lines, None)
        while line is None:
            data = self._more()
            if not data:
                return ""
            self._lines = self._split(data)
            line = next(self._lines, None)
        return line
