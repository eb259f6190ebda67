/* Dense entries + linear-probing index with backward-shift deletion (no
 * tombstones, so lookups never slow down after many deletes). */
#include "core/dict.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void mproc__dict_init(mproc__dict *d)
{
    memset(d, 0, sizeof(*d));
}

static void free_entry(mproc__dent *e)
{
    free(e->key);
    free(e->val);
}

void mproc__dict_free(mproc__dict *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free_entry(&d->ents[i]);
    }
    free(d->ents);
    free(d->index);
    mproc__dict_init(d);
}

void mproc__dict_clear(mproc__dict *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free_entry(&d->ents[i]);
    }
    d->n = 0;
    if (d->index != NULL) {
        memset(d->index, 0, d->nslots * sizeof(*d->index));
    }
}

/* FNV-1a, then a final mix so the low bits (the slot) depend on every
 * byte. */
uint64_t mproc__dict_hash(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < klen; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static size_t slot_of(const mproc__dict *d, const void *key, size_t klen,
                      uint64_t hash)
{
    size_t mask = d->nslots - 1;
    for (size_t s = hash & mask;; s = (s + 1) & mask) {
        uint32_t v = d->index[s];
        if (v == 0) {
            return s;
        }
        const mproc__dent *e = &d->ents[v - 1];
        if (e->hash == hash && e->klen == klen &&
            memcmp(e->key, key, klen) == 0) {
            return s;
        }
    }
}

mproc__dent *mproc__dict_find(const mproc__dict *d, const void *key,
                              size_t klen)
{
    if (d->n == 0) {
        return NULL;
    }
    uint64_t h = mproc__dict_hash(key, klen);
    uint32_t v = d->index[slot_of(d, key, klen, h)];
    return v ? &d->ents[v - 1] : NULL;
}

static int rehash(mproc__dict *d, size_t nslots)
{
    uint32_t *index = calloc(nslots, sizeof(*index));
    if (index == NULL) {
        return -ENOMEM;
    }
    free(d->index);
    d->index = index;
    d->nslots = nslots;
    for (size_t i = 0; i < d->n; i++) {
        size_t s = d->ents[i].hash & (nslots - 1);
        while (index[s] != 0) {
            s = (s + 1) & (nslots - 1);
        }
        index[s] = (uint32_t)(i + 1);
    }
    return 0;
}

/* Room for one more entry: the array grows by doubling and the index is
 * kept at most half full. */
static int reserve_one(mproc__dict *d)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        if (cap > UINT32_MAX - 1) {
            return -ENOMEM;
        }
        mproc__dent *ents = realloc(d->ents, cap * sizeof(*ents));
        if (ents == NULL) {
            return -ENOMEM;
        }
        d->ents = ents;
        d->cap = cap;
    }
    if ((d->n + 1) * 2 > d->nslots) {
        return rehash(d, d->nslots ? d->nslots * 2 : 16);
    }
    return 0;
}

static void *copy_bytes(const void *val, size_t vlen)
{
    void *copy = malloc(vlen ? vlen : 1);
    if (copy != NULL && vlen > 0) {
        memcpy(copy, val, vlen);
    }
    return copy;
}

int mproc__dict_set(mproc__dict *d, const void *key, size_t klen,
                    const void *val, size_t vlen, int *changed)
{
    uint64_t h = mproc__dict_hash(key, klen);
    mproc__dent *e = NULL;
    if (d->n > 0) {
        uint32_t v = d->index[slot_of(d, key, klen, h)];
        e = v ? &d->ents[v - 1] : NULL;
    }
    if (e != NULL) {
        int same =
            e->vlen == vlen && (vlen == 0 || memcmp(e->val, val, vlen) == 0);
        if (changed != NULL) {
            *changed = !same;
        }
        if (same) {
            return 0;
        }
        void *copy = copy_bytes(val, vlen);
        if (copy == NULL) {
            return -ENOMEM;
        }
        free(e->val);
        e->val = copy;
        e->vlen = vlen;
        return 0;
    }
    if (reserve_one(d) != 0) {
        return -ENOMEM;
    }
    char *k = malloc(klen + 1);
    void *copy = copy_bytes(val, vlen);
    if (k == NULL || copy == NULL) {
        free(k);
        free(copy);
        return -ENOMEM;
    }
    memcpy(k, key, klen);
    k[klen] = '\0';
    e = &d->ents[d->n];
    *e = (mproc__dent){
        .key = k, .klen = klen, .hash = h, .val = copy, .vlen = vlen};
    d->index[slot_of(d, key, klen, h)] = (uint32_t)(d->n + 1);
    d->n++;
    if (changed != NULL) {
        *changed = 1;
    }
    return 0;
}

/* Empties slot `s` and shifts later members of its probe run back, so
 * every key stays reachable from its home slot without tombstones. */
static void remove_slot(mproc__dict *d, size_t s)
{
    size_t mask = d->nslots - 1;
    size_t hole = s;
    d->index[hole] = 0;
    for (size_t j = (hole + 1) & mask; d->index[j] != 0; j = (j + 1) & mask) {
        size_t home = d->ents[d->index[j] - 1].hash & mask;
        /* Move j into the hole unless its home lies cyclically in
         * (hole, j]. */
        int stays =
            hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            d->index[hole] = d->index[j];
            d->index[j] = 0;
            hole = j;
        }
    }
}

int mproc__dict_delete(mproc__dict *d, const void *key, size_t klen)
{
    if (d->n == 0) {
        return 0;
    }
    uint64_t h = mproc__dict_hash(key, klen);
    size_t s = slot_of(d, key, klen, h);
    uint32_t v = d->index[s];
    if (v == 0) {
        return 0;
    }
    size_t i = v - 1;
    free_entry(&d->ents[i]);
    remove_slot(d, s);
    size_t last = d->n - 1;
    if (i != last) {
        /* The last entry fills the hole; repoint its slot. */
        mproc__dent *m = &d->ents[last];
        size_t ms = slot_of(d, m->key, m->klen, m->hash);
        d->ents[i] = *m;
        d->index[ms] = (uint32_t)(i + 1);
    }
    d->n--;
    return 1;
}
