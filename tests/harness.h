/* harness.h - a tiny test harness in the style of nng's.
 *
 * A test file defines its test functions and a table:
 *
 *     #include "harness.h"          // first: it sets _GNU_SOURCE
 *
 *     static void test_thing(void) { CHECK_EQ(1 + 1, 2); }
 *
 *     TEST_LIST = {
 *         {"thing", test_thing, 0},  // 0: the default timeout
 *         {NULL, NULL, 0},
 *     };
 *
 * and gets a main() that runs every test in its own forked child, in its own
 * process group, so a crash, a hang or a leak report in one test does not hide
 * the others.  Each child runs under alarm(timeout) (default 60 s, scaled by
 * the environment variable MPROC_TEST_TIMEOUT_SCALE, e.g. 5 under
 * sanitizers); the parent also keeps a backstop timer and kills the child's
 * whole process group if it overruns.  A failed CHECK prints file:line, the
 * expression and the values (error codes by name) and ends the test at once.
 *
 * Usage: test_x [name...] runs only the named tests; test_x -l lists them.
 * The last line printed is "N passed, M failed"; the exit status is nonzero
 * when any test failed.
 */
#ifndef MPROC_TEST_HARNESS_H
#define MPROC_TEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mproc.h"

typedef struct test_case {
    const char *name;
    void (*fn)(void);
    int timeout_s; /* 0: HARNESS_DEFAULT_TIMEOUT */
} test_case;

#define HARNESS_DEFAULT_TIMEOUT 60

/* The table; see above.  Defined by the test file. */
extern const test_case test_list[];
#define TEST_LIST const test_case test_list[]

/* ---- checks ------------------------------------------------------------ */

static inline const char *harness_code_name(long long v)
{
    if (v < INT32_MIN || v > INT32_MAX) {
        return "?";
    }
    return mproc_err_name((int)v);
}

_Noreturn static inline void harness_fail(const char *file, int line,
                                          const char *fmt, ...)
    MPROC_PRINTF(3, 4);
_Noreturn static inline void harness_fail(const char *file, int line,
                                          const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s:%d: FAILED: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    /* _exit: end this test now; leaks of a failed test are not interesting
     * and the pool's processes die with us. */
    _exit(1);
}

/* Fails the test unless `cond` holds. */
#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            harness_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);              \
        }                                                                      \
    } while (0)

/* Like CHECK, with a printf-style explanation. */
#define CHECK_MSG(cond, ...)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            char harness_m_[512];                                              \
            snprintf(harness_m_, sizeof harness_m_, __VA_ARGS__);              \
            harness_fail(__FILE__, __LINE__, "CHECK(%s): %s", #cond,           \
                         harness_m_);                                          \
        }                                                                      \
    } while (0)

/* Integer equality; both sides are printed on failure. */
#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long harness_a_ = (long long)(a);                                 \
        long long harness_b_ = (long long)(b);                                 \
        if (harness_a_ != harness_b_) {                                        \
            harness_fail(__FILE__, __LINE__, "CHECK_EQ(%s, %s): %lld != %lld", \
                         #a, #b, harness_a_, harness_b_);                      \
        }                                                                      \
    } while (0)

/* `expr` must evaluate to the error code `code` (0 for success); both are
 * printed with their mproc_err_name on failure. */
#define CHECK_ERR(expr, code)                                                  \
    do {                                                                       \
        long long harness_e_ = (long long)(expr);                              \
        long long harness_c_ = (long long)(code);                              \
        if (harness_e_ != harness_c_) {                                        \
            harness_fail(__FILE__, __LINE__,                                   \
                         "CHECK_ERR(%s, %s): got %lld (%s), want %lld (%s)",   \
                         #expr, #code, harness_e_,                             \
                         harness_code_name(harness_e_), harness_c_,            \
                         harness_code_name(harness_c_));                       \
        }                                                                      \
    } while (0)

/* `expr` must return 0. */
#define CHECK_OK(expr) CHECK_ERR(expr, 0)

/* `expr` (e.g. a put returning an index) must be >= 0. */
#define CHECK_NONNEG(expr)                                                     \
    do {                                                                       \
        long long harness_e_ = (long long)(expr);                              \
        if (harness_e_ < 0) {                                                  \
            harness_fail(__FILE__, __LINE__,                                   \
                         "CHECK_NONNEG(%s): got %lld (%s)", #expr, harness_e_, \
                         harness_code_name(harness_e_));                       \
        }                                                                      \
    } while (0)

/* String equality (NULL-safe). */
#define CHECK_STREQ(a, b)                                                      \
    do {                                                                       \
        const char *harness_a_ = (a);                                          \
        const char *harness_b_ = (b);                                          \
        if (harness_a_ == NULL || harness_b_ == NULL ||                        \
            strcmp(harness_a_, harness_b_) != 0) {                             \
            harness_fail(__FILE__, __LINE__,                                   \
                         "CHECK_STREQ(%s, %s): \"%s\" != \"%s\"", #a, #b,      \
                         harness_a_ ? harness_a_ : "(null)",                   \
                         harness_b_ ? harness_b_ : "(null)");                  \
        }                                                                      \
    } while (0)

/* `hay` must contain `needle` (NULL-safe). */
#define CHECK_CONTAINS(hay, needle)                                            \
    do {                                                                       \
        const char *harness_h_ = (hay);                                        \
        const char *harness_n_ = (needle);                                     \
        if (harness_h_ == NULL || strstr(harness_h_, harness_n_) == NULL) {    \
            harness_fail(__FILE__, __LINE__,                                   \
                         "CHECK_CONTAINS(%s, %s): \"%s\" lacks \"%s\"", #hay,  \
                         #needle, harness_h_ ? harness_h_ : "(null)",          \
                         harness_n_);                                          \
        }                                                                      \
    } while (0)

/* ---- time -------------------------------------------------------------- */

static inline int64_t harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the runner -------------------------------------------------------- */

static volatile sig_atomic_t harness_alarm_fired;

static inline void harness_on_alarm(int sig)
{
    (void)sig;
    harness_alarm_fired = 1;
}

static inline int harness_timeout_of(const test_case *t)
{
    int s = t->timeout_s > 0 ? t->timeout_s : HARNESS_DEFAULT_TIMEOUT;
    const char *scale = getenv("MPROC_TEST_TIMEOUT_SCALE");
    if (scale != NULL && atoi(scale) > 1) {
        s *= atoi(scale);
    }
    return s;
}

/* Runs one test in a child; returns 1 if it passed. */
static inline int harness_run_one(const test_case *t)
{
    int timeout = harness_timeout_of(t);
    int64_t t0 = harness_now_ms();
    int status = 0;
    int timed_out = 0;
    pid_t pid;

    printf("[ RUN  ] %s\n", t->name);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 0;
    }
    if (pid == 0) {
        struct rlimit nocore = {0, 0};
        setpgid(0, 0);
        signal(SIGALRM, SIG_DFL);
        /* abort() in worker tests must not write core files. */
        setrlimit(RLIMIT_CORE, &nocore);
        alarm((unsigned)timeout);
        t->fn();
        fflush(stdout);
        exit(0); /* exit, not _exit: LeakSanitizer checks here */
    }
    setpgid(pid, pid); /* also from here, so kill(-pid) cannot miss */

    harness_alarm_fired = 0;
    alarm((unsigned)timeout + 10);
    for (;;) {
        pid_t r = waitpid(pid, &status, 0);
        if (r == pid) {
            break;
        }
        if (r < 0 && errno == EINTR && harness_alarm_fired) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            harness_alarm_fired = 0;
            alarm(5);
            continue;
        }
        if (r < 0 && errno != EINTR) {
            perror("waitpid");
            break;
        }
    }
    alarm(0);
    /* Whatever the test left behind (it should leave nothing) must not
     * disturb the next test. */
    kill(-pid, SIGKILL);
    for (int64_t end = harness_now_ms() + 2000; harness_now_ms() < end;) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0 && errno == ECHILD) {
            break;
        }
        if (r == 0) {
            usleep(1000); /* bounded poll for killed orphans */
        }
    }

    double secs = (double)(harness_now_ms() - t0) / 1000.0;
    if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("[  OK  ] %s (%.2f s)\n", t->name, secs);
        fflush(stdout);
        return 1;
    }
    if (timed_out || (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)) {
        printf("[ FAIL ] %s: timed out after %d s\n", t->name, timeout);
    } else if (WIFSIGNALED(status)) {
        printf("[ FAIL ] %s: killed by signal %d (%s) after %.2f s\n", t->name,
               WTERMSIG(status), strsignal(WTERMSIG(status)), secs);
    } else {
        printf("[ FAIL ] %s: exit status %d after %.2f s\n", t->name,
               WEXITSTATUS(status), secs);
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    int passed = 0;
    int failed = 0;
    struct sigaction sa;

    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = harness_on_alarm; /* no SA_RESTART: interrupt waitpid */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    /* Processes a test orphans become our children (not init's, which may
     * never reap them), and we reap them between tests. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    if (argc > 1 && strcmp(argv[1], "-l") == 0) {
        for (const test_case *t = test_list; t->name != NULL; t++) {
            printf("%s\n", t->name);
        }
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        int found = 0;
        for (const test_case *t = test_list; t->name != NULL; t++) {
            found |= strcmp(t->name, argv[i]) == 0;
        }
        if (!found) {
            fprintf(stderr, "no test named \"%s\" (-l lists them)\n", argv[i]);
            return 2;
        }
    }
    for (const test_case *t = test_list; t->name != NULL; t++) {
        int selected = argc <= 1;
        for (int i = 1; i < argc; i++) {
            selected |= strcmp(t->name, argv[i]) == 0;
        }
        if (!selected) {
            continue;
        }
        if (harness_run_one(t)) {
            passed++;
        } else {
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#endif
