"""What does a session cost? Three tables: the session step, the demo server end to end, memory.

    python3 benchmarks/bench_session.py           # the full run (about two minutes)
    python3 benchmarks/bench_session.py --quick   # a smaller run (under a minute)
    python3 benchmarks/bench_session.py --lost-updates   # only table 4 (below; about five minutes)

Standard library only (wrk is used when it is installed). Machines are shared
and noisy: read the ratios, which compare figures taken in the same run,
rather than the absolute numbers. Nothing is asserted: the figures are reported.

1. The in-process session step, median microseconds per request, for four
   kinds of request, each beside the HMAC, JSON and id work that kind of
   request cannot avoid (for reference: express's design needs more than that).
2. End to end, at 8 and at 64 connections: `python3 server.py` as a user runs
   it (default flags; its access lines and the page's bookkeeping on), on its
   counter and its read-only /peek, beside a bare http.server hello-world,
   each in a process of its own, driven by wrk (or, without it, by client
   processes, and the output says what that means) with a returning visitor's
   cookie, in alternating rounds. Besides req/s and latencies, each server's
   own CPU time per request, which the load generator cannot inflate by
   starving the server of a core.
3. Memory: bytes per stored session (tracemalloc), and what a churn of
   sessions that are created and expire leaves behind in each store.
4. Lost updates (only with --lost-updates): 16 clients x 25 requests at
   once on one session cookie, against server.py with each --concurrency
   mode, on one process and on two sharing a SQLite file: changes kept.
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
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import session_demo as sd  # noqa: E402
from session_demo_extras.bounded_store import BoundedMemoryStore  # noqa: E402

SECRET = "keyboard cat"  # the demo's, as server.py's default; its short-secret warning is left out
warnings.filterwarnings("ignore", "short secret")


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


def begin(middleware: sd.SessionMiddleware, cookie: str | None = None) -> tuple[sd.RequestState, sd.Session]:
    """Begin a request for ``/`` (always within the cookie's path): its state and its session."""
    state = middleware.begin(sd.RequestInfo(url="/", cookie_header=cookie))
    assert state is not None and state.session is not None
    return state, state.session


def session_step_table(count: int, repeats: int) -> list[tuple[str, float, float]]:
    """(kind of request, session step µs, floor µs) for the four kinds of request."""
    options = sd.SessionOptions(secret=SECRET, resave=False, save_uninitialized=True,
                                cookie={"max_age": 60_000})
    middleware = sd.SessionMiddleware(options)

    def request(cookie: str | None, modify: bool = False) -> None:
        state, session = begin(middleware, cookie)
        if modify:
            session["views"] = session.get("views", 0) + 1
        middleware.set_cookie_header(state)
        middleware.end(state)

    first, session = begin(middleware)
    session["views"] = 1
    set_cookie = middleware.set_cookie_header(first)
    middleware.end(first)
    assert set_cookie is not None
    pair = set_cookie.split(";", 1)[0]
    cookie = f"_ga=GA1.2.3; theme=dark; {pair}; lang=en"  # a realistic header of four cookies
    tampered = cookie.replace("s%3A", "s%3AX", 1)

    # The floors: what each kind of request cannot avoid.
    key = SECRET.encode()
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    sid = first.session_id
    signed = sd.sign(sid, SECRET)
    assert isinstance(options.store, sd.MemoryStore)
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
# Each server is a command in a process of its own: `python3 server.py --port 0`,
# exactly as a user runs it (its access lines go to a file rather than a
# terminal), and the bare hello-world (this file with --serve hello). Before and
# after each load the parent reads the server's own CPU time (user + system, all
# its threads) from /proc: divided by the requests served, that is the server's
# CPU per request, whatever the load generator costs on the same cores.

REPOSITORY = Path(__file__).resolve().parent.parent
LISTEN_BACKLOG = 128  # the hello-world's, as server.py's: at 64 connections, none waits on a full queue


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
        """No access log: the baseline is the serving alone."""


class HelloServer(ThreadingHTTPServer):
    """The hello-world's server: http.server's ThreadingHTTPServer."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that disconnects mid-request (the load ending) is normal: no traceback."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve_hello() -> int:
    """The hello-world's process: print the URL, as server.py does, and serve until Ctrl+C (SIGINT)."""
    server = HelloServer(("127.0.0.1", 0), HelloHandler)
    print(f"Serving on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


class ServerProcess:
    """A server command in a process of its own: its port (from the URL it prints) and its CPU time.

    Its stderr goes to a temporary file (server.py's access lines), read back by ``stderr_text``.
    """

    def __init__(self, command: list[str]) -> None:
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        self.process = subprocess.Popen(command, cwd=REPOSITORY, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"http://[^/]*:(\d+)/", line)
        if match is None:
            self.close()
            raise RuntimeError(f"{command!r} did not print its URL (got {line!r})")
        self.port = int(match.group(1))

    def cpu_seconds(self) -> float | None:
        """The process's user+system CPU seconds so far, all threads; None where /proc cannot tell."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Stop the server as Ctrl+C does (SIGINT); kill it if it has not gone in 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()

    def stderr_text(self) -> str:
        """What the server wrote on stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._stderr.close()


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
# wrk when it is installed (one thread, N keep-alive connections); otherwise a
# few client processes, each keeping its share of the N connections busy from
# one selectors loop, so that the load never competes for the server's
# interpreter lock. Either way the report says how much CPU the load took.


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
            match = re.fullmatch(r"([\d.]+)([a-z]+)", words[1])
            assert match is not None, line
            latency = float(match.group(1)) * units[match.group(2)]
            p50, p99 = (latency, p99) if words[0] == "50%" else (p50, latency)
        elif words[:2] == ["Socket", "errors:"]:
            errors += sum(int(word) for word in words if word.isdigit())
        elif words[:1] == ["Non-2xx"]:
            errors += int(words[-1])
    return Load(requests, rate, p50, p99, errors, client_cpu)


def complete_answer(data: bytes) -> tuple[int, bytes] | None:
    """(status, the bytes after it) if ``data`` holds a whole response (Content-Length bodies only)."""
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        return None
    match = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head, re.IGNORECASE)
    length = int(match.group(1)) if match else 0
    if len(rest) < length:
        return None
    return int(head[9:12]), rest[length:]


def client_process(port: int, request: bytes, connections: int, seconds: float,
                   start: Any, results: Any) -> None:
    """One client process: ``connections`` keep-alive connections, each sending its next request
    as soon as its answer is in, all from one selectors loop.

    Waits at ``start`` (a barrier) with its connections open, sends for
    ``seconds``, then puts (requests, errors, latencies in seconds, elapsed)
    on ``results``. A connection the server closes counts as an error and is
    not replaced.
    """
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, list[Any]] = {}  # connection: [bytes received, when the request went]
    for _ in range(connections):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending[connection] = [b"", 0.0]
    latencies: list[float] = []
    errors = 0
    start.wait()
    started = time.perf_counter()
    deadline = started + seconds
    for connection, state in pending.items():
        state[1] = time.perf_counter()
        connection.sendall(request)
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ)
    while (now := time.perf_counter()) < deadline and selector.get_map():
        for key, _ in selector.select(deadline - now):
            connection = key.fileobj  # type: ignore[assignment]
            state = pending[connection]
            try:
                chunk = connection.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                errors += 1
                selector.unregister(connection)
                connection.close()
                continue
            state[0] += chunk
            answer = complete_answer(state[0])
            if answer is None:
                continue
            status, state[0] = answer
            latencies.append(time.perf_counter() - state[1])
            errors += not 200 <= status < 400
            state[1] = time.perf_counter()
            connection.send(request)  # a few hundred bytes into an empty send buffer
    elapsed = time.perf_counter() - started
    for connection in pending:
        connection.close()
    results.put((len(latencies), errors, latencies, elapsed))


def process_load(port: int, path: str, cookie: str, clients: int, seconds: float,
                 on_start: Callable[[], None] = lambda: None) -> Load:
    """``clients`` connections from one client process per core (at most one per connection).

    ``on_start`` runs when every client is connected, just before they start.
    """
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Cookie: {cookie}\r\n\r\n").encode("latin-1")
    processes = max(1, min(clients, os.cpu_count() or 1))
    shares = [clients // processes + (number < clients % processes) for number in range(processes)]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes + 1)
    results = context.Queue()
    before = children_cpu()
    workers = [context.Process(target=client_process,
                               args=(port, request, share, seconds, start, results))
               for share in shares]
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


class Round:
    """One measured load on one server: the load's figures and the server's CPU over it."""

    def __init__(self, load: Load, server_cpu: float | None, wall: float) -> None:
        self.load = load
        self.wall = wall
        self.server_cpu = server_cpu
        self.cpu_us = (server_cpu / load.requests * 1e6 if server_cpu is not None and load.requests
                       else float("nan"))
        self.client_core = load.client_cpu / wall if wall else float("nan")  # share of one core


def measure(server: ServerProcess, path: str, cookie: str, clients: int, seconds: float,
            use_wrk: bool) -> Round:
    """Drive ``server`` once; its CPU time is read just before and just after the load."""
    marks: list[tuple[float | None, float]] = []

    def mark() -> None:
        marks.append((server.cpu_seconds(), time.perf_counter()))

    if use_wrk:
        mark()
        load = wrk_load(server.port, path, cookie, clients, seconds)
    else:
        load = process_load(server.port, path, cookie, clients, seconds, on_start=mark)
    mark()
    (cpu_before, started), (cpu_after, ended) = marks
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Round(load, cpu, ended - started)


ROWS = {  # kind: (label, server, path)
    "hello": ("bare http.server hello-world", "hello", "/"),
    "counter": ("python3 server.py, the counter (/)", "server.py", "/"),
    "peek": ("python3 server.py, read-only (/peek)", "server.py", "/peek"),
}


def end_to_end(connections: list[int], seconds: float, rounds: int,
               use_wrk: bool) -> tuple[dict[tuple[str, int], list[Round]], int, int]:
    """For each number of connections, alternate the rows (hello, counter, peek, hello, ...).

    Returns the rounds of each (row, connections), and the access lines
    server.py wrote against the requests it answered.
    """
    here = str(Path(__file__).resolve())
    with ServerProcess([sys.executable, here, "--serve", "hello"]) as hello, \
            ServerProcess([sys.executable, "server.py", "--port", "0"]) as shipped:
        servers = {"hello": hello, "server.py": shipped}
        cookie = first_cookie(shipped.port)  # a returning visitor; the hello-world gets it too
        for _, name, path in ROWS.values():
            warm_up(servers[name].port, path, cookie)
        results: dict[tuple[str, int], list[Round]] = {}
        for clients in connections:
            for _ in range(rounds):
                for kind, (_, name, path) in ROWS.items():
                    results.setdefault((kind, clients), []).append(
                        measure(servers[name], path, cookie, clients, seconds, use_wrk))
        shipped.close()  # Ctrl+C: server.py writes the access lines still queued
        access_lines = shipped.stderr_text().count('"GET /')
    answered = sum(r.load.requests for (kind, _), each in results.items() if kind != "hello"
                   for r in each)
    return results, access_lines, answered


def median_of(rounds: list[Round], figure: Callable[[Round], float]) -> float:
    """The median of one figure over the rounds (each column on its own)."""
    return statistics.median(figure(each) for each in rounds)


# ---- 3. memory --------------------------------------------------------------


def bytes_per_session(store_factory: Callable[[], sd.Store], count: int, payload: int) -> float:
    """tracemalloc's growth per stored session, for sessions with ``payload`` bytes of data."""
    options = sd.SessionOptions(secret=SECRET, resave=False, save_uninitialized=True)
    middleware = sd.SessionMiddleware(options)
    sessions = []
    for _ in range(count):
        _, session = begin(middleware)
        if payload:
            session["data"] = "x" * payload
        sessions.append(session)
    store = store_factory()
    ids = [secrets.token_urlsafe(24) for _ in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for sid, session in zip(ids, sessions):
        store.set(sid, session)
    sessions.clear()  # the requests are over: what is left is what the store holds
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
    _, session = begin(middleware)
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


def print_end_to_end(results: dict[tuple[str, int], list[Round]], seconds: float, tool: str,
                     access_lines: int, answered: int) -> None:
    """The end-to-end table: the median of each figure over the rounds, and the ratios to the hello-world."""
    rounds = len(next(iter(results.values())))
    print(f"2. End to end: {tool}, a returning visitor's cookie, {seconds:g} s per round, rows alternating,")
    print(f"   median of {rounds} round{'s' if rounds > 1 else ''}; each server in its own process: "
          "python3 server.py as shipped (defaults,")
    print("   access lines and the page's bookkeeping on), and a bare http.server hello-world")
    print(f"   {'conns':>5} {'server':37} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'CPU µs/req':>10} "
          f"{'of hello req/s':>14} {'× hello CPU':>11} {'errors':>6}")
    for (kind, clients), each in results.items():
        rate = median_of(each, lambda r: r.load.rate)
        cpu_us = median_of(each, lambda r: r.cpu_us)
        hello = results[("hello", clients)]
        ratios = "" if kind == "hello" else (
            f"{rate / median_of(hello, lambda r: r.load.rate):14.0%} "
            f"{cpu_us / median_of(hello, lambda r: r.cpu_us):10.2f}x")
        print(f"   {clients:5d} {ROWS[kind][0]:37} {rate:7.0f} {median_of(each, lambda r: r.load.p50_ms):7.2f} "
              f"{median_of(each, lambda r: r.load.p99_ms):8.2f} {cpu_us:10.1f} {ratios:26} "
              f"{sum(r.load.errors for r in each):6d}")
    everything = [r for each in results.values() for r in each]
    print("   CPU µs/req: the server process's user+system CPU time over the load, per request"
          + (" (n/a: no /proc here)" if any(r.server_cpu is None for r in everything) else ""))
    errors = "non-2xx answers and socket errors" if tool.startswith("wrk") else \
        "non-2xx answers and connections the server closed"
    print(f"   errors: {errors}, summed over the rounds")
    print(f"   server.py wrote {access_lines} access lines; the load counted {answered} answers (the warm-up's")
    print("   and those still in flight as each round ended come on top)")
    client_us = (sum(r.load.client_cpu for r in everything) * 1e6
                 / max(1, sum(r.load.requests for r in everything)))
    busiest = max(r.client_core for r in everything)
    print(f"   The load generator used {client_us:.1f} µs of CPU per request, at most "
          f"{busiest:.0%} of one core in a round.")
    if tool.startswith("wrk"):
        if busiest > 0.9:
            print("   WARNING: wrk's one thread was nearly saturated: it may have been the bottleneck.")
    else:
        cores = os.cpu_count() or 1
        worst = max((r.load.client_cpu + (r.server_cpu or 0.0)) / r.wall for r in everything)
        why = "--load processes" if shutil.which("wrk") else "wrk is not installed: apt-get install wrk"
        print(f"   The load came from client processes ({why}), which share the cores with the")
        print("   server: req/s and latencies are lower than wrk's would be.")
        if worst > 0.85 * cores or client_us > 0.5 * min(r.cpu_us for r in everything):
            print(f"   WARNING: server and clients together kept {worst:.0%} of a core busy, on {cores} cores; "
                  "the load generator may be the bottleneck.")
    print()


# ---- 4. lost updates (--lost-updates) ---------------------------------------
#
# Many clients at once on one session cookie, against server.py's middleware
# for each --concurrency mode: how many of their changes does the session keep?
# The counter (every request adds one to views) and own keys (client N adds one
# to its own key kN), on a BoundedMemoryStore in one process and on one SQLite
# file shared by two processes (the clients' requests alternate between them).

LOST_CLIENTS, LOST_REQUESTS = 16, 25
LOST_MODES = ("default", "merge", "lock")


def serve_lost_updates(store: str, mode: str) -> int:
    """A child of lost_updates(): ``python3 server.py --store STORE --concurrency MODE`` as shipped, plus
    /key?c=N (add one to the session's key kN; with &wait, after 1 ms), /keys (the kN values as JSON) and
    /slowly (the counter, after 1 ms); until Ctrl+C (SIGINT)."""
    import server as demo

    def own_key(handler: Any, session: sd.Session, query: dict[str, list[str]]) -> None:
        if "wait" in query:
            time.sleep(0.001)  # as a handler waits for its database: other requests run meanwhile
        key = "k" + query.get("c", ["0"])[0]
        session[key] = session.get(key, 0) + 1
        handler.reply(200, str(session[key]))

    def count_view_slowly(handler: Any, session: sd.Session, query: dict[str, list[str]]) -> None:
        time.sleep(0.001)
        handler.count_view(session, query)

    def own_keys(handler: Any, session: sd.Session, query: dict[str, list[str]]) -> None:
        handler.reply(200, json.dumps({key: session[key] for key in session if key.startswith("k")}))

    demo.CounterHandler.own_key = own_key  # type: ignore[attr-defined]
    demo.CounterHandler.own_keys = own_keys  # type: ignore[attr-defined]
    demo.CounterHandler.count_view_slowly = count_view_slowly  # type: ignore[attr-defined]
    demo.CounterHandler.ROUTES = {**demo.CounterHandler.ROUTES, "/key": "own_key", "/keys": "own_keys",
                                  "/slowly": "count_view_slowly"}
    flags = ["--port", "0", "--store", store] + ([] if mode == "default" else ["--concurrency", mode])
    return demo.main(flags)


def lost_updates_run(mode: str, processes: int, store: str, workload: str,
                     wait: bool = False) -> tuple[int, int]:
    """One run: LOST_CLIENTS x LOST_REQUESTS at once; (changes kept, answers other than 200).
    ``wait``: each request's handler first waits 1 ms, as one that queries a database does."""
    command = [sys.executable, __file__, "--serve-lost-updates", store, mode]
    servers = [ServerProcess(command) for _ in range(processes)]
    try:
        cookie = first_cookie(servers[0].port)  # views = 1
        failed = [0]
        lock = threading.Lock()
        start = threading.Barrier(LOST_CLIENTS)

        def client(number: int) -> None:
            connections = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=60) for s in servers]
            if workload == "counter":
                path = "/slowly" if wait else "/"
            else:
                path = f"/key?c={number}" + ("&wait=1" if wait else "")
            start.wait()
            for request in range(LOST_REQUESTS):
                connection = connections[(number + request) % len(connections)]  # turn by turn
                connection.request("GET", path, headers={"Cookie": cookie})
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200:
                    with lock:
                        failed[0] += 1
            for connection in connections:
                connection.close()

        threads = [threading.Thread(target=client, args=(number,)) for number in range(LOST_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        connection = http.client.HTTPConnection("127.0.0.1", servers[0].port, timeout=10)
        connection.request("GET", "/peek" if workload == "counter" else "/keys", headers={"Cookie": cookie})
        body = connection.getresponse().read().decode()
        connection.close()
        kept = int(body.split()[-1]) - 1 if workload == "counter" else sum(json.loads(body).values())
        return kept, failed[0]
    finally:
        for server in servers:
            server.__exit__()


def lost_updates(runs: int) -> None:
    """Print table 4: changes kept (min / median / max of ``runs``) per workload, store and mode."""
    total = LOST_CLIENTS * LOST_REQUESTS
    print(f"4. Lost updates: {LOST_CLIENTS} clients x {LOST_REQUESTS} requests at once on one session "
          f"cookie, server.py --concurrency MODE;")
    print(f"   changes kept of {total}, min / median / max of {runs} runs (answers other than 200)")
    print(f"   {'workload':10} {'store':31}" + "".join(f" {mode:>20}" for mode in LOST_MODES))
    with tempfile.TemporaryDirectory() as directory:
        for workload in ("counter", "own keys"):
            for processes, store, wait in ((1, "bounded", False), (1, "bounded", True), (2, "sqlite", False)):
                kept: dict[str, list[int]] = {mode: [] for mode in LOST_MODES}
                failed = dict.fromkeys(LOST_MODES, 0)
                for run in range(runs):
                    for mode in LOST_MODES:  # in turn, so that a busier moment of the machine hits each
                        spec = store if store == "bounded" else f"sqlite:{directory}/{workload[0]}{mode}{run}.db"
                        changes, errors = lost_updates_run(mode, processes, spec, workload, wait)
                        kept[mode].append(changes)
                        failed[mode] += errors
                cells = [f"{min(kept[m])}/{statistics.median(kept[m]):.0f}/{max(kept[m])} ({failed[m]})"
                         for m in LOST_MODES]
                where = ("one SQLite file, two processes" if processes == 2
                         else "one process, handler waits 1 ms" if wait else "bounded, one process")
                print(f"   {workload:10} {where:31}" + "".join(f" {cell:>20}" for cell in cells))
    print("   counter: each request adds one to views; own keys: client N adds one to its key kN;")
    print("   the handler that waits 1 ms (as for a database) lets other requests run between load and save")
    print()


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print the tables (or, with --serve, be a server)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--load", choices=["wrk", "processes"], default=None,
                        help="the load generator: wrk (the default when it is installed) or "
                             "client processes")
    parser.add_argument("--serve", choices=["hello"], help=argparse.SUPPRESS)
    parser.add_argument("--lost-updates", action="store_true",
                        help="only table 4: changes kept when many clients share one session, per "
                             "--concurrency mode (about five minutes; with --quick, two runs each)")
    parser.add_argument("--serve-lost-updates", nargs=2, metavar=("STORE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_hello()  # a child process of end_to_end()
    if args.serve_lost_updates:
        return serve_lost_updates(*args.serve_lost_updates)  # a child process of lost_updates()
    if args.lost_updates:
        lost_updates(2 if args.quick else 5)
        return 0
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
    print("   floor: the HMAC (pre-keyed), json and token_urlsafe calls that request cannot avoid;")
    print("   for reference, not a target: express-session's design does more than that")
    print()

    use_wrk = args.load == "wrk" or (args.load is None and shutil.which("wrk") is not None)
    seconds, rounds = (2.0, 1) if quick else (4.0, 3)
    results, access_lines, answered = end_to_end([8, 64], seconds, rounds, use_wrk)
    print_end_to_end(results, seconds, "wrk -t1" if use_wrk else "client processes",
                     access_lines, answered)

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
    for name, churned_factory in churned:
        held = churn(churned_factory, total)
        print(f"   {name:20} " + "  ".join(f"{size / 1e6:7.1f}" for size in held))
    print()
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
