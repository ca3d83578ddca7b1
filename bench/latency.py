"""Latency probe run inside a container by bench/egress.ts; prints JSON {n, median_ms, p99_ms}.

  latency.py http HOST PORT HOSTHEADER N   one new connection + GET per sample
  latency.py https HOST NAME N             one new TLS connection (SNI NAME) + GET per sample
  latency.py dns SERVER NAME N             one UDP A query per sample
"""
import json
import os
import socket
import ssl
import struct
import sys
import time


def http(host, port, name, tls=False):
    s = socket.create_connection((host, int(port)), timeout=5)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=name)
    s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
    while s.recv(4096):
        pass
    s.close()


def dns(server, name):
    q = struct.pack(">HHHHHH", os.getpid() & 0xFFFF, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((server, 53))
    s.send(q)
    s.recv(4096)
    s.close()


def main():
    mode, *args = sys.argv[1:]
    n = int(args[-1])
    if mode == "http":
        once = lambda: http(args[0], args[1], args[2])
    elif mode == "https":
        once = lambda: http(args[0], 443, args[1], tls=True)
    else:
        once = lambda: dns(args[0], args[1])
    for _ in range(min(20, n)):
        once()  # warm-up
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        once()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    print(json.dumps({"n": n, "median_ms": samples[n // 2], "p99_ms": samples[int(n * 0.99) - 1]}))


main()
