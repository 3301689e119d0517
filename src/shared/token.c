/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "token.h"

static const char *const kind_names[_TOKEN_KIND_MAX] = {
        [TOKEN_ADMIN] = "admin",
        [TOKEN_USER] = "user",
        [TOKEN_WORKER] = "worker",
        [TOKEN_SESSION] = "session",
};

static const char *const kind_prefixes[_TOKEN_KIND_MAX] = {
        [TOKEN_ADMIN] = "kiln_adm_",
        [TOKEN_USER] = "kiln_usr_",
        [TOKEN_WORKER] = "kiln_wrk_",
        [TOKEN_SESSION] = "kiln_wrk_",
};

const char *token_kind_to_string(TokenKind k) {
        return k >= 0 && k < _TOKEN_KIND_MAX ? kind_names[k] : NULL;
}

TokenKind token_kind_from_string(const char *s) {
        for (int i = 0; s && i < _TOKEN_KIND_MAX; i++)
                if (streq(kind_names[i], s))
                        return (TokenKind) i;
        return _TOKEN_KIND_INVALID;
}

int token_generate(TokenKind k, char **ret) {
        uint8_t raw[32];
        char hex[65];

        if (k < 0 || k >= _TOKEN_KIND_MAX)
                return -EINVAL;
        if (sodium_init() < 0)
                return -EIO;
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
        sodium_memzero(raw, sizeof raw);
        size_t n = strlen(kind_prefixes[k]) + 64 + 1;
        char *t = malloc(n);
        if (!t)
                return -ENOMEM;
        memcpy(t, kind_prefixes[k], strlen(kind_prefixes[k]));
        memcpy(t + strlen(kind_prefixes[k]), hex, 65);
        sodium_memzero(hex, sizeof hex);
        *ret = t;
        return 0;
}

int token_hash(const char *token, uint8_t ret[TOKEN_HASH_SIZE]) {
        size_t n = token ? strnlen(token, TOKEN_MAX_LEN + 1) : 0;
        if (n < 16 || n > TOKEN_MAX_LEN || !strneq(token, "kiln_", 5))
                return -EINVAL;
        crypto_generichash(ret, TOKEN_HASH_SIZE, (const unsigned char *) token, n, NULL, 0);
        return 0;
}

bool token_hash_equal(const uint8_t a[TOKEN_HASH_SIZE], const uint8_t b[TOKEN_HASH_SIZE]) {
        return sodium_memcmp(a, b, TOKEN_HASH_SIZE) == 0;
}
