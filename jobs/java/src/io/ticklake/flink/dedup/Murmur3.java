package io.ticklake.flink.dedup;

/**
 * MurmurHash3 x64 128 (Austin Appleby's reference {@code MurmurHash3_x64_128}, public domain):
 * the dedup key's 128-bit fingerprint. {@code tests/integration/test_dedup_operator.py} checks
 * it against the Python {@code mmh3} package.
 */
final class Murmur3 {
    private static final long C1 = 0x87c37b91114253d5L;
    private static final long C2 = 0x4cf5ad432745937fL;

    private Murmur3() {}

    /** The 128-bit hash of {@code data[0, len)} into {@code out[0]} (h1) and {@code out[1]} (h2). */
    static void hash128(byte[] data, int len, long seed, long[] out) {
        long h1 = seed;
        long h2 = seed;
        int blocks = len >>> 4;
        for (int i = 0; i < blocks; i++) {
            long k1 = getLongLe(data, i << 4);
            long k2 = getLongLe(data, (i << 4) + 8);
            h1 ^= mixK1(k1);
            h1 = Long.rotateLeft(h1, 27);
            h1 += h2;
            h1 = h1 * 5 + 0x52dce729;
            h2 ^= mixK2(k2);
            h2 = Long.rotateLeft(h2, 31);
            h2 += h1;
            h2 = h2 * 5 + 0x38495ab5;
        }
        int tail = blocks << 4;
        int rem = len & 15;
        long k1 = 0;
        long k2 = 0;
        for (int j = rem - 1; j >= 8; j--) {
            k2 ^= ((long) data[tail + j] & 0xff) << ((j - 8) << 3);
        }
        if (rem > 8) {
            h2 ^= mixK2(k2);
        }
        for (int j = Math.min(rem, 8) - 1; j >= 0; j--) {
            k1 ^= ((long) data[tail + j] & 0xff) << (j << 3);
        }
        if (rem > 0) {
            h1 ^= mixK1(k1);
        }
        h1 ^= len;
        h2 ^= len;
        h1 += h2;
        h2 += h1;
        h1 = fmix64(h1);
        h2 = fmix64(h2);
        h1 += h2;
        h2 += h1;
        out[0] = h1;
        out[1] = h2;
    }

    private static long mixK1(long k1) {
        k1 *= C1;
        k1 = Long.rotateLeft(k1, 31);
        return k1 * C2;
    }

    private static long mixK2(long k2) {
        k2 *= C2;
        k2 = Long.rotateLeft(k2, 33);
        return k2 * C1;
    }

    private static long fmix64(long k) {
        k ^= k >>> 33;
        k *= 0xff51afd7ed558ccdL;
        k ^= k >>> 33;
        k *= 0xc4ceb9fe1a85ec53L;
        k ^= k >>> 33;
        return k;
    }

    private static long getLongLe(byte[] b, int at) {
        return ((long) b[at] & 0xff)
                | ((long) b[at + 1] & 0xff) << 8
                | ((long) b[at + 2] & 0xff) << 16
                | ((long) b[at + 3] & 0xff) << 24
                | ((long) b[at + 4] & 0xff) << 32
                | ((long) b[at + 5] & 0xff) << 40
                | ((long) b[at + 6] & 0xff) << 48
                | ((long) b[at + 7] & 0xff) << 56;
    }
}
