/* test_error.c - mproc_strerror and mproc_err_name. */
#include "harness.h"

#include <limits.h>
#include <pthread.h>

typedef struct code_info {
    int code;
    const char *name;
    const char *msg;
} code_info;

static const code_info lib_codes[] = {
#define X(name, value, msg) {MPROC_##name, "MPROC_" #name, msg},
    MPROC_ERRNO_MAP(X)
#undef X
};
#define N_LIB_CODES (sizeof lib_codes / sizeof lib_codes[0])

/* Every library code has its own name and message. */
static void test_library_codes(void)
{
    /* The band is dense from -10001 down, so the first code after the last
     * one is unknown (see test_unknown). */
    CHECK(N_LIB_CODES >= 16);
    for (size_t i = 0; i < N_LIB_CODES; i++) {
        CHECK_EQ(lib_codes[i].code, -10001 - (int)i);
        CHECK_STREQ(mproc_err_name(lib_codes[i].code), lib_codes[i].name);
        CHECK_STREQ(mproc_strerror(lib_codes[i].code), lib_codes[i].msg);
    }
    /* A few spelled out, so a broken X-macro cannot hide behind itself. */
    CHECK_STREQ(mproc_err_name(MPROC_ECLOSED), "MPROC_ECLOSED");
    CHECK_STREQ(mproc_err_name(MPROC_EWORKER), "MPROC_EWORKER");
    CHECK_STREQ(mproc_err_name(MPROC_ECANCELED), "MPROC_ECANCELED");
    CHECK_STREQ(mproc_strerror(MPROC_EFULL),
                "no room: the queue or the slots are full");
    CHECK_STREQ(mproc_strerror(MPROC_ETIMEDOUT), "the operation timed out");
}

/* The library band never collides with errno, and codes are distinct. */
static void test_codes_distinct(void)
{
    for (size_t i = 0; i < N_LIB_CODES; i++) {
        CHECK(lib_codes[i].code < -4095); /* below any -errno */
        for (size_t j = i + 1; j < N_LIB_CODES; j++) {
            CHECK(lib_codes[i].code != lib_codes[j].code);
            CHECK(strcmp(mproc_err_name(lib_codes[i].code),
                         mproc_err_name(lib_codes[j].code)) != 0);
        }
    }
}

/* System errors are exactly -errno: strerror's text and the errno name. */
static void test_system_codes(void)
{
    static const struct {
        int e;
        const char *name;
    } common[] = {
        {EINVAL, "EINVAL"}, {ENOMEM, "ENOMEM"}, {ENOENT, "ENOENT"},
        {EINTR, "EINTR"},   {EAGAIN, "EAGAIN"}, {EPIPE, "EPIPE"},
        {EBADF, "EBADF"},   {EPERM, "EPERM"},   {EMFILE, "EMFILE"},
        {ECHILD, "ECHILD"}, {ESRCH, "ESRCH"},   {ENOSPC, "ENOSPC"},
    };
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) {
        CHECK_STREQ(mproc_err_name(-common[i].e), common[i].name);
        CHECK_STREQ(mproc_strerror(-common[i].e), strerror(common[i].e));
    }
    CHECK_STREQ(mproc_err_name(-EINVAL), "EINVAL");
    CHECK_STREQ(mproc_strerror(-EINVAL), "Invalid argument");
    /* Every errno the C library knows: a name and strerror's text. */
    for (int e = 1; e < 134; e++) {
        if (strerrorname_np(e) == NULL) {
            continue;
        }
        const char *name = mproc_err_name(-e);
        CHECK(name != NULL);
        CHECK_MSG(strcmp(name, "UNKNOWN") != 0 && name[0] == 'E',
                  "errno %d (%s) is named \"%s\"", e, strerrorname_np(e), name);
        CHECK_STREQ(mproc_strerror(-e), strerror(e));
    }
}

static void test_zero(void)
{
    CHECK_STREQ(mproc_err_name(0), "OK");
    const char *s = mproc_strerror(0);
    CHECK(s != NULL);
    CHECK(s[0] != '\0');
}

/* Codes nobody defined: "UNKNOWN" / "unknown error", never NULL. */
static void test_unknown(void)
{
    static const int unknown[] = {
        -10000,  -10001 - (int)N_LIB_CODES, -10100,  -9999, -4000, -20000,
        -424242, 424242, INT_MIN, 10001, 5000,
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECK(mproc_err_name(unknown[i]) != NULL);
        CHECK(mproc_strerror(unknown[i]) != NULL);
        CHECK_MSG(strcmp(mproc_err_name(unknown[i]), "UNKNOWN") == 0,
                  "code %d named \"%s\"", unknown[i],
                  mproc_err_name(unknown[i]));
        CHECK_MSG(strcmp(mproc_strerror(unknown[i]), "unknown error") == 0,
                  "code %d described \"%s\"", unknown[i],
                  mproc_strerror(unknown[i]));
    }
    /* Positive small numbers are not codes either (not errno values). */
    CHECK(mproc_err_name(INT_MAX) != NULL);
    CHECK(mproc_strerror(INT_MAX) != NULL);
}

static void *hammer(void *arg)
{
    (void)arg;
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < N_LIB_CODES; i++) {
            if (strcmp(mproc_err_name(lib_codes[i].code), lib_codes[i].name) ||
                strcmp(mproc_strerror(lib_codes[i].code), lib_codes[i].msg)) {
                return (void *)1;
            }
        }
        if (strcmp(mproc_err_name(-ENOMEM), "ENOMEM") != 0 ||
            mproc_strerror(-(round % 130 + 1)) == NULL ||
            strcmp(mproc_err_name(-123456), "UNKNOWN") != 0) {
            return (void *)1;
        }
    }
    return NULL;
}

/* Thread-safe: several threads at once get the same answers. */
static void test_threads(void)
{
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        CHECK_OK(pthread_create(&th[i], NULL, hammer, NULL));
    }
    for (int i = 0; i < 4; i++) {
        void *r = (void *)1;
        CHECK_OK(pthread_join(th[i], &r));
        CHECK(r == NULL);
    }
}

TEST_LIST = {
    {"library_codes", test_library_codes, 0},
    {"codes_distinct", test_codes_distinct, 0},
    {"system_codes", test_system_codes, 0},
    {"zero", test_zero, 0},
    {"unknown", test_unknown, 0},
    {"threads", test_threads, 0},
    {NULL, NULL, 0},
};
