/* exactly_once.c - every task runs at most once and is answered exactly
 * once, even while workers are being killed.
 *
 * 20,000 tiny tasks each add one to their own counter in shared memory (a
 * MAP_SHARED mapping made before the pool starts, so the workers see it).
 * Some tasks kill their own worker with SIGKILL in the middle of running.
 * Afterwards: a task that succeeded ran exactly once; a task that failed
 * failed with MPROC_EWORKER and ran at most once (the killer tasks, which
 * died in their first and only run); no task was answered twice or never.
 *
 * Exits 0 when all of that held (run by ctest as example_exactly_once). */
#include <mproc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

enum { TASKS = 20000, KILL_EVERY = 997 };

static _Atomic int *runs; /* runs[i]: how many times task i started */

/* Task i: count the run; every KILL_EVERY-th task kills its worker. */
static int64_t count_and_maybe_die(int64_t i)
{
    atomic_fetch_add(&runs[i], 1);
    if (i % KILL_EVERY == KILL_EVERY - 1) {
        kill(getpid(), SIGKILL);
    }
    return i * 2;
}
MPROC_TASK_I64(count_task, count_and_maybe_die)

int main(void)
{
    runs = mmap(NULL, TASKS * sizeof *runs, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (runs == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    mproc_pool *pool;
    int rc = mproc_pool_new(&pool, &(mproc_pool_opts){.fn = count_task,
                                                      .size = 2});
    if (rc == 0 && (rc = mproc_pool_start(pool)) != 0) {
        mproc_pool_free(pool);
    }
    if (rc != 0) {
        fprintf(stderr, "starting the pool: %s\n", mproc_strerror(rc));
        return 1;
    }
    for (int64_t i = 0; i < TASKS; i++) {
        if (mproc_pool_put_i64(pool, i, MPROC_FOREVER) != i) {
            fprintf(stderr, "put %lld failed\n", (long long)i);
            return 1;
        }
    }
    static char answered[TASKS];
    int ok = 0, failed = 0, bad = 0;
    for (int n = 0; n < TASKS; n++) {
        mproc_result r;
        if (mproc_pool_get(pool, &r, 30000) != 0) {
            fprintf(stderr, "a task was never answered\n");
            return 1;
        }
        int64_t v = 0;
        if (r.index >= TASKS || answered[r.index]++) {
            fprintf(stderr, "task %llu answered twice\n",
                    (unsigned long long)r.index);
            bad++;
        } else if (r.err == 0 && mproc_result_i64(&r, &v) == 0 &&
                   v == (int64_t)r.index * 2) {
            ok++;
        } else if (r.err == MPROC_EWORKER) {
            if (failed++ == 0) {
                printf("a killed task: %s\n", r.errmsg ? r.errmsg : "");
            }
        } else {
            fprintf(stderr, "task %llu: %s\n", (unsigned long long)r.index,
                    mproc_err_name(r.err));
            bad++;
        }
        mproc_result_clear(&r);
    }
    mproc_pool_free(pool);
    int twice = 0;
    for (int i = 0; i < TASKS; i++) {
        twice += atomic_load(&runs[i]) > 1;
    }
    printf("%d tasks: %d ok, %d failed with MPROC_EWORKER (%d workers "
           "killed), %d ran more than once\n",
           TASKS, ok, failed, TASKS / KILL_EVERY, twice);
    if (bad == 0 && twice == 0 && failed == TASKS / KILL_EVERY) {
        printf("exactly once held\n");
        return 0;
    }
    return 1;
}
