package io.ticklake.flink.relay;

import java.io.IOException;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.utils.ProjectedRowData;
import org.apache.flink.types.RowKind;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Rows -> relay messages: the key column routes (see {@link RelayRoute}), the other columns
 * are the payload in the table's format (the schema's Avro). Fire-and-forget, as the live
 * outputs are: nothing is retried or checkpointed (the exactly-once copies are in Kafka and
 * Iceberg). An update-before or a delete is skipped (an upsert table keeps the newest value
 * per key; the relay's last-value cache does the same per topic).
 */
@SuppressWarnings("deprecation") // Sink#createWriter(InitContext): the 1.20 abstract method
public final class RelaySink implements Sink<RowData> {
    private static final long serialVersionUID = 1L;

    private final String endpoint;
    private final RelayRoute route;
    private final int keyIndex;
    private final int[] valueIndexes;
    private final SerializationSchema<RowData> serializer;
    private final int sendHighWaterMark;
    private final int maxCachedTopics;
    private final long readyTimeoutMs;

    public RelaySink(
            String endpoint,
            RelayRoute route,
            int keyIndex,
            int[] valueIndexes,
            SerializationSchema<RowData> serializer,
            int sendHighWaterMark,
            int maxCachedTopics,
            long readyTimeoutMs) {
        this.endpoint = endpoint;
        this.route = route;
        this.keyIndex = keyIndex;
        this.valueIndexes = valueIndexes.clone();
        this.serializer = serializer;
        this.sendHighWaterMark = sendHighWaterMark;
        this.maxCachedTopics = maxCachedTopics;
        this.readyTimeoutMs = readyTimeoutMs;
    }

    @Override
    public SinkWriter<RowData> createWriter(InitContext context) throws IOException {
        try {
            serializer.open(context.asSerializationSchemaInitializationContext());
        } catch (Exception e) {
            throw new IOException("could not open the relay sink's serializer", e);
        }
        return new Writer(context.metricGroup());
    }

    private final class Writer implements SinkWriter<RowData> {
        private final Logger log = LoggerFactory.getLogger(RelaySink.class);
        private final RelayPublisher publisher;
        private final ProjectedRowData value = ProjectedRowData.from(valueIndexes);
        private final Counter sent;
        private final Counter unroutable;
        private boolean warnedUnroutable;

        Writer(MetricGroup metrics) {
            publisher = RelayPublisher.acquire(endpoint, sendHighWaterMark, maxCachedTopics);
            MetricGroup group = metrics.addGroup("ticklake_relay");
            sent = group.counter("published");
            unroutable = group.counter("unroutable");
            group.gauge("replayed", publisher::replayed);
            group.gauge("subscriptions", publisher::subscriptions);
            group.gauge("cachedTopics", publisher::cachedTopics);
            boolean ready;
            try {
                ready = publisher.awaitRelay(readyTimeoutMs);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                ready = false;
            }
            if (ready) {
                log.info("relay sink publishing to {} (data type {})", endpoint, route.template());
            } else {
                log.warn("relay sink: no relay subscribed at {} within {} ms; publishing anyway "
                        + "(ZeroMQ drops messages until the relay connects, then delivers)",
                        endpoint, readyTimeoutMs);
            }
        }

        @Override
        public void write(RowData row, Context context) {
            RowKind kind = row.getRowKind();
            if (kind == RowKind.UPDATE_BEFORE || kind == RowKind.DELETE) {
                return;
            }
            String topic;
            try {
                topic = route.topic(row.isNullAt(keyIndex) ? null : row.getString(keyIndex).toString());
            } catch (RelayRoute.RouteException e) {
                unroutable.inc();
                if (!warnedUnroutable) { // the job's SQL builds the keys: this is a bug, say it once
                    warnedUnroutable = true;
                    log.warn("relay sink skips unroutable rows (counted in ticklake_relay.unroutable): {}",
                            e.getMessage());
                }
                return;
            }
            value.replaceRow(row);
            publisher.publish(topic, serializer.serialize(value));
            sent.inc();
        }

        @Override
        public void flush(boolean endOfInput) {
            publisher.serve();
        }

        @Override
        public void close() {
            publisher.close();
        }
    }
}
