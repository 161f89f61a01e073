"""``consume_ready`` on a real broker: it returns what is there instead of waiting for a batch.

The bridge and the risk forwarder read with it; ``Consumer.consume(n, timeout)`` would hold
every record until ``n`` arrived or ``timeout`` passed (librdkafka's batch semantics).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ticklake.schemas.kafka_poll import consume_ready
from ticklake.settings import Connections

#: Far longer than a local broker takes to deliver one record: a call that waits for a full
#: batch takes all of it, a call that returns on the first record takes a small part of it.
LONG_WAIT_S = 20.0


@pytest.fixture
def topic_consumer(conn: Connections) -> Iterator[tuple[str, Any, Any]]:
    bootstrap = conn.kafka.bootstrap_servers
    topic = f"test-kafka-poll-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    try:
        yield topic, producer, consumer
    finally:
        consumer.close()
        admin.delete_topics([topic])


def test_one_record_returns_without_waiting_for_the_batch_or_the_timeout(
    topic_consumer: tuple[str, Any, Any],
) -> None:
    topic, producer, consumer = topic_consumer
    assert consume_ready(consumer, 1000, 0.5) == []  # nothing there: waits, then empty
    producer.produce(topic, b"one")
    producer.flush(30)
    t0 = time.monotonic()
    got = consume_ready(consumer, 1000, LONG_WAIT_S)
    took = time.monotonic() - t0
    assert [m.value() for m in got if m.error() is None] == [b"one"]
    # consume(1000, LONG_WAIT_S) would only return after LONG_WAIT_S with one record.
    assert took < LONG_WAIT_S / 2, f"waited {took:.1f}s for a record that was there"


def test_drains_what_is_fetched_in_order_and_no_more_than_asked(
    topic_consumer: tuple[str, Any, Any],
) -> None:
    topic, producer, consumer = topic_consumer
    sent = [f"r{i}".encode() for i in range(500)]
    for value in sent:
        producer.produce(topic, value)
    producer.flush(30)
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < len(sent) and time.monotonic() < deadline:
        batch = consume_ready(consumer, 64, 1.0)
        assert len(batch) <= 64
        got += [m.value() for m in batch if m.error() is None]
    assert got == sent
    assert consume_ready(consumer, 1, 0.2) == []


def test_max_messages_must_be_positive(topic_consumer: tuple[str, Any, Any]) -> None:
    _, _, consumer = topic_consumer
    with pytest.raises(ValueError, match="at least 1"):
        consume_ready(consumer, 0, 0.1)
