package io.ticklake.flink.format;

import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.Arrays;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;

/**
 * Decodes one Avro binary record (no header, no schema id) into a {@link GenericRowData},
 * straight from the bytes: strings stay UTF-8 ({@code StringData.fromBytes}), compact decimals
 * are read into a {@code long}.
 *
 * <p>Flink's {@code 'avro'} format reads the same bytes into an Avro {@code GenericRecord}
 * first, decodes every string to a Java {@code String} and encodes it back to UTF-8, and builds
 * a {@code BigInteger} and a {@code BigDecimal} for every decimal. The rows are equal; an
 * integration test decodes the same messages both ways. As with Flink's format, bytes after the
 * last column are ignored (a record with fields appended by a newer schema reads as the columns
 * it has), and a {@code null} message (a tombstone) is skipped. A message that does not hold the
 * columns fails with the column and the byte offset.
 */
final class AvroBinaryRowDeserializer implements DeserializationSchema<RowData> {
    private static final long serialVersionUID = 1L;
    private static final long[] POW10 = new long[19];

    static {
        POW10[0] = 1;
        for (int i = 1; i < POW10.length; i++) {
            POW10[i] = POW10[i - 1] * 10;
        }
    }

    private final AvroBinaryFields fields;
    private final TypeInformation<RowData> producedType;
    private transient byte[] buf;
    private transient int pos;
    private transient int end;

    AvroBinaryRowDeserializer(AvroBinaryFields fields, TypeInformation<RowData> producedType) {
        this.fields = fields;
        this.producedType = producedType;
    }

    @Override
    public RowData deserialize(byte[] message) throws IOException {
        if (message == null) {
            return null;
        }
        buf = message;
        pos = 0;
        end = message.length;
        int n = fields.size();
        GenericRowData row = new GenericRowData(n);
        int field = 0;
        try {
            for (; field < n; field++) {
                if (fields.nullable[field]) {
                    long branch = readLong();
                    if (branch == 0) {
                        continue;
                    }
                    if (branch != 1) {
                        throw new IOException("union branch " + branch + " (a nullable column is"
                                + " [\"null\", T]: branch 0 or 1)");
                    }
                }
                row.setField(field, readValue(field));
            }
        } catch (IOException | RuntimeException e) {
            throw new IOException("'ticklake-avro' could not decode column `" + fields.names[field]
                    + "` at byte " + pos + " of a " + message.length + "-byte message: "
                    + e.getMessage() + " (is the topic written with this table's columns?)", e);
        } finally {
            buf = null;
        }
        return row;
    }

    private Object readValue(int field) throws IOException {
        switch (fields.kinds[field]) {
            case AvroBinaryFields.STRING:
                return StringData.fromBytes(readBytes());
            case AvroBinaryFields.LONG:
                return readLong();
            case AvroBinaryFields.INT:
                long v = readLong();
                if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
                    throw new IOException("int out of range: " + v);
                }
                return (int) v;
            case AvroBinaryFields.BOOLEAN:
                require(1);
                int b = buf[pos++];
                if (b != 0 && b != 1) {
                    throw new IOException("boolean byte " + b);
                }
                return b == 1;
            case AvroBinaryFields.BYTES:
                return readBytes();
            case AvroBinaryFields.DOUBLE:
                require(8);
                long dbits = littleEndian(8);
                return Double.longBitsToDouble(dbits);
            case AvroBinaryFields.FLOAT:
                require(4);
                return Float.intBitsToFloat((int) littleEndian(4));
            case AvroBinaryFields.DECIMAL:
                return readDecimal(fields.precision[field], fields.scale[field]);
            default:
                throw new IllegalStateException("kind " + fields.kinds[field]);
        }
    }

    private DecimalData readDecimal(int precision, int scale) throws IOException {
        int len = readLength();
        if (len == 0) {
            throw new IOException("decimal of zero bytes");
        }
        DecimalData out;
        if (precision <= 18 && len <= 8) {
            long unscaled = buf[pos]; // sign-extended
            for (int i = 1; i < len; i++) {
                unscaled = (unscaled << 8) | (buf[pos + i] & 0xff);
            }
            pos += len;
            if (unscaled <= -POW10[precision] || unscaled >= POW10[precision]) {
                throw new IOException("decimal " + BigDecimal.valueOf(unscaled, scale)
                        + " has more than " + precision + " digits");
            }
            out = DecimalData.fromUnscaledLong(unscaled, precision, scale);
        } else {
            BigInteger unscaled = new BigInteger(buf, pos, len);
            pos += len;
            out = DecimalData.fromBigDecimal(new BigDecimal(unscaled, scale), precision, scale);
            if (out == null) {
                throw new IOException("decimal " + new BigDecimal(unscaled, scale)
                        + " has more than " + precision + " digits");
            }
        }
        return out;
    }

    private byte[] readBytes() throws IOException {
        int len = readLength();
        byte[] out = Arrays.copyOfRange(buf, pos, pos + len);
        pos += len;
        return out;
    }

    private int readLength() throws IOException {
        long len = readLong();
        if (len < 0 || len > end - pos) {
            throw new IOException("length " + len + " with " + (end - pos) + " bytes left");
        }
        return (int) len;
    }

    /** Avro's zig-zag varint. */
    private long readLong() throws IOException {
        long raw = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            require(1);
            int b = buf[pos++] & 0xff;
            raw |= (long) (b & 0x7f) << shift;
            if ((b & 0x80) == 0) {
                return (raw >>> 1) ^ -(raw & 1);
            }
        }
        throw new IOException("varint longer than 10 bytes");
    }

    private long littleEndian(int bytes) {
        long v = 0;
        for (int i = bytes - 1; i >= 0; i--) {
            v = (v << 8) | (buf[pos + i] & 0xff);
        }
        pos += bytes;
        return v;
    }

    private void require(int bytes) throws IOException {
        if (end - pos < bytes) {
            throw new IOException("message ends early (" + bytes + " more bytes needed)");
        }
    }

    @Override
    public boolean isEndOfStream(RowData nextElement) {
        return false;
    }

    @Override
    public TypeInformation<RowData> getProducedType() {
        return producedType;
    }
}
