package io.ticklake.flink.dedup;

/**
 * A set of 128-bit fingerprints, each with an expiry time, held in primitive arrays only.
 *
 * <p>This is why {@link DedupOperator} exists: a key here is 24 bytes in two {@code long[]}
 * (16 of fingerprint, 8 of expiry) that the garbage collector never traces, where a key of
 * Flink's heap state backend is seven objects of about 300 bytes (docs/stream-jobs.md 3).
 *
 * <p>Open addressing with linear probing, split into {@link #SHARDS} shards by the top bits
 * of the fingerprint. A shard that fills to {@link #MAX_LOAD} is rebuilt on its own, without
 * the entries that have expired, so growing never stops the operator for longer than one
 * shard's copy. The all-zero fingerprint is stored as (0, 1). Not thread-safe.
 */
public final class HashSet128 {
    static final int SHARD_BITS = 10;
    static final int SHARDS = 1 << SHARD_BITS;
    static final double MAX_LOAD = 0.7;
    /** A rebuilt shard is at most this full, so that inserts run a while before the next. */
    static final double REBUILT_LOAD = 0.35;
    private static final int MIN_CAPACITY = 16;

    private final int shardBits;
    private final Shard[] shards;

    public HashSet128() {
        this(SHARD_BITS);
    }

    /** With {@code 2^shardBits} shards (tests use few, so that shards rebuild often). */
    public HashSet128(int shardBits) {
        if (shardBits < 0 || shardBits > 16) {
            throw new IllegalArgumentException("shardBits must be 0-16");
        }
        this.shardBits = shardBits;
        this.shards = new Shard[1 << shardBits];
        for (int i = 0; i < shards.length; i++) {
            shards[i] = new Shard(MIN_CAPACITY);
        }
    }

    private Shard shardOf(long hi) {
        return shards[shardBits == 0 ? 0 : (int) (hi >>> (64 - shardBits))];
    }

    /**
     * Adds the fingerprint unless a live (unexpired at {@code now}) copy is present.
     *
     * @return true if it was added (first seen, or seen only before its expiry), false if it
     *     is a duplicate
     */
    public boolean addIfAbsent(long hi, long lo, long expiresAt, long now) {
        if (hi == 0 && lo == 0) {
            lo = 1;
        }
        return shardOf(hi).addIfAbsent(hi, lo, expiresAt, now);
    }

    /** Adds (restore): a fingerprint present already keeps the later of the two expiries. */
    public void restore(long hi, long lo, long expiresAt, long now) {
        if (hi == 0 && lo == 0) {
            lo = 1;
        }
        shardOf(hi).restore(hi, lo, expiresAt, now);
    }

    /** Slots in use, expired ones not yet dropped by a rebuild included. */
    public long used() {
        long n = 0;
        for (Shard s : shards) {
            n += s.used;
        }
        return n;
    }

    /** Bytes of the arrays (the set's heap footprint, bar a few object headers). */
    public long bytes() {
        long n = 0;
        for (Shard s : shards) {
            n += 24L * s.expiry.length;
        }
        return n;
    }

    private static final class Shard {
        long[] keys;
        long[] expiry;
        int mask;
        int used;
        int maxUsed;

        Shard(int capacity) {
            allocate(capacity);
        }

        private void allocate(int capacity) {
            keys = new long[capacity << 1];
            expiry = new long[capacity];
            mask = capacity - 1;
            used = 0;
            maxUsed = (int) (capacity * MAX_LOAD);
        }

        boolean addIfAbsent(long hi, long lo, long expiresAt, long now) {
            int i = probe(hi, lo);
            if (i >= 0) {
                if (expiry[i] > now) {
                    return false;
                }
                expiry[i] = expiresAt;
                return true;
            }
            insert(i, hi, lo, expiresAt, now);
            return true;
        }

        void restore(long hi, long lo, long expiresAt, long now) {
            int i = probe(hi, lo);
            if (i >= 0) {
                expiry[i] = Math.max(expiry[i], expiresAt);
                return;
            }
            insert(i, hi, lo, expiresAt, now);
        }

        /** The slot holding the fingerprint, or {@code ~slot} of the empty one that ends its probe. */
        private int probe(long hi, long lo) {
            int i = slot(lo);
            while (true) {
                long k0 = keys[i << 1];
                long k1 = keys[(i << 1) + 1];
                if (k0 == hi && k1 == lo) {
                    return i;
                }
                if (k0 == 0 && k1 == 0) {
                    return ~i;
                }
                i = (i + 1) & mask;
            }
        }

        /** Puts a fingerprint that {@link #probe} did not find ({@code notFound}: its result). */
        private void insert(int notFound, long hi, long lo, long expiresAt, long now) {
            int i = ~notFound;
            if (used >= maxUsed) {
                rebuild(now);
                i = ~probe(hi, lo);
            }
            put(i, hi, lo, expiresAt);
        }

        private int slot(long lo) {
            return (int) (lo ^ (lo >>> 32)) & mask;
        }

        private void put(int i, long hi, long lo, long expiresAt) {
            keys[i << 1] = hi;
            keys[(i << 1) + 1] = lo;
            expiry[i] = expiresAt;
            used++;
        }

        /** Re-inserts the live entries into arrays sized for them at {@link #REBUILT_LOAD}. */
        private void rebuild(long now) {
            long[] oldKeys = keys;
            long[] oldExpiry = expiry;
            int live = 0;
            for (int i = 0; i < oldExpiry.length; i++) {
                if (oldExpiry[i] > now) {
                    live++;
                }
            }
            int capacity = MIN_CAPACITY;
            while (capacity * REBUILT_LOAD < live + 1) {
                capacity <<= 1;
            }
            allocate(capacity);
            for (int i = 0; i < oldExpiry.length; i++) {
                if (oldExpiry[i] > now) {
                    long hi = oldKeys[i << 1];
                    long lo = oldKeys[(i << 1) + 1];
                    put(~probe(hi, lo), hi, lo, oldExpiry[i]);
                }
            }
        }
    }
}
