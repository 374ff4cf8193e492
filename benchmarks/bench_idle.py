"""What idle connections cost `python3 server.py`, and how long a visitor then waits (Linux: reads /proc).

    python3 benchmarks/bench_idle.py                      # 1,000 of each kind, RLIMIT_NOFILE 1,024
    python3 benchmarks/bench_idle.py --nofile 4096        # a limit high enough to hold all of them

Starts server.py as shipped in a child process under the descriptor limit, then, for each kind of idle
connection -- kept alive after one answer, connected and silent, trickling a head -- opens that many,
times a new visitor's request (the median of five), and reads the server's memory (RSS), threads,
open descriptors, and the CPU it spends in two seconds with nothing but the idle connections.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (VmRSS in kB, Threads)."""
    with open(f"/proc/{pid}/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_idle(port: int, kind: str, count: int) -> list[socket.socket]:
    """``count`` connections of one kind; those the server closes to make room are simply closed."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(sock)
        try:
            if kind == "kept alive":
                sock.sendall(b"GET /peek HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = http.client.HTTPResponse(sock)
                answer.begin()
                answer.read()
            elif kind == "trickling":
                sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: a")
        except OSError:  # closed by the server to make room for a newer one
            pass
    return socks


def visit(port: int) -> float:
    """A new visitor's GET / on a new connection: seconds until its whole answer."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/")
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"the visitor got {answer.status}")
    finally:
        connection.close()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--nofile", type=int, default=1024, help="the server's RLIMIT_NOFILE")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 100:  # this process holds the client ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 100), hard))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, max(args.nofile, hard)))

    child = subprocess.Popen([sys.executable, "server.py", "--port", "0"], cwd=ROOT, preexec_fn=limit,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline().rsplit(":", 1)[1].split("/")[0])
        visit(port)
        base_rss, base_threads = status(child.pid, "VmRSS"), status(child.pid, "Threads")
        at_rest = descriptors(child.pid)
        print(f"server.py under RLIMIT_NOFILE {args.nofile}: {base_rss / 1024:.1f} MB RSS, "
              f"{base_threads} threads, {at_rest} descriptors before")
        print(f"{'idle connections':>26} | held | visitor ms (median of 5) | RSS MB | KB per held | threads "
              f"| CPU ms in 2 s idle")
        for kind in ("kept alive", "silent", "trickling"):
            socks = open_idle(port, kind, args.connections)
            time.sleep(0.5)  # let the server settle
            latency = statistics.median(visit(port) for _ in range(5))
            held = descriptors(child.pid) - at_rest
            rss = status(child.pid, "VmRSS")
            before = cpu_seconds(child.pid)
            time.sleep(2)
            idle_cpu = cpu_seconds(child.pid) - before
            per = (rss - base_rss) / held if held > 0 else float("nan")
            print(f"{args.connections:>7} {kind:>18} | {held:>4} | {latency * 1000:>24.1f} | {rss / 1024:>6.1f} | "
                  f"{per:>11.2f} | {status(child.pid, 'Threads'):>7} | {idle_cpu * 1000:>18.0f}")
            for sock in socks:
                sock.close()
            time.sleep(1)  # the server notices the closes
    finally:
        child.kill()
        child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
