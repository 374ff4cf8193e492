"""Tests for the extra stores: BoundedMemoryStore and SQLiteStore, and the store contract they share with MemoryStore."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from collections.abc import Callable
from typing import Any

import session_demo as sd
from session_demo_extras.bounded_store import BoundedMemoryStore, SessionTooLargeError
from session_demo_extras.sqlite_store import SQLiteStore, _HOST as SQLITE_HOST
from session_demo import Cookie, MemoryStore, RequestInfo, SessionMiddleware
from session_demo_extras.test_concurrency import with_concurrency
import test_session
from test_session import (
    AppHandler, FrozenClock, SECRET, SessionAssertions, LiveServer, cookie_pair, make_options,
    run_request,
)

# ==== Stores beyond express: BoundedMemoryStore, SQLiteStore ================


SUBPROCESS_TIMEOUT = 60  # seconds: a child process that takes longer fails the test


# ==== Tests: stores beyond express-session ==================================


class _StoreHelpers:
    """Helpers for the store tests (a mixin for TestCases): stored sessions, temporary SQLite files."""

    @staticmethod
    def counter_app(handler: AppHandler) -> None:
        """The view counter: add one to views and say how many."""
        session = handler.session
        session["views"] = session.get("views", 0) + 1
        handler.reply(200, f"views: {session['views']}")

    def stored(self, clock: FrozenClock, max_age: int | None = 60000, **data: Any) -> dict[str, Any]:
        """A stored session, as the middleware writes it: a cookie of ``max_age`` ms from now, plus data."""
        return {"cookie": Cookie({"max_age": max_age}, clock=clock).to_json(), **data}

    def session_object(self, clock: FrozenClock, max_age: int | None = 60000, **data: Any) -> sd.Session:
        """A real Session, as the middleware hands it to the store: a new one with ``data``."""
        options = make_options(store=MemoryStore(clock=clock), clock=clock, cookie={"max_age": max_age})
        state = SessionMiddleware(options).begin(RequestInfo())
        state.session.update(data)
        return state.session

    def sqlite_path(self) -> str:
        """A fresh database file in a temporary directory removed after the test."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        return os.path.join(directory.name, "sessions.db")

    def sqlite_store(self, clock: FrozenClock, path: str | None = None, **options: Any) -> SQLiteStore:
        """An SQLiteStore on ``path`` (a fresh file by default), closed after the test."""
        store = SQLiteStore(path or self.sqlite_path(), clock=clock, **options)
        self.addCleanup(store.close)
        return store

    def raw(self, path: str) -> sqlite3.Connection:
        """A plain sqlite3 connection to the store's file, to look behind the store's back."""
        connection = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(connection.close)
        return connection

    def increment(self, store: Any, sid: str, clock: FrozenClock, times: int) -> None:
        """Add one to ``n`` ``times`` times with get_versioned/set_if_version, retrying on conflicts."""
        for _ in range(times):
            while True:
                data, version = store.get_versioned(sid)
                data = data or self.stored(clock, None, n=0)
                data["n"] += 1
                if store.set_if_version(sid, data, version):
                    break

    def run_threads(self, target: Callable[[int], None], count: int = 8) -> None:
        """Run ``target(i)`` in ``count`` threads; fail if one raises or they take more than 60 s."""
        errors: list[BaseException] = []

        def guarded(index: int) -> None:
            try:
                target(index)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SUBPROCESS_TIMEOUT)
        self.assertFalse(any(thread.is_alive() for thread in threads), "threads did not finish")
        self.assertEqual(errors, [])


class _StoreContract(_StoreHelpers):
    """The Store interface as MemoryStore defines it; each store's TestCase runs these."""

    def make_store(self, clock: FrozenClock) -> Any:
        raise NotImplementedError

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.store = self.make_store(self.clock)

    def test_get_returns_none_for_an_unknown_id(self) -> None:
        """get() of an id that was never stored is None."""
        self.assertIsNone(self.store.get("nope"))

    def test_set_then_get_returns_the_stored_json(self) -> None:
        """get() returns what set() stored, as a fresh copy each time."""
        session = self.stored(self.clock, views=3, user={"name": "ünï"})
        self.store.set("sid-1", session)
        first = self.store.get("sid-1")
        self.assertEqual(first, session)
        first["views"] = 99
        self.assertEqual(self.store.get("sid-1")["views"], 3)

    def test_set_accepts_a_session_object(self) -> None:
        """set() serializes a Session with to_json(), as the middleware calls it."""
        state = SessionMiddleware(make_options(store=self.store, clock=self.clock)).begin(RequestInfo())
        state.session["views"] = 2
        self.store.set(state.session_id, state.session)
        self.assertEqual(self.store.get(state.session_id), state.session.to_json())

    def test_set_replaces_the_stored_session(self) -> None:
        """A second set() of the same id replaces the first."""
        self.store.set("sid-1", self.stored(self.clock, views=1))
        self.store.set("sid-1", self.stored(self.clock, views=2))
        self.assertEqual(self.store.get("sid-1")["views"], 2)
        self.assertEqual(self.store.length(), 1)

    def test_destroy_forgets_the_session_and_ignores_unknown_ids(self) -> None:
        """destroy() removes the session; destroying an unknown id is not an error."""
        self.store.set("sid-1", self.stored(self.clock))
        self.store.destroy("sid-1")
        self.store.destroy("never-there")
        self.assertIsNone(self.store.get("sid-1"))

    def test_a_session_expires_when_its_cookie_does(self) -> None:
        """A session reads as None from the millisecond its cookie expires."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000))
        self.clock.advance(ms=999)
        self.assertIsNotNone(self.store.get("sid-1"))
        self.clock.advance(ms=1)
        self.assertIsNone(self.store.get("sid-1"))
        self.assertEqual(self.store.length(), 0)

    def test_a_session_without_expiry_never_expires(self) -> None:
        """A browser-session cookie (no expires) keeps its session however long it waits."""
        self.store.set("sid-1", self.stored(self.clock, max_age=None, views=1))
        self.clock.advance(seconds=10 * 365 * 86400)
        self.assertEqual(self.store.get("sid-1")["views"], 1)

    def test_touch_moves_the_expiry_and_keeps_the_data(self) -> None:
        """touch() stores the session's new cookie (so its expiry) and leaves the data alone."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000, views=1))
        self.clock.advance(ms=900)
        touched = self.session_object(self.clock, max_age=1000, views=555)
        self.store.touch("sid-1", touched)
        self.clock.advance(ms=900)
        stored = self.store.get("sid-1")
        self.assertIsNotNone(stored)
        self.assertEqual(stored["views"], 1)
        self.assertEqual(stored["cookie"], touched.cookie.to_json())

    def test_touch_does_not_revive_an_expired_or_unknown_session(self) -> None:
        """touch() of an expired or unknown id stores nothing."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000))
        self.clock.advance(ms=1000)
        self.store.touch("sid-1", self.session_object(self.clock))
        self.store.touch("sid-2", self.session_object(self.clock))
        self.assertIsNone(self.store.get("sid-1"))
        self.assertIsNone(self.store.get("sid-2"))

    def test_all_and_length_count_only_live_sessions(self) -> None:
        """all() and length() leave out expired sessions."""
        self.store.set("short", self.stored(self.clock, max_age=1000, n=1))
        self.store.set("long", self.stored(self.clock, max_age=5000, n=2))
        self.store.set("forever", self.stored(self.clock, max_age=None, n=3))
        self.assertEqual(self.store.length(), 3)
        self.clock.advance(ms=1000)
        self.assertEqual({sid: data["n"] for sid, data in self.store.all().items()},
                         {"long": 2, "forever": 3})
        self.assertEqual(self.store.length(), 2)

    def test_clear_forgets_every_session(self) -> None:
        """clear() empties the store."""
        for index in range(5):
            self.store.set(f"sid-{index}", self.stored(self.clock))
        self.store.clear()
        self.assertEqual(self.store.all(), {})
        self.assertEqual(self.store.length(), 0)


class _VersionsContract(_StoreHelpers):
    """The "versions" capability (get_versioned, set_if_version) for MergingSessionMiddleware."""

    def test_a_missing_session_has_version_zero(self) -> None:
        """get_versioned() of an unknown id is (None, 0)."""
        self.assertEqual(self.store.get_versioned("nope"), (None, 0))

    def test_every_set_changes_the_version(self) -> None:
        """Each successful write gives the session a new version, never 0."""
        seen = []
        for views in range(5):
            self.store.set("sid-1", self.stored(self.clock, views=views))
            data, version = self.store.get_versioned("sid-1")
            self.assertEqual(data["views"], views)
            seen.append(version)
        self.assertNotIn(0, seen)
        self.assertEqual(len(set(seen)), 5)

    def test_touch_does_not_change_the_version(self) -> None:
        """touch() refreshes the expiry without counting as a conflicting write."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000))
        _, before = self.store.get_versioned("sid-1")
        self.clock.advance(ms=500)
        self.store.touch("sid-1", self.stored(self.clock, max_age=1000))
        data, after = self.store.get_versioned("sid-1")
        self.assertEqual(after, before)
        self.assertEqual(data["cookie"], self.stored(self.clock, max_age=1000)["cookie"])

    def test_set_if_version_writes_when_the_version_matches(self) -> None:
        """set_if_version() with the current version writes and changes the version."""
        self.assertTrue(self.store.set_if_version("sid-1", self.stored(self.clock, views=1), 0))
        _, version = self.store.get_versioned("sid-1")
        self.assertTrue(self.store.set_if_version("sid-1", self.stored(self.clock, views=2), version))
        data, newer = self.store.get_versioned("sid-1")
        self.assertEqual(data["views"], 2)
        self.assertNotEqual(newer, version)

    def test_set_if_version_conflict_returns_false_and_writes_nothing(self) -> None:
        """A stale version (or 0 for an existing session, or >0 for a missing one) writes nothing."""
        self.store.set("sid-1", self.stored(self.clock, views=1))
        _, version = self.store.get_versioned("sid-1")
        self.store.set("sid-1", self.stored(self.clock, views=2))
        _, current = self.store.get_versioned("sid-1")
        cases = [("stale version", "sid-1", version), ("0 for an existing session", "sid-1", 0),
                 ("a version for a missing session", "sid-2", current)]
        for label, sid, expected in cases:
            with self.subTest(label):
                self.assertFalse(self.store.set_if_version(sid, self.stored(self.clock, views=9), expected))
        self.assertEqual(self.store.get_versioned("sid-1"), (self.stored(self.clock, views=2), current))
        self.assertEqual(self.store.get_versioned("sid-2"), (None, 0))

    def test_an_expired_session_counts_as_missing_for_versions(self) -> None:
        """After expiry, get_versioned() is (None, 0) and set_if_version(..., 0) may create it again."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000, views=1))
        self.clock.advance(ms=1000)
        self.assertEqual(self.store.get_versioned("sid-1"), (None, 0))
        self.assertTrue(self.store.set_if_version("sid-1", self.stored(self.clock, views=2), 0))
        self.assertEqual(self.store.get("sid-1")["views"], 2)

    def test_threads_incrementing_with_set_if_version_lose_nothing(self) -> None:
        """Compare-and-set retried on conflict keeps every increment made by 8 threads."""
        self.run_threads(lambda index: self.increment(self.store, "counter", self.clock, 50))
        self.assertEqual(self.store.get("counter")["n"], 8 * 50)


class TestMemoryStoreContract(_StoreContract, unittest.TestCase):
    """MemoryStore (session_demo's section on stores) meets the interface contract the new stores share."""

    def make_store(self, clock: FrozenClock) -> MemoryStore:
        return MemoryStore(clock=clock)


class TestBoundedMemoryStoreContract(_StoreContract, _VersionsContract, unittest.TestCase):
    """BoundedMemoryStore behaves as a Store, with versions."""

    def make_store(self, clock: FrozenClock) -> BoundedMemoryStore:
        return BoundedMemoryStore(clock=clock)


class TestSQLiteStoreContract(_StoreContract, _VersionsContract, unittest.TestCase):
    """SQLiteStore behaves as a Store, with versions."""

    def make_store(self, clock: FrozenClock) -> SQLiteStore:
        return self.sqlite_store(clock)


class TestBoundedMemoryStoreSweep(_StoreHelpers, unittest.TestCase):
    """Expired sessions leave a BoundedMemoryStore as it is used, a few per call, without being read."""

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.store = BoundedMemoryStore(clock=self.clock)

    def test_expired_sessions_disappear_over_later_writes_without_being_read(self) -> None:
        """Each write removes at most sweep_batch expired sessions; enough writes remove them all."""
        batch = self.store.sweep_batch
        for index in range(5 * batch):
            self.store.set(f"old-{index}", self.stored(self.clock, max_age=1000))
        self.clock.advance(seconds=2)
        self.store.set("new-0", self.stored(self.clock, max_age=None))
        self.assertEqual(self.store.stats()["expired"], batch)
        self.assertEqual(self.store.stats()["live"], 5 * batch + 1 - batch)
        for index in range(1, 5):
            self.store.set(f"new-{index}", self.stored(self.clock, max_age=None))
        stats = self.store.stats()
        self.assertEqual((stats["expired"], stats["live"]), (5 * batch, 5))

    def test_reads_and_destroys_sweep_too(self) -> None:
        """get() and destroy() of other ids also remove a batch of expired sessions."""
        batch = self.store.sweep_batch
        for index in range(2 * batch):
            self.store.set(f"old-{index}", self.stored(self.clock, max_age=1000))
        self.clock.advance(seconds=2)
        self.store.get("someone-else")
        self.assertEqual(self.store.stats()["expired"], batch)
        self.store.destroy("someone-else")
        self.assertEqual(self.store.stats()["expired"], 2 * batch)

    def test_sessions_without_expiry_are_never_swept_by_time(self) -> None:
        """A session without expiry stays however many writes and years go by."""
        self.store.set("forever", self.stored(self.clock, max_age=None, views=1))
        self.clock.advance(seconds=10 * 365 * 86400)
        for index in range(100):
            self.store.set(f"other-{index}", self.stored(self.clock))
        self.assertEqual(self.store.get("forever")["views"], 1)
        self.assertEqual(self.store.stats()["expired"], 0)

    def test_a_rewritten_session_is_not_swept_at_its_old_expiry(self) -> None:
        """A touch or set that moves the expiry leaves a stale heap entry that the sweep skips."""
        self.store.set("touched", self.stored(self.clock, max_age=1000))
        self.store.set("rewritten", self.stored(self.clock, max_age=1000))
        self.clock.advance(ms=500)
        self.store.touch("touched", self.stored(self.clock, max_age=10000))
        self.store.set("rewritten", self.stored(self.clock, max_age=10000))
        self.clock.advance(ms=1000)
        for index in range(10):
            self.store.set(f"other-{index}", self.stored(self.clock))
        self.assertIsNotNone(self.store.get("touched"))
        self.assertIsNotNone(self.store.get("rewritten"))
        self.assertEqual(self.store.stats()["expired"], 0)

    def test_the_expiry_heap_stays_bounded_under_repeated_touches(self) -> None:
        """10,000 touches of one session do not leave 10,000 heap entries behind (the heap is rebuilt)."""
        self.store.set("sid-1", self.stored(self.clock, max_age=86400000))
        for _ in range(10000):
            self.clock.advance(ms=1)
            self.store.touch("sid-1", self.stored(self.clock, max_age=86400000))
        # Private, on purpose: the heap is the thing that must not leak.
        self.assertLessEqual(len(self.store._expiry_heap), 2 * 1 + 64 + 1)

    def test_all_and_length_sweep_everything_due(self) -> None:
        """all() and length() remove every expired session at once and count them as expired."""
        for index in range(50):
            self.store.set(f"old-{index}", self.stored(self.clock, max_age=1000))
        self.clock.advance(seconds=2)
        self.assertEqual(self.store.length(), 0)
        self.assertEqual(self.store.stats()["expired"], 50)

    def test_stats_count_bytes_as_the_stored_json(self) -> None:
        """stats()['bytes'] is the UTF-8 length of the stored JSON texts, and follows every change."""
        sessions = {"a": self.stored(self.clock, views=1), "b": self.stored(self.clock, name="ünïcødé")}
        for sid, data in sessions.items():
            self.store.set(sid, data)

        def json_bytes() -> int:
            return sum(len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
                       for data in self.store.all().values())

        self.assertEqual(self.store.stats()["bytes"], json_bytes())
        self.store.set("a", self.stored(self.clock, views=1, more="x" * 100))
        self.store.destroy("b")
        self.assertEqual(self.store.stats()["bytes"], json_bytes())
        self.store.clear()
        self.assertEqual(self.store.stats()["bytes"], 0)


class TestBoundedMemoryStoreBounds(_StoreHelpers, unittest.TestCase):
    """max_sessions and max_bytes hold; eviction takes LRU anonymous sessions first, then LRU established ones."""

    def setUp(self) -> None:
        self.clock = FrozenClock()

    def establish(self, store: BoundedMemoryStore, sid: str) -> None:
        """Save a session, then read it back as a returning browser's request does: it is established."""
        store.set(sid, self.stored(self.clock, views=1))
        store.get(sid)
        store.set(sid, self.stored(self.clock, views=2))

    def test_a_churn_of_new_anonymous_sessions_never_exceeds_max_sessions(self) -> None:
        """10,000 new anonymous sessions in a store of 100: never more than 100, the newest kept."""
        store = BoundedMemoryStore(clock=self.clock, max_sessions=100)
        most = 0
        for index in range(10000):
            store.set(f"sid-{index}", self.stored(self.clock, views=1))
            most = max(most, store.stats()["live"])
        self.assertEqual(most, 100)
        self.assertEqual(store.stats()["evicted"], 9900)
        self.assertEqual(set(store.all()), {f"sid-{index}" for index in range(9900, 10000)})

    def test_established_sessions_survive_a_flood(self) -> None:
        """30 established sessions all survive 10,000 new anonymous ones in a store of 100."""
        store = BoundedMemoryStore(clock=self.clock, max_sessions=100)
        for index in range(30):
            self.establish(store, f"user-{index}")
        for index in range(10000):
            store.set(f"bot-{index}", self.stored(self.clock))
            self.assertLessEqual(store.stats()["live"], 100)
        for index in range(30):
            self.assertEqual(store.get(f"user-{index}")["views"], 2)
        self.assertEqual(store.stats()["established"], 30)

    def test_the_bytes_bound_holds_under_churn(self) -> None:
        """With max_bytes=2000, 1,000 sessions of about 100 bytes never hold more than 2000 bytes."""
        store = BoundedMemoryStore(clock=self.clock, max_bytes=2000)
        for index in range(1000):
            store.set(f"sid-{index}", self.stored(self.clock, pad="x" * (index % 50)))
            self.assertLessEqual(store.stats()["bytes"], 2000)
        self.assertGreater(store.stats()["evicted"], 900)

    def test_evicts_the_least_recently_used_anonymous_session_first(self) -> None:
        """get, touch and set make a session recently used; the least recently used one goes."""
        for label, use in [("get", lambda store: store.get("a")),
                           ("touch", lambda store: store.touch("a", self.stored(self.clock))),
                           ("set", lambda store: store.set("a", self.stored(self.clock)))]:
            with self.subTest(label):
                store = BoundedMemoryStore(clock=self.clock, max_sessions=3)
                for sid in "abc":
                    store.set(sid, self.stored(self.clock))
                use(store)
                store.set("d", self.stored(self.clock))
                self.assertEqual(set(store.all()), {"a", "c", "d"})

    def test_a_store_full_of_established_sessions_evicts_the_least_recently_used_one(self) -> None:
        """A new session is never refused: with only established sessions left, the LRU one goes."""
        store = BoundedMemoryStore(clock=self.clock, max_sessions=2)
        self.establish(store, "x")
        self.establish(store, "y")
        store.get("x")  # x is now more recently used than y
        store.set("z", self.stored(self.clock))
        self.assertEqual(set(store.all()), {"x", "z"})
        self.assertEqual((store.stats()["evicted"], store.stats()["evicted_established"]), (1, 1))

    def test_expired_sessions_make_room_before_any_eviction(self) -> None:
        """When full, an expired session is removed first, even if a live anonymous one could go."""
        store = BoundedMemoryStore(clock=self.clock, max_sessions=2)
        store.set("expiring", self.stored(self.clock, max_age=1000))
        store.set("live", self.stored(self.clock, max_age=None))
        self.clock.advance(seconds=2)
        store.sweep_batch = 0  # only the room-making may remove it
        store.set("new", self.stored(self.clock))
        self.assertEqual(set(store.all()), {"live", "new"})
        self.assertEqual((store.stats()["expired"], store.stats()["evicted"]), (1, 0))

    def test_a_session_becomes_established_when_a_later_request_reads_it(self) -> None:
        """Writes alone, even with changed data, keep a session anonymous; a get, get_versioned or touch establishes it."""
        for label, read in [("get", lambda store: store.get("s")),
                            ("get_versioned", lambda store: store.get_versioned("s")),
                            ("touch", lambda store: store.touch("s", self.stored(self.clock)))]:
            with self.subTest(label):
                store = BoundedMemoryStore(clock=self.clock)
                store.set("s", self.stored(self.clock, views=1))
                store.set("s", self.stored(self.clock, views=2))
                self.assertEqual((store.stats()["anonymous"], store.stats()["established"]), (1, 0))
                read(store)
                store.set("s", self.stored(self.clock, views=3))
                self.assertEqual((store.stats()["anonymous"], store.stats()["established"]), (0, 1))

    def test_is_established_marks_a_session_from_its_first_write(self) -> None:
        """With is_established, a login saved under a regenerated id is established at once: anonymous ones go first."""
        store = BoundedMemoryStore(clock=self.clock, max_sessions=2,
                                   is_established=lambda data: "user" in data)
        store.set("logged-in", self.stored(self.clock, user="ana"))
        store.set("bot-1", self.stored(self.clock))
        store.set("bot-2", self.stored(self.clock))
        self.assertEqual(set(store.all()), {"logged-in", "bot-2"})
        self.assertEqual(store.stats()["evicted_established"], 0)

    def test_an_established_session_growing_evicts_anonymous_ones(self) -> None:
        """An established session that grows past max_bytes evicts anonymous sessions to fit."""
        small = len(json.dumps(self.stored(self.clock), separators=(",", ":")))
        store = BoundedMemoryStore(clock=self.clock, max_bytes=small * 4)
        self.establish(store, "user")
        store.set("bot-1", self.stored(self.clock))
        store.set("bot-2", self.stored(self.clock))
        store.set("user", self.stored(self.clock, views=3, cart="x" * small))
        self.assertEqual(store.get("user")["views"], 3)
        self.assertLessEqual(store.stats()["bytes"], small * 4)
        self.assertGreaterEqual(store.stats()["evicted"], 1)
        self.assertEqual(store.stats()["evicted_established"], 0)

    def test_a_session_growing_with_only_established_ones_left_evicts_the_lru_one(self) -> None:
        """With only established sessions left, a write that would pass max_bytes evicts the LRU other one."""
        small = len(json.dumps(self.stored(self.clock, views=1), separators=(",", ":")))
        store = BoundedMemoryStore(clock=self.clock, max_bytes=small * 3)
        self.establish(store, "a")
        self.establish(store, "b")
        store.set("a", self.stored(self.clock, views=3, cart="x" * small))
        self.assertEqual(store.get("a")["views"], 3)
        self.assertIsNone(store.get("b"))
        self.assertLessEqual(store.stats()["bytes"], small * 3)

    def test_a_session_larger_than_max_session_bytes_is_refused_with_a_clear_error(self) -> None:
        """A single session over max_session_bytes raises SessionTooLargeError; nothing is evicted, the stored copy stays."""
        store = BoundedMemoryStore(clock=self.clock, max_session_bytes=500)
        store.set("small", self.stored(self.clock))
        store.set("growing", self.stored(self.clock, views=1))
        with self.assertRaisesRegex(SessionTooLargeError, r"bytes of JSON, more than max_session_bytes=500"):
            store.set("huge", self.stored(self.clock, blob="x" * 500))
        with self.assertRaises(SessionTooLargeError):
            store.set("growing", self.stored(self.clock, blob="x" * 500))
        self.assertEqual(set(store.all()), {"small", "growing"})
        self.assertEqual(store.get("growing")["views"], 1)
        self.assertEqual(store.stats()["evicted"], 0)

    def test_max_session_bytes_defaults_to_one_mebibyte_or_max_bytes(self) -> None:
        """The per-session cap is 1 MiB, or max_bytes when that is smaller."""
        self.assertEqual(BoundedMemoryStore().max_session_bytes, 1024 * 1024)
        self.assertEqual(BoundedMemoryStore(max_bytes=1000).max_session_bytes, 1000)

    def test_the_constructor_rejects_bad_bounds(self) -> None:
        """max_sessions and max_bytes must be whole numbers >= 1; max_session_bytes from 1 to max_bytes."""
        for options in [{"max_sessions": 0}, {"max_sessions": 1.5}, {"max_sessions": True},
                        {"max_bytes": 0}, {"max_bytes": "64M"}, {"max_session_bytes": 0},
                        {"max_bytes": 100, "max_session_bytes": 101}, {"max_session_bytes": 1.5}]:
            with self.subTest(options):
                with self.assertRaises(ValueError):
                    BoundedMemoryStore(**options)

    def test_threads_churning_keep_the_bounds_and_the_books(self) -> None:
        """8 threads setting, reading, touching and destroying leave counts and bytes consistent."""
        store = BoundedMemoryStore(clock=self.clock, max_sessions=50)

        def churn(worker: int) -> None:
            for index in range(500):
                sid = f"w{worker}-{index % 80}"
                store.set(sid, self.stored(self.clock, n=index))
                store.get(f"w{(worker + 1) % 8}-{index % 80}")
                store.touch(sid, self.stored(self.clock))
                if index % 7 == 0:
                    store.destroy(sid)

        self.run_threads(churn)
        stats = store.stats()
        live = store.all()
        self.assertLessEqual(stats["live"], 50)
        self.assertEqual(stats["live"], len(live))
        self.assertEqual(stats["anonymous"] + stats["established"], stats["live"])
        self.assertEqual(stats["bytes"], sum(len(json.dumps(data, separators=(",", ":")).encode())
                                             for data in live.values()))


class TestBoundedMemoryStoreFlood(SessionAssertions):
    """Issue 12's flood, scaled to max_sessions: a victim who logs in and keeps visiting stays logged in.

    The flood: 1.02 x max_sessions cookieless requests (each stores a new
    session: save_uninitialized, and the counter changes it), then 1.01 x
    max_sessions sessions that each visit twice (each comes back once).
    """

    MAX_SESSIONS = 200

    def setUp(self) -> None:
        self.clock = FrozenClock()

    def middleware(self, **store_options: Any) -> SessionMiddleware:
        """server.py's settings (resave off, save_uninitialized on) on a BoundedMemoryStore."""
        self.store = BoundedMemoryStore(clock=self.clock, max_sessions=self.MAX_SESSIONS, **store_options)
        return SessionMiddleware(make_options(store=self.store, clock=self.clock, resave=False,
                                              cookie={"max_age": 3_600_000}))

    @staticmethod
    def count_view(state: sd.RequestState) -> None:
        state.session["views"] = state.session.get("views", 0) + 1

    def log_in(self, middleware: SessionMiddleware, user: str) -> str:
        """A first visit, then /login: regenerate and remember the user; returns the new cookie."""
        header, _ = run_request(middleware, None, self.count_view)
        header, _ = run_request(middleware, cookie_pair(header),
                                lambda state: state.session.regenerate().update(user=user))
        return cookie_pair(header)

    def who(self, middleware: SessionMiddleware, cookie: str) -> Any:
        """/whoami: read the user, change nothing."""
        _, state = run_request(middleware, cookie, lambda state: None)
        return state.session.get("user")

    def flood(self, middleware: SessionMiddleware, on_every: Callable[[], None], every: int) -> None:
        """The two floods; ``on_every()`` runs after each ``every`` flood requests."""
        sent = 0
        for _ in range(self.MAX_SESSIONS * 102 // 100):
            run_request(middleware, None, self.count_view)
            sent += 1
            if sent % every == 0:
                on_every()
        for _ in range(self.MAX_SESSIONS * 101 // 100):
            header, _ = run_request(middleware, None, self.count_view)
            run_request(middleware, cookie_pair(header), self.count_view)
            sent += 2
            if sent % every < 2:
                on_every()

    def test_a_victim_who_keeps_visiting_stays_logged_in_through_the_flood(self) -> None:
        """Visiting once every max_sessions/4 flood requests, the victim reads its user every time."""
        middleware = self.middleware()
        victim = self.log_in(middleware, "victim")
        seen: list[Any] = []
        self.flood(middleware, lambda: seen.append(self.who(middleware, victim)), self.MAX_SESSIONS // 4)
        seen.append(self.who(middleware, victim))
        self.assertGreater(len(seen), 10)
        self.assertEqual(set(seen), {"victim"})
        self.assertLessEqual(self.store.stats()["live"], self.MAX_SESSIONS)

    def test_a_login_after_the_flood_is_stored_and_read_back(self) -> None:
        """Once the store is full of sessions that came back, a new login is still stored, not refused."""
        middleware = self.middleware()
        self.flood(middleware, lambda: None, self.MAX_SESSIONS)
        self.assertEqual(self.store.stats()["established"], self.MAX_SESSIONS)
        late = self.log_in(middleware, "late")
        self.assertEqual(self.who(middleware, late), "late")

    def test_with_is_established_a_login_survives_the_flood_before_its_first_return(self) -> None:
        """With is_established, a victim who logs in and comes back only after the cookieless flood is still logged in."""
        middleware = self.middleware(is_established=lambda data: "user" in data)
        victim = self.log_in(middleware, "victim")
        for _ in range(self.MAX_SESSIONS * 102 // 100):
            run_request(middleware, None, self.count_view)
        self.assertEqual(self.who(middleware, victim), "victim")


class TestSQLiteStoreFile(_StoreHelpers, unittest.TestCase):
    """SQLiteStore keeps sessions in a WAL-mode file that outlives the store object."""

    def setUp(self) -> None:
        self.clock = FrozenClock()

    def test_refuses_an_in_memory_database(self) -> None:
        """':memory:' (one database per connection, so per thread) and '' are configuration errors."""
        for path in (":memory:", "", "file::memory:?cache=shared"):
            with self.subTest(path):
                with self.assertRaises(ValueError):
                    SQLiteStore(path)

    def test_sessions_survive_a_restart(self) -> None:
        """A new SQLiteStore on the same file sees the sessions and versions the old one wrote."""
        path = self.sqlite_path()
        first = self.sqlite_store(self.clock, path)
        first.set("sid-1", self.stored(self.clock, views=7))
        before = first.get_versioned("sid-1")
        first.close()
        second = self.sqlite_store(self.clock, path)
        self.assertEqual(second.get_versioned("sid-1"), before)

    def test_the_file_has_the_documented_schema_in_wal_mode(self) -> None:
        """Tables sessions(sid, data, expires_ms, version) and locks(sid, owner, expires_ms); journal mode WAL."""
        path = self.sqlite_path()
        self.sqlite_store(self.clock, path)
        raw = self.raw(path)
        columns = {table: [row[1] for row in raw.execute(f"PRAGMA table_info({table})")]
                   for table in ("sessions", "locks")}
        self.assertEqual(columns, {"sessions": ["sid", "data", "expires_ms", "version"],
                                   "locks": ["sid", "owner", "expires_ms"]})
        self.assertEqual(raw.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_stores_plain_json(self) -> None:
        """The data column holds the session's compact JSON, readable by anything (never pickle)."""
        path = self.sqlite_path()
        store = self.sqlite_store(self.clock, path)
        session = self.stored(self.clock, views=1)
        store.set("sid-1", session)
        text, = self.raw(path).execute("SELECT data FROM sessions WHERE sid = 'sid-1'").fetchone()
        self.assertEqual(text, json.dumps(session, separators=(",", ":"), ensure_ascii=False))

    def test_a_closed_store_refuses_to_work(self) -> None:
        """After close(), every call raises sqlite3.ProgrammingError."""
        store = self.sqlite_store(self.clock)
        store.close()
        with self.assertRaises(sqlite3.ProgrammingError):
            store.get("sid-1")

    def test_threads_share_one_file_safely(self) -> None:
        """8 threads writing and reading their own sessions all see their own last write."""
        store = self.sqlite_store(self.clock)

        def work(worker: int) -> None:
            for index in range(50):
                store.set(f"w{worker}", self.stored(self.clock, n=index))
                self.assertEqual(store.get(f"w{worker}")["n"], index)

        self.run_threads(work)
        self.assertEqual(store.length(), 8)

    def test_the_file_and_its_wal_and_shm_are_owner_only_whatever_the_umask(self) -> None:
        """Under umask 000 (and 022), a new database, its -wal and its -shm get mode 0600."""
        for umask in (0o000, 0o022):
            with self.subTest(umask=oct(umask)):
                path = self.sqlite_path()
                previous = os.umask(umask)
                try:
                    store = self.sqlite_store(self.clock, path)
                    store.set("sid-1", self.stored(self.clock, views=1))
                finally:
                    os.umask(previous)
                for suffix in ("", "-wal", "-shm"):
                    self.assertEqual(oct(os.stat(path + suffix).st_mode & 0o777), oct(0o600), suffix)

    def test_an_existing_readable_file_is_kept_and_warned_about(self) -> None:
        """A file others can read is not chmod-ed behind the user's back; a warning says so."""
        path = self.sqlite_path()
        self.sqlite_store(self.clock, path).close()
        os.chmod(path, 0o644)
        with self.assertLogs("session_demo", "WARNING") as logs:
            self.sqlite_store(self.clock, path)
        self.assertIn("mode 644", "\n".join(logs.output))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)


class TestSQLiteStoreFailures(_StoreHelpers, unittest.TestCase):
    """No silent loss: a write the file cannot take raises out of the store; it is never swallowed."""

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.path = self.sqlite_path()
        self.store = self.sqlite_store(self.clock, self.path, busy_timeout=50)
        self.store.set("sid-1", self.stored(self.clock, views=1))

    def writes(self) -> list[tuple[str, Callable[[], Any]]]:
        session = self.stored(self.clock, views=2, pad="x" * 20000)
        return [("set", lambda: self.store.set("sid-1", session)),
                ("set_if_version", lambda: self.store.set_if_version("sid-1", session, 1)),
                ("touch", lambda: self.store.touch("sid-1", session)),
                ("destroy", lambda: self.store.destroy("sid-1"))]

    def assert_every_write_raises(self, message: str) -> None:
        for name, write in self.writes():
            with self.subTest(name), self.assertRaisesRegex(sqlite3.OperationalError, message):
                write()
        self.assertEqual(self.store.get("sid-1")["views"], 1)

    def test_a_file_locked_by_another_process_raises_after_busy_timeout(self) -> None:
        """Another connection holding the write lock: each write waits busy_timeout ms, then raises."""
        other = self.raw(self.path)
        other.execute("BEGIN IMMEDIATE")
        self.addCleanup(other.execute, "ROLLBACK")
        self.assert_every_write_raises("locked")

    def test_a_full_disk_raises(self) -> None:
        """SQLITE_FULL (max_page_count reached, as a full disk answers) raises from set and set_if_version."""
        connection = self.store._connection()
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        for name, write in self.writes()[:2]:
            with self.subTest(name), self.assertRaisesRegex(sqlite3.OperationalError, "full"):
                write()
        self.assertEqual(self.store.get("sid-1")["views"], 1)

    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0, "root can write a read-only file")
    def test_a_read_only_file_raises(self) -> None:
        """A store opened on a read-only file raises on every write."""
        self.store.close()
        os.chmod(self.path, 0o400)
        self.addCleanup(os.chmod, self.path, 0o600)
        self.store = self.sqlite_store(self.clock, self.path)
        self.assert_every_write_raises("readonly")

    def test_a_read_only_connection_raises(self) -> None:
        """PRAGMA query_only (a read-only database as SQLite sees it, even for root) makes every write raise."""
        self.store._connection().execute("PRAGMA query_only = 1")
        self.assert_every_write_raises("readonly")

    def test_a_failed_sweep_after_a_successful_write_is_logged_not_raised(self) -> None:
        """The opportunistic sweep is not the write: if it fails, the stored session stands and a warning says why."""
        self.clock.advance(seconds=120)
        original = self.store.sweep

        def failing_sweep() -> int:
            raise sqlite3.OperationalError("database is locked")

        self.store.sweep = failing_sweep  # type: ignore[method-assign]
        self.addCleanup(setattr, self.store, "sweep", original)
        with self.assertLogs("session_demo", "WARNING"):
            self.store.set("sid-2", self.stored(self.clock, views=5))
        self.assertEqual(self.store.get("sid-2")["views"], 5)


class TestSQLiteStoreExpiry(_StoreHelpers, unittest.TestCase):
    """Expired rows go when read, and by a sweep that writes trigger at most once per sweep_interval."""

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.path = self.sqlite_path()
        self.store = self.sqlite_store(self.clock, self.path, sweep_interval=60)
        self.raw_db = self.raw(self.path)

    def rows(self) -> int:
        return self.raw_db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def test_reading_an_expired_row_deletes_it(self) -> None:
        """get() of an expired session returns None and deletes its row."""
        self.store.set("sid-1", self.stored(self.clock, max_age=1000))
        self.clock.advance(ms=1000)
        self.assertIsNone(self.store.get("sid-1"))
        self.assertEqual(self.rows(), 0)

    def test_sweep_deletes_expired_rows_without_reading_them(self) -> None:
        """sweep() deletes every expired row, keeps the others, and says how many it deleted."""
        for index in range(5):
            self.store.set(f"old-{index}", self.stored(self.clock, max_age=1000))
        self.store.set("long", self.stored(self.clock, max_age=10000))
        self.store.set("forever", self.stored(self.clock, max_age=None))
        self.clock.advance(seconds=2)
        self.assertEqual(self.store.sweep(), 5)
        self.assertEqual(self.rows(), 2)

    def test_writes_sweep_at_most_once_per_sweep_interval(self) -> None:
        """An expired row stays until a write comes sweep_interval seconds after the last sweep."""
        self.store.set("first", self.stored(self.clock, max_age=None))  # the first write sweeps
        self.store.set("expiring", self.stored(self.clock, max_age=1000))
        self.clock.advance(seconds=2)
        self.store.set("second", self.stored(self.clock, max_age=None))
        self.assertEqual(self.rows(), 3)
        self.clock.advance(seconds=58)
        self.store.set("third", self.stored(self.clock, max_age=None))
        self.assertEqual(self.rows(), 3)

    def test_the_sweep_uses_the_expiry_index(self) -> None:
        """The sweep's DELETE searches the expires_ms index instead of scanning the table."""
        plan = self.raw_db.execute(
            "EXPLAIN QUERY PLAN DELETE FROM sessions WHERE expires_ms <= 0").fetchall()
        self.assertIn("USING INDEX", " ".join(str(step[-1]) for step in plan))


DEEP_JSON = '{"cookie":{"expires":null},"x":' + "[" * 100_000 + "]" * 100_000 + "}"
"""Valid JSON that Python's parser refuses with RecursionError (3.11 and 3.12 stop near 1,000 levels,
3.13 somewhere under 20,000)."""


class TestSQLiteStoreCorruptRows(_StoreHelpers, SessionAssertions):
    """A corrupt row is logged, deleted, and reads as no session: the visitor gets a new one, not a 500."""

    CORRUPT = [("not JSON", "{views: 1"), ("a JSON list", "[1, 2]"), ("a JSON string", '"text"'),
               ("no cookie", '{"views": 1}'), ("a cookie that is not an object", '{"cookie": 5}'),
               ("valid JSON nested 100,000 deep", DEEP_JSON)]

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.path = self.sqlite_path()
        self.store = self.sqlite_store(self.clock, self.path)
        self.raw_db = self.raw(self.path)

    def corrupt(self, sid: str, text: str) -> None:
        self.raw_db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, NULL, 1)", (sid, text))

    def test_a_corrupt_row_reads_as_none_is_logged_and_deleted(self) -> None:
        """get() and get_versioned() of a corrupt row log a warning, delete it and return no session."""
        for label, text in self.CORRUPT:
            for method in ("get", "get_versioned"):
                with self.subTest(label, method=method):
                    self.corrupt("bad", text)
                    with self.assertLogs("session_demo", "WARNING"):
                        result = getattr(self.store, method)("bad")
                    self.assertIn(result, (None, (None, 0)))
                    self.assertIsNone(self.raw_db.execute(
                        "SELECT 1 FROM sessions WHERE sid = 'bad'").fetchone())

    def test_all_skips_and_deletes_corrupt_rows(self) -> None:
        """all() returns the good sessions and deletes the corrupt ones."""
        self.store.set("good", self.stored(self.clock, views=1))
        self.corrupt("bad", "{views: 1")
        with self.assertLogs("session_demo", "WARNING"):
            self.assertEqual(set(self.store.all()), {"good"})
        self.assertEqual(self.store.length(), 1)

    def test_a_request_with_a_corrupt_session_gets_a_new_one(self) -> None:
        """A cookie whose stored session is corrupt gets a fresh session and a new cookie, not a 500."""
        server = LiveServer(self, self.counter_app, store=self.store, clock=self.clock)
        for label, text in [("not JSON", "{not json"), ("nested 100,000 deep", DEEP_JSON)]:
            with self.subTest(label):
                cookie = self.assert_sets_cookie(server.get())
                sid = sd.unsign(sd.decode_uri_component(cookie.split("=", 1)[1])[2:], SECRET)
                self.corrupt(sid, text)
                with self.assertLogs("session_demo", "WARNING"):
                    response = server.get(cookie=cookie)
                self.assertEqual((response.status, response.body), (200, "views: 1"))
                self.assertNotEqual(self.assert_sets_cookie(response), cookie)
                self.assertIsNone(self.store.get(sid))


class _LockOwnersContract:
    """Who owns a lock, for every store that offers acquire/release (self.first, self.second: two store
    objects on one backend): without an owner token, the thread; with one, the request, in any thread."""

    def test_another_thread_of_the_same_store_is_another_owner(self) -> None:
        """A lock taken in one thread is not held by another thread of the same store."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        results: list[bool] = []
        self.run_threads(lambda index: results.append(self.first.acquire("sid-1", 0)), count=1)
        self.assertEqual(results, [False])

    def test_an_owner_token_holds_the_lock_in_any_thread(self) -> None:
        """acquire(sid, t, owner) in one thread and release(sid, owner) in another free it; another owner is refused."""
        results: list[bool] = []
        self.run_threads(lambda index: results.append(self.first.acquire("sid-1", 0, "request-1")), count=1)
        self.assertEqual(results, [True])
        self.assertTrue(self.first.acquire("sid-1", 0, "request-1"))  # renewed, here
        self.assertFalse(self.first.acquire("sid-1", 0, "request-2"))
        self.assertFalse(self.first.acquire("sid-1", 0))  # this thread is not the owner either
        self.run_threads(lambda index: self.first.release("sid-1", "request-1"), count=1)
        self.assertTrue(self.second.acquire("sid-1", 0, "request-2"))


class TestSQLiteStoreLocks(_LockOwnersContract, _StoreHelpers, unittest.TestCase):
    """acquire/release: one holder per id, across store objects; a stale lease can be taken over."""

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.path = self.sqlite_path()
        self.first = self.sqlite_store(self.clock, self.path, lock_lease=30)
        self.second = self.sqlite_store(self.clock, self.path, lock_lease=30)

    def test_a_held_lock_cannot_be_taken_by_another_owner(self) -> None:
        """While one store object holds a lock, another's acquire(sid, 0) is False."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.assertFalse(self.second.acquire("sid-1", 0))
        self.assertTrue(self.second.acquire("sid-2", 0))

    def test_release_lets_another_owner_take_it(self) -> None:
        """After release(), another owner acquires the lock at once."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.first.release("sid-1")
        self.assertTrue(self.second.acquire("sid-1", 0))

    def test_acquiring_a_lock_you_hold_renews_its_lease(self) -> None:
        """acquire() by the holder succeeds and restarts the lease."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.clock.advance(seconds=20)
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.clock.advance(seconds=20)
        self.assertFalse(self.second.acquire("sid-1", 0))

    def test_a_stale_lease_is_taken_over(self) -> None:
        """A lock whose holder never released it is free once its lease runs out, not before."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.clock.advance(ms=29999)
        self.assertFalse(self.second.acquire("sid-1", 0))
        self.clock.advance(ms=1)
        self.assertTrue(self.second.acquire("sid-1", 0))

    def test_release_does_not_free_a_lock_taken_over_by_another(self) -> None:
        """A late release() by the old holder leaves the new holder's lock in place."""
        self.assertTrue(self.first.acquire("sid-1", 0))
        self.clock.advance(seconds=31)
        self.assertTrue(self.second.acquire("sid-1", 0))
        self.first.release("sid-1")
        self.assertFalse(self.first.acquire("sid-1", 0))

    def test_the_sweep_removes_stale_locks(self) -> None:
        """sweep() deletes lock rows whose lease has run out."""
        self.first.acquire("sid-1", 0)
        self.clock.advance(seconds=31)
        self.first.sweep()
        self.assertEqual(self.raw(self.path).execute("SELECT COUNT(*) FROM locks").fetchone()[0], 0)


class TestSQLiteStoreLockOwners(_StoreHelpers, unittest.TestCase):
    """A lock row names its owner host:pid:token; the lease is short and renewed while held."""

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.path = self.sqlite_path()
        self.store = self.sqlite_store(self.clock, self.path)
        self.raw_db = self.raw(self.path)

    def plant(self, owner: str) -> None:
        """A lock row with a lease of 30 s from now, as another store would have left it."""
        self.raw_db.execute("INSERT INTO locks VALUES ('sid-1', ?, ?)",
                            (owner, sd.clock_ms(self.clock) + 30000))

    def dead_pid(self) -> int:
        """The pid of a child process that has exited and been reaped."""
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait(SUBPROCESS_TIMEOUT)
        return process.pid

    def test_the_owner_is_host_pid_and_a_token_and_the_lease_is_five_seconds(self) -> None:
        """The row holds host:pid:token (host: the hostname, and pid namespace) and expires lock_lease (5 s) from now."""
        self.store.acquire("sid-1", 0)
        owner, expires_ms = self.raw_db.execute("SELECT owner, expires_ms FROM locks").fetchone()
        host, pid, token = owner.rsplit(":", 2)
        self.assertEqual((host, int(pid)), (SQLITE_HOST, os.getpid()))
        self.assertTrue(host.startswith(socket.gethostname()))
        self.assertEqual(len(token), 16)
        self.assertEqual(expires_ms, sd.clock_ms(self.clock) + 5000)

    def test_held_leases_are_renewed_and_released_ones_are_not(self) -> None:
        """renew_leases() (the renewer thread's step) pushes back a held lease; after release() it leaves the row alone."""
        other = self.sqlite_store(self.clock, self.path)
        self.store.acquire("sid-1", 0)
        for _ in range(3):
            self.clock.advance(seconds=4)
            self.store.renew_leases()
            self.assertFalse(other.acquire("sid-1", 0))
        self.store.release("sid-1")
        self.store.renew_leases()
        self.assertTrue(other.acquire("sid-1", 0))

    def test_one_renewer_thread_runs_while_locks_are_taken_and_close_stops_it(self) -> None:
        """The first acquire starts a daemon renewer; later ones reuse it; close() ends it."""
        self.store.acquire("sid-1", 0)
        self.store.acquire("sid-2", 0)
        renewer = self.store._renewer
        self.assertTrue(renewer is not None and renewer.daemon and renewer.is_alive())
        self.store.close()
        self.assertFalse(renewer.is_alive())

    def test_a_dead_process_on_this_host_loses_its_lock_at_once(self) -> None:
        """A row whose pid is no longer a process here is taken over although its lease runs 30 s more."""
        self.plant(f"{SQLITE_HOST}:{self.dead_pid()}:0123456789abcdef")
        with self.assertLogs("session_demo", "WARNING"):
            self.assertTrue(self.store.acquire("sid-1", 0))

    def test_a_live_process_or_another_host_keeps_its_lock_until_the_lease_ends(self) -> None:
        """A live pid here, or any pid on another host (it cannot be checked), holds until its lease runs out."""
        for owner in (f"{SQLITE_HOST}:{os.getppid()}:0123456789abcdef",
                      f"elsewhere.example:{self.dead_pid()}:0123456789abcdef",
                      f"{socket.gethostname()}#pidns1:{self.dead_pid()}:0123456789abcdef",
                      "a pre-upgrade owner-7f3a"):
            with self.subTest(owner):
                self.raw_db.execute("DELETE FROM locks")
                self.plant(owner)
                self.assertFalse(self.store.acquire("sid-1", 0))
                self.clock.advance(seconds=30)
                self.assertTrue(self.store.acquire("sid-1", 0))
                self.store.release("sid-1")


class TestSQLiteStoreProcesses(_StoreHelpers, unittest.TestCase):
    """Two processes share one SQLite file: they see each other's sessions, versions and locks."""

    def child(self, path: str, body: str) -> subprocess.Popen:
        """Start ``python -c`` with ``store = SQLiteStore(path)`` and then ``body``; stdout is piped."""
        module = sys.modules[SQLiteStore.__module__]
        paths = {os.path.dirname(os.path.abspath(module.__file__)),
                 os.path.dirname(os.path.abspath(sd.__file__))}
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sorted(paths)))
        script = (f"import json, os, sys\n"
                  f"from {module.__name__} import SQLiteStore\n"
                  f"store = SQLiteStore({path!r})\n" + textwrap.dedent(body))
        process = subprocess.Popen([sys.executable, "-c", script], env=environment,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(self.stop_child, process)
        return process

    @staticmethod
    def stop_child(process: subprocess.Popen) -> None:
        """Kill a child if it still runs, and close its pipes."""
        process.kill()
        process.communicate(timeout=SUBPROCESS_TIMEOUT)

    def finish(self, process: subprocess.Popen) -> str:
        """Wait (bounded) for a child; fail with its stderr if it failed; return its stdout."""
        out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        self.assertEqual(process.returncode, 0, err)
        return out

    def test_two_processes_see_each_others_sessions(self) -> None:
        """A session written by this process is read by another, and the other's write is read here."""
        path = self.sqlite_path()
        store = self.sqlite_store(FrozenClock(), path)
        store.set("from-parent", {"cookie": {"expires": None}, "views": 1})
        out = self.finish(self.child(path, """
            print(json.dumps(store.get("from-parent")))
            store.set("from-child", {"cookie": {"expires": None}, "views": 2})
        """))
        self.assertEqual(json.loads(out)["views"], 1)
        self.assertEqual(store.get("from-child")["views"], 2)

    def test_two_processes_incrementing_with_set_if_version_lose_nothing(self) -> None:
        """Two processes each adding 1 a hundred times with compare-and-set reach exactly 200."""
        path = self.sqlite_path()
        store = self.sqlite_store(FrozenClock(), path)
        store.set("counter", {"cookie": {"expires": None}, "n": 0})
        body = """
            for _ in range(100):
                while True:
                    data, version = store.get_versioned("counter")
                    data["n"] += 1
                    if store.set_if_version("counter", data, version):
                        break
        """
        children = [self.child(path, body), self.child(path, body)]
        for process in children:
            self.finish(process)
        self.assertEqual(store.get("counter")["n"], 200)

    def test_a_crashed_process_lock_is_taken_over_at_once(self) -> None:
        """A lock left by a process of this host that has exited is taken over at once, with a warning."""
        path = self.sqlite_path()
        store = self.sqlite_store(FrozenClock(time.time()), path)
        self.finish(self.child(path, """
            assert store.acquire("sid-1", 0)
            os._exit(0)  # crash: no release, no close
        """))
        with self.assertLogs("session_demo", "WARNING") as logs:
            self.assertTrue(store.acquire("sid-1", 0))
        self.assertIn("which is gone", "\n".join(logs.output))

    def test_a_lock_of_a_process_killed_with_sigkill_is_taken_over_at_once(self) -> None:
        """kill -9 while a lock is held: the restarted process takes the lock at its first try, not after the lease."""
        path = self.sqlite_path()
        store = self.sqlite_store(FrozenClock(time.time()), path, lock_lease=30)
        process = self.child(path, """
            assert store.acquire("sid-1", 0)
            print("held", flush=True)
            import time; time.sleep(60)
        """)
        self.assertEqual(process.stdout.readline().strip(), "held")
        self.assertFalse(store.acquire("sid-1", 0))  # alive: its lock holds
        process.kill()  # SIGKILL
        process.wait(SUBPROCESS_TIMEOUT)  # reaped, as the crashed server's parent would
        with self.assertLogs("session_demo", "WARNING"):
            self.assertTrue(store.acquire("sid-1", 0))


class _BehindAServer(_StoreHelpers):
    """The view counter works end to end with the store; each store's TestCase runs these."""

    def make_store(self, clock: FrozenClock) -> Any:
        raise NotImplementedError

    def setUp(self) -> None:
        self.clock = FrozenClock()
        self.store = self.make_store(self.clock)

    def test_the_view_counter_counts(self) -> None:
        """Three requests with the cookie count three views."""
        server = LiveServer(self, self.counter_app, store=self.store, clock=self.clock)
        cookie = self.assert_sets_cookie(server.get())
        self.assertEqual(server.get(cookie=cookie).body, "views: 2")
        self.assertEqual(server.get(cookie=cookie).body, "views: 3")

    def test_the_count_restarts_when_the_session_expires(self) -> None:
        """After the cookie's 60 s, the store no longer has the session: the counter starts again."""
        server = LiveServer(self, self.counter_app, store=self.store, clock=self.clock)
        cookie = self.assert_sets_cookie(server.get())
        self.clock.advance(seconds=60)
        self.assertEqual(server.get(cookie=cookie).body, "views: 1")

    def test_merge_keeps_concurrent_changes_to_different_keys(self) -> None:
        """With MergingSessionMiddleware, two overlapping requests setting different keys both keep theirs."""
        middleware = with_concurrency("merge", store=self.store, clock=self.clock)
        header, _ = run_request(middleware)
        cookie = cookie_pair(header)
        first = middleware.begin(RequestInfo(cookie_header=cookie))
        second = middleware.begin(RequestInfo(cookie_header=cookie))
        first.session["a"] = 1
        second.session["b"] = 2
        for state in (first, second):
            middleware.set_cookie_header(state)
            middleware.end(state)
        stored = self.store.get(first.session_id)
        self.assertEqual((stored.get("a"), stored.get("b")), (1, 2))


class TestBoundedMemoryStoreBehindAServer(_BehindAServer, SessionAssertions):
    """BoundedMemoryStore serves the view counter, and a full store does not break responses."""

    def make_store(self, clock: FrozenClock) -> BoundedMemoryStore:
        return BoundedMemoryStore(clock=clock, max_sessions=2)

    def test_a_full_store_evicts_and_stores_the_new_visitor(self) -> None:
        """When only established sessions remain, a new visitor is stored and counts on; the LRU user goes."""
        server = LiveServer(self, self.counter_app, store=self.store, clock=self.clock)
        cookies = []
        for _ in range(2):
            cookies.append(self.assert_sets_cookie(server.get()))
            server.get(cookie=cookies[-1])  # views 2: read back, established
        newcomer = self.assert_sets_cookie(server.get())
        self.assertEqual(server.get(cookie=newcomer).body, "views: 2")
        self.assertEqual(server.get(cookie=cookies[1]).body, "views: 3")
        self.assertEqual(server.get(cookie=cookies[0]).body, "views: 1")  # evicted: starts again
        self.assertEqual(self.store.stats()["live"], 2)


class TestSQLiteStoreBehindAServer(_BehindAServer, SessionAssertions):
    """SQLiteStore serves the view counter, across a restart and with LockingSessionMiddleware."""

    def make_store(self, clock: FrozenClock) -> SQLiteStore:
        self.path = self.sqlite_path()
        return self.sqlite_store(clock, self.path)

    def test_the_count_survives_a_server_restart(self) -> None:
        """A new server with a new SQLiteStore on the same file keeps counting."""
        server = LiveServer(self, self.counter_app, store=self.store, clock=self.clock)
        cookie = self.assert_sets_cookie(server.get())
        restarted = LiveServer(self, self.counter_app, store=self.sqlite_store(self.clock, self.path),
                               clock=self.clock)
        self.assertEqual(restarted.get(cookie=cookie).body, "views: 2")

    def test_lock_concurrency_takes_and_releases_the_store_lock(self) -> None:
        """With LockingSessionMiddleware, requests count as usual and leave no lock row behind."""
        server = LiveServer(self, self.counter_app, middleware=with_concurrency("lock", store=self.store, clock=self.clock))
        cookie = self.assert_sets_cookie(server.get())
        self.assertEqual(server.get(cookie=cookie).body, "views: 2")
        self.assertEqual(self.raw(self.path).execute("SELECT COUNT(*) FROM locks").fetchone()[0], 0)


class TestExtraStoresNeverPickle(test_session.TestHostileStoreNeverPickles):
    """The extras' stores keep sessions as JSON too: pickle (code execution on load) is never reached."""

    STORE_NAMES = ("BoundedMemoryStore", "SQLiteStore")

    def store_class(self, name: str) -> type:
        return {"BoundedMemoryStore": BoundedMemoryStore, "SQLiteStore": SQLiteStore}[name]


if __name__ == "__main__":
    unittest.main()
