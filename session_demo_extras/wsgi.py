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
import os
import sys
import urllib.parse
from http import HTTPStatus
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from session_demo import (
    Cookie, MemoryStore, RequestInfo, RequestState, Session, SessionLoadError, SessionMiddleware, Store,
    read_session_id,
)
from session_demo_extras.bounded_store import BoundedMemoryStore
from session_demo_extras.concurrency import TombstoneStore

__all__ = ["CurrentSession", "SessionWSGIMiddleware"]

_log = logging.getLogger("session_demo.extras")

_ExcInfo = tuple[Any, Any, Any]
"""What sys.exc_info() returns, as start_response's third argument takes it."""

# Characters a URL path may carry unescaped (RFC 3986 "pchar", plus "/").
# urllib.parse.quote keeps letters, digits and "_.-~" anyway.
_PATH_SAFE = "/:@!$&'()*+,;="


class CurrentSession(MutableMapping[str, Any]):
    """The request's session as it is now: a mapping that follows ``regenerate()``, ``reload()`` and ``destroy()``.

    What the WSGI and ASGI adapters hand the application. A ``Session``
    object stays the session it was made as: after ``regenerate()`` the
    request's session is another object, and writes to the old one would go
    nowhere. This one reads and writes whichever Session the request holds
    (``state.session``), so ``s.regenerate(); s["user"] = "ann"`` logs in.
    ``id``, ``cookie`` and the Session methods are the current session's.
    With no session left (after ``destroy()``, or ``state.session = None``)
    every use raises RuntimeError, as ``req.session.user`` throws in
    express once ``req.session`` is gone: never a silent write.
    """

    __slots__ = ("state",)

    def __init__(self, state: RequestState) -> None:
        self.state = state

    @property
    def current(self) -> Session:
        """The request's Session now; RuntimeError if it has none any more."""
        session = self.state.session
        if session is None:
            raise RuntimeError("this request has no session any more (destroy() or state.session = None); "
                               "a new one begins with the next request")
        return session

    def __getitem__(self, key: str) -> Any:
        return self.current[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.current[key] = value

    def __delitem__(self, key: str) -> None:
        del self.current[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)

    def __repr__(self) -> str:
        session = self.state.session
        return f"CurrentSession({session!r})"

    @property
    def id(self) -> Any:
        """The current session's id (express's ``req.session.id``)."""
        return self.current.id

    @property
    def cookie(self) -> Cookie:
        """The current session's cookie (express's ``req.session.cookie``)."""
        return self.current.cookie

    def regenerate(self) -> Session:
        """A new session with a new id in place of this one (Session.regenerate); this mapping follows it."""
        return self.current.regenerate()

    def destroy(self) -> None:
        """Remove the session from the request and the store (Session.destroy)."""
        self.current.destroy()

    def reload(self) -> Session:
        """Load the session again (Session.reload); this mapping follows it."""
        return self.current.reload()

    def save(self) -> Session:
        """Write the session to the store now (Session.save)."""
        return self.current.save()

    def touch(self) -> Session:
        """Restart the cookie's lifetime (Session.touch)."""
        return self.current.touch()

    def to_json(self) -> dict[str, Any]:
        """The stored form (Session.to_json)."""
        return self.current.to_json()


def keeps_sessions_in_process(store: Store) -> bool:
    """Does this store hold sessions in this process's memory (MemoryStore, BoundedMemoryStore), unseen by others?"""
    while isinstance(store, TombstoneStore):
        store = store.store
    return isinstance(store, (MemoryStore, BoundedMemoryStore))


_warned_in_process: int | None = None  # the pid that logged the several-processes warning


def _warn_once_per_process(store: Store) -> None:
    """Log, once per process, that several processes each keep their own sessions, and what to use instead."""
    global _warned_in_process
    if _warned_in_process == os.getpid():
        return
    _warned_in_process = os.getpid()
    _log.warning("SessionWSGIMiddleware: the server runs several processes (wsgi.multiprocess), but %s "
                 "keeps sessions in each process's memory: each process sees only its own, so counts "
                 "restart and logins vanish at random. Use SQLiteStore (processes on one machine) or "
                 "RedisStore (several machines); add LockingSessionMiddleware when concurrent requests "
                 "must not lose an update",
                 type(store).__name__)


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

    - ``environ['session_demo.session']`` is the session (express's
      ``req.session``), a CurrentSession: it follows ``regenerate()`` and
      ``reload()``, so ``s.regenerate(); s["user"] = "ann"`` logs in. None
      when this request gets no session (outside the cookie path, or the
      store is not ready).
    - ``environ['session_demo.state']`` is the RequestState (or None):
      ``state.session = None`` unsets the session (express's
      ``req.session = null``; setting the environ key to None does not), and
      ``state.session_id`` is express's ``req.sessionID``.

    Set-Cookie is decided when the application calls ``start_response``
    and goes after the application's own headers. The store is written
    when the body is exhausted, before its last non-empty chunk is handed
    to the server, so the client cannot see the response end first. The
    server gets the status and headers only with the first chunk that goes
    out, or after the end: a failed save then is a clean 500 without the
    cookie under any server. The price: each chunk reaches the server only
    when the next one exists, so a streaming body (server-sent events) runs
    one chunk late, and a ``wsgi.file_wrapper`` body loses the server's
    sendfile. Difference from PEP 3333's advice to middleware: an empty
    chunk before the first non-empty one is not passed on (gunicorn and
    wsgiref send the headers on it, before the store answered). The
    ``write()`` callable of ``start_response`` is not held back, as
    express-session does not hold back ``res.write``.

    Under a server with several processes (``wsgi.multiprocess``, e.g.
    ``gunicorn -w 4``) a store that keeps sessions in the process
    (MemoryStore, BoundedMemoryStore) is logged once per process as a
    WARNING: each process would see its own sessions. Use SQLiteStore or
    RedisStore there.

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
        self._per_process_store = keeps_sessions_in_process(middleware.options.store)

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
        if self._per_process_store and environ.get("wsgi.multiprocess"):
            _warn_once_per_process(middleware.options.store)
        # begin: load or create the session, before the application runs.
        try:
            state = middleware.begin(self.request_info(environ))
        except Exception as exc:  # the store failed, or genid did
            _log.error("could not load the session: %s", exc)
            error = exc if isinstance(exc, SessionLoadError) else SessionLoadError()
            status = f"{error.status} {HTTPStatus(error.status).phrase}"
            return _plain_text(start_response, status, error.advice + ".\n")
        environ[self.session_key] = CurrentSession(state) if state is not None else None
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
    """One request's session moments as SessionWSGIMiddleware runs them, and what it holds back meanwhile.

    ``held_start`` is the status and headers the application gave (with
    Set-Cookie), kept until the server must have them: just before the first
    non-empty chunk is handed over, when the application calls ``write()``,
    or after the end. Until then a failed save can still become a clean
    500 without the cookie, whatever the server does with an early empty
    chunk or a second ``start_response`` (gunicorn sends the headers on
    the first, and appends the second call's headers to the first's).
    """

    def __init__(self, middleware: SessionMiddleware, state: RequestState,
                 start_response: StartResponse) -> None:
        self.middleware = middleware
        self.state = state
        self._start_response = start_response
        self._set_cookie: str | None = None
        self.started = False  # the application called start_response
        self.held_start: tuple[str, list[tuple[str, str]]] | None = None
        self.held_chunk = b""  # the last non-empty chunk, until the next one or the end
        self.passed = False  # the server has the status and headers
        self._write: Callable[[bytes], object] | None = None
        self.finished = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: _ExcInfo | None = None) -> Callable[[bytes], object]:
        """The application's start_response: add Set-Cookie after its headers (the on-headers hook).

        The cookie is decided at the first call. A second call with
        ``exc_info`` (PEP 3333's way to replace headers not sent yet)
        replaces the held headers, with the same decision; once the server
        has them, it goes to the server, which re-raises if it sent them.
        """
        if self.started and exc_info is None:
            raise AssertionError("start_response called a second time without exc_info")
        if not self.started:
            self._set_cookie = self.middleware.set_cookie_header(self.state)
            self.started = True
        headers = list(headers)
        if self._set_cookie is not None:
            headers.append(("Set-Cookie", self._set_cookie))
        if self.passed:
            self._start_response(status, headers, exc_info)  # too late: the server re-raises
        self.held_start = (status, headers)
        return self.write

    def write(self, data: bytes) -> object:
        """PEP 3333's ``write()``: not held back (express does not hold back ``res.write``); the headers go first."""
        self.pass_on()
        assert self._write is not None
        if self.held_chunk:
            held, self.held_chunk = self.held_chunk, b""
            self._write(held)  # what the body produced before comes first
        return self._write(data)

    def pass_on(self) -> None:
        """Hand the server the held status and headers, once (PEP 3333's start_response)."""
        if self.passed:
            return
        if self.held_start is None:
            raise AssertionError("the application returned a body without calling start_response")
        self.passed = True
        status, headers = self.held_start
        self._write = self._start_response(status, headers)

    def error_page(self, exc_info: _ExcInfo) -> list[bytes]:
        """Answer 500, with the session's Set-Cookie, for an application that raised (express's error handler).

        Through our start_response with ``exc_info``: if the server already
        has the headers it re-raises the application's error here; then the
        end runs and the error goes on to the server.
        """
        when = "after" if self.started else "before"
        _log.error("the application failed %s start_response", when, exc_info=exc_info)
        self.held_chunk = b""  # part of the failed answer: never sent
        try:
            return _plain_text(self.start_response, "500 Internal Server Error",
                               "Internal Server Error\n", exc_info)
        except BaseException:
            self.finish()  # too late for an error page: store, then let the server handle it
            raise

    def save_failed_page(self) -> list[bytes]:
        """In place of the held answer, a 500 without the session's cookie: the store did not take the session."""
        self.held_chunk = b""
        self.held_start = None
        self._set_cookie = None
        return _plain_text(self.start_response, "500 Internal Server Error",
                           "The session could not be saved; the server log says why\n", sys.exc_info())

    def finish(self) -> None:
        """Save, touch or destroy the session in the store, once (the wrapped ``res.end``); raises its error."""
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
    is handed over. Until the first chunk goes, nothing is handed over, not
    even an empty chunk. If the store fails and nothing went yet, the
    answer is a 500 without the cookie; if part of it went, the last chunk
    is withheld and the error raised to the server, so with a
    Content-Length (or chunked encoding) the client can tell. ``close()``
    always closes the application's iterable, even if iteration never began.
    """

    def __init__(self, exchange: _SessionExchange, chunks: Iterable[bytes]) -> None:
        self._exchange = exchange
        self._chunks = chunks
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        try:
            for chunk in self._chunks:
                if not chunk:
                    # An empty chunk is the application's "nothing yet". Before the headers
                    # are out it is not passed on: gunicorn would send them on it, before the
                    # store answered (PEP 3333 asks servers not to, and middleware to pass it).
                    if exchange.passed:
                        yield chunk
                    continue
                # Hand over the chunk held so far and hold this one: it may be the last.
                if exchange.held_chunk:
                    exchange.pass_on()
                    out, exchange.held_chunk = exchange.held_chunk, chunk
                    yield out
                else:
                    exchange.held_chunk = chunk
        except Exception:
            exchange.held_chunk = exchange.error_page(sys.exc_info())[0]
        # end: the store operation, before the last chunk (and, if none went yet, the headers).
        try:
            exchange.finish()
        except Exception:  # end() logged it
            if exchange.passed:
                raise  # part of the answer is out: withhold the rest, the server closes the connection
            exchange.held_chunk = exchange.save_failed_page()[0]
        exchange.pass_on()
        if exchange.held_chunk:
            last, exchange.held_chunk = exchange.held_chunk, b""
            yield last

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
