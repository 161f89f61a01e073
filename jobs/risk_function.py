"""The risk job's stateful Python operator and the row layouts around it.

One ``KeyedBroadcastProcessFunction``: the keyed side carries every account input (keyed by
account: proposals, fills, broker positions, commands, limits), the broadcast side the
market data (final candles) and the default limits (account ``*``). State, all in Flink:

- keyed, per account: one :class:`AccountState` (pickled: the :class:`Portfolio`, the
  seen-ids generation, the pending monitor timer; ``jobs/risk_account.py``, one read and
  one write per record), the account's own limits, the ids of proposals, fills and
  commands already applied (two generations of ``MapState``, ``jobs/risk_seen.py``: a
  repeated id is ignored, so a proposal gets exactly one decision);
- broadcast: one :class:`MarketState` per market and the default limits. Every parallel
  instance receives every broadcast element, so each keeps a plain dict mirror of it for
  fast reads and refills the mirror from the broadcast state after a restore.

The account inputs arrive as raw Kafka records; :class:`InputDecoder` (stateless, before the
keying) decodes and validates them (``jobs/risk_inputs.py``) and sends what it cannot use to
the dead-letter side output. Output rows cross the Python/Java boundary with decimals as
exact text (PyFlink 1.20 cannot key or convert a stream whose rows hold ``BigDecimal``s:
``ExternalTypeInfo`` of a legacy decimal fails), cast back to ``DECIMAL(p, s)`` in SQL.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import (
    KeyedBroadcastProcessFunction,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from ticklake.jobs.risk_account import AccountState, Generation, LegacyStates, migrate
from ticklake.jobs.risk_inputs import (
    ACCOUNT_INPUTS,
    DEFAULTS_KEY,
    InvalidProposal,
    RawRecord,
    decode_input,
)
from ticklake.jobs.risk_market import CandleView, MarketState
from ticklake.jobs.risk_portfolio import Event, Outcome, Portfolio, Violation
from ticklake.jobs.risk_rules import Decision, decide, round8
from ticklake.jobs.risk_seen import SeenIds
from ticklake.schemas.models import DeadLetter, WireModel
from ticklake.schemas.risk import (
    AccountCommand,
    AccountEvent,
    AccountLimits,
    BrokerPosition,
    Fill,
    OrderProposal,
    RiskViolation,
)

log = logging.getLogger(__name__)

__all__ = ["ACCOUNT_INPUTS", "DEFAULTS_KEY", "InputDecoder", "RiskFunction"]


@functools.cache
def fields(model: type[WireModel]) -> tuple[dict[str, Any], ...]:
    return tuple(model.avro_schema()["fields"])


@functools.cache
def field_names(model: type[WireModel]) -> tuple[str, ...]:
    return tuple(f["name"] for f in fields(model))


@functools.cache
def decimal_names(model: type[WireModel]) -> frozenset[str]:
    out = set()
    for f in fields(model):
        kind = f["type"][1] if isinstance(f["type"], list) else f["type"]
        if isinstance(kind, dict) and kind.get("logicalType") == "decimal":
            out.add(f["name"])
    return frozenset(out)


def typed_select(model: type[WireModel], view: str, extra: Iterable[str] = ()) -> str:
    """``SELECT`` of a text-decimal ``view`` with the decimals cast back to the schema's."""
    cols = [*extra]
    for f in fields(model):
        kind = f["type"][1] if isinstance(f["type"], list) else f["type"]
        name = f["name"]
        if isinstance(kind, dict):
            cols.append(
                f"CAST(`{name}` AS DECIMAL({kind['precision']}, {kind['scale']})) AS `{name}`"
            )
        else:
            cols.append(f"`{name}`")
    return f"SELECT {', '.join(cols)} FROM {view}"


_FLINK_TYPES = {
    "string": Types.STRING,
    "long": Types.LONG,
    "int": Types.INT,
    "boolean": Types.BOOLEAN,
    "bytes": lambda: Types.PRIMITIVE_ARRAY(Types.BYTE()),
}


def row_type(model: type[WireModel]) -> TypeInformation:
    """The Python row type of ``model`` with decimals as text."""
    names, types = [], []
    for f in fields(model):
        kind = f["type"][1] if isinstance(f["type"], list) else f["type"]
        names.append(f["name"])
        types.append(Types.STRING() if isinstance(kind, dict) else _FLINK_TYPES[kind]())
    return Types.ROW_NAMED(names, types)


def _text(value: Decimal | None) -> str | None:
    rounded = round8(value)
    return None if rounded is None else str(rounded)


VIOLATIONS = OutputTag("violations", row_type(RiskViolation))
EVENTS = OutputTag("account_events", row_type(AccountEvent))
DEAD_LETTER_OUTPUT = OutputTag("dead_letters", row_type(DeadLetter))
DEFAULT_LIMITS = OutputTag("default_limits", Types.PICKLED_BYTE_ARRAY())


class InputDecoder(ProcessFunction):  # type: ignore[misc]
    """Raw account input rows (see ``jobs/risk.py``, ``RAW_COLUMNS``) -> ``(kind, account,
    record)`` for the rules, default limits to ``DEFAULT_LIMITS``, dead letters to
    ``DEAD_LETTER_OUTPUT`` (:func:`ticklake.jobs.risk_inputs.decode_input`)."""

    def process_element(self, value: Row, ctx: Any) -> Iterator[Any]:
        kind, key, payload, schema, topic, partition, offset, ts_ms = value
        decoded = decode_input(
            RawRecord(kind, key, payload, schema, topic, partition, offset, ts_ms)
        )
        if decoded.dead_letter is not None:
            log.warning(
                "dead letter %s from %s[%d]@%d: %s", decoded.dead_letter.reason_code, topic,
                partition, offset, decoded.dead_letter.reason_message,
            )  # fmt: skip
            yield DEAD_LETTER_OUTPUT, dead_letter_row(decoded.dead_letter)
        if decoded.record is None:
            return
        if decoded.is_default_limits:
            yield DEFAULT_LIMITS, decoded.record
        else:
            yield decoded.record


def now_us() -> int:
    return time.time_ns() // 1000


def decision_row(p: OrderProposal, d: Decision, decided_us: int) -> Row:
    return Row(
        p.proposal_id, p.account, p.exchange, p.symbol, p.side, d.approved,
        str(round8(d.size) or Decimal(0)), d.rule_failed, d.reason,
        _text(d.observed), _text(d.limit), _text(d.equity), _text(d.cash), _text(d.price),
        _text(d.atr), _text(d.adv_notional), _text(d.drawdown), _text(d.daily_loss),
        _text(d.symbol_exposure), _text(d.group_exposure), _text(d.risk_qty),
        _text(d.cap_qty), p.signal_ts_us, p.created_ts_us, decided_us,
    )  # fmt: skip


def invalid_decision_row(invalid: InvalidProposal, decided_us: int) -> Row:
    raw = invalid.values
    return Row(
        raw["proposal_id"], raw["account"], raw["exchange"], raw["symbol"], raw["side"],
        False, "0", "INVALID_PROPOSAL", f"invalid proposal: {invalid.problem}",
        None, None, None, None, None, None, None, None, None, None, None, None, None,
        raw["signal_ts_us"], raw["created_ts_us"], decided_us,
    )  # fmt: skip


def dead_letter_row(letter: DeadLetter) -> Row:
    return Row(*(getattr(letter, name) for name in field_names(DeadLetter)))


def violation_row(account: str, v: Violation, detected_us: int) -> Row:
    return Row(
        v.violation_id, account, v.monitor, _text(v.observed), _text(v.limit), v.halts,
        v.detail, v.cause_id, v.event_ts_us, detected_us,
    )  # fmt: skip


def event_row(account: str, e: Event, emitted_us: int) -> Row:
    return Row(
        e.event_id, account, e.event, e.rule, e.reason, _text(e.observed), _text(e.limit),
        e.cause_id, e.event_ts_us, emitted_us,
    )  # fmt: skip


@dataclass(frozen=True)
class RiskConfig:
    """Market-wide settings of the operator (from the job's settings)."""

    atr_timeframe: str = "1m"
    adv_timeframe: str = "1d"
    atr_period: int = 14
    adv_days: int = 20
    monitor_interval_ms: int = 1000
    dedup_ttl_ms: int = 7 * 86_400_000


#: Accounts whose default limits are kept ready (the cache is emptied when full).
_LIMITS_CACHE = 10_000


def markets_descriptor() -> MapStateDescriptor:
    """A fresh descriptor each time: a used one holds Java objects and cannot be pickled."""
    return MapStateDescriptor("markets", Types.STRING(), Types.PICKLED_BYTE_ARRAY())


class _Markets(Mapping[str, MarketState]):
    """Read view of the broadcast state through the operator's dict mirror.

    The broadcast state itself is fetched only when the mirror misses (after a restore,
    before the market's next candle): ``ctx.get_broadcast_state`` builds a Java state
    descriptor and crosses into the JVM on every call, which is too dear per record.
    """

    def __init__(self, mirror: dict[str, Any], ctx: Any) -> None:
        self._mirror = mirror
        self._ctx = ctx
        self._state: Any = None

    def state(self) -> Any:
        if self._state is None:
            self._state = self._ctx.get_broadcast_state(markets_descriptor())
        return self._state

    def __getitem__(self, market: str) -> MarketState:
        if market not in self._mirror:
            value = self.state().get(market)
            if value is None:
                raise KeyError(market)
            self._mirror[market] = value
        value = self._mirror[market]
        if not isinstance(value, MarketState):
            raise KeyError(market)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._mirror)

    def __len__(self) -> int:
        return len(self._mirror)


class RiskFunction(KeyedBroadcastProcessFunction):  # type: ignore[misc]
    """Account inputs in, decisions (main output), violations and events (side outputs)."""

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self.mirror: dict[str, Any] = {}
        #: The default limits of accounts without their own (frozen models, shared),
        #: emptied when the defaults change.
        self.default_limits: dict[str, AccountLimits] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        pickled = Types.PICKLED_BYTE_ARRAY()
        self.account = runtime_context.get_state(ValueStateDescriptor("account", pickled))
        self.limits = runtime_context.get_state(ValueStateDescriptor("limits", pickled))
        # Not a MapState with a TTL: on the heap backend its clean-up copies whole maps
        # (jobs/risk_seen.py).
        seen = [
            runtime_context.get_map_state(
                MapStateDescriptor(f"seen_ids_{i}", Types.STRING(), Types.BOOLEAN())
            )
            for i in (0, 1)
        ]
        # The layout before AccountState, read once per account (savepoints of it).
        self.legacy = LegacyStates(
            portfolio=runtime_context.get_state(ValueStateDescriptor("portfolio", pickled)),
            seen_generation=runtime_context.get_state(
                ValueStateDescriptor("seen_generation", Types.LONG())
            ),
            timer=runtime_context.get_state(ValueStateDescriptor("timer", Types.LONG())),
            limits=self.limits,
        )
        self.generation = Generation(AccountState(Portfolio("")))
        self.seen = SeenIds((seen[0], seen[1]), self.generation, self.config.dedup_ttl_ms)
        self.mirror = {}
        self.default_limits = {}

    # -- broadcast side: market data and default limits ---------------------------------

    def process_broadcast_element(self, value: tuple[str, str, Any], ctx: Any) -> None:
        kind, key, payload = value
        state = ctx.get_broadcast_state(markets_descriptor())
        if kind == "limits":
            if isinstance(payload, AccountLimits):
                state.put(DEFAULTS_KEY, payload)
                self.mirror[DEFAULTS_KEY] = payload
                self.default_limits.clear()
            return
        candle = CandleView(key, *payload)
        market = self.mirror.get(key) or state.get(key)
        if market is None:
            market = MarketState(key, self.config.atr_period, self.config.adv_days)
        if market.on_candle(candle, self.config.atr_timeframe, self.config.adv_timeframe):
            state.put(key, market)
        self.mirror[key] = market

    # -- keyed side: one account --------------------------------------------------------

    def _state(self, account: str) -> AccountState:
        """The current account's state (one call; the seen ids then use its generation)."""
        state = self.account.value()
        if not isinstance(state, AccountState):
            state = migrate(account, self.legacy)
        self.generation = self.seen.generation = Generation(state)
        return state

    def _limits(self, account: str, state: AccountState, markets: _Markets) -> AccountLimits:
        if state.own_limits:
            own = self.limits.value()
            if isinstance(own, AccountLimits):
                return own
        cached = self.default_limits.get(account)
        if cached is not None:
            return cached
        if DEFAULTS_KEY not in self.mirror:  # after a restore: look once (None: no record)
            self.mirror[DEFAULTS_KEY] = markets.state().get(DEFAULTS_KEY)
        default = self.mirror[DEFAULTS_KEY]
        if isinstance(default, AccountLimits):
            limits = default.model_copy(update={"account": account})
        else:
            limits = AccountLimits.defaults(account, 946_684_800_000_000)
        if len(self.default_limits) >= _LIMITS_CACHE:
            self.default_limits.clear()
        self.default_limits[account] = limits
        return limits

    def _first_time(self, kind: str, ident: str) -> bool:
        return self.seen.first_time(f"{kind}:{ident}", time.time_ns() // 1_000_000)

    def process_element(self, value: tuple[str, str, Any], ctx: Any) -> Iterator[Any]:
        """``(kind, account, record)`` from :class:`InputDecoder`: records are validated."""
        kind, account, record = value
        state = self._state(account)
        if isinstance(record, InvalidProposal):
            if self._first_time(kind, record.proposal_id):
                yield invalid_decision_row(record, now_us())
            if self.generation.changed:
                self.account.update(state)
            return
        if isinstance(record, AccountLimits):  # before the rules read the limits
            self.limits.update(record)
            state.own_limits = True
        markets = _Markets(self.mirror, ctx)
        limits = self._limits(account, state, markets)
        portfolio = state.portfolio
        outcome = Outcome()
        if isinstance(record, OrderProposal):
            if not self._first_time(kind, record.proposal_id):
                if self.generation.changed:
                    self.account.update(state)
                return
            outcome = portfolio.refresh(markets, limits, record.proposal_id, record.created_ts_us)
            yield from self._emit(account, outcome)
            decided = now_us()
            yield decision_row(record, decide(record, portfolio, markets, limits, decided), decided)
            outcome = Outcome()
        elif isinstance(record, Fill):
            if self._first_time(kind, record.fill_id):
                outcome = portfolio.on_fill(record, markets, limits)
        elif isinstance(record, AccountCommand):
            if self._first_time(kind, record.command_id):
                outcome = portfolio.on_command(record, markets, limits)
        elif isinstance(record, BrokerPosition):
            outcome = portfolio.on_broker_position(record, markets, limits)
        yield from self._emit(account, outcome)
        self._schedule(state, ctx)
        self.account.update(state)

    def _emit(self, account: str, outcome: Outcome) -> Iterator[Any]:
        stamp = now_us()
        for v in outcome.violations:
            yield VIOLATIONS, violation_row(account, v, stamp)
        for e in outcome.events:
            yield EVENTS, event_row(account, e, stamp)

    def _schedule(self, state: AccountState, ctx: Any) -> None:
        """Keep one processing-time timer per account with open positions: the monitors
        then see price moves between the account's own events."""
        if state.timer_due is not None:
            return
        if any(p.qty != 0 for p in state.portfolio.positions.values()):
            due = ctx.timer_service().current_processing_time() + self.config.monitor_interval_ms
            ctx.timer_service().register_processing_time_timer(due)
            state.timer_due = due

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        state = self.account.value()
        if not isinstance(state, AccountState):
            portfolio = self.legacy.portfolio.value()  # a timer of the old layout
            if not isinstance(portfolio, Portfolio):
                return
            state = migrate(portfolio.account, self.legacy)
        state.timer_due = None
        portfolio = state.portfolio
        markets = _Markets(self.mirror, ctx)
        limits = self._limits(portfolio.account, state, markets)
        outcome = portfolio.refresh(markets, limits, f"monitor:{timestamp}", timestamp * 1000)
        yield from self._emit(portfolio.account, outcome)
        self._schedule(state, ctx)
        self.account.update(state)
