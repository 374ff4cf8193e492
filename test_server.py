"""Tests for the demo: server.py end to end, and the lessons and README that drive it.

Run with ``python3 -m unittest -v`` from the top folder, with the rest of the suite.
"""

from __future__ import annotations

import contextlib
import doctest
import errno
import functools
import http.client
import http.cookies
import importlib
import io
import json
import logging
import os
import random
import re
import shlex
import tempfile
import types
import threading
import time
import unittest
import urllib.parse
from collections import Counter
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from unittest import mock

import server
import session_demo as sd
from extras.bounded_store import BoundedMemoryStore
from extras.sqlite_store import SQLiteStore
from server import tour
from session_demo import MemoryStore
from test_session import (
    AppHandler, CountingStore, FrozenClock, HOSTILE_COOKIE_JSON, HOSTILE_FOUND_GOOD,
    HOSTILE_FOUND_OTHER, HOSTILE_GOOD_ID, HOSTILE_NEW, HOSTILE_OTHER_ID, Response, SECRET,
    SessionAssertions, TestHostileHelpers, TestServer,
)

# ==== server.py, bad cookies and store failures =============================


FIRST_VISIT = "Welcome! This is your first visit."
LOAD_FAILED = "The session could not be loaded"


# ==== The demo server (server.py), end to end ===============================
#
# These tests start server.make_server(server.parse_args([...])) on port 0 and
# talk to it like a browser: TestServerBrowser keeps the cookies it is given
# and sends them back. Upstream titles mapped here (test/session.js):
#   "should pass session fetch error"                      -> TestStoreFailures (our deliberate
#                                                             difference: the body does not echo it)
#   "should treat ENOENT session fetch error as not found" -> TestStoreFailures
#   "when session without cookie property in store" / "should pass error from inflate"
#                                                          -> TestStoreFailures
#   "when sid not in store" / "should create a new session", "should have a new sid"
#                                                          -> TestBadCookies
#   "when sid not properly signed" / "should generate new session",
#       "should not attempt fetch from store"              -> TestBadCookies
#   "should pass session save error", "should pass session touch error",
#       "should pass session destroy error"                -> TestStoreFailures (logged, and a 500:
#                                                             our deliberate difference)
#   "secret option" / "when an array" / "should read cookies using all elements",
#       "unset option" / "should allow destroy on req.session = null", "rolling option" /
#       "should force cookie on unmodified session", "name option" / "should set the cookie name"
#                                                          -> TestServerFlags, through the demo's flags
# Every upstream title of these blocks applies in Python; none is N/A. Two differences are
# deliberate (LESSONS.md): the fetch-error 500 does not echo the error's text, and a store error
# at the end gives a 500 instead of the handler's answer.


class TestServerBrowser:
    """A tiny browser for one demo server: keeps each Set-Cookie's ``name=value`` and sends it back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar: dict[str, str] = {}

    def cookie_header(self) -> str | None:
        """The Cookie header a browser would send now, or None when the jar is empty."""
        if not self.jar:
            return None
        return "; ".join(f"{name}={value}" for name, value in self.jar.items())

    def get(self, path: str = "/", *, headers: dict[str, str] | None = None,
            cookie_lines: list[str | bytes] | None = None) -> Response:
        """One GET on a fresh connection.

        ``cookie_lines`` replaces the jar: each item is sent as its own Cookie
        header line, verbatim (a str goes out as latin-1, bytes as they are).
        """
        if cookie_lines is None:
            header = self.cookie_header()
            cookie_lines = [header] if header is not None else []
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.putrequest("GET", path, skip_accept_encoding=True)
            for line in cookie_lines:
                connection.putheader("Cookie", line)
            for key, value in (headers or {}).items():
                connection.putheader(key, value)
            connection.endheaders()
            answer = connection.getresponse()
            raw = answer.read()
            response = Response(answer.status, answer.headers, raw.decode("utf-8", "replace"))
            response.raw_body = raw  # type: ignore[attr-defined]
        finally:
            connection.close()
        for set_cookie in response.set_cookies:
            name, _, value = set_cookie.split(";", 1)[0].partition("=")
            self.jar[name] = value
        return response


class TestServerFailingStore(CountingStore):
    """A CountingStore whose methods can be told to fail: ``fail['set'] = RuntimeError(...)``.

    ``replies['get'] = value`` makes ``get`` return that value instead of the stored one.
    """

    def __init__(self, *, clock: Any = None) -> None:
        super().__init__(clock=clock or FrozenClock())
        self.fail: dict[str, BaseException] = {}
        self.replies: dict[str, Any] = {}

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def get(self, sid):
        self._note("get", sid)
        self._maybe_fail("get")
        if "get" in self.replies:
            return self.replies["get"]
        return MemoryStore.get(self, sid)

    def set(self, sid, session):
        self._note("set", sid)
        self._maybe_fail("set")
        MemoryStore.set(self, sid, session)

    def destroy(self, sid):
        self._note("destroy", sid)
        self._maybe_fail("destroy")
        MemoryStore.destroy(self, sid)

    def touch(self, sid, session):
        self._note("touch", sid)
        self._maybe_fail("touch")
        MemoryStore.touch(self, sid, session)


class TestServerDemoCase(SessionAssertions):
    """Shared set-up for the demo-server tests: start a demo, read its cookies and store."""

    def setUp(self) -> None:
        super().setUp()
        # The demo's handler logs every request to stderr; keep the test output clean.
        quiet = mock.patch.object(server.CounterHandler, "log_message")
        quiet.start()
        self.addCleanup(quiet.stop)

    def start_demo(self, *flags: str, store: MemoryStore | None = None,
                   clock: FrozenClock | None = None, as_shipped: bool = False) -> server.SessionHTTPServer:
        """Start ``server.make_server(server.parse_args([*flags, '--port', '0']))`` in a thread.

        Unless ``as_shipped``, the middleware gets a CountingStore (or ``store``)
        and a FrozenClock, handed to session_middleware() on top of the flags'
        own options, so the tests can count store calls and compute Expires.
        """
        args = server.parse_args([*flags, "--port", "0"])
        if as_shipped:
            demo = server.make_server(args)
        else:
            self.clock = clock or FrozenClock()
            if store is None:
                store = CountingStore(clock=self.clock)
            build = functools.partial(sd.SessionOptions, store=store, clock=self.clock)
            with mock.patch.object(server, "SessionOptions", build):
                demo = server.make_server(args)
        thread = threading.Thread(target=demo.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        self.addCleanup(self._stop_demo, demo, thread)
        return demo

    @staticmethod
    def _stop_demo(demo: server.SessionHTTPServer, thread: threading.Thread) -> None:
        demo.shutdown()
        demo.server_close()
        thread.join(5)

    @staticmethod
    def browser(demo: server.SessionHTTPServer) -> TestServerBrowser:
        return TestServerBrowser(demo.server_address[1])

    @staticmethod
    def store_of(demo: server.SessionHTTPServer) -> MemoryStore:
        return demo.session_middleware.options.store  # type: ignore[return-value]

    def session_id_in(self, pair_or_value: str, secrets: list[str] | None = None) -> str | None:
        """The id inside a ``connect.sid=s%3A...`` pair (or bare value), verified with ``secrets``."""
        value = pair_or_value.split("=", 1)[1] if "=" in pair_or_value else pair_or_value
        raw = sd.decode_uri_component(value)
        self.assertTrue(raw.startswith("s:"), f"not a signed cookie value: {raw!r}")
        return sd.unsign_any(raw[2:], [s.encode() for s in (secrets or [server.DEMO_SECRET])])

    def stored(self, demo: server.SessionHTTPServer, session_id: str) -> dict[str, Any]:
        """The stored session with this id, as JSON data."""
        text = self.store_of(demo).sessions.get(session_id)
        self.assertIsNotNone(text, f"the store has no session {session_id!r}")
        return json.loads(text)

    def expires_minus_date(self, response: Response) -> timedelta:
        """How far the cookie's Expires lies after the response's Date."""
        expires = parsedate_to_datetime(response.cookie_attributes()["Expires"])
        return expires - parsedate_to_datetime(response.headers["Date"])


class TestServerRoutes(TestServerDemoCase):
    """The routes of ROUTES.md, with the demo's default flags."""

    def test_counts_views_from_a_first_visit(self):
        """/ welcomes a first visit, then counts: 'Number of views: 2', 3, ..."""
        demo = self.start_demo(as_shipped=True)
        browser = self.browser(demo)
        first = browser.get("/")
        self.assertEqual((first.status, first.body), (200, FIRST_VISIT))
        session_id = self.session_id_in(self.assert_sets_cookie(first))
        for views in (2, 3, 4):
            with self.subTest(views=views):
                response = browser.get("/")
                self.assertEqual((response.status, response.body), (200, f"Number of views: {views}"))
        self.assertEqual(self.stored(demo, session_id)["views"], 4)
        self.assertEqual(list(self.store_of(demo).sessions), [session_id])

    def test_two_browsers_get_two_sessions(self):
        """Each browser without a cookie gets its own session and its own count."""
        demo = self.start_demo()
        alice, bob = self.browser(demo), self.browser(demo)
        alice.get("/")
        alice.get("/")
        self.assertEqual(bob.get("/").body, FIRST_VISIT)
        self.assertEqual(alice.get("/").body, "Number of views: 3")
        self.assertEqual(bob.get("/").body, "Number of views: 2")
        self.assertNotEqual(alice.jar["connect.sid"], bob.jar["connect.sid"])
        self.assertEqual(self.store_of(demo).length(), 2)

    def test_peek_reports_none_before_the_first_visit(self):
        """/peek answers 'views: none' when the session has no counter."""
        demo = self.start_demo()
        response = self.browser(demo).get("/peek")
        self.assertEqual((response.status, response.body), (200, "views: none"))

    def test_peek_reads_the_counter_without_changing_the_session(self):
        """/peek answers 'views: N', sends no Set-Cookie and leaves the stored session as it was."""
        demo = self.start_demo()
        store = self.store_of(demo)
        browser = self.browser(demo)
        browser.get("/")
        browser.get("/")
        before = dict(store.sessions)
        sets_before = store.calls["set"]
        response = browser.get("/peek")
        self.assertEqual((response.status, response.body), (200, "views: 2"))
        self.assert_no_set_cookie(response)
        self.assertEqual(store.sessions, before)
        self.assertEqual(store.calls["set"], sets_before, "peek must not save the session")
        self.assertEqual(browser.get("/").body, "Number of views: 3")

    def test_login_regenerates_the_session(self):
        """/login?user=NAME gives a new id, drops the old data and the old stored session."""
        demo = self.start_demo()
        browser = self.browser(demo)
        browser.get("/")
        old_id = self.session_id_in(browser.jar["connect.sid"])
        browser.get("/")
        response = browser.get("/login?user=ada")
        self.assertEqual((response.status, response.body), (200, "Logged in as ada"))
        new_id = self.session_id_in(self.assert_sets_cookie(response))
        self.assertNotEqual(new_id, old_id)
        self.assertNotIn(old_id, self.store_of(demo).sessions)
        stored = self.stored(demo, new_id)
        self.assertEqual(stored["user"], "ada")
        self.assertNotIn("views", stored)
        self.assertEqual(browser.get("/whoami").body, "user: ada")
        self.assertEqual(browser.get("/").body, FIRST_VISIT, "the old views are gone")

    def test_login_decodes_the_user_name(self):
        """/login reads the user from the query string, percent-decoded."""
        demo = self.start_demo()
        browser = self.browser(demo)
        self.assertEqual(browser.get("/login?user=Ada%20Lovelace").body, "Logged in as Ada Lovelace")
        self.assertEqual(browser.get("/whoami").body, "user: Ada Lovelace")

    def test_whoami_reports_none_before_login(self):
        """/whoami answers 'user: none' until someone logs in, and changes nothing."""
        demo = self.start_demo()
        browser = self.browser(demo)
        browser.get("/")
        before = dict(self.store_of(demo).sessions)
        response = browser.get("/whoami")
        self.assertEqual((response.status, response.body), (200, "user: none"))
        self.assert_no_set_cookie(response)
        self.assertEqual(self.store_of(demo).sessions, before)

    def test_logout_destroys_the_session(self):
        """/logout destroys the stored session, sends no cookie, and the next / is a first visit."""
        demo = self.start_demo()
        browser = self.browser(demo)
        browser.get("/")
        old_id = self.session_id_in(browser.jar["connect.sid"])
        browser.get("/login?user=ada")
        logged_in_id = self.session_id_in(browser.jar["connect.sid"])
        response = browser.get("/logout")
        self.assertEqual((response.status, response.body), (200, "Logged out"))
        self.assert_no_set_cookie(response)
        self.assertNotIn(logged_in_id, self.store_of(demo).sessions)
        again = browser.get("/")
        self.assertEqual(again.body, FIRST_VISIT)
        self.assertNotIn(self.session_id_in(self.assert_sets_cookie(again)), (old_id, logged_in_id))
        self.assertEqual(browser.get("/whoami").body, "user: none")

    def test_remember_sets_expires_on_the_next_modifying_response(self):
        """/remember?ms=N gives the cookie an expiry; the next response that modifies the session carries it."""
        demo = self.start_demo()
        browser = self.browser(demo)
        first = browser.get("/")
        self.assertNotIn("Expires", first.cookie_attributes(), "a browser-session cookie at first")
        response = browser.get("/remember?ms=60000")
        self.assertEqual((response.status, response.body), (200, "Remembered for 60000 ms"))
        self.assert_no_set_cookie(response)  # only the cookie changed: not a modification
        counted = browser.get("/")
        self.assertEqual(counted.body, "Number of views: 2")
        self.assert_sets_cookie(counted)
        self.assertEqual(self.expires_minus_date(counted), timedelta(seconds=60))
        session_id = self.session_id_in(browser.jar["connect.sid"])
        self.assertEqual(self.stored(demo, session_id)["cookie"]["originalMaxAge"], 60000)

    def test_remember_on_a_first_visit_sets_expires_at_once(self):
        """A new session's cookie carries the remembered expiry on the same response."""
        demo = self.start_demo()
        response = self.browser(demo).get("/remember?ms=5000")
        self.assertEqual(response.body, "Remembered for 5000 ms")
        self.assert_sets_cookie(response)
        self.assertEqual(self.expires_minus_date(response), timedelta(seconds=5))

    def test_remember_rejects_a_bad_ms_with_400(self):
        """/remember answers 400 when ms is missing or not a whole number of milliseconds."""
        demo = self.start_demo()
        browser = self.browser(demo)
        for query in ("", "?ms=", "?ms=abc", "?ms=ten", "?ms=12abc", "?ms=nan", "?ms=inf",
                      "?ms=1e400", "?ms=100000000000000000000"):
            with self.subTest(query=query):
                response = browser.get("/remember" + query)
                self.assertEqual(response.status, 400, response.body)

    def test_remember_prints_ms_as_javascript_would(self):
        """/remember takes any finite number and echoes it as JavaScript prints it (1e3 -> 1000)."""
        demo = self.start_demo()
        browser = self.browser(demo)
        for ms, shown in (("60000", "60000"), ("1e3", "1000"), ("1.5", "1.5"), ("-1", "-1")):
            with self.subTest(ms=ms):
                response = browser.get("/remember?ms=" + ms)
                self.assertEqual((response.status, response.body), (200, f"Remembered for {shown} ms"))

    def test_forget_unsets_the_session_for_the_request(self):
        """/forget answers 'Forgotten' and sends no Set-Cookie, even for a new session."""
        demo = self.start_demo()
        store = self.store_of(demo)
        response = self.browser(demo).get("/forget")
        self.assertEqual((response.status, response.body), (200, "Forgotten"))
        self.assert_no_set_cookie(response)
        self.assertEqual(store.sessions, {})
        self.assertEqual(store.calls["set"], 0)

    def test_answers_404_for_other_paths(self):
        """Any path that is not a route answers 404."""
        demo = self.start_demo()
        browser = self.browser(demo)
        for path in ("/nope", "/favicon.ico", "/login/ada", "/peek/x", "/peekaboo"):
            with self.subTest(path=path):
                self.assertEqual(browser.get(path).status, 404)

    def test_a_404_still_starts_a_session(self):
        """The session layer runs before routing: a 404 for a new visitor carries the new session's cookie."""
        demo = self.start_demo()
        response = self.browser(demo).get("/nope")
        self.assertEqual(response.status, 404)
        self.assertIn(self.session_id_in(self.assert_sets_cookie(response)), self.store_of(demo).sessions)

    def test_paths_starting_with_two_slashes_are_not_routes(self):
        """'//' and '//peek' are not routes in Express: 404 (http.server rewrites them to '/')."""
        demo = self.start_demo()
        browser = self.browser(demo)
        for path in ("//", "//peek"):
            with self.subTest(path=path):
                self.assertEqual(browser.get(path).status, 404)

    def test_routes_ignore_a_trailing_slash_and_letter_case(self):
        """Express's default router is neither strict nor case-sensitive: '/peek/' and '/PEEK' are /peek."""
        demo = self.start_demo()
        browser = self.browser(demo)
        for path, body in (("/peek/", "views: none"), ("/PEEK", "views: none"),
                           ("/WhoAmI/", "user: none")):
            with self.subTest(path=path):
                response = browser.get(path)
                self.assertEqual((response.status, response.body), (200, body))

    def test_routes_ignore_the_query_string(self):
        """The route is chosen by the path alone: '/?x=1' is the counter."""
        demo = self.start_demo()
        browser = self.browser(demo)
        self.assertEqual(browser.get("/?x=1").body, FIRST_VISIT)
        self.assertEqual(browser.get("/?y=2").body, "Number of views: 2")


class TestServerFlags(TestServerDemoCase):
    """Each flag of ROUTES.md, observed through the demo server."""

    def test_parse_args_defaults_are_those_of_routes_md(self):
        """With no flags every option has the default ROUTES.md gives it."""
        args = server.parse_args([])
        expected = {
            "port": 3000, "secret": None, "name": "connect.sid", "resave": False,
            "save_uninitialized": True, "rolling": False, "max_age": None, "secure": "false",
            "same_site": None, "proxy": None, "unset": "keep", "http_only": True, "path": "/",
            "domain": None, "trace": False,
        }
        for key, value in expected.items():
            with self.subTest(option=key):
                self.assertEqual(getattr(args, key), value)

    def test_invalid_flag_values_exit_with_status_2(self):
        """An invalid flag value is an argparse error: exit status 2."""
        cases = [
            ["--port", "x"], ["--max-age", "soon"], ["--max-age", "1.5"],
            ["--secure", "yes"], ["--secure", "TRUE"], ["--same-site", "lox"],
            ["--same-site", "true"], ["--proxy", "1"], ["--unset", "forget"],
            ["--no-rolling"], ["--bogus"], ["--secret"],
        ]
        for argv in cases:
            with self.subTest(argv=argv):
                with contextlib.redirect_stderr(io.StringIO()) as err:
                    with self.assertRaises(SystemExit) as caught:
                        server.parse_args(argv)
                self.assertEqual(caught.exception.code, 2)
                self.assertIn("error:", err.getvalue())

    def test_default_secret_is_the_demo_secret(self):
        """Without --secret the cookie is signed with 'keyboard cat'."""
        demo = self.start_demo(as_shipped=True)
        pair = self.assert_sets_cookie(self.browser(demo).get("/"))
        self.assertIsNotNone(self.session_id_in(pair, ["keyboard cat"]))
        self.assertIsNone(self.session_id_in(pair, ["another secret"]))

    def test_secret_signs_with_the_first_and_verifies_with_every_one(self):
        """--secret is repeatable: the first signs; a cookie signed by a later one is still read."""
        demo = self.start_demo("--secret", "new secret", "--secret", "old secret")
        browser = self.browser(demo)
        pair = self.assert_sets_cookie(browser.get("/"))
        session_id = self.session_id_in(pair, ["new secret"])
        self.assertIsNotNone(session_id, "signed with the first secret")
        self.assertIsNone(self.session_id_in(pair, ["old secret"]))
        signed_by_old = "connect.sid=" + sd.encode_uri_component("s:" + sd.sign(session_id, "old secret"))
        response = browser.get("/", cookie_lines=[signed_by_old])
        self.assertEqual(response.body, "Number of views: 2")

    def test_rolling_re_signs_an_old_cookie_with_the_first_secret(self):
        """When the cookie is re-sent, it is signed with the first secret, whichever secret verified it."""
        demo = self.start_demo("--secret", "new secret", "--secret", "old secret", "--rolling")
        browser = self.browser(demo)
        session_id = self.session_id_in(browser.get("/").session_cookie(), ["new secret"])
        signed_by_old = "connect.sid=" + sd.encode_uri_component("s:" + sd.sign(session_id, "old secret"))
        response = browser.get("/peek", cookie_lines=[signed_by_old])
        self.assertEqual(response.body, "views: 1")
        self.assertEqual(self.session_id_in(self.assert_sets_cookie(response), ["new secret"]), session_id)

    def test_cookie_signed_by_a_retired_secret_is_not_read(self):
        """A cookie signed by a secret no longer listed gives a new session."""
        demo = self.start_demo("--secret", "new secret")
        browser = self.browser(demo)
        session_id = self.session_id_in(browser.get("/").session_cookie(), ["new secret"])
        signed_by_old = "connect.sid=" + sd.encode_uri_component("s:" + sd.sign(session_id, "old secret"))
        response = browser.get("/", cookie_lines=[signed_by_old])
        self.assertEqual(response.body, FIRST_VISIT)
        self.assertNotEqual(self.session_id_in(response.session_cookie(), ["new secret"]), session_id)

    def test_name_sets_the_cookie_name(self):
        """--name NAME names the cookie; a cookie under the default name is then ignored."""
        demo = self.start_demo("--name", "demo.sid")
        browser = self.browser(demo)
        first = browser.get("/")
        self.assert_sets_cookie(first, "demo.sid")
        self.assert_no_set_cookie(first, "connect.sid")
        self.assertEqual(browser.get("/").body, "Number of views: 2")
        renamed = "connect.sid=" + browser.jar["demo.sid"]
        self.assertEqual(browser.get("/", cookie_lines=[renamed]).body, FIRST_VISIT)

    def test_resave_saves_an_unmodified_session(self):
        """--resave writes an unmodified loaded session back (set); --no-resave only touches it."""
        cases = [([], "touch"), (["--no-resave"], "touch"), (["--resave"], "set")]
        for flags, expected in cases:
            with self.subTest(flags=flags):
                demo = self.start_demo(*flags)
                store = self.store_of(demo)
                browser = self.browser(demo)
                browser.get("/")
                store.log.clear()
                response = browser.get("/peek")
                self.assertEqual(response.body, "views: 1")
                self.assertEqual([name for name, _ in store.log], ["get", expected])

    def test_save_uninitialized_stores_and_cookies_an_untouched_new_session(self):
        """--save-uninitialized (the default) stores a new, unmodified session and sends its cookie."""
        for flags in ([], ["--save-uninitialized"]):
            with self.subTest(flags=flags):
                demo = self.start_demo(*flags)
                response = self.browser(demo).get("/peek")
                self.assertEqual(response.body, "views: none")
                session_id = self.session_id_in(self.assert_sets_cookie(response))
                self.assertIn(session_id, self.store_of(demo).sessions)

    def test_no_save_uninitialized_waits_for_a_modification(self):
        """--no-save-uninitialized: no cookie and no store write until the session is modified."""
        demo = self.start_demo("--no-save-uninitialized")
        store = self.store_of(demo)
        browser = self.browser(demo)
        untouched = browser.get("/peek")
        self.assertEqual(untouched.body, "views: none")
        self.assert_no_set_cookie(untouched)
        self.assertEqual((store.sessions, store.calls["set"]), ({}, 0))
        counted = browser.get("/")
        self.assertEqual(counted.body, FIRST_VISIT)
        self.assertIn(self.session_id_in(self.assert_sets_cookie(counted)), store.sessions)

    def test_rolling_resends_the_cookie_on_every_response(self):
        """--rolling sends Set-Cookie even for an unmodified session; without it, no."""
        for flags, resent in (([], False), (["--rolling"], True)):
            with self.subTest(flags=flags):
                demo = self.start_demo(*flags)
                browser = self.browser(demo)
                browser.get("/")
                response = browser.get("/peek")
                self.assertEqual(response.session_cookie() is not None, resent, response.set_cookies)

    def test_rolling_moves_the_expiry_forward(self):
        """--rolling with --max-age: each response's Expires is its Date plus max-age."""
        demo = self.start_demo("--rolling", "--max-age", "60000")
        browser = self.browser(demo)
        first = browser.get("/")
        self.clock.advance(seconds=30)
        second = browser.get("/peek")
        self.assertEqual(self.expires_minus_date(second), timedelta(seconds=60))
        gap = (parsedate_to_datetime(second.cookie_attributes()["Expires"])
               - parsedate_to_datetime(first.cookie_attributes()["Expires"]))
        self.assertEqual(gap, timedelta(seconds=30))

    def test_max_age_gives_the_cookie_an_expiry(self):
        """--max-age MS sets Expires to Date + MS; without it the cookie has no Expires."""
        for flags, lifetime in (([], None), (["--max-age", "60000"], timedelta(seconds=60)),
                                (["--max-age", "3000000000"], timedelta(milliseconds=3000000000))):
            with self.subTest(flags=flags):
                demo = self.start_demo(*flags)
                response = self.browser(demo).get("/")
                attributes = response.cookie_attributes()
                if lifetime is None:
                    self.assertNotIn("Expires", attributes)
                else:
                    self.assertEqual(self.expires_minus_date(response), lifetime)

    def test_max_age_session_expires_in_the_store(self):
        """With --max-age, once the time has passed the old cookie gives a new session."""
        demo = self.start_demo("--max-age", "60000")
        browser = self.browser(demo)
        browser.get("/")
        old = browser.jar["connect.sid"]
        self.clock.advance(seconds=61)
        response = browser.get("/")
        self.assertEqual(response.body, FIRST_VISIT)
        self.assertNotEqual(browser.jar["connect.sid"], old)

    def test_secure_over_plain_http(self):
        """--secure: false and auto send the cookie without Secure over HTTP; true sends none but still saves."""
        for value, sent in (("false", True), ("auto", True), ("true", False)):
            with self.subTest(secure=value):
                demo = self.start_demo("--secure", value)
                response = self.browser(demo).get("/")
                self.assertEqual(response.body, FIRST_VISIT)
                if sent:
                    self.assertNotIn("Secure", response.cookie_attributes())
                else:
                    self.assert_no_set_cookie(response)
                self.assertEqual(self.store_of(demo).length(), 1, "the session is saved either way")

    def test_secure_and_proxy_with_x_forwarded_proto(self):
        """--proxy true trusts X-Forwarded-Proto's first value; false or unset does not."""
        cases = [
            # flags, X-Forwarded-Proto, expected: 'secure' | 'plain' | None (no cookie)
            (["--secure", "true", "--proxy", "true"], "https", "secure"),
            (["--secure", "true", "--proxy", "true"], "https, http", "secure"),
            (["--secure", "true", "--proxy", "true"], "http, https", None),
            (["--secure", "true", "--proxy", "true"], "http", None),
            (["--secure", "true", "--proxy", "true"], None, None),
            (["--secure", "true", "--proxy", "false"], "https", None),
            (["--secure", "true"], "https", None),
            (["--secure", "auto", "--proxy", "true"], "https", "secure"),
            (["--secure", "auto", "--proxy", "true"], "http", "plain"),
            (["--secure", "auto", "--proxy", "false"], "https", "plain"),
            (["--secure", "auto"], "https", "plain"),
            (["--secure", "false", "--proxy", "true"], "https", "plain"),
        ]
        for flags, proto, expected in cases:
            with self.subTest(flags=flags, proto=proto):
                demo = self.start_demo(*flags)
                headers = {"X-Forwarded-Proto": proto} if proto else None
                response = self.browser(demo).get("/", headers=headers)
                self.assertEqual(response.status, 200)
                if expected is None:
                    self.assert_no_set_cookie(response)
                else:
                    self.assertEqual("Secure" in response.cookie_attributes(), expected == "secure")

    def test_same_site_sets_the_attribute(self):
        """--same-site lax|strict|none|auto writes SameSite; auto is None behind HTTPS, Lax otherwise."""
        cases = [
            ([], None, None),
            (["--same-site", "lax"], None, "Lax"),
            (["--same-site", "strict"], None, "Strict"),
            (["--same-site", "none"], None, "None"),
            (["--same-site", "auto"], None, "Lax"),
            (["--same-site", "auto", "--proxy", "true"], "https", "None"),
            (["--same-site", "auto", "--proxy", "true"], "http", "Lax"),
            (["--same-site", "auto", "--proxy", "false"], "https", "Lax"),
        ]
        for flags, proto, expected in cases:
            with self.subTest(flags=flags, proto=proto):
                demo = self.start_demo(*flags)
                headers = {"X-Forwarded-Proto": proto} if proto else None
                attributes = self.browser(demo).get("/", headers=headers).cookie_attributes()
                self.assertEqual(attributes.get("SameSite"), expected)

    def test_http_only_sets_the_attribute(self):
        """HttpOnly is on by default and with --http-only; --no-http-only leaves it out."""
        for flags, expected in (([], True), (["--http-only"], True), (["--no-http-only"], False)):
            with self.subTest(flags=flags):
                demo = self.start_demo(*flags)
                attributes = self.browser(demo).get("/").cookie_attributes()
                self.assertEqual("HttpOnly" in attributes, expected)

    def test_path_sets_the_attribute_and_scopes_the_session(self):
        """--path P writes Path=P; requests outside P get no session (a 500, as in Express) and no cookie."""
        demo = self.start_demo("--path", "/peek")
        store = self.store_of(demo)
        browser = self.browser(demo)
        outside = browser.get("/")
        self.assertEqual((outside.status, outside.body),
                         (500, "No session: this path is outside the cookie path"))
        self.assert_no_set_cookie(outside)
        self.assertEqual((store.sessions, sum(store.calls.values())), ({}, 0))
        inside = browser.get("/peek")
        self.assertEqual(inside.body, "views: none")
        self.assertEqual(inside.cookie_attributes()["Path"], "/peek")
        self.assertEqual(store.length(), 1)

    def test_default_path_is_root(self):
        """Without --path the cookie has Path=/."""
        demo = self.start_demo()
        self.assertEqual(self.browser(demo).get("/").cookie_attributes()["Path"], "/")

    def test_domain_sets_the_attribute(self):
        """--domain D writes Domain=D; without it there is no Domain."""
        for flags, expected in (([], None), (["--domain", "example.com"], "example.com")):
            with self.subTest(flags=flags):
                demo = self.start_demo(*flags)
                attributes = self.browser(demo).get("/").cookie_attributes()
                self.assertEqual(attributes.get("Domain"), expected)

    def test_unset_keep_leaves_the_stored_session(self):
        """--unset keep (the default): /forget leaves the stored session, which the next request finds."""
        for flags in ([], ["--unset", "keep"]):
            with self.subTest(flags=flags):
                demo = self.start_demo(*flags)
                browser = self.browser(demo)
                browser.get("/")
                session_id = self.session_id_in(browser.jar["connect.sid"])
                before = dict(self.store_of(demo).sessions)
                response = browser.get("/forget")
                self.assertEqual(response.body, "Forgotten")
                self.assert_no_set_cookie(response)
                self.assertEqual(self.store_of(demo).sessions, before)
                self.assertEqual(self.store_of(demo).calls["destroy"], 0)
                self.assertEqual(browser.get("/").body, "Number of views: 2")
                self.assertIn(session_id, self.store_of(demo).sessions)

    def test_unset_destroy_removes_the_stored_session(self):
        """--unset destroy: /forget destroys the stored session; the next / is a first visit."""
        demo = self.start_demo("--unset", "destroy")
        browser = self.browser(demo)
        browser.get("/")
        session_id = self.session_id_in(browser.jar["connect.sid"])
        response = browser.get("/forget")
        self.assertEqual(response.body, "Forgotten")
        self.assert_no_set_cookie(response)
        self.assertNotIn(session_id, self.store_of(demo).sessions)
        self.assertEqual(browser.get("/").body, FIRST_VISIT)

    def test_trace_logs_each_decision_at_debug(self):
        """The session_demo logger reports the set-cookie and store decisions of each request."""
        demo = self.start_demo()
        browser = self.browser(demo)
        with self.assertLogs("session_demo", logging.DEBUG) as logs:
            browser.get("/")
        self.assertIn("set-cookie: yes (new session, save_uninitialized)", "\n".join(logs.output))
        self.assertIn("save: yes (new session)", "\n".join(logs.output))
        with self.assertLogs("session_demo", logging.DEBUG) as logs:
            browser.get("/peek")
        text = "\n".join(logs.output)
        self.assertIn("set-cookie: no", text)
        self.assertIn("touch: yes", text)


class TestServerHead(TestServerDemoCase):
    """HEAD on the demo's routes, as Express answers it: the GET route runs, no body is sent."""

    def test_head_runs_the_route_and_sends_headers_without_a_body(self):
        """HEAD / counts a view (Express runs the GET handler), sets the cookie, and sends no body."""
        demo = self.start_demo()
        connection = http.client.HTTPConnection("127.0.0.1", demo.server_address[1], timeout=10)
        self.addCleanup(connection.close)
        connection.request("HEAD", "/")
        answer = connection.getresponse()
        self.assertEqual(answer.read(), b"")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.getheader("Content-Length"), str(len("Welcome! This is your first visit.")))
        cookie = answer.getheader("Set-Cookie").split(";", 1)[0]
        self.assertEqual(self.browser(demo).get("/peek", cookie_lines=[cookie]).body, "views: 1")

class TestServerBeyondExpressFlags(TestServerDemoCase):
    """server.py's --store and --concurrency flags (beyond express-session)."""

    def test_store_bounded_serves_the_counter_from_a_bounded_store(self):
        """--store bounded keeps the sessions in a BoundedMemoryStore."""
        demo = self.start_demo("--store", "bounded", as_shipped=True)
        self.assertIsInstance(self.store_of(demo), BoundedMemoryStore)
        browser = self.browser(demo)
        self.assertEqual(browser.get().body, "Welcome! This is your first visit.")
        self.assertEqual(browser.get().body, "Number of views: 2")
        self.assertEqual(self.store_of(demo).stats()["live"], 1)

    def test_store_sqlite_survives_a_restart(self):
        """--store sqlite:PATH: a second server on the same file knows the first one's visitor."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "sessions.db")
        first = self.start_demo("--store", f"sqlite:{path}", as_shipped=True)
        browser = self.browser(first)
        browser.get()
        self.assertEqual(browser.get().body, "Number of views: 2")
        first.shutdown()  # the first server stops; its cleanup closes the socket
        self.store_of(first).close()
        second = self.start_demo("--store", f"sqlite:{path}", as_shipped=True)
        self.addCleanup(self.store_of(second).close)
        browser.port = second.server_address[1]
        self.assertEqual(browser.get().body, "Number of views: 3")

    def test_concurrency_lock_keeps_a_shared_counter_exact(self):
        """--concurrency lock: 4 clients x 25 views on one cookie leave the counter at exactly 101."""
        demo = self.start_demo("--concurrency", "lock", as_shipped=True)
        browser = self.browser(demo)
        browser.get()
        cookie = browser.cookie_header()
        statuses: list[int] = []

        def client() -> None:
            for _ in range(25):
                statuses.append(TestServerBrowser(browser.port).get(cookie_lines=[cookie]).status)

        workers = [threading.Thread(target=client) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        self.assertEqual(statuses, [200] * 100)
        self.assertEqual(browser.get("/peek").body, "views: 101")

    def test_concurrency_merge_with_the_memory_store_is_refused_at_start(self):
        """--concurrency merge needs versions: with express's MemoryStore main() exits with status 2."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = server.main(["--concurrency", "merge", "--secret", "s", "--port", "0"])
        self.assertEqual(status, 2)
        self.assertIn("versions", err.getvalue())

    def test_concurrency_merge_with_a_bounded_store_serves_the_counter(self):
        """--concurrency merge --store bounded: the counter works as usual."""
        demo = self.start_demo("--concurrency", "merge", "--store", "bounded", as_shipped=True)
        browser = self.browser(demo)
        browser.get()
        self.assertEqual(browser.get().body, "Number of views: 2")

    def test_a_bad_store_value_is_a_usage_error(self):
        """--store with anything but memory, bounded or sqlite:PATH exits with status 2."""
        for value in ("redis", "sqlite:", "SQLITE:x.db"):
            with self.subTest(value=value), contextlib.redirect_stderr(io.StringIO()):
                with self.assertRaises(SystemExit) as raised:
                    server.parse_args(["--store", value])
                self.assertEqual(raised.exception.code, 2)


class TestServerMain(TestServerDemoCase):
    """server.main(): flags, warnings, the URL, --trace wiring, Ctrl+C."""

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        """Run server.main(argv + port 0) with serve_forever raising KeyboardInterrupt (Ctrl+C)."""
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(server.SessionHTTPServer, "serve_forever",
                               side_effect=KeyboardInterrupt) as serve, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = server.main([*argv, "--port", "0"])
        self.serve_calls = serve.call_count
        return status, out.getvalue(), err.getvalue()

    def keep_logging_as_it_is(self) -> None:
        """Undo in cleanup whatever main() --trace does to the logging configuration."""
        root = logging.getLogger()
        demo_logger = logging.getLogger("session_demo")
        saved = (root.level, list(root.handlers), demo_logger.level)

        def restore() -> None:
            for handler in root.handlers:
                if handler not in saved[1]:
                    handler.close()
            root.setLevel(saved[0])
            root.handlers[:] = saved[1]
            demo_logger.setLevel(saved[2])

        self.addCleanup(restore)

    def test_main_prints_the_url_and_returns_0_on_ctrl_c(self):
        """main() prints the URL it serves on, and Ctrl+C ends it cleanly with status 0."""
        status, out, err = self.run_main("--secret", "s3")
        self.assertEqual(status, 0)
        self.assertEqual(self.serve_calls, 1)
        match = re.fullmatch(r"Serving the view counter on http://127\.0\.0\.1:(\d+)/ \(Ctrl\+C to stop\)\n", out)
        self.assertIsNotNone(match, out)
        self.assertNotEqual(int(match.group(1)), 0, "the real port, not 0")
        self.assertIn("stopped", err)

    def test_main_closes_the_socket_on_ctrl_c(self):
        """After Ctrl+C the listening socket is closed."""
        with mock.patch.object(server.SessionHTTPServer, "server_close", autospec=True,
                               side_effect=server.SessionHTTPServer.server_close) as close:
            status, _, _ = self.run_main("--secret", "s3")
        self.assertEqual(status, 0)
        self.assertEqual(close.call_count, 1)

    def test_main_warns_once_about_the_demo_secret(self):
        """Without --secret, main() prints one warning line on stderr about the demo secret."""
        status, out, err = self.run_main()
        self.assertEqual(status, 0)
        warnings_ = [line for line in err.splitlines() if line.startswith("warning:")]
        self.assertEqual(len(warnings_), 1, err)
        self.assertIn(repr(server.DEMO_SECRET), warnings_[0])
        self.assertIn("--secret", warnings_[0])
        self.assertNotIn("warning", out)

    def test_main_does_not_warn_with_a_secret(self):
        """With --secret there is no demo-secret warning."""
        status, _, err = self.run_main("--secret", "my own")
        self.assertEqual(status, 0)
        self.assertNotIn("warning", err)

    def test_main_returns_2_when_the_middleware_rejects_a_flag(self):
        """A flag value the session layer refuses (bad --domain, --path, --name) is an error, status 2."""
        for argv in (["--domain", "bad_domain!"], ["--path", "/a;b"], ["--name", "bad name"]):
            with self.subTest(argv=argv):
                status, out, err = self.run_main("--secret", "s3", *argv)
                self.assertEqual(status, 2)
                self.assertIn("error:", err)
                self.assertEqual(self.serve_calls, 0)
                self.assertNotIn("Serving", out)

    def test_main_exits_2_for_an_invalid_flag(self):
        """main() lets argparse reject an invalid value: SystemExit with status 2."""
        with self.assertRaises(SystemExit) as caught:
            self.run_main("--secure", "maybe")
        self.assertEqual(caught.exception.code, 2)

    def test_main_trace_sets_the_logger_to_debug(self):
        """--trace sets the 'session_demo' logger to DEBUG."""
        self.keep_logging_as_it_is()
        logging.getLogger("session_demo").setLevel(logging.NOTSET)
        self.run_main("--secret", "s3", "--trace")
        self.assertEqual(logging.getLogger("session_demo").level, logging.DEBUG)

    def test_main_without_trace_leaves_logging_alone(self):
        """Without --trace, main() does not change the logger's level or the root handlers."""
        self.keep_logging_as_it_is()
        logging.getLogger("session_demo").setLevel(logging.NOTSET)
        handlers = list(logging.getLogger().handlers)
        self.run_main("--secret", "s3")
        self.assertEqual(logging.getLogger("session_demo").level, logging.NOTSET)
        self.assertEqual(logging.getLogger().handlers, handlers)

    def test_main_trace_prints_decisions_on_stderr(self):
        """After main() --trace, a request's session decisions are printed on stderr."""
        self.keep_logging_as_it_is()
        logging.getLogger().handlers[:] = []  # let basicConfig install its stderr handler
        self.run_main("--secret", "s3", "--trace")
        # The handler main() installed writes to the stderr it saw (captured above);
        # point it at a fresh buffer and serve one request.
        traced = io.StringIO()
        installed = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
        self.assertEqual(len(installed), 1)
        installed[0].setStream(traced)
        demo = self.start_demo("--secret", "s3")
        self.browser(demo).get("/")
        self.assertIn("set-cookie: yes (new session, save_uninitialized)", traced.getvalue())
        self.assertIn("save: yes (new session)", traced.getvalue())


# ==== Bad cookies ===========================================================
#
# Upstream: "when sid not properly signed" (should generate new session, should not
# attempt fetch from store) and "when sid not in store" (should create a new session,
# should have a new sid). Every bad cookie must give a NEW session, never a 500.


class TestBadCookies(TestServerDemoCase):
    """A bad, forged or unknown session cookie gives a new session (and no 500)."""

    def setUp(self) -> None:
        super().setUp()
        self.demo = self.start_demo()
        self.store = self.store_of(self.demo)
        # A real session, with views = 1, that bad cookies must not reach nor harm.
        owner = self.browser(self.demo)
        owner.get("/")
        self.good_value = owner.jar["connect.sid"]
        self.good = "connect.sid=" + self.good_value
        self.good_id = self.session_id_in(self.good)
        self.good_stored = self.store.sessions[self.good_id]

    def signed(self, session_id: str, secret: str = server.DEMO_SECRET) -> str:
        """A correctly signed, encoded connect.sid pair for ``session_id``."""
        return "connect.sid=" + sd.encode_uri_component("s:" + sd.sign(session_id, secret))

    def tampered_signature(self) -> str:
        raw = sd.decode_uri_component(self.good_value)
        last = "A" if raw[-1] != "A" else "B"
        return "connect.sid=" + sd.encode_uri_component(raw[:-1] + last)

    def tampered_id(self) -> str:
        raw = sd.decode_uri_component(self.good_value)
        first = "A" if raw[2] != "A" else "B"
        return "connect.sid=" + sd.encode_uri_component("s:" + first + raw[3:])

    def assert_new_session(self, response: Response) -> str:
        """The response is a first visit with a new, stored session id; the real session is untouched."""
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.body, FIRST_VISIT)
        new_id = self.session_id_in(self.assert_sets_cookie(response))
        self.assertIsNotNone(new_id)
        self.assertNotEqual(new_id, self.good_id)
        self.assertIn(new_id, self.store.sessions)
        self.assertEqual(self.store.sessions[self.good_id], self.good_stored)
        return new_id

    def bad_cookie_cases(self) -> list[tuple[str, list[str | bytes]]]:
        """(description, Cookie header lines) for cookies that are not a validly signed session id."""
        garbage_rng = random.Random(20270115)
        printable = "".join(chr(c) for c in range(0x20, 0x7F))
        garbage = "".join(garbage_rng.choice(printable) for _ in range(8192))
        high = bytes(garbage_rng.randrange(0x80, 0x100) for _ in range(8192))
        return [
            ("tampered signature", [self.tampered_signature()]),
            ("tampered id, original signature", [self.tampered_id()]),
            ("signed with another secret", [self.signed(self.good_id, "not the secret")]),
            ("unsigned value", ["connect.sid=" + self.good_id]),
            ("signed value without s: prefix",
             ["connect.sid=" + sd.encode_uri_component(sd.sign(self.good_id, server.DEMO_SECRET))]),
            ("s: with nothing after it", ["connect.sid=s%3A"]),
            ("raw s: with nothing after it", ["connect.sid=s:"]),
            ("s: and the id, no signature", ["connect.sid=s%3A" + self.good_id]),
            ("s: and the id and a dot, empty signature", ["connect.sid=s%3A" + self.good_id + "."]),
            ("signed empty id", [self.signed("")]),
            ("empty value", ["connect.sid="]),
            ("empty quoted value", ['connect.sid=""']),
            ("duplicate names, bad first", [self.tampered_signature() + "; " + self.good]),
            ("duplicate names, empty first", ["connect.sid=; " + self.good]),
            ("malformed escape after a good value", [self.good + "%zz"]),
            ("lone percent", ["connect.sid=%"]),
            ("truncated escape", ["connect.sid=s%3A%E0%A4%A"]),
            ("escape that is not UTF-8", ["connect.sid=s%3A%FF" + self.good_value[4:]]),
            ("8 KB of printable garbage", [garbage]),
            ("8 KB of garbage as the value", ["connect.sid=" + garbage.replace(";", "")]),
            ("8 KB of non-ASCII bytes", [b"connect.sid=" + high]),
            ("non-ASCII latin-1 value", ["connect.sid=s:\xe9t\xe9.\xe9"]),
            ("non-ASCII after a good value", [self.good + "\xe9"]),
            ("non-ASCII UTF-8 bytes", [b"connect.sid=s:" + "\u00e9\u4e2d".encode() + b".sig"]),
            ("several lines, bad one first", [self.tampered_signature(), self.good]),
            ("cookie name in another case", ["Connect.sid=" + self.good_value]),
        ]

    def test_bad_cookies_give_a_new_session_without_asking_the_store(self):
        """A cookie that is not a validly signed id gives a new session, with no store.get."""
        for description, lines in self.bad_cookie_cases():
            with self.subTest(description):
                gets = self.store.calls["get"]
                response = self.browser(self.demo).get("/", cookie_lines=lines)
                self.assert_new_session(response)
                self.assertEqual(self.store.calls["get"], gets, "the store must not be asked")

    def test_valid_signature_for_an_id_never_issued_gives_a_new_id(self):
        """A well-signed id the store does not hold: one store.get, then a new session with a new id."""
        gets = self.store.calls["get"]
        response = self.browser(self.demo).get("/", cookie_lines=[self.signed("never-issued-id")])
        new_id = self.assert_new_session(response)
        self.assertNotEqual(new_id, "never-issued-id")
        self.assertNotIn("never-issued-id", self.store.sessions)
        self.assertEqual(self.store.calls["get"], gets + 1)

    def test_duplicate_names_first_one_wins(self):
        """With two cookies of the session's name, only the first counts (a bad second one is ignored)."""
        response = self.browser(self.demo).get("/", cookie_lines=[self.good + "; " + self.tampered_signature()])
        self.assertEqual(response.body, "Number of views: 2")

    def test_several_cookie_lines_are_joined(self):
        """Several Cookie header lines are read as one, joined with '; ' (as Node does)."""
        for lines in (["a=1", self.good], ["a=1", "b=2; " + self.good], ["a=1; b", self.good]):
            with self.subTest(lines=lines):
                response = self.browser(self.demo).get("/peek", cookie_lines=lines)
                self.assertEqual(response.body, "views: 1")
                self.assert_no_set_cookie(response)

    def test_good_cookie_is_found_among_noise(self):
        """Other cookies, spaces, quotes and a raw 's:' around a good cookie do not hide it."""
        raw = sd.decode_uri_component(self.good_value)
        cases = [
            "a=1; " + self.good + "; b=2",
            "junk;  " + self.good + "  ; x",
            'connect.sid="' + self.good_value + '"',
            "connect.sid=" + raw.replace("+", "%2B"),  # raw colon and slashes: decoded value is the same
            "\u00e9=\u00e9; " + self.good,
        ]
        for header in cases:
            with self.subTest(header=header):
                response = self.browser(self.demo).get("/peek", cookie_lines=[header])
                self.assertEqual((response.status, response.body), (200, "views: 1"))


# ==== Store failures (spec §9.1 item 4) =====================================
#
# Upstream: "should pass session fetch error", "should treat ENOENT session fetch error
# as not found", "when session without cookie property in store" / "should pass error
# from inflate", "should pass session save error", "should pass session touch error",
# "should pass session destroy error".


class TestStoreFailures(TestServerDemoCase):
    """A store that fails: a 500 when loading; at the end, a logged error and a 500 instead of the handler's answer."""

    def start_failing_demo(self, *flags: str) -> tuple[server.SessionHTTPServer, TestServerFailingStore]:
        clock = FrozenClock()
        store = TestServerFailingStore(clock=clock)
        return self.start_demo(*flags, store=store, clock=clock), store

    def with_a_session(self, demo: server.SessionHTTPServer) -> tuple[TestServerBrowser, str]:
        """A browser holding a stored session with views = 1, and that session's id."""
        browser = self.browser(demo)
        browser.get("/")
        return browser, self.session_id_in(browser.jar["connect.sid"])

    def assert_complete(self, response: Response, body: str) -> None:
        """The response is a 200 with exactly this body (Content-Length matches)."""
        self.assertEqual((response.status, response.body), (200, body))
        self.assertEqual(int(response.headers["Content-Length"]), len(response.raw_body))

    def test_get_error_gives_500_without_the_error_text(self):
        """A store.get error: 500, a body that does not echo the error, the log has it, nothing written."""
        demo, store = self.start_failing_demo()
        browser, session_id = self.with_a_session(demo)
        before = dict(store.sessions)
        store.calls.clear()
        store.fail["get"] = RuntimeError("db password hunter2 rejected")
        with self.assertLogs("session_demo", logging.ERROR) as logs:
            response = browser.get("/")
        self.assertEqual(response.status, 500)
        self.assertIn(LOAD_FAILED, response.body)
        self.assertNotIn("hunter2", response.body)
        self.assertNotIn("RuntimeError", response.body)
        self.assert_no_set_cookie(response)
        self.assertIn("hunter2", "\n".join(logs.output))
        self.assertEqual(store.calls, Counter({"get": 1}))
        self.assertEqual(store.sessions, before)

    def test_get_errors_of_every_kind_give_500(self):
        """Any exception from store.get other than 'not found' gives a 500, never a new session."""
        errors = [RuntimeError("boom"), ValueError("bad"), KeyError("k"), PermissionError("denied"),
                  OSError(errno.EIO, "I/O error"), ConnectionRefusedError("refused"), TimeoutError()]
        demo, store = self.start_failing_demo()
        browser, _ = self.with_a_session(demo)
        for error in errors:
            with self.subTest(error=error):
                store.fail["get"] = error
                store.calls.clear()
                with self.assertLogs("session_demo", logging.ERROR):
                    response = browser.get("/")
                    self.assertEqual(response.status, 500, response.body)
                self.assert_no_set_cookie(response)
                self.assertEqual(store.calls["set"], 0)

    def test_file_not_found_from_get_means_not_found(self):
        """FileNotFoundError (express's ENOENT) from store.get means 'no such session': a new one, 200."""
        for error in (FileNotFoundError("gone"), OSError(errno.ENOENT, "No such file")):
            with self.subTest(error=error):
                demo, store = self.start_failing_demo()
                browser, session_id = self.with_a_session(demo)
                store.fail["get"] = error
                response = browser.get("/")
                self.assertEqual((response.status, response.body), (200, FIRST_VISIT))
                new_id = self.session_id_in(self.assert_sets_cookie(response))
                self.assertNotEqual(new_id, session_id)
                self.assertIn(new_id, store.sessions)

    def test_stored_session_without_cookie_gives_500(self):
        """A stored session without 'cookie' cannot be loaded: 500 (upstream: 'should pass error from inflate')."""
        demo, store = self.start_failing_demo()
        browser, _ = self.with_a_session(demo)
        store.replies["get"] = {"views": 1}
        store.calls.clear()
        with self.assertLogs("session_demo", logging.ERROR):
            response = browser.get("/")
        self.assertEqual(response.status, 500)
        self.assertIn(LOAD_FAILED, response.body)
        self.assertEqual(store.calls, Counter({"get": 1}))

    def test_stored_session_that_is_not_a_dict_gives_500(self):
        """store.get returning a truthy value that is not a session object gives a 500."""
        demo, store = self.start_failing_demo()
        browser, _ = self.with_a_session(demo)
        for reply in ("a string", ["cookie"], 42, True, ("cookie",), {"cookie": "not an object"}):
            with self.subTest(reply=reply):
                store.replies["get"] = reply
                store.calls.clear()
                with self.assertLogs("session_demo", logging.ERROR):
                    response = browser.get("/")
                    self.assertEqual(response.status, 500, response.body)
                self.assertEqual(store.calls["set"], 0)

    def test_empty_dict_or_list_from_get_gives_500(self):
        """An empty dict or list from store.get is a session without a cookie (truthy in JavaScript): 500."""
        demo, store = self.start_failing_demo()
        browser, _ = self.with_a_session(demo)
        for reply in ({}, []):
            with self.subTest(reply=reply):
                store.replies["get"] = reply
                store.calls.clear()
                with self.assertLogs("session_demo", logging.ERROR):
                    response = browser.get("/")
                    self.assertEqual(response.status, 500, response.body)
                self.assertEqual(store.calls["set"], 0)

    def test_falsy_get_result_means_not_found(self):
        """store.get returning None or a JavaScript-falsy value ('', 0, False) means 'not found': a new session."""
        demo, store = self.start_failing_demo()
        browser, session_id = self.with_a_session(demo)
        for reply in (None, "", 0, False):
            with self.subTest(reply=reply):
                store.replies["get"] = reply
                response = self.browser(demo).get("/", cookie_lines=["connect.sid=" + browser.jar["connect.sid"]])
                self.assertEqual((response.status, response.body), (200, FIRST_VISIT))
                self.assertNotEqual(self.session_id_in(self.assert_sets_cookie(response)), session_id)

    def assert_unsaved(self, response: Response) -> None:
        """The store failed at the end: a 500 that says so, no Set-Cookie, the connection closed."""
        self.assertEqual(response.status, 500)
        self.assertIn("The session could not be saved", response.body)
        self.assert_no_set_cookie(response)
        self.assertEqual(response.headers["Connection"], "close")

    def test_set_error_at_the_end_gives_500_without_the_cookie(self):
        """A store.set error at the end: a 500 instead of the 200, no cookie for the unsaved session; logged."""
        demo, store = self.start_failing_demo()
        other, other_id = self.with_a_session(demo)
        other_before = store.sessions[other_id]
        error = RuntimeError("disk full")
        store.fail["set"] = error
        with self.assertLogs("session_demo", logging.ERROR) as logs:
            response = self.browser(demo).get("/")
        self.assert_unsaved(response)
        self.assertNotIn("disk full", response.body)
        self.assertIs(logs.records[-1].exc_info[1], error)
        self.assertEqual(store.calls["set"], 2)  # the other session's, then this one's
        self.assertEqual(list(store.sessions), [other_id], "the failed session was not stored")
        del store.fail["set"]
        self.assertEqual(store.sessions[other_id], other_before)
        self.assertEqual(other.get("/").body, "Number of views: 2")

    def test_touch_error_at_the_end_gives_500(self):
        """A store.touch error at the end (--no-resave, unmodified): a 500 instead of the 200; logged."""
        demo, store = self.start_failing_demo("--no-resave")
        browser, session_id = self.with_a_session(demo)
        other, other_id = self.with_a_session(demo)
        before = dict(store.sessions)
        error = RuntimeError("touch failed")
        store.fail["touch"] = error
        with self.assertLogs("session_demo", logging.ERROR) as logs:
            response = browser.get("/peek")
        self.assert_unsaved(response)
        self.assertIs(logs.records[-1].exc_info[1], error)
        self.assertEqual(store.calls["touch"], 1)
        self.assertEqual(store.sessions, before)
        del store.fail["touch"]
        self.assertEqual(other.get("/").body, "Number of views: 2")
        self.assertEqual(browser.get("/").body, "Number of views: 2")

    def test_destroy_error_at_the_end_gives_500(self):
        """A store.destroy error at the end (--unset destroy, /forget): a 500 instead of the 200; logged."""
        demo, store = self.start_failing_demo("--unset", "destroy")
        browser, session_id = self.with_a_session(demo)
        other, other_id = self.with_a_session(demo)
        error = RuntimeError("destroy failed")
        store.fail["destroy"] = error
        with self.assertLogs("session_demo", logging.ERROR) as logs:
            response = browser.get("/forget")
        self.assert_unsaved(response)
        self.assertIs(logs.records[-1].exc_info[1], error)
        self.assertEqual(store.calls["destroy"], 1)
        self.assertIn(session_id, store.sessions, "the failed destroy left it in place")
        del store.fail["destroy"]
        self.assertEqual(other.get("/").body, "Number of views: 2")

    def test_a_new_connection_is_answered_after_a_store_error_at_the_end(self):
        """After a store error at the end the connection closes; the client's next connection is answered."""
        demo, store = self.start_failing_demo()
        store.fail["set"] = RuntimeError("disk full")
        with self.assertLogs("session_demo", logging.ERROR):
            self.assert_unsaved(self.browser(demo).get("/peek"))
            del store.fail["set"]
        self.assertEqual(self.browser(demo).get("/peek").status, 200)
        self.assertEqual(store.calls["set"], 2)

    def test_failing_store_does_not_break_the_next_request(self):
        """After a failed load the same connection-less client gets normal answers once the store recovers."""
        demo, store = self.start_failing_demo()
        browser, _ = self.with_a_session(demo)
        store.fail["get"] = RuntimeError("down")
        with self.assertLogs("session_demo", logging.ERROR):
            self.assertEqual(browser.get("/").status, 500)
        del store.fail["get"]
        self.assertEqual(browser.get("/").body, "Number of views: 2")


# ==== LESSONS.md and the tour, kept true ====================================


# ==== LESSONS.md, kept true ===================================================
#
# LESSONS.md promises that every >>> snippet and every server walkthrough in it
# shows what the reader will see. These tests hold it to that: the snippets run
# under doctest, the walkthroughs are parsed out of the file and replayed
# against server.py, and every name a lesson cites must exist.

LESSONS_FILE = "LESSONS.md"  # next to session_demo.py
LESSONS_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
LESSONS_CONSOLE_BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)
LESSONS_LOG_BLOCK = re.compile(r"^```log\n(.*?)^```", re.MULTILINE | re.DOTALL)
LESSONS_CITATION = re.compile(r"^(?:Code|Tests): .*?(?=\n\n)", re.MULTILINE | re.DOTALL)
LESSONS_BACKTICKED = re.compile(r"`([^`]+)`")


class LessonsFile:
    """LESSONS.md, read and cut into lessons, and the doctest-style matching its outputs use."""

    @staticmethod
    def text() -> str:
        """The text of LESSONS.md, found beside session_demo.py."""
        path = os.path.join(os.path.dirname(os.path.abspath(sd.__file__)), LESSONS_FILE)
        with open(path, encoding="utf-8") as file:
            return file.read()

    @classmethod
    def sections(cls) -> dict[int, str]:
        """Each numbered lesson's text (from its '## N.' heading to the next), by number."""
        text = cls.text()
        starts = list(LESSONS_HEADING.finditer(text))
        sections = {}
        for here, after in zip(starts, starts[1:] + [None]):
            sections[int(here.group(1))] = text[here.start(): after.start() if after else len(text)]
        return sections

    @staticmethod
    def matches(expected: str, actual: str) -> bool:
        """Does ``actual`` match ``expected``, where '...' in ``expected`` stands for any text?"""
        return doctest.OutputChecker().check_output(expected, actual, doctest.ELLIPSIS)


class TestLessonsDoctest(unittest.TestCase):
    """Every >>> snippet in LESSONS.md gives the output the lesson shows."""

    def test_every_snippet_prints_what_the_lesson_shows(self):
        """doctest over LESSONS.md (ELLIPSIS, NORMALIZE_WHITESPACE): no example fails."""
        text = LessonsFile.text()
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        test = doctest.DocTestParser().get_doctest(text, {"__name__": "lessons"}, LESSONS_FILE,
                                                   LESSONS_FILE, 0)
        self.assertGreater(len(test.examples), 100, "LESSONS.md lost its snippets")
        report = io.StringIO()
        runner = doctest.DocTestRunner(optionflags=flags)
        logger = logging.getLogger("session_demo")
        handlers, level = list(logger.handlers), logger.level
        try:
            result = runner.run(test, out=report.write, clear_globs=True)
        finally:
            logger.handlers[:] = handlers  # lesson 14 adds a handler; a failure must not leave it
            logger.setLevel(level)
        self.assertEqual(result.failed, 0, "\n" + report.getvalue())

    def test_every_lesson_from_one_to_sixteen_is_there(self):
        """LESSONS.md has lessons 1 to 16, in order, each with a 'Try this' or a list of items."""
        sections = LessonsFile.sections()
        self.assertEqual(list(sections), list(range(1, 17)))
        for number in range(1, 15):
            with self.subTest(lesson=number):
                self.assertIn("**Try this.**", sections[number])
                self.assertIn("Code: ", sections[number])

    def test_lessons_keep_what_we_do_differently_and_what_is_left_out(self):
        """Lessons 15 and 16 are the differences from express-session and what is left out."""
        sections = LessonsFile.sections()
        self.assertTrue(sections[15].startswith("## 15. What we do differently"))
        self.assertTrue(sections[16].startswith("## 16. What's left out"))
        for difference in ("No secret, no server", "Bad options fail at construction",
                           "Reserved keys are refused", "Logs shorten session ids", "Not ported"):
            with self.subTest(difference=difference):
                self.assertIn(difference, sections[15])


class TestLessonsCitedNames(unittest.TestCase):
    """Every function, class and test class a lesson cites (in its Code:/Tests: lines) exists."""

    @staticmethod
    def namespaces_with_tests() -> list[Any]:
        """Where test classes live: this module (test_session)."""
        names = [__name__, "test_session", "extras.test_concurrency", "extras.test_stores", "extras.test_wsgi"]
        return [importlib.import_module(name) for name in names]

    def cited(self) -> list[tuple[str, str]]:
        """(kind, name) for each backticked name on a Code: or Tests: line."""
        names = []
        for paragraph in LESSONS_CITATION.findall(LessonsFile.text()):
            code, _, tests = paragraph.partition("Tests:")
            names += [("code", name) for name in LESSONS_BACKTICKED.findall(code)]
            names += [("test", name) for name in LESSONS_BACKTICKED.findall(tests)]
        return names

    @staticmethod
    def resolve(space: Any, dotted: str) -> Any:
        """The object at ``dotted`` (like 'Session.regenerate') in ``space``, or None."""
        target = space
        for part in dotted.removesuffix("()").split("."):
            target = getattr(target, part, None)
            if target is None:
                return None
        return target

    def test_cited_code_exists_in_session_demo(self):
        """Each name cited as code is an attribute of session_demo, server or extras, dotted paths included."""
        for name in ("bounded_store", "concurrency", "sqlite_store", "wsgi"):
            importlib.import_module("extras." + name)
        code = [name for kind, name in self.cited() if kind == "code"]
        self.assertGreater(len(code), 30)
        for name in code:
            with self.subTest(name=name):
                spaces = (sd, server, types.SimpleNamespace(extras=importlib.import_module("extras")))
                self.assertTrue(any(self.resolve(space, name) is not None for space in spaces),
                                f"LESSONS.md cites `{name}`, which session_demo does not have")

    def test_cited_test_classes_exist(self):
        """Each name cited as a test is a TestCase class of the test suite."""
        tests = [name for kind, name in self.cited() if kind == "test"]
        self.assertGreater(len(tests), 20)
        spaces = self.namespaces_with_tests()
        for name in tests:
            with self.subTest(name=name):
                found = [self.resolve(space, name) for space in spaces]
                self.assertTrue(any(isinstance(cls, type) and issubclass(cls, unittest.TestCase)
                                    for cls in found),
                                f"LESSONS.md cites `{name}`, which is no test class")


class _LessonsCurl:
    """The few curl options the walkthroughs use, replayed with http.client.

    ``-i`` shows the status line and headers; ``-c FILE`` saves cookies to a
    jar, ``-b FILE`` sends them (``-b 'name=value'`` sends that cookie);
    ``-H`` adds a header. Like curl, the jar does not keep a ``Secure``
    cookie received over plain HTTP, and drops one whose Expires has passed.
    """

    def __init__(self) -> None:
        self.jars: dict[str, dict[str, str]] = {}

    def run(self, argv: list[str], port: int) -> tuple[str, Response]:
        """Send one curl command's request to the demo on ``port``; return what curl shows, and the response."""
        options = {"-b": None, "-c": None}
        headers: dict[str, str] = {}
        show_headers = False
        url = None
        words = iter(argv)
        for word in words:
            if word == "-i":
                show_headers = True
            elif word in options:
                options[word] = next(words)
            elif word == "-H":
                name, _, value = next(words).partition(":")
                headers[name.strip()] = value.strip()
            elif word.startswith("-"):
                raise AssertionError(f"the replay does not know curl's {word}")
            else:
                url = word
        assert url is not None, "curl without a URL"
        target = urllib.parse.urlsplit(url)
        self.check_host(target)
        sent = options["-b"]
        if sent is not None:
            cookies = sent if "=" in sent else "; ".join(
                f"{name}={value}" for name, value in self.jars.get(sent, {}).items())
            if cookies:
                headers["Cookie"] = cookies
        path = target.path + (f"?{target.query}" if target.query else "")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            response = Response(answer.status, answer.headers,
                                answer.read().decode("utf-8", "replace"))
            status_line = f"HTTP/1.1 {answer.status} {answer.reason}"
        finally:
            connection.close()
        if options["-c"] is not None:
            self.save(self.jars.setdefault(options["-c"], {}), response)
        shown = [status_line, *(f"{k}: {v}" for k, v in response.headers.items()), ""] if show_headers else []
        return "\n".join([*shown, response.body]), response

    @staticmethod
    def check_host(target: urllib.parse.SplitResult) -> None:
        assert target.scheme == "http" and target.hostname == "127.0.0.1" and target.port == 3000, \
            f"walkthroughs talk to http://127.0.0.1:3000/, not {target.geturl()}"

    @staticmethod
    def save(jar: dict[str, str], response: Response) -> None:
        for header in response.set_cookies:
            name, _, rest = header.partition("=")
            value, *attributes = rest.split("; ")
            attributes_by_name = {a.split("=", 1)[0].lower(): a.partition("=")[2] for a in attributes}
            if "secure" in attributes_by_name:
                continue  # curl keeps no Secure cookie from a plain-HTTP response
            expires = attributes_by_name.get("expires")
            if expires and parsedate_to_datetime(expires).timestamp() <= time.time():
                jar.pop(name, None)
            else:
                jar[name] = value


class TestLessonsWalkthroughs(TestServerDemoCase):
    """Each lesson's server walkthrough, replayed against server.py: the reader sees what it shows."""

    WALKTHROUGH_LESSONS = {1, 3, 5, 6, 8, 9, 10, 11, 12, 14}  # REPLAYS below, and lesson 14

    def replay(self, lesson: int) -> int:
        """Run each ```console block of a lesson: start servers, send the curls, compare the output.

        Returns the number of curl commands checked.
        """
        blocks = LESSONS_CONSOLE_BLOCK.findall(LessonsFile.sections()[lesson])
        self.assertTrue(blocks, f"lesson {lesson} has no walkthrough")
        checked = 0
        for block in blocks:
            curl = _LessonsCurl()
            demo = None
            for command, expected in self.commands(block):
                argv = shlex.split(command)
                if argv[:2] == ["python3", "server.py"]:
                    if demo is not None:  # a restart: the old server, and its store, are gone
                        demo.shutdown()
                        demo.server_close()
                    demo = self.start_demo(*argv[2:], as_shipped=True)
                elif argv[0] == "curl":
                    self.assertIsNotNone(demo, "curl before python3 server.py")
                    shown, response = curl.run(argv[1:], demo.server_address[1])
                    self.check(command, expected, shown, response)
                    checked += 1
                else:
                    self.fail(f"the replay does not know the command {command!r}")
        return checked

    @staticmethod
    def commands(block: str) -> list[tuple[str, list[str]]]:
        """The block's '$ ' commands, each with the output lines that follow it."""
        commands: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
        return commands

    def check(self, command: str, expected: list[str], shown: str, response: Response) -> None:
        """The status line and body as shown; each header shown is there; Set-Cookie only if shown."""
        with self.subTest(command=command):
            if not expected or not expected[0].startswith("HTTP/"):
                self.assertTrue(LessonsFile.matches("\n".join(expected), response.body), shown)
                return
            blank = expected.index("")
            status, headers, body = expected[0], expected[1:blank], "\n".join(expected[blank + 1:])
            self.assertEqual(shown.split("\n", 1)[0], status)
            self.assertTrue(LessonsFile.matches(body, response.body), f"expected {body!r}, got:\n{shown}")
            for header in headers:
                if header == "...":
                    continue
                name, _, value = header.partition(": ")
                actual = response.headers.get_all(name) or []
                self.assertTrue(any(LessonsFile.matches(value, each) for each in actual),
                                f"expected {header!r}, got:\n{shown}")
            if not any(header.startswith("Set-Cookie:") for header in headers):
                self.assert_no_set_cookie(response)

    def test_every_walkthrough_is_replayed(self):
        """The lessons that have a ```console block are exactly those with a replay test here."""
        with_walkthroughs = {number for number, section in LessonsFile.sections().items()
                             if LESSONS_CONSOLE_BLOCK.search(section)}
        self.assertEqual(with_walkthroughs, self.WALKTHROUGH_LESSONS)
        self.assertEqual(set(self.REPLAYS) | {14}, self.WALKTHROUGH_LESSONS)

    # lesson: (what the walkthrough shows, how many requests it makes)
    REPLAYS = {
        1: ("a first visit sets the cookie; the jar brings it back; the count is on the server", 3),
        3: ("a bad signature or an unsigned value is a first visit, with a new cookie", 2),
        5: ("after a restart the correctly signed cookie finds nothing: a first visit again", 2),
        6: ("--no-save-uninitialized: /peek sets no cookie; the first count does", 3),
        8: ("/remember sends no cookie; the next change sends one with Expires; --rolling always", 6),
        9: ("the victim logs in with the attacker's cookie; the attacker's id then finds nothing", 4),
        10: ("/logout sends no Set-Cookie; the old cookie then gets a new, empty session", 3),
        11: ("/forget keeps the stored session with --unset keep and deletes it with destroy", 6),
        12: ("--secure true over HTTP sets no cookie; --proxy true trusts X-Forwarded-Proto", 5),
    }

    def test_each_walkthrough_shows_what_the_server_answers(self):
        """Each lesson's curl walkthrough, replayed against server.py, gets exactly the answers shown."""
        for lesson, (story, requests) in self.REPLAYS.items():
            with self.subTest(lesson=lesson, story=story):
                self.assertEqual(self.replay(lesson), requests)

    def test_lesson_14_the_trace_shows_each_decision(self):
        """Lesson 14: the walkthrough's responses, and --trace logs exactly the lines the lesson shows."""
        section = LessonsFile.sections()[14]
        logs = LESSONS_LOG_BLOCK.findall(section)
        self.assertEqual(len(logs), 1, "lesson 14 shows one trace")
        with self.assertLogs("session_demo", logging.DEBUG) as captured:
            self.assertEqual(self.replay(14), 3)
        messages = [record.getMessage() for record in captured.records]
        self.assertTrue(LessonsFile.matches(logs[0], "\n".join(messages) + "\n"),
                        "the trace is now:\n" + "\n".join(messages))


class TestLessonsTour(unittest.TestCase):
    """python3 session_demo.py prints the tour: lessons 1 to 8 on one screen."""

    def tour_lines(self) -> list[str]:
        out = io.StringIO()
        tour(out=out)
        return out.getvalue().splitlines()

    def test_fits_on_one_screen(self):
        """The tour is 40 to 60 lines long."""
        self.assertTrue(40 <= len(self.tour_lines()) <= 60, len(self.tour_lines()))

    def test_prints_the_same_every_time(self):
        """A fixed clock and numbered ids: two runs print the same text."""
        self.assertEqual(self.tour_lines(), self.tour_lines())

    def test_shows_the_signed_cookie_the_middleware_sets(self):
        """The first Set-Cookie shown is sid1 signed with 'keyboard cat', with a 60 s Expires."""
        value = sd.encode_uri_component("s:" + sd.sign("sid1", SECRET))
        expected = (f"Set-Cookie:  connect.sid={value}; Path=/; "
                    "Expires=Fri, 15 Jan 2027 08:01:00 GMT; HttpOnly")
        self.assertIn(expected, [line.strip() for line in self.tour_lines()])

    def test_narrates_each_decision_with_its_reason(self):
        """The decisions shown carry the reasons of should_set_cookie, should_save and should_touch."""
        lines = [" ".join(line.split()) for line in self.tour_lines()]
        for line in ("set-cookie: yes new session, modified",
                     "set-cookie: yes modified, and the cookie has an expiry",
                     "save: no the store already holds it as it is",
                     "touch: yes unmodified session the browser sent",
                     "save: no new session, unmodified, save_uninitialized=False",
                     "set-cookie: no browser-session cookie the browser already has"):
            with self.subTest(line=line):
                self.assertIn(line, lines)

    def test_shows_the_store_as_json_and_the_touch_moving_expires(self):
        """The store lines are the MemoryStore's JSON; the read-only request moves expires by 10 s."""
        store_lines = [line for line in self.tour_lines() if "sid1 = " in line]
        stored = [json.loads(line.split(" = ", 1)[1]) for line in store_lines]
        expires = [data["cookie"]["expires"] for data in stored]
        self.assertEqual(expires[:3], ["2027-01-15T08:01:00.000Z", "2027-01-15T08:01:10.000Z",
                                       "2027-01-15T08:01:20.000Z"])
        self.assertEqual([data["views"] for data in stored[:3]], [1, 2, 2])

    def test_the_expired_session_stays_until_read(self):
        """After two minutes the expired sid1 is still listed, then reading it gives a new session."""
        text = "\n".join(self.tour_lines())
        later = text.split("Two minutes later", 1)[1]
        self.assertIn("sid1 = ", later.split("[08:02:20]", 1)[0])
        self.assertIn("connect.sid=s%3Asid3.", later)


class TestHostileCookieHeader(TestServerDemoCase):
    """Hostile Cookie headers through the demo server: express's session is found, else a new one; never a 500."""

    # (what the attacker or a broken client sends, the Cookie header lines, what express finds: observed)
    CASES: list[tuple[str, list[str | bytes], str]] = [
        ("no Cookie header", [], HOSTILE_NEW),
        ("an empty Cookie header", [""], HOSTILE_NEW),
        ("a pair without '=' named like ours, before ours", ["connect.sid; <good>"], HOSTILE_FOUND_GOOD),
        ("a nameless pair carrying another session, before ours (CVE-2023-23934)",
         ["=connect.sid=<other-value>; <good>"], HOSTILE_FOUND_GOOD),
        ("a nameless pair carrying a valid session, alone (CVE-2023-23934)",
         ["=connect.sid=<good-value>"], HOSTILE_NEW),
        ("a nameless pair on its own Cookie line before ours", ["=connect.sid=<other-value>", "<good>"],
         HOSTILE_FOUND_GOOD),
        ("empty segments around ours", [";;;<good>;;;"], HOSTILE_FOUND_GOOD),
        ("a JSON-ish neighbour before ours", ['prefs={"theme":"dark","list":[1,2]}; <good>'], HOSTILE_FOUND_GOOD),
        ("a JSON-ish neighbour with '; ' inside its quotes, before ours",
         ['prefs={"a": "x; y", "b": "z"}; <good>'], HOSTILE_FOUND_GOOD),
        ("a JSON-ish neighbour smuggling another session cookie, after ours",
         ['<good>; prefs={"a": "x; connect.sid=<other-value>"}'], HOSTILE_FOUND_GOOD),
        # cookie.parse does not honour quotes: the smuggled pair comes first and wins, but its
        # value ends in '"}', so its signature fails and ours is not tried.
        ("a JSON-ish neighbour smuggling another session cookie, before ours",
         ['prefs={"a": "x; connect.sid=<other-value>"}; <good>'], HOSTILE_NEW),
        ("an unterminated quote before ours", ['q="unterminated; <good>'], HOSTILE_FOUND_GOOD),
        ("backslash-escaped quotes before ours", ['q="a\\"b; c=\\"d"; <good>'], HOSTILE_FOUND_GOOD),
        ("two valid session cookies: the first wins", ["<good>; <other>"], HOSTILE_FOUND_GOOD),
        ("two Cookie lines, another valid session first", ["<other>", "<good>"], HOSTILE_FOUND_OTHER),
        ("another valid session under the name in another case, before ours",
         ["Connect.SID=<other-value>; <good>"], HOSTILE_FOUND_GOOD),
        ("tabs around the value", ["connect.sid=\t<good-value>\t"], HOSTILE_FOUND_GOOD),
        ("tabs around the name", ["\tconnect.sid\t=\t<good-value>"], HOSTILE_FOUND_GOOD),
        ("tabs around a quoted value", ['connect.sid=\t"<good-value>"\t'], HOSTILE_FOUND_GOOD),
        ("spaces inside the quotes", ['connect.sid=" <good-value> "'], HOSTILE_NEW),
        ("a space before the closing quote", ['connect.sid="<good-value> "'], HOSTILE_NEW),
        ("single quotes", ["connect.sid='<good-value>'"], HOSTILE_NEW),
        ("doubled double quotes", ['connect.sid=""<good-value>""'], HOSTILE_NEW),
        ("an opening quote only", ['connect.sid="<good-value>'], HOSTILE_NEW),
        ("UTF-8 bytes in a neighbour's value, before ours", [b"caf\xc3\xa9=cr\xc3\xa8me; <good>"],
         HOSTILE_FOUND_GOOD),
        ("UTF-8 bytes in a neighbour's value, after ours", [b"<good>; caf\xc3\xa9=cr\xc3\xa8me"],
         HOSTILE_FOUND_GOOD),
        ("UTF-8 bytes as a neighbour's name", [b"\xc3\xa9=1; <good>"], HOSTILE_FOUND_GOOD),
        ("malformed percent-escapes in neighbours", ["a=%zz; b=%E0%A4%A; c=%; <good>"], HOSTILE_FOUND_GOOD),
        ("a comma instead of ';' before ours", ["a=1, <good>"], HOSTILE_NEW),
        ("a comma instead of ';' after ours", ["<good>, a=1"], HOSTILE_NEW),
        ("a percent-encoded cookie name", ["connect%2Esid=<good-value>"], HOSTILE_NEW),
        ("a '+' (form-encoded space) before the value", ["connect.sid=+<good-value>"], HOSTILE_NEW),
        ("1,000 pairs before ours (12 KB)", ["; ".join(f"k{i}=v{i}" for i in range(1000)) + "; <good>"],
         HOSTILE_FOUND_GOOD),
        ("1,000 empty duplicates of our name after ours", ["<good>; " + "; ".join(["connect.sid="] * 1000)],
         HOSTILE_FOUND_GOOD),
        ("12 KB of backslash-escaped quoted text before ours (CVE-2024-7592)",
         ['a="' + '\\"' * 6000 + '"; <good>'], HOSTILE_FOUND_GOOD),
    ]

    def setUp(self) -> None:
        super().setUp()
        self.demo = self.start_demo()
        self.store = self.store_of(self.demo)
        TestHostileHelpers.store_both(self.store)
        self.stored_before = dict(self.store.sessions)

    def assert_express_outcome(self, response: Response, expected: str, since: int) -> None:
        """200 with the body express gives; a new session has a new id; the other sessions are not touched."""
        self.assertEqual((response.status, response.body), (200, expected))
        touched = TestHostileHelpers.ids_touched(self.store, since)
        if expected == HOSTILE_NEW:
            new_id = self.session_id_in(self.assert_sets_cookie(response))
            self.assertNotIn(new_id, (HOSTILE_GOOD_ID, HOSTILE_OTHER_ID))
            self.assertEqual(touched, {new_id}, "only the new session may reach the store")
        else:
            self.assert_no_set_cookie(response)
            found = HOSTILE_GOOD_ID if expected == HOSTILE_FOUND_GOOD else HOSTILE_OTHER_ID
            self.assertEqual(touched, {found}, "the session that is not used is never touched")
        for session_id in (HOSTILE_GOOD_ID, HOSTILE_OTHER_ID):
            self.assertEqual(self.store.sessions[session_id], self.stored_before[session_id])

    def test_hostile_cookie_headers_find_the_session_express_finds(self):
        """Malformed, duplicated, smuggled or noisy Cookie headers (CVE-2023-23934, CVE-2024-7592): express's answer, never a 500."""
        for description, lines, expected in self.CASES:
            with self.subTest(description):
                since = len(self.store.log)
                lines = [TestHostileHelpers.expand(line) for line in lines]
                response = self.browser(self.demo).get("/peek", cookie_lines=lines)
                self.assert_express_outcome(response, expected, since)

    def test_control_characters_never_give_a_500(self):
        """Control characters, NUL, DEL and a bare CR in the Cookie header: 200, the session found as cookie.parse finds it."""
        # Node's HTTP parser answers 400 to all of these before express sees them; http.server passes
        # them on, so the session layer must cope. Expectations: cookie 0.7.2's parse (observed),
        # except the bare CR, where http.server's header parser (email.feedparser) ends the line.
        cases = [
            ("\\x01 in a neighbour's value", b"a=\x01; <good>", HOSTILE_FOUND_GOOD),
            ("NUL in a neighbour's value", b"a=\x00b; <good>", HOSTILE_FOUND_GOOD),
            ("\\x1f as a neighbour's name", b"\x1f=1; <good>", HOSTILE_FOUND_GOOD),
            ("\\x01 glued to our name, before ours", b"connect.sid\x01=<other-value>; <good>", HOSTILE_FOUND_GOOD),
            ("DEL after our value", b"<good>\x7f", HOSTILE_NEW),
            ("NUL before our value", b"connect.sid=\x00<good-value>", HOSTILE_NEW),
            ("vertical tab before our value (only spaces and tabs are trimmed)",
             b"connect.sid=\x0b<good-value>", HOSTILE_NEW),
            ("a bare CR in a neighbour's value", b"a=\rb; <good>", HOSTILE_NEW),
        ]
        for description, line, expected in cases:
            with self.subTest(description):
                since = len(self.store.log)
                block = b"Cookie: " + TestHostileHelpers.expand(line) + b"\r\n"
                response = TestHostileHelpers.raw_get(self.demo.server_address[1], block)
                self.assert_express_outcome(response, expected, since)

    def test_heads_up_to_16_kb_are_answered_and_larger_ones_get_431(self):
        """Oversized Cookie headers (CVE-2024-7592 shape): found under the 16 KB head limit (Node's), a 431 above it."""
        # http.server alone reads 100 lines of up to 65,536 bytes; the adapter caps the head at 16 KB, as Node does.
        since = len(self.store.log)
        line = "; ".join(f"k{i}=v{i}" for i in range(1100)) + "; <good>"  # 14 KB
        response = self.browser(self.demo).get("/peek", cookie_lines=[TestHostileHelpers.expand(line)])
        self.assert_express_outcome(response, HOSTILE_FOUND_GOOD, since)
        cases = [
            ("3,000 pairs before ours (37 KB)", "; ".join(f"k{i}=v{i}" for i in range(3000)) + "; <good>"),
            ("60 KB of backslash-escaped quoted text before ours", 'a="' + '\\"' * 30000 + '"; <good>'),
            ("66 KB of backslash-escaped quoted text before ours", 'a="' + '\\"' * 33000 + '"; <good>'),
        ]
        for description, line in cases:
            with self.subTest(description):
                since = len(self.store.log)
                response = self.browser(self.demo).get("/peek", cookie_lines=[TestHostileHelpers.expand(line)])
                self.assertEqual(response.status, 431)
                self.assertEqual(response.set_cookies, [])
                self.assertEqual(self.store.log[since:], [], "the session layer never saw the request")


class TestHostileStoreFaults(TestServerDemoCase):
    """A store that holds corrupt data or is slow: a clear 500 on load, nothing written, other sessions unaffected."""

    def setUp(self) -> None:
        super().setUp()
        self.demo = self.start_demo()
        self.store = self.store_of(self.demo)
        TestHostileHelpers.store_both(self.store)

    def get_with(self, session_id: str, path: str = "/") -> Response:
        return self.browser(self.demo).get(path, cookie_lines=["connect.sid=" + TestHostileHelpers.value(session_id)])

    def assert_load_fails_cleanly(self, text: str) -> None:
        """The good session holds ``text``: 500, no cookie, nothing written; the other session still counts."""
        self.store.sessions[HOSTILE_GOOD_ID] = text
        since = len(self.store.log)
        with self.assertLogs("session_demo", logging.DEBUG) as logs:
            response = self.get_with(HOSTILE_GOOD_ID)
        self.assertEqual(response.status, 500, response.body)
        self.assertIn("ERROR", {record.levelname for record in logs.records})
        self.assertIn(LOAD_FAILED, response.body)
        self.assert_no_set_cookie(response)
        self.assertEqual(self.store.log[since:], [("get", HOSTILE_GOOD_ID)])
        self.assertEqual(self.store.sessions[HOSTILE_GOOD_ID], text)
        self.assertEqual(self.get_with(HOSTILE_OTHER_ID).body, "Number of views: 6")
        TestHostileHelpers.store_both(self.store)  # back to views 1 and 5 for the next case

    def test_corrupt_json_in_the_store_gives_500(self):
        """Store corruption (truncated or non-JSON text): a clear 500, nothing written (observed: express 500s too)."""
        prefix = '{"cookie":' + json.dumps(HOSTILE_COOKIE_JSON)
        for description, text in {"truncated": prefix + ',"views":', "not JSON": "{views: 1}",
                                  "binary junk": "\x00\xff\ufffd"}.items():
            with self.subTest(description):
                self.assert_load_fails_cleanly(text)

    def test_deeply_nested_json_in_the_store_gives_500(self):
        """A 100,000-level nested session (RecursionError while parsing): a 500 and the server lives on."""
        # express 1.19.0 with this session crashes its process: JSON.stringify throws RangeError in
        # hash() again inside the error handler's res.end (observed).
        prefix = '{"cookie":' + json.dumps(HOSTILE_COOKIE_JSON)
        self.assert_load_fails_cleanly(prefix + ',"deep":' + "[" * 100000 + "]" * 100000 + "}")

    def test_nan_or_infinity_in_stored_json_gives_500(self):
        """Stored JSON text with NaN/Infinity (not JSON: JavaScript's JSON.parse refuses it): a 500, as express gives (observed)."""
        prefix = '{"cookie":' + json.dumps(HOSTILE_COOKIE_JSON)
        for constant in ("NaN", "Infinity", "-Infinity"):
            with self.subTest(constant):
                self.assert_load_fails_cleanly(prefix + ',"views":' + constant + "}")

    def test_a_deeply_nested_session_returned_by_a_store_gives_500(self):
        """A store returning an already-parsed 100,000-level dict (RecursionError while hashing): 500, nothing written."""
        store = TestServerFailingStore()
        demo = self.start_demo(store=store)
        deep: dict[str, Any] = {}
        for _ in range(100000):
            deep = {"x": deep}
        store.replies["get"] = {"cookie": dict(HOSTILE_COOKIE_JSON), "deep": deep}
        browser = self.browser(demo)
        with self.assertLogs("session_demo", logging.ERROR):
            response = browser.get("/", cookie_lines=["connect.sid=" + TestHostileHelpers.value("any-id")])
        self.assertEqual(response.status, 500)
        self.assert_no_set_cookie(response)
        self.assertEqual(store.calls, Counter({"get": 1}))
        del store.replies["get"]
        self.assertEqual(browser.get("/").body, FIRST_VISIT)

    def test_nan_set_by_a_handler_is_stored_as_json_null(self):
        """A handler stores NaN/Infinity: the store must hold real JSON (JSON.stringify writes null, observed), not 'NaN'."""
        def app(handler: AppHandler) -> None:
            handler.session["score"] = float(handler.path.strip("/?") or "nan")
            handler.reply(200, "ok")

        store = MemoryStore()
        test_server = TestServer(self, app, store=store)
        for value in ("nan", "inf", "-inf"):
            with self.subTest(value):
                response = test_server.get("/?" + value)
                session_id = sd.unsign(sd.decode_uri_component(
                    self.assert_sets_cookie(response).split("=", 1)[1])[2:], SECRET)

                text = store.sessions[session_id]
                self.assertNotRegex(text, r"NaN|Infinity", "the store must hold JSON")
                self.assertIsNone(json.loads(text)["score"])

    def test_a_slow_store_holds_up_only_its_own_session(self):
        """A store.get that hangs for one session (a slow database): every other session is served meanwhile."""
        entered, release = threading.Event(), threading.Event()

        class SlowForOne(CountingStore):
            def get(self, sid):
                if sid == HOSTILE_GOOD_ID:
                    entered.set()
                    release.wait(10)
                return super().get(sid)

        store = SlowForOne(clock=FrozenClock())
        TestHostileHelpers.store_both(store)
        demo = self.start_demo(store=store)
        browser, slow_browser = self.browser(demo), self.browser(demo)
        slow: dict[str, Response] = {}
        waiter = threading.Thread(target=lambda: slow.update(response=slow_browser.get(
            "/", cookie_lines=["connect.sid=" + TestHostileHelpers.value(HOSTILE_GOOD_ID)])))
        waiter.start()
        self.addCleanup(waiter.join, 10)
        self.addCleanup(release.set)
        self.assertTrue(entered.wait(10))
        other = ["connect.sid=" + TestHostileHelpers.value(HOSTILE_OTHER_ID)]
        self.assertEqual([browser.get("/", cookie_lines=other).body for _ in range(3)],
                         ["Number of views: 6", "Number of views: 7", "Number of views: 8"])
        self.assertEqual(browser.get("/peek").status, 200)
        self.assertNotIn("response", slow)
        release.set()
        waiter.join(10)
        self.assertEqual(slow["response"].body, "Number of views: 2")

    def test_a_get_failing_for_one_session_leaves_the_others_alone(self):
        """A store that fails for one id (a corrupt shard): that visitor gets 500s, the others keep counting."""
        class FailingForOne(CountingStore):
            def get(self, sid):
                if sid == HOSTILE_GOOD_ID:
                    raise OSError(5, "I/O error on shard 3")
                return super().get(sid)

        store = FailingForOne(clock=FrozenClock())
        TestHostileHelpers.store_both(store)
        demo = self.start_demo(store=store)
        browser = self.browser(demo)
        good = ["connect.sid=" + TestHostileHelpers.value(HOSTILE_GOOD_ID)]
        other = ["connect.sid=" + TestHostileHelpers.value(HOSTILE_OTHER_ID)]
        answers = []
        with self.assertLogs("session_demo", logging.ERROR):
            for _ in range(2):
                answers.append((browser.get("/", cookie_lines=good).status,
                                browser.get("/", cookie_lines=other).body))
        self.assertEqual(answers, [(500, "Number of views: 6"), (500, "Number of views: 7")])
        self.assertEqual(json.loads(store.sessions[HOSTILE_GOOD_ID])["views"], 1)


class TestHostileLoad(TestServerDemoCase):
    """Many clients at once on the demo server: exact counts, no errors, exactly the live sessions stored."""

    CLIENTS = 16
    REQUESTS = 25

    def client(self, port: int, index: int, results: dict[int, Any], errors: list[str]) -> None:
        """One browser on one keep-alive connection: REQUESTS views, then odd clients log out."""
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        cookie = None
        try:
            for number in range(1, self.REQUESTS + 1):
                connection.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
                answer = connection.getresponse()
                body = answer.read().decode()
                expected = FIRST_VISIT if number == 1 else f"Number of views: {number}"
                if answer.status != 200 or body != expected:
                    errors.append(f"client {index} request {number}: {answer.status} {body!r}")
                set_cookie = answer.getheader("Set-Cookie")
                if set_cookie:
                    cookie = set_cookie.split(";", 1)[0]
            if index % 2:
                connection.request("GET", "/logout", headers={"Cookie": cookie})
                answer = connection.getresponse()
                if (answer.status, answer.read()) != (200, b"Logged out"):
                    errors.append(f"client {index} logout: {answer.status}")
            results[index] = self.session_id_in(cookie)
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(f"client {index}: {exc!r}")
        finally:
            connection.close()

    def attacker(self, port: int, errors: list[str]) -> None:
        """Garbage and forged cookies on /peek alongside the real clients."""
        rng = random.Random(1)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for _ in range(100):
                forged = "connect.sid=s%3A" + "".join(rng.choice("abcdef%.;=\"") for _ in range(40))
                connection.request("GET", "/peek", headers={"Cookie": forged})
                answer = connection.getresponse()
                if (answer.status, answer.read()) != (200, b"views: none"):
                    errors.append(f"attacker got {answer.status}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"attacker: {exc!r}")
        finally:
            connection.close()

    def test_many_clients_each_count_exactly_their_own_requests(self):
        """Load (16 clients x 25 requests, plus an attacker): every count exact, no error, only live sessions stored."""
        demo = self.start_demo("--no-save-uninitialized")
        port = demo.server_address[1]
        results: dict[int, str] = {}
        errors: list[str] = []
        threads = [threading.Thread(target=self.client, args=(port, index, results, errors))
                   for index in range(self.CLIENTS)]
        threads.append(threading.Thread(target=self.attacker, args=(port, errors)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertFalse(any(thread.is_alive() for thread in threads), "clients did not finish in time")
        self.assertEqual(errors, [])
        self.assertEqual(len(set(results.values())), self.CLIENTS)
        live = {results[index] for index in range(0, self.CLIENTS, 2)}
        stored = self.store_of(demo).all()
        self.assertEqual(set(stored), live)
        self.assertEqual({session["views"] for session in stored.values()}, {self.REQUESTS})


class TestHostileFloodingOverHTTP(TestServerDemoCase):
    """A flood through the real demo server with --no-save-uninitialized (CVE-2015-3982)."""

    def test_a_few_hundred_anonymous_requests_store_nothing(self):
        """CVE-2015-3982 over HTTP: 300 cookieless, unsigned and random-signed requests store nothing, set no cookie."""
        demo = self.start_demo("--no-save-uninitialized")
        store = self.store_of(demo)
        rng = random.Random(7)
        connection = http.client.HTTPConnection("127.0.0.1", demo.server_address[1], timeout=10)
        self.addCleanup(connection.close)
        answers = Counter()
        for index in range(300):
            session_id = "%032x" % rng.getrandbits(128)
            cookie = [None, "connect.sid=" + session_id,
                      "connect.sid=" + TestHostileHelpers.value(session_id, server.DEMO_SECRET)][index % 3]
            connection.request("GET", "/peek", headers={"Cookie": cookie} if cookie else {})
            answer = connection.getresponse()
            answers[(answer.status, answer.read().decode(), answer.getheader("Set-Cookie"))] += 1
        self.assertEqual(answers, Counter({(200, "views: none", None): 300}))
        self.assertEqual(store.sessions, {})
        self.assertEqual(store.calls, Counter({"get": 100}))

if __name__ == "__main__":
    unittest.main()
