"""Sessions for any WSGI application (beyond express-session).

express-session is Connect middleware; the nearest thing in Python is a
WSGI (PEP 3333) middleware, which wraps any WSGI application or framework.
The three moments of session_demo's lifecycle are wired in:

    begin   - when the server calls us, before the application runs
    headers - when the application calls start_response
    end     - when the application's body is exhausted, before its last
              non-empty chunk is handed to the server
"""

from __future__ import annotations

import logging
import sys
import urllib.parse
from http import HTTPStatus
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from session_demo import RequestInfo, RequestState, SessionLoadError, SessionMiddleware, read_session_id

__all__ = ["SessionWSGIMiddleware"]

_log = logging.getLogger("session_demo.extras")

_ExcInfo = tuple[Any, Any, Any]
"""What sys.exc_info() returns, as start_response's third argument takes it."""

# Characters a URL path may carry unescaped (RFC 3986 "pchar", plus "/").
# urllib.parse.quote keeps letters, digits and "_.-~" anyway.
_PATH_SAFE = "/:@!$&'()*+,;="


def _plain_text(start_response: StartResponse, status: str, text: str,
                exc_info: _ExcInfo | None = None) -> list[bytes]:
    """Start a short plain-text response and return its body."""
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))], exc_info)
    return [body]


class SessionWSGIMiddleware:
    """Sessions for any WSGI application: express-session's middleware, for PEP 3333 instead of Connect.

    ``SessionWSGIMiddleware(app, session_middleware(secret=...))`` is itself
    a WSGI application. Inside ``app``:

    - ``environ['session_demo.session']`` is the Session (express's
      ``req.session``), or None when this request gets no session (outside
      the cookie path, or the store is not ready). It is the session the
      request began with: after ``regenerate()`` or ``reload()`` use the
      Session they return.
    - ``environ['session_demo.state']`` is the RequestState (or None):
      ``state.session = None`` unsets the session (express's
      ``req.session = null``; setting the environ key to None does not), and
      ``state.session_id`` is express's ``req.sessionID``.

    Set-Cookie is decided when the application calls ``start_response``
    and goes after the application's own headers. The store is written
    when the body is exhausted, before its last non-empty chunk is handed
    to the server, so the client cannot see the response end first. The
    price: each chunk reaches the server only when the next one exists, so
    a streaming body (server-sent events) runs one chunk late, and a
    ``wsgi.file_wrapper`` body loses the server's sendfile. Empty chunks are
    passed on at once (PEP 3333: middleware must not block); wsgiref sends
    the headers on one, so an empty body with ``Content-Length: 0`` may end
    before the store answers. The ``write()`` callable of
    ``start_response`` is not held back, as express-session does not hold
    back ``res.write``.

    Failures: a session that cannot be loaded gives a 500 whose body does
    not echo the error (the log has it); a busy session (``LockingSessionMiddleware``)
    a 503. An application that raises (an Exception) gets a 500 with the
    session's Set-Cookie, and the session's end still runs, as with
    SessionRequestHandler: before ``start_response``, and after it as long
    as the server has not sent the headers. For that the middleware calls
    ``start_response`` again with ``exc_info`` (PEP 3333's way to replace
    headers not yet sent, so the cookie goes on the error page); if the
    headers are already out, the server re-raises the error there and it is
    the server's to handle, after the end ran. A BaseException
    (SystemExit, KeyboardInterrupt) is never caught, but the end still
    runs, so a lock (``LockingSessionMiddleware``) is released.
    """

    session_key = "session_demo.session"
    state_key = "session_demo.state"

    def __init__(self, app: WSGIApplication, middleware: SessionMiddleware) -> None:
        self.app = app
        self.middleware = middleware

    def request_info(self, environ: WSGIEnvironment) -> RequestInfo:
        """Describe this request for the session layer.

        ``url`` stands for express's ``req.originalUrl``, the raw request
        target, mount point included. WSGI hands over SCRIPT_NAME and
        PATH_INFO percent-decoded (as latin-1 text), so they are
        percent-encoded again: the bytes a client must escape come back as
        a client escapes them, the characters a path may carry raw stay
        raw. Only a client that escaped what it need not (``/%66oo``) is not
        seen exactly as it sent the path; override this method to use your
        server's raw target (gunicorn's RAW_URI, for example) if that matters.

        WSGI cannot tell TLS on the socket from a proxy's say-so: both end up
        in ``wsgi.url_scheme``. So ``tls`` is always False and ``url_scheme ==
        'https'`` is the framework's idea of secure (Express's
        ``req.secure``), used with ``proxy=None``. ``proxy=True`` trusts
        X-Forwarded-Proto; ``proxy=False`` trusts nothing here, so a secure
        cookie is never sent: keep ``proxy=None`` and let the server decide.
        """
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        url = urllib.parse.quote(path, safe=_PATH_SAFE, encoding="latin-1") or "/"
        query = environ.get("QUERY_STRING")
        if query:
            url += "?" + query
        return RequestInfo(
            url=url,
            cookie_header=self.session_cookie_header(environ.get("HTTP_COOKIE") or None),
            tls=False,
            forwarded_proto=environ.get("HTTP_X_FORWARDED_PROTO") or None,
            framework_secure=environ.get("wsgi.url_scheme") == "https",
        )

    def session_cookie_header(self, header: str | None) -> str | None:
        """The Cookie header as the session layer should read it: several ``Cookie:`` lines, undone.

        A browser sends one Cookie line, its pairs joined with ``'; '``. A
        client (or an HTTP/2 hop) that sends several lines gets them joined
        by wsgiref and gunicorn with ``','`` (``'a=1,connect.sid=s%3A...'``),
        which a cookie parser reads as one pair ``a`` whose value runs on.
        So: if the header as sent carries a validly signed session cookie,
        it is used as it is (express's reading, first cookie of the name
        wins). Only if it does not, and it holds a ``','``, it is read again
        with every ``','`` as a ``';'``, and that reading is used if it
        finds a validly signed id. A session cookie's own value never holds
        a ``','`` (it is percent-encoded), and a legitimate ``','`` inside
        another cookie's value does not matter: the fallback is tried only
        when the plain reading found no session, and what it finds must
        still carry our signature. The application's own
        ``environ['HTTP_COOKIE']`` is left as the server made it.
        """
        if not header or "," not in header:
            return header
        options = self.middleware.options
        if read_session_id(header, options.name, options.secrets) is not None:
            return header
        split = header.replace(",", ";")
        if read_session_id(split, options.name, options.secrets) is not None:
            return split
        return header

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request: begin, then the application with the headers and end moments wired in."""
        middleware = self.middleware
        # begin: load or create the session, before the application runs.
        try:
            state = middleware.begin(self.request_info(environ))
        except Exception as exc:  # the store failed, or genid did
            _log.error("could not load the session: %s", exc)
            error = exc if isinstance(exc, SessionLoadError) else SessionLoadError()
            status = f"{error.status} {HTTPStatus(error.status).phrase}"
            return _plain_text(start_response, status, error.advice + ".\n")
        environ[self.session_key] = state.session if state is not None else None
        environ[self.state_key] = state
        if state is None:
            return self.app(environ, start_response)  # no session: nothing to add

        exchange = _SessionExchange(middleware, state, start_response)
        try:
            chunks = self.app(environ, exchange.start_response)
        except Exception:
            chunks = exchange.error_page(sys.exc_info())
        except BaseException:  # SystemExit, KeyboardInterrupt: not ours to catch, but end (and unlock)
            exchange.finish()
            raise
        return _SessionBody(exchange, chunks)


class _SessionExchange:
    """One request's session moments as SessionWSGIMiddleware runs them."""

    def __init__(self, middleware: SessionMiddleware, state: RequestState,
                 start_response: StartResponse) -> None:
        self.middleware = middleware
        self.state = state
        self._start_response = start_response
        self._set_cookie: str | None = None
        self.started = False
        self.finished = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: _ExcInfo | None = None) -> Callable[[bytes], object]:
        """The application's start_response: add Set-Cookie after its headers (the on-headers hook).

        The cookie is decided at the first call. A second call with
        ``exc_info`` (PEP 3333's way to replace headers not sent yet) gets
        the same decision; the server re-raises if it is too late.
        """
        if not self.started:
            self._set_cookie = self.middleware.set_cookie_header(self.state)
            self.started = True
        headers = list(headers)
        if self._set_cookie is not None:
            headers.append(("Set-Cookie", self._set_cookie))
        return self._start_response(status, headers, exc_info)

    def error_page(self, exc_info: _ExcInfo) -> list[bytes]:
        """Answer 500, with the session's Set-Cookie, for an application that raised (express's error handler).

        Through our start_response with ``exc_info``: if the server has
        already sent the headers it re-raises the application's error here;
        then the end runs and the error goes on to the server.
        """
        when = "after" if self.started else "before"
        _log.error("the application failed %s start_response", when, exc_info=exc_info)
        try:
            return _plain_text(self.start_response, "500 Internal Server Error",
                               "Internal Server Error\n", exc_info)
        except BaseException:
            self.finish()  # too late for an error page: store, then let the server handle it
            raise

    def finish(self) -> None:
        """Save, touch or destroy the session in the store, once (the wrapped ``res.end``).

        A store failure is raised to the server, and the last chunk is withheld: the
        headers went out with the first chunk (PEP 3333 lets middleware hold back no
        more), so with a Content-Length the client can tell the response did not complete.
        """
        if not self.finished:
            self.finished = True
            self.middleware.end(self.state)

    def abandon(self) -> None:
        """The server stopped before the body ended (the client went away): release, store nothing."""
        if not self.finished:
            self.finished = True
            release = getattr(self.middleware, "release", None)  # a lock (session_demo_extras.concurrency)
            if release is not None:
                release(self.state)


class _SessionBody:
    """The application's body, passed on chunk by chunk, with the session's end before the last chunk.

    Each non-empty chunk is held until the next one arrives; when the
    application's iterable is exhausted the end runs, then the held chunk
    is handed over. ``close()`` always closes the application's iterable,
    even if iteration was never started.
    """

    def __init__(self, exchange: _SessionExchange, chunks: Iterable[bytes]) -> None:
        self._exchange = exchange
        self._chunks = chunks
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        held = b""
        try:
            for chunk in self._chunks:
                if not chunk:
                    yield chunk  # pass on the application's "nothing yet"
                    continue
                # Hand over the chunk held so far (b"" the first time: PEP 3333
                # asks middleware never to block) and hold this one: it may be the last.
                out, held = held, chunk
                yield out
        except Exception:
            held = exchange.error_page(sys.exc_info())[0]  # the held chunk, if any, is dropped
        # end: the store operation, before the last chunk goes to the server.
        exchange.finish()
        if held:
            yield held

    def close(self) -> None:
        """Release the session if the body did not end, then close the application's iterable."""
        try:
            self._exchange.abandon()
        finally:
            if not self._closed:
                self._closed = True
                close = getattr(self._chunks, "close", None)
                if close is not None:
                    close()
