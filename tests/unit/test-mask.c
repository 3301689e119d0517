/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "mask.h"
#include "test.h"

/* Masks `in` through a fresh masker, feeding it in pieces of `step` bytes
 * (0: all at once), and returns the output NUL-terminated. */
static char *mask_with(Masker *m, const void *in, size_t n, size_t step) {
        Buf out = BUF_INIT(0);
        const uint8_t *p = in;

        if (step == 0)
                step = n ? n : 1;
        for (size_t i = 0; i < n; i += step)
                CHECK(masker_feed(m, p + i, MIN(step, n - i), &out) == 0);
        CHECK(masker_flush(m, &out) == 0);
        CHECK(buf_append(&out, "", 1) == 0);
        return (char *) out.data;
}

static char *mask_str(char **secrets, const char *in) {
        _cleanup_(masker_freep) Masker *m = NULL;

        CHECK(masker_new(secrets, &m) == 0);
        return mask_with(m, in, strlen(in), 0);
}

static void check_masks(char **secrets, const char *in, const char *expect) {
        _cleanup_free_ char *got = mask_str(secrets, in);
        CHECK_STREQ(got, expect);
}

static void test_refuse(void) {
        char *too_short[] = { "abcde", NULL };
        char *empty[] = { NULL };
        char *many[MASK_SECRETS_MAX + 2];
        char big[MASK_SECRET_MAX + 2];
        char *too_long[] = { big, NULL };
        Masker *m = NULL;

        CHECK_EQ_INT(masker_new(too_short, &m), -EINVAL);
        CHECK(!m);
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        CHECK_EQ_INT(masker_new(too_long, &m), -EINVAL);
        for (size_t i = 0; i < MASK_SECRETS_MAX + 1; i++)
                many[i] = "abcdefgh";
        many[MASK_SECRETS_MAX + 1] = NULL;
        CHECK_EQ_INT(masker_new(many, &m), -E2BIG);

        /* No secrets: a pass-through. */
        CHECK(masker_new(empty, &m) == 0);
        _cleanup_free_ char *s = mask_with(m, "abc\0def", 7, 1);
        CHECK(memcmp(s, "abc\0def", 8) == 0);
        m = masker_free(m);
        CHECK(masker_new(NULL, &m) == 0);
        m = masker_free(m);
}

static void test_raw(void) {
        char *sec[] = { "SuperSecret123", NULL };

        check_masks(sec, "token=SuperSecret123 end", "token=*** end");
        check_masks(sec, "SuperSecret123SuperSecret123", "***");
        check_masks(sec, "SuperSecret12 SuperSecret123", "SuperSecret12 ***");
        check_masks(sec, "SuperSecret12", "SuperSecret12");
        check_masks(sec, "", "");
}

/* An independent formulation of the stable core: character j of the
 * encoding carries bits [6j, 6j+6) of the blob; it is masked exactly when all
 * of them are secret bits. */
static void b64(const uint8_t *p, size_t n, const char *alpha, char *out) {
        size_t o = 0;
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16 | (i + 1 < n ? p[i + 1] : 0) << 8 |
                             (i + 2 < n ? p[i + 2] : 0);
                out[o++] = alpha[(v >> 18) & 63];
                out[o++] = alpha[(v >> 12) & 63];
                out[o++] = i + 1 < n ? alpha[(v >> 6) & 63] : '=';
                out[o++] = i + 2 < n ? alpha[v & 63] : '=';
        }
        out[o] = 0;
}

static void test_base64(void) {
        static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        /* Bytes chosen so that the encoding has '+' and '/' (or '-' and '_'). */
        static const uint8_t secret[] = "\xfb\xff\xbfsecret\xfe\xfb";
        size_t n = sizeof(secret) - 1;
        struct iovec iov = { (void *) secret, n };
        _cleanup_(masker_freep) Masker *m = NULL;

        CHECK(masker_new_iovec(&iov, 1, &m) == 0);
        for (int a = 0; a < 2; a++)
                for (size_t pre = 0; pre < 6; pre++)
                        for (size_t post = 0; post < 4; post++) {
                                uint8_t blob[64];
                                char enc[128], expect[160];
                                _cleanup_free_ char *got = NULL;
                                size_t j0, j1, len = pre + n + post;

                                memset(blob, 'Q', sizeof(blob));
                                memcpy(blob + pre, secret, n);
                                b64(blob, len, a ? url : std, enc);
                                j0 = (8 * pre + 5) / 6;
                                j1 = (8 * (pre + n) - 6) / 6;
                                snprintf(expect, sizeof(expect), "%.*s***%s", (int) j0, enc,
                                         enc + j1 + 1);
                                got = mask_with(m, enc, strlen(enc), 1);
                                CHECK_STREQ(got, expect);
                        }
}

static void test_url(void) {
        char *sec[] = { "p@ss w/rd!(x)", NULL };

        check_masks(sec, "u=p%40ss%20w%2Frd!(x)&", "u=***&");     /* encodeURIComponent */
        check_masks(sec, "u=p%40ss%20w%2frd!(x)&", "u=***&");     /* lower-case hex */
        check_masks(sec, "u=p%40ss%20w/rd%21%28x%29&", "u=***&"); /* quote() */
        check_masks(sec, "u=p%40ss+w%2Frd%21%28x%29&", "u=***&"); /* quote_plus() */
        check_masks(sec, "u=p%40ss+w%2frd%21%28x%29&", "u=***&");
        check_masks(sec, "u=p%40ss%20w%2Frd%21%28x%2&", "u=p%40ss%20w%2Frd%21%28x%2&");
}

static void test_json(void) {
        char *sec[] = { "a\"b\\c/d\ne\x01" "f\x1bz", NULL };
        char *uni[] = { "p\xc3\xa4ssw\xc3\xb6rd-\xf0\x9f\x98\x80x", NULL };
        char *html[] = { "a<b>&cdef", NULL };
        char *go[] = { "line\xe2\x80\xa8sep\xc3\xa9", NULL };

        check_masks(sec, "{\"k\":\"a\\\"b\\\\c/d\\ne\\u0001f\\u001bz\"}", "{\"k\":\"***\"}");
        check_masks(sec, "{\"k\":\"a\\\"b\\\\c\\/d\\ne\\u0001f\\u001Bz\"}", "{\"k\":\"***\"}");
        check_masks(sec, "{\"k\":\"a\\\"b\\\\c\\/d\\ne\\u0001f\\u001bz\"}", "{\"k\":\"***\"}");
        check_masks(uni, "\"p\\u00e4ssw\\u00f6rd-\\ud83d\\ude00x\"", "\"***\"");
        check_masks(uni, "\"p\\u00E4ssw\\u00F6rd-\\uD83D\\uDE00x\"", "\"***\"");
        check_masks(uni, "\"p\xc3\xa4ssw\xc3\xb6rd-\xf0\x9f\x98\x80x\"", "\"***\"");
        check_masks(html, "\"a\\u003cb\\u003e\\u0026cdef\"", "\"***\"");
        check_masks(go, "\"line\\u2028sep\xc3\xa9\"", "\"***\"");
}

static void test_multiline(void) {
        char *sec[] = { "-----BEGIN KEY-----\r\nMIIEvQIBADANBg\r\n-----END KEY-----", NULL };

        check_masks(sec, "key: MIIEvQIBADANBg\n", "key: ***\n");
}

static void test_overlap_and_prefix(void) {
        char *overlap[] = { "abcdefgh", "efghijkl", NULL };
        char *prefix[] = { "secret1", "secret1234", NULL };
        char *inner[] = { "xsecretx", "xxsecretxxyy", NULL };

        check_masks(overlap, "xxabcdefghijklyy", "xx***yy");
        check_masks(overlap, "abcdefgh efghijkl abcdefghefghijkl", "*** *** ***");
        check_masks(prefix, "secret1234 secret1 secret12 secret123", "*** *** ***2 ***23");
        check_masks(inner, "[xxsecretxxyy] [xxsecretxxy]", "[***] [x***xy]");
}

static void test_binary(void) {
        static const uint8_t secret[] = { 0, 1, 's', 'e', 'c', 0, 'r', 0xff };
        static const uint8_t in[] = { 0, 0, 1, 's', 'e', 'c', 0, 'r', 0xff, 0, 'z', 0 };
        static const uint8_t expect[] = { 0, '*', '*', '*', 0, 'z', 0 };
        struct iovec iov = { (void *) secret, sizeof(secret) };
        _cleanup_(masker_freep) Masker *m = NULL;

        CHECK(masker_new_iovec(&iov, 1, &m) == 0);
        for (size_t step = 0; step <= sizeof(in); step++) {
                _cleanup_free_ char *got = mask_with(m, in, sizeof(in), step);
                CHECK(memcmp(got, expect, sizeof(expect)) == 0);
        }
        CHECK_EQ_INT(masker_bytes_masked(m), (sizeof(in) + 1) * sizeof(secret));
}

/* Every 2-way split and a byte-by-byte feed give the one-shot output. */
static void test_splits(void) {
        char *sec[] = { "SuperSecret123", "p@ss w/rd!(x)", "abcdefgh", "efghijkl",
                        "secret1", "secret1234", NULL };
        static const char in[] =
                "start SuperSecret123 U3VwZXJTZWNyZXQxMjM= p%40ss%20w%2Frd!(x) SuperSecret12 "
                "xxabcdefghijklyy secret1234 secret12 \"p@ss w\\/rd!(x)\" end SuperSec";
        static const char expect[] =
                "start *** ***M= *** SuperSecret12 xx***yy *** ***2 \"***\" end SuperSec";
        _cleanup_(masker_freep) Masker *m = NULL;
        size_t n = strlen(in);

        CHECK(masker_new(sec, &m) == 0);
        for (size_t step = 0; step <= 3; step++) {
                _cleanup_free_ char *got = mask_with(m, in, n, step);
                CHECK_STREQ(got, expect);
        }
        for (size_t i = 0; i <= n; i++) {
                Buf out = BUF_INIT(0);
                CHECK(masker_feed(m, in, i, &out) == 0);
                CHECK(masker_feed(m, in + i, n - i, &out) == 0);
                CHECK(masker_flush(m, &out) == 0);
                CHECK(buf_append(&out, "", 1) == 0);
                CHECK_STREQ((char *) out.data, expect);
                buf_done(&out);
        }
}

static void test_holdback_and_flush(void) {
        char *sec[] = { "SuperSecret123", NULL };
        _cleanup_(masker_freep) Masker *m = NULL;
        _cleanup_(buf_done) Buf out = BUF_INIT(0);

        CHECK(masker_new(sec, &m) == 0);
        /* A line that cannot start a secret comes out at once. */
        CHECK(masker_feed(m, "hello world\n", 12, &out) == 0);
        CHECK_EQ_INT(out.len, 12);
        CHECK_EQ_INT(masker_pending(m), 0);
        /* Only the possible start of a secret is kept back. */
        CHECK(masker_feed(m, "x=Super", 7, &out) == 0);
        CHECK_EQ_INT(out.len, 14);
        CHECK_EQ_INT(masker_pending(m), 5);
        CHECK(masker_feed(m, "Secret123!", 10, &out) == 0);
        CHECK(out.len == 18 && memcmp(out.data, "hello world\nx=***!", 18) == 0);
        CHECK_EQ_INT(masker_bytes_masked(m), 14);
        /* End of stream: a cut-off secret is not one. */
        CHECK(masker_feed(m, "SuperSec", 8, &out) == 0);
        CHECK_EQ_INT(out.len, 18);
        CHECK(masker_flush(m, &out) == 0);
        CHECK(out.len == 26 && memcmp(out.data + 18, "SuperSec", 8) == 0);
        CHECK_EQ_INT(masker_pending(m), 0);
        /* And a new stream starts clean. */
        CHECK(masker_feed(m, "ret123", 6, &out) == 0);
        CHECK(masker_flush(m, &out) == 0);
        CHECK(out.len == 32 && memcmp(out.data + 26, "ret123", 6) == 0);

        /* A full output buffer refuses without consuming anything. */
        Buf small = BUF_INIT(4);
        CHECK_EQ_INT(masker_feed(m, "0123456789", 10, &small), -ENOBUFS);
        CHECK_EQ_INT(small.len, 0);
        CHECK_EQ_INT(masker_pending(m), 0);
        buf_done(&small);
}

static void fill_log(uint8_t *p, size_t n, uint64_t seed) {
        static const char words[] = "the quick brown fox jumps over lazy dogs 0123456789 "
                                    "compiling linking [OK] warning: error: test_passed\n";
        for (size_t i = 0; i < n; i++) {
                seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
                p[i] = (uint8_t) words[(seed >> 33) % (sizeof(words) - 1)];
        }
}

static void test_big_chunk(void) {
        char *sec[] = { "SuperSecret123", "hunter2hunter2", NULL };
        _cleanup_(masker_freep) Masker *m = NULL;
        _cleanup_(buf_done) Buf out = BUF_INIT(0);
        size_t n = 5 << 20;
        _cleanup_free_ uint8_t *in = malloc(n);

        CHECK(in);
        fill_log(in, n, 1);
        in[n - 1] = '\n';
        CHECK(masker_new(sec, &m) == 0);
        CHECK(masker_feed(m, in, n, &out) == 0);
        CHECK(out.len == n && memcmp(out.data, in, n) == 0);
        CHECK_EQ_INT(masker_pending(m), 0);
        CHECK_EQ_INT(masker_bytes_masked(m), 0);
}

/* More matches in one feed than the masker keeps ranges for at a time. */
static void test_many_matches(void) {
        char *sec[] = { "SuperSecret123", NULL };
        _cleanup_(masker_freep) Masker *m = NULL;
        _cleanup_(buf_done) Buf in = BUF_INIT(0), expect = BUF_INIT(0);
        _cleanup_free_ char *got = NULL;

        for (int i = 0; i < 10000; i++) {
                CHECK(buf_append(&in, i % 2 ? "SuperSecret123 " : "SuperSecret123.", 15) == 0);
                CHECK(buf_append(&expect, i % 2 ? "*** " : "***.", 4) == 0);
        }
        CHECK(buf_append(&expect, "", 1) == 0);
        CHECK(masker_new(sec, &m) == 0);
        got = mask_with(m, in.data, in.len, 0);
        CHECK_STREQ(got, (char *) expect.data);
        CHECK_EQ_INT(masker_bytes_masked(m), 10000 * 14);
}

static uint64_t rnd(uint64_t *state) {
        *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
        return *state >> 33;
}

/* Against a naive reference on random text over {a, b, x} with random
 * secrets over {a, b}: every byte inside any occurrence is masked, each run
 * of masked bytes becomes one "***". (Over this alphabet the other
 * encodings of a secret are the secret itself or cannot occur.) Pieces of
 * random length. */
static void test_random_differential(void) {
        uint64_t seed = 42;

        for (int round = 0; round < 300; round++) {
                char secrets[4][10], in[257], expect[1024];
                char *sec[5] = {};
                bool masked[256] = {};
                size_t n_sec = 1 + rnd(&seed) % 4, n = 1 + rnd(&seed) % 256, o = 0;
                _cleanup_(masker_freep) Masker *m = NULL;
                _cleanup_(buf_done) Buf out = BUF_INIT(0);

                for (size_t k = 0; k < n_sec; k++) {
                        size_t len = 6 + rnd(&seed) % 4;
                        for (size_t i = 0; i < len; i++)
                                secrets[k][i] = "ab"[rnd(&seed) % 2];
                        secrets[k][len] = 0;
                        sec[k] = secrets[k];
                }
                for (size_t i = 0; i < n; i++)
                        in[i] = "aaabbbx"[rnd(&seed) % 7];
                in[n] = 0;
                for (size_t k = 0; k < n_sec; k++)
                        for (const char *p = in; (p = strstr(p, secrets[k])); p++)
                                memset(masked + (p - in), 1, strlen(secrets[k]));
                for (size_t i = 0; i < n; i++) {
                        if (!masked[i])
                                expect[o++] = in[i];
                        else if (i == 0 || !masked[i - 1])
                                memcpy(expect + o, "***", 3), o += 3;
                }
                expect[o] = 0;

                CHECK(masker_new(sec, &m) == 0);
                for (size_t i = 0; i < n;) {
                        size_t want = 1 + rnd(&seed) % 20, piece = MIN(n - i, want);
                        CHECK(masker_feed(m, in + i, piece, &out) == 0);
                        i += piece;
                }
                CHECK(masker_flush(m, &out) == 0);
                CHECK(buf_append(&out, "", 1) == 0);
                if (strcmp((char *) out.data, expect) != 0) {
                        fprintf(stderr, "round %d: in '%s'\n got '%s'\n expected '%s'\n", round,
                                in, (char *) out.data, expect);
                        exit(1);
                }
        }
}

static void test_throughput(void) {
        char *sec[21];
        char names[20][40];
        _cleanup_(masker_freep) Masker *m = NULL;
        _cleanup_(buf_done) Buf out = BUF_INIT(0);
        size_t chunk = 64 << 10, block = 1 << 20, total = 64 << 20;
        _cleanup_free_ uint8_t *in = malloc(block);
        struct timespec a, b;
        double secs;

        for (int i = 0; i < 20; i++) {
                snprintf(names[i], sizeof(names[i]), "ghp_%02dAbCdEfGhIjKlMnOpQrStUvWxYz%04d", i,
                         i * 37);
                sec[i] = names[i];
        }
        sec[20] = NULL;
        CHECK(in);
        fill_log(in, block, 7);
        for (int i = 0; i < 20; i++)
                memcpy(in + 1000 + (size_t) i * 50000, names[i], strlen(names[i]));
        CHECK(masker_new(sec, &m) == 0);
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (size_t done = 0; done < total; done += chunk) {
                buf_clear(&out);
                CHECK(masker_feed(m, in + done % block, chunk, &out) == 0);
        }
        CHECK(masker_flush(m, &out) == 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        secs = (double) (b.tv_sec - a.tv_sec) + (double) (b.tv_nsec - a.tv_nsec) / 1e9;
        CHECK_EQ_INT(masker_bytes_masked(m), 64 * 20 * strlen(names[0]));
        printf("throughput: %.0f MB/s (64 MB in 64 KiB chunks, 20 secrets, %zu patterns, %.3f s)\n",
               (double) total / (1 << 20) / secs, masker_n_patterns(m), secs);
}

int main(void) {
        test_refuse();
        test_raw();
        test_base64();
        test_url();
        test_json();
        test_multiline();
        test_overlap_and_prefix();
        test_binary();
        test_splits();
        test_holdback_and_flush();
        test_big_chunk();
        test_many_matches();
        test_random_differential();
        test_throughput();
        return 0;
}
