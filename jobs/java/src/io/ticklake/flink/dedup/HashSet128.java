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
final class HashSet128 {
    static final int SHARD_BITS = 10;
    static final int SHARDS = 1 << SHARD_BITS;
    static final double MAX_LOAD = 0.7;
    /** A rebuilt shard is at most this full, so that inserts run a while before the next. */
    static final double REBUILT_LOAD = 0.35;
    private static final int MIN_CAPACITY = 16;

    private final Shard[] shards = new Shard[SHARDS];

    HashSet128() {
        for (int i = 0; i < SHARDS; i++) {
            shards[i] = new Shard(MIN_CAPACITY);
        }
    }

    /**
     * Adds the fingerprint unless a live (unexpired at {@code now}) copy is present.
     *
     * @return true if it was added (first seen, or seen only before its expiry), false if it
     *     is a duplicate
     */
    boolean addIfAbsent(long hi, long lo, long expiresAt, long now) {
        if (hi == 0 && lo == 0) {
            lo = 1;
        }
        return shards[(int) (hi >>> (64 - SHARD_BITS))].addIfAbsent(hi, lo, expiresAt, now);
    }

    /** Adds (restore): a fingerprint present already keeps the later of the two expiries. */
    void restore(long hi, long lo, long expiresAt, long now) {
        if (hi == 0 && lo == 0) {
            lo = 1;
        }
        shards[(int) (hi >>> (64 - SHARD_BITS))].restore(hi, lo, expiresAt, now);
    }

    /** Slots in use, expired ones not yet dropped by a rebuild included. */
    long used() {
        long n = 0;
        for (Shard s : shards) {
            n += s.used;
        }
        return n;
    }

    /** Bytes of the arrays (the set's heap footprint, bar a few object headers). */
    long bytes() {
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
            int i = slot(lo);
            while (true) {
                long k0 = keys[i << 1];
                long k1 = keys[(i << 1) + 1];
                if (k0 == 0 && k1 == 0) {
                    if (used >= maxUsed) {
                        rebuild(now);
                        return addIfAbsent(hi, lo, expiresAt, now);
                    }
                    put(i, hi, lo, expiresAt);
                    return true;
                }
                if (k0 == hi && k1 == lo) {
                    if (expiry[i] > now) {
                        return false;
                    }
                    expiry[i] = expiresAt;
                    return true;
                }
                i = (i + 1) & mask;
            }
        }

        void restore(long hi, long lo, long expiresAt, long now) {
            int i = slot(lo);
            while (true) {
                long k0 = keys[i << 1];
                long k1 = keys[(i << 1) + 1];
                if (k0 == 0 && k1 == 0) {
                    if (used >= maxUsed) {
                        rebuild(now);
                        restore(hi, lo, expiresAt, now);
                        return;
                    }
                    put(i, hi, lo, expiresAt);
                    return;
                }
                if (k0 == hi && k1 == lo) {
                    expiry[i] = Math.max(expiry[i], expiresAt);
                    return;
                }
                i = (i + 1) & mask;
            }
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
                    int j = slot(lo);
                    while (keys[j << 1] != 0 || keys[(j << 1) + 1] != 0) {
                        j = (j + 1) & mask;
                    }
                    put(j, hi, lo, oldExpiry[i]);
                }
            }
        }
    }
}
