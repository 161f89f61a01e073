"""Relay building blocks without a relay: framing, LVC, requests, wire, settings, SDK logic."""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from pathlib import Path

import pytest
import zmq

from ticklake.relay import (
    EventReceiver,
    InvalidRequestError,
    RelaySettings,
    TimeRangeInFutureError,
)
from ticklake.relay import requests as rq
from ticklake.relay import topics as t
from ticklake.relay.client import market_topics
from ticklake.relay.event_store import EventJournal, load_events, save_events
from ticklake.relay.history import build_request
from ticklake.relay.lvc import LastValueCache
from ticklake.relay.subscription import Subscription
from ticklake.relay.wire import (
    CriticalEvent,
    EventAck,
    decode_message,
    encode_message,
    model_for_topic,
)
from ticklake.schemas import Candle, HistoryReady, HistoryRequest, Trade
from ticklake.schemas.serde import encode

NOW = 1_750_000_000_000_000


def test_exact_filter_never_matches_a_longer_symbol():
    # ZMQ's rule is a byte-prefix match on frame 1; check it with the same rule.
    sub = t.exact_filter("BINANCE:BTC/USDT|tick")
    assert t.topic_frame("BINANCE:BTC/USDT|tick").startswith(sub)
    assert not t.topic_frame("BINANCE:BTC/USDTX|tick").startswith(sub)
    assert not t.topic_frame("BINANCE:BTC/USDT|tickX").startswith(sub)
    assert not t.topic_frame("BINANCE:BTC/USDT|ohlc:15m").startswith(
        t.exact_filter("BINANCE:BTC/USDT|ohlc:1")
    )
    market = t.market_filter("BINANCE:BTC/USDT")
    assert t.topic_frame("BINANCE:BTC/USDT|ohlc:1m").startswith(market)
    assert not t.topic_frame("BINANCE:BTC/USDTX|ohlc:1m").startswith(market)
    assert t.topic_frame(t.work_topic("BINANCE", "ETH/BTC")).startswith(
        t.exchange_filter("BINANCE")
    )
    assert not t.topic_frame("BINANCEUS:ETH/BTC|history").startswith(t.exchange_filter("BINANCE"))
    assert not t.topic_frame(t.history_ready_topic("abcd")).startswith(
        t.exact_filter(t.history_ready_topic("abc"))
    )


def test_exact_matching_over_inproc_zmq():
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        pub.bind("inproc://m")
        sub.connect("inproc://m")
        sub.setsockopt(zmq.SUBSCRIBE, t.exact_filter("BINANCE:BTC/USDT|tick"))
        sub.setsockopt(zmq.RCVTIMEO, 2000)
        # inproc subscriptions are in place once connect() returns; send until one arrives
        pub.send_multipart([t.topic_frame("BINANCE:BTC/USDTX|tick"), b"x"])
        pub.send_multipart([t.topic_frame("BINANCE:BTC/USDT|tick"), b"y"])
        assert sub.recv_multipart() == [b"BINANCE:BTC/USDT|tick\x00", b"y"]
        for s in (pub, sub):
            s.close(linger=0)
    finally:
        ctx.term()


def test_topic_validation():
    assert t.topic("BINANCE:BTC/USDT", t.ohlc("1m")) == "BINANCE:BTC/USDT|ohlc:1m"
    assert t.topic_of(t.topic_frame("RESPONSE:c1")) == "RESPONSE:c1"
    for bad in ("binance:BTC/USDT", "BINANCE:BTCUSDT", "BTC/USDT"):
        with pytest.raises(ValueError):
            t.parse_market(bad)
    with pytest.raises(ValueError):
        t.ohlc("1x")
    assert t.data_type_of("HISTORY_READY:r1") == "HISTORY_READY"
    assert t.data_type_of("BINANCE:BTC/USDT|ohlc:1m") == "ohlc:1m"


def test_header_round_trip_and_flags():
    h = t.Header(t.FLAG_ACK | t.FLAG_REPLAY, 2**63 + 5, 17)
    assert t.Header.unpack(h.pack()) == h
    assert h.is_ack and h.is_replay
    with pytest.raises(t.FramingError):
        t.Header.unpack(b"short")


def _msg(topic: str, seq: int, flags: int = 0) -> list[bytes]:
    return [t.topic_frame(topic), t.Header(flags, 1, seq).pack(), f"p{seq}".encode()]


def test_lvc_keeps_the_last_value_per_topic_and_marks_replays():
    lvc = LastValueCache(max_topics=2)
    assert lvc.update(_msg("A:X/Y|tick", 1))
    assert lvc.update(_msg("A:X/Y|tick", 2))
    assert not lvc.update(_msg("A:X/Y|tick", 9, t.FLAG_REPLAY))
    assert not lvc.update(_msg("A:X/Y|tick", 9, t.FLAG_ACK))
    assert not lvc.update([b"one frame"])
    lvc.update(_msg("A:X/YZ|tick", 1))
    ((topic, header, payload),) = lvc.matching(t.market_filter("A:X/Y"))
    assert topic == t.topic_frame("A:X/Y|tick") and payload == b"p2"
    assert t.Header.unpack(header) == t.Header(t.FLAG_REPLAY, 1, 2)
    assert len(list(lvc.matching(b""))) == 2
    lvc.update(_msg("B:X/Y|tick", 1))  # evicts the least recently updated
    assert len(lvc) == 2
    assert not list(lvc.matching(t.exact_filter("A:X/Y|tick")))


def test_publisher_keeps_sequences_across_cache_evictions_and_caches_what_it_sent():
    """The inlined hot path: per-topic seq, LRU cache of the sent frames, eviction."""
    from ticklake.relay.publisher import RelayPublisher
    from ticklake.stack.process import free_port

    # Connected to a port nobody listens on: nothing is delivered, nothing blocks.
    settings = RelaySettings(publish_port=free_port(), lvc_max_topics=2)
    ctx: zmq.Context = zmq.Context()
    pub = RelayPublisher(settings, context=ctx)
    try:
        a, b, c = "A:X/Y|tick", "B:X/Y|tick", "C:X/Y|tick"
        assert [pub.publish_raw(a, b"a1"), pub.publish_raw(a, b"a2")] == [1, 2]
        assert pub.publish_raw(b, b"b1") == 1
        assert pub.publish_raw(a, b"a3") == 3  # a is now the most recently updated
        assert pub.publish_raw(c, b"c1") == 1  # evicts b, the least recently updated
        assert list(pub.cache.last) == [t.topic_frame(a), t.topic_frame(c)]
        ((topic, header, payload),) = pub.cache.matching(t.exact_filter(a))
        assert (topic, payload) == (t.topic_frame(a), b"a3")
        assert t.Header.unpack(header) == t.Header(t.FLAG_REPLAY, pub.epoch, 3)
        # An evicted topic goes on from its last seq: a restart at 1 in the same epoch
        # would be discarded by subscribers as replays.
        assert pub.publish_raw(b, b"b2") == 2
        assert list(pub.cache.last) == [t.topic_frame(c), t.topic_frame(b)]
        assert len(pub.cache) == 2
    finally:
        pub.close()
        ctx.term()


def test_publish_many_equals_publish_raw_one_by_one():
    """The bridge's batch path: same sequences, same cache, same frames on the wire."""
    from ticklake.relay.errors import RelayUnavailableError
    from ticklake.relay.publisher import RelayPublisher
    from ticklake.stack.process import free_port

    msgs = [(f"{m}:X/Y|tick", f"{m}{i}".encode()) for i in range(70) for m in "ABC"]
    got = []
    ctx: zmq.Context = zmq.Context()
    for batch in (False, True):
        port = free_port()
        sub = ctx.socket(zmq.XSUB)
        sub.bind(f"tcp://127.0.0.1:{port}")
        sub.send(b"\x01")  # subscribe to everything, as the relay does
        pub = RelayPublisher(RelaySettings(publish_port=port, lvc_max_topics=2), context=ctx)
        try:
            deadline = time.monotonic() + 10
            while True:  # the XSUB hands its subscription to a new peer when it is polled
                sub.poll(20)
                with contextlib.suppress(RelayUnavailableError):
                    pub.wait_ready(0.02)
                    break
                assert time.monotonic() < deadline, "the publisher never saw the subscription"
            if batch:
                assert pub.publish_many(msgs[:100]) == 100
                assert pub.publish_many(iter(msgs[100:])) == len(msgs) - 100
            else:
                for topic, payload in msgs:
                    pub.publish_raw(topic, payload)
            frames = []
            while len(frames) < 3 * len(msgs) and sub.poll(5000):
                frames.append(sub.recv())
            seqs = [t.Header.unpack(h).seq for h in frames[1::3]]
            got.append(([f for i, f in enumerate(frames) if i % 3 != 1], seqs,
                        list(pub.cache.last), dict(pub.cache.last)))  # fmt: skip
        finally:
            pub.close()
            sub.close(linger=0)
    ctx.term()
    assert got[0][0] == got[1][0] and len(got[0][0]) == 2 * len(msgs)  # topics and payloads
    assert got[0][1] == got[1][1] == [i // 3 + 1 for i in range(len(msgs))]
    assert got[0][2] == got[1][2] == [t.topic_frame("B:X/Y|tick"), t.topic_frame("C:X/Y|tick")]
    (_, header, payload) = got[1][3][t.topic_frame("C:X/Y|tick")]
    assert payload == b"C69" and t.Header.unpack(header).seq == 70


def _request(**changes: object) -> HistoryRequest:
    fields: dict[str, object] = dict(
        request_id="r1", client_id="c1", exchange="BINANCE", symbol="BTC/USDT",
        data_type="trades", timeframe=None, start_ts_us=NOW - 10, end_ts_us=NOW,
        requested_ts_us=NOW,
    )  # fmt: skip
    fields.update(changes)
    return HistoryRequest.model_validate(fields)


def test_parse_request():
    ok = rq.parse_request([rq.KIND_HISTORY, encode(_request())], now_us=NOW)
    assert isinstance(ok, HistoryRequest) and ok.request_id == "r1"
    future = rq.parse_request([rq.KIND_HISTORY, encode(_request())], now_us=NOW - 100)
    assert isinstance(future, rq.Rejection) and future.code == rq.TIME_RANGE_IN_FUTURE
    assert future.request_id == "r1"
    bad = rq.parse_request([rq.KIND_HISTORY, b"\x01garbage"], now_us=NOW)
    assert isinstance(bad, rq.Rejection) and bad.code == rq.INVALID_REQUEST
    other = rq.parse_request([b"PING"], now_us=NOW)
    assert isinstance(other, rq.Rejection) and other.code == rq.INVALID_REQUEST
    assert other.frames()[0] == rq.REJECTED


def test_build_request_errors():
    args = {"timeframe": "1m", "start": NOW - 10, "end": NOW, "now_us": NOW}
    req = build_request("c1", "BINANCE", "BTC/USDT", **args)  # type: ignore[arg-type]
    assert (req.data_type, req.timeframe) == ("candles", "1m")
    with pytest.raises(TimeRangeInFutureError, match="future"):
        build_request("c1", "BINANCE", "BTC/USDT", **{**args, "start": NOW, "end": NOW + 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="BASE/QUOTE"):
        build_request("c1", "BINANCE", "BTCUSDT", **args)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="timeframe"):
        build_request("c1", "BINANCE", "BTC/USDT", **{**args, "timeframe": "soon"})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="not after"):
        build_request("c1", "BINANCE", "BTC/USDT", **{**args, "end": NOW - 20})  # type: ignore[arg-type]


def test_market_topics():
    assert market_topics(["BINANCE:BTC/USDT"], ticks=True, timeframes=["1m"]) == [
        "BINANCE:BTC/USDT|tick",
        "BINANCE:BTC/USDT|ohlc:1m",
    ]
    with pytest.raises(InvalidRequestError):
        market_topics(["BINANCE:BTC/USDT"], ticks=False, timeframes=[])
    with pytest.raises(InvalidRequestError):
        market_topics(["BTC/USDT"], ticks=True, timeframes=[])


def test_models_for_topics():
    assert model_for_topic("BINANCE:BTC/USDT|tick") is Trade
    assert model_for_topic("BINANCE:BTC/USDT|ohlc:1h") is Candle
    assert model_for_topic("HISTORY_READY:r1") is HistoryReady
    assert model_for_topic("RESPONSE:c1") is HistoryReady
    assert model_for_topic("BINANCE:BTC/USDT|history") is HistoryRequest


def test_event_messages_round_trip(tmp_path: Path):
    event = CriticalEvent(
        event_id="e1", source_id="u1", event_type="order_fill", payload=b"\x00\xff",
        created_ts_us=NOW, attempt=3,
    )  # fmt: skip
    assert decode_message(CriticalEvent, encode_message(event)) == event
    ack = EventAck(event_id="e1", receiver_id="gw", duplicate=True, acked_ts_us=NOW)
    assert decode_message(EventAck, encode_message(ack)) == ack
    store = tmp_path / "sub" / "pending.avro"
    assert save_events(store, [event, event.model_copy(update={"event_id": "e2"})]) == 2
    assert [e.event_id for e in load_events(store)] == ["e1", "e2"]
    assert save_events(store, []) == 0 and not store.exists()
    assert load_events(store) == []


def _event(event_id: str) -> CriticalEvent:
    return CriticalEvent(
        event_id=event_id, source_id="u1", event_type="order_fill", payload=event_id.encode(),
        created_ts_us=NOW, attempt=1,
    )  # fmt: skip


def test_event_journal_keeps_unacked_events_and_survives_a_torn_tail(tmp_path: Path):
    path = tmp_path / "journal"
    journal = EventJournal(path, fsync=False)
    assert journal.open() == []
    for i in range(4):
        journal.append(_event(f"e{i}"))
    journal.ack("e1")
    journal.ack("e3")
    journal.ack("never-sent")  # an ack without its event is ignored
    journal.close()
    with path.open("ab") as f:  # a crash in the middle of the next append
        f.write(b"E\x00\x00\x01\x00partial")
    reopened = EventJournal(path, fsync=False)
    assert [e.event_id for e in reopened.open()] == ["e0", "e2"]
    reopened.close()
    # open() compacted the file to the two pending events: a third opening agrees.
    third = EventJournal(path, fsync=False)
    assert [e.event_id for e in third.open()] == ["e0", "e2"]
    assert third.records == 2
    third.remove()
    assert not path.exists()


def test_event_journal_reads_a_legacy_snapshot(tmp_path: Path):
    path = tmp_path / "pending.avro"
    save_events(path, [_event("a"), _event("b")])
    journal = EventJournal(path, fsync=False)
    assert [e.event_id for e in journal.open()] == ["a", "b"]
    journal.remove()


def test_receiver_remembers_a_bounded_window_of_ids(tmp_path: Path):
    seen = tmp_path / "seen"
    receiver = EventReceiver("inproc://unused", lambda e: None, seen_path=seen, max_seen=3)
    receiver._seen_file = receiver._open_seen()
    for i in range(8):
        receiver._remember(f"id{i}")
    assert list(receiver._seen) == ["id5", "id6", "id7"]
    receiver._seen_file.close()
    # The file was rewritten once it passed 2 x max_seen lines; a restart keeps the window.
    assert len(seen.read_text().split()) < 8
    restarted = EventReceiver("inproc://unused", lambda e: None, seen_path=seen, max_seen=3)
    assert list(restarted._seen) == ["id5", "id6", "id7"]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TICKLAKE_RELAY__SUBSCRIBE_PORT", "6000")
    monkeypatch.setenv("TICKLAKE_RELAY__HOST", "relay.local")
    s = RelaySettings()
    assert s.connect(s.subscribe_port) == "tcp://relay.local:6000"
    assert (s.request_port, s.work_port, s.publish_port) == (5559, 5555, 5557)
    with pytest.raises(Exception, match="frozen"):
        s.host = "x"  # type: ignore[misc]


def test_subscription_counts_gaps_and_drops_replays():
    # _handle is the bookkeeping; the socket is never used (nothing listens on port 1).
    sub = Subscription(RelaySettings(subscribe_port=1), [t.exact_filter("A:X/Y|tick")])
    try:
        payload = encode(
            Trade(
                exchange="A", symbol="X/Y", exchange_ts_us=NOW, receipt_ts_us=NOW,
                ingestor_id="i", trade_id="1", side="buy", price=Decimal(1), amount=Decimal(1),
            )
        )  # fmt: skip

        def frames(epoch: int, seq: int, flags: int = 0) -> list[bytes]:
            return [t.topic_frame("A:X/Y|tick"), t.Header(flags, epoch, seq).pack(), payload]

        assert (
            sub._handle([t.exact_filter("A:X/Y|tick"), t.Header(t.FLAG_ACK, 9, 0).pack(), b""])
            is None
        )
        assert sub.confirmed and sub.stats.relay_epochs == {9}
        assert sub._handle(frames(1, 5)) is not None
        assert sub._handle(frames(1, 5, t.FLAG_REPLAY)) is None
        assert sub._handle(frames(1, 9)) is not None
        assert sub._handle(frames(2, 1)) is not None  # a restarted publisher: no gap
        assert (sub.stats.received, sub.stats.gaps, sub.stats.duplicates) == (3, 3, 1)
        assert sub._handle([b"A:X/Y|tick", b"h"]) is None
        assert sub.stats.malformed == 1
        assert sub.recv(0.01) is None
        t0 = time.monotonic()
        with pytest.raises(Exception, match="did not confirm"):
            Subscription(RelaySettings(subscribe_port=1), [b"Z"]).wait_confirmed(0.05)
        assert time.monotonic() - t0 < 5
    finally:
        sub.close()
