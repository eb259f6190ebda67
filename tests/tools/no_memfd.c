/* no_memfd - runs a program where memfd_create does not exist.
 *
 *     no_memfd PROG [ARGS...]
 *
 * Installs a seccomp filter under which memfd_create(2) fails with ENOSYS,
 * as on a kernel older than 3.17 or in a sandbox that refuses it, checks
 * that it does, then execs PROG.  The filter is inherited across fork and
 * exec, so PROG and every process it starts (fork servers, workers) run
 * without memfd: the library's shared-memory transport must then fall back
 * to its sockets (issue 11).  ctest runs test_pool and test_group under it.
 *
 * Only the native system call ABI is filtered (x86_64 or aarch64, checked
 * in the filter); a call through another ABI (i386 on x86_64) is allowed,
 * since nothing here makes one.  Exit status 1, with a message, when the
 * filter cannot be installed or does not work. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NO_MEMFD_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NO_MEMFD_ARCH AUDIT_ARCH_AARCH64
#endif

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: no_memfd PROG [ARGS...]\n");
        return 2;
    }
#if !defined(NO_MEMFD_ARCH) || !defined(__NR_memfd_create)
    fprintf(stderr, "no_memfd: this architecture is not supported "
                    "(x86_64 and aarch64 are)\n");
    return 1;
#else
    struct sock_filter f[] = {
        /* Another ABI's numbers mean other calls: let them through. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NO_MEMFD_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_memfd_create, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    /* Without no_new_privs an unprivileged process may not install a
     * filter. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        fprintf(stderr, "no_memfd: cannot install the seccomp filter: %s\n",
                strerror(errno));
        return 1;
    }
    errno = 0;
    long fd = syscall(__NR_memfd_create, "no_memfd-check", 0);
    if (fd != -1 || errno != ENOSYS) {
        fprintf(stderr,
                "no_memfd: memfd_create still works under the filter "
                "(returned %ld, errno %d: %s)\n",
                fd, errno, strerror(errno));
        return 1;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "no_memfd: cannot run %s: %s\n", argv[1], strerror(errno));
    return 1;
#endif
}
