/* procs.h - context process functions shared by test_context.c and
 * test_plist.c, and the gate they synchronise on.
 *
 * Processes are forks of a fork server made at start, so the gate's pipes
 * must be open (tu_gate_open) before the context or list starts.  A
 * blocking process writes one byte to g_gate.started when it begins, then
 * waits for one byte on g_gate.release. */
#ifndef MPROC_TEST_PROCS_H
#define MPROC_TEST_PROCS_H

#include <signal.h>
#include <unistd.h>

#include "mproc.h"
#include "testutil.h"

static tu_gate g_gate = {{-1, -1}, {-1, -1}};

static int hello(const mproc_proc_env *env, const void *args, size_t len,
                 mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    return mproc_reply_str(reply, "Hello There!");
}

/* Replies with its arguments. */
static int echo(const mproc_proc_env *env, const void *args, size_t len,
                mproc_reply *reply)
{
    (void)env;
    return mproc_reply_write(reply, args, len);
}

/* Signals, then waits for a release and replies with its pid. */
static int blocker(const mproc_proc_env *env, const void *args, size_t len,
                   mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    if (tu_write_all(g_gate.started[1], "s", 1) != 0 ||
        tu_read_byte(g_gate.release[0]) != 0) {
        return -EPIPE;
    }
    return mproc_reply_i64(reply, getpid());
}

/* Ignores SIGTERM, signals, and never returns. */
static int stubborn(const mproc_proc_env *env, const void *args, size_t len,
                    mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    (void)reply;
    signal(SIGTERM, SIG_IGN);
    if (tu_write_all(g_gate.started[1], "s", 1) != 0) {
        return -EPIPE;
    }
    for (;;) {
        pause();
    }
}

#endif
