#!/usr/bin/env python3
"""Small load clients for the comparison workloads wrk cannot express.

  sse HOST PORT N                 N sequential streaming requests on one keep-alive connection;
                                  prints `ttfe_p50_us ttfe_p99_us batched` (batched: responses whose
                                  first event arrived together with the second, i.e. held back).
  streams HOST PORT N             N concurrent long streams; once every stream has its first event
                                  it prints `ready N`, then waits for a line on stdin (the caller
                                  measures the gateway's memory meanwhile) and exits.
  idle HOST PORT N                N keep-alive connections, each makes one request and then idles;
                                  like `streams` it prints `ready N` and waits for stdin.
  metric URL NAME [LABEL_SUBSTR]  sums a Prometheus text metric's samples (optionally filtered).

Run pinned to the load generator's core; standard library only.
"""

import asyncio
import socket
import sys
import time
import urllib.request

CHAT = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":%d,"stream":%s}'


def request(host, port, stream, tokens=4, path=b"/v1/chat/completions"):
    body = CHAT % (tokens, b"true" if stream else b"false")
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: " + host.encode() + b":" + str(port).encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\n\r\n" + body
    )


def pct(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def sse(host, port, n):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = request(host, port, True)
    ttfe, batched = [], 0
    for _ in range(n):
        t0 = time.perf_counter_ns()
        s.sendall(req)
        buf = b""
        first = None
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed mid-stream")
            buf += chunk
            if first is None and b"data:" in buf:
                first = time.perf_counter_ns()
                # The first event arrived in the same read as the second one: held back.
                if buf.count(b"data:") > 1:
                    batched += 1
            if b"data: [DONE]" in buf and (buf.endswith(b"\r\n0\r\n\r\n") or buf.endswith(b"[DONE]\n\n")):
                break
        ttfe.append((first - t0) / 1000)
    ttfe.sort()
    print(f"{pct(ttfe, 0.5):.1f} {pct(ttfe, 0.99):.1f} {batched}")


async def hold(host, port, n, stream):
    req = request(host, port, stream, tokens=100000 if stream else 1)
    ready = 0
    done = asyncio.Event()
    conns = []
    sem = asyncio.Semaphore(200)

    async def one():
        nonlocal ready
        async with sem:
            r, w = await asyncio.open_connection(host, port)
            conns.append(w)
            w.write(req)
            await w.drain()
            buf = b""
            while True:
                chunk = await r.read(65536)
                if not chunk:
                    raise RuntimeError("closed before the response")
                buf += chunk
                if stream and b"data:" in buf:
                    break
                if not stream and b"\r\n\r\n" in buf:
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    cl = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                    if cl and len(rest) >= int(cl[0].split(b":")[1]):
                        break
                    if not cl and rest.endswith(b"0\r\n\r\n"):
                        break
        ready += 1
        if ready == n:
            done.set()
        if stream:
            # Keep draining slowly so the stream stays open and flowing.
            while True:
                chunk = await r.read(65536)
                if not chunk:
                    return
        else:
            await asyncio.sleep(3600)

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t.done() and t.exception()]
    if failed:
        print(f"failed {len(failed)}: {failed[0].exception()!r}", flush=True)
        return
    await waiter
    print(f"ready {ready}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for w in conns:
        w.transport.abort()
    for t in tasks:
        t.cancel()


def metric(url, name, label=None):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        if key.split("{")[0] not in (name, name + "_total"):
            continue
        if label and label not in key:
            continue
        total += float(value)
    print(f"{total:.0f}")


def main():
    mode = sys.argv[1]
    if mode == "sse":
        sse(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "streams":
        asyncio.run(hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), True))
    elif mode == "idle":
        asyncio.run(hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), False))
    elif mode == "metric":
        metric(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
