package io.ticklake.flink.dedup;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.runtime.state.KeyedStateBackend;
import org.apache.flink.runtime.state.StateInitializationContext;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.RowData;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps the first arrival of each key ({@link DedupKey}) for at least {@code ttl} of processing
 * time, like Flink SQL's {@code Deduplicate(keep=[FirstRow], order=[PROCTIME])} with a state
 * TTL, without a heap object per key.
 *
 * <ul>
 *   <li><b>Lookups</b> go to a {@link HashSet128} of 128-bit fingerprints in primitive arrays,
 *       which the garbage collector does not trace. It is transient: rebuilt from the state on
 *       restore.
 *   <li><b>State</b>: the stream is keyed by a bucket of the fingerprint; per bucket, a
 *       {@code MapState<Long, long[]>} of chunks, each the fingerprints first seen between two
 *       flushes: {@code [created at, hi0, lo0, hi1, lo1, ...]}. A bucket's new fingerprints are
 *       flushed into one chunk before each checkpoint barrier ({@link
 *       #prepareSnapshotPreBarrier}) and whenever {@code chunkSize} of them wait, so every
 *       record that passed before a barrier is in that checkpoint, and a state backend sees one
 *       write per bucket and checkpoint instead of one per trade (the changelog backend logs
 *       only those chunks; RocksDB stores them as a few large values).
 *   <li><b>Expiry</b>: a chunk is removed from the state at {@code created at + ttl}, and its
 *       fingerprints from the set (each at its own first arrival + ttl; after a restore, at its
 *       chunk's). So a key is kept at least {@code ttl} after its first arrival, and at most
 *       that plus the time between two flushes. {@code ttl <= 0}: kept for ever.
 * </ul>
 */
public final class DedupOperator extends AbstractStreamOperator<RowData>
        implements OneInputStreamOperator<RowData, RowData> {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(DedupOperator.class);
    static final String STATE_NAME = "dedup-chunks";

    private final DedupKey key;
    private final long ttlMillis;
    private final int chunkSize;

    private transient MapStateDescriptor<Long, long[]> descriptor;
    private transient MapState<Long, long[]> chunks;
    private transient HashSet128 seen;
    private transient long[][] pending;
    private transient int[] pendingLen;
    private transient ArrayDeque<long[]> expiries;
    private transient long nextChunkId;
    private transient long[] hash;
    private transient Counter duplicates;
    private transient Counter passed;

    public DedupOperator(DedupKey key, long ttlMillis, int chunkSize) {
        if (chunkSize < 1) {
            throw new IllegalArgumentException("chunkSize must be at least 1");
        }
        this.key = key;
        this.ttlMillis = ttlMillis;
        this.chunkSize = chunkSize;
    }

    @Override
    public void initializeState(StateInitializationContext context) throws Exception {
        super.initializeState(context);
        descriptor = new MapStateDescriptor<>(
                STATE_NAME, Types.LONG, PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO);
        chunks = context.getKeyedStateStore().getMapState(descriptor);
        seen = new HashSet128();
        pending = new long[key.buckets()][];
        pendingLen = new int[key.buckets()];
        expiries = new ArrayDeque<>();
        hash = new long[2];
        nextChunkId = 0;
        if (context.isRestored()) {
            restore();
        }
    }

    /** Rebuilds the set and the expiry queue from this instance's buckets' chunks. */
    private void restore() throws Exception {
        long started = System.nanoTime();
        long now = getProcessingTimeService().getCurrentProcessingTime();
        List<long[]> live = new ArrayList<>();
        List<long[]> expired = new ArrayList<>();
        long[] counts = new long[1];
        KeyedStateBackend<Integer> backend = getKeyedStateBackend();
        backend.applyToAllKeys(
                VoidNamespace.INSTANCE,
                VoidNamespaceSerializer.INSTANCE,
                descriptor,
                (bucket, state) -> {
                    for (Map.Entry<Long, long[]> e : state.entries()) {
                        long id = e.getKey();
                        long[] chunk = e.getValue();
                        nextChunkId = Math.max(nextChunkId, id + 1);
                        long expiresAt = expiresAt(chunk[0]);
                        if (expiresAt <= now) {
                            expired.add(new long[] {expiresAt, bucket, id});
                            continue;
                        }
                        live.add(new long[] {expiresAt, bucket, id});
                        for (int i = 1; i + 1 < chunk.length; i += 2) {
                            seen.restore(chunk[i], chunk[i + 1], expiresAt, now);
                        }
                        counts[0] += (chunk.length - 1) / 2;
                    }
                });
        for (long[] e : expired) {
            removeChunk((int) e[1], e[2]);
        }
        live.sort((a, b) -> Long.compare(a[0], b[0]));
        expiries.addAll(live);
        LOG.info(
                "dedup state restored: {} keys in {} chunks ({} expired chunks dropped), set of {} MB,"
                        + " {} ms",
                counts[0], live.size(), expired.size(), seen.bytes() >> 20,
                (System.nanoTime() - started) / 1_000_000);
    }

    @Override
    public void open() throws Exception {
        super.open();
        duplicates = getMetricGroup().counter("dedupDuplicatesDropped");
        passed = getMetricGroup().counter("dedupFirstSeen");
        Gauge<Long> keys = seen::used;
        Gauge<Long> bytes = seen::bytes;
        getMetricGroup().gauge("dedupKeys", keys);
        getMetricGroup().gauge("dedupSetBytes", bytes);
    }

    @Override
    public void processElement(StreamRecord<RowData> element) throws Exception {
        key.fingerprint(element.getValue(), hash);
        long now = getProcessingTimeService().getCurrentProcessingTime();
        if (!seen.addIfAbsent(hash[0], hash[1], expiresAt(now), now)) {
            duplicates.inc();
            return;
        }
        passed.inc();
        int bucket = key.bucketOf(hash[0]);
        long[] buf = pending[bucket];
        int len = pendingLen[bucket];
        if (buf == null) {
            buf = new long[1 + 2 * Math.min(chunkSize, 64)];
            pending[bucket] = buf;
            len = 1;
        } else if (len + 2 > buf.length) {
            buf = Arrays.copyOf(buf, Math.min(1 + 2 * chunkSize, 2 * buf.length));
            pending[bucket] = buf;
        }
        buf[len] = hash[0];
        buf[len + 1] = hash[1];
        pendingLen[bucket] = len + 2;
        if (pendingLen[bucket] >= 1 + 2 * chunkSize) {
            flush(bucket, now); // the current key is this record's bucket
            expire(now); // for jobs without checkpoints; the state is not used after this
        }
        output.collect(element);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        long now = getProcessingTimeService().getCurrentProcessingTime();
        for (int bucket = 0; bucket < pending.length; bucket++) {
            if (pendingLen[bucket] > 1) {
                setCurrentKey(bucket);
                flush(bucket, now);
            }
        }
        expire(now);
    }

    /** Writes the bucket's waiting fingerprints as one chunk (the current key is the bucket). */
    private void flush(int bucket, long now) throws Exception {
        long[] chunk = Arrays.copyOf(pending[bucket], pendingLen[bucket]);
        chunk[0] = now;
        long id = nextChunkId++;
        chunks.put(id, chunk);
        expiries.addLast(new long[] {expiresAt(now), bucket, id});
        pending[bucket] = null;
        pendingLen[bucket] = 0;
    }

    /** Removes the chunks whose time is up from the state (the set drops them by itself). */
    private void expire(long now) throws Exception {
        while (!expiries.isEmpty() && expiries.peekFirst()[0] <= now) {
            long[] e = expiries.pollFirst();
            removeChunk((int) e[1], e[2]);
        }
    }

    private void removeChunk(int bucket, long id) throws Exception {
        setCurrentKey(bucket);
        chunks.remove(id);
    }

    private long expiresAt(long time) {
        return ttlMillis > 0 ? time + ttlMillis : Long.MAX_VALUE;
    }
}
