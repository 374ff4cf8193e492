"""What does a session cost? One table: the session step, the demo server end to end, memory.

    python3 benchmarks/bench_session.py           # the full run (under two minutes)
    python3 benchmarks/bench_session.py --quick   # a smaller run (under 20 seconds)

Standard library only. Machines are shared and noisy: read the ratios, which
compare figures taken in the same run, rather than the absolute numbers.

1. The in-process session step, median microseconds per request, for four
   kinds of request, each beside its *floor*: the HMAC, JSON and id work that
   kind of request cannot avoid, timed with the standard library alone.
2. End to end: server.py's view counter against a bare ThreadingHTTPServer
   hello-world, both keep-alive, in a child process each, driven by the same
   threaded http.client load generator (or wrk, if it is on the PATH).
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
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import session_demo as sd  # noqa: E402
from extras.bounded_store import BoundedMemoryStore  # noqa: E402

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


# ---- 2. end to end ----------------------------------------------------------


class HelloHandler(BaseHTTPRequestHandler):
    """The bare baseline: keep-alive, 'hello, world', headers and body in one write."""

    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # buffer the response; handle_one_request flushes it in one write

    def do_GET(self) -> None:
        """Answer 'hello, world', keep-alive."""
        body = b"hello, world"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: the benchmark measures the serving, not the logging."""


def serve(kind: str, ports: multiprocessing.Queue) -> None:
    """Child process: run one server on a free loopback port and report the port."""
    if kind == "hello":
        server: ThreadingHTTPServer = ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler)
        server.daemon_threads = True
    else:
        import server as demo

        class QuietCounter(demo.CounterHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

        args = demo.parse_args(["--port", "0"])
        server = sd.SessionHTTPServer(("127.0.0.1", 0), QuietCounter,
                                      sd.session_middleware(**demo.middleware_options(args)))
    ports.put(server.server_address[1])
    server.serve_forever(poll_interval=0.1)


def drive(port: int, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """``clients`` keep-alive clients, each one visitor with its own cookie, for ``seconds``.

    Returns (requests per second, p50 ms, p99 ms, errors).
    """
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        cookie = None
        mine = []
        while time.perf_counter() < deadline:
            headers = {"Cookie": cookie} if cookie else {}
            started = time.perf_counter()
            try:
                connection.request("GET", "/", headers=headers)
                answer = connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append(time.perf_counter() - started)
            if answer.status != 200:
                with lock:
                    errors[0] += 1
            set_cookie = answer.getheader("Set-Cookie")
            if set_cookie:
                cookie = set_cookie.split(";", 1)[0]
        connection.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return len(latencies) / elapsed, p50, p99, errors[0]


def drive_with_wrk(port: int, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """The same load with wrk (one visitor's cookie on every connection)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/")
    answer = connection.getresponse()
    answer.read()
    cookie = (answer.getheader("Set-Cookie") or "").split(";", 1)[0]
    connection.close()
    command = ["wrk", "-t2", f"-c{clients}", f"-d{max(1, int(seconds))}s", "--latency",
               f"http://127.0.0.1:{port}/"]
    if cookie:
        command[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout

    def figure(label: str) -> float:
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == label:
                value = parts[1]
                scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
                for unit in ("us", "ms", "s"):
                    if value.endswith(unit):
                        return float(value[: -len(unit)]) * scale[unit]
                return float(value)
        return float("nan")

    return figure("Requests/sec:"), figure("50%"), figure("99%"), 0


def end_to_end(clients: int, seconds: float) -> dict[str, tuple[float, float, float, int]]:
    """Start each server in its own process and drive it with the same load."""
    use_wrk = shutil.which("wrk") is not None
    results = {}
    context = multiprocessing.get_context("spawn")
    for kind in ("hello", "counter"):
        ports: multiprocessing.Queue = context.Queue()
        child = context.Process(target=serve, args=(kind, ports), daemon=True)
        child.start()
        try:
            port = ports.get(timeout=30)
            drive(port, 2, min(0.5, seconds / 4))  # warm up
            results[kind] = (drive_with_wrk if use_wrk else drive)(port, clients, seconds)
        finally:
            child.terminate()
            child.join(10)
    return results


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


def main() -> int:
    """Run the three measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 20 seconds")
    args = parser.parse_args()
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

    clients, seconds = 8, (1.5 if quick else 5.0)
    results = end_to_end(clients, seconds)
    tool = "wrk" if shutil.which("wrk") else "threaded http.client"
    print(f"2. End to end, {clients} keep-alive clients, {seconds:g} s each ({tool})")
    print(f"   {'server':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    labels = {"hello": "bare http.server hello-world", "counter": "server.py view counter"}
    for kind, (rate, p50, p99, errors) in results.items():
        print(f"   {labels[kind]:32} {rate:8.0f} {p50:8.2f} {p99:8.2f} {errors:7d}")
    hello_rate, counter_rate = results["hello"][0], results["counter"][0]
    print(f"   counter / hello-world: {counter_rate / hello_rate:.0%}")
    print()

    sessions = 2_000 if quick else 20_000
    print("3. Memory")
    stores: list[tuple[str, Callable[[], sd.Store]]] = [("MemoryStore", sd.MemoryStore)]
    if hasattr(sd, "BoundedMemoryStore"):
        stores.append(("BoundedMemoryStore", lambda: BoundedMemoryStore(max_sessions=10 ** 7)))
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
