"""The risk forwarder hands critical account events to the gateway, acked, once each;
its settings and command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import zmq
from pydantic import ValidationError

from ticklake.relay.events import EventReceiver
from ticklake.relay.risk_forwarder import ForwarderSettings, RiskEventForwarder
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


def test_settings_parse_account_endpoints_and_refuse_bad_endpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TICKLAKE_RISK_FORWARDER__ENDPOINT", "tcp://gateway:5570")
    monkeypatch.setenv(
        "TICKLAKE_RISK_FORWARDER__ACCOUNT_ENDPOINTS", "vip=tcp://10.0.0.7:5570,b=ipc:///tmp/b"
    )
    s = ForwarderSettings()
    assert s.endpoint == "tcp://gateway:5570"
    assert s.account_endpoints == {"vip": "tcp://10.0.0.7:5570", "b": "ipc:///tmp/b"}
    assert ForwarderSettings(account_endpoints=["x=inproc://x"]).account_endpoints == {  # type: ignore[arg-type]
        "x": "inproc://x"
    }
    for bad in ("gateway:5570", "tcp://gateway", "tcp://gateway:99999", "http://g:1"):
        with pytest.raises(ValidationError):
            ForwarderSettings(endpoint=bad)
    with pytest.raises(ValidationError):
        ForwarderSettings(account_endpoints=["no-equals-sign"])  # type: ignore[arg-type]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLAKE_RISK_FORWARDER")}
    return subprocess.run(
        [sys.executable, "-m", "ticklake.cli", "risk", "forward", *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_the_cli_explains_bad_arguments_and_exits_non_zero() -> None:
    help_ = _cli("--help")
    assert help_.returncode == 0 and "--account-endpoint ACCOUNT=ENDPOINT" in help_.stdout
    missing = _cli()
    assert missing.returncode == 3
    assert "endpoint: Field required" in missing.stderr and "--endpoint" in missing.stderr
    bad = _cli("--endpoint", "gateway:5570")
    assert bad.returncode == 3 and "is not a ZeroMQ endpoint" in bad.stderr
    pair = _cli("--endpoint", "tcp://g:1", "--account-endpoint", "acct-1")
    assert pair.returncode == 3 and "must be ACCOUNT=ENDPOINT" in pair.stderr
    typed = _cli("--endpoint", "tcp://g:1", "--ack-timeout", "soon")
    assert typed.returncode == 2 and "--ack-timeout" in typed.stderr
