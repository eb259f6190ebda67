/* A dense hash map from byte-string keys to byte values.
 *
 * Entries live in one array (so the i-th entry is O(1): snapshots and
 * iteration need that) and an open-addressing index of entry numbers finds
 * them by key.  Deleting moves the last entry into the hole, so entry
 * numbers change on delete.  Keys are stored with a NUL after them, so a key
 * without NULs inside can be used as a C string.  Values are copied.
 *
 * Not thread-safe.
 */
#ifndef MPROC_CORE_DICT_H
#define MPROC_CORE_DICT_H

#include <stddef.h>
#include <stdint.h>

typedef struct mproc__dent {
    char *key; /* owned; NUL after klen bytes */
    size_t klen;
    uint64_t hash;
    void *val; /* owned; may be NULL when vlen is 0 */
    size_t vlen;
} mproc__dent;

typedef struct mproc__dict {
    mproc__dent *ents;
    size_t n;
    size_t cap;
    uint32_t *index; /* entry number + 1, or 0 for an empty slot */
    size_t nslots;   /* a power of two, or 0 before the first insert */
} mproc__dict;

void mproc__dict_init(mproc__dict *d);
/* Frees every key and value and the tables. */
void mproc__dict_free(mproc__dict *d);

uint64_t mproc__dict_hash(const void *key, size_t klen);

/* The entry for `key`, or NULL. */
mproc__dent *mproc__dict_find(const mproc__dict *d, const void *key,
                              size_t klen);

/* Stores a copy of `val` under `key`.  *changed (may be NULL) is 1 when the
 * key was absent or held different bytes, 0 when the same bytes were
 * there.  Returns 0 or -ENOMEM (then nothing changed). */
int mproc__dict_set(mproc__dict *d, const void *key, size_t klen,
                    const void *val, size_t vlen, int *changed);

/* Removes `key`.  Returns 1 if it was present, else 0. */
int mproc__dict_delete(mproc__dict *d, const void *key, size_t klen);

/* Removes every entry (keeps the tables' memory). */
void mproc__dict_clear(mproc__dict *d);

static inline size_t mproc__dict_count(const mproc__dict *d)
{
    return d->n;
}

static inline mproc__dent *mproc__dict_at(const mproc__dict *d, size_t i)
{
    return i < d->n ? &d->ents[i] : NULL;
}

#endif
