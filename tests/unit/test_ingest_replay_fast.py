"""The replay fast path: byte-identical to fastavro, and never more lenient than the model."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from ticklake.ingestors.replay import FastTradeEncoder, Pacer, encode_trade, plain_decimal
from ticklake.ingestors.tardis import RowError, TardisTape
from ticklake.schemas.models import MAX_TS_US, MIN_TS_US, Trade
from ticklake.schemas.serde import encode

MAX = Decimal("9999999999.99999999")
MIN = Decimal("0.00000001")


def random_decimal(rng: random.Random) -> Decimal:
    places = rng.randint(0, 8)
    digits = rng.randint(1, 10 + places)
    return Decimal(rng.randint(1, 10**digits - 1)).scaleb(-places)


def random_trade(rng: random.Random) -> Trade:
    text = "".join(rng.choice("ab-_9Zé€😀") for _ in range(rng.randint(1, 40)))
    return Trade(
        exchange=rng.choice(["BINANCE", "BINANCEUSDM", "X", "A_B-C"]),
        symbol=rng.choice(["BTC/USDT", "1000SATS/USDT", "a.b/c_d"]),
        exchange_ts_us=rng.randint(MIN_TS_US, MAX_TS_US),
        receipt_ts_us=rng.choice([MIN_TS_US, MAX_TS_US, rng.randint(MIN_TS_US, MAX_TS_US)]),
        ingestor_id="replay:" + text,
        trade_id=text if rng.random() < 0.5 else str(rng.randint(0, 2**63)),
        side=rng.choice(["buy", "sell", "unknown"]),
        price=rng.choice([MIN, MAX, random_decimal(rng)]),
        amount=rng.choice([MIN, MAX, Decimal(1), random_decimal(rng)]),
        request_id=rng.choice([None, text, "r" * 256]),
    )


def test_hand_encoder_is_byte_identical_to_fastavro() -> None:
    rng = random.Random(3)
    trades = [random_trade(rng) for _ in range(3000)]
    for trade in trades:
        assert encode_trade(trade) == encode(trade), trade


def test_plain_decimal_matches_the_model() -> None:
    rng = random.Random(5)
    texts = ["0.00000001", "9999999999.99999999", "1", "1.", "01.5", "0", "0.0", "1.123456789",
             "12345678901", "0000000001.5", "-1", "+1", "1e-8", ".5", "1_0", "\u0661", " 1",
             ""]  # fmt: skip
    texts += [str(random_decimal(rng)) for _ in range(3000)]
    texts += [f"{rng.randint(0, 10**12)}.{rng.randint(0, 10**9)}" for _ in range(3000)]
    accepted = 0
    for text in texts:
        fast = plain_decimal(text)
        if fast is None:
            continue
        accepted += 1
        trade = Trade.model_validate(
            {**BASE, "price": Decimal(text), "amount": Decimal(text)}, strict=False
        )
        assert encode(trade).endswith(fast + fast + b"\x00"), text
    assert accepted > 2000


BASE = {
    "exchange": "BINANCE",
    "symbol": "BTC/USDT",
    "exchange_ts_us": 1_700_000_000_000_000,
    "receipt_ts_us": 1_700_000_000_000_001,
    "ingestor_id": "replay:t.csv",
    "trade_id": "1",
    "side": "buy",
}


def fuzz_fields(rng: random.Random) -> list[str]:
    fields = [
        rng.choice(["binance", "binance-futures", "coinbase"]),
        rng.choice(["BTCUSDT", "ETHBTC", "BTC-USD"]),
        rng.choice([str(rng.randint(MIN_TS_US, MAX_TS_US)), str(MIN_TS_US), str(MAX_TS_US)]),
        str(rng.randint(MIN_TS_US, MAX_TS_US)),
        rng.choice([str(rng.randint(0, 10**12)), "id-é", "x" * 256]),
        rng.choice(["buy", "sell", "unknown"]),
        str(random_decimal(rng)),
        str(random_decimal(rng)),
    ]
    if rng.random() < 0.5:  # break one field in one of many ways
        i = rng.randrange(8)
        fields[i] = rng.choice(
            ["", "0", "0.000000001", "1e-8", "-1", "1" * 11, "99999999999", "1.0000000000",
             str(MIN_TS_US - 1), str(MAX_TS_US + 1), "\u00b2", "\u0661\u0667" + "\u0660" * 14,
             "BUY", "x" * 257, "\udcff", " 1", "1_0", "NaN", "Infinity", "nope", "0.00000001",
             "9999999999.99999999", "0001.5"]
        )  # fmt: skip
    if rng.random() < 0.05:
        fields = fields[: rng.randrange(8)]
    return fields


def test_fast_path_accepts_only_what_the_model_accepts_with_the_same_bytes(
    tmp_path: Path,
) -> None:
    """Every row the fast path encodes is one the model accepts, encoded as serde does."""
    rng = random.Random(11)
    path = tmp_path / "t.csv"
    path.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n")
    fast = FastTradeEncoder("replay:t.csv")
    fast_count = slow_valid = 0
    with TardisTape(path) as tape:
        for i in range(20_000):
            fields = fuzz_fields(rng)
            row = tape.parse(i + 2, ",".join(fields), fields)
            model: Trade | None = None
            if not isinstance(row, RowError):
                try:
                    model = Trade(
                        exchange=row.exchange,
                        symbol=row.symbol,
                        exchange_ts_us=row.timestamp_us,
                        receipt_ts_us=row.local_timestamp_us,
                        ingestor_id="replay:t.csv",
                        trade_id=row.trade_id,
                        side=row.side,
                        price=row.price,
                        amount=row.amount,
                    )
                except ValidationError:
                    model = None
            got = fast.encode(fields)
            if got is not None:
                fast_count += 1
                assert model is not None, fields
                assert got == (f"{model.exchange}:{model.symbol}".encode(), encode(model)), fields
            if model is not None:
                slow_valid += 1
                fast.learn_market(fields[0], fields[1], model)
    # Not vacuous: the fast path takes most valid rows once the markets are known.
    assert fast_count > 0.9 * slow_valid > 5000


class FakeClock:
    """A monotonic clock that only moves when slept on; each sleep overshoots by 1 ms."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + 0.001


def test_pacing_follows_exchange_time_without_drift() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    start = 1_700_000_000_000_000
    sent: list[float] = []
    for k in range(101):  # one record every 100 ms of exchange time -> every 10 ms at 10x
        pacer.wait(start + k * 100_000)
        sent.append(clock.now - 100.0)
    # Each record goes out at its due time (+ the 1 ms oversleep), never later: no drift.
    for k, t in enumerate(sent):
        assert k * 0.01 <= t <= k * 0.01 + 0.0011, (k, t)
    assert sent[-1] == pytest.approx(1.001)


def test_pacing_sends_late_and_out_of_order_records_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(2, clock=clock, sleep=clock.sleep)
    pacer.wait(1_700_000_000_000_000)
    pacer.wait(1_700_000_002_000_000)  # 2 s later at 2x: due after 1 s
    assert clock.now == pytest.approx(101.001)
    clock.now += 5  # the producer was slow: records due in the past go at once
    before = len(clock.sleeps)
    pacer.wait(1_700_000_004_000_000)
    pacer.wait(1_700_000_001_000_000)  # earlier than one already sent
    assert len(clock.sleeps) == before
    with pytest.raises(ValueError, match="speed"):
        Pacer(0)
