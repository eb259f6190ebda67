/* test_version.c - mproc_version, mproc_version_string and the macros of the
 * generated mproc/version.h. */
#include "harness.h"

#include <ctype.h>
#include <stdlib.h>

/* The macros agree with each other, and are usable in #if. */
#if MPROC_VERSION_NUMBER != MPROC_VERSION_MAJOR * 10000 +                      \
                                MPROC_VERSION_MINOR * 100 +                    \
                                MPROC_VERSION_PATCH
#error "MPROC_VERSION_NUMBER does not match MAJOR/MINOR/PATCH"
#endif
#if MPROC_VERSION_MAJOR < 1
#error "mproc 1.0 or later"
#endif

/* The library was built as the header this test was compiled with. */
static void test_runtime_matches_header(void)
{
    CHECK_EQ(mproc_version(), MPROC_VERSION_NUMBER);
    CHECK(mproc_version_string() != NULL);
    CHECK_STREQ(mproc_version_string(), MPROC_VERSION_STRING);
    /* A static string: the same pointer every time. */
    CHECK(mproc_version_string() == mproc_version_string());
}

/* Reads one decimal part of "MAJOR.MINOR.PATCH" at *s: digits only, no
 * sign, no leading zero (except "0" itself); advances *s past it. */
static long version_part(const char **s)
{
    const char *p = *s;
    char *end;
    long v;

    CHECK_MSG(isdigit((unsigned char)*p), "\"%s\": a digit expected", p);
    CHECK_MSG(p[0] != '0' || !isdigit((unsigned char)p[1]),
              "\"%s\": leading zero", p);
    v = strtol(p, &end, 10);
    CHECK(end > p && v >= 0 && v < 100000);
    *s = end;
    return v;
}

/* The string is "MAJOR.MINOR.PATCH" and spells the macros' numbers. */
static void test_string_format(void)
{
    const char *s = mproc_version_string();
    long major, minor, patch;

    major = version_part(&s);
    CHECK_MSG(*s == '.', "\"%s\": '.' expected", s);
    s++;
    minor = version_part(&s);
    CHECK_MSG(*s == '.', "\"%s\": '.' expected", s);
    s++;
    patch = version_part(&s);
    CHECK_MSG(*s == '\0', "\"%s\": trailing text", s);

    CHECK_EQ(major, MPROC_VERSION_MAJOR);
    CHECK_EQ(minor, MPROC_VERSION_MINOR);
    CHECK_EQ(patch, MPROC_VERSION_PATCH);
    /* MINOR and PATCH must fit their two digits of the number. */
    CHECK(minor < 100 && patch < 100);
    CHECK_EQ((long)mproc_version(), major * 10000 + minor * 100 + patch);
}

TEST_LIST = {
    {"runtime_matches_header", test_runtime_matches_header, 0},
    {"string_format", test_string_format, 0},
    {NULL, NULL, 0},
};
