#!/usr/bin/env python3
"""Counts the stalls of this machine's CPUs: moments when a spinning process was not running.

    stalls.py SECONDS CPU [CPU ...]

One process per CPU, pinned to it, reads the monotonic clock in a tight loop for SECONDS and
counts the gaps between consecutive readings of 1 ms or more (a loop turn takes well under a
microsecond). On an idle machine such a gap is the CPU taken away: by the hypervisor
(a vCPU descheduled on the host) or by the kernel (an interrupt storm, another task). On the
project's VM these come in spells: quiet (none a second) or several a second of 1-8 ms, with
the guest's steal time still reading ~0 (the hypervisor does not account them). A single 5 ms
stall delays the 25 requests that arrive in it at 5k req/s, so a few a second put every
server's p99 in the milliseconds; `benches/compare/run` probes before each workload and
prints the counts in its Machine line, so such a run can be told from a quiet one.

Prints one line: `STALLS_PER_S MAX_MS LOST_PCT`: the busiest CPU's stalls per second, the
longest stall on any CPU, and the most time any CPU lost in gaps of 50 µs or more (percent of
the probe; a quiet machine reads 0.1-0.3), e.g. `0.4 1.3 0.21`.
"""

import os
import sys
import time

GAP_NS = 1_000_000
LOST_NS = 50_000


def spin(cpu, seconds, w):
    os.sched_setaffinity(0, {cpu})
    clock = time.monotonic_ns
    end = clock() + int(seconds * 1e9)
    prev = clock()
    count = 0
    longest = 0
    lost = 0
    while prev < end:
        t = clock()
        gap = t - prev
        if gap >= LOST_NS:
            lost += gap
            if gap >= GAP_NS:
                count += 1
                longest = max(longest, gap)
        prev = t
    os.write(w, f"{count} {longest} {lost}\n".encode())


def main():
    seconds = float(sys.argv[1])
    cpus = [int(c) for c in sys.argv[2:]]
    r, w = os.pipe()
    kids = []
    for cpu in cpus:
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                spin(cpu, seconds, w)
            except OSError as e:
                print(f"stalls.py: CPU {cpu}: {e}", file=sys.stderr)
                os._exit(1)
            os._exit(0)
        kids.append(pid)
    os.close(w)
    with os.fdopen(r) as f:
        rows = [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    failed = [pid for pid in kids if os.waitpid(pid, 0)[1] != 0]
    if failed or len(rows) != len(cpus):
        # A CPU that cannot be pinned to (not in this machine or this cgroup): no reading.
        print("? ? ?")
        sys.exit(1)
    per_s = max((n for n, _, _ in rows), default=0) / seconds
    longest = max((m for _, m, _ in rows), default=0) / 1e6
    lost = max((x for _, _, x in rows), default=0) / seconds / 1e7
    print(f"{per_s:.1f} {longest:.1f} {lost:.2f}")


if __name__ == "__main__":
    main()
