// squares.cpp - a C++ program using mproc, for scripts/check_consumers.sh:
// the headers compile as C++ and declare C linkage (extern "C"), so a C++
// program links against either library.  A pool of two worker processes
// squares 1..N through mproc_map; exits 0 when every square is right.
#include <mproc.h>

#include <cstdio>
#include <vector>

static int64_t square(int64_t x) { return x * x; }
MPROC_TASK_I64(square_task, square)

int main()
{
    const int n = 100;
    std::vector<int64_t> in(n);
    std::vector<mproc_bytes> items(n);
    std::vector<mproc_result> out(n);
    for (int i = 0; i < n; i++) {
        in[i] = i + 1;
        items[i] = mproc_bytes{&in[i], sizeof in[i]};
    }
    mproc_pool_opts opts{};
    opts.fn = square_task;
    opts.size = 2;
    int rc = mproc_map(&opts, items.data(), items.size(), out.data());
    if (rc != 0) {
        std::fprintf(stderr, "squares.cpp: mproc_map: %s\n",
                     mproc_strerror(rc));
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int64_t v = -1;
        bad |= mproc_result_i64(&out[i], &v) != 0 || v != in[i] * in[i];
        mproc_result_clear(&out[i]);
    }
    std::printf("C++: mproc %s, %d squares %s\n", mproc_version_string(), n,
                bad ? "WRONG" : "ok");
    return bad;
}
