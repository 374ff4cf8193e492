"""Tests for session_demo_extras.asgi: SessionASGIMiddleware, driven by a small ASGI server written here."""

from __future__ import annotations

import asyncio
import http.client
import os
import tempfile
import threading
import unittest
from collections.abc import Callable
from typing import Any

from session_demo import MemoryStore, SessionMiddleware
from session_demo_extras.asgi import SessionASGIMiddleware
from session_demo_extras.concurrency import LockingSessionMiddleware, SessionBusyError
from session_demo_extras.sqlite_store import SQLiteStore
from session_demo_extras.wsgi import CurrentSession
from test_session import CountingStore, Response, SessionAssertions, make_options

TIMEOUT = 10  # seconds: a bound on every wait for an event, never a timing assertion


# ==== A small ASGI server, in-process ========================================


class ASGIResponse(Response):
    """What the application sent for one request: Response's status, headers, body and cookies, plus the raw
    messages, whether the answer was complete (a last body message), and the error the application raised."""

    def __init__(self, messages: list[dict[str, Any]], error: BaseException | None) -> None:
        self.messages = messages
        self.error = error
        starts = [m for m in messages if m["type"] == "http.response.start"]
        headers = http.client.HTTPMessage()
        for name, value in starts[0]["headers"] if starts else []:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        bodies = [m for m in messages if m["type"] == "http.response.body"]
        self.complete = any(not m.get("more_body") for m in bodies)
        body = b"".join(m.get("body", b"") for m in bodies).decode("utf-8")
        super().__init__(starts[0]["status"] if starts else 0, headers, body)


def scope_for(path: str = "/", cookie: str | None = None, *, scheme: str = "http") -> dict[str, Any]:
    """An HTTP scope as uvicorn builds one for ``GET path``."""
    path, _, query = path.partition("?")
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": scheme, "path": path, "raw_path": path.encode("latin-1"), "root_path": "",
            "query_string": query.encode("latin-1"), "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}


async def call(app: Callable[..., Any], path: str = "/", cookie: str | None = None,
               log: list[tuple[str, Any]] | None = None, **scope_fields: Any) -> ASGIResponse:
    """One request through ``app``, as a server runs it; each message sent is noted in ``log`` too."""
    messages: list[dict[str, Any]] = []
    request_read = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal request_read
        if not request_read:
            request_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if any(m["type"] == "http.response.body" and not m.get("more_body") for m in messages):
            raise RuntimeError(f"{message['type']} sent after the response completed")
        messages.append(dict(message))
        if log is not None:
            log.append(("sent", message["type"] if message["type"] != "http.response.body"
                        else message.get("body", b"")))

    error: BaseException | None = None
    try:
        await app(scope_for(path, cookie, **scope_fields), receive, send)
    except Exception as exc:  # what the server would log
        error = exc
    return ASGIResponse(messages, error)


async def reply(send: Callable[..., Any], text: str, status: int = 200) -> None:
    """A whole plain-text answer, as Starlette's PlainTextResponse sends it."""
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def routes(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The demo's routes, as a bare ASGI application reading ``scope['session']`` (Starlette's request.session)."""
    session = scope["session"]
    path = scope["path"]
    if path == "/":
        session["views"] = session.get("views", 0) + 1
        await reply(send, f"views: {session['views']}")
    elif path == "/login":
        session.regenerate()
        session["user"] = "ann"  # the repro: the mapping follows regenerate()
        await reply(send, "logged in")
    elif path == "/whoami":
        await reply(send, f"user: {session.get('user')}")
    elif path == "/logout":
        session.destroy()
        await reply(send, "logged out")
    else:
        await reply(send, "Not Found", 404)


class FailingSetStore(CountingStore):
    """A CountingStore whose set fails (noted first), with a message that must not reach the client."""

    def set(self, sid, session):
        self._note("set", sid)
        raise RuntimeError("db password hunter2")


class ASGICase(SessionAssertions):
    """Shared helpers (no tests of its own)."""

    def adapter(self, app: Callable[..., Any] = routes, middleware: SessionMiddleware | None = None,
                **overrides: Any) -> SessionASGIMiddleware:
        adapter = SessionASGIMiddleware(app, middleware or SessionMiddleware(make_options(**overrides)))
        self.addCleanup(adapter.loading.shutdown)
        self.addCleanup(adapter.ending.shutdown)
        return adapter

    def run_async(self, coroutine: Any) -> Any:
        return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT * 3))


# ==== The tests ================================================================


class TestASGIViewCounter(ASGICase):
    """The counter through scope['session'], as Starlette's request.session reads it."""

    def test_counts_with_the_cookie_and_starts_again_without(self):
        """views: 1, 2, 3 with the cookie the first answer set; a request without it starts at 1."""
        adapter = self.adapter()

        async def visits() -> list[ASGIResponse]:
            first = await call(adapter)
            cookie = self.assert_sets_cookie(first)
            return [first, await call(adapter, cookie=cookie), await call(adapter, cookie=cookie), await call(adapter)]

        answers = self.run_async(visits())
        self.assertEqual([a.body for a in answers], ["views: 1", "views: 2", "views: 3", "views: 1"])
        self.assertTrue(all(a.status == 200 and a.complete for a in answers))

    def test_scope_session_is_the_current_session_and_the_callers_scope_is_left_alone(self):
        """scope['session'] is a CurrentSession, scope['session_demo.state'] the RequestState; the server's scope is not changed."""
        seen: dict[str, Any] = {}

        async def app(scope, receive, send):
            seen.update(scope)
            await reply(send, "ok")

        adapter = self.adapter(app)
        scope = scope_for("/")

        async def run() -> None:
            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: dict[str, Any]) -> None:
                pass

            await adapter(scope, receive, send)

        self.run_async(run())
        self.assertIsInstance(seen["session"], CurrentSession)
        self.assertIs(seen["session"].state, seen["session_demo.state"])
        self.assertNotIn("session", scope)

    def test_request_info_reads_the_raw_path_query_cookie_lines_and_scheme(self):
        """url is raw_path + query; several Cookie lines are joined with '; '; scheme https counts as secure."""
        adapter = self.adapter()
        scope = scope_for("/a%2Fb?x=1", scheme="https")
        scope["headers"] += [(b"cookie", b"a=1"), (b"Cookie", b"b=2"), (b"x-forwarded-proto", b"https")]
        info = adapter.request_info(scope)
        self.assertEqual(info.url, "/a%2Fb?x=1")
        self.assertEqual(info.cookie_header, "a=1; b=2")
        self.assertEqual((info.tls, info.framework_secure, info.forwarded_proto), (False, True, "https"))

    def test_outside_the_cookie_path_there_is_no_session(self):
        """A request outside the cookie's path: scope['session'] is None and no cookie is set."""
        async def app(scope, receive, send):
            await reply(send, f"session: {scope['session']}")

        answer = self.run_async(call(self.adapter(app, cookie={"path": "/admin", "max_age": 60000}), "/"))
        self.assertEqual(answer.body, "session: None")
        self.assert_no_set_cookie(answer)


class TestASGILoginAndLogout(ASGICase):
    """Login with regenerate() and logout with destroy(), through scope['session']."""

    def test_writing_after_regenerate_logs_in_with_a_new_id(self):
        """regenerate() then session['user'] = 'ann': a new cookie that carries the user; the old id is gone."""
        adapter = self.adapter()
        store = adapter.middleware.options.store

        async def run() -> tuple[str, str, ASGIResponse, ASGIResponse]:
            first = self.assert_sets_cookie(await call(adapter))
            login = await call(adapter, "/login", first)
            new = self.assert_sets_cookie(login)
            return first, new, await call(adapter, "/whoami", new), await call(adapter, "/whoami", first)

        first, new, whoami, old = self.run_async(run())
        self.assertNotEqual(first, new)
        self.assertEqual(whoami.body, "user: ann")
        self.assertEqual(old.body, "user: None")
        self.assertEqual(len(store.sessions), 2)  # the logged-in one, and the old cookie's fresh one

    def test_logout_destroys_the_session_and_sets_no_cookie(self):
        """destroy(): no Set-Cookie, the store forgets it, the old cookie finds nothing."""
        adapter = self.adapter()
        store = adapter.middleware.options.store

        async def run() -> tuple[ASGIResponse, ASGIResponse]:
            cookie = self.assert_sets_cookie(await call(adapter, "/login"))
            logout = await call(adapter, "/logout", cookie)
            self.assertEqual(store.sessions, {})
            return logout, await call(adapter, "/whoami", cookie)

        logout, after = self.run_async(run())
        self.assertEqual((logout.status, logout.body), (200, "logged out"))
        self.assert_no_set_cookie(logout)
        self.assertEqual(after.body, "user: None")


class TestASGIPassThrough(ASGICase):
    """Lifespan and websocket scopes reach the application untouched."""

    def test_lifespan_and_websocket_scopes_are_passed_as_they_are(self):
        """The same scope, receive and send objects; no session key; the store is not asked."""
        store = CountingStore()
        seen: list[tuple[Any, Any, Any]] = []

        async def app(scope, receive, send):
            seen.append((scope, receive, send))

        adapter = self.adapter(app, store=store)

        async def receive() -> dict[str, Any]:
            return {}

        async def send(message: dict[str, Any]) -> None:
            pass

        for kind in ("lifespan", "websocket"):
            with self.subTest(kind):
                scope = {"type": kind, "headers": [(b"cookie", b"connect.sid=s%3Aabc.def")]}
                seen.clear()
                self.run_async(adapter(scope, receive, send))
                self.assertEqual(len(seen), 1)
                self.assertIs(seen[0][0], scope)
                self.assertIs(seen[0][1], receive)
                self.assertIs(seen[0][2], send)
                self.assertNotIn("session", scope)
        self.assertEqual(store.calls, {})


class TestASGIEndBeforeTheLastMessage(ASGICase):
    """The store is written before the last body message; the start is held until then, or until the body streams."""

    def test_a_whole_answer_goes_out_after_the_store_answered(self):
        """One body message: set, then the start (with its cookie), then the body."""
        store = CountingStore()
        answer = self.run_async(call(self.adapter(store=store), log=store.log))
        sid = list(store.sessions)[0]
        self.assertEqual(store.log, [("set", sid), ("sent", "http.response.start"), ("sent", b"views: 1")])
        self.assert_sets_cookie(answer)

    def test_a_streamed_answer_goes_part_by_part_and_the_end_comes_before_the_last(self):
        """Three body messages: the start goes with the first non-empty part, the set before the last part."""
        store = CountingStore()

        async def app(scope, receive, send):
            scope["session"]["views"] = 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part, more in ((b"", True), (b"one ", True), (b"two ", True), (b"three", False)):
                await send({"type": "http.response.body", "body": part, "more_body": more})

        answer = self.run_async(call(self.adapter(app, store=store), log=store.log))
        sid = list(store.sessions)[0]
        self.assertEqual(store.log, [("sent", "http.response.start"), ("sent", b"one "), ("sent", b"two "),
                                     ("set", sid), ("sent", b"three")])
        self.assertEqual(answer.body, "one two three")
        self.assert_sets_cookie(answer)


class TestASGIFailures(ASGICase):
    """A store or application failure: never the application's answer with a session the store did not take."""

    def test_a_failed_save_is_a_500_without_the_cookie(self):
        """set fails: a 500 that does not echo the error, no Set-Cookie, not the application's answer."""
        with self.assertLogs("session_demo", "ERROR") as logs:
            answer = self.run_async(call(self.adapter(store=FailingSetStore())))
        self.assertEqual(answer.status, 500)
        self.assert_no_set_cookie(answer)
        self.assertNotIn("views", answer.body)
        self.assertNotIn("hunter2", answer.body)
        self.assertIn("could not be saved", answer.body)
        self.assertTrue(answer.complete)
        self.assertIsNone(answer.error)
        self.assertIn("hunter2", "\n".join(logs.output))

    def test_a_failed_save_after_the_body_began_withholds_the_last_part(self):
        """A streamed answer: the parts sent stay sent, the last never goes, the error reaches the server."""
        async def app(scope, receive, send):
            scope["session"]["views"] = 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part one", "more_body": True})
            await send({"type": "http.response.body", "body": b"the end", "more_body": False})

        with self.assertLogs("session_demo", "ERROR"):
            answer = self.run_async(call(self.adapter(app, store=FailingSetStore())))
        self.assertEqual((answer.status, answer.body, answer.complete), (200, "part one", False))
        self.assertIsInstance(answer.error, RuntimeError)

    def test_a_store_that_fails_to_load_gives_a_500_and_the_app_does_not_run(self):
        """get fails: a 500 that does not echo the error; the application is not called."""
        class FailingGetStore(MemoryStore):
            failing = False

            def get(self, sid):
                if self.failing:
                    raise RuntimeError("db password hunter2")
                return super().get(sid)

        ran = []

        async def app(scope, receive, send):
            ran.append(scope["path"])
            await reply(send, "ok")

        store = FailingGetStore()
        adapter = self.adapter(app, store=store)
        cookie = self.assert_sets_cookie(self.run_async(call(adapter)))
        store.failing = True
        with self.assertLogs("session_demo", "ERROR"):
            answer = self.run_async(call(adapter, cookie=cookie))
        self.assertEqual(answer.status, 500)
        self.assertNotIn("hunter2", answer.body)
        self.assert_no_set_cookie(answer)
        self.assertEqual(ran, ["/"])  # the first request only

    def test_a_busy_session_gives_a_503(self):
        """SessionBusyError from begin (the lock timed out): 503."""
        class BusyMiddleware(SessionMiddleware):
            def begin(self, request):
                raise SessionBusyError("stayed locked")

        with self.assertLogs("session_demo", "ERROR"):
            answer = self.run_async(call(self.adapter(middleware=BusyMiddleware(make_options()))))
        self.assertEqual(answer.status, 503)

    def test_an_app_that_raises_before_answering_gets_a_500_with_the_cookie_and_the_session_saved(self):
        """Raising before (or after) its start message: a 500 carrying Set-Cookie, the session stored, the error raised on."""
        async def before(scope, receive, send):
            scope["session"]["views"] = 1
            raise ValueError("the app failed")

        async def after_start(scope, receive, send):
            scope["session"]["views"] = 1
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-partial", b"1")]})
            raise ValueError("the app failed")

        for app in (before, after_start):
            with self.subTest(app.__name__):
                store = CountingStore()
                answer = self.run_async(call(self.adapter(app, store=store)))
                self.assertEqual((answer.status, answer.complete), (500, True))
                self.assertNotIn("the app failed", answer.body)
                self.assertIsNone(answer.headers["x-partial"])
                self.assert_sets_cookie(answer)
                self.assertIsInstance(answer.error, ValueError)
                self.assertEqual([data["views"] for data in store.all().values()], [1])

    def test_an_app_that_answers_its_own_500_and_raises_keeps_its_answer(self):
        """As Starlette's error middleware does: its 500 goes out (after the end), and its error goes on."""
        async def app(scope, receive, send):
            scope["session"]["views"] = 1
            await reply(send, "Internal Server Error", 500)
            raise ValueError("the app failed")

        store = CountingStore()
        answer = self.run_async(call(self.adapter(app, store=store)))
        self.assertEqual((answer.status, answer.body), (500, "Internal Server Error"))
        self.assertIsInstance(answer.error, ValueError)
        self.assertEqual(store.calls["set"], 1)


class BlockingStore(MemoryStore):
    """A MemoryStore whose next set() waits (at most TIMEOUT) until ``go`` is set, after setting ``entered``."""

    def __init__(self) -> None:
        super().__init__()
        self.block_next = True
        self.entered = threading.Event()
        self.go = threading.Event()

    def set(self, sid, session):
        if self.block_next:
            self.block_next = False
            self.entered.set()
            self.go.wait(TIMEOUT)
        super().set(sid, session)


class TestASGIThreads(ASGICase):
    """The store runs off the event loop; a lock is the request's, in whichever thread."""

    def test_a_slow_store_does_not_block_other_requests(self):
        """While one request's save waits in the store, another request is answered in full."""
        store = BlockingStore()
        adapter = self.adapter(store=store)

        async def run() -> tuple[ASGIResponse, bool, ASGIResponse]:
            slow = asyncio.create_task(call(adapter))
            self.assertTrue(await asyncio.to_thread(store.entered.wait, TIMEOUT))
            other = await call(adapter)
            slow_done_meanwhile = slow.done()
            store.go.set()
            return other, slow_done_meanwhile, await slow

        other, slow_done_meanwhile, slow = self.run_async(run())
        self.assertEqual((other.status, other.body), (200, "views: 1"))
        self.assertFalse(slow_done_meanwhile)
        self.assertEqual((slow.status, slow.body), (200, "views: 1"))
        self.assertEqual(len(store.sessions), 2)

    def test_concurrent_requests_for_one_session_count_exactly_with_the_lock(self):
        """LockingSessionMiddleware on SQLite: 40 concurrent increments on one cookie end at 41, with no lock left."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        store = SQLiteStore(os.path.join(directory.name, "sessions.db"))
        self.addCleanup(store.close)
        middleware = LockingSessionMiddleware(make_options(store=store), lock_timeout=TIMEOUT)

        async def app(scope, receive, send):
            session = scope["session"]
            views = session.get("views", 0)
            await asyncio.sleep(0)  # let other requests run between the read and the write
            session["views"] = views + 1
            await reply(send, f"views: {session['views']}")

        adapter = self.adapter(app, middleware=middleware)

        async def run() -> list[ASGIResponse]:
            cookie = self.assert_sets_cookie(await call(adapter))
            return list(await asyncio.gather(*(call(adapter, cookie=cookie) for _ in range(40))))

        answers = self.run_async(run())
        self.assertEqual([a.status for a in answers], [200] * 40)
        self.assertEqual(sorted(int(a.body.split()[1]) for a in answers), list(range(2, 42)))
        self.assertEqual(middleware._locks, {})
        self.assertEqual(store._connection().execute("SELECT COUNT(*) FROM locks").fetchone()[0], 0)

    def test_a_cancelled_request_releases_its_lock(self):
        """A request cancelled while the application waits (the client went away): nothing stored, the lock free."""
        store = CountingStore()
        middleware = LockingSessionMiddleware(make_options(store=store), lock_timeout=0)
        waiting = asyncio.Event()

        async def app(scope, receive, send):
            if scope["path"] == "/hang":
                scope["session"]["views"] = 99
                waiting.set()
                await asyncio.Event().wait()
            await routes(scope, receive, send)

        adapter = self.adapter(app, middleware=middleware)

        async def run() -> ASGIResponse:
            cookie = self.assert_sets_cookie(await call(adapter))
            hanging = asyncio.create_task(call(adapter, "/hang", cookie))
            await asyncio.wait_for(waiting.wait(), TIMEOUT)
            hanging.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await hanging
            self.assertEqual(middleware._locks, {})  # released before the cancelled request's task ended
            return await call(adapter, cookie=cookie)

        answer = self.run_async(run())
        self.assertEqual((answer.status, answer.body), (200, "views: 2"))
        self.assertEqual(store.calls["set"], 2)


class TestASGIOptions(unittest.TestCase):
    """Configuration errors are caught when the middleware is built."""

    def test_rejects_a_bad_thread_count(self):
        """threads must be a whole number >= 1."""
        for threads in (0, -1, 1.5, True):
            with self.subTest(threads=threads), self.assertRaises(ValueError):
                SessionASGIMiddleware(routes, SessionMiddleware(make_options()), threads=threads)


if __name__ == "__main__":
    unittest.main()
