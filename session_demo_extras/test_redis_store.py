"""Tests for session_demo_extras.redis_store: RedisStore against a real redis-server, as connect-redis 10 keeps sessions.

The tests start their own redis-server (a free loopback port, a temporary
directory, no persistence) and are skipped, with a one-line reason, when
``redis-server`` and ``redis-cli`` are not installed.
"""

from __future__ import annotations

import http.client
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import Any

import server
import session_demo as sd
from session_demo_extras.redis_store import (
    RedisClient, RedisConnectionError, RedisReplyError, RedisStore, parse_redis_url,
)
from session_demo_extras.test_concurrency import with_concurrency
from session_demo_extras.test_stores import _LockOwnersContract, _StoreContract, _StoreHelpers, _VersionsContract
from session_demo import RequestInfo
from test_session import (
    AppHandler, FrozenClock, SECRET, Response, SessionAssertions, LiveServer, cookie_pair, run_request,
)

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
NEEDS_REDIS = unittest.skipUnless(REDIS_SERVER and REDIS_CLI,
                                  "redis-server and redis-cli are not installed (apt-get install redis-server)")
TIMEOUT = 30  # seconds: a child process or a wait that takes longer fails the test
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ==== A real redis-server for the tests ======================================


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server child process on a free loopback port, in a temporary directory, with no persistence."""

    def __init__(self, *flags: str) -> None:
        self.directory = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.flags = flags
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers."""
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory.name, *self.flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(64)[:1] in (b"+", b"-"):  # PONG, or NOAUTH: it answers
                        return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the server (its data goes: there is no persistence)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # in case a test paused it
            self.process.terminate()
            self.process.wait(TIMEOUT)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel, and nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        self.directory.cleanup()

    def url(self, db: int = 0, auth: str = "") -> str:
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def cli(self, *args: str, db: int = 0) -> str:
        """Run redis-cli, another Redis client, against this server; its output without the last newline."""
        done = subprocess.run([REDIS_CLI, "-p", str(self.port), "-n", str(db), *args],
                              capture_output=True, text=True, timeout=TIMEOUT, check=True)
        return done.stdout.rstrip("\n")


_shared: RedisServer | None = None


def shared_redis() -> RedisServer:
    """The module's redis-server, started on first use and stopped when the module's tests end."""
    global _shared
    if _shared is None:
        _shared = RedisServer()
        unittest.addModuleCleanup(_stop_shared)
    return _shared


def _stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None


def http_get(port: int, path: str = "/", cookie: str | None = None) -> Response:
    """One GET to 127.0.0.1:port on a fresh connection (10 s at most), with ``cookie`` as the Cookie header."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        answer = connection.getresponse()
        return Response(answer.status, answer.headers, answer.read().decode("utf-8", "replace"))
    finally:
        connection.close()


class _RedisHelpers(_StoreHelpers):
    """Stores and raw clients on the shared redis-server, emptied before each test."""

    def setUp(self) -> None:
        self.redis = shared_redis()
        self.redis.cli("FLUSHALL")
        self.clock = FrozenClock(time.time())  # near Redis's own clock: TTLs are computed from it

    def redis_store(self, redis: RedisServer | None = None, db: int = 0, **options: Any) -> RedisStore:
        """A RedisStore on ``redis`` (the shared server), on this test's clock, closed after the test."""
        options.setdefault("clock", self.clock)
        store = RedisStore((redis or self.redis).url(db), **options)
        self.addCleanup(store.close)
        return store

    def raw(self, redis: RedisServer | None = None, db: int = 0) -> RedisClient:
        """Our RESP client on its own, to look behind the store's back."""
        client = RedisClient((redis or self.redis).url(db))
        self.addCleanup(client.close)
        return client

    def sid_of(self, cookie: str) -> str:
        """The session id in a ``connect.sid=s%3A...`` pair."""
        value = sd.decode_uri_component(cookie.split("=", 1)[1])
        sid = sd.unsign(value[2:], SECRET)
        assert sid is not None
        return sid

    @staticmethod
    def counter_or_503(handler: AppHandler) -> None:
        """The view counter; without a session (the store is not ready) a 503."""
        session = handler.session
        if session is None:
            handler.reply(503, "no session")
            return
        session["views"] = session.get("views", 0) + 1
        handler.reply(200, f"views: {session['views']}")


# ==== The store contract ====================================================


@NEEDS_REDIS
class TestRedisStoreContract(_RedisHelpers, _StoreContract, _VersionsContract, unittest.TestCase):
    """RedisStore behaves as a Store, with versions; where expiry is Redis's TTL, the test says so."""

    def make_store(self, clock: FrozenClock) -> RedisStore:
        return self.redis_store()

    def setUp(self) -> None:
        _RedisHelpers.setUp(self)
        self.store = self.make_store(self.clock)
        self.client = self.raw()

    # Redis expires keys on its own clock, so the tests that move a FrozenClock past
    # a cookie's expiry are replaced by what RedisStore does instead: it computes the
    # TTL from the clock, deletes on a ttl <= 0, and touch() is EXPIRE.

    def test_a_session_expires_when_its_cookie_does(self) -> None:
        """Redis: the key lives until the cookie's expires (rounded up to a second); an expired cookie deletes it."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000))
        self.assertEqual(self.client.execute("TTL", "sess:sid-1"), 1)
        self.clock.advance(ms=999)
        self.store.set("sid-1", self.stored(self.clock, max_age=1))  # 1 ms left: still 1 s
        self.assertEqual(self.client.execute("TTL", "sess:sid-1"), 1)
        self.clock.advance(ms=1)
        self.store.set("sid-1", self.stored(self.clock, max_age=0))  # expires now
        self.assertIsNone(self.store.get("sid-1"))
        self.assertEqual(self.store.length(), 0)

    def test_a_session_without_expiry_never_expires(self) -> None:
        """Redis: a browser-session cookie's session is kept ``ttl`` seconds (86,400), as connect-redis does."""
        self.store.set("sid-1", self.stored(self.clock, max_age=None, views=1))
        self.assertEqual(self.client.execute("TTL", "sess:sid-1"), 86400)
        self.assertEqual(self.store.get("sid-1")["views"], 1)

    def test_touch_moves_the_expiry_and_keeps_the_data(self) -> None:
        """Redis: touch() is EXPIRE key ttl: the TTL moves, the stored JSON stays byte for byte."""
        self.store.set("sid-1", self.stored(self.clock, max_age=60000, views=1))
        before = self.client.execute("GET", "sess:sid-1")
        self.store.touch("sid-1", self.session_object(self.clock, max_age=3600000, views=555))
        self.assertEqual(self.client.execute("TTL", "sess:sid-1"), 3600)
        self.assertEqual(self.client.execute("GET", "sess:sid-1"), before)

    def test_touch_does_not_revive_an_expired_or_unknown_session(self) -> None:
        """Redis: touch() of an unknown id stores nothing; with an expired cookie it deletes the key."""
        self.store.touch("sid-2", self.session_object(self.clock))
        self.assertEqual(self.client.execute("EXISTS", "sess:sid-2"), 0)
        self.store.set("sid-1", self.stored(self.clock, max_age=1000))
        self.clock.advance(ms=1000)
        self.store.touch("sid-1", self.stored(self.clock, max_age=0))  # expires now
        self.assertIsNone(self.store.get("sid-1"))

    def test_all_and_length_count_only_live_sessions(self) -> None:
        """Redis: all() and length() see the keys Redis still holds under the prefix: no locks, no other keys."""
        self.store.set("short", self.stored(self.clock, max_age=1000, n=1))
        self.store.set("long", self.stored(self.clock, max_age=5000, n=2))
        self.store.set("forever", self.stored(self.clock, max_age=None, n=3))
        self.assertTrue(self.store.acquire("long", 0))
        self.client.execute("SET", "sessions-elsewhere", "x")
        self.client.execute("SET", "other:sess:x", "x")
        self.assertEqual(self.store.length(), 3)
        self.client.execute("PEXPIREAT", "sess:short", 1)  # Redis has expired it
        self.assertEqual({sid: data["n"] for sid, data in self.store.all().items()},
                         {"long": 2, "forever": 3})
        self.assertEqual(self.store.length(), 2)

    def test_touch_does_not_change_the_version(self) -> None:
        """Redis: touch() moves the TTL only, so the value and its version stay."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000))
        before = self.store.get_versioned("sid-1")
        self.store.touch("sid-1", self.stored(self.clock, max_age=5000))
        self.assertEqual(self.store.get_versioned("sid-1"), before)
        self.assertEqual(self.client.execute("TTL", "sess:sid-1"), 5)

    def test_an_expired_session_counts_as_missing_for_versions(self) -> None:
        """Redis: once Redis has expired the key, get_versioned() is (None, 0) and version 0 may create it again."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000, views=1))
        self.client.execute("PEXPIREAT", "sess:sid-1", 1)
        self.assertEqual(self.store.get_versioned("sid-1"), (None, 0))
        self.assertTrue(self.store.set_if_version("sid-1", self.stored(self.clock, views=2), 0))
        self.assertEqual(self.store.get("sid-1")["views"], 2)

    def test_a_version_changes_when_another_client_writes_the_value(self) -> None:
        """The version is computed from the value, so a write by a Node app (any client) is a conflict too."""
        self.store.set("sid-1", self.stored(self.clock, views=1))
        _, version = self.store.get_versioned("sid-1")
        self.redis.cli("SET", "sess:sid-1", sd.stringify(self.stored(self.clock, views=2)), "EX", "60")
        self.assertFalse(self.store.set_if_version("sid-1", self.stored(self.clock, views=9), version))
        self.assertEqual(self.store.get("sid-1")["views"], 2)


# ==== The data: connect-redis 10's keys, values and TTLs =====================


@NEEDS_REDIS
class TestRedisStoreData(_RedisHelpers, unittest.TestCase):
    """What RedisStore writes is what connect-redis writes: key, JSON, EX ttl; SCAN, never KEYS."""

    def setUp(self) -> None:
        super().setUp()
        self.store = self.redis_store()
        self.client = self.raw()

    def test_the_value_is_the_session_json_as_express_writes_it(self) -> None:
        """GET sess:<id> (with redis-cli) is the session's compact JSON, cookie first, as connect-redis stores it."""
        session = self.session_object(self.clock, max_age=60000, views=2)
        self.store.set(session.id, session)
        expires = session.cookie.to_json()["expires"]
        self.assertEqual(self.redis.cli("GET", f"sess:{session.id}"),
                         '{"cookie":{"originalMaxAge":60000,"expires":"%s","httpOnly":true,"path":"/"},'
                         '"views":2}' % expires)
        browser_session = self.session_object(self.clock, max_age=None, user="ünï")
        self.store.set(browser_session.id, browser_session)
        self.assertEqual(self.client.execute("GET", f"sess:{browser_session.id}").decode("utf-8"),
                         '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                         '"user":"ünï"}')

    def test_ttl_is_the_seconds_until_expires_rounded_up_or_the_ttl_option(self) -> None:
        """SET ... EX ttl: ceil(seconds left) for a cookie with expires, else ttl (86,400 by default)."""
        short_ttl = self.redis_store(ttl=42)
        cases = [("60 s cookie", self.store, 60000, 60), ("1.5 s cookie", self.store, 1500, 2),
                 ("1 ms cookie", self.store, 1, 1), ("browser-session cookie", self.store, None, 86400),
                 ("ttl=42, browser-session cookie", short_ttl, None, 42),
                 ("ttl=42, 60 s cookie", short_ttl, 60000, 60)]
        for label, store, max_age, ttl in cases:
            with self.subTest(label):
                store.set("sid", self.stored(self.clock, max_age=max_age))
                self.assertEqual(self.client.execute("TTL", "sess:sid"), ttl)

    def test_the_prefix_option_names_the_keys(self) -> None:
        """prefix='app1:' stores app1:<id>; each store counts and clears only its own prefix."""
        other = self.redis_store(prefix="app1:")
        other.set("x", self.stored(self.clock))
        self.store.set("y", self.stored(self.clock))
        self.assertEqual(self.client.execute("EXISTS", "app1:x"), 1)
        self.assertEqual((other.length(), self.store.length()), (1, 1))
        other.clear()
        self.assertEqual((other.length(), self.store.length()), (0, 1))

    def test_all_length_and_clear_walk_the_prefix_with_scan_never_keys(self) -> None:
        """250 sessions (more than one SCAN page): all, length and clear find each once, with SCAN, not KEYS."""
        for index in range(250):
            self.store.set(f"sid-{index}", self.stored(self.clock, n=index))
        self.assertTrue(self.store.acquire("sid-1", 0))
        self.client.execute("CONFIG", "RESETSTAT")
        self.assertEqual(self.store.length(), 250)
        self.assertEqual(sorted(data["n"] for data in self.store.all().values()), list(range(250)))
        self.store.clear()
        self.assertEqual(self.store.length(), 0)
        self.assertEqual(self.client.execute("EXISTS", "lock:sess:sid-1"), 1)  # locks are left alone
        stats = self.client.execute("INFO", "commandstats").decode()
        self.assertIn("cmdstat_scan:", stats)
        self.assertNotIn("cmdstat_keys:", stats)

    def test_the_empty_string_is_no_session(self) -> None:
        """A key holding '' reads as None, as in connect-redis (a falsy reply), and is left alone."""
        self.client.execute("SET", "sess:empty", "")
        self.assertIsNone(self.store.get("empty"))
        self.assertEqual(self.client.execute("EXISTS", "sess:empty"), 1)

    def test_a_new_store_sees_the_sessions_of_the_last_one(self) -> None:
        """The Python side restarting loses nothing: a new RedisStore reads what the old one wrote."""
        self.store.set("sid-1", self.stored(self.clock, views=7))
        self.store.close()
        self.assertEqual(self.redis_store().get("sid-1")["views"], 7)

    def test_a_closed_store_refuses_to_work(self) -> None:
        """After close(), a command raises RedisConnectionError."""
        self.store.close()
        with self.assertRaises(RedisConnectionError), self.assertLogs("session_demo", "WARNING"):
            self.store.get("sid-1")


class TestRedisStoreOptions(unittest.TestCase):
    """Bad options and URLs fail at construction with a message (no redis-server needed)."""

    def test_parse_redis_url(self) -> None:
        """redis://[[user]:password@]host[:port][/db] and rediss:// are read as node-redis reads them."""
        base = {"host": "127.0.0.1", "port": 6379, "db": 0, "username": None, "password": None, "tls": False}
        cases = [
            ("redis://127.0.0.1:6379", {}),
            ("redis://cache.example:6380/3", {"host": "cache.example", "port": 6380, "db": 3}),
            ("redis://:s%40cret@h/1", {"host": "h", "db": 1, "password": "s@cret"}),
            ("redis://ann:pw@h:1/2", {"host": "h", "port": 1, "db": 2, "username": "ann", "password": "pw"}),
            ("rediss://h", {"host": "h", "tls": True}),
            ("redis://", {}),
        ]
        for url, expected in cases:
            with self.subTest(url):
                self.assertEqual(parse_redis_url(url), {**base, **expected})

    def test_bad_urls_are_refused(self) -> None:
        """Another scheme, a query, a db that is not a number, a user without password: ValueError."""
        for url in ("http://h", "redis://h/x", "redis://h/0?timeout=1", "redis://ann@h", "redis://h:99999"):
            with self.subTest(url), self.assertRaises(ValueError):
                parse_redis_url(url)

    def test_bad_options_are_refused(self) -> None:
        """An empty prefix, a lock prefix under the session prefix, ttl 0, unbounded timeouts: ValueError."""
        cases = [{"prefix": ""}, {"lock_prefix": "sess:locks:"}, {"ttl": 0}, {"ttl": 1.5},
                 {"scan_count": 0}, {"connect_timeout": 0}, {"socket_timeout": None},
                 {"lock_lease": 0}, {"retry_interval": -1}]
        for options in cases:
            with self.subTest(**options), self.assertRaises(ValueError):
                RedisStore("redis://127.0.0.1:6379", **options)

    def test_the_password_is_not_in_the_repr(self) -> None:
        """repr() of a store (which log lines show) hides the password."""
        text = repr(RedisStore("redis://ann:hunter2@h:6379/1"))
        self.assertNotIn("hunter2", text)
        self.assertIn("redis://ann:***@h:6379/1", text)

    def test_server_py_accepts_redis_urls(self) -> None:
        """server.py --store redis://... (and rediss://) makes a RedisStore; a bad URL is a usage error."""
        args = server.parse_args(["--store", "redis://127.0.0.1:6399/2"])
        store = server.make_store(args.store)
        self.assertIsInstance(store, RedisStore)
        self.assertEqual(store.client.settings["db"], 2)
        self.assertTrue(server.parse_args(["--store", "rediss://h:6380"]).store.startswith("rediss://"))
        for value in ("redis://h/x", "redis:/h"):
            with self.subTest(value), mock_stderr(), self.assertRaises(SystemExit) as raised:
                server.parse_args(["--store", value])
            self.assertEqual(raised.exception.code, 2)


def mock_stderr() -> Any:
    """Silence argparse's usage message."""
    import contextlib
    import io
    return contextlib.redirect_stderr(io.StringIO())


# ==== A value that is not a session ============================================


@NEEDS_REDIS
class TestRedisStoreCorruptValues(_RedisHelpers, SessionAssertions):
    """A value another client wrote that is not a session is logged, deleted, and reads as no session."""

    CORRUPT = [("not JSON", "{views: 1"), ("a JSON list", "[1, 2]"), ("a JSON string", '"text"'),
               ("a number", "42"), ("no cookie", '{"views": 1}'),
               ("a cookie that is not an object", '{"cookie": 5}')]

    def setUp(self) -> None:
        super().setUp()
        self.store = self.redis_store()

    def test_a_corrupt_value_reads_as_none_is_logged_and_deleted(self) -> None:
        """get() and get_versioned() of a value written by redis-cli log a warning, delete it, return nothing."""
        for label, text in self.CORRUPT:
            for method in ("get", "get_versioned"):
                with self.subTest(label, method=method):
                    self.redis.cli("SET", "sess:bad", text)
                    with self.assertLogs("session_demo", "WARNING"):
                        result = getattr(self.store, method)("bad")
                    self.assertIn(result, (None, (None, 0)))
                    self.assertEqual(self.redis.cli("EXISTS", "sess:bad"), "0")

    def test_a_value_that_is_not_a_string_is_a_store_error(self) -> None:
        """A key of another type (a list) is Redis's WRONGTYPE error: the store raises, nothing is deleted."""
        self.redis.cli("RPUSH", "sess:list", "x")
        with self.assertRaises(RedisReplyError):
            self.store.get("list")
        self.assertTrue(self.store.ready)  # Redis answered

    def test_all_skips_and_deletes_corrupt_values(self) -> None:
        """all() returns the good sessions and deletes the corrupt ones."""
        self.store.set("good", self.stored(self.clock, views=1))
        self.redis.cli("SET", "sess:bad", "{views: 1")
        with self.assertLogs("session_demo", "WARNING"):
            self.assertEqual(set(self.store.all()), {"good"})
        self.assertEqual(self.store.length(), 1)

    def test_a_request_with_a_corrupt_session_gets_a_new_one(self) -> None:
        """A cookie whose stored value is not a session gets a fresh session and a new cookie, not a 500."""
        server = LiveServer(self, self.counter_app, store=self.store, clock=self.clock)
        cookie = self.assert_sets_cookie(server.get())
        self.redis.cli("SET", f"sess:{self.sid_of(cookie)}", "<html>not a session</html>")
        with self.assertLogs("session_demo", "WARNING"):
            response = server.get(cookie=cookie)
        self.assertEqual((response.status, response.body), (200, "views: 1"))
        self.assertNotEqual(self.assert_sets_cookie(response), cookie)


# ==== Locks and versions across machines =======================================


@NEEDS_REDIS
class TestRedisStoreLocks(_LockOwnersContract, _RedisHelpers, unittest.TestCase):
    """acquire/release: SET lock:sess:<id> token NX PX lease; one holder per id; only the holder releases."""

    def setUp(self) -> None:
        super().setUp()
        self.first = self.redis_store(lock_lease=30)
        self.second = self.redis_store(lock_lease=30)
        self.client = self.raw()

    def test_a_held_lock_cannot_be_taken_by_another_owner(self) -> None:
        """While one store object holds a lock, another's acquire(sid, 0) is False; the key has the lease."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.assertFalse(self.second.acquire("sid-1", 0))
        self.assertTrue(self.second.acquire("sid-2", 0))
        self.assertTrue(0 < self.client.execute("PTTL", "lock:sess:sid-1") <= 30000)

    def test_release_lets_another_owner_take_it(self) -> None:
        """After release(), the lock key is gone and another owner acquires it at once."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.first.release("sid-1")
        self.assertEqual(self.client.execute("EXISTS", "lock:sess:sid-1"), 0)
        self.assertTrue(self.second.acquire("sid-1", 0))

    def test_acquiring_a_lock_you_hold_renews_its_lease(self) -> None:
        """acquire() by the holder succeeds and restarts the lease."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.client.execute("PEXPIRE", "lock:sess:sid-1", 5000)
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.assertGreater(self.client.execute("PTTL", "lock:sess:sid-1"), 5000)

    def test_a_crashed_holders_lock_is_taken_over_when_its_lease_runs_out(self) -> None:
        """A lock never released (its holder died) is free once its lease ends: a waiter then gets it."""
        short = self.redis_store(lock_lease=0.05)
        self.assertTrue(short.acquire("sid-1", 0))
        self.assertTrue(self.second.acquire("sid-1", TIMEOUT))  # waits out the 50 ms lease

    def test_release_does_not_free_a_lock_taken_over_by_another(self) -> None:
        """A late release() by the old holder leaves the new holder's lock in place (the Lua check)."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.client.execute("PEXPIREAT", "lock:sess:sid-1", 1)  # the lease ran out
        self.assertTrue(self.second.acquire("sid-1", 0))
        self.first.release("sid-1")
        self.assertFalse(self.first.acquire("sid-1", 0))


@NEEDS_REDIS
class TestRedisStoreBehindAServer(_RedisHelpers, SessionAssertions):
    """RedisStore serves the view counter, shared by two servers, with the lock and the merge."""

    def setUp(self) -> None:
        super().setUp()
        self.store = self.redis_store()

    def test_two_servers_on_one_redis_count_one_visitor_together(self) -> None:
        """Two servers (each its own RedisStore) on one Redis: a visitor's views go on from one to the other."""
        first = LiveServer(self, self.counter_app, store=self.store, clock=self.clock)
        second = LiveServer(self, self.counter_app, store=self.redis_store(), clock=self.clock)
        cookie = self.assert_sets_cookie(first.get())
        self.assertEqual(second.get(cookie=cookie).body, "views: 2")
        self.assertEqual(first.get(cookie=cookie).body, "views: 3")

    def test_the_lock_keeps_8_clients_on_two_servers_exact(self) -> None:
        """LockingSessionMiddleware on two servers (their own in-process locks, one Redis): 8 x 25 views, exactly 201."""
        servers = [LiveServer(self, self.counter_app, clock=self.clock,
                              middleware=with_concurrency("lock", store=self.redis_store(), clock=self.clock))
                   for _ in range(2)]
        cookie = self.assert_sets_cookie(servers[0].get())
        statuses: list[int] = []

        def client(index: int) -> None:
            for request in range(25):
                statuses.append(servers[(index + request) % 2].get(cookie=cookie).status)

        self.run_threads(client, count=8)
        self.assertEqual(statuses, [200] * 200)
        self.assertEqual(self.store.get(self.sid_of(cookie))["views"], 201)
        self.assertEqual(self.raw().execute("EXISTS", f"lock:sess:{self.sid_of(cookie)}"), 0)

    def test_merge_keeps_concurrent_changes_to_different_keys(self) -> None:
        """With MergingSessionMiddleware on two middlewares, overlapping requests setting different keys both keep theirs."""
        one = with_concurrency("merge", store=self.store, clock=self.clock)
        other = with_concurrency("merge", store=self.redis_store(), clock=self.clock)
        header, _ = run_request(one)
        cookie = cookie_pair(header)
        first = one.begin(RequestInfo(cookie_header=cookie))
        second = other.begin(RequestInfo(cookie_header=cookie))
        first.session["a"] = 1
        second.session["b"] = 2
        for middleware, state in ((one, first), (other, second)):
            middleware.set_cookie_header(state)
            middleware.end(state)
        stored = self.store.get(first.session_id)
        self.assertEqual((stored.get("a"), stored.get("b")), (1, 2))


# ==== Redis down: fail fast, then recover ======================================


@NEEDS_REDIS
class TestRedisStoreAvailability(_RedisHelpers, SessionAssertions):
    """A Redis that is down or stuck fails requests quickly (5xx), never hangs them; service resumes when it is back."""

    def setUp(self) -> None:
        super().setUp()
        self.own = RedisServer()
        self.addCleanup(self.own.close)
        self.store = self.redis_store(self.own, connect_timeout=0.5, socket_timeout=0.5, retry_interval=0)
        self.server = LiveServer(self, self.counter_or_503, store=self.store, clock=self.clock)

    def test_a_stopped_redis_fails_requests_fast_and_a_restarted_one_serves_again(self) -> None:
        """Redis stopped: a 500 (the load fails), then 503s (not ready, no session); restarted: sessions again."""
        cookie = self.assert_sets_cookie(self.server.get())
        self.assertEqual(self.server.get(cookie=cookie).body, "views: 2")
        self.own.stop()
        with self.assertLogs("session_demo", "WARNING"):
            self.assertEqual(self.server.get(cookie=cookie).status, 500)
        self.assertFalse(self.store.ready)
        self.assertEqual(self.server.get(cookie=cookie).status, 503)
        self.assertEqual(self.server.get().status, 503)
        self.own.start()  # empty: no persistence
        with self.assertLogs("session_demo", "WARNING"):  # "answers again; ready"
            response = self.server.get(cookie=cookie)
        self.assertEqual((response.status, response.body), (200, "views: 1"))
        self.assertTrue(self.store.ready)
        new_cookie = self.assert_sets_cookie(response)
        self.assertEqual(self.server.get(cookie=new_cookie).body, "views: 2")

    def test_a_stuck_redis_fails_requests_within_the_timeout_and_they_resume(self) -> None:
        """Redis frozen (SIGSTOP): the read times out after socket_timeout, a 500; unfrozen, the count goes on."""
        cookie = self.assert_sets_cookie(self.server.get())
        self.own.pause()
        try:
            with self.assertLogs("session_demo", "WARNING"):
                self.assertEqual(self.server.get(cookie=cookie).status, 500)
            self.assertEqual(self.server.get(cookie=cookie).status, 503)  # PING times out too
        finally:
            self.own.resume()
        with self.assertLogs("session_demo", "WARNING"):
            self.assertEqual(self.server.get(cookie=cookie).body, "views: 2")

    def test_pooled_connections_survive_a_restart_of_redis(self) -> None:
        """After Redis restarts, the pool's dead connections are dropped and the command is sent again, once."""
        self.store.set("sid-1", self.stored(self.clock, views=1))
        self.own.stop()
        self.own.start()
        self.assertIsNone(self.store.get("sid-1"))  # answered (empty Redis), no error
        self.assertTrue(self.store.ready)


# ==== AUTH and SELECT ===========================================================


@NEEDS_REDIS
class TestRedisStoreAuth(_RedisHelpers, unittest.TestCase):
    """The URL's password (or ACL user and password) is sent with AUTH, its db with SELECT."""

    def setUp(self) -> None:
        super().setUp()
        self.own = RedisServer("--requirepass", "s3cret")
        self.addCleanup(self.own.close)

    def test_the_password_in_the_url_authenticates(self) -> None:
        """redis://:s3cret@host works; without the password Redis says NOAUTH, with a wrong one AUTH is refused."""
        good = RedisStore(self.own.url(auth=":s3cret@"), clock=self.clock)
        self.addCleanup(good.close)
        good.set("sid-1", self.stored(self.clock, views=1))
        self.assertEqual(good.get("sid-1")["views"], 1)
        no_password = RedisStore(self.own.url(), clock=self.clock)
        self.addCleanup(no_password.close)
        with self.assertRaisesRegex(RedisReplyError, "NOAUTH"):
            no_password.get("sid-1")
        self.assertTrue(no_password.ready)  # Redis answered: the error is the configuration's
        wrong = RedisStore(self.own.url(auth=":wrong@"), clock=self.clock)
        self.addCleanup(wrong.close)
        with self.assertRaisesRegex(RedisConnectionError, "refused AUTH"), \
                self.assertLogs("session_demo", "WARNING"):
            wrong.get("sid-1")
        self.assertFalse(wrong.ready)

    def test_an_acl_user_and_a_db_number(self) -> None:
        """redis://ann:pw@host/5 sends AUTH ann pw and SELECT 5: the session is in db 5, not db 0."""
        self.own.cli("-a", "s3cret", "--no-auth-warning", "ACL", "SETUSER", "ann", "on", ">pw", "~*", "+@all")
        store = RedisStore(self.own.url(db=5, auth="ann:pw@"), clock=self.clock)
        self.addCleanup(store.close)
        store.set("sid-1", self.stored(self.clock, views=5))
        self.assertEqual(self.own.cli("-a", "s3cret", "--no-auth-warning", "EXISTS", "sess:sid-1", db=5), "1")
        self.assertEqual(self.own.cli("-a", "s3cret", "--no-auth-warning", "EXISTS", "sess:sid-1", db=0), "0")


# ==== Two server.py processes, one Redis =========================================


@NEEDS_REDIS
class TestRedisStoreTwoProcesses(_RedisHelpers, SessionAssertions):
    """Two ``python3 server.py --store redis://...`` processes on different ports share one visitor."""

    def start_server_py(self, *flags: str) -> int:
        """Start server.py with these flags on a free port; return the port it serves on."""
        process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "server.py"), "--port", "0", "--secret", SECRET,
             "--store", self.redis.url(), *flags],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(self.stop_process, process)
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(TIMEOUT):
                self.fail("server.py did not start")
        line = process.stdout.readline()  # "Serving the view counter on http://127.0.0.1:PORT/ ..."
        self.assertIn("http://127.0.0.1:", line)
        return int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])

    @staticmethod
    def stop_process(process: subprocess.Popen) -> None:
        process.terminate()
        process.wait(TIMEOUT)
        process.stdout.close()

    def test_two_processes_count_one_visitor_and_survive_a_restart(self) -> None:
        """Views go on from one process to the other, and on after one of them is restarted."""
        first, second = self.start_server_py(), self.start_server_py()
        response = http_get(first)
        cookie = self.assert_sets_cookie(response)
        self.assertEqual(response.body, "Welcome! This is your first visit.")
        self.assertEqual(http_get(second, cookie=cookie).body, "Number of views: 2")
        self.assertEqual(http_get(first, cookie=cookie).body, "Number of views: 3")
        restarted = self.start_server_py()  # a new process stands in for the first
        self.assertEqual(http_get(restarted, cookie=cookie).body, "Number of views: 4")
        login = http_get(second, "/login?user=ann", cookie=cookie)
        self.assertEqual(http_get(restarted, "/whoami", cookie=self.assert_sets_cookie(login)).body, "user: ann")

    def test_the_lock_keeps_8_clients_on_two_processes_exact(self) -> None:
        """--concurrency lock in both: 8 clients x 25 views spread over the two processes leave exactly 201."""
        ports = [self.start_server_py("--concurrency", "lock"), self.start_server_py("--concurrency", "lock")]
        cookie = self.assert_sets_cookie(http_get(ports[0]))
        statuses: list[int] = []

        def client(index: int) -> None:
            for request in range(25):
                statuses.append(http_get(ports[(index + request) % 2], cookie=cookie).status)

        self.run_threads(client, count=8)
        self.assertEqual(statuses, [200] * 200)
        self.assertEqual(http_get(ports[1], "/peek", cookie=cookie).body, "views: 201")


if __name__ == "__main__":
    unittest.main()
