package io.ticklake.flink.relay;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A row's key -> its relay topic, with the bridge's rules ({@code relay/bridge.py},
 * {@code Route}): the topic is {@code {market}|{data type}}, {@code market} the first
 * {@code |}-separated part of the key ({@code EXCHANGE:BASE/QUOTE}), and the data type a
 * template whose {@code {1}}, {@code {2}} name further key parts: {@code tick} for the key
 * {@code BINANCE:BTC/USDT}, {@code ohlc:{1}} for {@code BINANCE:BTC/USDT|1m|<window start>}.
 */
public final class RelayRoute implements Serializable {
    private static final long serialVersionUID = 1L;
    private static final Pattern PLACEHOLDER = Pattern.compile("\\{([^}]*)\\}");
    private static final Pattern MARKET =
            Pattern.compile("^[A-Z0-9][A-Z0-9_-]*:[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$");
    private static final Pattern TIMEFRAME = Pattern.compile("^[1-9][0-9]*[smhdwM]$");
    private static final int MAX_MEMO = 10_000;

    private final String template;
    /** Literal text and key-part indexes, alternating: String, Integer, String, ... */
    private final List<Object> pieces = new ArrayList<>();
    private transient Map<String, String> memo;

    /** Thrown for a key that gives no valid relay topic. */
    public static final class RouteException extends Exception {
        private static final long serialVersionUID = 1L;

        RouteException(String message) {
            super(message);
        }
    }

    public RelayRoute(String template) {
        if (template == null || template.isEmpty()) {
            throw new IllegalArgumentException("a relay data type is needed, e.g. tick or ohlc:{1}");
        }
        if (template.contains("|")) {
            throw new IllegalArgumentException("data type '" + template + "' must not contain '|'");
        }
        this.template = template;
        Matcher m = PLACEHOLDER.matcher(template);
        int at = 0;
        while (m.find()) {
            pieces.add(template.substring(at, m.start()));
            String index = m.group(1);
            if (!index.matches("[1-9][0-9]*")) {
                throw new IllegalArgumentException(
                        "data type '" + template + "': placeholders are key parts {1}, {2}, ...");
            }
            pieces.add(Integer.valueOf(index));
            at = m.end();
        }
        pieces.add(template.substring(at));
    }

    public String template() {
        return template;
    }

    /** The relay topic of a row with this key. */
    public String topic(String key) throws RouteException {
        if (memo == null) {
            memo = new HashMap<>();
        }
        String known = memo.get(key);
        if (known != null) {
            return known;
        }
        String topic = resolve(key);
        if (memo.size() >= MAX_MEMO) {
            memo.clear();
        }
        memo.put(key, topic);
        return topic;
    }

    private String resolve(String key) throws RouteException {
        if (key == null || key.isEmpty()) {
            throw new RouteException("row has no key");
        }
        String[] parts = key.split("\\|", -1);
        StringBuilder dataType = new StringBuilder();
        for (Object piece : pieces) {
            if (piece instanceof Integer) {
                int index = (Integer) piece;
                if (index >= parts.length) {
                    throw new RouteException(String.format(
                            "key '%s' has %d '|'-separated parts; data type '%s' needs more",
                            abbreviate(key), parts.length, template));
                }
                dataType.append(parts[index]);
            } else {
                dataType.append((String) piece);
            }
        }
        String type = dataType.toString();
        if (!MARKET.matcher(parts[0]).matches()) {
            throw new RouteException(
                    "key '" + abbreviate(key) + "': market must be EXCHANGE:BASE/QUOTE");
        }
        if (type.isEmpty() || type.indexOf('|') >= 0 || type.indexOf('\0') >= 0) {
            throw new RouteException("key '" + abbreviate(key) + "': bad data type '" + type + "'");
        }
        if (type.startsWith("ohlc:") && !TIMEFRAME.matcher(type.substring(5)).matches()) {
            throw new RouteException(
                    "key '" + abbreviate(key) + "': timeframe of '" + type + "' must look like 1m");
        }
        return parts[0] + "|" + type;
    }

    private static String abbreviate(String key) {
        return key.length() <= 200 ? key : key.substring(0, 200) + "...";
    }
}
