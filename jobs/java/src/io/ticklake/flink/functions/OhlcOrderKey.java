/*
 * ticklake's Flink SQL functions: see MicrosToTimestampLtz.java.
 */
package io.ticklake.flink.functions;

import java.nio.charset.StandardCharsets;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code TICKLAKE_OHLC_KEY(exchange_ts_us, trade_id, price)}: a trade's sortable open/close key,
 * byte for byte the string of the SQL it replaces (an integration test compares the two):
 *
 * <pre>
 * CONCAT(LPAD(CAST(exchange_ts_us AS STRING), 20, '0'), LPAD(trade_id, 32, '0'),
 *        CAST(price AS STRING))
 * </pre>
 *
 * <p>Fixed widths make string order equal (time, trade id) order, so {@code MIN} is the open
 * and {@code MAX} the close; the price rides along from position 53. {@code LPAD} pads on the
 * left with '0' and cuts longer values to their first 20 or 32 characters. NULL in, NULL out.
 * The SQL builds five intermediate strings per trade; this writes one byte array.
 */
public final class OhlcOrderKey extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    static final int TS_WIDTH = 20;
    static final int ID_WIDTH = 32;
    private static final int PRICE_SCALE = 8;

    public @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData eval(
            Long tsUs,
            @DataTypeHint(value = "STRING", bridgedTo = StringData.class) StringData tradeId,
            @DataTypeHint(value = "DECIMAL(18, 8)", bridgedTo = DecimalData.class)
                    DecimalData price) {
        if (tsUs == null || tradeId == null || price == null) {
            return null;
        }
        byte[] id = tradeId.toBytes();
        if (!isAscii(id)) {
            return slowPath(tsUs, tradeId.toString(), price);
        }
        byte[] priceText = priceBytes(price);
        byte[] out = new byte[TS_WIDTH + ID_WIDTH + priceText.length];
        padLeft(Long.toString(tsUs).getBytes(StandardCharsets.US_ASCII), out, 0, TS_WIDTH);
        padLeft(id, out, TS_WIDTH, ID_WIDTH);
        System.arraycopy(priceText, 0, out, TS_WIDTH + ID_WIDTH, priceText.length);
        return StringData.fromBytes(out);
    }

    /** LPAD(value, width, '0') of ASCII bytes into out[at, at + width). */
    private static void padLeft(byte[] value, byte[] out, int at, int width) {
        if (value.length >= width) {
            System.arraycopy(value, 0, out, at, width);
            return;
        }
        int pad = width - value.length;
        for (int i = 0; i < pad; i++) {
            out[at + i] = '0';
        }
        System.arraycopy(value, 0, out, at + pad, value.length);
    }

    /** CAST(price AS STRING) of a DECIMAL(p, 8): the plain (never scientific) notation. */
    private static byte[] priceBytes(DecimalData price) {
        if (!price.isCompact() || price.scale() != PRICE_SCALE) {
            return price.toString().getBytes(StandardCharsets.US_ASCII);
        }
        long unscaled = price.toUnscaledLong();
        boolean negative = unscaled < 0;
        long abs = Math.abs(unscaled);
        String whole = Long.toString(abs / 100_000_000L);
        String frac = Long.toString(abs % 100_000_000L);
        int len = (negative ? 1 : 0) + whole.length() + 1 + PRICE_SCALE;
        byte[] out = new byte[len];
        int pos = 0;
        if (negative) {
            out[pos++] = '-';
        }
        for (int i = 0; i < whole.length(); i++) {
            out[pos++] = (byte) whole.charAt(i);
        }
        out[pos++] = '.';
        for (int i = frac.length(); i < PRICE_SCALE; i++) {
            out[pos++] = '0';
        }
        for (int i = 0; i < frac.length(); i++) {
            out[pos++] = (byte) frac.charAt(i);
        }
        return out;
    }

    private static boolean isAscii(byte[] bytes) {
        for (byte b : bytes) {
            if (b < 0) {
                return false;
            }
        }
        return true;
    }

    /** Non-ASCII trade ids: LPAD counts characters, not bytes. */
    private static StringData slowPath(long tsUs, String id, DecimalData price) {
        StringBuilder key = new StringBuilder(TS_WIDTH + ID_WIDTH + 24);
        key.append(lpad(Long.toString(tsUs), TS_WIDTH));
        key.append(lpad(id, ID_WIDTH));
        key.append(new String(priceBytes(price), StandardCharsets.US_ASCII));
        return StringData.fromString(key.toString());
    }

    private static String lpad(String value, int width) {
        if (value.length() >= width) {
            return value.substring(0, width);
        }
        return "0".repeat(width - value.length()) + value;
    }
}
