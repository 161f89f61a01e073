"""How many dedup keys the job's heap holds, and the trade rate its TTL allows.

On the embedded MiniCluster the dedup state lives on the JVM heap (the heap state backend,
with the changelog backend over it in unbounded runs). Each remembered trade key costs
about ``DEDUP_KEY_HEAP_BYTES`` of live heap, and the state holds ``rate x TTL`` keys in an
unbounded run (every distinct trade in a bounded run that keeps every key). A job whose
keys outgrow the heap spends its time collecting garbage and then fails with an
``OutOfMemoryError``; this module tells the job's log, at start, where that limit lies.

The figure was measured (docs/stream-jobs.md section 3, bench/README.md, session 10):
live-object class histograms (``jcmd <pid> GC.class_histogram``) of the job at 10,000
trades/s grew by 256.7 MB for 849,474 new keys, 302 bytes each: the key's binary row (its
byte array, ``MemorySegment`` and wrappers), the state map entry, the TTL wrapper.

That is Flink SQL's deduplication (``--dedup sql``). ticklake's dedup operator (``--dedup
fingerprints``, the default; ``jobs/java/.../dedup``) keeps a key as a 128-bit fingerprint in
primitive arrays: 24 bytes per slot of a hash set kept 35-70% full, plus 16 bytes in the
state's chunks, so at most ``FINGERPRINT_KEY_BYTES``, and no object per key for the garbage
collector to trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

#: Live heap per dedup key, measured (see the module docstring); rounded up.
DEDUP_KEY_HEAP_BYTES = 310
#: Heap per key of ticklake's dedup operator, by construction: a 24-byte slot at a load of
#: at least 35% (69 bytes) and the key's 16 bytes in its state chunk; rounded up.
FINGERPRINT_KEY_BYTES = 90
#: The design's trade rate (the freshness target's): the rate a job's heap is measured
#: against; an unbounded job that cannot hold it for its TTL is told so with a warning.
DESIGN_RATE = 10_000
#: The share of the heap the dedup state may take: the rest is the window state, the
#: records in flight, the Iceberg writers' buffers, and the collector's headroom.
DEDUP_HEAP_SHARE = 0.5


@dataclass(frozen=True)
class DedupCapacity:
    """What a heap of ``max_heap_bytes`` holds of dedup state."""

    max_heap_bytes: int
    ttl: timedelta
    #: Heap per key: ``DEDUP_KEY_HEAP_BYTES`` (Flink SQL's deduplication) or
    #: ``FINGERPRINT_KEY_BYTES`` (ticklake's dedup operator).
    key_bytes: int = DEDUP_KEY_HEAP_BYTES

    @property
    def keys(self) -> int:
        """Keys that fit in the dedup's share of the heap."""
        return int(self.max_heap_bytes * DEDUP_HEAP_SHARE) // self.key_bytes

    @property
    def sustained_rate(self) -> float | None:
        """Trades/s the TTL allows for ever (``None``: no TTL, the keys only grow)."""
        seconds = self.ttl.total_seconds()
        return self.keys / seconds if seconds > 0 else None

    def heap_for(self, rate: float) -> int:
        """The max heap (bytes) that ``rate`` trades/s needs under this TTL."""
        keys = rate * self.ttl.total_seconds()
        return math.ceil(keys * self.key_bytes / DEDUP_HEAP_SHARE)

    def describe(self) -> str:
        """One log line: the heap, the keys it holds, the rate the TTL allows."""
        heap = f"{self.max_heap_bytes / 2**30:.1f} GiB"
        head = (
            f"dedup state on the heap: about {self.key_bytes} B per trade key; "
            f"half of this JVM's {heap} max heap holds about {self.keys / 1e6:.1f}M keys"
        )
        rate = self.sustained_rate
        if rate is None:
            return (
                f"{head}; no TTL: every distinct trade of the run stays, so a run of more "
                "trades needs a larger heap (--embedded-jvm-options=-Xmx...), a --dedup-ttl "
                "or a split range"
            )
        return (
            f"{head}; with the {_duration(self.ttl)} TTL that is {rate:,.0f} trades/s "
            f"sustained ({DESIGN_RATE:,} trades/s needs "
            f"-Xmx{math.ceil(self.heap_for(DESIGN_RATE) / 2**30)}g): "
            "above it, give a larger heap (--embedded-jvm-options=-Xmx...), a shorter "
            "--dedup-ttl, or run on the cluster's RocksDB backend"
        )


def _duration(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s and s % size == 0:
            return f"{s // size}{unit}"
    return f"{d.total_seconds():g}s"
