/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a log stream cut into arbitrary chunks through the
 * secret masker. Whatever the bytes and however they are split, no secret
 * may come out whole, and output without secrets must come out unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mask.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const secrets[] = { "s3cr3t-V@lue", "hunter2hunter2", "tok_ABCDEFGH", NULL };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Masker *m = NULL;
        Buf out = BUF_INIT(64 << 20);
        size_t pos = 1;

        if (size < 1)
                return 0;
        if (masker_new((char *const *) secrets, &m) < 0)
                abort();
        /* The first byte seeds the chunk sizes. */
        unsigned seed = data[0];
        while (pos < size) {
                size_t n = 1 + (seed % 17);
                seed = seed * 1103515245u + 12345u;
                if (n > size - pos)
                        n = size - pos;
                if (masker_feed(m, data + pos, n, &out) < 0)
                        abort();
                pos += n;
        }
        if (masker_flush(m, &out) < 0)
                abort();
        for (size_t i = 0; secrets[i]; i++) {
                size_t l = strlen(secrets[i]);
                if (l > 0 && out.len >= l && memmem(out.data, out.len, secrets[i], l))
                        abort();
        }
        /* Nothing masked: the output is the input, byte for byte. */
        if (masker_bytes_masked(m) == 0 && (out.len != size - 1 || (out.len > 0 && memcmp(out.data, data + 1, out.len) != 0)))
                abort();
        masker_free(m);
        buf_done(&out);
        return 0;
}
