#!/usr/bin/env python3
"""What unread answers cost the server: N connections each send `GET /metrics` (keep-alive)
and never read. Prints the answer's size, and the growth of the server's RSS and of the
kernel's TCP memory (/proc/net/sockstat, pages) per request.

usage: [TOPICS=250] benches/unread_answers.py SERVER_BINARY [N] [extra server args...]
(TOPICS subscribed topics of TOPIC_BYTES=64 bytes each, padded with TOPIC_FILL=t:
/metrics lists at most 32.)
"""
import os, socket, subprocess, sys, time
from urllib.parse import quote

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
extra = sys.argv[3:]
# The names' padding: `"` or `\\` doubles in Prometheus labels, the largest answer.
fill = os.environ.get("TOPIC_FILL", "t")
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
server = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--interval", "off",
                           ] + extra,
                          stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

def rss_kib():
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def tcp_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return 0

try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    # TOPICS topics with TOPIC_BYTES-byte names and a subscriber each (per-topic series).
    streams = []
    for i in range(int(os.environ.get("TOPICS", "250"))):
        s = socket.create_connection(("127.0.0.1", port))
        topic = f"{i:04}".ljust(int(os.environ.get("TOPIC_BYTES", "64")), fill)
        s.sendall(f"GET /events?topic={quote(topic)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        streams.append(s)
    time.sleep(0.5)
    whole = socket.create_connection(("127.0.0.1", port))
    whole.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    size = 0
    while True:
        b = whole.recv(65536)
        if not b:
            break
        size += len(b)
    whole.close()
    time.sleep(0.5)
    rss0, tcp0 = rss_kib(), tcp_pages()
    idle = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.append(s)
    time.sleep(2)
    rss1, tcp1 = rss_kib(), tcp_pages()
    print(f"answer {size} B; {n} unread: server RSS +{(rss1 - rss0) / n:.1f} KiB/request, "
          f"kernel TCP memory +{(tcp1 - tcp0) * 4 / n:.1f} KiB/request "
          f"(RSS {rss0} -> {rss1} KiB, TCP {tcp0} -> {tcp1} pages)")
    for s in idle + streams:
        s.close()
finally:
    server.terminate()
    server.wait()
