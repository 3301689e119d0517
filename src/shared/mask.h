/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf.h"

/* Masks secrets in a byte stream before it leaves the worker.
 *
 * Every occurrence of a secret, or of one of its common encodings, is
 * replaced by "***"; overlapping or adjacent occurrences become a single
 * "***". The encodings: the raw bytes; each line of a multi-line secret;
 * base64 (standard and URL-safe alphabets) of the secret at any of the three
 * alignments inside a larger blob, as the stable core of characters that
 * every such encoding contains; percent-encoding as encodeURIComponent(),
 * Python's quote() and quote_plus() produce it, with upper- or lower-case
 * hex; JSON string escaping with or without "\/", upper- or lower-case
 * \u00XX, with non-ASCII kept or \u-escaped, with or without Go's HTML
 * escapes of < > &.
 *
 * All patterns go into one Aho–Corasick automaton, so the cost per byte does
 * not grow with the number of secrets. The stream can be split anywhere
 * between masker_feed() calls: the masker keeps back only the shortest tail
 * that could still start a match and hands everything else out at once.
 * A secret cut off by the end of the stream is not a match; its prefix is
 * emitted by masker_flush(). */

#define MASK_SECRET_MIN 6
#define MASK_SECRET_MAX 4096
#define MASK_SECRETS_MAX 256
/* Sum of the lengths of all patterns, encodings included. */
#define MASK_PATTERN_BYTES_MAX ((size_t) 1 << 20)

typedef struct Masker Masker;

/* secrets: a NULL-terminated list. -EINVAL for a secret shorter than
 * MASK_SECRET_MIN or longer than MASK_SECRET_MAX, -E2BIG past the limits on
 * count or pattern bytes. An empty list gives a masker that masks nothing. */
int masker_new(char *const *secrets, Masker **ret);
/* The same for binary secrets (which may contain NUL bytes). */
int masker_new_iovec(const struct iovec *secrets, size_t n_secrets, Masker **ret);

/* Appends to out the masked bytes that are final. On failure (-ENOMEM,
 * -ENOBUFS from out's ceiling) nothing was consumed and out is unchanged. */
int masker_feed(Masker *m, const void *data, size_t n, Buf *out);
/* End of stream: appends whatever was kept back; the masker starts a new
 * stream afterwards. */
int masker_flush(Masker *m, Buf *out);

/* Input bytes replaced so far, over all streams. */
uint64_t masker_bytes_masked(const Masker *m);
/* Bytes currently kept back. */
size_t masker_pending(const Masker *m);
size_t masker_n_patterns(const Masker *m);

Masker *masker_free(Masker *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Masker *, masker_free);
