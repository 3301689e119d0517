/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mask.h"

#define NONE UINT32_MAX
/* States in the first rows of the BFS order get a full 256-entry transition
 * row; deeper states keep their sorted children and a failure link. A byte
 * stream that matches nothing spends nearly all its time in the dense rows. */
#define DENSE_STATES_MAX 2048U

typedef struct Pattern {
        uint8_t *data;
        size_t len;
} Pattern;

typedef struct PatternSet {
        Pattern *items;
        size_t n, cap;
        size_t total;
} PatternSet;

typedef struct Node {
        uint32_t fail;
        uint32_t child_start;
        uint16_t depth;
        /* Length of the longest pattern that ends here (0: none). */
        uint16_t out_len;
        uint16_t child_count;
        uint8_t byte;
} Node;

typedef struct Range {
        uint64_t start, end; /* [start, end) in stream positions */
} Range;

struct Masker {
        Node *nodes;
        uint32_t n_nodes;
        uint32_t *delta; /* n_dense × 256 */
        uint32_t n_dense;
        size_t n_patterns;
        size_t max_len;

        uint32_t state;
        uint64_t pos;     /* stream position of the next input byte */
        uint64_t emitted; /* first position not handed out yet */
        bool in_run;      /* the last thing handed out was "***" */

        uint8_t *hold; /* bytes [emitted, pos) between calls; max_len of room */
        size_t n_hold;

        Range *ranges; /* masked, not yet fully handed out; sorted, disjoint */
        size_t n_ranges, ranges_cap;

        uint64_t bytes_masked;
};

/* ---- pattern variants ---- */

static void pattern_set_done(PatternSet *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->items[i].data);
        s->items = mfree(s->items);
        s->n = s->cap = s->total = 0;
}

static int pattern_add(PatternSet *s, const void *p, size_t n) {
        uint8_t *copy;

        if (n < MASK_SECRET_MIN)
                return 0; /* too short to mask without masking ordinary output */
        if (n > UINT16_MAX || n > MASK_PATTERN_BYTES_MAX - s->total)
                return -E2BIG;
        if (s->n == s->cap) {
                size_t cap = MAX(s->cap * 2, (size_t) 16);
                Pattern *items = reallocarray(s->items, cap, sizeof(Pattern));
                if (!items)
                        return -ENOMEM;
                s->items = items;
                s->cap = cap;
        }
        copy = malloc(n);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, p, n);
        s->items[s->n++] = (Pattern) { copy, n };
        s->total += n;
        return 0;
}

static int buf_add_char(Buf *b, char c) {
        return buf_append(b, &c, 1);
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The secret sits at byte offset `align` (mod 3) of a larger blob. Output
 * character j encodes bits [6p, 6p+6) of group g = j/4 (p = j%4), i.e. bytes
 * 3g + 6p/8 .. 3g + (6p+5)/8 of the blob; it is stable exactly when all of
 * those are secret bytes. The stable characters are contiguous. */
static int add_base64_core(PatternSet *s, const uint8_t *p, size_t n, unsigned align,
                           const char *alphabet) {
        _cleanup_(buf_done) Buf core = BUF_INIT(0);
        size_t total = align + n, groups = (total + 2) / 3;
        int r;

        for (size_t g = 0; g < groups; g++) {
                uint32_t v = 0;
                for (size_t k = 0; k < 3; k++) {
                        size_t i = 3 * g + k;
                        uint8_t byte = (i >= align && i < total) ? p[i - align] : 0;
                        v = (v << 8) | byte;
                }
                for (unsigned q = 0; q < 4; q++) {
                        size_t lo = 3 * g + (6 * q) / 8, hi = 3 * g + (6 * q + 5) / 8;
                        if (lo < align || hi >= total)
                                continue;
                        r = buf_add_char(&core, alphabet[(v >> (18 - 6 * q)) & 63]);
                        if (r < 0)
                                return r;
                }
        }
        return pattern_add(s, core.data, core.len);
}

typedef enum UrlMode {
        URL_COMPONENT,  /* encodeURIComponent() */
        URL_QUOTE,      /* Python quote(): '/' is safe */
        URL_QUOTE_PLUS, /* Python quote_plus(): ' ' becomes '+' */
        _URL_MODE_MAX,
} UrlMode;

static bool url_safe(uint8_t c, UrlMode mode) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                return true;
        if (c != 0 && strchr("-_.~", c))
                return true;
        if (mode == URL_COMPONENT)
                return c != 0 && strchr("!*'()", c);
        if (mode == URL_QUOTE)
                return c == '/';
        return false;
}

static int add_url(PatternSet *s, const uint8_t *p, size_t n, UrlMode mode, bool upper) {
        _cleanup_(buf_done) Buf b = BUF_INIT(0);
        const char *hex = upper ? "0123456789ABCDEF" : "0123456789abcdef";
        int r;

        for (size_t i = 0; i < n; i++) {
                char esc[3] = { '%', hex[p[i] >> 4], hex[p[i] & 15] };
                if (mode == URL_QUOTE_PLUS && p[i] == ' ')
                        r = buf_add_char(&b, '+');
                else if (url_safe(p[i], mode))
                        r = buf_add_char(&b, (char) p[i]);
                else
                        r = buf_append(&b, esc, sizeof(esc));
                if (r < 0)
                        return r;
        }
        return pattern_add(s, b.data, b.len);
}

enum {
        JSON_SLASH = 1 << 0,      /* "\/" */
        JSON_UPPER = 1 << 1,      /* \u001B rather than \u001b */
        JSON_ASCII = 1 << 2,      /* non-ASCII as \uXXXX (Python's ensure_ascii) */
        JSON_HTML = 1 << 3,       /* < > & U+2028 U+2029 as \u003c... (Go's encoding/json) */
        _JSON_FLAGS_ALL = (1 << 4) - 1,
};

static int json_add_u(Buf *b, uint32_t cp, unsigned flags) {
        const char *hex = (flags & JSON_UPPER) ? "0123456789ABCDEF" : "0123456789abcdef";
        char e[6] = { '\\', 'u', hex[(cp >> 12) & 15], hex[(cp >> 8) & 15], hex[(cp >> 4) & 15],
                      hex[cp & 15] };
        return buf_append(b, e, sizeof(e));
}

/* Decodes one well-formed UTF-8 sequence of 2-4 bytes; 0 if there is none. */
static size_t utf8_decode(const uint8_t *p, size_t n, uint32_t *ret) {
        size_t len;
        uint32_t cp;

        if (p[0] >= 0xc2 && p[0] <= 0xdf)
                len = 2, cp = p[0] & 0x1f;
        else if (p[0] >= 0xe0 && p[0] <= 0xef)
                len = 3, cp = p[0] & 0x0f;
        else if (p[0] >= 0xf0 && p[0] <= 0xf4)
                len = 4, cp = p[0] & 0x07;
        else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                return 0;
        *ret = cp;
        return len;
}

static int json_escape_byte(Buf *b, uint8_t c, unsigned flags) {
        static const char short_esc[] = { ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n',
                                          ['\r'] = 'r', ['\t'] = 't' };
        char e[2] = { '\\', 0 };

        if (c < sizeof(short_esc) && short_esc[c]) {
                e[1] = short_esc[c];
                return buf_append(b, e, 2);
        }
        if (c < 0x20)
                return json_add_u(b, c, flags);
        if (c == '"' || c == '\\' || (c == '/' && (flags & JSON_SLASH))) {
                e[1] = (char) c;
                return buf_append(b, e, 2);
        }
        if ((flags & JSON_HTML) && (c == '<' || c == '>' || c == '&'))
                return json_add_u(b, c, flags);
        return buf_add_char(b, (char) c);
}

static int add_json(PatternSet *s, const uint8_t *p, size_t n, unsigned flags) {
        _cleanup_(buf_done) Buf b = BUF_INIT(0);
        int r;

        for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t len = p[i] >= 0x80 && (flags & (JSON_ASCII | JSON_HTML))
                                     ? utf8_decode(p + i, n - i, &cp)
                                     : 0;

                /* Go escapes U+2028 and U+2029 along with < > &. */
                if (len > 0 && !(flags & JSON_ASCII) && cp != 0x2028 && cp != 0x2029) {
                        r = buf_append(&b, p + i, len);
                        i += len;
                } else if (len == 0) {
                        r = json_escape_byte(&b, p[i], flags);
                        i++;
                } else if (cp >= 0x10000) {
                        cp -= 0x10000;
                        r = json_add_u(&b, 0xd800 | (cp >> 10), flags);
                        if (r >= 0)
                                r = json_add_u(&b, 0xdc00 | (cp & 0x3ff), flags);
                        i += len;
                } else {
                        r = json_add_u(&b, cp, flags);
                        i += len;
                }
                if (r < 0)
                        return r;
        }
        return pattern_add(s, b.data, b.len);
}

static int add_lines(PatternSet *s, const uint8_t *p, size_t n) {
        const uint8_t *end = p + n;
        int r;

        if (!memchr(p, '\n', n))
                return 0;
        while (p < end) {
                const uint8_t *nl = memchr(p, '\n', (size_t) (end - p));
                size_t len = (size_t) ((nl ? nl : end) - p);

                if (len > 0 && p[len - 1] == '\r')
                        len--;
                r = pattern_add(s, p, len);
                if (r < 0)
                        return r;
                p = nl ? nl + 1 : end;
        }
        return 0;
}

static int add_secret(PatternSet *s, const uint8_t *p, size_t n) {
        int r;

        if (n < MASK_SECRET_MIN || n > MASK_SECRET_MAX)
                return -EINVAL;

        r = pattern_add(s, p, n);
        if (r < 0)
                return r;
        r = add_lines(s, p, n);
        if (r < 0)
                return r;
        for (unsigned align = 0; align < 3; align++) {
                r = add_base64_core(s, p, n, align, b64_std);
                if (r < 0)
                        return r;
                r = add_base64_core(s, p, n, align, b64_url);
                if (r < 0)
                        return r;
        }
        for (UrlMode mode = 0; mode < _URL_MODE_MAX; mode++)
                for (int upper = 0; upper <= 1; upper++) {
                        r = add_url(s, p, n, mode, upper);
                        if (r < 0)
                                return r;
                }
        for (unsigned flags = 0; flags <= _JSON_FLAGS_ALL; flags++) {
                r = add_json(s, p, n, flags);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- automaton ---- */

static int pattern_cmp(const void *a, const void *b) {
        const Pattern *x = a, *y = b;
        int c = memcmp(x->data, y->data, MIN(x->len, y->len));

        if (c != 0)
                return c;
        return (x->len > y->len) - (x->len < y->len);
}

static void pattern_set_sort_unique(PatternSet *s) {
        size_t k = 0;

        if (s->n == 0)
                return;
        qsort(s->items, s->n, sizeof(Pattern), pattern_cmp);
        for (size_t i = 0; i < s->n; i++) {
                if (k > 0 && pattern_cmp(&s->items[k - 1], &s->items[i]) == 0) {
                        s->total -= s->items[i].len;
                        free(s->items[i].data);
                        continue;
                }
                s->items[k++] = s->items[i];
        }
        s->n = k;
}

static inline uint32_t node_child(const Masker *m, uint32_t s, uint8_t c) {
        const Node *n = &m->nodes[s];

        for (uint32_t i = n->child_start; i < n->child_start + n->child_count; i++) {
                if (m->nodes[i].byte == c)
                        return i;
                if (m->nodes[i].byte > c)
                        break;
        }
        return NONE;
}

/* Dense rows hold the target state with OUT_FLAG set when a pattern ends
 * there, so the scanning loop touches only the row. */
#define OUT_FLAG 0x80000000U
#define STATE_MASK 0x7fffffffU

static inline uint32_t with_flag(const Masker *m, uint32_t t) {
        return m->nodes[t].out_len > 0 ? t | OUT_FLAG : t;
}

/* Returns the next state, with OUT_FLAG when a pattern ends there. */
static inline uint32_t masker_step(const Masker *m, uint32_t s, uint8_t c) {
        for (;;) {
                uint32_t t;

                if (_likely_(s < m->n_dense))
                        return m->delta[(size_t) s * 256 + c];
                t = node_child(m, s, c);
                if (t != NONE)
                        return with_flag(m, t);
                s = m->nodes[s].fail;
        }
}

typedef struct Trie {
        uint32_t *first_child, *next_sibling, *last_child;
        uint8_t *byte;
        bool *terminal;
        uint32_t n;
} Trie;

static void trie_done(Trie *t) {
        free(t->first_child);
        free(t->next_sibling);
        free(t->last_child);
        free(t->byte);
        free(t->terminal);
}

/* Patterns are sorted, so each one shares a prefix with the previous one and
 * the rest hangs off the previous one's path; children are created in
 * increasing byte order. */
static int trie_build(const PatternSet *s, size_t max_len, Trie *t) {
        _cleanup_free_ uint32_t *path = NULL;
        size_t cap = s->total + 1;

        t->first_child = malloc(cap * sizeof(uint32_t));
        t->next_sibling = malloc(cap * sizeof(uint32_t));
        t->last_child = malloc(cap * sizeof(uint32_t));
        t->byte = malloc(cap);
        t->terminal = calloc(cap, sizeof(bool));
        path = malloc((max_len + 1) * sizeof(uint32_t));
        if (!t->first_child || !t->next_sibling || !t->last_child || !t->byte || !t->terminal ||
            !path)
                return -ENOMEM;

        t->n = 1;
        t->first_child[0] = t->next_sibling[0] = NONE;
        t->byte[0] = 0;
        path[0] = 0;
        for (size_t i = 0; i < s->n; i++) {
                const Pattern *p = &s->items[i];
                size_t l = 0;

                if (i > 0) {
                        const Pattern *q = &s->items[i - 1];
                        while (l < p->len && l < q->len && p->data[l] == q->data[l])
                                l++;
                }
                for (size_t j = l; j < p->len; j++) {
                        uint32_t u = path[j], v = t->n++;
                        t->first_child[v] = t->next_sibling[v] = NONE;
                        t->byte[v] = p->data[j];
                        if (t->first_child[u] == NONE)
                                t->first_child[u] = v;
                        else
                                t->next_sibling[t->last_child[u]] = v;
                        t->last_child[u] = v;
                        path[j + 1] = v;
                }
                t->terminal[path[p->len]] = true;
        }
        return 0;
}

/* Renumbers the trie breadth-first, so that a node's children are
 * contiguous and every failure link points to an earlier node. */
static int masker_layout(Masker *m, const Trie *t, uint32_t *parent, bool *terminal) {
        _cleanup_free_ uint32_t *queue = malloc(t->n * sizeof(uint32_t));
        uint32_t tail = 1;

        m->nodes = calloc(t->n, sizeof(Node));
        if (!queue || !m->nodes)
                return -ENOMEM;
        m->n_nodes = t->n;
        queue[0] = 0;
        parent[0] = 0;
        terminal[0] = false;
        for (uint32_t s = 0; s < tail; s++) {
                m->nodes[s].child_start = tail;
                for (uint32_t c = t->first_child[queue[s]]; c != NONE; c = t->next_sibling[c]) {
                        queue[tail] = c;
                        m->nodes[tail].byte = t->byte[c];
                        m->nodes[tail].depth = (uint16_t) (m->nodes[s].depth + 1);
                        parent[tail] = s;
                        terminal[tail] = t->terminal[c];
                        tail++;
                        m->nodes[s].child_count++;
                }
        }
        return 0;
}

static void masker_link(Masker *m, const uint32_t *parent, const bool *terminal) {
        for (uint32_t s = 0; s < m->n_nodes; s++) {
                Node *n = &m->nodes[s];
                uint32_t *row;

                if (s == 0 || parent[s] == 0)
                        n->fail = 0;
                else
                        n->fail = masker_step(m, m->nodes[parent[s]].fail, n->byte) & STATE_MASK;
                n->out_len = terminal[s] ? n->depth : m->nodes[n->fail].out_len;

                if (s >= m->n_dense)
                        continue;
                row = m->delta + (size_t) s * 256;
                if (s == 0)
                        memset(row, 0, 256 * sizeof(uint32_t));
                else
                        memcpy(row, m->delta + (size_t) n->fail * 256, 256 * sizeof(uint32_t));
                for (uint32_t i = n->child_start; i < n->child_start + n->child_count; i++)
                        row[m->nodes[i].byte] = i;
        }
}

/* Out lengths are only final once every failure link is: flags last. */
static void masker_flag_rows(Masker *m) {
        for (size_t i = 0; i < (size_t) m->n_dense * 256; i++)
                m->delta[i] = with_flag(m, m->delta[i]);
}

static int masker_compile(Masker *m, PatternSet *s) {
        _cleanup_(trie_done) Trie t = {};
        _cleanup_free_ uint32_t *parent = NULL;
        _cleanup_free_ bool *terminal = NULL;
        int r;

        pattern_set_sort_unique(s);
        m->n_patterns = s->n;
        for (size_t i = 0; i < s->n; i++)
                m->max_len = MAX(m->max_len, s->items[i].len);

        r = trie_build(s, m->max_len, &t);
        if (r < 0)
                return r;
        parent = malloc(t.n * sizeof(uint32_t));
        terminal = malloc(t.n * sizeof(bool));
        if (!parent || !terminal)
                return -ENOMEM;
        r = masker_layout(m, &t, parent, terminal);
        if (r < 0)
                return r;

        m->n_dense = MIN(m->n_nodes, DENSE_STATES_MAX);
        m->delta = malloc((size_t) m->n_dense * 256 * sizeof(uint32_t));
        if (!m->delta)
                return -ENOMEM;
        masker_link(m, parent, terminal);
        masker_flag_rows(m);

        /* Pending ranges all lie in the last max_len bytes, are at least
         * MASK_SECRET_MIN long and never touch: this many always fit. */
        m->ranges_cap = m->max_len / (MASK_SECRET_MIN + 1) + 64;
        m->ranges = malloc(m->ranges_cap * sizeof(Range));
        m->hold = malloc(MAX(m->max_len, (size_t) 1));
        if (!m->ranges || !m->hold)
                return -ENOMEM;
        return 0;
}

int masker_new_iovec(const struct iovec *secrets, size_t n_secrets, Masker **ret) {
        _cleanup_(pattern_set_done) PatternSet set = {};
        _cleanup_(masker_freep) Masker *m = NULL;
        int r;

        if (n_secrets > MASK_SECRETS_MAX)
                return -E2BIG;
        for (size_t i = 0; i < n_secrets; i++) {
                r = add_secret(&set, secrets[i].iov_base, secrets[i].iov_len);
                if (r < 0)
                        return r;
        }

        m = calloc(1, sizeof(Masker));
        if (!m)
                return -ENOMEM;
        r = masker_compile(m, &set);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

int masker_new(char *const *secrets, Masker **ret) {
        _cleanup_free_ struct iovec *iov = NULL;
        size_t n = 0;

        while (secrets && secrets[n]) {
                if (++n > MASK_SECRETS_MAX)
                        return -E2BIG;
        }
        iov = calloc(MAX(n, (size_t) 1), sizeof(struct iovec));
        if (!iov)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                iov[i] = (struct iovec) { secrets[i], strlen(secrets[i]) };
        return masker_new_iovec(iov, n, ret);
}

Masker *masker_free(Masker *m) {
        if (!m)
                return NULL;
        free(m->nodes);
        free(m->delta);
        free(m->hold);
        free(m->ranges);
        return mfree(m);
}

/* ---- streaming ---- */

typedef struct Input {
        const uint8_t *data;
        uint64_t pos; /* stream position of data[0]; the hold ends there */
        size_t n;
} Input;

/* Appends stream bytes [from, to) that are not masked; they come from the
 * hold first, then from the input. out has room (reserved by the caller). */
static void emit_plain(Masker *m, const Input *in, uint64_t from, uint64_t to, Buf *out) {
        uint64_t hold_pos = in->pos - m->n_hold;

        if (from < in->pos) {
                uint64_t e = MIN(to, in->pos);
                (void) buf_append(out, m->hold + (from - hold_pos), (size_t) (e - from));
                from = e;
        }
        if (from < to)
                (void) buf_append(out, in->data + (from - in->pos), (size_t) (to - from));
}

static void emit_until(Masker *m, const Input *in, uint64_t upto, Buf *out) {
        uint64_t p = m->emitted;
        size_t done = 0;

        while (p < upto) {
                const Range *r = done < m->n_ranges ? &m->ranges[done] : NULL;

                if (r && r->start <= p) {
                        uint64_t e = MIN(r->end, upto);
                        if (!m->in_run)
                                (void) buf_append(out, "***", 3);
                        m->in_run = true;
                        m->bytes_masked += e - p;
                        p = e;
                        if (p == r->end)
                                done++;
                } else {
                        uint64_t e = r ? MIN(r->start, upto) : upto;
                        emit_plain(m, in, p, e, out);
                        m->in_run = false;
                        p = e;
                }
        }
        if (done > 0) {
                memmove(m->ranges, m->ranges + done, (m->n_ranges - done) * sizeof(Range));
                m->n_ranges -= done;
        }
        m->emitted = MAX(m->emitted, upto);
}

static void add_range(Masker *m, uint64_t start, uint64_t end) {
        while (m->n_ranges > 0 && m->ranges[m->n_ranges - 1].end >= start) {
                start = MIN(start, m->ranges[m->n_ranges - 1].start);
                m->n_ranges--;
        }
        m->ranges[m->n_ranges++] = (Range) { start, end };
}

/* Moves the unfinished tail [emitted, end of input) into the hold. */
static void keep_tail(Masker *m, const Input *in) {
        uint64_t hold_pos = in->pos - m->n_hold, end = in->pos + in->n;
        size_t keep_old = 0;

        if (m->emitted < in->pos) {
                keep_old = (size_t) (in->pos - m->emitted);
                memmove(m->hold, m->hold + (m->emitted - hold_pos), keep_old);
        }
        if (end > MAX(m->emitted, in->pos)) {
                uint64_t from = MAX(m->emitted, in->pos);
                memcpy(m->hold + keep_old, in->data + (from - in->pos), (size_t) (end - from));
        }
        m->n_hold = (size_t) (end - m->emitted);
}

int masker_feed(Masker *m, const void *data, size_t n, Buf *out) {
        Input in = { data, m->pos, n };
        const uint8_t *d = data;
        uint32_t s = m->state;
        int r;

        /* Masking never makes the output longer (every pattern is longer than
         * "***"), so this is all the room that can be needed. */
        if (n > SIZE_MAX - m->n_hold)
                return -ENOBUFS;
        r = buf_reserve(out, m->n_hold + n);
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                uint32_t t = masker_step(m, s, d[i]);

                s = t & STATE_MASK;
                if (_unlikely_(t & OUT_FLAG)) {
                        uint64_t end = in.pos + i + 1;
                        add_range(m, end - m->nodes[s].out_len, end);
                        if (m->n_ranges == m->ranges_cap)
                                emit_until(m, &in, end - m->nodes[s].depth, out);
                }
        }
        m->state = s;
        emit_until(m, &in, in.pos + n - m->nodes[s].depth, out);
        keep_tail(m, &in);
        m->pos += n;
        return 0;
}

int masker_flush(Masker *m, Buf *out) {
        Input in = { NULL, m->pos, 0 };
        int r;

        r = buf_reserve(out, m->n_hold);
        if (r < 0)
                return r;
        emit_until(m, &in, m->pos, out);
        m->n_hold = 0;
        m->n_ranges = 0;
        m->state = 0;
        m->in_run = false;
        return 0;
}

uint64_t masker_bytes_masked(const Masker *m) {
        return m->bytes_masked;
}

size_t masker_pending(const Masker *m) {
        return m->n_hold;
}

size_t masker_n_patterns(const Masker *m) {
        return m->n_patterns;
}
