"""Tests for session_demo_extras.wsgi: SessionWSGIMiddleware behaves as the http.server adapter does."""

from __future__ import annotations

import http.client
import io
import json
import logging
import sys
import threading
import unittest
from unittest import mock
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.util import setup_testing_defaults

import session_demo as sd
from session_demo_extras.concurrency import SessionBusyError
from session_demo_extras.wsgi import SessionWSGIMiddleware
from session_demo import MemoryStore, SessionMiddleware, SessionOptions
from session_demo_extras.test_concurrency import with_concurrency
from test_session import (
    CountingStore, FrozenClock, START, SessionAssertions, TestHostileSetCookie, LiveServer,
    cookie_pair, make_options, run_request,
)

# ==== WSGI (beyond express) =================================================


# ==== SessionWSGIMiddleware (beyond express: WSGI) ===========================


class QuietWSGIHandler(WSGIRequestHandler):
    """wsgiref's request handler without its access log or its tracebacks on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_stderr(self) -> io.StringIO:
        return io.StringIO()


class LiveWSGIServer(LiveServer):
    """A wsgiref server on a free loopback port running SessionWSGIMiddleware(app); ``get()`` as LiveServer's."""

    def __init__(self, testcase: unittest.TestCase, app: Callable[..., Any],
                 options: SessionOptions | None = None, **overrides: Any) -> None:
        self.options = options or make_options(**overrides)
        self.middleware = SessionMiddleware(self.options)
        self.store = self.options.store
        self.server = make_server("127.0.0.1", 0, SessionWSGIMiddleware(app, self.middleware),
                                  handler_class=QuietWSGIHandler)
        self.port = self.server.server_address[1]
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        testcase.addCleanup(self.stop, thread)


class FakeWSGIServer:
    """Drive a WSGI application in-process as a PEP 3333 server does, noting what it is handed.

    ``log`` is shared with the store (a CountingStore's ``log``) so that the
    order of store calls and chunks handed to the server can be checked.
    """

    def __init__(self, log: list[tuple[str, Any]] | None = None) -> None:
        self.log: list[tuple[str, Any]] = log if log is not None else []
        self.starts: list[tuple[str, list[tuple[str, str]], bool]] = []
        self.headers_sent = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            if self.headers_sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.starts:
            raise AssertionError("start_response called a second time without exc_info")
        self.starts.append((status, list(headers), exc_info is not None))
        return self.write

    def write(self, data: bytes) -> None:
        self.headers_sent = True
        self.log.append(("handed", data))

    @property
    def status(self) -> str:
        return self.starts[-1][0]

    @property
    def set_cookies(self) -> list[str]:
        return [value for name, value in self.starts[-1][1] if name == "Set-Cookie"]

    @staticmethod
    def environ(path: str = "/", cookie: str | None = None, **extra: Any) -> dict[str, Any]:
        environ: dict[str, Any] = {"PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": ""}
        if cookie is not None:
            environ["HTTP_COOKIE"] = cookie
        environ.update(extra)
        setup_testing_defaults(environ)
        return environ

    def run(self, app: Callable[..., Any], *, stop_after: int | None = None,
            **environ: Any) -> bytes:
        """Call the app, hand its non-empty chunks over (at most ``stop_after``), then close it."""
        result = app(self.environ(**environ), self.start_response)
        body = b""
        handed = 0
        try:
            for chunk in result:
                if stop_after is not None and handed >= stop_after:
                    break  # the client went away
                if chunk:
                    self.write(chunk)
                    body += chunk
                    handed += 1
        finally:
            if hasattr(result, "close"):
                result.close()
        return body


class RecordingBody:
    """An application iterable that notes each chunk it produces and its close(); it can fail midway."""

    def __init__(self, chunks: list[bytes], log: list[tuple[str, Any]] | None = None,
                 fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.log: list[tuple[str, Any]] = log if log is not None else []
        self.fail_at = fail_at
        self.close_calls = 0
        self.closed = threading.Event()

    def __iter__(self):
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise RuntimeError("the body failed midway")
            self.log.append(("produced", chunk))
            yield chunk

    def close(self) -> None:
        self.close_calls += 1
        self.log.append(("close", None))
        self.closed.set()


class FlakyStore(MemoryStore):
    """A MemoryStore whose get or set fails, with a message that must not reach the client."""

    SECRET_TEXT = "db password hunter2 at 10.0.0.7"

    def __init__(self, *, failing: set[str] | None = None) -> None:
        super().__init__()
        self.failing: set[str] = failing or set()

    def get(self, sid):
        if "get" in self.failing:
            raise RuntimeError(self.SECRET_TEXT)
        return super().get(sid)

    def set(self, sid, session):
        if "set" in self.failing:
            raise RuntimeError(self.SECRET_TEXT)
        super().set(sid, session)


class WSGICase(SessionAssertions):
    """Shared apps and helpers for the WSGI adapter's tests (no tests of its own)."""

    @staticmethod
    def reply(start_response: Callable[..., Any], text: str, status: str = "200 OK",
              headers: list[tuple[str, str]] | None = None) -> list[bytes]:
        body = text.encode("utf-8")
        start_response(status, [*(headers or []), ("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        return [body]

    @classmethod
    def routes(cls, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """The demo's routes, as a WSGI application."""
        path = environ["PATH_INFO"]
        session = environ["session_demo.session"]
        state = environ["session_demo.state"]
        if session is None:
            return cls.reply(start_response, "no session")
        if path == "/":
            if "views" in session:
                session["views"] += 1
                return cls.reply(start_response, f"Number of views: {session['views']}")
            session["views"] = 1
            return cls.reply(start_response, "Welcome! This is your first visit.")
        if path == "/peek":
            return cls.reply(start_response, f"views: {session.get('views', 'none')}")
        if path == "/login":
            session.regenerate()["user"] = "ann"
            return cls.reply(start_response, "Logged in as ann")
        if path == "/logout":
            session.destroy()
            return cls.reply(start_response, "Logged out")
        if path == "/forget":
            state.session = None
            return cls.reply(start_response, "Forgotten")
        return cls.reply(start_response, "Not Found", "404 Not Found")

    def serve(self, app: Callable[..., Any] | None = None, **overrides: Any) -> LiveWSGIServer:
        return LiveWSGIServer(self, app or self.routes, **overrides)

    def stored(self, store: MemoryStore) -> dict[str, dict[str, Any]]:
        return {sid: json.loads(text) for sid, text in store.sessions.items()}


class TestWSGIViewCounter(WSGICase):
    """The view counter through wsgiref: the session lives in environ and in the store."""

    def test_first_visit_sets_the_cookie_and_later_visits_count(self):
        """A first visit gets a cookie; sending it back finds the session, and the count goes up."""
        server = self.serve()
        first = server.get("/")
        self.assertEqual((first.status, first.body), (200, "Welcome! This is your first visit."))
        pair = self.assert_sets_cookie(first)
        second = server.get("/", cookie=pair)
        third = server.get("/", cookie=pair)
        self.assertEqual(second.body, "Number of views: 2")
        self.assertEqual(third.body, "Number of views: 3")
        self.assertEqual([data["views"] for data in self.stored(server.store).values()], [3])

    def test_state_session_id_is_the_id_the_cookie_carries(self):
        """environ['session_demo.state'].session_id is express's req.sessionID: the id in the cookie."""
        def app(environ, start_response):
            state = environ["session_demo.state"]
            self.assertIs(state.session, environ["session_demo.session"].current)
            return self.reply(start_response, state.session_id)

        server = self.serve(app)
        response = server.get("/")
        self.assertEqual(list(server.store.sessions), [response.body])
        self.assertTrue(response.session_cookie().startswith(f"connect.sid=s%3A{response.body}."))

    def test_gives_no_session_outside_the_cookie_path(self):
        """Outside cookie.path the app still runs, with None in environ, and no cookie is set."""
        server = self.serve(cookie={"path": "/admin"})
        response = server.get("/")
        self.assertEqual(response.body, "no session")
        self.assert_no_set_cookie(response)
        self.assertEqual(server.store.sessions, {})

    def test_a_mounted_app_matches_the_cookie_path_with_its_script_name(self):
        """SCRIPT_NAME counts for the cookie path, as express's req.originalUrl includes the mount point."""
        middleware = SessionMiddleware(make_options(cookie={"path": "/app"}))
        fake = FakeWSGIServer()
        fake.run(SessionWSGIMiddleware(self.routes, middleware), SCRIPT_NAME="/app", path="/")
        self.assertEqual(fake.status, "200 OK")
        self.assertEqual(len(fake.set_cookies), 1)
        self.assertEqual(fake.log, [("handed", b"Welcome! This is your first visit.")])


class TestWSGIRequestInfo(WSGICase):
    """What the adapter tells the session layer about a WSGI request."""

    def test_url_is_the_raw_path_as_a_client_sends_it(self):
        """The url is SCRIPT_NAME + PATH_INFO percent-encoded again from WSGI's latin-1 text, plus the query."""
        adapter = SessionWSGIMiddleware(self.routes, SessionMiddleware(make_options()))
        table = [
            ("", "/foo", "", "/foo"),
            ("", "/foo", "x=1&y=%20", "/foo?x=1&y=%20"),
            ("/app", "/foo", "", "/app/foo"),
            ("", "/caf\xc3\xa9", "", "/caf%C3%A9"),  # UTF-8 bytes of 'café', as PEP 3333 gives them
            ("", "/a b", "", "/a%20b"),
            ("", "/100%", "", "/100%25"),
            ("", "/a:b@c;d=e,f!$&'()*+~_.-", "", "/a:b@c;d=e,f!$&'()*+~_.-"),
            ("", "", "", "/"),
        ]
        for script_name, path_info, query, url in table:
            with self.subTest(path_info=path_info, query=query):
                environ = FakeWSGIServer.environ(path_info, SCRIPT_NAME=script_name,
                                                     QUERY_STRING=query)
                self.assertEqual(adapter.request_info(environ).url, url)

    def test_reads_cookie_forwarded_proto_and_url_scheme(self):
        """Cookie and X-Forwarded-Proto come from environ; tls is False and url_scheme is framework_secure."""
        adapter = SessionWSGIMiddleware(self.routes, SessionMiddleware(make_options()))
        environ = FakeWSGIServer.environ(cookie="a=1; b=2", HTTP_X_FORWARDED_PROTO="https")
        environ["wsgi.url_scheme"] = "https"
        info = adapter.request_info(environ)
        self.assertEqual((info.cookie_header, info.forwarded_proto, info.tls, info.framework_secure),
                         ("a=1; b=2", "https", False, True))
        plain = adapter.request_info(FakeWSGIServer.environ())
        self.assertEqual((plain.cookie_header, plain.forwarded_proto, plain.framework_secure),
                         (None, None, False))


class TestWSGISaveUninitialized(WSGICase):
    """save_uninitialized=False through the WSGI adapter."""

    def test_sets_no_cookie_and_stores_nothing_for_an_unmodified_new_session(self):
        """A new session the app does not change gets no cookie and is not stored."""
        server = self.serve(save_uninitialized=False, store=CountingStore())
        response = server.get("/peek")
        self.assertEqual(response.body, "views: none")
        self.assert_no_set_cookie(response)
        self.assertEqual(server.store.calls["set"], 0)
        self.assertEqual(server.store.sessions, {})

    def test_sets_the_cookie_and_stores_a_modified_new_session(self):
        """A new session the app changes gets a cookie and is stored."""
        server = self.serve(save_uninitialized=False, store=CountingStore())
        response = server.get("/")
        self.assert_sets_cookie(response)
        self.assertEqual(server.store.calls["set"], 1)


class TestWSGIResave(WSGICase):
    """resave=False through the WSGI adapter."""

    def test_touches_instead_of_saving_an_unmodified_loaded_session(self):
        """An unmodified session the browser sent is touched in the store, not set, and gets no cookie."""
        server = self.serve(resave=False, store=CountingStore())
        pair = self.assert_sets_cookie(server.get("/"))
        self.assertEqual(server.store.calls["set"], 1)
        response = server.get("/peek", cookie=pair)
        self.assertEqual(response.body, "views: 1")
        self.assert_no_set_cookie(response)
        self.assertEqual(server.store.calls["set"], 1)
        self.assertEqual(server.store.calls["touch"], 1)


class TestWSGIRolling(WSGICase):
    """rolling through the WSGI adapter."""

    def test_resends_the_cookie_of_an_unmodified_session_only_when_rolling(self):
        """With rolling the unmodified session the browser sent gets its cookie again; without, not."""
        for rolling in (True, False):
            with self.subTest(rolling=rolling):
                server = self.serve(rolling=rolling, resave=False)
                pair = self.assert_sets_cookie(server.get("/"))
                response = server.get("/peek", cookie=pair)
                self.assertEqual(response.session_cookie() is not None, rolling)


class TestWSGICookieMaxAge(WSGICase):
    """cookie.max_age through the WSGI adapter, on a clock the test moves."""

    def test_expires_is_max_age_after_the_moment_the_headers_are_decided(self):
        """Expires is now + max_age when start_response is called; a later rolling request moves it."""
        clock = FrozenClock()
        server = self.serve(clock=clock, store=MemoryStore(clock=clock), rolling=True)
        first = server.get("/")
        self.assertEqual(first.cookie_attributes()["Expires"], formatdate(START + 60, usegmt=True))
        clock.advance(seconds=10)
        second = server.get("/peek", cookie=first.session_cookie())
        self.assertEqual(second.cookie_attributes()["Expires"], formatdate(START + 70, usegmt=True))


class TestWSGISecureCookie(WSGICase):
    """cookie.secure and proxy through the WSGI adapter: wsgi.url_scheme is the framework's 'secure'."""

    def test_sends_no_secure_cookie_over_http_but_saves_the_session(self):
        """Over plain HTTP a secure cookie is not sent, and the session is saved all the same."""
        server = self.serve(cookie={"secure": True, "max_age": 60000}, store=CountingStore())
        response = server.get("/")
        self.assert_no_set_cookie(response)
        self.assertEqual(server.store.calls["set"], 1)

    def test_sends_the_secure_cookie_behind_a_trusted_proxy_saying_https(self):
        """With proxy=True and X-Forwarded-Proto: https the secure cookie is sent."""
        server = self.serve(cookie={"secure": True, "max_age": 60000}, proxy=True)
        response = server.get("/", headers={"X-Forwarded-Proto": "https"})
        self.assert_sets_cookie(response)
        self.assertIn("Secure", response.cookie_attributes())

    def test_url_scheme_https_counts_as_secure_only_with_proxy_none(self):
        """wsgi.url_scheme 'https' sends the secure cookie with proxy=None, not with proxy=False (no TLS seen)."""
        for proxy, sent in ((None, True), (False, False)):
            with self.subTest(proxy=proxy):
                middleware = SessionMiddleware(make_options(cookie={"secure": True}, proxy=proxy))
                fake = FakeWSGIServer()
                fake.run(SessionWSGIMiddleware(self.routes, middleware), **{"wsgi.url_scheme": "https"})
                self.assertEqual(len(fake.set_cookies), 1 if sent else 0)


class TestWSGIUnset(WSGICase):
    """state.session = None (express's req.session = null) through the WSGI adapter."""

    def test_keep_leaves_the_store_alone_and_destroy_removes_the_session(self):
        """Unset sends no cookie; unset='keep' keeps the stored session, unset='destroy' destroys it."""
        for unset, kept in (("keep", True), ("destroy", False)):
            with self.subTest(unset=unset):
                server = self.serve(unset=unset, store=CountingStore())
                pair = self.assert_sets_cookie(server.get("/"))
                response = server.get("/forget", cookie=pair)
                self.assertEqual(response.body, "Forgotten")
                self.assert_no_set_cookie(response)
                self.assertEqual(server.store.calls["set"], 1)
                self.assertEqual(server.store.calls["destroy"], 0 if kept else 1)
                self.assertEqual(len(server.store.sessions), 1 if kept else 0)


class TestWSGISessionMethods(WSGICase):
    """Session.regenerate() and Session.destroy() inside a WSGI application."""

    def test_regenerate_gives_a_new_id_and_destroys_the_old_session(self):
        """After regenerate() the cookie carries a new id, the old one is gone, the new one stored."""
        server = self.serve()
        pair = self.assert_sets_cookie(server.get("/"))
        old_ids = list(server.store.sessions)
        response = server.get("/login", cookie=pair)
        new_pair = self.assert_sets_cookie(response)
        self.assertNotEqual(new_pair, pair)
        stored = self.stored(server.store)
        self.assertEqual(len(stored), 1)
        self.assertNotIn(old_ids[0], stored)
        self.assertEqual(list(stored.values())[0].get("user"), "ann")
        self.assertNotIn("views", list(stored.values())[0])

    def test_destroy_sends_no_cookie_and_forgets_the_session(self):
        """After destroy() no cookie is sent, the store is empty, and the old cookie finds nothing."""
        server = self.serve()
        pair = self.assert_sets_cookie(server.get("/"))
        response = server.get("/logout", cookie=pair)
        self.assertEqual(response.body, "Logged out")
        self.assert_no_set_cookie(response)
        self.assertEqual(server.store.sessions, {})
        self.assertEqual(server.get("/", cookie=pair).body, "Welcome! This is your first visit.")


class TestWSGIFailures(WSGICase):
    """Store and application failures through the WSGI adapter."""

    def test_a_store_that_fails_to_load_gives_a_500_that_does_not_echo_the_error(self):
        """A store get failure: 500, plain text without the error's text, the app not run, the log has it."""
        store = FlakyStore()
        calls = []

        def app(environ, start_response):
            calls.append(environ["PATH_INFO"])
            return self.routes(environ, start_response)

        server = self.serve(app, store=store)
        pair = self.assert_sets_cookie(server.get("/"))
        store.failing.add("get")
        with self.assertLogs("session_demo", "ERROR") as logs:
            response = server.get("/peek", cookie=pair)
        self.assertEqual(response.status, 500)
        self.assertTrue(response.headers["Content-Type"].startswith("text/plain"))
        self.assertNotIn("hunter2", response.body)
        self.assert_no_set_cookie(response)
        self.assertEqual(calls, ["/"])
        self.assertIn("hunter2", "\n".join(logs.output))

    def test_a_busy_session_gives_a_503(self):
        """A SessionBusyError from begin (LockingSessionMiddleware timed out) gives a 503 and a warning."""
        class BusyMiddleware(SessionMiddleware):
            def begin(self, request):
                raise SessionBusyError("session 'abc...' stayed locked for 0 s")

        fake = FakeWSGIServer()
        with self.assertLogs("session_demo", "WARNING"):
            body = fake.run(SessionWSGIMiddleware(self.routes, BusyMiddleware(make_options())))
        self.assertTrue(fake.status.startswith("503 "))
        self.assertNotIn(b"Welcome", body)

    def test_a_store_that_fails_to_save_withholds_the_last_chunk(self):
        """No silent loss: a store set failure is logged and the last chunk never goes out (the client can tell)."""
        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
            return [b"hello, ", b"wor", b"ld"]

        server = self.serve(app, store=FlakyStore(failing={"set"}))
        with self.assertLogs("session_demo", "ERROR") as logs, \
                mock.patch("wsgiref.simple_server.ServerHandler.log_exception"):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("GET", "/")
            answer = connection.getresponse()
            with self.assertRaises(http.client.IncompleteRead) as caught:
                answer.read()
            connection.close()
        self.assertEqual(caught.exception.partial, b"hello, wor")
        self.assertIn("hunter2", "\n".join(logs.output))

    def test_an_app_that_raises_before_start_response_gives_a_500_and_the_end_still_runs(self):
        """An app raising before start_response: 500 (with the session's cookie), and the session is saved."""
        def eager(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            raise RuntimeError("the app failed")

        def lazy(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            raise RuntimeError("the app failed")
            yield b"never"

        for app in (eager, lazy):
            with self.subTest(app=app.__name__):
                server = self.serve(app)
                with self.assertLogs("session_demo", "ERROR"):
                    response = server.get("/")
                self.assertEqual(response.status, 500)
                self.assertNotIn("the app failed", response.body)
                self.assert_sets_cookie(response)
                self.assertEqual([data["views"] for data in self.stored(server.store).values()], [1])

    def test_an_app_that_raises_after_start_response_gets_a_500_with_the_session_cookie(self):
        """Raising after start_response, before the headers went out: a 500 that carries Set-Cookie; the session is saved."""
        def eager(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Partial", "1")])
            raise RuntimeError("the app failed")

        def lazy(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Partial", "1")])
            raise RuntimeError("the app failed")
            yield b"never"

        for app in (eager, lazy):
            with self.subTest(app=app.__name__):
                server = self.serve(app)
                with self.assertLogs("session_demo", "ERROR"):
                    response = server.get("/")
                self.assertEqual(response.status, 500)
                self.assertNotIn("the app failed", response.body)
                self.assertIsNone(response.headers["X-Partial"])
                self.assertEqual(len(response.set_cookies), 1)
                cookie = self.assert_sets_cookie(response)
                self.assertEqual([data["views"] for data in self.stored(server.store).values()], [1])
                with self.assertLogs("session_demo", "ERROR"):
                    again = server.get("/", cookie=cookie)
                self.assertEqual(len(self.stored(server.store)), 1)  # the cookie named the stored session
                self.assertIsNone(again.session_cookie())

    def test_an_app_that_raises_after_the_headers_went_out_is_left_to_the_server_after_the_end(self):
        """Raising once the server has sent the headers: the server re-raises the error, after the end ran."""
        store = CountingStore()

        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            write = start_response("200 OK", [])
            write(b"early")  # PEP 3333's write(): the headers are out
            raise RuntimeError("the app failed")

        fake = FakeWSGIServer()
        with self.assertLogs("session_demo", "ERROR"), self.assertRaisesRegex(RuntimeError, "the app failed"):
            fake.run(SessionWSGIMiddleware(app, SessionMiddleware(make_options(store=store))))
        self.assertEqual(store.calls["set"], 1)
        self.assertEqual(fake.status, "200 OK")


class Abort(BaseException):
    """A BaseException that is not an Exception, as KeyboardInterrupt and SystemExit are."""


class TestWSGIBaseException(WSGICase):
    """A BaseException from the app is not caught, but the end runs: a session lock is released."""

    def locked(self) -> tuple[SessionWSGIMiddleware, str]:
        """A locking middleware (lock_timeout 0.05 s) and the cookie of a stored session."""
        middleware = with_concurrency("lock", lock_timeout=0.05)
        wsgi = SessionWSGIMiddleware(self.routes, middleware)
        fake = FakeWSGIServer()
        fake.run(wsgi, path="/")
        return wsgi, cookie_pair(fake.set_cookies[0])

    def test_a_base_exception_in_the_app_call_or_its_body_leaves_no_lock(self):
        """Abort raised by the app call, or while its body is iterated: it propagates, and the next request is served."""
        def in_call(environ, start_response):
            raise Abort()

        def in_body(environ, start_response):
            start_response("200 OK", [])
            yield b"part"
            raise Abort()

        for app in (in_call, in_body):
            with self.subTest(app=app.__name__):
                wsgi, cookie = self.locked()
                failing = SessionWSGIMiddleware(app, wsgi.middleware)
                with self.assertRaises(Abort):
                    FakeWSGIServer().run(failing, cookie=cookie)
                fake = FakeWSGIServer()
                fake.run(wsgi, path="/", cookie=cookie)
                self.assertEqual(fake.status, "200 OK")
                self.assertEqual(wsgi.middleware._locks, {})


class TestWSGIJoinedCookieLines(WSGICase):
    """Two Cookie lines, which wsgiref and gunicorn join with ',', keep the session."""

    def get_with_cookie_lines(self, server: LiveWSGIServer, lines: list[str]) -> Any:
        """GET / sending each of ``lines`` as its own Cookie header line."""
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.addCleanup(connection.close)
        connection.putrequest("GET", "/")
        for line in lines:
            connection.putheader("Cookie", line)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.read().decode()

    def test_the_session_survives_two_cookie_lines_in_either_order(self):
        """'a=1' then the session cookie, or the session cookie then 'b=2': the count goes on."""
        server = self.serve()
        cookie = self.assert_sets_cookie(server.get("/"))
        seen: list[str] = []

        def app(environ, start_response):
            seen.append(environ["HTTP_COOKIE"])
            return self.routes(environ, start_response)

        server = self.serve(app, store=server.store)
        for lines, views in [(["a=1", cookie], "2"), ([cookie, "b=2"], "3")]:
            with self.subTest(lines=lines):
                self.assertEqual(self.get_with_cookie_lines(server, lines), f"Number of views: {views}")
        self.assertEqual(seen, ["a=1," + cookie, cookie + ",b=2"])  # the app's header is as wsgiref made it

    def test_the_comma_reading_is_only_a_fallback(self):
        """A header whose plain reading finds a signed id is read as it is, even if a comma hides another."""
        wsgi = SessionWSGIMiddleware(self.routes, SessionMiddleware(make_options()))
        signed = [self.signed(wsgi, sid) for sid in ("attacker", "victim")]
        cases = [
            (f"x=1,{signed[0]}; {signed[1]}", f"x=1,{signed[0]}; {signed[1]}"),  # plain reading: victim
            (f"prefs=a,b; {signed[1]}", f"prefs=a,b; {signed[1]}"),             # a comma in another value
            (f"x=1,{signed[1]}", f"x=1;{signed[1]}"),                          # joined lines: split
            ("x=1,connect.sid=s%3Aforged.sig", "x=1,connect.sid=s%3Aforged.sig"),  # no valid id either way
        ]
        for header, expected in cases:
            with self.subTest(header=header):
                self.assertEqual(wsgi.session_cookie_header(header), expected)

    @staticmethod
    def signed(wsgi: SessionWSGIMiddleware, sid: str) -> str:
        """The session cookie pair for ``sid``, signed with the middleware's secret."""
        options = wsgi.middleware.options
        return f"{options.name}=" + sd.encode_uri_component("s:" + sd.sign(sid, options.secrets[0]))


class TestWSGIHeaders(WSGICase):
    """The headers moment: Set-Cookie is decided when the app calls start_response."""

    def test_keeps_the_apps_own_set_cookie_headers_and_puts_the_session_cookie_last(self):
        """The app's Set-Cookie headers are kept, in order, and the session's comes after them."""
        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            return self.reply(start_response, "ok", headers=[("Set-Cookie", "a=1; Path=/"),
                                                              ("Set-Cookie", "b=2")])

        response = self.serve(app).get("/")
        self.assertEqual(response.set_cookies[:2], ["a=1; Path=/", "b=2"])
        self.assertEqual(len(response.set_cookies), 3)
        self.assertTrue(response.set_cookies[2].startswith("connect.sid=s%3A"))

    def test_an_exc_info_call_replaces_the_headers_and_keeps_one_session_cookie(self):
        """A second start_response with exc_info (PEP 3333) replaces the response; one session cookie."""
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
            try:
                raise ValueError("rendering failed")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            return [b"sorry"]

        response = self.serve(app).get("/")
        self.assertEqual((response.status, response.body), (500, "sorry"))
        self.assertIsNone(response.headers["X-First"])
        self.assertEqual(len(response.set_cookies), 1)
        self.assert_sets_cookie(response)

    def test_the_cookie_decision_is_made_once_at_the_first_start_response(self):
        """A change after the first start_response does not change the cookie decision (express's on-headers)."""
        store = CountingStore()

        def app(environ, start_response):
            start_response("200 OK", [])
            environ["session_demo.session"]["views"] = 1
            try:
                raise ValueError("rendering failed")
            except ValueError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            return [b"sorry"]

        fake = FakeWSGIServer()
        middleware = SessionMiddleware(make_options(save_uninitialized=False, store=store))
        fake.run(SessionWSGIMiddleware(app, middleware))
        self.assertEqual([(status, again) for status, _, again in fake.starts],
                         [("500 Internal Server Error", False)])  # the first was held, then replaced
        self.assertEqual(fake.set_cookies, [])
        self.assertEqual(store.calls["set"], 1)  # saved, orphaned, as express does 

    def test_a_late_exc_info_call_is_refused_by_the_server_and_the_end_still_runs(self):
        """start_response with exc_info after the headers went out re-raises; the session is still stored."""
        store = CountingStore()

        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            start_response("200 OK", [])
            yield b"part one"
            yield b"part two"
            try:
                raise ValueError("rendering failed")
            except ValueError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never"

        fake = FakeWSGIServer()
        with self.assertLogs("session_demo", "ERROR"), self.assertRaisesRegex(ValueError, "rendering failed"):
            fake.run(SessionWSGIMiddleware(app, SessionMiddleware(make_options(store=store))))
        self.assertEqual(store.calls["set"], 1)
        self.assertEqual(fake.status, "200 OK")


class TestWSGIBodyAndEnd(WSGICase):
    """The end moment: the store operation finishes before the last chunk; close() always runs."""

    def test_the_store_operation_finishes_before_the_last_chunk_is_handed_over(self):
        """The app's chunks are passed on one behind; set runs after the app is done, before the last chunk."""
        store = CountingStore()
        body = RecordingBody([b"A", b"", b"B", b"C"], log=store.log)

        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            start_response("200 OK", [])
            return body

        fake = FakeWSGIServer(store.log)
        handed = fake.run(SessionWSGIMiddleware(app, SessionMiddleware(make_options(store=store))))
        self.assertEqual(handed, b"ABC")
        sid = list(store.sessions)[0]
        self.assertEqual(store.log, [
            ("produced", b"A"), ("produced", b""), ("produced", b"B"), ("handed", b"A"),
            ("produced", b"C"), ("handed", b"B"), ("set", sid), ("handed", b"C"), ("close", None),
        ])

    def test_touch_also_finishes_before_the_last_chunk(self):
        """With resave=False an unmodified loaded session is touched before the last chunk is handed over."""
        store = CountingStore()
        middleware = SessionMiddleware(make_options(store=store, resave=False))
        header, _ = run_request(middleware)
        store.log.clear()

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"one", b"two"]

        fake = FakeWSGIServer(store.log)
        fake.run(SessionWSGIMiddleware(app, middleware), cookie=cookie_pair(header))
        names = [name for name, _ in store.log]
        self.assertEqual(names, ["get", "handed", "touch", "handed"])

    def test_close_is_called_once_after_a_whole_body(self):
        """The app iterable's close() is called once when the server has the whole body."""
        body = RecordingBody([b"hello, ", b"world"])

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return body

        response = self.serve(app).get("/")
        self.assertEqual(response.body, "hello, world")
        self.assertTrue(body.closed.wait(5))
        self.assertEqual(body.close_calls, 1)

    def test_close_is_called_when_the_body_fails_midway_and_the_end_ran(self):
        """An iterator raising before anything went out: a 500, close() is still called, the session was stored."""
        body = RecordingBody([b"hello, ", b"world"], fail_at=1)

        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            return body

        server = self.serve(app)
        with self.assertLogs("session_demo", "ERROR"):
            response = server.get("/")
        self.assertEqual(response.status, 500)
        self.assertNotIn("hello", response.body)
        self.assertTrue(body.closed.wait(5))
        self.assertEqual(body.close_calls, 1)
        self.assertEqual([data["views"] for data in self.stored(server.store).values()], [1])

    def test_a_server_that_stops_early_closes_the_body_and_stores_nothing(self):
        """The server stopping early (client gone): close() is called, the session released, not stored."""
        for stop_after in (0, 1):
            with self.subTest(stop_after=stop_after):
                store = CountingStore()
                body = RecordingBody([b"one", b"two", b"three"])

                def app(environ, start_response):
                    environ["session_demo.session"]["views"] = 1
                    start_response("200 OK", [])
                    return body

                released = []

                class NotingMiddleware(SessionMiddleware):
                    def release(self, state):  # what a locking middleware offers (session_demo_extras.concurrency)
                        released.append(state.session_id)

                fake = FakeWSGIServer()
                fake.run(SessionWSGIMiddleware(app, NotingMiddleware(make_options(store=store))),
                         stop_after=stop_after)
                self.assertEqual(body.close_calls, 1)
                self.assertEqual(store.calls["set"], 0)
                self.assertEqual(len(released), 1)

    def test_a_session_lock_is_released_when_the_server_stops_early(self):
        """With LockingSessionMiddleware, a body the server abandons releases the lock: the next request is served."""
        middleware = with_concurrency("lock", lock_timeout=0)
        header, _ = run_request(middleware)
        adapter = SessionWSGIMiddleware(self.routes, middleware)
        FakeWSGIServer().run(adapter, path="/peek", cookie=cookie_pair(header), stop_after=0)
        fake = FakeWSGIServer()
        body = fake.run(adapter, path="/peek", cookie=cookie_pair(header))
        self.assertEqual((fake.status, body), ("200 OK", b"views: none"))

    def test_close_is_called_even_if_iteration_never_started(self):
        """A server that closes the body without iterating it still closes the app's iterable."""
        body = RecordingBody([b"one"])

        def app(environ, start_response):
            start_response("200 OK", [])
            return body

        middleware = SessionMiddleware(make_options())
        fake = FakeWSGIServer()
        result = SessionWSGIMiddleware(app, middleware)(fake.environ(), fake.start_response)
        result.close()
        self.assertEqual(body.close_calls, 1)

    def test_an_empty_body_still_gets_the_cookie_and_the_save(self):
        """An app returning no bytes at all: the cookie is set and the session saved."""
        for chunks in ([], [b""], [b"", b""]):
            with self.subTest(chunks=chunks):
                def app(environ, start_response, chunks=chunks):
                    start_response("200 OK", [])
                    return chunks

                server = self.serve(app, store=CountingStore())
                response = server.get("/")
                self.assertEqual((response.status, response.body), (200, ""))
                self.assert_sets_cookie(response)
                self.assertEqual(server.store.calls["set"], 1)

    def test_an_empty_body_is_saved_with_nothing_handed_over(self):
        """Empty chunks are passed on as they come (PEP 3333) but never count as the last chunk."""
        for chunks in ([], [b""], [b"", b""]):
            with self.subTest(chunks=chunks):
                store = CountingStore()

                def app(environ, start_response, chunks=chunks):
                    start_response("200 OK", [("Content-Length", "0")])
                    return chunks

                fake = FakeWSGIServer(store.log)
                self.assertEqual(fake.run(SessionWSGIMiddleware(app, SessionMiddleware(
                    make_options(store=store)))), b"")
                self.assertEqual([name for name, _ in store.log], ["set"])
                self.assertEqual(len(fake.set_cookies), 1)

    def test_a_generator_app_that_starts_the_response_lazily(self):
        """A generator app calling start_response on its first iteration gets its cookie and its save."""
        def app(environ, start_response):
            session = environ["session_demo.session"]
            session["views"] = session.get("views", 0) + 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"views: "
            yield str(session["views"]).encode()

        server = self.serve(app)
        first = server.get("/")
        self.assertEqual(first.body, "views: 1")
        second = server.get("/", cookie=self.assert_sets_cookie(first))
        self.assertEqual(second.body, "views: 2")


class EagerHeadersServer(FakeWSGIServer):
    """A server that sends the status and headers on the first chunk it is handed, even an empty one (as gunicorn does).

    Every chunk, empty ones included, is noted as ``("chunk", data)`` in the
    shared log, after ``("headers", status)`` the first time.
    """

    def run(self, app: Callable[..., Any], *, stop_after: int | None = None, **environ: Any) -> bytes:
        result = app(self.environ(**environ), self.start_response)
        body = b""
        try:
            for chunk in result:
                if not self.headers_sent:
                    self.headers_sent = True
                    self.log.append(("headers", self.status))
                self.log.append(("chunk", chunk))
                body += chunk
        finally:
            if hasattr(result, "close"):
                result.close()
        if not self.headers_sent:
            self.log.append(("headers", self.status))
        return body


class FailingSaveStore(CountingStore):
    """A CountingStore whose set (noted first) fails."""

    def set(self, sid, session):
        self._note("set", sid)
        raise RuntimeError("the disk is full")


class TestWSGINothingBeforeTheStoreAnswers(WSGICase):
    """The server is handed no status, headers or chunk, not even an empty one, before the store has answered."""

    APPS = {
        "one chunk": [b"views: 1"],
        "an empty chunk first": [b"", b"views: 1"],
        "empty chunks around": [b"", b"views: 1", b""],
        "no body": [],
    }

    def app(self, chunks: list[bytes]) -> Callable[..., Any]:
        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            length = sum(len(chunk) for chunk in chunks)
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(length))])
            return list(chunks)
        return app

    def test_a_failed_save_is_a_clean_500_without_the_cookie_even_if_the_server_sends_headers_on_an_empty_chunk(self):
        """A store set failure: the server's only start_response is a 500 without Set-Cookie, and it comes after the set."""
        for label, chunks in self.APPS.items():
            with self.subTest(label):
                store = FailingSaveStore()
                fake = EagerHeadersServer(store.log)
                with self.assertLogs("session_demo", "ERROR"):
                    body = fake.run(SessionWSGIMiddleware(self.app(chunks), SessionMiddleware(
                        make_options(store=store))))
                self.assertEqual([status for status, _, _ in fake.starts], ["500 Internal Server Error"])
                self.assertEqual(fake.set_cookies, [])
                self.assertEqual(dict(fake.starts[0][1])["Content-Length"], str(len(body)))
                self.assertIn(b"could not be saved", body)
                names = [name for name, _ in store.log]
                self.assertEqual(names[:2], ["set", "headers"])

    def test_a_good_save_comes_before_the_headers_and_the_body(self):
        """The same apps with a working store: set, then the 200 with its cookie, then the body."""
        for label, chunks in self.APPS.items():
            with self.subTest(label):
                store = CountingStore()
                fake = EagerHeadersServer(store.log)
                body = fake.run(SessionWSGIMiddleware(self.app(chunks), SessionMiddleware(make_options(store=store))))
                self.assertEqual(body, b"".join(chunks))
                self.assertEqual(len(fake.starts), 1)
                self.assertEqual(len(fake.set_cookies), 1)
                self.assertEqual([name for name, _ in store.log][:2], ["set", "headers"])

    def test_a_streamed_body_still_goes_chunk_by_chunk_and_empty_chunks_pass_once_the_headers_are_out(self):
        """Three chunks: the first goes (with the headers) when the second exists; an empty one after it passes on."""
        store = CountingStore()
        body = RecordingBody([b"", b"A", b"B", b"", b"C"], log=store.log)

        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            start_response("200 OK", [])
            return body

        fake = EagerHeadersServer(store.log)
        fake.run(SessionWSGIMiddleware(app, SessionMiddleware(make_options(store=store))))
        sid = list(store.sessions)[0]
        self.assertEqual(store.log, [
            ("produced", b""), ("produced", b"A"), ("produced", b"B"), ("headers", "200 OK"), ("chunk", b"A"),
            ("produced", b""), ("chunk", b""), ("produced", b"C"), ("chunk", b"B"), ("set", sid),
            ("chunk", b"C"), ("close", None),
        ])

    def test_write_sends_the_headers_and_any_held_chunk_first(self):
        """PEP 3333's write(): the headers go at once, after them a chunk the body produced before it."""
        store = CountingStore()

        def app(environ, start_response):
            environ["session_demo.session"]["views"] = 1
            write = start_response("200 OK", [])
            yield b"first"
            write(b"second")
            yield b"third"

        FakeWSGIServer(store.log).run(SessionWSGIMiddleware(app, SessionMiddleware(make_options(store=store))))
        self.assertEqual(store.log[:3], [("handed", b"first"), ("handed", b"second"), ("set", store.log[2][1])])
        self.assertEqual(store.log[3:], [("handed", b"third")])


class TestWSGISessionFollowsRegenerate(WSGICase):
    """environ['session_demo.session'] is the request's session as it is now, not as it began."""

    def test_writing_after_regenerate_logs_in(self):
        """The issue's repro: s.regenerate(); s['user'] = 'ann' logs in, and the next request sees the user."""
        def app(environ, start_response):
            session = environ["session_demo.session"]
            if environ["PATH_INFO"] == "/login":
                session.regenerate()
                session["user"] = "ann"
                return self.reply(start_response, "logged in")
            return self.reply(start_response, f"user: {session.get('user')}")

        server = self.serve(app)
        first = self.assert_sets_cookie(server.get("/"))
        cookie = self.assert_sets_cookie(server.get("/login", cookie=first))
        self.assertNotEqual(cookie, first)
        self.assertEqual(server.get("/", cookie=cookie).body, "user: ann")
        self.assertEqual(server.get("/", cookie=first).body, "user: None")

    def test_id_cookie_and_reload_are_the_current_sessions(self):
        """id and cookie follow regenerate(); reload() drops unsaved changes and the mapping follows it."""
        header, state = run_request(SessionMiddleware(make_options()), app=lambda state: None)
        store = state.store
        session = sd_current(state)
        old_id = session.id
        new = session.regenerate()
        session["draft"] = 1
        self.assertEqual((session.id, session.cookie), (new.id, new.cookie))
        self.assertNotEqual(session.id, old_id)
        session.save()
        session["draft"] = 2
        session.reload()
        self.assertEqual(dict(session), {"draft": 1})
        self.assertEqual(store.get(session.id)["draft"], 1)

    def test_using_a_destroyed_session_raises_instead_of_writing_nowhere(self):
        """After destroy() every read or write raises RuntimeError (the app's 500), never a silent write."""
        def app(environ, start_response):
            session = environ["session_demo.session"]
            session.destroy()
            session["user"] = "ann"
            return self.reply(start_response, "saved?")

        server = self.serve(app)
        with self.assertLogs("session_demo", "ERROR") as logs:
            response = server.get("/")
        self.assertEqual(response.status, 500)
        self.assertIn("no session any more", "\n".join(logs.output))
        self.assertEqual(server.store.sessions, {})


def sd_current(state: Any) -> Any:
    """The mapping the adapters hand the application for ``state``."""
    from session_demo_extras.wsgi import CurrentSession
    return CurrentSession(state)


class TestWSGIMultiprocessWarning(WSGICase):
    """Under a server with several processes, a store that keeps sessions in the process is a WARNING, once."""

    def run_twice(self, store: Any, multiprocess: bool) -> list[str]:
        """Two requests with wsgi.multiprocess as given; the WARNINGs logged (the once-per-process mark reset)."""
        adapter = SessionWSGIMiddleware(self.routes, SessionMiddleware(make_options(store=store)))
        with mock.patch("session_demo_extras.wsgi._warned_in_process", None), \
                self.assertLogs("session_demo", "DEBUG") as logs:
            for _ in range(2):
                FakeWSGIServer().run(adapter, **{"wsgi.multiprocess": multiprocess})
        return [line for line in logs.output if line.startswith("WARNING")]

    def test_a_memory_store_under_several_processes_is_warned_about_once_naming_what_to_use(self):
        """MemoryStore, BoundedMemoryStore, and either behind TombstoneStore: one WARNING naming SQLiteStore and RedisStore."""
        from session_demo_extras.bounded_store import BoundedMemoryStore
        from session_demo_extras.concurrency import TombstoneStore
        for store in (MemoryStore(), BoundedMemoryStore(), TombstoneStore(MemoryStore())):
            with self.subTest(store=type(store).__name__):
                warnings = self.run_twice(store, multiprocess=True)
                self.assertEqual(len(warnings), 1, warnings)
                self.assertIn("wsgi.multiprocess", warnings[0])
                self.assertIn("SQLiteStore", warnings[0])
                self.assertIn("RedisStore", warnings[0])

    def test_one_process_or_a_shared_store_is_not_warned_about(self):
        """wsgi.multiprocess false, or a store the processes share (SQLiteStore): no WARNING."""
        import tempfile
        from session_demo_extras.sqlite_store import SQLiteStore
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        sqlite = SQLiteStore(directory.name + "/sessions.db")
        self.addCleanup(sqlite.close)
        for store, multiprocess in ((MemoryStore(), False), (sqlite, True)):
            with self.subTest(store=type(store).__name__, multiprocess=multiprocess):
                logging.getLogger("session_demo").debug("a line, so that assertLogs has one")
                self.assertEqual(self.run_twice(store, multiprocess), [])


class TestWSGIHostileGenid(SessionAssertions):
    """A broken genid behind SessionWSGIMiddleware fails as it does behind http.server."""

    UNSAFE = TestHostileSetCookie.UNSAFE
    genid_returning = TestHostileSetCookie.genid_returning
    assert_clear_genid_error = TestHostileSetCookie.assert_clear_genid_error

    def test_a_genid_result_with_unsafe_characters_gives_500_through_wsgi(self):
        """The same broken genid behind SessionWSGIMiddleware: a 500, no Set-Cookie, nothing stored."""
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello"]

        for label, character in self.UNSAFE.items():
            with self.subTest(character=label):
                store = CountingStore()
                wsgi = SessionWSGIMiddleware(app, SessionMiddleware(
                    make_options(store=store, genid=self.genid_returning(character))))
                started: list[tuple[str, list[tuple[str, str]]]] = []
                environ: dict[str, Any] = {}
                setup_testing_defaults(environ)
                with self.assertLogs("session_demo", logging.ERROR) as logs:
                    body = b"".join(wsgi(environ, lambda status, headers, exc_info=None:
                                         started.append((status, headers))))
                self.assertTrue(started[0][0].startswith("500"), started)
                self.assertNotIn("Set-Cookie", [name for name, _ in started[0][1]])
                self.assertNotIn(b"genid", body)
                self.assertEqual(store.calls, Counter())
                self.assert_clear_genid_error(logs)


if __name__ == "__main__":
    unittest.main()
