"""Take the Kafka records that are ready now, waiting only for the first one.

confluent-kafka's ``Consumer.consume(num_messages, timeout)`` (librdkafka's
``rd_kafka_consume_batch_queue``) returns when ``num_messages`` records are in hand **or the
timeout has passed**, not when the first record arrives. Below ``num_messages`` records per
``timeout`` it therefore holds every record for up to ``timeout``: ``consume(1000, 0.1)``
adds 50 ms at the median and 100 ms at the tail to a stream of 100 records/s (measured
by ``ticklake bench kafka-poll``). :func:`consume_ready` keeps the batching without
that wait: it blocks in ``poll`` for one record, then drains what is already queued.
"""

from __future__ import annotations

from typing import Any, Protocol


class BatchConsumer(Protocol):
    """The two calls of ``confluent_kafka.Consumer`` this module uses."""

    def poll(self, timeout: float = ...) -> Any: ...

    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Any]: ...


def consume_ready(consumer: BatchConsumer, max_messages: int, timeout: float) -> list[Any]:
    """Up to ``max_messages`` records (or error events): the first one waits at most
    ``timeout`` seconds, the rest are those already fetched (no further wait).

    An empty list means nothing arrived within ``timeout``. As with ``consume``, each
    message's ``error()`` must be checked by the caller.
    """
    if max_messages < 1:
        raise ValueError(f"max_messages must be at least 1, got {max_messages}")
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages == 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, 0)]
