/*
 * A patch of Apache Iceberg 1.10.1's class of the same name (Apache License 2.0), loaded in
 * its place: ticklake puts its patches jar before the Iceberg runtime on the classpath
 * (ticklake.stack.components.flink.patches_jar, deploy/docker/flink.Dockerfile).
 *
 * Why: with write distribution `hash`, Flink calls this selector twice per row, once to pick
 * the writer (KeyGroupStreamPartitioner) and once more in the writer's task
 * (setKeyContextElement). Iceberg's version returns PartitionKey.toPath(): every row
 * URL-encodes the partition values and formats its day with String.format. In the dedup +
 * OHLC job at 10,000 trades/s that was 15% of the job's Java CPU samples and 22% of its
 * allocation (bench/README.md, sessions 10 and 12).
 *
 * What changes: only the String returned. The key routes rows to writers and nothing else
 * (the writer keeps no keyed state), so any String that is equal for rows of one partition
 * and, for good balance, different between partitions serves. This one joins the partition
 * values with a type tag and, for strings, their length, so distinct partitions of the
 * common types get distinct keys; values of other types fall back to Iceberg's own path.
 * The constructor and getKey are those of Iceberg's class.
 */
package org.apache.iceberg.flink.sink;

import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.logical.RowType;
import org.apache.iceberg.PartitionKey;
import org.apache.iceberg.PartitionSpec;
import org.apache.iceberg.Schema;
import org.apache.iceberg.flink.RowDataWrapper;

/**
 * Shuffle by partition key, so that each partition is written by one task (fewer small
 * files with the fan-out writer), at a small cost per row.
 */
public class PartitionKeySelector implements KeySelector<RowData, String> {
    private static final long serialVersionUID = 1L;

    private final Schema schema;
    private final PartitionKey partitionKey;
    private final RowType flinkSchema;

    private transient RowDataWrapper rowDataWrapper;
    private transient StringBuilder key;

    public PartitionKeySelector(PartitionSpec spec, Schema schema, RowType flinkSchema) {
        this.schema = schema;
        this.partitionKey = new PartitionKey(spec, schema);
        this.flinkSchema = flinkSchema;
    }

    /** Built lazily: some of its members are not serializable. */
    private RowDataWrapper lazyRowDataWrapper() {
        if (rowDataWrapper == null) {
            rowDataWrapper = new RowDataWrapper(flinkSchema, schema.asStruct());
        }
        return rowDataWrapper;
    }

    @Override
    public String getKey(RowData row) {
        partitionKey.partition(lazyRowDataWrapper().wrap(row));
        StringBuilder sb = key;
        if (sb == null) {
            sb = new StringBuilder(64);
            key = sb;
        }
        sb.setLength(0);
        for (int i = 0; i < partitionKey.size(); i++) {
            Object value = partitionKey.get(i, Object.class);
            if (value == null) {
                sb.append('n');
            } else if (value instanceof Integer) {
                sb.append('i').append(((Integer) value).intValue()).append(';');
            } else if (value instanceof Long) {
                sb.append('l').append(((Long) value).longValue()).append(';');
            } else if (value instanceof CharSequence) {
                CharSequence text = (CharSequence) value;
                sb.append('s').append(text.length()).append(':').append(text);
            } else if (value instanceof Boolean) {
                sb.append(((Boolean) value).booleanValue() ? 't' : 'f');
            } else {
                return partitionKey.toPath();
            }
        }
        return sb.toString();
    }
}
