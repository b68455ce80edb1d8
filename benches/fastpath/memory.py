#!/usr/bin/env python3
"""RSS per connection of a proxy process: idle keep-alive connections or active SSE streams.

usage: memory.py PID HOST:PORT N idle|sse
Opens N connections; each sends one request (idle: GET /v1/models, answered in full, then
the connection stays open; sse: a streaming chat request whose first event is read, then the
stream is left open). Prints (RSS after - RSS before) / N from /proc/PID/status.
"""
import os, socket, sys, time, resource

pid, addr, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
host, port = addr.split(":")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

stream = "true" if mode == "sse" else "false"
body = ('{"model":"m","stream":%s,"messages":[{"role":"user","content":"hi"}]}' % stream).encode()
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
       b"content-length: %d\r\n\r\n" % len(body)) + body
if mode == "idle":
    # Answered by the gateway itself: the connection is then idle in keep-alive.
    req = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"

# Warm up: one round of the same kind, closed, so allocator pools and caches exist before.
for _ in range(50):
    s = socket.create_connection((host, int(port)))
    s.sendall(req); s.recv(65536); s.close()
time.sleep(1)
before = rss_kb()
socks = []
for i in range(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(req)
    socks.append(s)
for s in socks:
    got = b""
    while (b"data:" not in got) if mode == "sse" else (b"\r\n\r\n" not in got):
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed early")
        got += chunk
time.sleep(1)
after = rss_kb()
print(f"{mode} n={n} rss_before={before}KB rss_after={after}KB per_conn={(after - before) * 1024 / n:.0f}B")
for s in socks:
    s.close()
