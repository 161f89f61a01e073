"""The replay's columnar fast path: a block of tape lines to Kafka keys and Avro values.

:class:`BlockEncoder` parses a :class:`~ticklake.ingestors.tardis.TapeBlock` with pyarrow's
CSV reader (every column as raw bytes), validates whole columns at once (pyarrow compute,
numpy) and builds the Avro record of every row with pyarrow's binary concatenation, so the
replay's per-row Python is only the ``produce()`` call.

It accepts exactly what the per-row fast path (:class:`~ticklake.ingestors.replay.
FastTradeEncoder`) accepts, or less: a market the model has accepted before, timestamps of
ASCII digits in the model's bounds, a trade id of 1 to 256 bytes of valid UTF-8, a side of
``buy``/``sell``/``unknown``, and prices and amounts spelled ``1-10 digits[.0-8 digits]``
and not zero (these always fit ``DECIMAL(18, 8)`` exactly). Any other row is returned as
rejected and the replay sends it down the per-row path (fast encoder, else the model), in
tape order.
``tests/unit/test_ingest_replay_blocks.py`` proves the bytes equal the per-row path's and
fastavro's, and that nothing the model refuses is accepted.

The Avro layout of ``Trade`` (``schemas/trade.avsc``): exchange and symbol strings (one
pre-encoded prefix per market), two timestamps as zigzag varints (always eight bytes in the
model's bounds), the ingestor id, the trade id (varint length, UTF-8), the side, price and
amount as ``bytes`` decimals (varint length, big-endian two's complement of the unscaled
value), and ``request_id`` null (the union's branch 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ticklake.ingestors.tardis import TapeBlock
from ticklake.schemas.models import MAX_TS_US, MIN_TS_US

#: A decimal the block path takes: 1-10 digits, optionally a point and 0-8 digits. Such a
#: value always fits DECIMAL(18, 8) exactly (only zero is refused, after parsing).
_PLAIN_DECIMAL = r"^[0-9]{1,10}(\.[0-9]{0,8})?$"
_DECIMAL_TYPE = pa.decimal128(18, 8)
#: Unscaled values from these up need one more byte: 2**7, 2**15, ..., 2**55.
_BYTE_STEPS = np.array([1 << (8 * k - 1) for k in range(1, 8)], dtype=np.uint64)
_SIDES = pa.array([b"buy", b"sell", b"unknown"], pa.binary())
_EMPTY = pa.scalar(b"", pa.binary())
_NULL_REQUEST_ID = pa.scalar(b"\x00", pa.binary())
_MAX_TRADE_ID_BYTES = 256  # <= 256 bytes is <= 256 characters: the model's bound
_MAX_TS_DIGITS = 18  # longer digit strings go to the per-row path (never valid anyway)
_MARKET_TABLE_LIMIT = 1 << 20
_SAMPLE = 1024  # rows sampled to tell a column of repeated decimals


def _avro_long(n: int) -> bytes:
    z = n << 1 if n >= 0 else ((-n) << 1) - 1
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_LENGTHS = pa.array([_avro_long(i) for i in range(_MAX_TRADE_ID_BYTES + 1)], pa.binary())
_SIDE_VALUES = pa.array([_avro_long(len(s)) + s for s in _SIDES.to_pylist()], pa.binary())


@dataclass(frozen=True, slots=True)
class EncodedBlock:
    """Keys and values of a block's rows; rows in ``rejected`` are not encoded."""

    keys: list[bytes]
    values: list[bytes]
    #: Row numbers (0-based, ascending) the per-row path must handle.
    rejected: list[int]


class BlockEncoder:
    """Encodes blocks of tape rows; ``markets`` is shared with the per-row fast path.

    ``markets`` maps a Tardis ``(exchange, symbol)`` to the Kafka key and the encoded
    exchange and symbol, filled only after the model accepted a trade of that market
    (:meth:`FastTradeEncoder.learn_market`); rows of other markets are rejected.
    """

    def __init__(
        self, ingestor: bytes, markets: dict[tuple[str, str], tuple[bytes, bytes]]
    ) -> None:
        self.ingestor = ingestor  # the encoded ingestor id
        self.markets = markets
        self._known: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}

    def encode(self, block: TapeBlock) -> EncodedBlock:
        """Keys and values of the block's rows, and the rows left to the per-row path."""
        c = [_array(block.table.column(i)) for i in range(block.table.num_columns)]
        n = block.rows
        market, keys, prefixes = self._markets(c[0], c[1])
        ok = market >= 0
        stamps = []
        for column in (c[2], c[3]):
            us, valid = _timestamps(column)
            ok &= valid
            stamps.append(_varint8(us))
        trade_id = c[4]
        id_bytes = pc.binary_length(trade_id).to_numpy()
        ok &= (id_bytes >= 1) & (id_bytes <= _MAX_TRADE_ID_BYTES) & _utf8(trade_id)
        id_length = _LENGTHS.take(pa.array(np.minimum(id_bytes, _MAX_TRADE_ID_BYTES)))
        side = pc.index_in(c[5], value_set=_SIDES)
        ok &= side.is_valid().to_numpy(zero_copy_only=False)
        side_value = _SIDE_VALUES.take(side.fill_null(0))
        price, price_ok = _decimal_column(c[6])
        amount, amount_ok = _decimal_column(c[7])
        ok &= price_ok & amount_ok
        # The fixed middle: both timestamps (8 bytes each) and the ingestor id.
        width = 16 + len(self.ingestor)
        fixed = np.empty((n, width), np.uint8)
        fixed[:, 0:8] = stamps[0].view(np.uint8).reshape(n, 8)
        fixed[:, 8:16] = stamps[1].view(np.uint8).reshape(n, 8)
        fixed[:, 16:] = np.frombuffer(self.ingestor, np.uint8)
        offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
        middle = pa.Array.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(fixed)]
        )
        market_prefix = pa.array(prefixes or [b""], pa.binary()).take(
            pa.array(np.maximum(market, 0))
        )
        values = pc.binary_join_element_wise(
            market_prefix,
            middle,
            id_length,
            trade_id,
            side_value,
            price,
            amount,
            _NULL_REQUEST_ID,
            _EMPTY,
        )
        key_table = np.empty(len(keys) + 1, dtype=object)
        key_table[: len(keys)] = keys
        key_table[len(keys)] = b""
        return EncodedBlock(
            keys=key_table[market].tolist(),
            values=values.to_pylist(),
            rejected=np.flatnonzero(~ok).tolist(),
        )

    def _markets(
        self, exchanges: pa.Array, symbols: pa.Array
    ) -> tuple[npt.NDArray[np.int64], list[bytes], list[bytes]]:
        """Per row, the index of its market in (keys, prefixes), or -1 if not known."""
        ex, sym = pc.dictionary_encode(exchanges), pc.dictionary_encode(symbols)
        ex_names, sym_names = ex.dictionary.to_pylist(), sym.dictionary.to_pylist()
        width = len(sym_names)
        codes = ex.indices.to_numpy().astype(np.int64) * width + sym.indices.to_numpy()
        if len(ex_names) * width <= _MARKET_TABLE_LIMIT:
            present = np.flatnonzero(np.bincount(codes, minlength=len(ex_names) * width))
            slots = present  # the table is indexed by the pair's code
        else:  # many exchanges times many symbols: number the pairs present instead
            present, codes = np.unique(codes, return_inverse=True)
            slots = np.arange(len(present))
        table = np.full(len(ex_names) * width if slots is present else len(present), -1)
        keys: list[bytes] = []
        prefixes: list[bytes] = []
        for slot, code in zip(slots.tolist(), present.tolist(), strict=True):
            found = self._market(ex_names[code // width], sym_names[code % width])
            if found is not None:
                table[slot] = len(keys)
                keys.append(found[0])
                prefixes.append(found[1])
        return table[codes], keys, prefixes

    def _market(self, exchange: bytes, symbol: bytes) -> tuple[bytes, bytes] | None:
        found = self._known.get((exchange, symbol))
        if found is None:
            try:
                found = self.markets.get((exchange.decode(), symbol.decode()))
            except UnicodeDecodeError:
                return None
            if found is not None:
                self._known[exchange, symbol] = found
        return found


def _array(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _utf8(column: pa.Array) -> npt.NDArray[np.bool_]:
    """Whether each value is valid UTF-8 (checked per value only if the column is not)."""
    valid = np.ones(len(column), bool)
    try:
        column.cast(pa.string())
    except pa.ArrowInvalid:
        offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset :]
        data = np.frombuffer(column.buffers()[2], np.uint8)
        high = np.flatnonzero(data[offsets[0] : offsets[len(column)]] >= 0x80) + offsets[0]
        for row in np.unique(np.searchsorted(offsets, high, side="right") - 1).tolist():
            try:
                column[row].as_py().decode()
            except UnicodeDecodeError:
                valid[row] = False
    return valid


def _timestamps(column: pa.Array) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Epoch microseconds and whether each is ASCII digits within the model's bounds."""
    text = column.view(pa.string())  # no UTF-8 check: ASCII digits are all that pass
    digits = pc.and_(
        pc.ascii_is_decimal(text), pc.less_equal(pc.binary_length(column), _MAX_TS_DIGITS)
    )
    us = pc.cast(pc.if_else(digits, text, "0"), pa.int64()).to_numpy()
    valid = digits.to_numpy(zero_copy_only=False) & (us >= MIN_TS_US) & (us <= MAX_TS_US)
    return us, valid


def _varint8(us: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """Avro longs of valid timestamps, eight varint bytes each, as little-endian words.

    In the model's bounds a timestamp zigzags to 2**49 <= z < 2**56: seven bytes of seven
    bits with the continuation bit, then the last seven bits. (Other rows get garbage.)
    """
    z = us.astype(np.uint64) << np.uint64(1)
    word = np.full(len(z), 0x0080808080808080, np.uint64)
    for k in range(7):
        word |= ((z >> np.uint64(7 * k)) & np.uint64(0x7F)) << np.uint64(8 * k)
    word |= (z >> np.uint64(49) & np.uint64(0x7F)) << np.uint64(56)
    return word


def _decimal_column(column: pa.Array) -> tuple[pa.Array, npt.NDArray[np.bool_]]:
    """The Avro bytes of a column of decimals, and whether each is a plain, non-zero one.

    Prices repeat a lot on a tape: when a sample of the column is mostly repeats, only its
    distinct values are parsed and encoded, then taken per row.
    """
    if len(column) >= 4 * _SAMPLE and 2 * len(pc.unique(column.slice(0, _SAMPLE))) < _SAMPLE:
        coded = pc.dictionary_encode(column)
        values, valid = _decimal_column(coded.dictionary)
        return values.take(coded.indices), valid[coded.indices.to_numpy()]
    unscaled, valid = _decimals(column)
    return _decimal_values(unscaled, valid), valid


def _decimals(column: pa.Array) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Unscaled DECIMAL(18, 8) values, and whether each is a plain, non-zero decimal."""
    plain = pc.match_substring_regex(column, _PLAIN_DECIMAL)
    parsed = pc.cast(pc.if_else(plain, column, pa.scalar(b"1", pa.binary())), _DECIMAL_TYPE)
    # decimal128 is 16 bytes little-endian; below 10**18 the value is its low 64 bits.
    words = np.frombuffer(parsed.buffers()[1], np.int64)
    unscaled = words[2 * parsed.offset : 2 * (parsed.offset + len(parsed)) : 2]
    valid = plain.to_numpy(zero_copy_only=False) & (unscaled > 0)
    return unscaled, valid


def _decimal_values(unscaled: npt.NDArray[np.int64], valid: npt.NDArray[np.bool_]) -> pa.Array:
    """Avro ``bytes`` decimals: a one-byte length L, then L big-endian bytes.

    Built as inline binary views (a 16-byte view holds up to 12 bytes: ours are at most 9):
    length (int32), then the data. For 0 < v < 2**63 the minimal two's complement takes
    L = 1 + (number of steps 2**7, 2**15, ... <= v) bytes, and the length's varint is 2L.
    """
    n = len(unscaled)
    value = np.where(valid, unscaled, 1).astype(np.uint64)
    # Both uint64: a mixed comparison would go through float64 and round 2**55 - 1 up.
    size = 1 + np.searchsorted(_BYTE_STEPS, value, side="right").astype(np.uint64)
    views = np.zeros((n, 16), np.uint8)
    views[:, 0] = size + 1  # the view's length (little-endian int32, < 256)
    views[:, 4] = size * 2  # the Avro length of the bytes
    # The value shifted to the top of a big-endian 64-bit word: its L bytes come first.
    top = (value << (np.uint64(64) - size * np.uint64(8))).astype(">u8")
    views[:, 5:13] = top.view(np.uint8).reshape(n, 8)
    array = pa.Array.from_buffers(pa.binary_view(), n, [None, pa.py_buffer(views)])
    return array.cast(pa.binary())
