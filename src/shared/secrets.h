/* SPDX-License-Identifier: MIT */
#pragma once

/* Secret values, encrypted at rest with a key kept in the data directory
 * (mode 0600). The store only ever sees the sealed form. */

#include <stddef.h>
#include <stdint.h>

#define SECRET_KEY_SIZE 32
#define SECRET_MIN_LEN 6
#define SECRET_MAX_LEN 65536
#define SECRET_NAME_MAX 64

/* Loads datadir/secrets.key, creating it (0600) on first use. Refuses a key
 * file that others can read. */
int secrets_key_load(const char *datadir, uint8_t key[SECRET_KEY_SIZE]);
/* NULL if name is valid ([A-Za-z_][A-Za-z0-9_]*, ≤ 64), else why not. */
const char *secret_name_invalid(const char *name);
/* NULL if value is acceptable, else why not. */
const char *secret_value_invalid(const char *value, size_t len);
int secret_seal(const uint8_t key[SECRET_KEY_SIZE], const char *value, size_t len,
                uint8_t **ret, size_t *ret_len);
/* Returns the NUL-terminated plaintext. */
int secret_open(const uint8_t key[SECRET_KEY_SIZE], const uint8_t *sealed, size_t len,
                char **ret, size_t *ret_len);
