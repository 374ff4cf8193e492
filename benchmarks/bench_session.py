"""What does a session cost? Three tables: the session step, the demo server end to end, memory.

    python3 benchmarks/bench_session.py           # the full run (under two minutes)
    python3 benchmarks/bench_session.py --quick   # a smaller run (about 15 seconds)

Standard library only (wrk is used when it is installed). Machines are shared
and noisy: read the ratios, which compare figures taken in the same run,
rather than the absolute numbers.

1. The in-process session step, median microseconds per request, for four
   kinds of request, each beside its *floor*: the HMAC, JSON and id work that
   kind of request cannot avoid, timed with the standard library alone.
2. End to end: a bare ThreadingHTTPServer hello-world, server.py's view
   counter and its read-only /peek, each server in a process of its own,
   driven by wrk (or, without it, by client processes) with a returning
   visitor's cookie, in alternating rounds. Besides req/s and latencies, the
   server's own CPU time per request, which the load generator cannot inflate
   by starving the server of a core.
3. Memory: bytes per stored session (tracemalloc), and what a churn of
   sessions that are created and expire leaves behind in each store.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import session_demo as sd  # noqa: E402
from session_demo_extras.bounded_store import BoundedMemoryStore  # noqa: E402

SECRET = "keyboard cat"


# ---- timing helpers --------------------------------------------------------


def median_us(step: Callable[[], object], count: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the mean time of one ``step()`` call, in microseconds."""
    results = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(count):
            step()
        results.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(results)


# ---- 1. the in-process session step ----------------------------------------


class Clock:
    """A clock the benchmark moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def session_step_table(count: int, repeats: int) -> list[tuple[str, float, float]]:
    """(kind of request, session step µs, floor µs) for the four kinds of request."""
    options = sd.SessionOptions(secret=SECRET, resave=False, save_uninitialized=True,
                                cookie={"max_age": 60_000})
    middleware = sd.SessionMiddleware(options)

    def request(cookie: str | None, modify: bool = False) -> None:
        state = middleware.begin(sd.RequestInfo(url="/", cookie_header=cookie))
        if modify:
            state.session["views"] = state.session.get("views", 0) + 1
        middleware.set_cookie_header(state)
        middleware.end(state)

    first = middleware.begin(sd.RequestInfo(url="/"))
    first.session["views"] = 1
    set_cookie = middleware.set_cookie_header(first)
    middleware.end(first)
    pair = set_cookie.split(";", 1)[0]
    cookie = f"_ga=GA1.2.3; theme=dark; {pair}; lang=en"  # a realistic header of four cookies
    tampered = cookie.replace("s%3A", "s%3AX", 1)

    # The floors: what each kind of request cannot avoid.
    key = SECRET.encode()
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    sid = first.session_id
    signed = sd.sign(sid, SECRET)
    stored = options.store.sessions[sid]
    data = json.loads(stored)

    def sign_floor(value: str) -> str:
        mac = keyed.copy()
        mac.update(value.encode())
        return value + "." + base64.b64encode(mac.digest()).decode().rstrip("=")

    def verify_floor() -> bool:
        value = signed[: signed.rfind(".")]
        return hmac.compare_digest(sign_floor(value).encode(), signed.encode())

    def new_floor() -> None:
        sign_floor(secrets.token_urlsafe(24))
        json.dumps(data)  # the new session, saved

    def unmodified_floor() -> None:
        verify_floor()
        loaded = json.loads(stored)
        json.dumps({k: v for k, v in loaded.items() if k != "cookie"})  # was it changed?
        json.dumps(loaded)  # touch: write the new expiry

    def modified_floor() -> None:
        verify_floor()
        loaded = json.loads(stored)
        json.dumps({k: v for k, v in loaded.items() if k != "cookie"})  # was it changed?
        json.dumps(loaded)  # save
        sign_floor(sid)  # the cookie has an expiry, so a changed session gets a new Set-Cookie

    def tampered_floor() -> None:
        verify_floor()  # fails, in the same time
        new_floor()

    rows = [
        ("new visitor (no cookie)", lambda: request(None), new_floor),
        ("returning, unmodified (touch)", lambda: request(cookie), unmodified_floor),
        ("returning, modified (save)", lambda: request(cookie, True), modified_floor),
        ("tampered cookie", lambda: request(tampered), tampered_floor),
    ]
    table = []
    for name, step, floor in rows:
        table.append((name, median_us(step, count, repeats), median_us(floor, count, repeats)))
    return table


# ---- 2. end to end: the servers, each in a process of its own ---------------
#
# Each server runs in a child process (python3 bench_session.py --serve KIND)
# that speaks a small line protocol, so that any server can take part:
#
#   - it prints its port on the first line of its stdout;
#   - for each line it reads on stdin, it prints its own user+system CPU
#     seconds (all its threads) and how many clients have disconnected in the
#     middle of a request so far;
#   - it exits when its stdin closes.
#
# The parent asks for the CPU time just before the load starts and just after
# it ends: the difference, divided by the requests served, is the server's own
# CPU time per request, whatever the load generator costs on the same cores.


class HelloHandler(BaseHTTPRequestHandler):
    """The bare baseline: keep-alive, 'hello, world', the whole response in one write.

    The headers are those server.py's counter sends (Server, Date,
    Content-Type, Content-Length), built with the handler's own helpers.
    """

    protocol_version = "HTTP/1.1"
    body = b"hello, world"

    def do_GET(self) -> None:
        """Answer 'hello, world' in a single write."""
        head = (f"HTTP/1.1 200 OK\r\n"
                f"Server: {self.version_string()}\r\n"
                f"Date: {self.date_time_string()}\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n")
        self.wfile.write(head.encode("latin-1") + self.body)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: the benchmark measures the serving, not the logging."""


class CountsDisconnects:
    """A server mix-in: a client that disconnects mid-request is counted, not printed.

    socketserver prints a traceback for every exception a handler lets out,
    and a client closing its connection while a response is on its way is one
    (ConnectionResetError, BrokenPipeError). For a server that is normal; any
    other exception is still printed.
    """

    disconnects = 0

    def handle_error(self, request: object, client_address: object) -> None:
        """Count a ConnectionError; pass anything else on to socketserver's report."""
        if isinstance(sys.exception(), ConnectionError):
            self.disconnects += 1  # only this count is shared; a lost update only undercounts
            return
        super().handle_error(request, client_address)  # type: ignore[misc]


class HelloServer(CountsDisconnects, ThreadingHTTPServer):
    """The hello-world's server: a ThreadingHTTPServer, as http.server's own."""

    daemon_threads = True


class CounterServer(CountsDisconnects, sd.SessionHTTPServer):
    """server.py's server, counting disconnects instead of printing them."""


def make_server(kind: str) -> ThreadingHTTPServer:
    """The server ``kind`` names ('hello' or 'counter'), on a free loopback port."""
    if kind == "hello":
        return HelloServer(("127.0.0.1", 0), HelloHandler)
    import server as demo

    class QuietCounter(demo.CounterHandler):
        """server.py's routes without the access log (express has none by default)."""

        def log_message(self, format: str, *args: object) -> None:
            pass

    # What server.make_server() builds, with the two quiet classes above.
    args = demo.parse_args(["--port", "0"])
    return CounterServer(("127.0.0.1", 0), QuietCounter, demo.make_middleware(args))


def cpu_seconds() -> float:
    """This process's user+system CPU time, all threads, in seconds."""
    try:
        import resource  # Unix: microsecond resolution
    except ImportError:
        times = os.times()  # elsewhere: clock ticks
        return times.user + times.system
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve(kind: str) -> int:
    """The child's side of the protocol above: serve ``kind`` until stdin closes."""
    server = make_server(kind)
    threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()
    print(server.server_address[1], flush=True)
    for _ in sys.stdin:
        print(f"{cpu_seconds():.6f} {server.disconnects}", flush=True)  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    return 0


class ServerProcess:
    """The parent's side of the protocol: start a server command, ask for its CPU time.

    ``ServerProcess([sys.executable, __file__, '--serve', 'hello'])``, or any
    command that speaks the protocol (a Node script can).
    """

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin, self._stdout = self.process.stdin, self.process.stdout
        line = self._stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"{command!r} did not print its port (got {line!r})")
        self.port = int(line)

    def usage(self) -> tuple[float, int]:
        """(CPU seconds so far, clients disconnected so far), as the server reports them."""
        self._stdin.write("cpu\n")
        self._stdin.flush()
        seconds, disconnects = self._stdout.readline().split()
        return float(seconds), int(disconnects)

    def close(self) -> None:
        """Close the server's stdin, which stops it; kill it if it has not gone in 10 s."""
        self._stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_cookie(port: int) -> str:
    """Visit the counter once as a new visitor; return the Cookie a returning visitor sends."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/")
    answer = connection.getresponse()
    answer.read()
    connection.close()
    set_cookie = answer.getheader("Set-Cookie")
    if answer.status != 200 or not set_cookie:
        raise RuntimeError(f"the counter answered {answer.status} with no Set-Cookie")
    return set_cookie.split(";", 1)[0]


def warm_up(port: int, path: str, cookie: str, count: int = 200) -> None:
    """A few sequential requests, so that the first round does not pay for first times."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(count):
        connection.request("GET", path, headers={"Cookie": cookie})
        connection.getresponse().read()
    connection.close()


# ---- 2. end to end: the load --------------------------------------------------
#
# wrk when it is installed (one thread, N keep-alive connections); otherwise N
# client processes, one keep-alive connection each, so that the load never
# competes for the benchmark's own interpreter lock.


class Load:
    """What one load run saw: requests completed, their rate, latencies and errors."""

    def __init__(self, requests: int, rate: float, p50_ms: float, p99_ms: float,
                 errors: int, client_cpu: float) -> None:
        self.requests = requests
        self.rate = rate
        self.p50_ms = p50_ms
        self.p99_ms = p99_ms
        self.errors = errors  # non-2xx answers, connection and read errors, timeouts
        self.client_cpu = client_cpu  # the load generator's own CPU seconds


def children_cpu() -> float:
    """User+system CPU seconds of this process's children that have ended."""
    times = os.times()
    return times.children_user + times.children_system


def wrk_load(port: int, path: str, cookie: str, clients: int, seconds: float) -> Load:
    """Run wrk (one thread, ``clients`` keep-alive connections, the same Cookie on all)."""
    command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency",
               "-H", f"Cookie: {cookie}", f"http://127.0.0.1:{port}{path}"]
    before = children_cpu()
    run = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    client_cpu = children_cpu() - before
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed: {run.stderr.strip() or run.stdout.strip()}")
    return parse_wrk(run.stdout, client_cpu)


def parse_wrk(out: str, client_cpu: float = 0.0) -> Load:
    """Read wrk's report: the request count, Requests/sec, the 50% and 99% latencies, errors."""
    requests, rate, p50, p99, errors = 0, float("nan"), float("nan"), float("nan"), 0
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
    for line in out.splitlines():
        words = line.replace(",", " ").split()
        if len(words) >= 3 and words[1] == "requests" and words[2] == "in":
            requests = int(words[0])  # "  66021 requests in 5.01s, 9.00MB read"
        elif words[:1] == ["Requests/sec:"]:
            rate = float(words[1])
        elif words[:1] in (["50%"], ["99%"]):
            number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", words[1]).groups()  # type: ignore[union-attr]
            latency = float(number) * units[unit]
            p50, p99 = (latency, p99) if words[0] == "50%" else (p50, latency)
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            errors += int(words[-1])
        elif words[:2] == ["Socket", "errors:"]:
            # "Socket errors: connect 0, read 3, write 0, timeout 0"
            errors += sum(int(word) for word in words[2:] if word.isdigit())
    return Load(requests, rate, p50, p99, errors, client_cpu)


def read_answer(connection: socket.socket, pending: bytes) -> tuple[int, bytes]:
    """Read one HTTP response with a Content-Length; return (status, bytes read past it)."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    match = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head, re.IGNORECASE)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        rest += chunk
    return int(head[9:12]), rest[length:]


def client_process(port: int, request: bytes, seconds: float, start: Any, results: Any) -> None:
    """One client in its own process: one keep-alive connection, requests back to back.

    Waits at ``start`` (a barrier) with its connection open, sends for
    ``seconds``, then puts (requests, errors, latencies in seconds, elapsed)
    on ``results``.
    """
    def connect() -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    connection = connect()
    latencies: list[float] = []
    errors = 0
    pending = b""
    start.wait()
    started = time.perf_counter()
    deadline = started + seconds
    while (sent := time.perf_counter()) < deadline:
        try:
            connection.sendall(request)
            status, pending = read_answer(connection, pending)
        except OSError:
            errors += 1
            connection.close()
            connection, pending = connect(), b""
            continue
        latencies.append(time.perf_counter() - sent)
        if not 200 <= status < 400:
            errors += 1
    elapsed = time.perf_counter() - started
    connection.close()
    results.put((len(latencies), errors, latencies, elapsed))


def process_load(port: int, path: str, cookie: str, clients: int, seconds: float,
                 on_start: Callable[[], None] = lambda: None) -> Load:
    """``clients`` client processes, one keep-alive connection each, for ``seconds``.

    ``on_start`` runs when every client is connected, just before they start.
    """
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Cookie: {cookie}\r\n\r\n").encode("latin-1")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(clients + 1)
    results = context.Queue()
    before = children_cpu()
    workers = [context.Process(target=client_process, args=(port, request, seconds, start, results))
               for _ in range(clients)]
    for worker in workers:
        worker.start()
    start.wait(timeout=60)
    on_start()
    reports = [results.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join(10)
    latencies = sorted(latency for report in reports for latency in report[2])
    requests = sum(report[0] for report in reports)
    rate = sum(report[0] / report[3] for report in reports)
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return Load(requests, rate, p50, p99, sum(report[1] for report in reports),
                children_cpu() - before)


# ---- 2. end to end: the rounds ------------------------------------------------


class ServerWindow:
    """What a server spent between start() and stop(): CPU seconds, wall seconds, disconnects."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.cpu = self.wall = 0.0
        self.disconnects = 0
        self._cpu_before, self._disconnects_before, self._started = 0.0, 0, 0.0

    def start(self) -> None:
        """Read the server's figures as the load starts."""
        self._cpu_before, self._disconnects_before = self.server.usage()
        self._started = time.perf_counter()

    def stop(self) -> None:
        """Read them again as the load ends; keep the differences."""
        cpu, disconnects = self.server.usage()
        self.wall = time.perf_counter() - self._started
        self.cpu = cpu - self._cpu_before
        self.disconnects = disconnects - self._disconnects_before


class Round:
    """One measured load on one server: the load's figures and the server's CPU over it."""

    def __init__(self, load: Load, window: ServerWindow) -> None:
        self.load = load
        self.cpu_us = window.cpu / load.requests * 1e6 if load.requests else float("nan")
        self.busy = window.cpu / window.wall if window.wall else float("nan")  # share of one core
        self.disconnects = window.disconnects


def measure(server: ServerProcess, path: str, cookie: str, clients: int, seconds: float,
            use_wrk: bool) -> Round:
    """Drive ``server`` once; its CPU time is read just before and just after the load."""
    window = ServerWindow(server)
    if use_wrk:
        window.start()
        load = wrk_load(server.port, path, cookie, clients, seconds)
    else:
        load = process_load(server.port, path, cookie, clients, seconds, on_start=window.start)
    window.stop()
    return Round(load, window)


def end_to_end(clients: int, seconds: float, rounds: int, use_wrk: bool) -> dict[str, list[Round]]:
    """Alternate the rows (hello, counter, peek, hello, ...) for ``rounds`` rounds each."""
    here = str(Path(__file__).resolve())
    with ServerProcess([sys.executable, here, "--serve", "hello"]) as hello, \
            ServerProcess([sys.executable, here, "--serve", "counter"]) as counter:
        cookie = first_cookie(counter.port)  # a returning visitor; the hello-world gets it too
        rows = {"hello": (hello, "/"), "counter": (counter, "/"), "peek": (counter, "/peek")}
        for server, path in rows.values():
            warm_up(server.port, path, cookie)
        results: dict[str, list[Round]] = {kind: [] for kind in rows}
        for _ in range(rounds):
            for kind, (server, path) in rows.items():
                results[kind].append(measure(server, path, cookie, clients, seconds, use_wrk))
    return results


def median_of(rounds: list[Round], figure: Callable[[Round], float]) -> float:
    """The median of one figure over the rounds (each column on its own)."""
    return statistics.median(figure(each) for each in rounds)


# ---- 3. memory --------------------------------------------------------------


def bytes_per_session(store_factory: Callable[[], sd.Store], count: int, payload: int) -> float:
    """tracemalloc's growth per stored session, for sessions with ``payload`` bytes of data."""
    options = sd.SessionOptions(secret=SECRET, resave=False, save_uninitialized=True)
    middleware = sd.SessionMiddleware(options)
    states = []
    for _ in range(count):
        state = middleware.begin(sd.RequestInfo(url="/"))
        if payload:
            state.session["data"] = "x" * payload
        states.append(state)
    store = store_factory()
    ids = [secrets.token_urlsafe(24) for _ in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for sid, state in zip(ids, states):
        store.set(sid, state.session)
    states.clear()  # the requests are over: what is left is what the store holds
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


def resident_bytes() -> int | None:
    """This process's resident memory, from /proc (Linux); None where there is no /proc."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def churn(store_factory: Callable[[Clock], sd.Store], total: int) -> list[int]:
    """Create ``total`` one-second sessions while time moves on.

    Returns how much the process grew after each quarter of the churn, in
    bytes: resident memory where /proc tells it (fast), else tracemalloc's count.
    """
    clock = Clock()
    options = sd.SessionOptions(secret=SECRET, resave=False, save_uninitialized=True,
                                cookie={"max_age": 1000}, clock=clock)
    middleware = sd.SessionMiddleware(options)
    state = middleware.begin(sd.RequestInfo(url="/"))
    session = state.session
    store = store_factory(clock)
    gc.collect()
    use_tracemalloc = resident_bytes() is None
    if use_tracemalloc:
        tracemalloc.start()

    def memory() -> int:
        return tracemalloc.get_traced_memory()[0] if use_tracemalloc else resident_bytes() or 0

    before = memory()
    held = []
    for number in range(1, total + 1):
        clock.now += 0.001  # a thousand new visitors a second; each session lives one second
        session.cookie.max_age = 1000
        store.set(f"{number:032d}", session)
        if number % 1000 == 0:
            store.get(f"{number:032d}")  # some traffic from returning visitors
        if number % (total // 4) == 0:
            held.append(memory() - before)
    if use_tracemalloc:
        tracemalloc.stop()
    del store
    gc.collect()
    return held


# ---- the report --------------------------------------------------------------


def print_end_to_end(results: dict[str, list[Round]], clients: int, seconds: float,
                     tool: str) -> None:
    """The end-to-end table: the median of each figure over the rounds, and the ratios."""
    rounds = len(results["hello"])
    print(f"2. End to end: {tool}, {clients} keep-alive connections, one returning visitor's "
          f"cookie, {seconds:g} s per round,")
    print(f"   rows alternating, median of {rounds} round{'s' if rounds > 1 else ''}; "
          "each server in its own process")
    print(f"   {'server':34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>11} "
          f"{'core %':>7} {'errors':>7}")
    labels = {"hello": "bare http.server hello-world",
              "counter": "server.py view counter (/)",
              "peek": "server.py read-only (/peek)"}
    medians: dict[str, tuple[float, float]] = {}
    for kind, each in results.items():
        rate = median_of(each, lambda r: r.load.rate)
        cpu_us = median_of(each, lambda r: r.cpu_us)
        medians[kind] = (rate, cpu_us)
        print(f"   {labels[kind]:34} {rate:7.0f} {median_of(each, lambda r: r.load.p50_ms):7.2f} "
              f"{median_of(each, lambda r: r.load.p99_ms):7.2f} {cpu_us:11.1f} "
              f"{median_of(each, lambda r: r.busy * 100):7.0f} "
              f"{sum(r.load.errors for r in each):7d}")
    hello_rate, hello_cpu = medians["hello"]
    for kind in ("counter", "peek"):
        rate, cpu_us = medians[kind]
        print(f"   {labels[kind]:34} {rate / hello_rate:6.0%} of the hello-world's req/s, "
              f"{cpu_us / hello_cpu:.2f}x its CPU per request")
    everything = [r for each in results.values() for r in each]
    client_us = (sum(r.load.client_cpu for r in everything) * 1e6
                 / sum(r.load.requests for r in everything))
    errors = "non-2xx answers and socket errors" if tool.startswith("wrk") else \
        "non-2xx answers and connection errors"
    disconnects = ", ".join(f"{kind} {sum(r.disconnects for r in each)}"
                            for kind, each in results.items())
    print("   CPU µs/req: the server process's user+system CPU time over the load, per request;")
    print("   core %: that CPU time over the load's wall time (100: one core busy all along);")
    print(f"   errors: {errors}, summed over the rounds.")
    print(f"   The load generator itself used {client_us:.1f} µs of CPU per request.")
    print(f"   Clients that disconnected mid-request (counted, not printed): {disconnects}.")
    print()


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print the tables (or, with --serve, be a server)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 20 seconds")
    parser.add_argument("--load", choices=["wrk", "processes"], default=None,
                        help="the load generator: wrk (the default when it is installed) or "
                             "client processes")
    parser.add_argument("--serve", choices=["hello", "counter"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)  # a child process of end_to_end()
    quick = args.quick
    started = time.perf_counter()

    count, repeats = (2_000, 5) if quick else (10_000, 7)
    print(f"session_demo benchmark ({'quick' if quick else 'full'}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")
    print()
    print("1. Session step, in process (median µs per request)")
    print(f"   {'request':32} {'step':>8} {'floor':>8} {'ratio':>7}")
    for name, step, floor in session_step_table(count, repeats):
        print(f"   {name:32} {step:8.1f} {floor:8.1f} {step / floor:6.1f}x")
    print("   floor: the HMAC (pre-keyed), json and token_urlsafe calls that request cannot avoid")
    print()

    use_wrk = args.load == "wrk" or (args.load is None and shutil.which("wrk") is not None)
    clients, seconds, rounds = (8, 2.0, 1) if quick else (8, 5.0, 3)
    results = end_to_end(clients, seconds, rounds, use_wrk)
    print_end_to_end(results, clients, seconds, "wrk -t1" if use_wrk else "client processes")

    sessions = 2_000 if quick else 20_000
    print("3. Memory")
    stores: list[tuple[str, Callable[[], sd.Store]]] = [
        ("MemoryStore", sd.MemoryStore),
        ("BoundedMemoryStore", lambda: BoundedMemoryStore(max_sessions=10 ** 7)),
    ]
    for name, factory in stores:
        minimal = bytes_per_session(factory, sessions, 0)
        kilobyte = bytes_per_session(factory, sessions, 1024)
        print(f"   {name:20} {minimal:7.0f} bytes per minimal session, {kilobyte:7.0f} per 1 KB session")
    total = 50_000 if quick else 1_000_000
    how = "resident memory" if resident_bytes() is not None else "tracemalloc"
    print(f"   a churn of {total:,} one-second sessions, time moving on; growth in MB ({how}) "
          "after each quarter:")
    # The bounded store goes first: memory the other one frees would hide its growth.
    churned: list[tuple[str, Callable[[Clock], sd.Store]]] = [
        ("BoundedMemoryStore", lambda clock: BoundedMemoryStore(clock=clock, max_sessions=10_000)),
        ("MemoryStore", lambda clock: sd.MemoryStore(clock=clock)),
    ]
    for name, factory in churned:
        held = churn(factory, total)
        print(f"   {name:20} " + "  ".join(f"{size / 1e6:7.1f}" for size in held))
    print()
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
