"""Tests for session_demo_extras.concurrency: the lock and merge middlewares, against the default last write wins."""

from __future__ import annotations

import http.client
import http.cookies
import json
import os
import sqlite3
import tempfile
import threading
from datetime import datetime, timezone
import unittest
from typing import Any
from unittest import mock

from session_demo_extras.bounded_store import BoundedMemoryStore
from session_demo_extras.concurrency import (
    LockingSessionMiddleware, MergingSessionMiddleware, SessionConflictError, TombstoneStore,
)
from session_demo_extras.sqlite_store import SQLiteStore
from session_demo import MemoryStore, RequestInfo, SessionMiddleware
from test_session import (
    AppHandler, CountingStore, FrozenClock, SessionAssertions, HostileHelpers, LiveServer,
    cookie_pair, hello, make_options, run_request,
)

# ==== Concurrency beyond express: lock and merge ============================


def with_concurrency(concurrency: str, *, lock_timeout: float = 10.0, merge_attempts: int | None = None,
                     **overrides: Any) -> SessionMiddleware:
    """session_demo_extras.concurrency's middleware ('lock' or 'merge') on make_options(**overrides)."""
    options = make_options(**overrides)
    if concurrency == "lock":
        return LockingSessionMiddleware(options, lock_timeout=lock_timeout)
    if merge_attempts is None:
        return MergingSessionMiddleware(options)
    return MergingSessionMiddleware(options, attempts=merge_attempts)


def _counter(handler: AppHandler) -> None:
    """The view counter: a read-modify-write of one key."""
    session = handler.session
    session["views"] = session.get("views", 0) + 1
    handler.reply(200, str(session["views"]))


def _hammer(server: LiveServer, cookie: str, threads: int, requests: int) -> list[int]:
    """``threads`` keep-alive clients send ``requests`` GETs each with one cookie; returns the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for _ in range(requests):
                connection.request("GET", "/", headers={"Cookie": cookie})
                answer = connection.getresponse()
                answer.read()
                with lock:
                    statuses.append(answer.status)
        finally:
            connection.close()

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return statuses


def _own_key(handler: AppHandler) -> None:
    """``/kN`` adds one to the session's key kN; ``/dump`` answers the session's data as JSON."""
    session = handler.session
    key = handler.path.strip("/")
    if key == "dump":
        handler.reply(200, json.dumps(dict(session)))
        return
    session[key] = session.get(key, 0) + 1
    handler.reply(200, str(session[key]))


def _hammer_own_keys(servers: list[LiveServer], cookie: str, threads: int, requests: int) -> list[int]:
    """Client N sends ``requests`` GETs of /kN with one cookie, turn by turn to each server; returns the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for server in servers]
        try:
            for request in range(requests):
                connection = connections[(number + request) % len(connections)]
                connection.request("GET", f"/k{number}", headers={"Cookie": cookie})
                answer = connection.getresponse()
                answer.read()
                with lock:
                    statuses.append(answer.status)
        finally:
            for connection in connections:
                connection.close()

    workers = [threading.Thread(target=client, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return statuses


class TwoAtOnce:
    """An app where two requests load the same session, then both change it before either saves.

    ``/a`` sets key a, ``/b`` sets key b; both wait at a barrier after loading.
    """

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=10)

    def __call__(self, handler: AppHandler) -> None:
        if handler.path == "/start":
            handler.session["start"] = True
            handler.reply(200, "started")
            return
        key = handler.path.strip("/")
        self.barrier.wait()  # both requests have loaded the same copy by now
        handler.session[key] = 1
        handler.reply(200, key)

    def run(self, server: LiveServer, cookie: str) -> None:
        """Fire /a and /b at the same time and wait for both."""
        workers = [threading.Thread(target=server.get, args=(path, cookie)) for path in ("/a", "/b")]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)


class TestConcurrencyLastWriteWins(SessionAssertions):
    """express-session's own behaviour (SessionMiddleware): the last save wins."""

    def test_two_requests_changing_different_keys_lose_one_change(self):
        """Two concurrent requests each save their own copy: one key is lost (expressjs/session #361)."""
        app = TwoAtOnce()
        server = LiveServer(self, app, store=CountingStore())
        cookie = self.assert_sets_cookie(server.get("/start"))
        app.run(server, cookie)
        stored = list(server.store.all().values())[0]
        self.assertTrue(stored["start"])
        self.assertEqual(len({"a", "b"} & stored.keys()), 1, stored)


class TestConcurrencyLock(SessionAssertions):
    """LockingSessionMiddleware: requests with one session id are served one at a time, load to save."""

    def test_eight_clients_incrementing_one_counter_lose_nothing(self):
        """8 threads x 100 increments on one session leave the counter at exactly 800."""
        server = LiveServer(self, _counter, middleware=with_concurrency("lock", resave=False))
        cookie = self.assert_sets_cookie(server.get("/"))
        statuses = _hammer(server, cookie, threads=8, requests=100)
        self.assertEqual(statuses, [200] * 800)
        self.assertEqual(server.get("/", cookie).body, "802")

    def test_a_request_waiting_too_long_gets_503(self):
        """A request that cannot get the session's lock within lock_timeout is answered 503."""
        inside, release = threading.Event(), threading.Event()

        def app(handler: AppHandler) -> None:
            if handler.path == "/slow":
                inside.set()
                release.wait(10)
            handler.reply(200, "ok")

        server = LiveServer(self, app, middleware=with_concurrency("lock", lock_timeout=0.05))
        cookie = self.assert_sets_cookie(server.get("/"))
        slow = threading.Thread(target=server.get, args=("/slow", cookie))
        slow.start()
        self.addCleanup(slow.join, 10)
        self.addCleanup(release.set)
        self.assertTrue(inside.wait(10))
        with self.assertLogs("session_demo", "ERROR"):
            busy = server.get("/", cookie)
        self.assertEqual(busy.status, 503)
        self.assert_no_set_cookie(busy)
        release.set()
        slow.join(10)
        self.assertEqual(server.get("/", cookie).status, 200)

    def test_requests_without_a_session_id_take_no_lock(self):
        """A cookieless request makes a new session and locks nothing."""
        seen: list[int] = []

        def app(handler: AppHandler) -> None:
            seen.append(len(handler.server.session_middleware._locks))
            handler.reply(200, "ok")

        server = LiveServer(self, app, middleware=with_concurrency("lock"))
        server.get("/")
        cookie = self.assert_sets_cookie(server.get("/"))
        server.get("/", cookie)
        self.assertEqual(seen, [0, 0, 1])
        self.assertEqual(server.middleware._locks, {})

    def test_regenerate_and_destroy_release_the_lock(self):
        """After regenerate() or destroy(), the next request with the old or new cookie is not blocked."""
        def app(handler: AppHandler) -> None:
            if handler.path == "/login":
                handler.session.regenerate()["user"] = "ann"
            elif handler.path == "/logout":
                handler.session.destroy()
            handler.reply(200, "ok")

        server = LiveServer(self, app, middleware=with_concurrency("lock", lock_timeout=0.5))
        old = self.assert_sets_cookie(server.get("/"))
        new = self.assert_sets_cookie(server.get("/login", old))
        self.assertNotEqual(old, new)
        self.assertEqual(server.get("/", old).status, 200)
        self.assertEqual(server.get("/logout", new).status, 200)
        self.assertEqual(server.get("/", new).status, 200)
        self.assertEqual(server.middleware._locks, {})

    def test_a_store_failure_while_loading_releases_the_lock(self):
        """A 500 from a failing store.get does not leave the session locked."""
        class FailingOnce(MemoryStore):
            fail = False

            def get(self, sid):
                if self.fail:
                    self.fail = False
                    raise RuntimeError("store down")
                return super().get(sid)

        store = FailingOnce()
        server = LiveServer(self, hello, middleware=with_concurrency("lock", lock_timeout=0.5, store=store))
        cookie = self.assert_sets_cookie(server.get("/"))
        store.fail = True
        with self.assertLogs("session_demo", "ERROR"):
            self.assertEqual(server.get("/", cookie).status, 500)
        self.assertEqual(server.get("/", cookie).status, 200)
        self.assertEqual(server.middleware._locks, {})


class TestConcurrencyMerge(SessionAssertions):
    """MergingSessionMiddleware: compare-and-set, and on a conflict this request's keys are re-applied."""

    def test_two_requests_changing_different_keys_both_survive(self):
        """The request that saves second merges its key into the first one's save: both keys stay."""
        app = TwoAtOnce()
        store = BoundedMemoryStore()
        server = LiveServer(self, app, middleware=with_concurrency("merge", store=store))
        cookie = self.assert_sets_cookie(server.get("/start"))
        app.run(server, cookie)
        stored = list(store.all().values())[0]
        self.assertEqual((stored["start"], stored["a"], stored["b"]), (True, 1, 1))

    def test_a_key_deleted_by_one_request_stays_deleted(self):
        """A delete is a change too: it is re-applied to the fresh copy."""
        store = BoundedMemoryStore()
        middleware = with_concurrency("merge", store=store)
        first, state = run_request(middleware, app=lambda s: s.session.update(a=1, b=1))
        cookie = cookie_pair(first)
        deleter = middleware.begin(RequestInfo(cookie_header=cookie))
        writer = middleware.begin(RequestInfo(cookie_header=cookie))
        del deleter.session["a"]
        writer.session["c"] = 1
        middleware.end(writer)
        middleware.end(deleter)
        stored = store.get(state.session_id)
        self.assertEqual({key: stored.get(key) for key in "abc"}, {"a": None, "b": 1, "c": 1})

    def test_a_session_destroyed_meanwhile_is_not_brought_back(self):
        """If another request destroyed the session (a logout), the merge does not recreate it."""
        store = BoundedMemoryStore()
        middleware = with_concurrency("merge", store=store)
        first, state = run_request(middleware, app=lambda s: s.session.update(a=1))
        late = middleware.begin(RequestInfo(cookie_header=cookie_pair(first)))
        late.session["b"] = 2
        store.destroy(state.session_id)
        with self.assertLogs("session_demo", "WARNING"):
            middleware.end(late)
        self.assertIsNone(store.get(state.session_id))

    def test_gives_up_after_merge_attempts_logs_it_and_raises(self):
        """A store that always reports a conflict: after merge_attempts tries, SessionConflictError (no silent loss)."""
        class AlwaysConflicting(BoundedMemoryStore):
            def set_if_version(self, sid, session, version):
                super().set(sid, session)  # someone else always wrote first
                return False

        store = AlwaysConflicting()
        middleware = with_concurrency("merge", store=store, merge_attempts=2)
        state = middleware.begin(RequestInfo())
        state.session["a"] = 1
        with self.assertLogs("session_demo", "ERROR") as logs:
            with self.assertRaisesRegex(SessionConflictError, "2 save attempts"):
                middleware.save(state)
        self.assertIn("after 2 attempts", "\n".join(logs.output))

    def test_two_increments_of_one_key_keep_one(self):
        """What merge does not make exact: two requests computing views + 1 from the same views keep one increment."""
        store = BoundedMemoryStore()
        middleware = with_concurrency("merge", store=store, resave=False)
        first, state = run_request(middleware, app=lambda s: s.session.update(views=1))
        tabs = [middleware.begin(RequestInfo(cookie_header=cookie_pair(first))) for _ in range(2)]
        for tab in tabs:
            tab.session["views"] += 1
        for tab in tabs:
            middleware.end(tab)
        self.assertEqual(store.get(state.session_id)["views"], 2)  # not 3: use 'lock' for counters

    def test_one_key_changed_by_two_requests_keeps_the_value_saved_first(self):
        """Same key, two values: the first save stays, the later request's value is dropped (and logged at debug)."""
        store = BoundedMemoryStore()
        middleware = with_concurrency("merge", store=store, resave=False)
        first, state = run_request(middleware, app=lambda s: s.session.update(theme="plain"))
        dark, light = (middleware.begin(RequestInfo(cookie_header=cookie_pair(first))) for _ in range(2))
        dark.session["theme"] = "dark"
        light.session.update(theme="light", cart=["book"])
        middleware.end(dark)
        middleware.end(light)
        self.assertEqual(store.get(state.session_id)["theme"], "dark")
        self.assertEqual(store.get(state.session_id)["cart"], ["book"])

    def test_a_stale_counter_never_overwrites_a_newer_one(self):
        """A loads views=1; B and C each add one in turn (3); A saves last: views stays 3 (the default writes 2)."""
        results = {}
        for mode in (None, "merge"):
            store = BoundedMemoryStore()
            middleware = (with_concurrency(mode, store=store, resave=False) if mode
                          else SessionMiddleware(make_options(store=store, resave=False)))
            first, state = run_request(middleware, app=lambda s: s.session.update(views=1))
            cookie = cookie_pair(first)
            slow = middleware.begin(RequestInfo(cookie_header=cookie))
            slow.session["views"] += 1
            for _ in range(2):
                run_request(middleware, cookie, lambda s: s.session.update(views=s.session["views"] + 1))
            middleware.end(slow)
            results[mode] = store.get(state.session_id)["views"]
        self.assertEqual(results, {None: 2, "merge": 3})

    def test_every_interleaving_of_three_counters_keeps_at_least_what_the_default_keeps(self):
        """All 90 orders of three requests' loads and saves: merge's counter is never below the default's."""
        def orders(pending: dict[int, int]) -> Any:
            """Every sequence of request numbers: each appears twice, first its load, then its save."""
            if not any(pending.values()):
                yield []
                return
            for request, left in pending.items():
                if left:
                    for rest in orders({**pending, request: left - 1}):
                        yield [request, *rest]

        def counter_after(mode: str | None, order: list[int]) -> int:
            store = BoundedMemoryStore()
            middleware = (with_concurrency(mode, store=store, resave=False) if mode
                          else SessionMiddleware(make_options(store=store, resave=False)))
            first, state = run_request(middleware, app=lambda s: s.session.update(views=0))
            requests: dict[int, Any] = {}
            for request in order:
                if request not in requests:  # its load, and the handler's views + 1
                    requests[request] = middleware.begin(RequestInfo(cookie_header=cookie_pair(first)))
                    requests[request].session["views"] += 1
                else:
                    middleware.end(requests[request])
            return store.get(state.session_id)["views"]

        schedules = list(orders({0: 2, 1: 2, 2: 2}))
        self.assertEqual(len(schedules), 90)
        better = 0
        for order in schedules:
            merged, default = counter_after("merge", order), counter_after(None, order)
            with self.subTest(order=order):
                self.assertGreaterEqual(merged, default)
            better += merged > default
        self.assertGreater(better, 0)  # some orders the default loses more in (a stale save last)

    def test_a_conflict_is_retried_until_it_succeeds_not_answered_500(self):
        """Another process saves between each read and write, four times: the fifth attempt stores both changes."""
        class Contended(BoundedMemoryStore):
            conflicts = 0

            def set_if_version(self, sid, session, version):
                if self.conflicts:
                    self.conflicts -= 1
                    other = self.get(sid)
                    other["other"] = other.get("other", 0) + 1
                    super().set(sid, other)  # another process got there first
                return super().set_if_version(sid, session, version)

        store = Contended()
        middleware = with_concurrency("merge", store=store)
        middleware.backoff = 0.0  # no pause between attempts in a test
        server = LiveServer(self, _counter, middleware=middleware)
        cookie = self.assert_sets_cookie(server.get("/"))
        store.conflicts = 4
        answer = server.get("/", cookie)
        self.assertEqual((answer.status, answer.body), (200, "2"))
        stored = list(store.all().values())[0]
        self.assertEqual((stored["views"], stored["other"]), (2, 4))

    def test_session_save_in_the_handler_then_a_change_keeps_the_change(self):
        """session.save() merges too, and its own write does not count as another request's change."""
        store = BoundedMemoryStore()
        middleware = with_concurrency("merge", store=store, resave=False)
        first, state = run_request(middleware, app=lambda s: s.session.update(step=1))

        def app(state: Any) -> None:
            state.session["step"] = 2
            state.session.save()
            state.session["step"] = 3

        run_request(middleware, cookie_pair(first), app)
        self.assertEqual(store.get(state.session_id)["step"], 3)
        _, new = run_request(middleware, None, app)  # a new session: saved by the handler, then changed
        self.assertEqual(store.get(new.session_id)["step"], 3)

    def test_many_clients_changing_their_own_keys_lose_nothing(self):
        """8 clients x 20 requests on one cookie, each adding to its own key: every change is kept, every answer 200.

        One server with a BoundedMemoryStore, one with a SQLiteStore, and two
        servers (two middlewares, as two processes) sharing one SQLite file."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)

        def sqlite() -> SQLiteStore:
            store = SQLiteStore(os.path.join(directory.name, "sessions.db"))
            self.addCleanup(store.close)
            return store

        for setup in ("bounded", "sqlite", "two servers, one sqlite file"):
            with self.subTest(setup=setup):
                if setup == "bounded":
                    servers = [LiveServer(self, _own_key, middleware=with_concurrency("merge", store=BoundedMemoryStore()))]
                else:
                    servers = [LiveServer(self, _own_key, middleware=with_concurrency("merge", store=sqlite()))
                               for _ in range(1 if setup == "sqlite" else 2)]
                cookie = self.assert_sets_cookie(servers[0].get("/start"))
                statuses = _hammer_own_keys(servers, cookie, threads=8, requests=20)
                self.assertEqual(statuses, [200] * 160)
                counts = json.loads(servers[0].get("/dump", cookie).body)
                self.assertEqual(counts, {**{f"k{i}": 20 for i in range(8)}, "start": 1})


class Abort(BaseException):
    """A BaseException that is not an Exception, as KeyboardInterrupt is."""


class TestConcurrencyLockBaseException(SessionAssertions):
    """LockingSessionMiddleware: a handler raising SystemExit or another BaseException leaves no lock behind."""

    def raising(self, exception: type[BaseException]) -> Any:
        def app(handler: AppHandler) -> None:
            if handler.path == "/raise":
                handler.session["views"] = 1
                raise exception()
            handler.reply(200, "ok")
        return app

    def sqlite(self) -> SQLiteStore:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        store = SQLiteStore(os.path.join(directory.name, "sessions.db"))
        self.addCleanup(store.close)
        return store

    def test_the_next_request_is_served_after_a_handler_raised_a_base_exception(self):
        """SystemExit and Abort(BaseException) from a handler: that request gets a 500 (or a dropped connection), the next a 200."""
        for exception in (SystemExit, Abort):
            for store_name in ("memory", "sqlite"):
                with self.subTest(exception=exception.__name__, store=store_name), \
                        mock.patch("threading.excepthook"):  # the thread's death is expected
                    store = MemoryStore() if store_name == "memory" else self.sqlite()
                    middleware = with_concurrency("lock", lock_timeout=0.2, store=store)
                    server = LiveServer(self, self.raising(exception), middleware=middleware)
                    cookie = self.assert_sets_cookie(server.get("/"))
                    try:
                        self.assertEqual(server.get("/raise", cookie).status, 500)
                    except (http.client.HTTPException, ConnectionError):
                        pass  # the thread died before the 500 went out: a dropped connection
                    self.assertEqual(server.get("/", cookie).status, 200)
                    self.assertEqual(middleware._locks, {})
                    if store_name == "sqlite":
                        rows = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM locks").fetchone()
                        self.assertEqual(rows[0], 0)


class TestTombstoneStore(SessionAssertions):
    """TombstoneStore: a session destroyed by a logout is not written back by a request that loaded it before."""

    def replay_during_logout(self, middleware: SessionMiddleware) -> tuple[str, Any]:
        """The stolen-cookie race: A loads, B logs out (destroy), A changes the session and ends."""
        login, _ = run_request(middleware, app=lambda s: s.session.update(user="ann"))
        cookie = cookie_pair(login)
        attacker = middleware.begin(RequestInfo(cookie_header=cookie))
        run_request(middleware, cookie, lambda s: s.session.destroy())  # the victim logs out
        attacker.session["views"] = 1
        middleware.set_cookie_header(attacker)
        middleware.end(attacker)
        return cookie, attacker.session_id

    def test_without_it_the_replayed_cookie_survives_the_logout(self):
        """The default (express's behaviour): the late save re-creates the destroyed session."""
        middleware = SessionMiddleware(make_options(resave=False))
        cookie, sid = self.replay_during_logout(middleware)
        self.assertEqual(middleware.options.store.get(sid)["user"], "ann")

    def test_a_late_save_does_not_recreate_a_destroyed_session(self):
        """With TombstoneStore: the late save writes nothing and is logged; the cookie no longer logs in."""
        for mode in (None, "merge"):
            with self.subTest(mode=mode):
                clock = FrozenClock()
                store = TombstoneStore(BoundedMemoryStore(clock=clock), clock=clock)
                options = dict(store=store, clock=clock, resave=False)
                middleware = (with_concurrency(mode, **options) if mode
                              else SessionMiddleware(make_options(**options)))
                with self.assertLogs("session_demo", "WARNING") as logs:
                    cookie, sid = self.replay_during_logout(middleware)
                self.assertIn("destroyed", "\n".join(logs.output))
                self.assertIsNone(store.get(sid))
                _, later = run_request(middleware, cookie, lambda s: None)
                self.assertNotEqual(later.session_id, sid)
                self.assertNotIn("user", later.session)

    def test_login_logout_and_touch_work_as_before(self):
        """Regenerate (which destroys the old id) and later requests with the new cookie are unaffected."""
        clock = FrozenClock()
        store = TombstoneStore(MemoryStore(clock=clock), clock=clock)
        middleware = SessionMiddleware(make_options(store=store, clock=clock, resave=False))
        first, _ = run_request(middleware, app=lambda s: s.session.update(views=1))
        login, state = run_request(middleware, cookie_pair(first),
                                   lambda s: s.session.regenerate().update(user="ann"))
        _, again = run_request(middleware, cookie_pair(login), lambda s: None)  # a touch
        self.assertEqual(again.session["user"], "ann")
        self.assertTrue(middleware.options.store_implements_touch)

    def test_tombstones_expire_after_ttl_and_are_bounded(self):
        """After ttl seconds an id can be written again; at most max_tombstones are kept, oldest dropped."""
        clock = FrozenClock()
        store = TombstoneStore(MemoryStore(clock=clock), ttl=60, max_tombstones=2, clock=clock)
        session = {"cookie": {"expires": None}}
        store.destroy("a")
        with self.assertLogs("session_demo", "WARNING"):
            store.set("a", session)
        self.assertIsNone(store.get("a"))
        clock.advance(seconds=60)
        store.set("a", session)
        self.assertIsNotNone(store.get("a"))
        for sid in ("b", "c", "d"):
            store.destroy(sid)
        store.set("b", session)  # the oldest tombstone went
        self.assertIsNotNone(store.get("b"))

    def test_optional_methods_are_there_only_if_the_wrapped_store_has_them(self):
        """A store without touch or versions stays one: the middleware sees the same capabilities."""
        class Minimal:
            def get(self, sid): return None
            def set(self, sid, session): pass
            def destroy(self, sid): pass

        self.assertFalse(hasattr(TombstoneStore(Minimal()), "touch"))
        self.assertFalse(hasattr(TombstoneStore(Minimal()), "set_if_version"))
        with self.assertRaisesRegex(TypeError, "versions"):
            MergingSessionMiddleware(make_options(store=TombstoneStore(MemoryStore())))


class TestConcurrencyOptions(unittest.TestCase):
    """The middlewares' own options are checked when they are built."""

    def test_merge_needs_a_store_with_versions(self):
        """Merging with express's MemoryStore (no versions) is refused."""
        with self.assertRaisesRegex(TypeError, "versions"):
            MergingSessionMiddleware(make_options())

    def test_rejects_bad_limits(self):
        """lock_timeout must be >= 0 seconds and attempts >= 2 (a conflict needs a second try)."""
        for build in (lambda: LockingSessionMiddleware(make_options(), lock_timeout=-1),
                      lambda: MergingSessionMiddleware(make_options(store=BoundedMemoryStore()), attempts=1)):
            with self.subTest(build=build), self.assertRaises(ValueError):
                build()


class TestLockUnderFlood(unittest.TestCase):
    """A flood of unknown signed ids through the locking middleware leaves no lock behind."""

    def test_a_flood_of_signed_ids_leaves_no_lock_behind(self):
        """Lock-table exhaustion: 2,000 unknown signed ids, each lock is released and forgotten."""
        clock = FrozenClock()
        store = CountingStore(clock=clock)
        middleware = LockingSessionMiddleware(make_options(store=store, clock=clock, resave=False,
                                                           save_uninitialized=False))
        for index in range(2000):
            run_request(middleware, "connect.sid=" + HostileHelpers.value(f"flood-{index}"),
                        lambda state: state.session.get("views"))
        self.assertEqual(middleware._locks, {})
        self.assertEqual(store.sessions, {})



class TestLockBelongsToTheRequest(unittest.TestCase):
    """A session loaded in one thread and saved in another (the ASGI adapter does that) leaves no lock held."""

    def stores(self) -> dict[str, Any]:
        """Each kind of store the lock works with: in this process only, SQLite, and Redis if installed."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        sqlite = SQLiteStore(os.path.join(directory.name, "sessions.db"))
        self.addCleanup(sqlite.close)
        stores: dict[str, Any] = {"memory": MemoryStore(), "sqlite": sqlite}
        from session_demo_extras.test_redis_store import REDIS_CLI, REDIS_SERVER, shared_redis
        if REDIS_SERVER and REDIS_CLI:
            from session_demo_extras.redis_store import RedisStore
            redis = shared_redis()
            redis.cli("FLUSHALL")
            stores["redis"] = RedisStore(redis.url())
            self.addCleanup(stores["redis"].close)
        return stores

    @staticmethod
    def in_thread(call: Any, *args: Any) -> Any:
        """``call(*args)`` in a new thread; its result (or its exception, raised here)."""
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, call(*args)))
            except BaseException as exc:
                outcome.append((False, exc))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def test_a_session_loaded_in_one_thread_and_saved_in_another_is_unlocked(self):
        """begin() in one thread, end() in another: the count is stored and the next request gets the lock at once."""
        for name, store in self.stores().items():
            with self.subTest(store=name):
                middleware = with_concurrency("lock", lock_timeout=0, store=store)
                header, _ = run_request(middleware)
                cookie = cookie_pair(header)
                for expected in (1, 2, 3):
                    state = self.in_thread(middleware.begin, RequestInfo(url="/", cookie_header=cookie))
                    state.session["views"] = state.session.get("views", 0) + 1
                    self.in_thread(middleware.end, state)
                    self.assertEqual(store.get(state.session_id)["views"], expected)
                self.assertEqual(middleware._locks, {})

    def test_a_lock_released_from_another_thread_is_free(self):
        """begin() in one thread, release() (the client went away) in another: the next begin() is not refused."""
        for name, store in self.stores().items():
            with self.subTest(store=name):
                middleware = with_concurrency("lock", lock_timeout=0, store=store)
                cookie = cookie_pair(run_request(middleware)[0])
                state = self.in_thread(middleware.begin, RequestInfo(url="/", cookie_header=cookie))
                self.in_thread(middleware.release, state)
                again = self.in_thread(middleware.begin, RequestInfo(url="/", cookie_header=cookie))
                self.in_thread(middleware.end, again)
                self.assertEqual(middleware._locks, {})

    def test_a_load_failing_in_another_thread_releases_its_lock(self):
        """A store failure while loading releases the lock taken for that request, not another request's."""
        for name, store in self.stores().items():
            with self.subTest(store=name):
                middleware = with_concurrency("lock", lock_timeout=0, store=store)
                cookie = cookie_pair(run_request(middleware)[0])
                with mock.patch.object(store, "get", side_effect=RuntimeError("down")):
                    with self.assertRaises(Exception):
                        self.in_thread(middleware.begin, RequestInfo(url="/", cookie_header=cookie))
                state = self.in_thread(middleware.begin, RequestInfo(url="/", cookie_header=cookie))
                self.in_thread(middleware.end, state)
                self.assertEqual((middleware._locks, middleware._loading), ({}, {}))


class TestMergeKeepsWhatTheStoreKeeps(unittest.TestCase):
    """Merging compares values as the store writes them: a datetime (stored as its ISO string) merges too."""

    def test_a_session_holding_a_datetime_is_saved(self):
        """A datetime value: the merging middleware saves it as the plain one does, instead of failing."""
        store = BoundedMemoryStore()
        middleware = with_concurrency("merge", store=store)
        when = datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
        header, state = run_request(middleware, app=lambda s: s.session.update(at=when))
        self.assertEqual(store.get(state.session_id)["at"], "2027-01-15T08:00:00.000Z")


if __name__ == "__main__":
    unittest.main()
