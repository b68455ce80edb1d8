/*
 * LD_PRELOAD shim for `MODE=clock benches/fastpath/measure.sh`: counts the process's
 * clock_gettime calls (Rust's Instant::now and SystemTime::now end there; glibc then reads the
 * vDSO) and prints the totals to stderr on SIGUSR2:
 *   clock_gettime: monotonic N realtime N other N
 * The counters are atomics, so every thread's calls count. Forwarded to the next
 * clock_gettime (glibc's), so timing is unchanged apart from the counting.
 *
 * Build: cc -shared -fPIC -O2 -o clock_count.so clock_count.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static atomic_ulong monotonic, realtime, other;
static int (*next)(clockid_t, struct timespec *);

int clock_gettime(clockid_t clock, struct timespec *ts) {
    if (!next) {
        next = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    }
    if (clock == CLOCK_MONOTONIC) {
        atomic_fetch_add_explicit(&monotonic, 1, memory_order_relaxed);
    } else if (clock == CLOCK_REALTIME) {
        atomic_fetch_add_explicit(&realtime, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&other, 1, memory_order_relaxed);
    }
    return next(clock, ts);
}

static void dump(int sig) {
    (void)sig;
    char line[128];
    int n = snprintf(line, sizeof line, "clock_gettime: monotonic %lu realtime %lu other %lu\n",
                     atomic_load(&monotonic), atomic_load(&realtime), atomic_load(&other));
    if (n > 0) {
        ssize_t ignored = write(2, line, (size_t)n);
        (void)ignored;
    }
}

__attribute__((constructor)) static void install(void) {
    signal(SIGUSR2, dump);
}
