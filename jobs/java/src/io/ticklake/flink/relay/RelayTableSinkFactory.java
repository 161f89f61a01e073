package io.ticklake.flink.relay;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.catalog.ResolvedSchema;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.Projection;
import org.apache.flink.table.connector.format.EncodingFormat;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.connector.sink.SinkV2Provider;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DynamicTableSinkFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.factories.SerializationFormatFactory;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalTypeFamily;
import org.apache.flink.types.RowKind;

/**
 * {@code 'connector' = 'ticklake-relay'}: a table whose rows are published on the relay's
 * XSUB port ({@link RelaySink}), e.g.
 *
 * <pre>
 * CREATE TABLE live_trades_relay (..., `market` STRING NOT NULL) WITH (
 *   'connector' = 'ticklake-relay', 'endpoint' = 'tcp://127.0.0.1:5557',
 *   'key.field' = 'market', 'data-type' = 'tick', 'format' = 'avro')
 * </pre>
 *
 * <p>{@code key.field} names the STRING column that routes each row (it is not part of the
 * payload); {@code data-type} is the bridge's template ({@code tick}, {@code ohlc:{1}});
 * {@code format} encodes the other columns. A table with a primary key accepts an updating
 * (upsert) stream, as {@code upsert-kafka} does; one without, inserts only.
 */
public final class RelayTableSinkFactory implements DynamicTableSinkFactory {
    public static final String IDENTIFIER = "ticklake-relay";

    public static final ConfigOption<String> ENDPOINT = ConfigOptions.key("endpoint")
            .stringType().noDefaultValue()
            .withDescription("the relay's XSUB (publish) endpoint, e.g. tcp://127.0.0.1:5557");
    public static final ConfigOption<String> KEY_FIELD = ConfigOptions.key("key.field")
            .stringType().noDefaultValue()
            .withDescription("STRING column that routes the row (not in the payload)");
    public static final ConfigOption<String> DATA_TYPE = ConfigOptions.key("data-type")
            .stringType().noDefaultValue()
            .withDescription("relay data type template: tick, ohlc:{1} ({1}: 2nd key part)");
    public static final ConfigOption<Integer> SEND_HWM = ConfigOptions.key("sink.send-hwm")
            .intType().defaultValue(100_000)
            .withDescription("ZeroMQ send high-water mark (messages queued per peer)");
    public static final ConfigOption<Integer> LVC_MAX_TOPICS = ConfigOptions.key("lvc.max-topics")
            .intType().defaultValue(100_000)
            .withDescription("topics kept in the last-value cache (least recently updated evicted)");

    public static final ConfigOption<Duration> READY_TIMEOUT = ConfigOptions.key("ready-timeout")
            .durationType().defaultValue(Duration.ofSeconds(5))
            .withDescription("how long a writer waits at start for the relay's subscription");

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        Set<ConfigOption<?>> options = new HashSet<>();
        options.add(ENDPOINT);
        options.add(KEY_FIELD);
        options.add(DATA_TYPE);
        options.add(FactoryUtil.FORMAT);
        return options;
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        Set<ConfigOption<?>> options = new HashSet<>();
        options.add(SEND_HWM);
        options.add(LVC_MAX_TOPICS);
        options.add(READY_TIMEOUT);
        return options;
    }

    @Override
    public DynamicTableSink createDynamicTableSink(Context context) {
        FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
        EncodingFormat<SerializationSchema<RowData>> format =
                helper.discoverEncodingFormat(SerializationFormatFactory.class, FactoryUtil.FORMAT);
        helper.validate();
        ReadableConfig options = helper.getOptions();
        String endpoint = options.get(ENDPOINT);
        if (!endpoint.matches("(tcp|ipc|inproc)://.+")) {
            throw new ValidationException(
                    "'endpoint' = '" + endpoint + "' must be a ZeroMQ endpoint, e.g. tcp://127.0.0.1:5557");
        }
        RelayRoute route;
        try {
            route = new RelayRoute(options.get(DATA_TYPE));
        } catch (IllegalArgumentException e) {
            throw new ValidationException("'data-type': " + e.getMessage(), e);
        }
        DataType physical = context.getPhysicalRowDataType();
        List<String> names = DataType.getFieldNames(physical);
        String keyField = options.get(KEY_FIELD);
        int keyIndex = names.indexOf(keyField);
        if (keyIndex < 0) {
            throw new ValidationException(
                    "'key.field' = '" + keyField + "' is not a physical column of " + names);
        }
        if (!DataType.getFieldDataTypes(physical).get(keyIndex).getLogicalType()
                .is(LogicalTypeFamily.CHARACTER_STRING)) {
            throw new ValidationException("'key.field' column '" + keyField + "' must be a STRING");
        }
        List<Integer> values = new ArrayList<>();
        for (int i = 0; i < names.size(); i++) {
            if (i != keyIndex) {
                values.add(i);
            }
        }
        int[] valueIndexes = values.stream().mapToInt(Integer::intValue).toArray();
        ResolvedSchema schema = context.getCatalogTable().getResolvedSchema();
        return new Table(
                endpoint, route, keyIndex, valueIndexes, Projection.of(valueIndexes).project(physical),
                format, options.get(SEND_HWM), options.get(LVC_MAX_TOPICS),
                options.get(READY_TIMEOUT).toMillis(), schema.getPrimaryKey().isPresent());
    }

    /** The planner's view of one relay table. */
    private static final class Table implements DynamicTableSink {
        private final String endpoint;
        private final RelayRoute route;
        private final int keyIndex;
        private final int[] valueIndexes;
        private final DataType valueType;
        private final EncodingFormat<SerializationSchema<RowData>> format;
        private final int sendHighWaterMark;
        private final int maxCachedTopics;
        private final long readyTimeoutMs;
        private final boolean upsert;

        Table(String endpoint, RelayRoute route, int keyIndex, int[] valueIndexes, DataType valueType,
                EncodingFormat<SerializationSchema<RowData>> format, int sendHighWaterMark,
                int maxCachedTopics, long readyTimeoutMs, boolean upsert) {
            this.endpoint = endpoint;
            this.route = route;
            this.keyIndex = keyIndex;
            this.valueIndexes = valueIndexes;
            this.valueType = valueType;
            this.format = format;
            this.sendHighWaterMark = sendHighWaterMark;
            this.maxCachedTopics = maxCachedTopics;
            this.readyTimeoutMs = readyTimeoutMs;
            this.upsert = upsert;
        }

        @Override
        public ChangelogMode getChangelogMode(ChangelogMode requestedMode) {
            if (!upsert) {
                return ChangelogMode.insertOnly();
            }
            return ChangelogMode.newBuilder()
                    .addContainedKind(RowKind.INSERT)
                    .addContainedKind(RowKind.UPDATE_AFTER)
                    .addContainedKind(RowKind.DELETE)
                    .build();
        }

        @Override
        public SinkRuntimeProvider getSinkRuntimeProvider(Context context) {
            SerializationSchema<RowData> serializer = format.createRuntimeEncoder(context, valueType);
            return SinkV2Provider.of(new RelaySink(
                    endpoint, route, keyIndex, valueIndexes, serializer, sendHighWaterMark,
                    maxCachedTopics, readyTimeoutMs));
        }

        @Override
        public DynamicTableSink copy() {
            return new Table(endpoint, route, keyIndex, valueIndexes, valueType, format,
                    sendHighWaterMark, maxCachedTopics, readyTimeoutMs, upsert);
        }

        @Override
        public String asSummaryString() {
            return "ticklake relay (" + route.template() + ")";
        }
    }
}
