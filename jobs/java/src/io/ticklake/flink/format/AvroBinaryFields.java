package io.ticklake.flink.format;

import java.io.Serializable;
import java.util.List;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.types.logical.DecimalType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;

/**
 * The columns of a {@code 'ticklake-avro'} row, in order, as the Avro layout Flink's own
 * {@code 'avro'} format derives from them ({@code AvroSchemaConverter}): a nullable column is
 * the union {@code ["null", T]} (branch 0 null, branch 1 the value), a {@code NOT NULL} column a
 * plain {@code T}.
 *
 * <p>Only the flat types ticklake's wire schemas use: STRING (and CHAR/VARCHAR) as Avro
 * {@code string}, BIGINT {@code long}, INT {@code int}, BOOLEAN {@code boolean}, BYTES
 * (VARBINARY) {@code bytes}, DOUBLE {@code double}, FLOAT {@code float}, and DECIMAL(p, s) as
 * {@code bytes} with the decimal logical type (the unscaled value, big-endian two's
 * complement, minimal length). Any other column is refused when the table is planned.
 */
final class AvroBinaryFields implements Serializable {
    private static final long serialVersionUID = 1L;

    static final int STRING = 0;
    static final int LONG = 1;
    static final int INT = 2;
    static final int BOOLEAN = 3;
    static final int BYTES = 4;
    static final int DOUBLE = 5;
    static final int FLOAT = 6;
    static final int DECIMAL = 7;

    final String[] names;
    final int[] kinds;
    final boolean[] nullable;
    final int[] precision;
    final int[] scale;

    private AvroBinaryFields(int n) {
        names = new String[n];
        kinds = new int[n];
        nullable = new boolean[n];
        precision = new int[n];
        scale = new int[n];
    }

    int size() {
        return kinds.length;
    }

    /** The columns of {@code rowType}; a column of another type is a {@link ValidationException}. */
    static AvroBinaryFields of(LogicalType rowType) {
        if (!(rowType instanceof RowType)) {
            throw new ValidationException("'ticklake-avro' encodes rows, not " + rowType);
        }
        List<RowType.RowField> fields = ((RowType) rowType).getFields();
        AvroBinaryFields out = new AvroBinaryFields(fields.size());
        for (int i = 0; i < fields.size(); i++) {
            RowType.RowField field = fields.get(i);
            LogicalType type = field.getType();
            out.names[i] = field.getName();
            out.nullable[i] = type.isNullable();
            switch (type.getTypeRoot()) {
                case CHAR:
                case VARCHAR:
                    out.kinds[i] = STRING;
                    break;
                case BIGINT:
                    out.kinds[i] = LONG;
                    break;
                case INTEGER:
                    out.kinds[i] = INT;
                    break;
                case BOOLEAN:
                    out.kinds[i] = BOOLEAN;
                    break;
                case VARBINARY:
                    out.kinds[i] = BYTES;
                    break;
                case DOUBLE:
                    out.kinds[i] = DOUBLE;
                    break;
                case FLOAT:
                    out.kinds[i] = FLOAT;
                    break;
                case DECIMAL:
                    out.kinds[i] = DECIMAL;
                    out.precision[i] = ((DecimalType) type).getPrecision();
                    out.scale[i] = ((DecimalType) type).getScale();
                    break;
                default:
                    throw new ValidationException(
                            "'ticklake-avro' has no encoding for column `" + field.getName()
                                    + "` " + type.asSummaryString() + ": it encodes STRING, "
                                    + "BIGINT, INT, BOOLEAN, BYTES, DOUBLE, FLOAT and DECIMAL "
                                    + "columns (use 'format' = 'avro' for other types)");
            }
        }
        return out;
    }
}
