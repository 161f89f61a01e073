package io.ticklake.flink.dedup;

import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.TableException;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.ProviderContext;
import org.apache.flink.table.connector.source.DataStreamScanProvider;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.connector.source.ScanTableSource;
import org.apache.flink.table.connector.source.abilities.SupportsWatermarkPushDown;
import org.apache.flink.table.data.RowData;

/**
 * A Kafka table source ({@code 'connector' = 'kafka'}, wrapped) whose rows pass a {@link
 * DedupOperator} before the query sees them: {@code 'connector' = 'ticklake-kafka-dedup'}
 * ({@link DedupKafkaTableFactory}).
 *
 * <p>The watermark strategy of the table's {@code WATERMARK} clause is pushed into the Kafka
 * source as usual (per-partition watermarks, idleness), and the watermarks pass the dedup
 * operator unchanged. Projection and metadata are not pushed down: the operator reads its key
 * fields at fixed positions of the physical row.
 */
final class DedupTableSource implements ScanTableSource, SupportsWatermarkPushDown {
    private final DynamicTableSource inner;
    private final List<String> fieldNames;
    private final int[] fields;
    private final Duration ttl;
    private final int buckets;
    private final int chunkSize;

    DedupTableSource(
            DynamicTableSource inner,
            List<String> fieldNames,
            int[] fields,
            Duration ttl,
            int buckets,
            int chunkSize) {
        if (!(inner instanceof ScanTableSource)) {
            throw new TableException("the wrapped source is not a scan source: " + inner);
        }
        this.inner = inner;
        this.fieldNames = fieldNames;
        this.fields = Arrays.copyOf(fields, fields.length);
        this.ttl = ttl;
        this.buckets = buckets;
        this.chunkSize = chunkSize;
    }

    @Override
    public ChangelogMode getChangelogMode() {
        return ((ScanTableSource) inner).getChangelogMode();
    }

    @Override
    public ScanRuntimeProvider getScanRuntimeProvider(ScanContext context) {
        ScanRuntimeProvider provider = ((ScanTableSource) inner).getScanRuntimeProvider(context);
        if (!(provider instanceof DataStreamScanProvider)) {
            throw new TableException(
                    "ticklake-kafka-dedup needs the Kafka connector's DataStreamScanProvider, got "
                            + provider.getClass().getName());
        }
        DataStreamScanProvider kafka = (DataStreamScanProvider) provider;
        DedupKey key = new DedupKey(fields, buckets);
        DedupOperator operator = new DedupOperator(key, ttl.toMillis(), chunkSize);
        String name = "Deduplicate(key=" + fieldNames + ", ttl=" + ttl + ")";
        return new DataStreamScanProvider() {
            @Override
            public DataStream<RowData> produceDataStream(
                    ProviderContext providerContext, StreamExecutionEnvironment env) {
                DataStream<RowData> in = kafka.produceDataStream(providerContext, env);
                SingleOutputStreamOperator<RowData> out =
                        in.keyBy(key, Types.INT).transform(name, in.getType(), operator);
                providerContext.generateUid("dedup").ifPresent(out::uid);
                return out;
            }

            @Override
            public boolean isBounded() {
                return kafka.isBounded();
            }
        };
    }

    @Override
    public void applyWatermark(WatermarkStrategy<RowData> watermarkStrategy) {
        if (!(inner instanceof SupportsWatermarkPushDown)) {
            throw new TableException("the wrapped source does not take a watermark strategy");
        }
        ((SupportsWatermarkPushDown) inner).applyWatermark(watermarkStrategy);
    }

    @Override
    public DynamicTableSource copy() {
        return new DedupTableSource(inner.copy(), fieldNames, fields, ttl, buckets, chunkSize);
    }

    @Override
    public String asSummaryString() {
        return "Deduplicated " + inner.asSummaryString();
    }
}
