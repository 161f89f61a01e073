"""The risk forwarder hands critical account events to the gateway, acked, once each."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from pathlib import Path

import zmq

from ticklake.relay.events import EventReceiver
from ticklake.relay.risk_forwarder import RiskEventForwarder
from ticklake.relay.wire import CriticalEvent
from ticklake.schemas.risk import AccountEvent, EventKind, derived_id
from ticklake.schemas.serde import decode, encode

T0 = 1_767_225_600_000_000


def event(kind: EventKind, account: str = "acct-1", cause: str = "f-1") -> AccountEvent:
    return AccountEvent(
        event_id=derived_id(account, kind, cause),
        account=account,
        event=kind,
        rule="max_drawdown" if kind == "halt" else None,
        reason="test",
        observed=Decimal("0.11") if kind == "halt" else None,
        limit=Decimal("0.1") if kind == "halt" else None,
        cause_id=cause,
        event_ts_us=T0,
        emitted_ts_us=T0 + 1,
    )


def test_critical_events_reach_the_gateway_once(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    endpoint = f"inproc://gateway-{uuid.uuid4().hex[:6]}"
    got: list[CriticalEvent] = []
    receiver = EventReceiver(endpoint, got.append, context=ctx)
    receiver.start()
    forwarder = RiskEventForwarder(
        "unused:9092", default_endpoint=endpoint, store_dir=tmp_path, context=ctx
    )
    try:
        halt, kill = event("halt"), event("kill_switch", cause="s-1")
        assert forwarder.handle(encode(halt)) == halt.event_id
        assert forwarder.handle(encode(event("reset", cause="c-1"))) is None  # not critical
        assert forwarder.handle(b"\x00garbage") is None
        assert forwarder.handle(encode(kill)) == kill.event_id
        assert forwarder.handle(encode(halt)) == halt.event_id  # an at-least-once copy
        assert forwarder.flush(10)
        deadline = time.monotonic() + 5
        while receiver.duplicates < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(e.event_type, e.event_id) for e in got] == [
            ("risk.halt", halt.event_id),
            ("risk.kill_switch", kill.event_id),
        ]
        assert decode(AccountEvent, got[0].payload) == halt
        assert (forwarder.forwarded, forwarder.skipped, forwarder.malformed) == (3, 1, 1)
    finally:
        assert forwarder.stop() == 0
        receiver.stop()
        ctx.term()


def test_unacknowledged_events_are_persisted_on_stop(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    forwarder = RiskEventForwarder(
        "unused:9092",
        default_endpoint="inproc://nobody-listens",
        endpoints={"vip": "inproc://vip-container"},
        store_dir=tmp_path,
        context=ctx,
    )
    assert forwarder.endpoint_of("vip") == "inproc://vip-container"
    forwarder.handle(encode(event("halt")))
    assert not forwarder.flush(0.3)
    assert forwarder.stop() == 1
    assert list(tmp_path.iterdir())
    ctx.term()
