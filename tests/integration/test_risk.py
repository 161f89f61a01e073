"""The risk job on the real stack: hand-computed rules, the circuit breaker over a scripted
day of fills, limits changed through the config topic, a restart from a retained
checkpoint that loses and repeats no decision, invalid inputs dead-lettered while the job
goes on, and the forwarder process (``ticklake risk forward``) handing halt events to a
ZeroMQ receiver once each across its restarts.

One job (standalone cluster, 2 s checkpoints on MinIO) serves every test; each test uses
its own accounts and markets. Market data are final candles produced straight into the
job's candles topic: a "flat" market has 1m candles with high 101, low 99, close 100 (true
range 2, so ATR(14) = 2 exactly) and one daily candle with a traded value of 5,000,000,
the last 1m candle ending at the wall-clock time of production (staleness is wall clock).

Inputs on different topics (fills, commands, limits, proposals) are not ordered with each
other, so a test that needs an input applied first probes: it sends proposals (new ids)
until a decision shows the input's effect. Every proposal, probes too, must get exactly
one decision; the test checks that on the exactly-once topic at the end of each test.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from pyiceberg.expressions import EqualTo

from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_risk_tables
from ticklake.jobs.rest import FlinkRestClient
from ticklake.jobs.runner import submit_cluster_job
from ticklake.relay.events import EventReceiver
from ticklake.relay.wire import CriticalEvent
from ticklake.schemas import PRODUCER_CONFIG, WireModel
from ticklake.schemas.models import Candle, DeadLetter
from ticklake.schemas.risk import (
    AccountCommand,
    AccountEvent,
    AccountLimits,
    BrokerPosition,
    Fill,
    OrderProposal,
    RiskDecision,
    RiskViolation,
)
from ticklake.schemas.serde import decode, encode, schema_header
from ticklake.schemas.topics import (
    CANDLES,
    DEAD_LETTERS,
    RISK_BROKER_POSITIONS,
    RISK_COMMANDS,
    RISK_DECISIONS,
    RISK_DECISIONS_LIVE,
    RISK_EVENTS,
    RISK_EVENTS_LIVE,
    RISK_FILLS,
    RISK_LIMITS,
    RISK_PROPOSALS,
    RISK_VIOLATIONS,
    TopicSpec,
    ensure_topics,
)
from ticklake.settings import Connections
from ticklake.stack.manager import Stack
from ticklake.stack.process import free_port

pytestmark = pytest.mark.timeout(1800)

MODULE = "ticklake.jobs.risk"
AUDIT_MODULE = "ticklake.jobs.risk_audit"
JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
S = 1_000_000
MIN = 60 * S
D = Decimal
M = TypeVar("M", bound=WireModel)

#: settings flag -> the topic spec it names
TOPIC_FLAGS = {
    "--proposals-topic": RISK_PROPOSALS,
    "--fills-topic": RISK_FILLS,
    "--broker-positions-topic": RISK_BROKER_POSITIONS,
    "--commands-topic": RISK_COMMANDS,
    "--limits-topic": RISK_LIMITS,
    "--candles-topic": CANDLES,
    "--decisions-topic": RISK_DECISIONS,
    "--violations-topic": RISK_VIOLATIONS,
    "--events-topic": RISK_EVENTS,
    "--decisions-live-topic": RISK_DECISIONS_LIVE,
    "--events-live-topic": RISK_EVENTS_LIVE,
    "--dead-letters-topic": DEAD_LETTERS,
}


#: the flags of the topics the risk_audit job reads (the risk job's exactly-once outputs)
AUDITED_FLAGS = ("--decisions-topic", "--violations-topic", "--events-topic")


def now_us() -> int:
    return time.time_ns() // 1000


def wait_until(
    what: str, condition: Callable[[], Any], timeout_s: float, every_s: float = 0.3
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(every_s)


class Tail:
    """A consumer that keeps reading one topic from its beginning (decoded records)."""

    def __init__(self, conn: Connections, topic: str, model: type[M], isolation: str) -> None:
        self.model = model
        self.records: list[Any] = []
        self.consumer = Consumer(
            {
                "bootstrap.servers": conn.kafka.bootstrap_servers,
                "group.id": f"it-{uuid.uuid4().hex[:8]}",
                "isolation.level": isolation,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def poll(self) -> list[Any]:
        for msg in self.consumer.consume(1000, timeout=0.2):
            assert msg.error() is None, msg.error()
            self.records.append(decode(self.model, msg.value()))
        return self.records

    def close(self) -> None:
        self.consumer.close()


@dataclasses.dataclass
class RiskRun:
    """Topics, job and helpers of one test module run."""

    conn: Connections
    stack: Stack
    tag: str
    topics: dict[str, str]
    args: list[str]
    namespace: str
    audit_args: list[str]
    job_id: str = ""
    audit_job_id: str = ""
    producer: Producer | None = None
    seq: Iterator[int] = dataclasses.field(default_factory=itertools.count)

    @property
    def rest(self) -> FlinkRestClient:
        return FlinkRestClient(self.conn.flink.rest_url)

    def topic(self, spec: TopicSpec[Any]) -> str:
        return self.topics[spec.name]

    def send(self, spec: TopicSpec[M], *records: M) -> None:
        if self.producer is None:
            self.producer = Producer(
                {"bootstrap.servers": self.conn.kafka.bootstrap_servers, "acks": "all",
                 "enable.idempotence": True} | PRODUCER_CONFIG
            )  # fmt: skip
        for record in records:
            key = record.market.encode() if isinstance(record, Candle) else spec.key(record)
            self.producer.produce(
                self.topic(spec), key=key, value=encode(record),
                headers=[schema_header(type(record))],
            )  # fmt: skip
        assert self.producer.flush(30) == 0

    def send_raw(self, spec: TopicSpec[Any], key: bytes, value: bytes) -> int:
        """Produce bytes as they are (no encoding, no schema header); returns the offset."""
        self.send(spec)  # makes the producer
        assert self.producer is not None
        offsets: list[int] = []
        self.producer.produce(
            self.topic(spec), key=key, value=value,
            on_delivery=lambda err, msg: offsets.append(-1 if err else msg.offset()),
        )  # fmt: skip
        assert self.producer.flush(30) == 0 and offsets and offsets[0] >= 0, offsets
        return offsets[0]

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{self.tag}-{next(self.seq)}"

    # -- market data --------------------------------------------------------------------

    def flat_market(self, symbol: str, *, adv: str = "5000000", swing: str = "1") -> str:
        """14 final 1m candles (close 100, high/low 100 +- swing) ending now, and one daily
        candle with quote volume ``adv``. Returns the market key."""
        end = now_us()
        candles = []
        for i in range(14):
            start = end - (14 - i) * MIN
            candles.append(
                Candle(exchange="BINANCE", symbol=symbol, exchange_ts_us=start + MIN - 1,
                       receipt_ts_us=start + MIN, ingestor_id="it", timeframe="1m",
                       window_start_us=start, window_end_us=start + MIN, open=D(100),
                       high=D(100) + D(swing), low=D(100) - D(swing), close=D(100),
                       volume=D(10), final=True, version=1)
            )  # fmt: skip
        day = end - end % (86_400 * S) - 86_400 * S
        candles.append(
            Candle(exchange="BINANCE", symbol=symbol, exchange_ts_us=day + 1, receipt_ts_us=day + 2,
                   ingestor_id="it", timeframe="1d", window_start_us=day,
                   window_end_us=day + 86_400 * S, open=D(100), high=D(101), low=D(99),
                   close=D(100), volume=D(1), quote_volume=D(adv), final=True, version=1)
        )  # fmt: skip
        self.send(CANDLES, *candles)
        return f"BINANCE:{symbol}"

    # -- account inputs -----------------------------------------------------------------

    def deposit(self, account: str, amount: str) -> None:
        self.command(account, "deposit", amount)

    def command(self, account: str, kind: str, amount: str | None = None) -> str:
        cid = self.next_id("c")
        self.send(RISK_COMMANDS, AccountCommand(
            command_id=cid, account=account, command=kind,
            amount=None if amount is None else D(amount), reason="integration test",
            issued_by="it", issued_ts_us=now_us()))  # fmt: skip
        return cid

    def limits(self, account: str, **changes: Any) -> None:
        self.send(RISK_LIMITS, AccountLimits.defaults(account, now_us(), **changes))

    def fill(self, account: str, symbol: str, side: str, qty: str, price: str) -> str:
        fid = self.next_id("f")
        ts = now_us()
        self.send(RISK_FILLS, Fill(
            fill_id=fid, account=account, exchange="BINANCE", symbol=symbol, side=side,
            qty=D(qty), price=D(price), fee=D(0), fill_ts_us=ts, receipt_ts_us=ts))  # fmt: skip
        return fid

    def propose(self, account: str, symbol: str, side: str = "buy", **changes: Any) -> str:
        pid = self.next_id("p")
        ts = now_us()
        values: dict[str, Any] = {
            "proposal_id": pid, "account": account, "exchange": "BINANCE", "symbol": symbol,
            "side": side, "source_id": "it", "signal_ts_us": ts, "created_ts_us": ts,
        } | changes  # fmt: skip
        self.send(RISK_PROPOSALS, OrderProposal(**values))
        return pid

    # -- outputs ------------------------------------------------------------------------

    def live_decisions(self) -> Tail:
        return Tail(self.conn, self.topic(RISK_DECISIONS_LIVE), RiskDecision, "read_uncommitted")

    def live_events(self) -> Tail:
        return Tail(self.conn, self.topic(RISK_EVENTS_LIVE), AccountEvent, "read_uncommitted")

    def decision(self, tail: Tail, pid: str, timeout_s: float = 90) -> RiskDecision:
        found: RiskDecision = wait_until(
            f"decision of {pid}",
            lambda: next((d for d in tail.poll() if d.proposal_id == pid), None),
            timeout_s,
        )
        return found

    def probe(
        self,
        tail: Tail,
        account: str,
        symbol: str,
        until: Callable[[RiskDecision], bool],
        timeout_s: float = 90,
        **changes: Any,
    ) -> RiskDecision:
        """Propose (new ids) until a decision satisfies ``until``; returns that decision."""
        deadline = time.monotonic() + timeout_s
        while True:
            decision = self.decision(tail, self.propose(account, symbol, **changes))
            if until(decision):
                return decision
            if time.monotonic() > deadline:
                raise AssertionError(f"probe on {account} {symbol}: last {decision}")
            time.sleep(0.5)

    def committed(self, spec: TopicSpec[M], model: type[M]) -> list[M]:
        """Every record of the exactly-once topic a read_committed consumer sees now."""
        tail = Tail(self.conn, self.topic(spec), model, "read_committed")
        try:
            end = tail.consumer.get_watermark_offsets(TopicPartition(self.topic(spec), 0))[1]
            wait_until(
                "read to the end",
                lambda: (
                    tail.poll() is not None
                    and tail.consumer.position([TopicPartition(self.topic(spec), 0)])[0].offset
                    >= end
                ),
                60,
                every_s=0.05,
            )
            return list(tail.records)
        finally:
            tail.close()

    def all_decided_once(self, proposals: set[str], timeout_s: float = 120) -> list[RiskDecision]:
        """Wait until every proposal has a committed decision; no proposal has two."""

        def done() -> list[RiskDecision] | None:
            got = self.committed(RISK_DECISIONS, RiskDecision)
            ids = {d.proposal_id for d in got}
            return got if proposals <= ids else None

        got: list[RiskDecision] = wait_until("committed decisions", done, timeout_s, every_s=1)
        counts = Counter(d.proposal_id for d in got)
        assert not [p for p, n in counts.items() if n > 1], "a proposal has two decisions"
        return [d for d in got if d.proposal_id in proposals]

    # -- the job ------------------------------------------------------------------------

    def start(self, savepoint: str | None = None) -> None:
        self.job_id = self._submit(MODULE, self.args, savepoint)

    def start_audit(self, savepoint: str | None = None) -> None:
        self.audit_job_id = self._submit(AUDIT_MODULE, self.audit_args, savepoint)

    def _submit(self, module: str, args: list[str], savepoint: str | None) -> str:
        out = submit_cluster_job(
            module, args, rest_url=self.conn.flink.rest_url, detached=True,
            savepoint=savepoint, timeout_s=420,
        )  # fmt: skip
        match = JOB_ID.search(out)
        assert match, out[-4000:]
        self.rest.wait_for_state(match.group(1), {"RUNNING"}, timeout_s=240)
        return match.group(1)

    def audited(self, table: str, column: str, account: str) -> list[Any]:
        """``column`` of the account's rows in the Iceberg audit table ``table``."""
        return (
            load_catalog(self.conn).load_table(f"{self.namespace}.{table}")
            .scan(row_filter=EqualTo("account", account), selected_fields=(column,))
            .to_arrow().column(column).to_pylist()
        )  # fmt: skip


@pytest.fixture(scope="module")
def risk(flink_cluster: Stack) -> Iterator[RiskRun]:
    conn = Connections.load()
    tag = uuid.uuid4().hex[:8]
    topics = {spec.name: f"it.risk.{tag}.{spec.name}" for spec in TOPIC_FLAGS.values()}
    ensure_topics(
        conn.kafka.bootstrap_servers,
        [dataclasses.replace(spec, name=topics[spec.name], partitions=1)
         for spec in TOPIC_FLAGS.values()],
    )  # fmt: skip
    namespace = f"it_risk_{tag}"
    ensure_risk_tables(load_catalog(conn), namespace)
    args = [
        *itertools.chain.from_iterable((f, topics[spec.name]) for f, spec in TOPIC_FLAGS.items()),
        "--checkpoint-interval", "2s",
        "--checkpoint-dir", f"s3://{conn.s3.bucket}/flink/checkpoints/{namespace}",
        "--transactional-id-prefix", f"it-risk-{tag}",
        "--group-id", f"it-risk-{tag}",
        "--monitor-interval", "500ms",
    ]  # fmt: skip
    audit_args = [
        *itertools.chain.from_iterable(
            (f, topics[spec.name]) for f, spec in TOPIC_FLAGS.items() if f in AUDITED_FLAGS
        ),
        "--namespace", namespace,
        "--checkpoint-interval", "2s",
        "--checkpoint-dir", f"s3://{conn.s3.bucket}/flink/checkpoints/{namespace}-audit",
        "--group-id", f"it-risk-audit-{tag}",
    ]  # fmt: skip
    run = RiskRun(conn, flink_cluster, tag, topics, args, namespace, audit_args)
    run.start()
    run.start_audit()
    try:
        yield run
    finally:
        if run.producer is not None:
            run.producer.flush(10)
            run.producer = None
        rest = run.rest
        for job_id in (run.job_id, run.audit_job_id):
            if job_id and rest.job(job_id)["state"] == "RUNNING":
                rest.cancel(job_id)
                rest.wait_for_state(job_id, {"CANCELED"}, timeout_s=60)


def loaded(equity: str) -> Callable[[RiskDecision], bool]:
    """The market data and the deposit are in: ATR and ADV known, equity as funded.

    ``flat_market`` sends the 1m candles (ATR) before the daily one (ADV): a proposal
    between them sees an ATR but no ADV, and is rejected for it.
    """
    return lambda d: d.atr is not None and d.adv_notional is not None and d.equity == D(equity)


def test_rules_on_hand_computed_cases(risk: RiskRun) -> None:
    tail = risk.live_decisions()
    acct = f"rules-{risk.tag}"
    risk.flat_market("ABC/USDT")
    risk.flat_market("THIN/USDT", adv="999999.99999999")
    risk.flat_market("WILD/USDT", swing="10")  # TR 20, ATR 20: 20% of the price
    risk.deposit(acct, "100000")
    first = risk.probe(tail, acct, "ABC/USDT", loaded("100000"))
    # Equity 100000, ATR 2, price 100: floor(100000 x 1% / (2 x 2)) = 250; 5% cap 50.
    assert first.approved and first.size == 50
    assert (first.risk_qty, first.cap_qty, first.atr, first.price) == (250, 50, 2, 100)
    assert first.adv_notional == 5000000 and first.symbol_exposure == 0

    d = risk.decision(tail, risk.propose(acct, "ABC/USDT", requested_qty=D(7)))
    assert d.approved and d.size == 7
    stale = now_us() - 5 * MIN - S  # one second past the 5 minutes
    d = risk.decision(tail, risk.propose(acct, "ABC/USDT", signal_ts_us=stale))
    assert d.rule_failed == "SIGNAL_STALE" and d.limit == 300000 and d.observed > 300000
    d = risk.decision(tail, risk.propose(acct, "NONE/USDT"))
    assert d.rule_failed == "NO_MARKET_DATA" and d.size == 0
    d = risk.probe(tail, acct, "THIN/USDT", lambda d: d.rule_failed == "LIQUIDITY")
    assert d.observed == D("999999.99999999") and d.limit == 1000000
    d = risk.probe(tail, acct, "WILD/USDT", lambda d: d.rule_failed == "VOLATILITY_GATE")
    assert d.observed == D("0.2") and d.limit == D("0.05")
    d = risk.decision(tail, risk.propose(acct, "ABC/USDT", side="sell"))
    assert d.rule_failed == "NO_POSITION"

    # A fill of 100 at 100: cash 90000, 10000 held = the 10% symbol cap exactly.
    risk.fill(acct, "ABC/USDT", "buy", "100", "100")
    d = risk.probe(tail, acct, "ABC/USDT", lambda d: d.symbol_exposure == 10000)
    assert d.rule_failed == "SYMBOL_CAP" and d.limit == 10000 and d.cash == 90000
    d = risk.decision(tail, risk.propose(acct, "ABC/USDT", side="sell", requested_qty=D(40)))
    assert d.approved and d.size == 40 and d.cap_qty == 100

    # A proposal the contract rejects (negative qty) is answered, not dropped.
    bad = OrderProposal.model_construct(
        proposal_id=risk.next_id("p"), account=acct, exchange="BINANCE", symbol="ABC/USDT",
        side="buy", requested_qty=D("-5"), asset_group=None, source_id="it",
        signal_ts_us=now_us(), created_ts_us=now_us(),
    )  # fmt: skip
    risk.send(RISK_PROPOSALS, bad)
    d = risk.decision(tail, bad.proposal_id)
    assert d.rule_failed == "INVALID_PROPOSAL" and "requested_qty" in d.reason

    # Exactly one committed decision per proposal (probes included), equal to the live one.
    ids = {x.proposal_id for x in tail.poll()}
    committed = risk.all_decided_once(ids)
    live = {x.proposal_id: x for x in tail.records}
    assert all(c == live[c.proposal_id] for c in committed)
    # The Iceberg audit trail (written by the risk_audit job): the same decisions, each once
    # (partitioned by day and by account bucket).
    catalog, table_id = load_catalog(risk.conn), f"it_risk_{risk.tag}.decisions"
    spec = catalog.load_table(table_id).spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [
        ("decision_ts_day", "day"), ("account_bucket", "bucket[16]")]  # fmt: skip

    def audited() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = (
            catalog.load_table(table_id)
            .scan(row_filter=EqualTo("account", acct),
                  selected_fields=("proposal_id", "approved", "size", "rule_failed"))
            .to_arrow().to_pylist()
        )  # fmt: skip
        return rows if {r["proposal_id"] for r in rows} >= ids else None

    rows = wait_until("the decisions in the Iceberg audit", audited, 90, every_s=1)
    assert Counter(r["proposal_id"] for r in rows) == Counter(ids)  # each once, nothing else
    decided = {c.proposal_id: c for c in committed}
    assert all(
        (r["approved"], r["size"], r["rule_failed"])
        == (decided[r["proposal_id"]].approved, decided[r["proposal_id"]].size,
            decided[r["proposal_id"]].rule_failed)
        for r in rows
    )  # fmt: skip
    tail.close()


def test_limits_change_through_the_config_topic(risk: RiskRun) -> None:
    tail = risk.live_decisions()
    acct = f"limits-{risk.tag}"
    risk.flat_market("CFG/USDT")
    risk.deposit(acct, "100000")
    first = risk.probe(tail, acct, "CFG/USDT", loaded("100000"))
    assert first.approved and first.size == 50, first
    risk.limits(acct, max_position=D("0.02"))  # 2% of 100000 at 100: 20
    assert risk.probe(tail, acct, "CFG/USDT", lambda d: d.size != 50).size == 20
    # Stop at 3 ATR, caps wide: floor(100000 x 1% / (3 x 2)) = floor(166.67) = 166.
    risk.limits(acct, max_position=D("0.5"), symbol_cap=D("0.5"), stop_atr_multiple=D(3))
    d = risk.probe(tail, acct, "CFG/USDT", lambda d: d.size not in (20, 50))
    assert d.size == 166 and d.risk_qty == 166  # floor(1000 / 6)
    risk.all_decided_once({x.proposal_id for x in tail.poll()})
    tail.close()


def test_a_day_of_fills_trips_the_breaker_until_reset(risk: RiskRun) -> None:
    tail, events = risk.live_decisions(), risk.live_events()
    acct = f"breaker-{risk.tag}"
    risk.flat_market("DAY/USDT")
    # Only the drawdown monitor may fire here: daily loss and per-trade risk wide open; a
    # 4% max position shows when these limits are in force (size 40 instead of 50).
    risk.limits(acct, daily_loss_limit=D("0.5"), max_risk_per_trade=D(1), max_position=D("0.04"))
    risk.deposit(acct, "100000")
    d = risk.probe(tail, acct, "DAY/USDT", lambda d: d.equity == 100000 and d.size == 40)
    assert d.approved and d.atr == 2
    # XYZ has no market data: it is marked at its fill prices.
    #   buy 200 @ 100: cash 80000, 200 x 100          -> equity 100000 (the peak)
    #   buy 1 @ 90:    cash 79910, 201 x 90 = 18090   -> 98000  (2%)
    #   buy 1 @ 60:    cash 79850, 202 x 60 = 12120   -> 91970  (8.03%)
    #   buy 1 @ 50:    cash 79800, 203 x 50 = 10150   -> 89950  (10.05% > 10%: halt)
    fills = [risk.fill(acct, "XYZ/USDT", "buy", q, p)
             for q, p in [("200", "100"), ("1", "90"), ("1", "60")]]  # fmt: skip
    d = risk.probe(tail, acct, "DAY/USDT", lambda d: d.equity == D("91970"))
    assert d.approved and d.drawdown == D("0.0803")
    last = risk.fill(acct, "XYZ/USDT", "buy", "1", "50")
    halt = wait_until(
        "halt event", lambda: next((e for e in events.poll() if e.account == acct), None), 60
    )
    assert (halt.event, halt.rule, halt.cause_id) == ("halt", "max_drawdown", last)
    assert halt.observed == D("0.1005") and halt.limit == D("0.1")
    for _ in range(3):
        d = risk.decision(tail, risk.propose(acct, "DAY/USDT"))
        assert d.rule_failed == "ACCOUNT_HALTED" and d.size == 0
    risk.command(acct, "reset")
    # After the reset the peak is the current equity: floor(89950 x 1% / 4) = 224, 4% = 35.
    d = risk.probe(tail, acct, "DAY/USDT", lambda d: d.rule_failed != "ACCOUNT_HALTED")
    assert d.approved and d.size == 35 and d.equity == D("89950") and d.drawdown == 0
    wait_until("reset event", lambda: [e for e in events.poll() if e.event == "reset"
                                       and e.account == acct], 30)  # fmt: skip

    decided = risk.all_decided_once({x.proposal_id for x in tail.poll()})
    # Every decision between the halt and the reset rejected: none approved in between.
    order = sorted(decided, key=lambda x: x.decision_ts_us)
    halted = [x for x in order if halt.emitted_ts_us <= x.decision_ts_us < d.decision_ts_us]
    assert halted and all(x.rule_failed == "ACCOUNT_HALTED" for x in halted)
    violations = [v for v in risk.committed(RISK_VIOLATIONS, RiskViolation) if v.account == acct]
    assert [(v.monitor, v.observed, v.cause_id) for v in violations] == [
        ("max_drawdown", D("0.1005"), last)
    ]
    committed_events = [e for e in risk.committed(RISK_EVENTS, AccountEvent) if e.account == acct]
    assert [e.event for e in committed_events] == ["halt", "reset"]
    assert fills  # applied once each: the equities above prove it
    # The audit trail (the risk_audit job): the violation and both events, once each.
    assert wait_until("the violation in the Iceberg audit",
                      lambda: risk.audited("violations", "violation_id", acct), 90,
                      every_s=1) == [violations[0].violation_id]  # fmt: skip
    events_audited = wait_until(
        "halt and reset in the Iceberg audit",
        lambda: (got := risk.audited("account_events", "event_id", acct)) and len(got) >= 2
        and got, 90, every_s=1,
    )  # fmt: skip
    assert sorted(events_audited) == sorted(e.event_id for e in committed_events)
    tail.close()
    events.close()


def test_restart_from_a_checkpoint_loses_and_repeats_no_decision(risk: RiskRun) -> None:
    """Cancel mid-stream, propose while the job is down, restart from the retained
    checkpoint: every proposal has exactly one committed decision, and the decisions after
    the restart still see the account's position (keyed state) and the ATR (broadcast)."""
    tail = risk.live_decisions()
    acct = f"restart-{risk.tag}"
    risk.flat_market("RST/USDT")
    # Market data may age during the restart: allow an hour for this account.
    risk.limits(acct, market_data_max_age_ms=3_600_000, signal_max_age_ms=3_600_000,
                max_position=D("0.03"))  # fmt: skip
    risk.deposit(acct, "100000")
    # Commands and fills are separate topics: wait for the deposit before the fill, or
    # the fill may meet an unfunded account and trip the breaker (unbounded risk).
    risk.probe(tail, acct, "RST/USDT", loaded("100000"))
    risk.fill(acct, "RST/USDT", "buy", "30", "100")
    before = risk.probe(
        tail, acct, "RST/USDT", lambda d: d.symbol_exposure == 3000 and d.size == 30
    )
    # 3% of 100000 at 100 = 30; equity 100000, cash 97000.
    assert before.approved and before.cash == 97000
    batch1 = {risk.propose(acct, "RST/USDT") for _ in range(10)}
    risk.all_decided_once(batch1)
    wait_until("a checkpoint after batch 1", lambda: _completed(risk) >= 2, 60)

    batch2 = {risk.propose(acct, "RST/USDT") for _ in range(10)}
    wait_until("batch 2 decided (uncommitted)",
               lambda: batch2 <= {x.proposal_id for x in tail.poll()}, 90)  # fmt: skip
    risk.rest.cancel(risk.job_id)
    assert risk.rest.wait_for_state(risk.job_id, {"CANCELED"}, timeout_s=60) == "CANCELED"
    checkpoint = str(risk.rest.checkpoints(risk.job_id)["latest"]["completed"]["external_path"])
    batch3 = {risk.propose(acct, "RST/USDT") for _ in range(10)}  # while the job is down
    risk.start(savepoint=checkpoint)
    restored = wait_until(
        "restore reported", lambda: risk.rest.checkpoints(risk.job_id)["latest"]["restored"], 60
    )
    assert restored["external_path"] == checkpoint
    batch4 = {risk.propose(acct, "RST/USDT") for _ in range(10)}

    everything = batch1 | batch2 | batch3 | batch4 | {before.proposal_id}
    decided = risk.all_decided_once(everything, timeout_s=240)
    assert {d.proposal_id for d in decided} >= everything
    for d in decided:
        if d.proposal_id in batch3 | batch4:
            assert d.approved and d.size == 30, d
            assert d.symbol_exposure == 3000 and d.cash == 97000 and d.atr == 2
    # The live topic is at-least-once: replays after the restart may repeat a decision
    # there, always the same one for the same proposal id.
    live = Counter(x.proposal_id for x in tail.poll())
    assert set(live) >= everything
    print(f"\nlive copies beyond the first: {sum(live.values()) - len(live)}")
    tail.close()


def _completed(risk: RiskRun) -> int:
    counts = risk.rest.checkpoints(risk.job_id).get("counts", {})
    return int(counts.get("completed", 0))


def test_the_audit_job_restarts_from_its_checkpoint_without_loss_or_repeat(
    risk: RiskRun,
) -> None:
    """Cancel the audit job after some decisions are in Iceberg, decide more while it is
    down, restart it from its retained checkpoint: every committed decision of the account
    is in the audit table exactly once."""
    tail = risk.live_decisions()
    acct = f"audit-{risk.tag}"
    risk.flat_market("AUD/USDT")
    risk.deposit(acct, "100000")
    risk.probe(tail, acct, "AUD/USDT", loaded("100000"))
    batch1 = {risk.propose(acct, "AUD/USDT") for _ in range(20)}
    wait_until("batch 1 in the audit",
               lambda: batch1 <= set(risk.audited("decisions", "proposal_id", acct)), 90,
               every_s=1)  # fmt: skip
    batch2 = {risk.propose(acct, "AUD/USDT") for _ in range(20)}
    risk.all_decided_once(batch2)  # committed by the risk job: readable by the audit job
    time.sleep(1)  # the audit job may have read some of batch 2, uncheckpointed
    job = risk.audit_job_id
    risk.rest.cancel(job)
    assert risk.rest.wait_for_state(job, {"CANCELED"}, timeout_s=60) == "CANCELED"
    checkpoint = str(risk.rest.checkpoints(job)["latest"]["completed"]["external_path"])
    batch3 = {risk.propose(acct, "AUD/USDT") for _ in range(20)}  # while the audit is down
    risk.all_decided_once(batch3)
    risk.start_audit(savepoint=checkpoint)
    everything = {x.proposal_id for x in tail.poll() if x.account == acct}
    assert batch1 | batch2 | batch3 <= everything

    def complete() -> list[Any] | None:
        got = risk.audited("decisions", "proposal_id", acct)
        return got if set(got) >= everything else None

    rows = wait_until("every decision in the audit after the restart", complete, 120, every_s=1)
    assert Counter(rows) == Counter(everything)  # each once, nothing else
    tail.close()


def test_the_audit_job_refuses_to_start_without_its_tables(flink_cluster: Stack) -> None:
    """A namespace without the audit tables: a clear error before anything is submitted."""
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    namespace = f"it_no_audit_{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [str(flink_python(ctx)), "-m", AUDIT_MODULE, "--namespace", namespace],
        env=dict(os.environ) | job_environment(ctx), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 9, done.stderr[-3000:]
    assert f"the risk audit tables {namespace}.decisions" in done.stderr
    assert f"ticklake risk tables --namespace {namespace}" in done.stderr


def test_group_cap_and_reconciliation_kill_switch(risk: RiskRun) -> None:
    tail, events = risk.live_decisions(), risk.live_events()
    acct = f"recon-{risk.tag}"
    risk.flat_market("KIL/USDT")
    risk.limits(acct, group_cap=D("0.01"))  # 1% of 100000 = 1000 per asset group
    risk.deposit(acct, "100000")
    risk.probe(tail, acct, "KIL/USDT", loaded("100000"))  # funded before the fills
    fid = risk.fill(acct, "KIL/USDT", "buy", "10", "100")
    grouped = Fill(
        fill_id=risk.next_id("f"), account=acct, exchange="BINANCE", symbol="GRP/USDT",
        side="buy", qty=D(10), price=D(100), fee=D(0), asset_group="majors",
        fill_ts_us=now_us(), receipt_ts_us=now_us(),
    )  # fmt: skip
    risk.send(RISK_FILLS, grouped)
    # 10 GRP at 100 (its fill price: no market data) = 1000 = the group cap: no room.
    d = risk.probe(tail, acct, "KIL/USDT", lambda d: d.rule_failed == "GROUP_CAP",
                   asset_group="majors")  # fmt: skip
    assert d.observed == 1000 and d.limit == 1000 and d.group_exposure == 1000
    assert risk.decision(tail, risk.propose(acct, "KIL/USDT", asset_group="minors")).approved

    # Reconciliation: local 10 KIL; equity 100000; price 100.
    snaps = [("s-ok", "10"), ("s-edge", "60"), ("s-over", "60.00000001")]
    for sid, qty in snaps:  # drift 0, exactly 5% (|60 - 10| x 100 / 100000), just above
        risk.send(RISK_BROKER_POSITIONS, BrokerPosition(
            snapshot_id=f"{sid}-{risk.tag}", account=acct, exchange="BINANCE",
            symbol="KIL/USDT", qty=D(qty), snapshot_ts_us=now_us()))  # fmt: skip
    kill = wait_until(
        "kill switch",
        lambda: next((e for e in events.poll() if e.account == acct), None),
        60,
    )
    assert (kill.event, kill.rule, kill.cause_id) == ("kill_switch", "reconciliation",
                                                       f"s-over-{risk.tag}")  # fmt: skip
    assert kill.limit == D("0.05") and kill.observed == D("0.05000000")  # 5.0000001% rounded
    d = risk.probe(tail, acct, "KIL/USDT", lambda d: d.rule_failed == "ACCOUNT_HALTED")
    assert "kill switch" in d.reason
    risk.command(acct, "reset")
    assert risk.probe(tail, acct, "KIL/USDT", lambda d: d.rule_failed is None).approved
    risk.all_decided_once({x.proposal_id for x in tail.poll()})
    assert fid
    tail.close()
    events.close()


def test_repeated_ids_are_applied_once(risk: RiskRun) -> None:
    """A fill and a proposal each delivered twice (a producer's retry): the fill counts once
    and the proposal gets one decision. The ids live in the job's two generations of
    keyed state (jobs/risk_seen.py)."""
    tail = risk.live_decisions()
    acct = f"dup-{risk.tag}"
    risk.flat_market("DUP/USDT")
    risk.limits(acct, max_position=D("0.5"))
    risk.deposit(acct, "100000")
    risk.probe(tail, acct, "DUP/USDT", loaded("100000"))
    fill = Fill(
        fill_id=risk.next_id("f"), account=acct, exchange="BINANCE", symbol="DUP/USDT",
        side="buy", qty=D(10), price=D(100), fee=D(0), fill_ts_us=now_us(),
        receipt_ts_us=now_us(),
    )  # fmt: skip
    risk.send(RISK_FILLS, fill, fill)
    # A distinct fill after both copies (same partition: the account is the key), so a
    # decision that sees it has seen both copies: 11 x 100 once, 21 x 100 if counted twice.
    risk.fill(acct, "DUP/USDT", "buy", "1", "100")
    seen = risk.probe(tail, acct, "DUP/USDT", lambda d: (d.symbol_exposure or 0) >= 1100)
    assert seen.symbol_exposure == 1100 and seen.cash == 100000 - 1100, seen

    ts = now_us()
    proposal = OrderProposal(
        proposal_id=risk.next_id("p"), account=acct, exchange="BINANCE", symbol="DUP/USDT",
        side="buy", source_id="it", signal_ts_us=ts, created_ts_us=ts,
    )  # fmt: skip
    risk.send(RISK_PROPOSALS, proposal, proposal)
    after = risk.propose(acct, "DUP/USDT")  # decided after both copies (same partition)
    risk.decision(tail, after)
    decided = risk.all_decided_once({proposal.proposal_id, after})
    assert Counter(d.proposal_id for d in decided) == {proposal.proposal_id: 1, after: 1}
    tail.close()


def test_invalid_inputs_are_dead_lettered_and_the_job_goes_on(risk: RiskRun) -> None:
    """Undecodable bytes and records that break the contract, among valid ones, on every
    account input topic: each lands on the dead-letter topic once, with its reason and its
    exact bytes; every valid proposal still gets exactly one decision; the job never
    restarts."""
    tail = risk.live_decisions()
    acct = f"dlq-{risk.tag}"
    key = acct.encode()
    risk.flat_market("DLQ/USDT")
    risk.deposit(acct, "100000")
    assert risk.probe(tail, acct, "DLQ/USDT", loaded("100000")).approved
    before = {risk.propose(acct, "DLQ/USDT") for _ in range(3)}

    garbage = b"\x00\x01\xff not an Avro record " + risk.tag.encode()
    valid = OrderProposal(
        proposal_id=risk.next_id("p"), account=acct, exchange="BINANCE", symbol="DLQ/USDT",
        side="buy", source_id="it", signal_ts_us=now_us(), created_ts_us=now_us(),
    )  # fmt: skip
    bad_fill = Fill.model_construct(
        fill_id=risk.next_id("f"), account=acct, exchange="BINANCE", symbol="DLQ/USDT",
        side="buy", qty=D(0), price=D(100), fee=D(0), asset_group=None, proposal_id=None,
        fill_ts_us=now_us(), receipt_ts_us=now_us(),
    )  # fmt: skip
    bad_proposal = OrderProposal.model_construct(
        proposal_id=risk.next_id("p"), account=acct, exchange="BINANCE", symbol="DLQ/USDT",
        side="buy", requested_qty=D("-1"), asset_group=None, source_id="it",
        signal_ts_us=now_us(), created_ts_us=now_us(),
    )  # fmt: skip
    # an unknown side: no valid decision can repeat it, so the dead letter is the answer
    no_side = bad_proposal.model_copy(
        update={"proposal_id": risk.next_id("p"), "side": "hold", "requested_qty": None}
    )
    crafted = [  # (topic, bytes, expected reason)
        (RISK_PROPOSALS, garbage, "UNDECODABLE"),
        (RISK_PROPOSALS, encode(valid)[:-2], "UNDECODABLE"),  # truncated
        (RISK_PROPOSALS, encode(bad_proposal), "INVALID_RECORD"),
        (RISK_PROPOSALS, encode(no_side), "INVALID_RECORD"),
        (RISK_FILLS, encode(bad_fill), "INVALID_RECORD"),
        (RISK_FILLS, garbage, "UNDECODABLE"),
        (RISK_COMMANDS, garbage, "UNDECODABLE"),
        (RISK_LIMITS, garbage, "UNDECODABLE"),
        (RISK_BROKER_POSITIONS, garbage, "UNDECODABLE"),
    ]
    expected = {
        (risk.topic(spec), risk.send_raw(spec, key, value)): (reason, value)
        for spec, value, reason in crafted
    }
    after = {risk.propose(acct, "DLQ/USDT") for _ in range(3)}

    decided = risk.all_decided_once(before | after | {bad_proposal.proposal_id})
    by_id = {d.proposal_id: d for d in decided}
    assert all(by_id[p].approved and by_id[p].size == 50 for p in before | after)
    answer = by_id[bad_proposal.proposal_id]
    assert answer.rule_failed == "INVALID_PROPOSAL" and "requested_qty" in answer.reason

    def mine() -> list[DeadLetter]:
        return [x for x in risk.committed(DEAD_LETTERS, DeadLetter) if x.original_key == key]

    def enough() -> list[DeadLetter] | None:
        found = mine()
        return found if len(found) >= len(expected) else None

    letters: list[DeadLetter] = wait_until("dead letters committed", enough, 90, every_s=1)
    got = {(x.source_topic, x.source_offset): (x.reason_code, x.payload) for x in letters}
    assert len(letters) == len(expected)  # once each
    assert got == expected
    assert all(x.source_component == "flink:risk" and x.source_partition == 0 for x in letters)
    committed = risk.committed(RISK_DECISIONS, RiskDecision)
    assert not [d for d in committed if d.proposal_id == no_side.proposal_id]
    job = risk.rest.job(risk.job_id)
    assert job["state"] == "RUNNING"
    assert not job.get("timestamps", {}).get("RESTARTING"), "the job restarted"
    tail.close()


class Inbox:
    """A user container's (or the gateway's) receiving side: delivered events by id."""

    def __init__(self, endpoint: str) -> None:
        self.events: list[CriticalEvent] = []
        self.receiver = EventReceiver(endpoint, self.events.append)
        self.receiver.start()

    def ids(self) -> Counter[str]:
        return Counter(e.event_id for e in list(self.events))


class Forwarder:
    """``ticklake risk forward`` as a real process."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ticklake.cli", "risk", "forward", *args],
            stdout=subprocess.DEVNULL, stderr=log.open("a"), start_new_session=True,
        )  # fmt: skip

    def stop(self, sig: signal.Signals) -> int:
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(60)


def test_the_forwarder_process_delivers_halts_once_across_restarts(
    risk: RiskRun, tmp_path: Path
) -> None:
    """Halt commands -> the job's halt events on the live topic -> ``ticklake risk forward``
    -> the account's own receiver, each event delivered once: across a clean stop (SIGTERM)
    and a kill (SIGKILL, offsets possibly uncommitted: the copies are acknowledged without
    being delivered again)."""
    events = risk.live_events()
    accounts = [f"fwd{i}-{risk.tag}" for i in range(3)]
    own, gateway = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    inbox, gateway_inbox = Inbox(own), Inbox(gateway)
    args = [
        "--endpoint", gateway, "--topic", risk.topic(RISK_EVENTS_LIVE),
        "--group-id", f"it-fwd-{risk.tag}", "--store-dir", str(tmp_path / "journal"),
        "--ack-timeout", "0.2",
        *itertools.chain.from_iterable(("--account-endpoint", f"{a}={own}") for a in accounts),
    ]  # fmt: skip
    log = tmp_path / "forwarder.log"
    forwarder: Forwarder | None = None

    def halts(upto: int) -> dict[str, AccountEvent]:
        """The halt events of the first ``upto`` accounts on the live topic, by id."""
        found = {e.event_id: e for e in events.poll() if e.account in accounts[:upto]}
        return found if len(found) >= upto else {}

    def delivered(want: dict[str, AccountEvent]) -> bool:
        return set(inbox.ids()) >= set(want)

    try:
        forwarder = Forwarder(args, log)
        risk.command(accounts[0], "halt")
        want = wait_until("halt of account 0", lambda: halts(1), 90)
        wait_until("halt 0 delivered", lambda: delivered(want), 60)
        assert forwarder.stop(signal.SIGTERM) == 0, log.read_text()[-3000:]

        risk.command(accounts[1], "halt")  # while the forwarder is down
        want = wait_until("halt of account 1", lambda: halts(2), 90)
        forwarder = Forwarder(args, log)
        wait_until("halt 1 delivered after a restart", lambda: delivered(want), 60)
        forwarder.stop(signal.SIGKILL)

        risk.command(accounts[2], "halt")
        want = wait_until("halt of account 2", lambda: halts(3), 90)
        forwarder = Forwarder(args, log)
        wait_until("halt 2 delivered after a kill", lambda: delivered(want), 60)
        time.sleep(1)  # room for a wrong second delivery to show
        assert forwarder.stop(signal.SIGTERM) == 0, log.read_text()[-3000:]

        assert inbox.ids() == Counter(list(want))  # exactly once each
        for got in inbox.events:
            event = decode(AccountEvent, got.payload)
            assert event == want[got.event_id] and got.event_type == "risk.halt"
        assert not [e for e in gateway_inbox.events if e.event_id in want]
    finally:
        if forwarder is not None and forwarder.proc.poll() is None:
            forwarder.stop(signal.SIGKILL)
        inbox.receiver.stop()
        gateway_inbox.receiver.stop()
        events.close()


def test_risk_tables_creates_the_missing_audit_tables_once(flink_cluster: Stack) -> None:
    """`ticklake risk tables`: created the first time, left alone the second."""
    namespace = f"it_tables_{uuid.uuid4().hex[:8]}"
    ticklake = str(Path(sys.executable).parent / "ticklake")
    cli = [ticklake, "risk", "tables", "--namespace", namespace]
    runs = [subprocess.run(cli, capture_output=True, text=True, timeout=120, check=False)
            for _ in range(2)]  # fmt: skip
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    tables = ("decisions", "violations", "account_events")
    assert runs[0].stdout.splitlines() == [f"{namespace}.{t}: created" for t in tables]
    assert runs[1].stdout.splitlines() == [f"{namespace}.{t}: exists" for t in tables]
    catalog = load_catalog(Connections.load())
    for table in tables:
        spec = catalog.load_table(f"{namespace}.{table}").spec()
        assert [str(f.transform) for f in spec.fields] == ["day", "bucket[16]"]
