"""Tests for the demo: server.py end to end, and the lessons and README that drive it.

Run with ``python3 -m unittest -v`` from the top folder, with the rest of the suite.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import doctest
import errno
import functools
import html
import html.parser
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
import shutil
import socket
import subprocess
import sys
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
from session_demo_extras.bounded_store import BoundedMemoryStore
from session_demo_extras.test_redis_store import REDIS_SERVER, shared_redis
from server import tour
from session_demo import MemoryStore
from test_session import (
    AppHandler, CountingStore, FrozenClock, HOSTILE_COOKIE_JSON, HOSTILE_FOUND_GOOD,
    HOSTILE_FOUND_OTHER, HOSTILE_GOOD_ID, HOSTILE_NEW, HOSTILE_OTHER_ID, Response, SECRET,
    SessionAssertions, HostileHelpers, LiveServer,
)

# ==== server.py, bad cookies and store failures =============================


FIRST_VISIT = "Welcome! This is your first visit."
LOAD_FAILED = "The session could not be loaded"


# ==== The demo server (server.py), end to end ===============================
#
# These tests start server.make_server(server.parse_args([...])) on port 0 and
# talk to it like a browser: DemoBrowser keeps the cookies it is given
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


class DemoBrowser:
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


class FailingStore(CountingStore):
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


ACCESS_LINE = server.CounterHandler.log_message  # the real one; DemoServerCase silences it
LOG_RECORD_SWITCHES = ("logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks", "_srcfile")


class DemoServerCase(SessionAssertions):
    """Shared set-up for the demo-server tests: start a demo, read its cookies and store."""

    def setUp(self) -> None:
        super().setUp()
        # The demo's handler logs every request to stderr; keep the test output clean.
        quiet = mock.patch.object(server.CounterHandler, "log_message")
        quiet.start()
        self.addCleanup(quiet.stop)
        # The demo prints the session layer's warnings and errors on stderr; tests that provoke them look at their logs.
        unprinted = mock.patch.object(logging, "lastResort", None)
        unprinted.start()
        self.addCleanup(unprinted.stop)
        # server.main() turns logging's per-record look-ups off; the other tests get them back.
        switches = [(name, getattr(logging, name)) for name in LOG_RECORD_SWITCHES if hasattr(logging, name)]
        self.addCleanup(lambda: [setattr(logging, name, value) for name, value in switches])

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
        if demo.trace is not None:
            demo.trace = io.StringIO()  # --trace: the blocks go here, not to the test's stderr
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
    def browser(demo: server.SessionHTTPServer) -> DemoBrowser:
        return DemoBrowser(demo.server_address[1])

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


class TestServerRoutes(DemoServerCase):
    """The demo's routes, with the demo's default flags."""

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


class TestServerFlags(DemoServerCase):
    """Each of the demo's flags, observed through the demo server."""

    def test_parse_args_defaults_are_those_of_routes_md(self):
        """With no flags every option has the default server.py documents."""
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

    def test_a_disconnected_store_gives_no_session_and_says_so(self):
        """While the store is not ready there is no session: a 500 that names the store, and no cookie."""
        demo = self.start_demo()
        store = self.store_of(demo)
        store.ready = False
        answer = self.browser(demo).get("/")
        self.assertEqual((answer.status, answer.body), (500, "No session: the store is disconnected"))
        self.assert_no_set_cookie(answer)
        store.ready = True
        self.assertEqual(self.browser(demo).get("/").status, 200)

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


class TestServerHead(DemoServerCase):
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

class TestServerBeyondExpressFlags(DemoServerCase):
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
                statuses.append(DemoBrowser(browser.port).get(cookie_lines=[cookie]).status)

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


class TestServerMain(DemoServerCase):
    """server.main(): flags, warnings, the URL, --trace wiring, Ctrl+C."""

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        """Run server.main(argv + port 0) with serve_forever raising KeyboardInterrupt (Ctrl+C)."""
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(server.DemoServer, "serve_forever",
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

    def test_main_makes_log_records_cheaper(self):
        """main() turns off what logging looks up for every record and the demo never shows (the HOWTO's switches)."""
        self.run_main("--secret", "s3")
        for name in LOG_RECORD_SWITCHES:
            if hasattr(logging, name):
                with self.subTest(name=name):
                    self.assertIn(getattr(logging, name), (False, None))

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

    def test_main_does_not_warn_with_a_long_secret(self):
        """With a --secret of 32 characters or more there is no warning."""
        status, _, err = self.run_main("--secret", "x" * 32)
        self.assertEqual(status, 0)
        self.assertNotIn("warning", err)

    def test_main_warns_once_about_a_short_secret(self):
        """A secret shorter than 32 characters gets one warning line, as Django's deploy check gives."""
        status, _, err = self.run_main("--secret", "my own")
        self.assertEqual(status, 0)
        warnings_ = [line for line in err.splitlines() if line.startswith("warning:")]
        self.assertEqual(len(warnings_), 1, err)
        self.assertIn("6 characters", warnings_[0])
        self.assertIn("32", warnings_[0])
        self.assertNotIn("my own", err, "a warning never repeats the secret")

    def test_main_reads_the_secrets_from_a_file(self):
        """--secret-file PATH: one secret a line; the first signs, every one verifies."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "secret")
        with open(path, "w", encoding="utf-8") as file:
            file.write("n" * 32 + "\n\n" + "o" * 32 + "\n")
        args = server.parse_args(["--secret-file", path])
        self.assertEqual(server.read_secrets(args, {}), (["n" * 32, "o" * 32], "--secret-file"))
        status, _, err = self.run_main("--secret-file", path)
        self.assertEqual((status, err), (0, "\nstopped\n"))

    def test_main_reads_the_secret_from_the_environment(self):
        """Without --secret or --secret-file, $SESSION_SECRET is the secret; --secret wins over it."""
        environ = {"SESSION_SECRET": "e" * 40}
        self.assertEqual(server.read_secrets(server.parse_args([]), environ),
                         (["e" * 40], "$SESSION_SECRET"))
        self.assertEqual(server.read_secrets(server.parse_args(["--secret", "flag"]), environ),
                         (["flag"], "--secret"))
        self.assertEqual(server.read_secrets(server.parse_args([]), {}),
                         ([server.DEMO_SECRET], "the demo secret"))
        with mock.patch.dict(os.environ, environ):
            status, _, err = self.run_main()
        self.assertEqual((status, err), (0, "\nstopped\n"))

    def test_main_refuses_a_secret_file_it_cannot_use_in_one_line(self):
        """A missing or empty --secret-file ends with one error line and status 2."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        empty = os.path.join(directory.name, "empty")
        open(empty, "w").close()
        for path in (os.path.join(directory.name, "missing"), empty):
            with self.subTest(path=path):
                status, out, err = self.run_main("--secret-file", path)
                self.assertEqual(status, 2)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("error: "), err)
                self.assertEqual(self.serve_calls, 0)

    def test_help_names_every_way_to_give_the_secret(self):
        """--help mentions --secret, --secret-file and $SESSION_SECRET."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
            server.parse_args(["--help"])
        text = " ".join(out.getvalue().split())
        for words in ("--secret SECRET", "--secret-file PATH", "$SESSION_SECRET"):
            self.assertIn(words, text)

    def test_main_warns_when_browsers_would_refuse_the_cookie(self):
        """One warning line for --secure true over plain HTTP, one for --same-site none without --secure true."""
        long_secret = ("--secret", "x" * 32)
        cases = {
            ("--secure", "true"): ["--secure true"],
            ("--same-site", "none"): ["--same-site none"],
            ("--secure", "true", "--same-site", "none"): ["--secure true"],
            ("--secure", "true", "--proxy", "true"): [],  # behind a TLS proxy
            ("--secure", "auto", "--proxy", "true", "--same-site", "none"): [],
            ("--secure", "auto", "--same-site", "none"): ["--same-site none"],
            ("--same-site", "lax"): [],
        }
        for flags, expected in cases.items():
            with self.subTest(flags=flags):
                status, _, err = self.run_main(*long_secret, *flags)
                self.assertEqual(status, 0)
                warnings_ = [line for line in err.splitlines() if line.startswith("warning:")]
                self.assertEqual([w.split()[1:3] for w in warnings_],
                                 [e.split() for e in expected], err)

    def test_main_exits_2_with_one_line_when_the_port_is_in_use(self):
        """A port already in use: one error line naming it, no traceback, status 2."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = server.main(["--secret", "x" * 32, "--port", str(port)])
        self.assertEqual(status, 2)
        self.assertEqual(err.getvalue(), f"error: cannot listen on port {port}: it is in use; "
                                         "pass --port N\n")

    def test_main_returns_2_when_the_middleware_rejects_a_flag(self):
        """A flag value the session layer refuses (bad --domain, --path, --name) is an error, status 2."""
        for argv in (["--domain", "bad_domain!"], ["--path", "/a;b"], ["--name", "bad name"]):
            with self.subTest(argv=argv):
                status, out, err = self.run_main("--secret", "s3", *argv)
                self.assertEqual(status, 2)
                self.assertIn("error:", err)
                self.assertEqual(self.serve_calls, 0)
                self.assertNotIn("Serving", out)

    def test_main_exits_2_with_one_line_for_an_invalid_flag(self):
        """A bad flag: argparse's SystemExit with status 2, and one line of error, not the usage."""
        for argv in (["--secure", "maybe"], ["--max-age", "soon"], ["--no-such-flag"]):
            with self.subTest(argv=argv):
                err = io.StringIO()
                with self.assertRaises(SystemExit) as caught, contextlib.redirect_stderr(err):
                    server.main(argv)
                self.assertEqual(caught.exception.code, 2)
                self.assertEqual(len(err.getvalue().splitlines()), 1, err.getvalue())
                self.assertTrue(err.getvalue().startswith("error: "), err.getvalue())

    def test_main_leaves_the_root_logging_handlers_alone(self):
        """With or without --trace, main() adds no handler to the root logger (the trace is its own)."""
        self.keep_logging_as_it_is()
        handlers = list(logging.getLogger().handlers)
        for flags in ((), ("--trace",)):
            with self.subTest(flags=flags):
                self.run_main("--secret", "x" * 32, *flags)
                self.assertEqual(logging.getLogger().handlers, handlers)

    def test_trace_goes_to_stderr(self):
        """--trace: the server prints its blocks on the stderr it was started with; without it, none."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            traced = server.make_server(server.parse_args(["--trace", "--port", "0"]))
            quiet = server.make_server(server.parse_args(["--port", "0"]))
        for demo in (traced, quiet):
            self.addCleanup(demo.server_close)
        self.assertIs(traced.trace, err)
        self.assertIsNone(quiet.trace)


class TestServerTrace(DemoServerCase):
    """--trace: one block per request, headed by its request line, its session lines indented under it."""

    def blocks(self, demo: server.SessionHTTPServer) -> list[list[str]]:
        """The trace so far, cut into blocks: each a header line and its indented lines."""
        blocks: list[list[str]] = []
        for line in demo.trace.getvalue().splitlines():
            if line.startswith("    "):
                blocks[-1].append(line[4:])
            else:
                blocks.append([line])
        return blocks

    def test_each_request_is_one_block_headed_by_its_request_line(self):
        """Three requests, three blocks: the request line and status, then that request's decisions."""
        demo = self.start_demo("--trace")
        browser = self.browser(demo)
        browser.get("/")
        browser.get("/")
        browser.get("/peek")
        blocks = self.blocks(demo)
        self.assertEqual([block[0] for block in blocks],
                         ["GET / HTTP/1.1 -> 200", "GET / HTTP/1.1 -> 200", "GET /peek HTTP/1.1 -> 200"])
        self.assertEqual(blocks[0][1:4], ["no SID sent, generating session",
                                          "set-cookie: yes (new session, save_uninitialized)",
                                          "save: yes (new session)"])
        self.assertIn("save: yes (modified)", blocks[1])
        self.assertIn("touch: yes (unmodified session the browser sent)", blocks[2])

    def test_the_trace_replaces_the_access_log(self):
        """With --trace the status is in the block's header; no separate access-log line is written."""
        demo = self.start_demo("--trace")
        with mock.patch.object(server.SessionRequestHandler, "log_request") as access_log:
            self.browser(demo).get("/")
        access_log.assert_not_called()

    def test_without_trace_each_request_gets_its_access_line_promptly(self):
        """Without --trace, each request's line, as http.server writes it, reaches stderr (within seconds)."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), \
                mock.patch.object(server.CounterHandler, "log_message", ACCESS_LINE):
            demo = self.start_demo(as_shipped=True)
            browser = self.browser(demo)
            for path in ("/", "/peek", "/nope"):
                browser.get(path)
            deadline = time.monotonic() + 5
            while err.getvalue().count("\n") < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # a bounded wait for the writer thread
            lines = err.getvalue().splitlines()
        date = r"\[\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d\]"
        self.assertEqual(len(lines), 3, lines)
        for line, (path, status) in zip(lines, (("/", 200), ("/peek", 200), ("/nope", 404))):
            self.assertRegex(line, rf'^127\.0\.0\.1 - - {date} "GET {path} HTTP/1\.1" {status} -$')

    def test_an_access_line_shows_control_characters_as_escapes(self):
        """A request line with an escape character is logged with it as \\x1b, as http.server logs it."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), \
                mock.patch.object(server.CounterHandler, "log_message", ACCESS_LINE):
            demo = self.start_demo(as_shipped=True)
            with socket.create_connection(demo.server_address[:2], timeout=10) as connection:
                connection.sendall(b"GET /\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(connection.recv(100).startswith(b"HTTP/1.1 400 "))
            demo.shutdown()
            demo.server_close()  # writes the lines still queued
        self.assertIn('"GET /\\x1b[2J HTTP/1.1" 400', err.getvalue())
        self.assertNotIn("\x1b", err.getvalue())

    def test_the_access_log_writes_every_line_whole_and_in_order(self):
        """Lines queued by several threads all come out, each whole, each thread's in its order; close() waits."""
        log = server.AccessLog(delay=0.001)
        err = io.StringIO()

        def queue_lines(thread: int) -> None:
            for number in range(200):
                log.add(f"thread {thread} line {number}\n")

        with contextlib.redirect_stderr(err):
            threads = [threading.Thread(target=queue_lines, args=(thread,)) for thread in range(4)]
            for each in threads:
                each.start()
            for each in threads:
                each.join()
            log.close()
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 800)
        for thread in range(4):
            self.assertEqual([line for line in lines if line.startswith(f"thread {thread} ")],
                             [f"thread {thread} line {number}" for number in range(200)])

    def test_a_block_shows_control_characters_as_escapes(self):
        """A request line with an escape character prints it as \\x1b, not raw."""
        self.assertEqual(server.trace_block(server.Visit("GET /\x1b[2J HTTP/1.1", 404, ["a\tb"])),
                         "GET /\\x1b[2J HTTP/1.1 -> 404\n    a\\tb\n")


# ==== The HTML view (ours, not express's) ==================================
#
# A client whose Accept has text/html gets a page: the same sentence in <p>, links
# to every route, and the panel "What the session layer did". Everyone else gets
# the plain text above, byte for byte (TestServerRoutes and the rest pin it).

BROWSER_ACCEPT = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


class ServerPage(html.parser.HTMLParser):
    """One HTML view, parsed: its tags, links, forms, paragraphs and the panel's decisions."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.links: list[str] = []
        self.forms: list[dict[str, Any]] = []
        self.paragraphs: list[str] = []
        self.visits: list[dict[str, Any]] = []  # the panel's <ol>: label, request line, lines, whys
        self._text: list[str] | None = None
        self._li_depth = 0
        self._code: list[str] | None = None
        self._in_label = False
        self._in_why = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "a":
            self.links.append(attributes.get("href") or "")
        elif tag == "form":
            self.forms.append({"action": attributes.get("action"), "method": attributes.get("method"),
                               "inputs": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append(attributes.get("name"))
        elif tag == "p":
            self._text = []
        elif tag == "li":
            self._li_depth += 1
            if self._li_depth == 1:
                self.visits.append({"label": "", "request": "", "lines": [], "whys": []})
        elif tag == "code" and self._li_depth:
            self._code = []
        elif tag == "b" and self._li_depth == 1:
            self._in_label = True
        elif tag == "span" and attributes.get("class") == "why" and self._li_depth == 2:
            self._in_why = True
            self.visits[-1]["whys"].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._text is not None:
            self.paragraphs.append("".join(self._text))
            self._text = None
        elif tag == "li":
            self._li_depth -= 1
        elif tag == "code" and self._code is not None:
            text = "".join(self._code)
            if self._li_depth == 1:
                self.visits[-1]["request"] = text
            else:
                self.visits[-1]["lines"].append(text)
            self._code = None
        elif tag == "b":
            self._in_label = False
        elif tag == "span":
            self._in_why = False

    def handle_data(self, data: str) -> None:
        for sink in (self._text, self._code):
            if sink is not None:
                sink.append(data)
        if self._in_label:
            self.visits[-1]["label"] += data
        if self._in_why:
            self.visits[-1]["whys"][-1] += data


class TestServerHTMLView(DemoServerCase):
    """The HTML view: a browser sees the sentence, every route, and what the session layer did."""

    def page(self, browser: DemoBrowser, path: str = "/") -> tuple[Response, ServerPage]:
        response = browser.get(path, headers=BROWSER_ACCEPT)
        return response, ServerPage(response.body)

    def test_a_browser_gets_the_sentence_in_an_html_page(self):
        """Accept: text/html gets text/html; charset=utf-8, with the route's sentence as the first <p>."""
        demo = self.start_demo()
        browser = self.browser(demo)
        for path, status, sentence in (("/", 200, FIRST_VISIT), ("/", 200, "Number of views: 2"),
                                       ("/peek", 200, "views: 2"), ("/nope", 404, "Not Found")):
            with self.subTest(path=path, sentence=sentence):
                response, page = self.page(browser, path)
                self.assertEqual(response.status, status)
                self.assertEqual(response.headers["Content-Type"], "text/html; charset=utf-8")
                self.assertEqual(page.paragraphs[0], sentence)

    def test_other_clients_get_the_plain_text(self):
        """No text/html in Accept (curl's */*, JSON, none at all): the plain-text answer, as Express sends it."""
        demo = self.start_demo()
        for accept in ("*/*", "application/json", None):
            with self.subTest(accept=accept):
                headers = {"Accept": accept} if accept else {}
                response = self.browser(demo).get("/", headers=headers)
                self.assertEqual(response.headers["Content-Type"], "text/plain; charset=utf-8")
                self.assertEqual(response.raw_body, FIRST_VISIT.encode())  # type: ignore[attr-defined]
                self.assertEqual(response.headers["Content-Length"], str(len(FIRST_VISIT)))

    def test_status_and_set_cookie_are_those_of_the_plain_answer(self):
        """A browser and curl doing the same visits get the same statuses and the same Set-Cookie attributes."""
        demo = self.start_demo("--max-age", "60000")
        html_browser, text_browser = self.browser(demo), self.browser(demo)
        for path in ("/", "/", "/peek", "/login?user=ann", "/whoami", "/remember?ms=5000",
                     "/remember?ms=x", "/logout", "/forget", "/nope"):
            with self.subTest(path=path):
                as_html = html_browser.get(path, headers=BROWSER_ACCEPT)
                as_text = text_browser.get(path)
                self.assertEqual(as_html.status, as_text.status)
                self.assertEqual([c.split(";", 1)[1] for c in as_html.set_cookies],
                                 [c.split(";", 1)[1] for c in as_text.set_cookies])
                self.assertEqual(ServerPage(as_html.body).paragraphs[0], as_text.body)

    def test_links_and_a_form_reach_every_route(self):
        """The page links to the counter, peek, whoami, logout, remember (60 s), forget; a form logs in."""
        _, page = self.page(self.browser(self.start_demo()))
        for href in ("/", "/peek", "/whoami", "/logout", "/remember?ms=60000", "/forget"):
            self.assertIn(href, page.links)
        self.assertEqual(page.forms, [{"action": "/login", "method": "get", "inputs": ["user"]}])

    def test_the_page_needs_no_script_and_no_other_resource(self):
        """No <script>, and nothing fetched from elsewhere: the only link-like attributes are the routes."""
        _, page = self.page(self.browser(self.start_demo()))
        self.assertNotIn("script", [tag for tag, _ in page.tags])
        sources = [value for _, attrs in page.tags for name, value in attrs.items()
                   if name in ("src", "href") and value is not None]
        self.assertTrue(all(value.startswith("/") or value == "data:," for value in sources), sources)

    def test_the_panel_shows_the_cookie_the_session_and_the_store(self):
        """Second visit: the cookie sent, cut short and checked with secret 0; the id shortened; the stored JSON."""
        demo = self.start_demo()
        browser = self.browser(demo)
        self.page(browser)
        response, page = self.page(browser)
        session_id = self.session_id_in(browser.jar["connect.sid"])
        self.assertIn(("section", {"id": "session-layer"}), page.tags)
        text = "\n".join(page.paragraphs)
        self.assertIn(f"connect.sid=s:{session_id[:6]}...; its signature checks with secret 0", text)
        self.assertIn(f"Session '{session_id[:6]}...': the store had it.", text)
        stored = response.body.split("<pre>", 1)[1].split("</pre>", 1)[0]
        self.assertEqual(json.loads(html.unescape(stored))["views"], 1, "the store, before this save")
        self.assertNotIn(session_id, response.body, "never a full id in a page")

    def test_the_panel_names_the_secret_that_checked(self):
        """A cookie signed with an older secret checks with secret 1."""
        demo = self.start_demo("--secret", "new", "--secret", "old")
        old = self.start_demo("--secret", "old")
        browser = self.browser(old)
        browser.get("/")
        browser.port = demo.server_address[1]
        _, page = self.page(browser, "/peek")
        self.assertIn("checks with secret 1 (an older one)", "\n".join(page.paragraphs))

    def test_the_panel_says_when_no_cookie_or_a_bad_one_came(self):
        """No cookie, an unsigned one, a forged one: each said in words, each a new session."""
        demo = self.start_demo()
        cases = {None: "sent no connect.sid cookie", "connect.sid=abc": "not signed",
                 "connect.sid=s%3Aabc.def": "checks with none of the secrets"}
        for cookie, words in cases.items():
            with self.subTest(cookie=cookie):
                response = self.browser(demo).get("/peek", headers=BROWSER_ACCEPT,
                                                  cookie_lines=[cookie] if cookie else [])
                text = "\n".join(ServerPage(response.body).paragraphs)
                self.assertIn(words, text)
                self.assertIn(": new, since no valid cookie came with the request.", text)

    def test_decisions_shown_are_those_of_the_trace(self):
        """This response shows its decisions so far; the visits before show all of theirs, as --trace prints them."""
        demo = self.start_demo("--trace")
        browser = self.browser(demo)
        pages = [self.page(browser, path)[1] for path in ("/", "/", "/peek", "/login?user=ann", "/logout", "/")]
        blocks = [block.splitlines() for block in re.split(r"(?m)^(?=\S)", demo.trace.getvalue()) if block]
        traced = [(block[0].rsplit(" -> ", 1)[0], [line.strip() for line in block[1:]]) for block in blocks]
        for number, page in enumerate(pages):
            with self.subTest(request=traced[number][0], number=number):
                now, *before = page.visits
                self.assertEqual(now["label"], "This response")
                self.assertEqual(now["request"], traced[number][0])
                lines = traced[number][1]
                self.assertEqual(now["lines"], lines[:len(now["lines"])])
                self.assertTrue(now["lines"][-1].startswith("set-cookie: "), now["lines"])
                expected_before = [traced[i] for i in range(number - 1, max(-1, number - 5), -1)]
                self.assertEqual([(visit["request"], visit["lines"]) for visit in before], expected_before)

    def test_each_decision_has_a_why_naming_a_lesson(self):
        """Every decision line has a 'why' that names a lesson heading of LESSONS.md."""
        titles = {match.group(1) for match in re.finditer(r"^## \d+\. (.+)$", LessonsFile.text(), re.MULTILINE)}
        for title in {t for _, t in server.LESSON_FOR} | {t for _, t in server.ROUTE_NOTES.values()}:
            with self.subTest(title=title):
                self.assertIn(title, titles)
        demo = self.start_demo()
        browser = self.browser(demo)
        self.page(browser)
        _, page = self.page(browser, "/logout")
        for visit in page.visits:
            self.assertEqual(len(visit["whys"]), len(visit["lines"]))
            for why in visit["whys"]:
                self.assertRegex(why, r'^why: see "(.+)" in LESSONS\.md$')
                self.assertIn(why.split('"')[1], titles)

    @staticmethod
    def remember_note(page: ServerPage) -> str | None:
        """The page's note on /remember, if it has one."""
        return next((text for text in page.paragraphs if "max_age" in text), None)

    def test_the_remember_note_says_the_cookie_comes_with_the_next_change(self):
        """A returning visitor's /remember sends no Set-Cookie; the note says so, and that the next change sends it."""
        demo = self.start_demo()
        browser = self.browser(demo)
        self.page(browser)
        response, page = self.page(browser, "/remember?ms=60000")
        self.assert_no_set_cookie(response)
        note = self.remember_note(page)
        assert note is not None
        self.assertIn("this response sends no Set-Cookie", note)
        self.assertIn("your browser's cookie is as it was", note)
        self.assertNotIn("carries its Expires", note)
        self.assertIn("The next response that changes the session (count a view) sends it with its Expires", note)
        peeked, _ = self.page(browser, "/peek")
        self.assert_no_set_cookie(peeked)  # reading is not a change
        counted, _ = self.page(browser, "/")
        self.assertEqual(self.expires_minus_date(counted), timedelta(seconds=60))  # what the note promised

    def test_the_remember_note_says_when_this_response_carries_the_expires(self):
        """A new session (first visit) or --rolling: this response's Set-Cookie has the Expires, and the note says so."""
        for flags, visits_before in (((), 0), (("--rolling",), 1)):
            with self.subTest(flags=flags):
                browser = self.browser(self.start_demo(*flags))
                for _ in range(visits_before):
                    self.page(browser)
                response, page = self.page(browser, "/remember?ms=5000")
                self.assertEqual(self.expires_minus_date(response), timedelta(seconds=5))
                note = self.remember_note(page)
                assert note is not None
                self.assertIn("this response's Set-Cookie carries its Expires", note)
                self.assertNotIn("sends no Set-Cookie", note)

    def test_the_remember_note_gives_the_reason_when_a_secure_cookie_is_not_sent(self):
        """--secure true over plain HTTP: no Set-Cookie, and the note gives the adapter's reason, not a promise."""
        with contextlib.redirect_stderr(io.StringIO()):
            demo = self.start_demo("--secure", "true")
        response, page = self.page(self.browser(demo), "/remember?ms=5000")
        self.assert_no_set_cookie(response)
        note = self.remember_note(page)
        assert note is not None
        self.assertIn("sends no Set-Cookie (secure cookie, but the request is not secure)", note)
        self.assertNotIn("next response", note)

    def test_a_refused_remember_has_no_note(self):
        """/remember?ms=x is a 400: nothing changed, so no note says the cookie has a max_age."""
        browser = self.browser(self.start_demo())
        self.page(browser)
        response, page = self.page(browser, "/remember?ms=x")
        self.assertEqual(response.status, 400)
        self.assertIsNone(self.remember_note(page))

    def test_a_hostile_user_name_shows_as_text(self):
        """/login?user=<script>... and an attribute-breaking name: no markup of theirs reaches the page."""
        demo = self.start_demo()
        for name in ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "' onmouseover='x"):
            with self.subTest(name=name):
                browser = self.browser(demo)
                login, login_page = self.page(browser, "/login?user=" + urllib.parse.quote(name))
                whoami, whoami_page = self.page(browser, "/whoami")
                self.assertEqual(login_page.paragraphs[0], f"Logged in as {name}")
                self.assertEqual(whoami_page.paragraphs[0], f"user: {name}")
                stored = whoami.body.split("<pre>", 1)[1].split("</pre>", 1)[0]
                self.assertEqual(json.loads(html.unescape(stored))["user"], name)
                for page in (login_page, whoami_page):
                    self.assertNotIn("script", [tag for tag, _ in page.tags])
                    self.assertNotIn("img", [tag for tag, _ in page.tags])
                    self.assertFalse([a for _, attrs in page.tags for a in attrs if a.startswith("on")])

    def test_head_sends_the_headers_of_the_page_without_it(self):
        """HEAD with Accept: text/html: the page's status and headers, no body."""
        demo = self.start_demo()
        connection = http.client.HTTPConnection("127.0.0.1", demo.server_address[1], timeout=10)
        self.addCleanup(connection.close)
        connection.request("HEAD", "/", headers=BROWSER_ACCEPT)
        answer = connection.getresponse()
        self.assertEqual((answer.status, answer.read()), (200, b""))
        self.assertEqual(answer.getheader("Content-Type"), "text/html; charset=utf-8")
        self.assertIsNotNone(answer.getheader("Set-Cookie"))


class TestDecisionHistory(unittest.TestCase):
    """The panel's memory of earlier requests: a few per browser, for a bounded number of browsers."""

    def test_keeps_a_few_visits_per_browser_newest_first(self):
        """Five visits kept, the newest first."""
        history = server.DecisionHistory(browsers=3, visits=5)
        for number in range(8):
            history.add("a", "a", server.Visit(f"GET /{number} HTTP/1.1", 200))
        self.assertEqual([v.request_line for v in history.earlier("a")],
                         [f"GET /{n} HTTP/1.1" for n in (7, 6, 5, 4, 3)])

    def test_keeps_a_bounded_number_of_browsers(self):
        """Past ``browsers`` ids the oldest one is forgotten."""
        history = server.DecisionHistory(browsers=3, visits=5)
        for number in range(10):
            history.add(None, f"id{number}", server.Visit("GET / HTTP/1.1", 200))
        self.assertEqual([bool(history.earlier(f"id{n}")) for n in range(10)], [False] * 7 + [True] * 3)

    def test_follows_the_browser_to_its_new_id(self):
        """After a login (a new id), the earlier visits are found under the new id, not the old."""
        history = server.DecisionHistory()
        history.add(None, "old", server.Visit("GET / HTTP/1.1", 200))
        history.add("old", "new", server.Visit("GET /login?user=ann HTTP/1.1", 200))
        self.assertEqual(history.earlier("old"), [])
        self.assertEqual(len(history.earlier("new")), 2)


class DevToolsSocket:
    """Just enough of a WebSocket client (RFC 6455) to speak Chrome's DevTools Protocol to one page."""

    def __init__(self, url: str) -> None:
        target = urllib.parse.urlsplit(url)
        self.socket = socket.create_connection((target.hostname, target.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.socket.sendall((f"GET {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.file = self.socket.makefile("rb")
        status = self.file.readline()
        if b" 101 " not in status:
            raise ConnectionError(f"no WebSocket: {status!r}")
        while self.file.readline() not in (b"\r\n", b""):
            pass
        self.calls = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.file.close()
        self.socket.close()

    def send_text(self, text: str) -> None:
        """One masked text frame, as a client must send it."""
        data = text.encode("utf-8")
        size = len(data)
        if size < 126:
            header = bytes([0x81, 0x80 | size])
        elif size < 1 << 16:
            header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        self.socket.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def receive_text(self) -> str:
        """The next whole text message (the server's frames are not masked)."""
        message = b""
        while True:
            first, second = self.file.read(2)
            size = second & 0x7F
            if size >= 126:
                size = int.from_bytes(self.file.read(2 if size == 126 else 8), "big")
            payload = self.file.read(size)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the connection")
            if opcode in (0x0, 0x1):
                message += payload
                if first & 0x80:
                    return message.decode("utf-8")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; events that come first are kept."""
        self.calls += 1
        self.send_text(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.receive_text())
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        """Wait for an event (the page's load), whether it came already or not."""
        while not any(message.get("method") == event for message in self.events):
            self.events.append(json.loads(self.receive_text()))
        self.events.clear()


class HeadlessChromium:
    """Chromium without a screen, driven over DevTools: visit a page, run a line in it, read its text."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--remote-debugging-port=0"]

    def __init__(self, profile: str) -> None:
        self.process = subprocess.Popen(
            ["chromium", *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        stuck = threading.Timer(60, self.process.kill)  # a browser that never says where it listens
        stuck.start()
        for line in self.process.stderr:  # type: ignore[union-attr]
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                url = match.group(1)
                break
        stuck.cancel()
        if url is None:
            self.process.wait(10)
            raise RuntimeError("chromium did not start its DevTools server")
        # Keep reading its stderr, so that a full pipe never stops the browser.
        self.drain = threading.Thread(target=self.process.stderr.read, daemon=True)  # type: ignore[union-attr]
        self.drain.start()
        connection = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(url).port, timeout=30)
        connection.request("GET", "/json/list")
        pages = json.loads(connection.getresponse().read())
        connection.close()
        self.page = DevToolsSocket(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        self.page.call("Page.enable")

    def close(self) -> None:
        self.page.close()
        self.process.terminate()
        self.process.wait(30)
        self.drain.join(10)
        self.process.stderr.close()  # type: ignore[union-attr]

    def run(self, expression: str) -> Any:
        """Evaluate an expression in the page and return its value."""
        return self.page.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def visit(self, url: str) -> str:
        """Go to ``url``, wait until it has loaded, return the page's first paragraph."""
        self.page.call("Page.navigate", url=url)
        self.page.wait_for("Page.loadEventFired")
        return self.run("document.querySelector('p').textContent")

    def follow(self, expression: str) -> str:
        """Run a line that leaves the page (a click, a form submission); return the next page's first paragraph."""
        self.run(expression)
        self.page.wait_for("Page.loadEventFired")
        return self.run("document.querySelector('p').textContent")


@unittest.skipUnless(shutil.which("chromium"), "chromium is not installed (apt-get install chromium)")
class TestServerInChromium(DemoServerCase):
    """A real browser: headless Chromium counts, logs in through the form, logs out through the link."""

    def test_counts_logs_in_and_logs_out_in_a_real_browser(self):
        """Three visits count 1, 2, 3; the form logs in; the link logs out; the panel is there throughout."""
        demo = self.start_demo(as_shipped=True)
        profile = tempfile.TemporaryDirectory()
        self.addCleanup(profile.cleanup)
        chromium = HeadlessChromium(profile.name)
        self.addCleanup(chromium.close)
        home = f"http://127.0.0.1:{demo.server_address[1]}/"
        self.assertEqual(chromium.visit(home), FIRST_VISIT)
        self.assertEqual(chromium.visit(home), "Number of views: 2")
        self.assertEqual(chromium.follow("location.reload()"), "Number of views: 3")
        self.assertEqual(chromium.run("document.querySelector('h2').textContent"), "What the session layer did")
        self.assertEqual(chromium.follow("document.querySelector('input[name=user]').value = '<b>ann</b>';"
                                         " document.querySelector('form').submit()"),
                         "Logged in as <b>ann</b>")
        self.assertEqual(chromium.run("document.querySelector('p').children.length"), 0,
                         "the name is text, not markup")
        self.assertEqual(chromium.follow("[...document.links].find(a => a.textContent == 'Who am I').click()"),
                         "user: <b>ann</b>")
        self.assertEqual(chromium.follow("[...document.links].find(a => a.textContent == 'Log out').click()"),
                         "Logged out")
        self.assertIn("destroy() removed the session", chromium.run("document.body.textContent"))
        self.assertEqual(chromium.visit(home + "whoami"), "user: none")
        self.assertEqual(chromium.visit(home), FIRST_VISIT)


# ==== Bad cookies ===========================================================
#
# Upstream: "when sid not properly signed" (should generate new session, should not
# attempt fetch from store) and "when sid not in store" (should create a new session,
# should have a new sid). Every bad cookie must give a NEW session, never a 500.


class TestBadCookies(DemoServerCase):
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


# ==== Store failures =====================================
#
# Upstream: "should pass session fetch error", "should treat ENOENT session fetch error
# as not found", "when session without cookie property in store" / "should pass error
# from inflate", "should pass session save error", "should pass session touch error",
# "should pass session destroy error".


class TestStoreFailures(DemoServerCase):
    """A store that fails: a 500 when loading; at the end, a logged error and a 500 instead of the handler's answer."""

    def start_failing_demo(self, *flags: str) -> tuple[server.SessionHTTPServer, FailingStore]:
        clock = FrozenClock()
        store = FailingStore(clock=clock)
        return self.start_demo(*flags, store=store, clock=clock), store

    def with_a_session(self, demo: server.SessionHTTPServer) -> tuple[DemoBrowser, str]:
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

    def test_the_reason_for_a_500_is_on_stderr(self):
        """The 500 says "the server log says why": the store's error is printed on stderr (no logging set up)."""
        demo, store = self.start_failing_demo()
        browser, _ = self.with_a_session(demo)
        store.fail["set"] = RuntimeError("the disk is full")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), mock.patch.object(logging.root, "handlers", []), \
                mock.patch.object(logging, "lastResort", logging.StreamHandler()):  # on err, as sys.stderr
            response = browser.get("/")
        self.assertEqual(response.status, 500)
        self.assertIn("the server log says why", response.body)
        self.assertIn("session store failed at the end of the request", err.getvalue())
        self.assertIn("RuntimeError: the disk is full", err.getvalue())

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
        """store.get returning a truthy value that is no session object gives a 500; so do {} and [] (truthy in JavaScript)."""
        demo, store = self.start_failing_demo()
        browser, _ = self.with_a_session(demo)
        for reply in ("a string", ["cookie"], 42, True, ("cookie",), {"cookie": "not an object"}, {}, []):
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

REDIS_LESSON_ADDRESS = "127.0.0.1:6379"  # where lesson 15's Redis listens, as a reader runs it
LESSONS_FILE = "LESSONS.md"  # next to session_demo.py
REPOSITORY = os.path.dirname(os.path.abspath(sd.__file__))
LESSONS_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
LESSONS_CONSOLE_BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)
LESSONS_LOG_BLOCK = re.compile(r"^```log\n(.*?)^```", re.MULTILINE | re.DOTALL)
LESSONS_CITATION = re.compile(r"^(?:Code|Tests): .*?(?=\n\n)", re.MULTILINE | re.DOTALL)
LESSONS_BACKTICKED = re.compile(r"`([^`]+)`")


class LessonsFile:
    """LESSONS.md, read and cut into lessons, and the doctest-style matching its outputs use."""

    @staticmethod
    def text(name: str = LESSONS_FILE) -> str:
        """The text of LESSONS.md (or README.md), found beside session_demo.py."""
        with open(os.path.join(REPOSITORY, name), encoding="utf-8") as file:
            return file.read()

    @classmethod
    def sections(cls) -> dict[int, str]:
        """Each numbered lesson's text (from its '## N.' heading to the next), by number.

        The Redis lesson talks to 127.0.0.1:6379; when redis-server is installed, the
        suite's own Redis (on a free port) stands in for it.
        """
        text = cls.text()
        if REDIS_LESSON_ADDRESS in text and REDIS_SERVER:
            text = text.replace(REDIS_LESSON_ADDRESS, f"127.0.0.1:{shared_redis().port}")
        starts = list(LESSONS_HEADING.finditer(text))
        sections = {}
        for here, after in zip(starts, starts[1:] + [None]):
            sections[int(here.group(1))] = text[here.start(): after.start() if after else len(text)]
        return sections

    @staticmethod
    def matches(expected: str, actual: str) -> bool:
        """Does ``actual`` match ``expected``, where '...' in ``expected`` stands for any text?"""
        return doctest.OutputChecker().check_output(expected, actual, doctest.ELLIPSIS)

    @staticmethod
    def examples(text: str) -> list[doctest.Example]:
        """The >>> examples of ``text``, in order, as doctest reads them, each with ``typed``.

        ``example.typed`` is what a reader pastes: the example's lines as the
        text shows them, prompts taken off. Unlike doctest's ``source`` it
        keeps the empty line ('...' with nothing after it) that closes a block.
        """
        lines = text.splitlines()
        examples = doctest.DocTestParser().get_examples(text)
        for example in examples:
            typed = [lines[example.lineno][4:]]
            for line in lines[example.lineno + 1:]:
                if line != "..." and not line.startswith("... "):
                    break
                typed.append(line[4:])
            example.typed = "".join(line + "\n" for line in typed)
        return examples

    @classmethod
    def shows(cls, example: doctest.Example, actual: str) -> bool:
        """Does the output a fresh ``python3`` printed for ``example`` match what the text shows?

        A traceback is matched as doctest matches one: the header, then the
        exception line(s) after the stack.
        """
        if example.exc_msg is None:
            return cls.matches(example.want, actual)
        header = "Traceback (most recent call last):\n"
        if not actual.startswith(header):
            return False
        lines = actual[len(header):].splitlines(keepends=True)
        stack = 0
        while stack < len(lines) and lines[stack].startswith(" "):
            stack += 1
        return cls.matches(example.exc_msg, "".join(lines[stack:]))

    @staticmethod
    def run_as_typed(lessons: list[list[doctest.Example]]) -> list[list[tuple[doctest.Example, str]]]:
        """Type each lesson's examples into its own fresh ``python3 -i``; return what each printed.

        One interpreter per lesson, all started at once. Each gets exactly
        the lines a reader pastes (the >>> and ... prompts taken off, the
        blank line that closes a block included). The prompts are set to
        marker lines (on stderr, merged with stdout, all unbuffered), so the
        output can be cut back into one piece per input line: what a
        statement prints comes after the prompt for its last line.
        """
        marker = "\x1e@@prompt@@\n"
        prompts = f"import sys; sys.ps1 = sys.ps2 = {marker!r}; del sys"
        env = {key: value for key, value in os.environ.items() if key != "PYTHONSTARTUP"}
        env["PYTHONIOENCODING"] = "utf-8"
        processes = []
        for examples in lessons:
            typed = "".join(example.typed for example in examples)
            process = subprocess.Popen(
                [sys.executable, "-u", "-q", "-i", "-c", prompts], cwd=REPOSITORY, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, encoding="utf-8")
            processes.append((process, typed))
        results = []
        for (process, typed), examples in zip(processes, lessons):
            out, _ = process.communicate(typed, timeout=120)
            after_line = out.split(marker)[1:]  # [k]: what reading input line k+1 printed
            shown, line = [], 0
            for example in examples:
                count = len(example.typed.splitlines())
                shown.append((example, "".join(after_line[line: line + count])))
                line += count
            results.append(shown)
        return results


class TestLessonsDoctest(unittest.TestCase):
    """Every lesson, pasted alone into a fresh python3 (and run under doctest), prints what it shows."""

    def lessons_with_snippets(self) -> dict[int, list[doctest.Example]]:
        lessons = {number: LessonsFile.examples(text) for number, text in self.runnable_sections().items()}
        return {number: examples for number, examples in lessons.items() if examples}

    def runnable_sections(self) -> dict[int, str]:
        """The lessons whose snippets can run here: the Redis lesson needs redis-server."""
        sections = LessonsFile.sections()
        if not REDIS_SERVER:
            sections = {number: text for number, text in sections.items() if REDIS_LESSON_ADDRESS not in text}
        return sections

    def test_each_lesson_pasted_into_a_fresh_python3_prints_what_it_shows(self):
        """python3 -i, one per lesson, fed the lesson's lines as typed: each output matches (ELLIPSIS)."""
        lessons = self.lessons_with_snippets()
        self.assertGreaterEqual(len(lessons), 12, "LESSONS.md lost its snippets")
        for number, shown in zip(lessons, LessonsFile.run_as_typed(list(lessons.values()))):
            for example, actual in shown:
                with self.subTest(lesson=number, line=example.lineno + 1, source=example.source.splitlines()[0]):
                    self.assertTrue(LessonsFile.shows(example, actual),
                                    f"LESSONS.md shows:\n{example.exc_msg or example.want}python3 printed:\n{actual}")

    def test_each_lesson_alone_passes_under_doctest(self):
        """doctest over each lesson on its own, with fresh globals (ELLIPSIS only): no example fails."""
        for logger in (logging.getLogger("session_demo"), logging.root):  # a lesson may configure logging
            self.addCleanup(setattr, logger, "handlers", list(logger.handlers))
            self.addCleanup(logger.setLevel, logger.level)
        for number, text in self.runnable_sections().items():
            with self.subTest(lesson=number):
                test = doctest.DocTestParser().get_doctest(text, {"__name__": "lessons"},
                                                           f"lesson {number}", LESSONS_FILE, 0)
                report = io.StringIO()
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
                result = runner.run(test, out=report.write, clear_globs=True)
                self.assertEqual(result.failed, 0, "\n" + report.getvalue())

    def test_every_block_is_closed_by_a_blank_line_as_the_prompt_needs(self):
        """After a def, class, for, with, if or try block comes a '...' line with nothing after it."""
        for number, text in LessonsFile.sections().items():
            for example in LessonsFile.examples(text):
                first = example.typed.split("\n", 1)[0]
                if re.match(r"(def|class|for|while|with|if|try|async)\b.*:", first):
                    with self.subTest(lesson=number, source=first):
                        self.assertTrue(example.typed.endswith("\n\n"), example.typed)

    def test_every_lesson_from_one_to_seventeen_is_there(self):
        """LESSONS.md has lessons 1 to 17, in order; 1 to 15 each with code, tests and a 'Try this'."""
        sections = LessonsFile.sections()
        self.assertEqual(list(sections), list(range(1, 18)))
        for number in range(1, 16):
            with self.subTest(lesson=number):
                self.assertIn("**Try this.**", sections[number])
                self.assertIn("Code: ", sections[number])
                self.assertLessEqual(sections[number].count("\nTests: ") + sections[number].count(" Tests: "), 1)

    def test_the_file_ends_with_what_is_left_out_and_what_we_do_differently(self):
        """Lesson 16 is what is left out; lesson 17, the last, the differences from express-session."""
        sections = LessonsFile.sections()
        self.assertTrue(sections[16].startswith("## 16. What's left out"))
        self.assertTrue(sections[17].startswith("## 17. What we do differently"))
        for difference in ("No secret, no server", "Bad options fail at construction",
                           "Reserved keys are refused", "Logs shorten session ids", "Not ported"):
            with self.subTest(difference=difference):
                self.assertIn(difference, sections[17])

    def test_no_lesson_points_forward(self):
        """A lesson mentions only lessons before it (the two appendices may point anywhere)."""
        for number, text in LessonsFile.sections().items():
            if number >= 16:
                continue
            for cited in re.findall(r"\blessons? (\d+)(?:(?:,| and) (\d+))*", text):
                for other in filter(None, cited):
                    with self.subTest(lesson=number, cites=other):
                        self.assertLessEqual(int(other), number)

    def test_the_contents_line_links_every_heading(self):
        """Each heading's GitHub anchor is linked from the contents, and every link there resolves."""
        text = LessonsFile.text()
        anchors = {github_anchor(heading) for heading in re.findall(r"^## (.+)$", text, re.MULTILINE)}
        links = set(re.findall(r"\]\(#([^)]+)\)", text))
        self.assertEqual(links, anchors)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


class TestLessonsCitedNames(unittest.TestCase):
    """Every function, class and test class a lesson cites (in its Code:/Tests: lines) exists."""

    @staticmethod
    def namespaces_with_tests() -> list[Any]:
        """Where test classes live: this module (test_session)."""
        names = [__name__, "test_session", "session_demo_extras.test_concurrency", "session_demo_extras.test_stores", "session_demo_extras.test_wsgi",
                 "session_demo_extras.test_redis_store"]
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
            importlib.import_module("session_demo_extras." + name)
        code = [name for kind, name in self.cited() if kind == "code"]
        self.assertGreater(len(code), 30)
        for name in code:
            with self.subTest(name=name):
                spaces = (sd, server, types.SimpleNamespace(session_demo_extras=importlib.import_module("session_demo_extras")))
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
        headers = {"User-Agent": "curl/8.5.0", "Accept": "*/*", **headers}  # as curl sends them
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


class LessonsReplayCase(DemoServerCase):
    """Replays a ```console walkthrough (python3 server.py, then curls) against real demo servers."""

    def replay(self, lesson: int) -> int:
        """Run each ```console block of a lesson: start servers, send the curls, compare the output.

        Returns the number of curl commands checked.
        """
        blocks = LESSONS_CONSOLE_BLOCK.findall(LessonsFile.sections()[lesson])
        self.assertTrue(blocks, f"lesson {lesson} has no walkthrough")
        return sum(self.replay_block(block) for block in blocks)

    def replay_block(self, block: str) -> int:
        """Run one walkthrough; return the number of curl commands checked."""
        checked = 0
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
            self.assertTrue(LessonsFile.matches("\n".join(expected), shown),
                            f"the lines shown are not what curl -i shows, in order:\n{shown}")


class TestLessonsWalkthroughs(LessonsReplayCase):
    """Each lesson's server walkthrough, replayed against server.py: the reader sees what it shows."""

    WALKTHROUGH_LESSONS = {1, 5, 6, 7, 9, 11, 12, 13, 15}  # REPLAYS and REPLAYED_ELSEWHERE below
    # Lesson 15 runs two servers, a Redis and a Node app; these tests run its steps instead.
    REPLAYED_ELSEWHERE = {15: "session_demo_extras.test_redis_store: TestRedisStoreTwoProcesses, TestRedisStoreAvailability"}

    def test_every_walkthrough_is_replayed(self):
        """The lessons that have a ```console block are exactly those with a replay test here, or elsewhere."""
        with_walkthroughs = {number for number, section in LessonsFile.sections().items()
                             if LESSONS_CONSOLE_BLOCK.search(section)}
        self.assertEqual(with_walkthroughs, self.WALKTHROUGH_LESSONS)
        self.assertEqual(set(self.REPLAYS) | set(self.REPLAYED_ELSEWHERE), self.WALKTHROUGH_LESSONS)

    # lesson: (what the walkthrough shows, how many requests it makes)
    REPLAYS = {
        1: ("a first visit sets the cookie; the jar brings it back; the count is on the server", 3),
        5: ("a bad signature or an unsigned value is a first visit, with a new cookie", 2),
        6: ("after a restart the correctly signed cookie finds nothing: a first visit again", 2),
        7: ("--no-save-uninitialized: /peek sets no cookie; the first count does", 3),
        9: ("/remember sends no cookie; the next change sends one with Expires; --rolling always", 5),
        11: ("the victim logs in with the attacker's cookie; the attacker's id then finds nothing", 4),
        12: ("/logout sends no Set-Cookie; --unset destroy: /forget deletes the stored session", 6),
        13: ("--secure true over HTTP: no cookie, a first visit every time; --proxy true trusts "
             "X-Forwarded-Proto", 4),
    }

    def test_each_walkthrough_shows_what_the_server_answers(self):
        """Each lesson's curl walkthrough, replayed against server.py, gets exactly the answers shown."""
        for lesson, (story, requests) in self.REPLAYS.items():
            with self.subTest(lesson=lesson, story=story):
                self.assertEqual(self.replay(lesson), requests)

    def test_the_trace_flag_the_lessons_point_at_exists(self):
        """Lesson 2 points at python3 server.py --trace; the flag is there."""
        self.assertIn("python3 server.py --trace", LessonsFile.sections()[2])
        self.assertTrue(server.parse_args(["--trace"]).trace)


class TestLessonsTour(DemoServerCase):
    """python3 server.py --tour: a few requests with server.py's defaults, on one 80-column screen."""

    def tour_lines(self) -> list[str]:
        out = io.StringIO()
        tour(out=out)
        return out.getvalue().splitlines()

    def test_fits_on_one_screen_of_80_columns(self):
        """The tour is at most 45 lines, none wider than 80 characters."""
        lines = self.tour_lines()
        self.assertLessEqual(len(lines), 45)
        self.assertLessEqual(max(len(line) for line in lines), 80)

    def test_prints_the_same_every_time(self):
        """A clock that stands still and numbered ids: two runs print the same text."""
        self.assertEqual(self.tour_lines(), self.tour_lines())

    def test_decides_as_server_py_does_with_its_defaults(self):
        """The first three requests log what server.py --trace logs for /, / and /peek (store calls aside)."""
        demo = self.start_demo("--trace")
        browser = self.browser(demo)
        for path in ("/", "/", "/peek"):
            browser.get(path)
        hidden = ("fetching ", "saving ")
        traced = [[line.strip() for line in block.splitlines()[1:] if not line.strip().startswith(hidden)]
                  for block in demo.trace.getvalue().split("GET ")[1:]]
        text = "\n".join(self.tour_lines())
        for number, expected in enumerate(traced, start=1):
            with self.subTest(request=number):
                block = text.split(f"\n{number}. ", 1)[1].split("\n\n", 1)[0]
                logged = [line.split(None, 1)[1] if line.startswith("log:") else line
                          for line in (line.strip() for line in block.splitlines())
                          if line and not line.startswith(("Cookie:", "Set-Cookie:", "Path=", "store:"))
                          and " = {" not in line][1:]
                self.assertEqual(logged, expected)

    def test_shows_the_signed_cookie_without_an_expiry(self):
        """The first Set-Cookie is sid1 signed with 'keyboard cat': a browser-session cookie, no Expires."""
        value = sd.encode_uri_component("s:" + sd.sign("sid1", SECRET))
        lines = [line.strip() for line in self.tour_lines()]
        first = lines.index(f"Set-Cookie: connect.sid={value}")
        self.assertEqual(lines[first + 1], "Path=/; HttpOnly")
        self.assertNotIn("Expires", "\n".join(lines))

    def test_the_forged_id_is_not_one_the_server_hands_out(self):
        """The forged cookie names sid9; the forger gets the next new id, sid2; sid9 is never stored."""
        text = "\n".join(self.tour_lines())
        forged = text.split("\n4. ", 1)[1]
        self.assertIn("s%3Asid9.", forged)
        self.assertIn("cookie signature invalid", forged)
        self.assertIn("Set-Cookie: connect.sid=s%3Asid2.", forged)
        self.assertNotIn("sid9 = ", text)

    def test_shows_the_store_as_json(self):
        """Each store line is the MemoryStore's JSON with its cookie part left out: views 1, then 2."""
        stored = [line.split(" = ", 1) for line in self.tour_lines() if " = {" in line]
        self.assertEqual([(sid.split()[-1], json.loads(text.replace("{...}", "{}")).get("views"))
                          for sid, text in stored],
                         [("sid1", 1), ("sid1", 2), ("sid1", 2), ("sid2", None)])


class TestHostileCookieHeader(DemoServerCase):
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
        HostileHelpers.store_both(self.store)
        self.stored_before = dict(self.store.sessions)

    def assert_express_outcome(self, response: Response, expected: str, since: int) -> None:
        """200 with the body express gives; a new session has a new id; the other sessions are not touched."""
        self.assertEqual((response.status, response.body), (200, expected))
        touched = HostileHelpers.ids_touched(self.store, since)
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
                lines = [HostileHelpers.expand(line) for line in lines]
                response = self.browser(self.demo).get("/peek", cookie_lines=lines)
                self.assert_express_outcome(response, expected, since)

    def test_control_characters_never_give_a_500(self):
        """Control characters, NUL and DEL in the Cookie header: 200, the session found as cookie.parse finds it; a bare CR: 400."""
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
        ]
        for description, line, expected in cases:
            with self.subTest(description):
                since = len(self.store.log)
                block = b"Cookie: " + HostileHelpers.expand(line) + b"\r\n"
                response = HostileHelpers.raw_get(self.demo.server_address[1], block)
                self.assert_express_outcome(response, expected, since)
        # A bare CR ends the line for http.server's parser and hides the headers after it: 400, as Node.
        block = b"Cookie: " + HostileHelpers.expand(b"a=\rb; <good>") + b"\r\n"
        self.assertEqual(HostileHelpers.raw_get(self.demo.server_address[1], block).status, 400)

    def test_heads_up_to_16_kb_are_answered_and_larger_ones_get_431(self):
        """Oversized Cookie headers (CVE-2024-7592 shape): found under the 16 KB head limit (Node's), a 431 above it."""
        # http.server alone reads 100 lines of up to 65,536 bytes; the adapter caps the head at 16 KB, as Node does.
        since = len(self.store.log)
        line = "; ".join(f"k{i}=v{i}" for i in range(1100)) + "; <good>"  # 14 KB
        response = self.browser(self.demo).get("/peek", cookie_lines=[HostileHelpers.expand(line)])
        self.assert_express_outcome(response, HOSTILE_FOUND_GOOD, since)
        cases = [
            ("3,000 pairs before ours (37 KB)", "; ".join(f"k{i}=v{i}" for i in range(3000)) + "; <good>"),
            ("60 KB of backslash-escaped quoted text before ours", 'a="' + '\\"' * 30000 + '"; <good>'),
            ("66 KB of backslash-escaped quoted text before ours", 'a="' + '\\"' * 33000 + '"; <good>'),
        ]
        for description, line in cases:
            with self.subTest(description):
                since = len(self.store.log)
                response = self.browser(self.demo).get("/peek", cookie_lines=[HostileHelpers.expand(line)])
                self.assertEqual(response.status, 431)
                self.assertEqual(response.set_cookies, [])
                self.assertEqual(self.store.log[since:], [], "the session layer never saw the request")


class TestHostileStoreFaults(DemoServerCase):
    """A store that holds corrupt data or is slow: a clear 500 on load, nothing written, other sessions unaffected."""

    def setUp(self) -> None:
        super().setUp()
        self.demo = self.start_demo()
        self.store = self.store_of(self.demo)
        HostileHelpers.store_both(self.store)

    def get_with(self, session_id: str, path: str = "/") -> Response:
        return self.browser(self.demo).get(path, cookie_lines=["connect.sid=" + HostileHelpers.value(session_id)])

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
        HostileHelpers.store_both(self.store)  # back to views 1 and 5 for the next case

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
        store = FailingStore()
        demo = self.start_demo(store=store)
        deep: dict[str, Any] = {}
        for _ in range(100000):
            deep = {"x": deep}
        store.replies["get"] = {"cookie": dict(HOSTILE_COOKIE_JSON), "deep": deep}
        browser = self.browser(demo)
        with self.assertLogs("session_demo", logging.ERROR):
            response = browser.get("/", cookie_lines=["connect.sid=" + HostileHelpers.value("any-id")])
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
        test_server = LiveServer(self, app, store=store)
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
        HostileHelpers.store_both(store)
        demo = self.start_demo(store=store)
        browser, slow_browser = self.browser(demo), self.browser(demo)
        slow: dict[str, Response] = {}
        waiter = threading.Thread(target=lambda: slow.update(response=slow_browser.get(
            "/", cookie_lines=["connect.sid=" + HostileHelpers.value(HOSTILE_GOOD_ID)])))
        waiter.start()
        self.addCleanup(waiter.join, 10)
        self.addCleanup(release.set)
        self.assertTrue(entered.wait(10))
        other = ["connect.sid=" + HostileHelpers.value(HOSTILE_OTHER_ID)]
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
        HostileHelpers.store_both(store)
        demo = self.start_demo(store=store)
        browser = self.browser(demo)
        good = ["connect.sid=" + HostileHelpers.value(HOSTILE_GOOD_ID)]
        other = ["connect.sid=" + HostileHelpers.value(HOSTILE_OTHER_ID)]
        answers = []
        with self.assertLogs("session_demo", logging.ERROR):
            for _ in range(2):
                answers.append((browser.get("/", cookie_lines=good).status,
                                browser.get("/", cookie_lines=other).body))
        self.assertEqual(answers, [(500, "Number of views: 6"), (500, "Number of views: 7")])
        self.assertEqual(json.loads(store.sessions[HOSTILE_GOOD_ID])["views"], 1)


class TestHostileLoad(DemoServerCase):
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


class TestHostileFloodingOverHTTP(DemoServerCase):
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
                      "connect.sid=" + HostileHelpers.value(session_id, server.DEMO_SECRET)][index % 3]
            connection.request("GET", "/peek", headers={"Cookie": cookie} if cookie else {})
            answer = connection.getresponse()
            answers[(answer.status, answer.read().decode(), answer.getheader("Set-Cookie"))] += 1
        self.assertEqual(answers, Counter({(200, "views: none", None): 300}))
        self.assertEqual(store.sessions, {})
        self.assertEqual(store.calls, Counter({"get": 100}))

if __name__ == "__main__":
    unittest.main()


# ==== README.md, kept true ====================================================
#
# The README's commands and examples are checked the way the lessons are: what
# server.py prints at start-up, the curl session replayed against a real
# server.py, the python examples run (and counted 1, 2, 3 as a browser would,
# /favicon.ico included), the sh commands parsed, the files and links found.

README_FILE = "README.md"
README_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_SAMPLE_COOKIE = re.compile(r"connect\.sid=(s%3A([A-Za-z0-9_-]{32})\.[A-Za-z0-9%]+);")


class TestReadme(LessonsReplayCase):
    """README.md shows what a user sees: each command, output, example, file and link is real."""

    def blocks(self, language: str) -> list[str]:
        """The README's fenced blocks of one language ('console', 'sh', 'python', or '')."""
        return [body for lang, body in README_BLOCK.findall(LessonsFile.text(README_FILE)) if lang == language]

    def test_python3_server_py_prints_what_the_readme_shows(self):
        """The start-up lines shown under '$ python3 server.py' are what server.main() prints (port 3000)."""
        command, expected = self.commands(self.blocks("console")[0])[0]
        self.assertEqual(command, "python3 server.py")
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(server.DemoServer, "serve_forever", side_effect=KeyboardInterrupt), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(server.main(["--port", "0"]), 0)
        printed = [line for line in err.getvalue().splitlines() if line and line != "stopped"]
        printed += out.getvalue().splitlines()
        port = re.search(r"127\.0\.0\.1:(\d+)/", out.getvalue()).group(1)
        self.assertEqual([line.replace(f":{port}/", ":3000/") for line in printed], expected)

    def test_the_curl_session_is_what_curl_shows(self):
        """The console blocks, replayed as one session against server.py, answer as shown."""
        text = "".join(self.blocks("console"))
        sample = README_SAMPLE_COOKIE.search(text)
        self.assertIsNotNone(sample, "the README shows a sample cookie")
        replayed = text.replace(sample.group(1), "s%3A...")  # the id is random: any signed id will do
        self.assertEqual(self.replay_block(replayed), 2)

    def test_the_sample_cookie_is_signed_with_the_demo_secret(self):
        """The sample Set-Cookie value is s: + its id, signed with 'keyboard cat', percent-encoded."""
        value, session_id = README_SAMPLE_COOKIE.search(LessonsFile.text(README_FILE)).groups()
        self.assertEqual(value, sd.encode_uri_component("s:" + sd.sign(session_id, server.DEMO_SECRET)))
        self.assertIn(f"`{server.DEMO_SECRET}`", LessonsFile.text(README_FILE))

    def test_the_first_thing_to_do_is_open_the_demo(self):
        """Right after starting the server, the README says to open http://127.0.0.1:3000/."""
        text = LessonsFile.text(README_FILE)
        after_start = text.split("$ python3 server.py", 1)[1].split("```", 1)[1]
        self.assertTrue(after_start.lstrip().startswith("Open <http://127.0.0.1:3000/>"), after_start[:80])

    def test_each_sh_command_runs_as_written(self):
        """Each sh command names a file that exists and flags it accepts (server.py's parse them)."""
        commands = [line.split("#", 1)[0].strip() for block in self.blocks("sh") for line in block.splitlines()]
        self.assertGreaterEqual(len(commands), 6)
        for command in filter(None, commands):
            with self.subTest(command=command):
                argv = shlex.split(command)
                self.assertEqual(argv[0], "python3")
                if argv[1:3] == ["-m", "unittest"]:
                    continue
                self.assertTrue(os.path.isfile(os.path.join(REPOSITORY, argv[1])), argv[1])
                if argv[1] == "server.py":
                    with contextlib.redirect_stdout(io.StringIO()):
                        try:
                            server.parse_args(argv[2:])
                        except SystemExit as exit:  # --help
                            self.assertEqual(exit.code, 0)
                else:
                    source = LessonsFile.text(argv[1])
                    for flag in argv[2:]:
                        self.assertIn(f'"{flag}"', source)

    def run_example(self, code: str) -> Any:
        """Run a python example up to its last line, which must be '<server>.serve_forever()'.

        Returns the server that line would serve, built on port 0 instead of 8000.
        """
        tree = ast.parse(code)
        last = tree.body[-1]
        self.assertTrue(isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
                        and isinstance(last.value.func, ast.Attribute)
                        and last.value.func.attr == "serve_forever", "the example ends in serve_forever()")

        class AnyPort(ast.NodeTransformer):
            def visit_Constant(self, node: ast.Constant) -> ast.Constant:
                return ast.copy_location(ast.Constant(0), node) if node.value == 8000 else node

        namespace: dict[str, Any] = {"__name__": "readme_example"}
        exec(compile(ast.Module(tree.body[:-1], type_ignores=[]), README_FILE, "exec"), namespace)
        built = ast.fix_missing_locations(ast.Expression(AnyPort().visit(last.value.func.value)))
        example = eval(compile(built, README_FILE, "eval"), namespace)
        thread = threading.Thread(target=example.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.addCleanup(self._stop_demo, example, thread)
        return example

    def test_the_two_examples_count_1_2_3_in_a_browser(self):
        """Each 'use it in your own server' example counts 1, 2, 3 while the browser also asks for /favicon.ico."""
        import http.server
        quiet = mock.patch.object(http.server.BaseHTTPRequestHandler, "log_message")  # no access log
        quiet.start()
        self.addCleanup(quiet.stop)
        examples = [code for code in self.blocks("python") if not self.framework_recipe(code)]
        self.assertEqual(len(examples), 2)
        for code in examples:
            with self.subTest(example=code.splitlines()[0]):
                example = self.run_example(code)
                browser = DemoBrowser(example.server_address[1])
                views = []
                for _ in range(3):
                    views.append(browser.get("/").body)
                    self.assertEqual(browser.get("/favicon.ico").status, 404)
                self.assertEqual(views, ["views: 1", "views: 2", "views: 3"])

    @staticmethod
    def framework_recipe(code: str) -> bool:
        """A recipe for a third-party framework (Flask, Starlette, FastAPI), which the suite cannot run."""
        return bool(re.search(r"^(from|import) (flask|starlette|fastapi)\b", code, re.MULTILINE))

    def test_the_framework_recipes_are_python_and_import_what_the_package_has(self):
        """The Flask and Starlette recipes parse, and each name they import from session_demo* exists."""
        recipes = [code for code in self.blocks("python") if self.framework_recipe(code)]
        self.assertEqual(len(recipes), 2)
        for code in recipes:
            with self.subTest(recipe=code.splitlines()[1]):
                for node in ast.walk(ast.parse(code)):
                    if isinstance(node, ast.ImportFrom) and node.module.startswith("session_demo"):
                        module = importlib.import_module(node.module)
                        for alias in node.names:
                            self.assertTrue(hasattr(module, alias.name), f"{node.module}.{alias.name}")

    def test_the_file_table_names_files_that_exist(self):
        """Each file in 'How the files fit together' exists; so does each extras/*.py it names."""
        text = LessonsFile.text(README_FILE)
        table = text.split("## How the files fit together", 1)[1].split("\n## ", 1)[0]
        rows = re.findall(r"^\| `([^`]+)` \|(.*)\|$", table, re.MULTILINE)
        self.assertGreaterEqual(len(rows), 8)
        for name, description in rows:
            with self.subTest(file=name):
                self.assertTrue(os.path.exists(os.path.join(REPOSITORY, name)), name)
                for inner in re.findall(r"`([\w.]+\.py)`", description):
                    self.assertTrue(os.path.isfile(os.path.join(REPOSITORY, name, inner))
                                    or os.path.isfile(os.path.join(REPOSITORY, inner)), inner)

    def test_every_link_resolves_inside_the_repository(self):
        """Every relative link (and its #anchor) points into the repository; nothing points outside it."""
        text = LessonsFile.text(README_FILE)
        self.assertNotIn("../", text)
        self.assertNotIn("ROUTES.md", text)
        links = [link for link in re.findall(r"\]\(([^)]+)\)", text) if not link.startswith("https://")]
        self.assertGreaterEqual(len(links), 17)
        for link in links:
            with self.subTest(link=link):
                path, _, anchor = link.partition("#")
                self.assertTrue(os.path.exists(os.path.join(REPOSITORY, path)), path)
                if anchor:
                    headings = re.findall(r"^#+ (.+)$", LessonsFile.text(path), re.MULTILINE)
                    self.assertIn(anchor, {github_anchor(heading) for heading in headings})

    def test_the_lessons_listed_are_the_lessons_there(self):
        """The README's list of lessons has every lesson's title, in order."""
        titles = [section.split("\n", 1)[0].split(". ", 1)[1] for section in LessonsFile.sections().values()]
        listed = re.findall(r"^\d+\. \[([^\]]+)\]\(LESSONS\.md#", LessonsFile.text(README_FILE), re.MULTILINE)
        self.assertEqual(listed, titles)
