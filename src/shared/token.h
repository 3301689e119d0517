/* SPDX-License-Identifier: MIT */
#pragma once

/* API tokens (DESIGN §7): 256 random bits, shown once, stored only as a
 * hash, prefixed by kind. Never log a token. */

#include <stdbool.h>
#include <stdint.h>

#define TOKEN_HASH_SIZE 32
#define TOKEN_MAX_LEN 128

typedef enum TokenKind {
        TOKEN_ADMIN,
        TOKEN_USER,
        TOKEN_WORKER,  /* registers workers */
        TOKEN_SESSION, /* a registered worker's own session */
        _TOKEN_KIND_MAX,
        _TOKEN_KIND_INVALID = -1,
} TokenKind;

const char *token_kind_to_string(TokenKind k);
TokenKind token_kind_from_string(const char *s);

/* A new token of kind k: "kiln_adm_" / "kiln_usr_" / "kiln_wrk_" + 64 hex. */
int token_generate(TokenKind k, char **ret);
/* The stored form. Refuses strings that cannot be tokens (-EINVAL). */
int token_hash(const char *token, uint8_t ret[TOKEN_HASH_SIZE]);
/* Constant-time comparison of two hashes. */
bool token_hash_equal(const uint8_t a[TOKEN_HASH_SIZE], const uint8_t b[TOKEN_HASH_SIZE]);
