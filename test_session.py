"""Tests for session_demo and server.py: every behaviour of express-session 1.19.0 we mirror.

Run them with ``python3 -m unittest -v``. Standard library only. The
end-to-end tests start real servers on port 0 (loopback only) and stop
them in cleanups; time is a clock the tests move, never a sleep.

The test classes follow express-session's own test blocks (test/cookie.js,
test/session.js), with a test for every upstream title that applies in
Python; titles that do not apply are listed in a comment saying why.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import unittest
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import session_demo as sd
from session_demo import (
    Cookie, MemoryStore, RequestInfo, SessionHTTPServer, SessionMiddleware,
    SessionOptions, SessionRequestHandler,
)

SECRET = "keyboard cat"
START = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a fixed "now" for the controlled clock


# ==== Test helpers ==========================================================


class FrozenClock:
    """A clock the test moves by hand: ``clock()`` returns seconds, ``advance(ms=...)`` moves it."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, *, seconds: float = 0, ms: float = 0) -> None:
        self.now += seconds + ms / 1000


class CountingStore(MemoryStore):
    """A MemoryStore that counts its calls: ``calls['set']``, and keeps their order in ``log``."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, Any]] = []

    def _note(self, name: str, sid: Any) -> None:
        self.calls[name] += 1
        self.log.append((name, sid))

    def get(self, sid):
        self._note("get", sid)
        return super().get(sid)

    def set(self, sid, session):
        self._note("set", sid)
        super().set(sid, session)

    def destroy(self, sid):
        self._note("destroy", sid)
        super().destroy(sid)

    def touch(self, sid, session):
        self._note("touch", sid)
        super().touch(sid, session)


def make_options(**overrides: Any) -> SessionOptions:
    """Options as express-session's own tests use them: a 60 s cookie, resave and saveUninitialized true."""
    options: dict[str, Any] = {
        "secret": SECRET,
        "cookie": {"max_age": 60000},
        "resave": True,
        "save_uninitialized": True,
    }
    options.update(overrides)
    return SessionOptions(**options)


App = Callable[["AppHandler"], None]


def hello(handler: AppHandler) -> None:
    """The default app: answer 'hello, world'."""
    handler.reply(200, "hello, world")


class AppHandler(SessionRequestHandler):
    """A handler that runs ``server.app(self)`` for every GET, quietly."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.app(self)

    def reply(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Response:
    """What a test request got back: status, headers, body, and the Set-Cookie headers."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.set_cookies: list[str] = headers.get_all("Set-Cookie") or []

    def session_cookie(self, name: str = "connect.sid") -> str | None:
        """The ``name=value`` part of the session's Set-Cookie, to send back; None if absent."""
        for header in self.set_cookies:
            pair = header.split(";", 1)[0]
            if pair.split("=", 1)[0] == name:
                return pair
        return None

    def cookie_attributes(self, name: str = "connect.sid") -> dict[str, str]:
        """The session cookie's attributes, e.g. ``{'Path': '/', 'HttpOnly': ''}``."""
        for header in self.set_cookies:
            parts = header.split("; ")
            if parts[0].split("=", 1)[0] == name:
                return {p.split("=", 1)[0]: (p.split("=", 1)[1] if "=" in p else "") for p in parts[1:]}
        raise AssertionError(f"no {name} Set-Cookie in {self.set_cookies!r}")


class TestServer:
    """A SessionHTTPServer on a free loopback port, running ``app`` for each GET."""

    def __init__(self, testcase: unittest.TestCase, app: App = hello,
                 options: SessionOptions | None = None, **overrides: Any) -> None:
        self.options = options or make_options(**overrides)
        self.middleware = SessionMiddleware(self.options)
        self.store = self.options.store
        self.server = SessionHTTPServer(("127.0.0.1", 0), AppHandler, self.middleware)
        self.server.app = app  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        testcase.addCleanup(self.stop, thread)

    def stop(self, thread: threading.Thread) -> None:
        self.server.shutdown()
        self.server.server_close()
        thread.join(5)

    def get(self, path: str = "/", cookie: str | None = None,
            headers: dict[str, str] | None = None) -> Response:
        """One GET on a fresh connection; ``cookie`` is sent as the Cookie header."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            sent = dict(headers or {})
            if cookie is not None:
                sent["Cookie"] = cookie
            connection.request("GET", path, headers=sent)
            answer = connection.getresponse()
            body = answer.read().decode("utf-8", "replace")
            return Response(answer.status, answer.headers, body)
        finally:
            connection.close()


class SessionAssertions(unittest.TestCase):
    """Assertions named after what they expect."""

    def assert_sets_cookie(self, response: Response, name: str = "connect.sid") -> str:
        """The response sets the session cookie; returns its ``name=value`` pair."""
        pair = response.session_cookie(name)
        self.assertIsNotNone(pair, f"expected a {name} Set-Cookie, got {response.set_cookies!r}")
        return pair  # type: ignore[return-value]

    def assert_no_set_cookie(self, response: Response, name: str = "connect.sid") -> None:
        """The response does not set the session cookie."""
        self.assertIsNone(response.session_cookie(name),
                          f"expected no {name} Set-Cookie, got {response.set_cookies!r}")


def run_request(middleware: SessionMiddleware, cookie: str | None = None,
                app: Callable[[sd.RequestState], None] = lambda state: None,
                url: str = "/", **request_fields: Any) -> tuple[str | None, sd.RequestState | None]:
    """Drive the three lifecycle moments in-process, as a server adapter does.

    Returns the Set-Cookie value (or None) and the request's state.
    """
    state = middleware.begin(RequestInfo(url=url, cookie_header=cookie, **request_fields))
    if state is None:
        return None, None
    app(state)
    header = middleware.set_cookie_header(state)
    middleware.end(state)
    return header, state


def cookie_pair(set_cookie: str | None) -> str:
    """The ``name=value`` part of a Set-Cookie value, to send back as a Cookie header."""
    assert set_cookie is not None, "expected a Set-Cookie"
    return set_cookie.split(";", 1)[0]


if __name__ == "__main__":
    unittest.main()
