"""Raw account inputs of the risk job -> validated records, answers and dead letters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ticklake.jobs.risk_inputs import (
    COMPONENT,
    INVALID_RECORD,
    UNDECODABLE,
    InvalidProposal,
    RawRecord,
    decode_input,
)
from ticklake.schemas.models import DeadLetter
from ticklake.schemas.risk import AccountLimits, Fill, OrderProposal
from ticklake.schemas.serde import decode, encode

T0 = 1_767_225_600_000_000
NOW = T0 + 5_000_000


def proposal(**changes: object) -> OrderProposal:
    values: dict[str, object] = {
        "proposal_id": "p-1", "account": "acct-1", "exchange": "BINANCE",
        "symbol": "ABC/USDT", "side": "buy", "source_id": "it", "signal_ts_us": T0,
        "created_ts_us": T0,
    } | changes  # fmt: skip
    return OrderProposal(**values)  # type: ignore[arg-type]


def raw(value: bytes | None, kind: str = "proposal", schema: bytes | None = None) -> RawRecord:
    return RawRecord(kind, b"acct-1", value, schema, "it.proposals", 2, 41, 1_767_225_601_234)


def test_a_valid_record_goes_to_the_rules_keyed_by_its_account() -> None:
    p = proposal(requested_qty=Decimal("7.5"))
    out = decode_input(raw(encode(p), schema=b"order_proposal.v1"), NOW)
    assert out.dead_letter is None
    assert out.record == ("proposal", "acct-1", p)
    assert not out.is_default_limits


def test_undecodable_bytes_become_a_dead_letter_with_the_raw_record() -> None:
    garbage = b"\x00\xff\x13garbage"
    out = decode_input(raw(garbage), NOW)
    assert out.record is None
    letter = out.dead_letter
    assert letter is not None
    assert (letter.source_component, letter.reason_code) == (COMPONENT, UNDECODABLE)
    assert (letter.payload, letter.original_key) == (garbage, b"acct-1")
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "it.proposals", 2, 41,
    )  # fmt: skip
    assert letter.original_ts_us == 1_767_225_601_234_000
    assert letter.dead_lettered_ts_us == NOW
    assert decode(DeadLetter, encode(letter)) == letter  # fits its own schema


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        (encode(proposal())[:-3], None),  # truncated
        (encode(proposal()) + b"\x02", None),  # trailing bytes
        (encode(proposal()), b"fill.v1"),  # another topic's message
        (encode(proposal()), b"order_proposal.v99"),  # a writer newer than the job
        (encode(proposal()), b"\xff\xfe"),  # a header that is not text
    ],
)
def test_bytes_of_another_shape_are_undecodable(value: bytes, schema: bytes | None) -> None:
    out = decode_input(raw(value, schema=schema), NOW)
    assert out.record is None
    assert out.dead_letter is not None and out.dead_letter.reason_code == UNDECODABLE


def test_an_invalid_proposal_is_answered_and_dead_lettered() -> None:
    bad = OrderProposal.model_construct(
        proposal_id="p-9", account="acct-1", exchange="BINANCE", symbol="ABC/USDT",
        side="buy", requested_qty=Decimal(-5), asset_group=None, source_id="it",
        signal_ts_us=T0, created_ts_us=T0,
    )  # fmt: skip
    out = decode_input(raw(encode(bad)), NOW)
    assert out.dead_letter is not None
    assert out.dead_letter.reason_code == INVALID_RECORD
    assert "requested_qty" in out.dead_letter.reason_message
    assert out.record is not None
    kind, account, answer = out.record
    assert (kind, account) == ("proposal", "acct-1")
    assert isinstance(answer, InvalidProposal)
    assert answer.proposal_id == "p-9" and answer.values["requested_qty"] == Decimal(-5)
    assert answer.problem.startswith("requested_qty: ")


def test_a_proposal_no_valid_decision_can_repeat_is_only_dead_lettered() -> None:
    bad = OrderProposal.model_construct(
        proposal_id="p-9", account="acct-1", exchange="BINANCE", symbol="ABC/USDT",
        side="hold", requested_qty=None, asset_group=None, source_id="it",
        signal_ts_us=T0, created_ts_us=T0,
    )  # fmt: skip
    out = decode_input(raw(encode(bad)), NOW)
    assert out.record is None
    assert out.dead_letter is not None and out.dead_letter.reason_code == INVALID_RECORD
    assert out.dead_letter.reason_message.startswith("invalid order_proposal: side: ")


def test_other_invalid_inputs_are_only_dead_lettered() -> None:
    bad = Fill.model_construct(
        fill_id="f-1", account="acct-1", exchange="BINANCE", symbol="ABC/USDT", side="buy",
        qty=Decimal(0), price=Decimal(100), fee=Decimal(0), asset_group=None,
        fill_ts_us=T0, receipt_ts_us=T0,
    )  # fmt: skip
    out = decode_input(raw(encode(bad), kind="fill"), NOW)
    assert out.record is None
    assert out.dead_letter is not None and out.dead_letter.reason_code == INVALID_RECORD
    assert out.dead_letter.reason_message.startswith("invalid fill: qty: ")


def test_default_limits_tombstones_and_unknown_kinds() -> None:
    defaults = AccountLimits.defaults("*", T0)
    out = decode_input(raw(encode(defaults), kind="limits"), NOW)
    assert out.is_default_limits and out.record == ("limits", "*", defaults)
    own = decode_input(raw(encode(AccountLimits.defaults("acct-1", T0)), kind="limits"), NOW)
    assert own.record is not None and not own.is_default_limits
    assert decode_input(raw(None, kind="limits"), NOW) == decode_input(raw(None), NOW)
    assert decode_input(raw(None), NOW).record is None
    assert decode_input(raw(None), NOW).dead_letter is None
    odd = decode_input(raw(b"x", kind="nonsense"), NOW)
    assert odd.dead_letter is not None and odd.dead_letter.reason_code == UNDECODABLE
