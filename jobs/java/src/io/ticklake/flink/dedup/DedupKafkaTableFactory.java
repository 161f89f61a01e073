package io.ticklake.flink.dedup;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.catalog.Column;
import org.apache.flink.table.catalog.ResolvedCatalogTable;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.factories.DynamicTableSourceFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.logical.LogicalTypeFamily;

/**
 * {@code 'connector' = 'ticklake-kafka-dedup'}: a Kafka topic read as with {@code 'connector' =
 * 'kafka'} (every other option is the Kafka connector's), each key kept once ({@link
 * DedupOperator}), e.g.
 *
 * <pre>
 * CREATE TABLE raw_trades (...) WITH (
 *   'connector' = 'ticklake-kafka-dedup', 'dedup.key' = 'exchange;symbol;trade_id',
 *   'dedup.ttl' = '1 h', 'topic' = 'trades.raw', 'format' = 'ticklake-avro', ...)
 * </pre>
 *
 * <p>It does what {@code ROW_NUMBER() OVER (PARTITION BY key ORDER BY PROCTIME()) = 1} with
 * {@code table.exec.state.ttl} does, with about a tenth of the memory per key and no heap
 * object per key (docs/stream-jobs.md section 3).
 */
public final class DedupKafkaTableFactory implements DynamicTableSourceFactory {
    public static final String IDENTIFIER = "ticklake-kafka-dedup";

    public static final ConfigOption<List<String>> KEY = ConfigOptions.key("dedup.key")
            .stringType().asList().noDefaultValue()
            .withDescription("the STRING columns whose values identify a row, ';'-separated");
    public static final ConfigOption<Duration> TTL = ConfigOptions.key("dedup.ttl")
            .durationType().defaultValue(Duration.ZERO)
            .withDescription("keep a key at least this long after its first arrival (0: always)");
    public static final ConfigOption<Integer> BUCKETS = ConfigOptions.key("dedup.buckets")
            .intType().defaultValue(256)
            .withDescription("keyed-state buckets of the keys (at least the parallelism)");
    public static final ConfigOption<Integer> CHUNK_SIZE = ConfigOptions.key("dedup.chunk-size")
            .intType().defaultValue(65_536)
            .withDescription("new keys of a bucket written to the state at most this many at once");

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Collections.singleton(KEY);
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        // Every other option is the Kafka connector's, validated by its factory.
        return Set.of(TTL, BUCKETS, CHUNK_SIZE);
    }

    @Override
    public DynamicTableSource createDynamicTableSource(Context context) {
        ResolvedCatalogTable table = context.getCatalogTable();
        Configuration dedup = new Configuration();
        Map<String, String> kafka = new HashMap<>();
        for (Map.Entry<String, String> e : table.getOptions().entrySet()) {
            if (e.getKey().startsWith("dedup.")) {
                dedup.setString(e.getKey(), e.getValue());
            } else {
                kafka.put(e.getKey(), e.getValue());
            }
        }
        kafka.put(FactoryUtil.CONNECTOR.key(), "kafka");
        List<String> key = dedup.getOptional(KEY).orElseThrow(() -> new ValidationException(
                IDENTIFIER + " needs 'dedup.key': the columns that identify a row, e.g. "
                        + "'exchange;symbol;trade_id'"));
        Duration ttl = dedup.get(TTL);
        int buckets = dedup.get(BUCKETS);
        int chunkSize = dedup.get(CHUNK_SIZE);
        if (ttl.isNegative() || buckets < 1 || chunkSize < 1) {
            throw new ValidationException(IDENTIFIER
                    + ": 'dedup.ttl' must be >= 0, 'dedup.buckets' and 'dedup.chunk-size' >= 1");
        }
        int[] fields = keyFields(table, key);
        DynamicTableSource source = FactoryUtil.createDynamicTableSource(
                null,
                context.getObjectIdentifier(),
                table.copy(kafka),
                context.getEnrichmentOptions(),
                context.getConfiguration(),
                context.getClassLoader(),
                context.isTemporary());
        return new DedupTableSource(source, key, fields, ttl, buckets, chunkSize);
    }

    /** Positions of the key columns in the physical row (which the Kafka source produces). */
    private static int[] keyFields(ResolvedCatalogTable table, List<String> key) {
        List<String> physical = new ArrayList<>();
        List<Column> columns = new ArrayList<>();
        for (Column c : table.getResolvedSchema().getColumns()) {
            if (c.isPhysical()) {
                physical.add(c.getName());
                columns.add(c);
            }
        }
        int[] fields = new int[key.size()];
        for (int i = 0; i < fields.length; i++) {
            int at = physical.indexOf(key.get(i).trim());
            if (at < 0) {
                throw new ValidationException(IDENTIFIER + ": 'dedup.key' column '" + key.get(i)
                        + "' is not a physical column of the table (" + physical + ")");
            }
            if (!columns.get(at).getDataType().getLogicalType()
                    .is(LogicalTypeFamily.CHARACTER_STRING)) {
                throw new ValidationException(IDENTIFIER + ": 'dedup.key' column '" + key.get(i)
                        + "' must be a STRING column, not "
                        + columns.get(at).getDataType());
            }
            fields[i] = at;
        }
        return fields;
    }
}
