"""Sessions for any ASGI application: Starlette, FastAPI, ... (beyond express-session).

ASGI is WSGI's asynchronous successor: the application is a coroutine
``app(scope, receive, send)``, and the response goes out as messages
(``http.response.start``, then ``http.response.body`` until one says
``more_body: False``). The three moments of session_demo's lifecycle:

    begin   - before the application runs, in a thread (the store blocks)
    headers - when the application sends ``http.response.start``
    end     - in a thread, before the last body message goes to the server

Starlette's and FastAPI's ``request.session`` is ``scope["session"]``, so
their applications read and write our sessions as they would their own::

    app = SessionASGIMiddleware(starlette_app, session_middleware(secret=..., store=...))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from session_demo import RequestInfo, RequestState, SessionLoadError, SessionMiddleware
from session_demo_extras.wsgi import CurrentSession

__all__ = ["SessionASGIMiddleware"]

_log = logging.getLogger("session_demo.extras")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Characters a URL path may carry unescaped (RFC 3986 "pchar", plus "/"), as in wsgi.py.
_PATH_SAFE = "/:@!$&'()*+,;="


async def _send_plain_text(send: Send, status: int, text: str,
                           headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a short plain-text response, whole."""
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode("ascii")), *(headers or [])]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class SessionASGIMiddleware:
    """Sessions for any ASGI application: express-session's middleware, for ASGI instead of Connect.

    ``SessionASGIMiddleware(app, session_middleware(secret=...))`` is itself
    an ASGI application. For an HTTP request, inside ``app``:

    - ``scope['session']`` is the session (express's ``req.session``; what
      Starlette's and FastAPI's ``request.session`` return), a
      CurrentSession: a mapping that follows ``regenerate()`` and
      ``reload()``, so ``request.session.regenerate();
      request.session["user"] = "ann"`` logs in; ``request.session.clear()``
      empties it (Starlette's logout); after ``destroy()`` it refuses use.
      None when this request gets no session (outside the cookie path, or
      the store is not ready).
    - ``scope['session_demo.state']`` is the RequestState (or None):
      ``state.session = None`` unsets the session (express's
      ``req.session = null``), ``state.session_id`` is ``req.sessionID``.

    Lifespan and websocket scopes go to ``app`` untouched.

    The store is blocking, so loading and the end run in threads, off the
    event loop: loading in one pool (``threads`` of them), the end in
    another, so that requests waiting for a session's lock
    (LockingSessionMiddleware) can never keep the one holding it from
    saving. The session methods that call the store (``regenerate()``,
    ``destroy()``, ``save()``, ``reload()``) run where the application calls
    them: on the event loop; with a slow store, call them through
    ``await asyncio.to_thread(...)``.

    Set-Cookie is decided when the application sends
    ``http.response.start`` (express's on-headers) and goes after its own
    headers. That message is held back until the store has answered, or
    until the body streams: with the last body message (``more_body``
    False) the end runs first, then the start and the body go out, so a
    store that fails gives a clean 500 without the cookie, never the
    application's answer. A body sent in several messages streams: the
    start goes with its first non-empty part, each part at once, and the
    end runs before the last; if the store fails then, the last message is
    withheld and the error raised to the server, which closes the
    connection (chunked encoding or Content-Length lets the client tell).

    Failures: a session that cannot be loaded gives a 500 that does not
    echo the error (the log has it), a busy session (LockingSessionMiddleware)
    a 503; the application is not run. An application that raises before
    its answer went out gets a 500 (with the session's cookie if it was
    stored) and the error is raised on to the server, which logs it. A
    cancelled request (or a BaseException) stores nothing but releases
    its lock.
    """

    session_key = "session"
    state_key = "session_demo.state"

    def __init__(self, app: ASGIApp, middleware: SessionMiddleware, *, threads: int = 16) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError("threads must be a whole number >= 1")
        self.app = app
        self.middleware = middleware
        self.loading = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="session-load")
        self.ending = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="session-end")

    def request_info(self, scope: Scope) -> RequestInfo:
        """Describe this request for the session layer.

        ``url`` stands for express's ``req.originalUrl``: the raw path as the
        client sent it (``raw_path``; without one, ``path`` percent-encoded
        again) and the query string. As with WSGI, ``tls`` is False and
        ``scheme == 'https'`` is the server's idea of secure (it may come
        from a proxy the server trusts), used with ``proxy=None``;
        ``proxy=True`` trusts X-Forwarded-Proto. Several Cookie lines are
        joined with ``'; '``, as one browser line.
        """
        raw_path = scope.get("raw_path")
        if raw_path:
            url = bytes(raw_path).decode("latin-1")
        else:
            url = urllib.parse.quote(scope.get("path") or "/", safe=_PATH_SAFE)
        query = scope.get("query_string")
        if query:
            url += "?" + bytes(query).decode("latin-1")
        cookies: list[str] = []
        forwarded_proto: str | None = None
        for name, value in scope.get("headers") or ():
            name = bytes(name).lower()
            if name == b"cookie":
                cookies.append(bytes(value).decode("latin-1"))
            elif name == b"x-forwarded-proto" and forwarded_proto is None:
                forwarded_proto = bytes(value).decode("latin-1") or None
        return RequestInfo(url=url or "/", cookie_header="; ".join(cookies) or None, tls=False,
                           forwarded_proto=forwarded_proto, framework_secure=scope.get("scheme") == "https")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request: begin in a thread, then the application with the headers and end moments wired in."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)  # lifespan, websocket: not ours
            return
        try:
            state = await self._begin(self.request_info(scope))
        except Exception as exc:  # the store failed, or genid did
            _log.error("could not load the session: %s", exc)
            error = exc if isinstance(exc, SessionLoadError) else SessionLoadError()
            await _send_plain_text(send, error.status, error.advice + ".\n")
            return
        scope = dict(scope)  # ASGI: a middleware changes a copy, not its caller's scope
        scope[self.session_key] = CurrentSession(state) if state is not None else None
        scope[self.state_key] = state
        if state is None:
            await self.app(scope, receive, send)  # no session: nothing to add
            return

        exchange = _SessionExchange(self, state, send)
        try:
            await self.app(scope, receive, exchange.send)
        except Exception:
            await exchange.app_failed()
            raise  # the server logs it
        except BaseException:  # cancelled, SystemExit, KeyboardInterrupt: store nothing, but unlock
            await exchange.abandon()
            raise
        await exchange.app_returned()

    async def _begin(self, request: RequestInfo) -> RequestState | None:
        """``middleware.begin`` in a loading thread. If this request is cancelled meanwhile, a lock it took is released."""
        future = self.loading.submit(self.middleware.begin, request)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._release_abandoned)
            raise

    def _release_abandoned(self, future: concurrent.futures.Future[RequestState | None]) -> None:
        """A begin() nobody awaits any more: release what it took, if it took anything."""
        if future.cancelled() or future.exception() is not None:
            return
        state = future.result()
        release = getattr(self.middleware, "release", None)  # a lock (session_demo_extras.concurrency)
        if state is not None and release is not None:
            self.ending.submit(release, state)


class _SessionExchange:
    """One request's session moments as SessionASGIMiddleware runs them, and what it holds back meanwhile."""

    def __init__(self, adapter: SessionASGIMiddleware, state: RequestState, send: Send) -> None:
        self.adapter = adapter
        self.middleware = adapter.middleware
        self.state = state
        self._send = send
        self.held_start: Message | None = None  # http.response.start, until it must go
        self.decided = False  # whether Set-Cookie was decided (once, as the first start comes)
        self.set_cookie: str | None = None
        self.start_sent = False
        self.complete = False  # the last message of the answer went to the server
        self.finished = False  # the end ran (or was given up)

    async def send(self, message: Message) -> None:
        """The application's send: hold the start, run the end before the last body message."""
        kind = message.get("type")
        if kind == "http.response.start" and not self.start_sent and self.held_start is None:
            self.held_start = self.with_cookie(message)
            return
        last = ((kind in ("http.response.body", "http.response.zerocopysend") and not message.get("more_body"))
                or kind == "http.response.pathsend")
        if kind == "http.response.body" and not last and not message.get("body") and not self.start_sent:
            return  # nothing to stream yet: keep holding the start
        if last and not self.complete:
            if not await self.finish():
                await self.refuse_answer()
                return
            self.complete = True
        await self.send_start()
        await self._send(message)

    def cookie_headers(self) -> list[tuple[bytes, bytes]]:
        """The session's Set-Cookie header, if any, decided the first time it is asked for (the on-headers hook)."""
        if not self.decided:
            self.decided = True
            self.set_cookie = self.middleware.set_cookie_header(self.state)
        return [(b"set-cookie", self.set_cookie.encode("latin-1"))] if self.set_cookie is not None else []

    def with_cookie(self, start: Message) -> Message:
        """The start message with the session's Set-Cookie after the application's headers."""
        cookie = self.cookie_headers()
        return {**start, "headers": [*start.get("headers", ()), *cookie]} if cookie else start

    async def send_start(self) -> None:
        """Send the held start message, once."""
        if self.held_start is not None and not self.start_sent:
            self.start_sent = True
            await self._send(self.held_start)

    async def finish(self) -> bool:
        """Save, touch or destroy the session in an end thread, once (the wrapped ``res.end``); False if the store failed."""
        if self.finished:
            return self.state.end_error is None
        self.finished = True
        future = self.adapter.ending.submit(self.middleware.end, self.state)
        try:
            await asyncio.wrap_future(future)
        except Exception:  # end() logged it
            return False
        return self.state.end_error is None  # also a failure of an end the application ran itself

    async def refuse_answer(self) -> None:
        """The store did not take the session: a 500 without the cookie in place of the answer, or, if it
        is partly out, no last message (the error goes to the server, which closes the connection)."""
        if self.start_sent:
            error = self.state.end_error or RuntimeError("the session could not be saved")
            raise RuntimeError("the session could not be saved; the answer was cut short") from error
        self.held_start = None
        self.complete = True
        await _send_plain_text(self._send, 500, "The session could not be saved; the server log says why\n")

    async def app_failed(self) -> None:
        """The application raised: the end runs, and an answer not yet out becomes a 500 (express's error handler)."""
        if self.complete:
            return  # it answered (Starlette's error middleware sends its 500, then raises)
        cookie = self.cookie_headers()  # decided as the error page's headers go, before the end
        stored = await self.finish()
        if self.start_sent:
            return  # part of the answer is out: the server closes the connection
        self.complete = True
        self.held_start = None
        if stored:
            await _send_plain_text(self._send, 500, "Internal Server Error\n", cookie)
        else:
            await _send_plain_text(self._send, 500, "The session could not be saved; the server log says why\n")

    async def app_returned(self) -> None:
        """The application returned. If it never sent its last message, the end still runs (a lock is released);
        the start it sent goes on, and the server answers for the unfinished response."""
        if self.complete:
            return
        await self.finish()
        await self.send_start()

    async def abandon(self) -> None:
        """The request was cancelled (the client went away) or a BaseException raised: release, store nothing.
        The release runs in an end thread and is waited for; cancelled again meanwhile, it still runs."""
        if self.finished:
            return
        self.finished = True
        release = getattr(self.middleware, "release", None)  # a lock (session_demo_extras.concurrency)
        if release is not None:
            await asyncio.wrap_future(self.adapter.ending.submit(release, self.state))
