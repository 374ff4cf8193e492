"""The view counter from express-session's README, plus a few routes to watch each option work.

    python3 server.py                      # then open http://127.0.0.1:3000/
    python3 server.py --trace              # print every session decision
    python3 server.py --max-age 60000 --rolling --resave

Routes and flags are those of ../shared/ROUTES.md (an Express app built with
express-session 1.19.0 and the same routes answers the same way):

    /                   the counter          /peek      read it, change nothing
    /login?user=NAME    regenerate, log in   /whoami    read the user
    /logout             destroy              /forget    unset (req.session = null)
    /remember?ms=N      cookie max_age = N ms ("remember me")
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from extras.bounded_store import BoundedMemoryStore
from extras.concurrency import LockingSessionMiddleware, MergingSessionMiddleware
from extras.redis_store import RedisStore, parse_redis_url
from extras.sqlite_store import SQLiteStore
from session_demo import (
    MemoryStore, RequestInfo, RequestState, SessionHTTPServer, SessionMiddleware, SessionOptions,
    SessionRequestHandler, Store, session_middleware, should_save, should_set_cookie, should_touch,
)

DEMO_SECRET = "keyboard cat"


class CounterHandler(SessionRequestHandler):
    """The demo's routes. Every reply is short plain text."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Node's server does
    head_only = False  # answering a HEAD: headers as for GET, no body

    def do_GET(self) -> None:
        """Route the request to one of the demo's pages (ROUTES.md)."""
        url = urllib.parse.urlsplit(self.request_target())
        query = urllib.parse.parse_qs(url.query)
        # Express's router ignores letter case and one trailing slash.
        path = url.path.lower()
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        routes = {
            "/": self.count_view,
            "/peek": self.peek,
            "/login": self.login,
            "/logout": self.logout,
            "/remember": self.remember,
            "/forget": self.forget,
            "/whoami": self.whoami,
        }
        route = routes.get(path)
        if route is None:
            self.reply(404, "Not Found")
            return
        if self.session is None:
            # Outside the cookie's path (or the store is down) there is no session
            # at all; the same Express app would fail on req.session here, with a 500.
            self.reply(500, "No session: this path is outside the cookie path")
            return
        route(query)

    def do_HEAD(self) -> None:
        """Answer HEAD as Express does: run the GET route, send its headers, leave out the body."""
        self.head_only = True
        try:
            self.do_GET()
        finally:
            self.head_only = False

    def count_view(self, query: dict[str, list[str]]) -> None:
        """The view counter: the first visit sets views to 1, later ones add one."""
        session = self.session
        if "views" in session:
            session["views"] += 1
            self.reply(200, f"Number of views: {session['views']}")
        else:
            session["views"] = 1
            self.reply(200, "Welcome! This is your first visit.")

    def peek(self, query: dict[str, list[str]]) -> None:
        """Read the counter without changing the session."""
        views = self.session.get("views")
        self.reply(200, f"views: {views if views is not None else 'none'}")

    def login(self, query: dict[str, list[str]]) -> None:
        """Regenerate the session (new id, old data gone), then remember the user."""
        user = query.get("user", [""])[0]
        session = self.session.regenerate()
        session["user"] = user
        self.reply(200, f"Logged in as {user}")

    def logout(self, query: dict[str, list[str]]) -> None:
        """Destroy the session in the store; the browser keeps a cookie that no longer works."""
        self.session.destroy()
        self.reply(200, "Logged out")

    def remember(self, query: dict[str, list[str]]) -> None:
        """Give the cookie a lifetime of N milliseconds ("remember me")."""
        text = query.get("ms", [""])[0]
        try:
            ms = float(text)
            self.session.cookie.max_age = ms
        except ValueError:
            # Express would store an invalid date here and fail to set the cookie later.
            self.reply(400, "ms must be a finite number of milliseconds")
            return
        shown = int(ms) if ms.is_integer() else ms  # 60000, not 60000.0, as JavaScript prints it
        self.reply(200, f"Remembered for {shown} ms")

    def forget(self, query: dict[str, list[str]]) -> None:
        """Unset the session for this request (express: req.session = null)."""
        self.session = None
        self.reply(200, "Forgotten")

    def whoami(self, query: dict[str, list[str]]) -> None:
        """Read the logged-in user without changing the session."""
        user = self.session.get("user")
        self.reply(200, f"user: {user if user is not None else 'none'}")

    def reply(self, status: int, text: str) -> None:
        """Send a short plain-text answer with a Content-Length, so the connection can be kept."""
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)


def _yes_no(*, default: bool, help: str) -> dict[str, Any]:
    """argparse settings for a --flag / --no-flag pair."""
    return {"action": argparse.BooleanOptionalAction, "default": default, "help": help}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags of ROUTES.md; each maps onto one session option."""
    parser = argparse.ArgumentParser(description="The express-session view counter, in Python.")
    parser.add_argument("--port", type=int, default=3000, help="port to listen on (3000)")
    parser.add_argument("--secret", action="append",
                        help="signing secret; repeat it to rotate: the first signs, all verify "
                             f"(default: {DEMO_SECRET!r})")
    parser.add_argument("--name", default="connect.sid", help="cookie name (connect.sid)")
    parser.add_argument("--resave", **_yes_no(default=False,
                        help="save unmodified sessions back to the store (default: no)"))
    parser.add_argument("--save-uninitialized", **_yes_no(default=True,
                        help="store and cookie new, unmodified sessions (default: yes)"))
    parser.add_argument("--rolling", action="store_true",
                        help="send the cookie on every response (default: off)")
    parser.add_argument("--max-age", type=int, default=None, metavar="MS",
                        help="cookie max_age in milliseconds (default: a browser-session cookie)")
    parser.add_argument("--secure", choices=["true", "false", "auto"], default="false",
                        help="send the cookie over HTTPS only (false)")
    parser.add_argument("--same-site", choices=["lax", "strict", "none", "auto"], default=None,
                        help="SameSite attribute (not set)")
    parser.add_argument("--proxy", choices=["true", "false"], default=None,
                        help="trust X-Forwarded-Proto (not set)")
    parser.add_argument("--unset", choices=["keep", "destroy"], default="keep",
                        help="what /forget does to the stored session (keep)")
    parser.add_argument("--http-only", **_yes_no(default=True,
                        help="HttpOnly attribute (default: yes)"))
    parser.add_argument("--path", default="/", help="cookie path (/)")
    parser.add_argument("--domain", default=None, help="cookie domain (not set)")
    parser.add_argument("--trace", action="store_true", help="print each request's session decisions")
    parser.add_argument("--tour", action="store_true",
                        help="print a narrated tour of a few requests, run in-process, and exit")
    # Beyond express-session (see session_demo.py, sections 11 and 13):
    parser.add_argument("--store", type=_store_spec, default="memory",
                        metavar="memory|bounded|sqlite:PATH|redis://HOST:PORT[/DB]",
                        help="where sessions live: express's MemoryStore (default), a bounded memory "
                             "store, a SQLite file that survives restarts, or Redis as connect-redis "
                             "keeps it (redis://[user:password@]host:port/db, rediss:// for TLS), "
                             "shared by servers on many machines")
    parser.add_argument("--concurrency", choices=["lock", "merge"], default=None,
                        help="two requests for one session at once: serve them one at a time (lock) "
                             "or merge their changes (merge; needs --store bounded, sqlite:PATH or redis://...); "
                             "default: the last write wins, as in express-session")
    return parser.parse_args(argv)


def _store_spec(text: str) -> str:
    """Check a --store value: memory, bounded, sqlite:PATH or a redis:// (rediss://) URL."""
    if text in ("memory", "bounded") or (text.startswith("sqlite:") and len(text) > len("sqlite:")):
        return text
    if text.startswith(("redis://", "rediss://")):
        try:
            parse_redis_url(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    raise argparse.ArgumentTypeError("expected memory, bounded, sqlite:PATH or redis://HOST:PORT[/DB]")


def make_store(spec: str) -> Store:
    """The store that --store names (memory, bounded, sqlite:PATH or redis://...)."""
    if spec == "bounded":
        return BoundedMemoryStore()
    if spec.startswith("sqlite:"):
        return SQLiteStore(spec[len("sqlite:"):])
    if spec.startswith(("redis://", "rediss://")):
        return RedisStore(spec)
    return MemoryStore()


def middleware_options(args: argparse.Namespace) -> dict[str, Any]:
    """Turn the flags into session_middleware() keyword options."""
    cookie: dict[str, Any] = {"path": args.path, "http_only": args.http_only}
    cookie["secure"] = {"true": True, "false": False, "auto": "auto"}[args.secure]
    if args.max_age is not None:
        cookie["max_age"] = args.max_age
    if args.same_site is not None:
        cookie["same_site"] = args.same_site
    if args.domain is not None:
        cookie["domain"] = args.domain
    options: dict[str, Any] = {
        "secret": args.secret or [DEMO_SECRET],
        "name": args.name,
        "resave": args.resave,
        "save_uninitialized": args.save_uninitialized,
        "rolling": args.rolling,
        "proxy": None if args.proxy is None else args.proxy == "true",
        "unset": args.unset,
        "cookie": cookie,
    }
    if args.store != "memory":  # otherwise express's default: a MemoryStore on the middleware's clock
        options["store"] = make_store(args.store)
    return options


def make_middleware(args: argparse.Namespace) -> SessionMiddleware:
    """The session middleware for these flags: express's, or one of extras.concurrency's."""
    options = SessionOptions(**middleware_options(args))
    if args.concurrency == "lock":
        return LockingSessionMiddleware(options)
    if args.concurrency == "merge":
        return MergingSessionMiddleware(options)
    return SessionMiddleware(options)


def make_server(args: argparse.Namespace, host: str = "127.0.0.1") -> SessionHTTPServer:
    """Build the demo server for these flags (port 0 picks a free port)."""
    return SessionHTTPServer((host, args.port), CounterHandler, make_middleware(args))


# ---- The tour: python3 server.py --tour ------------------------------------
#
# Lessons 1 to 8 of LESSONS.md on one screen: a few requests run in-process,
# each with the cookie the browser sends, the decisions and their reasons,
# the Set-Cookie and what the store holds.

_TOUR_START = 1_800_000_000.0  # Fri 15 Jan 2027, 08:00:00 UTC


class _TourClock:
    """The tour's clock: it stands still until the tour moves it, so every run prints the same."""

    def __init__(self, now: float = _TOUR_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _count_views(state: RequestState) -> None:
    """The view counter: the handler of express-session's README."""
    state.session["views"] = state.session.get("views", 0) + 1


def _only_read(state: RequestState) -> None:
    """A handler that reads the session and changes nothing (server.py's /peek)."""
    state.session.get("views")


def _tour_request(middleware: SessionMiddleware, clock: _TourClock, out: TextIO, title: str,
                  cookie: str | None, handler: Callable[[RequestState], None]) -> str | None:
    """Run one request in-process and narrate it; return what the browser sends back next time.

    The three moments of SessionMiddleware, as a server adapter runs them:
    begin (load or create), then the headers (should_set_cookie), then the
    end (should_save, and should_touch when there is nothing to save).
    """
    minutes, seconds = divmod(int(clock() - _TOUR_START), 60)
    print(f"\n[08:{minutes:02d}:{seconds:02d}] {title}", file=out)
    print(f"    Cookie:      {cookie or '(none)'}", file=out)

    state = middleware.begin(RequestInfo(url="/", cookie_header=cookie))
    assert state is not None and state.session is not None
    handler(state)

    # The headers go out: should_set_cookie decides, set_cookie_header acts.
    decision = should_set_cookie(state)
    print(f"    set-cookie:  {'yes' if decision else 'no '}  {decision.reason}", file=out)
    set_cookie = middleware.set_cookie_header(state)

    # The end of the request: save, or else perhaps touch.
    save = should_save(state)
    print(f"    save:        {'yes' if save else 'no '}  {save.reason}", file=out)
    if not save:
        touch = should_touch(state)
        print(f"    touch:       {'yes' if touch else 'no '}  {touch.reason}", file=out)
    middleware.end(state)

    print(f"    Set-Cookie:  {set_cookie or '(none)'}", file=out)
    _show_store(middleware.options.store, out)
    if set_cookie is None:
        return cookie  # the browser keeps what it had
    return set_cookie.split(";", 1)[0]


def _show_store(store: Store, out: TextIO) -> None:
    """Print what a MemoryStore holds: the raw JSON text under each id."""
    entries = getattr(store, "sessions", {})
    if not entries:
        print("    store:       (empty)", file=out)
    for number, (sid, text) in enumerate(entries.items()):
        label = "store:" if number == 0 else ""
        print(f"    {label:<12} {sid} = {text}", file=out)


def tour(out: TextIO = sys.stdout) -> None:
    """Print a narrated tour of a few requests: lessons 1 to 8 of LESSONS.md on one screen.

    No sockets: each request runs in-process through SessionMiddleware,
    with a clock that moves only when the tour says so and ids sid1, sid2,
    ... instead of random ones. For each request it shows the Cookie the
    browser sends, the decisions and their reasons, the Set-Cookie, and the
    store's contents.
    """
    clock = _TourClock()
    ids = itertools.count(1)
    store = MemoryStore(clock=clock)
    middleware = session_middleware(
        secret="keyboard cat", resave=False, save_uninitialized=False, rolling=False,
        cookie={"max_age": 60_000}, store=store, clock=clock,
        genid=lambda request: f"sid{next(ids)}",
    )
    print("A tour of session_demo (express-session 1.19.0): a view counter, one request at a time.",
          file=out)
    print("Options: secret='keyboard cat', resave=False, save_uninitialized=False, "
          "cookie max_age=60000 ms.", file=out)

    browser = _tour_request(middleware, clock, out, "A first visit: no cookie; the page counts a view.",
                            None, _count_views)
    clock.advance(10)
    browser = _tour_request(middleware, clock, out,
                            "The browser sends its signed cookie back; another view.",
                            browser, _count_views)
    clock.advance(10)
    browser = _tour_request(middleware, clock, out,
                            "A request that only reads: nothing to save, so the store is touched "
                            "(expires moves).", browser, _only_read)
    assert browser is not None
    forged = browser.replace("sid1", "sid7")
    _tour_request(middleware, clock, out,
                  "A forged cookie (sid1 changed to sid7): a new session; it only reads, so "
                  "nothing is kept.",
                  forged, _only_read)

    clock.advance(120)
    print("\nTwo minutes later, sid1 has expired, but MemoryStore removes it only when it is read:",
          file=out)
    _show_store(store, out)
    _tour_request(middleware, clock, out, "sid1's cookie again: the store finds sid1 expired, deletes it; a new session.",
                  browser, _count_views)

    # Without max_age: a browser-session cookie, as server.py gives by default.
    print("\nNow with no max_age (a browser-session cookie, server.py's default):", file=out)
    store.clear()
    middleware = session_middleware(
        secret="keyboard cat", resave=False, save_uninitialized=False,
        store=store, clock=clock, genid=lambda request: f"sid{next(ids)}",
    )
    browser = _tour_request(middleware, clock, out, "A first visit.", None, _count_views)
    _tour_request(middleware, clock, out,
                  "A second view: saved, but the cookie is not sent again.", browser, _count_views)
    print("\nMore in LESSONS.md; every decision with its reason: python3 server.py --trace", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until Ctrl+C; 0 when stopped, 2 when the flags are wrong."""
    args = parse_args(argv)
    if args.tour:
        tour()
        return 0
    if args.trace:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("session_demo").setLevel(logging.DEBUG)
    if not args.secret:
        print(f"warning: signing with the demo secret {DEMO_SECRET!r}; "
              "pass --secret to use your own", file=sys.stderr)
    try:
        server = make_server(args)
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"Serving the view counter on http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
