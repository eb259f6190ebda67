/* mproc_log: format a record and forward it to the owner, or write it here. */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "core/worker.h"
#include "mproc/log.h"

static const char *level_name(int level)
{
    switch (level) {
    case MPROC_LOG_DEBUG:
        return "DEBUG";
    case MPROC_LOG_INFO:
        return "INFO";
    case MPROC_LOG_WARNING:
        return "WARNING";
    case MPROC_LOG_ERROR:
        return "ERROR";
    case MPROC_LOG_CRITICAL:
        return "CRITICAL";
    default:
        return "LOG";
    }
}

void mproc_log(const char *name, int level, const char *fmt, ...)
{
    char msg[MPROC_LOG_MSG_MAX + 1];
    va_list ap;
    if (name == NULL) {
        name = "";
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt ? fmt : "", ap);
    va_end(ap);
    if (mproc__worker_log(name, level, msg) == 0) {
        return;
    }
    /* One write, so concurrent lines do not interleave mid-line. */
    char line[MPROC_LOG_MSG_MAX + MPROC_LOG_NAME_MAX + 64];
    int n = snprintf(line, sizeof(line), "[%s] %s: %s\n", name,
                     level_name(level), msg);
    if (n > 0) {
        size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
        ssize_t w = write(STDERR_FILENO, line, len);
        (void)w;
    }
}
