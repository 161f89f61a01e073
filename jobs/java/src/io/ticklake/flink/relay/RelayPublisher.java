/*
 * The Flink side of the relay's publisher protocol (relay/publisher.py, docs/relay.md):
 * the jobs' live outputs go straight to the relay's XSUB port, with no Kafka hop and no
 * bridge process in between.
 */
package io.ticklake.flink.relay;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.zeromq.SocketType;
import org.zeromq.ZContext;
import org.zeromq.ZMQ;

/**
 * An XPUB socket connected to the relay's XSUB port, speaking the relay's framing, with the
 * last-value cache of what it published.
 *
 * <p>Every message is three frames: the topic plus a {@code \0} terminator (exact prefix
 * matching), a 17-byte header {@code >BQQ} (flags, this publisher's epoch, a per-topic
 * sequence number) and the payload (the schema's Avro binary). The socket is an XPUB so it
 * sees subscriptions: the relay's own (subscribe-to-everything, {@code \1}) and, forwarded
 * by the relay's proxy, every client's ({@code \1} + prefix). For a client's subscription
 * the publisher re-sends the cached last message of every topic it matches, flagged as a
 * replay (same epoch and sequence): a late joiner sees the current candle at once. A relay
 * restart loses nothing cached, and ZeroMQ reconnects by itself.
 *
 * <p>Never blocks: ZeroMQ drops a message for a peer whose queue is at the high-water mark
 * (counted by the relay's subscribers as a gap in the sequence). Thread-safe: task threads
 * publish, a small daemon thread serves subscriptions while they are idle.
 *
 * <p>One publisher per endpoint and JVM ({@link #acquire}): every relay sink of a TaskManager
 * (a job writes one table from several INSERTs, each its own sink operator) shares one
 * socket, one epoch and one cache, so a late joiner gets exactly one last value per topic.
 */
public final class RelayPublisher implements AutoCloseable {
    private static final Map<String, RelayPublisher> SHARED = new HashMap<>();

    /** The JVM's publisher to {@code endpoint}, created on first use; {@link #close} releases it. */
    public static RelayPublisher acquire(String endpoint, int sendHighWaterMark, int maxCachedTopics) {
        synchronized (SHARED) {
            RelayPublisher p = SHARED.get(endpoint);
            if (p == null) {
                p = new RelayPublisher(endpoint, sendHighWaterMark, maxCachedTopics);
                SHARED.put(endpoint, p);
            }
            p.users++;
            return p;
        }
    }

    private int users; // guarded by SHARED
    private final String endpoint;
    static final byte FLAG_REPLAY = 0x02;
    static final int HEADER_SIZE = 17;
    private static final byte SUBSCRIBE = 0x01;
    private static final int SERVE_EVERY = 64;
    private static final long SERVE_INTERVAL_MS = 20;
    private static final int CLOSE_LINGER_MS = 2_000;

    /** Per topic: its frame and its last sequence number (kept for every topic published). */
    private static final class Topic {
        final byte[] frame;
        long seq;

        Topic(String topic) {
            byte[] utf8 = topic.getBytes(StandardCharsets.UTF_8);
            frame = new byte[utf8.length + 1];
            System.arraycopy(utf8, 0, frame, 0, utf8.length);
        }
    }

    /** A cached last message: the topic frame, its sequence number and payload. */
    private static final class Cached {
        final byte[] frame;
        final long seq;
        final byte[] payload;

        Cached(byte[] frame, long seq, byte[] payload) {
            this.frame = frame;
            this.seq = seq;
            this.payload = payload;
        }
    }

    private final ZContext context;
    private final ZMQ.Socket socket;
    private final long epoch;
    private final int maxCachedTopics;
    private final Map<String, Topic> topics = new HashMap<>();
    /** Topic -> last message; iteration order is update order (re-inserted on update). */
    private final LinkedHashMap<String, Cached> cache = new LinkedHashMap<>();
    private final Thread server;
    private volatile boolean closed;
    private boolean relayReady;
    private int due = SERVE_EVERY;
    private long published;
    private long replayed;
    private long subscriptions;

    /**
     * Connects to {@code endpoint} (e.g. {@code tcp://127.0.0.1:5557}, the relay's XSUB
     * port); ZeroMQ connects in the background and reconnects after a relay restart.
     */
    RelayPublisher(String endpoint, int sendHighWaterMark, int maxCachedTopics) {
        this.endpoint = endpoint;
        if (maxCachedTopics < 1) {
            throw new IllegalArgumentException("maxCachedTopics must be at least 1");
        }
        this.maxCachedTopics = maxCachedTopics;
        this.epoch = new SecureRandom().nextLong() >>> 1 | 1L;
        this.context = new ZContext(1);
        this.socket = context.createSocket(SocketType.XPUB);
        // On close, up to this long to hand queued messages to a connected relay (the end
        // of a bounded run); nothing is queued for a relay that is not connected.
        socket.setLinger(CLOSE_LINGER_MS);
        socket.setSndHWM(sendHighWaterMark);
        socket.setReconnectIVL(100);
        socket.setReconnectIVLMax(5_000);
        socket.setXpubVerbose(true);
        socket.connect(endpoint);
        server = new Thread(this::serveIdle, "ticklake-relay-lvc");
        server.setDaemon(true);
        server.start();
    }

    static byte[] header(byte flags, long epoch, long seq) {
        return ByteBuffer.allocate(HEADER_SIZE).put(flags).putLong(epoch).putLong(seq).array();
    }

    /** Publishes one message on {@code topic}; returns its sequence number. */
    public synchronized long publish(String topic, byte[] payload) {
        Topic state = topics.get(topic);
        if (state == null) {
            state = new Topic(topic);
            topics.put(topic, state);
        }
        long seq = ++state.seq;
        socket.sendMore(state.frame);
        socket.sendMore(header((byte) 0, epoch, seq));
        socket.send(payload, 0);
        if (cache.remove(topic) == null) {
            makeRoom();
        }
        cache.put(topic, new Cached(state.frame, seq, payload));
        published++;
        if (--due == 0) {
            due = SERVE_EVERY;
            serve();
        }
        return seq;
    }

    private void makeRoom() {
        Iterator<String> oldest = cache.keySet().iterator();
        while (cache.size() >= maxCachedTopics && oldest.hasNext()) {
            oldest.next();
            oldest.remove();
        }
    }

    /** Answers the subscriptions that arrived: replays what each one matches. */
    public synchronized void serve() {
        if (closed) {
            return;
        }
        byte[] message;
        while ((message = socket.recv(ZMQ.DONTWAIT)) != null) {
            if (message.length == 0 || message[0] != SUBSCRIBE) {
                continue; // an unsubscription
            }
            if (message.length == 1) {
                relayReady = true; // the relay's own subscription: everything
                notifyAll();
                continue;
            }
            subscriptions++;
            List<Cached> matches = new ArrayList<>();
            for (Cached c : cache.values()) {
                if (startsWith(c.frame, message, 1)) {
                    matches.add(c);
                }
            }
            for (Cached c : matches) {
                socket.sendMore(c.frame);
                socket.sendMore(header(FLAG_REPLAY, epoch, c.seq));
                socket.send(c.payload, 0);
                replayed++;
            }
        }
    }

    private static boolean startsWith(byte[] frame, byte[] prefix, int from) {
        int n = prefix.length - from;
        if (frame.length < n) {
            return false;
        }
        for (int i = 0; i < n; i++) {
            if (frame[i] != prefix[from + i]) {
                return false;
            }
        }
        return true;
    }

    private void serveIdle() {
        while (!closed) {
            try {
                Thread.sleep(SERVE_INTERVAL_MS);
            } catch (InterruptedException e) {
                return;
            }
            serve();
        }
    }

    /**
     * Waits up to {@code timeoutMs} for the relay's subscription (ZeroMQ drops what is
     * published before it: the slow-joiner problem, solved by the protocol, not a sleep).
     * Returns whether it arrived.
     */
    public synchronized boolean awaitRelay(long timeoutMs) throws InterruptedException {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        serve();
        while (!relayReady && !closed) {
            long left = (deadline - System.nanoTime()) / 1_000_000L;
            if (left <= 0) {
                break;
            }
            wait(Math.min(left, SERVE_INTERVAL_MS)); // the idle thread serves meanwhile
            serve();
        }
        return relayReady;
    }

    /** Whether the relay has subscribed (messages before that are dropped by ZeroMQ). */
    public synchronized boolean relayReady() {
        return relayReady;
    }

    public synchronized long published() {
        return published;
    }

    public synchronized long replayed() {
        return replayed;
    }

    public synchronized long subscriptions() {
        return subscriptions;
    }

    public synchronized int cachedTopics() {
        return cache.size();
    }

    /** Releases this user's share; the last one closes the socket. */
    @Override
    public void close() {
        synchronized (SHARED) {
            if (users > 0 && --users > 0) {
                return;
            }
            if (SHARED.get(endpoint) == this) {
                SHARED.remove(endpoint);
            }
        }
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
        }
        server.interrupt();
        try {
            server.join(5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (this) {
            context.close();
        }
    }
}
