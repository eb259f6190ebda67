/* The message type hierarchy: built-in types (the seed's) and registered
 * ones, each with one parent. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mproc/error.h"
#include "super_internal.h"

static const struct {
    const char *name;
    int parent;
} builtin[MPROC_MSG_USER] = {
    [MPROC_MSG_EMPTY] = {"empty", -1},
    [MPROC_MSG_STRING] = {"string", MPROC_MSG_EMPTY},
    [MPROC_MSG_FILE] = {"file", MPROC_MSG_STRING},
    [MPROC_MSG_PRINT] = {"print", MPROC_MSG_STRING},
    [MPROC_MSG_INPUT_REQUEST] = {"input_request", MPROC_MSG_STRING},
    [MPROC_MSG_INPUT_RESPONSE] = {"input_response", MPROC_MSG_STRING},
    [MPROC_MSG_IDS_REQUEST] = {"ids_request", MPROC_MSG_STRING},
    [MPROC_MSG_IDS_REPLY] = {"ids_reply", MPROC_MSG_EMPTY},
    [MPROC_MSG_ERROR] = {"error", MPROC_MSG_STRING},
};

int mproc__super_types_init(mproc_super *s)
{
    s->types = calloc(MPROC_MSG_USER, sizeof(*s->types));
    if (s->types == NULL) {
        return -ENOMEM;
    }
    for (int i = 0; i < MPROC_MSG_USER; i++) {
        s->types[i].name = strdup(builtin[i].name);
        s->types[i].parent = builtin[i].parent;
        s->ntypes = i + 1;
        if (s->types[i].name == NULL) {
            return -ENOMEM;
        }
    }
    return 0;
}

void mproc__super_types_free(mproc_super *s)
{
    for (int i = 0; i < s->ntypes; i++) {
        free(s->types[i].name);
    }
    free(s->types);
    s->types = NULL;
    s->ntypes = 0;
}

int mproc__super_type_is(const mproc_super *s, int type, int ancestor)
{
    for (int t = type; t >= 0 && t < s->ntypes; t = s->types[t].parent) {
        if (t == ancestor) {
            return 1;
        }
    }
    return 0;
}

int mproc_super_add_type(mproc_super *s, const char *name, int parent,
                         int *type)
{
    if (s == NULL || name == NULL || name[0] == '\0' || type == NULL ||
        parent < 0 || parent >= (s ? s->ntypes : 0)) {
        return -EINVAL;
    }
    if (s->started) {
        return MPROC_ESTARTED;
    }
    for (int i = 0; i < s->ntypes; i++) {
        if (strcmp(s->types[i].name, name) == 0) {
            return -EEXIST;
        }
    }
    mproc__type *t = realloc(s->types, (size_t)(s->ntypes + 1) * sizeof(*t));
    if (t == NULL) {
        return -ENOMEM;
    }
    s->types = t;
    char *copy = strdup(name);
    if (copy == NULL) {
        return -ENOMEM;
    }
    s->types[s->ntypes] = (mproc__type){copy, parent};
    *type = s->ntypes++;
    return 0;
}

const char *mproc_super_type_name(mproc_super *s, int type)
{
    return s != NULL && type >= 0 && type < s->ntypes ? s->types[type].name
                                                      : NULL;
}

/* ---- frame bodies ---------------------------------------------------- */

int mproc__super_parse_send(const mproc__frame *f, int ntypes,
                            mproc__xsend *out)
{
    if (f->len < X_SEND_HDR) {
        return MPROC_EPROTO;
    }
    memcpy(&out->type, f->body, 4);
    memcpy(&out->flags, f->body + 4, 4);
    memcpy(&out->token, f->body + 8, 8);
    memcpy(&out->n, f->body + 16, 4);
    if (ntypes < 0 || out->type >= (uint32_t)ntypes || out->n == 0 ||
        (f->len - X_SEND_HDR) / 4 < out->n) {
        return MPROC_EPROTO;
    }
    out->ids = f->body + X_SEND_HDR;
    out->data = out->ids + (size_t)out->n * 4;
    out->len = f->len - X_SEND_HDR - (size_t)out->n * 4;
    return 0;
}

int mproc__super_parse_done(const mproc__frame *f, int32_t *code,
                            const char **msg, size_t *len)
{
    if (f->len < 4) {
        return MPROC_EPROTO;
    }
    memcpy(code, f->body, 4);
    *msg = f->body + 4;
    *len = f->len - 4;
    return 0;
}

int mproc__super_parse_msg(const mproc__frame *f, mproc_msg *m)
{
    if (f->len < X_MSG_HDR + 1 || f->body[f->len - 1] != '\0') {
        return MPROC_EPROTO;
    }
    int32_t v[3];
    memcpy(v, f->body, sizeof(v));
    m->type = v[0];
    m->from = v[1];
    m->to = v[2];
    m->data = f->body + X_MSG_HDR;
    m->len = f->len - X_MSG_HDR - 1; /* the NUL after the payload */
    return 0;
}

int mproc__super_parse_verdict(const mproc__frame *f, uint64_t *token,
                               int32_t *code)
{
    if (f->len < 12) {
        return MPROC_EPROTO;
    }
    memcpy(token, f->body, 8);
    memcpy(code, f->body + 8, 4);
    return 0;
}

int mproc__super_parse_ids_reply(const mproc__frame *f, uint32_t *n,
                                 const char **ids, const char **name,
                                 size_t *nlen)
{
    if (f->len < 4) {
        return MPROC_EPROTO;
    }
    memcpy(n, f->body, 4);
    if ((f->len - 4) / 4 < *n) {
        return MPROC_EPROTO;
    }
    *ids = f->body + 4;
    *name = *ids + (size_t)*n * 4;
    *nlen = f->len - 4 - (size_t)*n * 4;
    return 0;
}

int mproc__super_parse_input_reply(const mproc__frame *f, int32_t *code,
                                   const char **line, size_t *len)
{
    if (f->len < 4) {
        return MPROC_EPROTO;
    }
    memcpy(code, f->body, 4);
    *line = f->body + 4;
    *len = f->len - 4;
    return 0;
}
