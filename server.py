"""The view counter from express-session's README, plus a few routes to watch each option work.

    python3 server.py                      # then open http://127.0.0.1:3000/
    python3 server.py --trace              # print every request's session decisions
    python3 server.py --max-age 60000 --rolling --resave
    python3 server.py --tour               # a few requests, narrated, in-process

An Express app built with express-session 1.19.0 and the same routes and
flags answers curl the same way (status, body, Set-Cookie):

    /                   the counter          /peek      read it, change nothing
    /login?user=NAME    regenerate, log in   /whoami    read the user
    /logout             destroy              /forget    unset (req.session = null)
    /remember?ms=N      cookie max_age = N ms ("remember me")

A browser (Accept: text/html) gets the same sentence in a small HTML page
with links to every route and a panel, "What the session layer did". That
view is ours, not express's. The sections (grep for "# ----"): the routes,
what the session layer did, the HTML view, flags and secrets, building the
server, the tour, main.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import html
import itertools
import logging
import os
import queue
import sys
import threading
import time
import urllib.parse
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from session_demo_extras.bounded_store import BoundedMemoryStore
from session_demo_extras.concurrency import LockingSessionMiddleware, MergingSessionMiddleware
from session_demo_extras.frontend import GuardedHTTPServer
from session_demo_extras.lean_handler import LeanRequestHandler
from session_demo_extras.redis_store import RedisStore, parse_redis_url
from session_demo_extras.sqlite_store import SQLiteStore
from session_demo import (
    MemoryStore, RequestInfo, RequestState, Session, SessionHTTPServer, SessionMiddleware, SessionOptions,
    SessionRequestHandler, Store, parse_cookie_header, session_middleware, short_id, stringify,
    unsign,
)

DEMO_SECRET = "keyboard cat"
SECRET_ENVIRONMENT_VARIABLE = "SESSION_SECRET"
SHORT_SECRET = 32  # fewer characters than this gets a warning, as Django's deploy check gives


# ---- The routes --------------------------------------------------------------


class CounterHandler(LeanRequestHandler):
    """The demo's routes: short plain text, or a small HTML page for a browser. Its handler is
    SessionRequestHandler doing less per request (session_demo_extras.lean_handler: a fifth less CPU)."""

    server: DemoServer
    protocol_version = "HTTP/1.1"  # keep-alive, as Node's server does
    head_only = False  # answering a HEAD: headers as for GET, no body
    route_path = ""  # the route being answered, for the HTML view's notes
    status: int | None = None  # the status sent, for the trace
    filed = False  # this request's visit is in the history (and traced)
    ROUTES = {"/": "count_view", "/peek": "peek", "/login": "login", "/logout": "logout",
              "/remember": "remember", "/forget": "forget", "/whoami": "whoami"}  # path: method

    def do_GET(self) -> None:
        """Answer the route, then end the session and file what it did."""
        self.route()
        if self.session_state is not None and not self.filed:
            # The adapter ends the session after do_GET in any case (a second end
            # does nothing); ending it here lets the visit be filed and traced
            # before the response goes out, so the browser's next page has it.
            try:
                self.server.session_middleware.end(self.session_state)
            finally:
                self.file_visit()

    def route(self) -> None:
        """Route the request to one of the demo's pages."""
        try:
            url = urllib.parse.urlsplit(self.request_target())
        except ValueError:  # not a URL at all, e.g. "http://[": a bad request, never a 500
            self.reply(400, "Bad Request")
            return
        query = urllib.parse.parse_qs(url.query) if url.query else {}
        # Express's router ignores letter case and one trailing slash.
        path = url.path.lower()
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        self.route_path = path
        if path not in self.ROUTES:
            self.reply(404, "Not Found")
            return
        route = getattr(self, self.ROUTES[path])
        session = self.session
        if session is None:
            # Outside the cookie's path, or while the store is disconnected, there is no
            # session at all; the same Express app would fail on req.session here, with a 500.
            store = self.server.session_middleware.options.store
            if not getattr(store, "ready", True):
                self.reply(500, "No session: the store is disconnected")
            else:
                self.reply(500, "No session: this path is outside the cookie path")
            return
        route(session, query)

    def do_HEAD(self) -> None:
        """Answer HEAD as Express does: run the GET route, send its headers, leave out the body."""
        self.head_only = True
        try:
            self.do_GET()
        finally:
            self.head_only = False

    def count_view(self, session: Session, query: dict[str, list[str]]) -> None:
        """The view counter: the first visit sets views to 1, later ones add one."""
        if "views" in session:
            session["views"] += 1
            self.reply(200, f"Number of views: {session['views']}")
        else:
            session["views"] = 1
            self.reply(200, "Welcome! This is your first visit.")

    def peek(self, session: Session, query: dict[str, list[str]]) -> None:
        """Read the counter without changing the session."""
        views = session.get("views")
        self.reply(200, f"views: {views if views is not None else 'none'}")

    def login(self, session: Session, query: dict[str, list[str]]) -> None:
        """Regenerate the session (new id, old data gone), then remember the user."""
        user = query.get("user", [""])[0]
        session = session.regenerate()
        session["user"] = user
        self.reply(200, f"Logged in as {user}")

    def logout(self, session: Session, query: dict[str, list[str]]) -> None:
        """Destroy the session in the store; the browser keeps a cookie that no longer works."""
        session.destroy()
        self.reply(200, "Logged out")

    def remember(self, session: Session, query: dict[str, list[str]]) -> None:
        """Give the cookie a lifetime of N milliseconds ("remember me")."""
        text = query.get("ms", [""])[0]
        try:
            ms = float(text)
            session.cookie.max_age = ms
        except ValueError as exc:
            # Express would store an invalid date here and fail to set the cookie later.
            reason = "the expiry would fall after the year 9999" if "years" in str(exc) else "not a finite number"
            self.reply(400, f"ms must be a number of milliseconds: {reason}")
            return
        shown = int(ms) if ms.is_integer() else ms  # 60000, not 60000.0, as JavaScript prints it
        self.reply(200, f"Remembered for {shown} ms")

    def forget(self, session: Session, query: dict[str, list[str]]) -> None:
        """Unset the session for this request (express: req.session = null)."""
        self.session = None
        self.reply(200, "Forgotten")

    def whoami(self, session: Session, query: dict[str, list[str]]) -> None:
        """Read the logged-in user without changing the session."""
        user = session.get("user")
        self.reply(200, f"user: {user if user is not None else 'none'}")

    def reply(self, status: int, text: str) -> None:
        """Send a short answer: the HTML view to a browser, otherwise plain text as Express sends it."""
        if self.wants_html():
            self.reply_html(status, text)
            return
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

    def wants_html(self) -> bool:
        """Did the client ask for HTML (a browser's Accept: text/html)?"""
        return "text/html" in (self.headers.get("Accept") or "").lower()

    def reply_html(self, status: int, text: str) -> None:
        """Send ``text`` in the HTML view, with the panel of what the session layer did.

        The page shows this response's Set-Cookie decision, which is made as
        the headers go out; so the headers go first and the page, whose
        length is known only then, follows as one chunk (HTTP/1.1) or up to
        the end of the connection (HTTP/1.0).
        """
        chunked = self.request_version == "HTTP/1.1"
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()  # the Set-Cookie decision is logged, and recorded, here
        if self.head_only:
            return
        body = render_page(text, self.panel(status)).encode("utf-8")
        if chunked:
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        self.wfile.write(body)

    def panel(self, status: int) -> Panel:
        """Gather what the session layer did for this request, for the HTML view."""
        options = self.server.session_middleware.options
        state = self.session_state
        earlier = self.server.history.earlier(state.cookie_id) if state and state.cookie_id else []
        now = RECORDER.current()
        return Panel(
            cookie=describe_cookie(self.request_info().cookie_header, options.name, options.secrets),
            session=describe_session(state, now),
            session_id=str(short_id(state.session_id)) if state else None,
            stored=stored_text(options.store, state.session_id) if state else None,
            note=route_note(self.route_path, status, now),
            now=Visit(self.requestline, None, now),
            earlier=earlier,
        )

    # -- what the session layer did, per request: the history and --trace --

    def handle_one_request(self) -> None:
        """Serve one request while the recorder collects its session log lines."""
        self.status = None
        self.filed = False
        with RECORDER.collecting():
            super().handle_one_request()
            if self.raw_requestline and not self.filed:
                self.file_visit()  # a request that do_GET did not finish (an error, a 501)

    def file_visit(self) -> None:
        """Keep this request's records in the history, under the id the browser will send next; trace them."""
        self.filed = True
        visit = Visit(self.requestline, self.status, RECORDER.current())
        state = self.session_state
        if state is not None:
            cookie_sent = any(line.startswith("set-cookie: yes") for line in visit.decisions)
            next_id = state.session_id if cookie_sent else state.cookie_id
            self.server.history.add(state.cookie_id, next_id if isinstance(next_id, str) else None,
                                    visit)
        if self.server.trace is not None:
            self.server.print_trace(trace_block(visit))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Remember the status; log the access line unless --trace prints it in its block."""
        self.status = int(code) if str(code).isdigit() else None
        if self.server.trace is None:
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        """Log the line http.server writes to stderr (control characters escaped, as it does), through
        the server's access log."""
        message = format % args
        if not message.isprintable():
            message = message.translate(_CONTROL_CHARACTERS)
        self.server.access_log.add(f"{self.address_string()} - - [{self.log_date_time_string()}] {message}\n")

    def log_date_time_string(self) -> str:
        """The access line's time, as http.server writes it, formatted once a second."""
        second = int(time.time())
        cached = self.server.log_time
        if cached[0] != second:
            cached = self.server.log_time = (second, super().log_date_time_string())  # one tuple: thread-safe
        return cached[1]


_CONTROL_CHARACTERS = str.maketrans({c: rf"\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))})


class AccessLog:
    """The access lines, written to stderr by a thread of their own, a few at a time.

    Writing from the thread that serves the request would cost that request a
    system call, and let another thread take the interpreter in between. Here
    a request only queues its line; the writer waits for the first one, lets
    others gather for ``delay`` seconds, and writes them all at once.
    """

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()  # None: stop
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        """Queue one line (the writer starts with the first)."""
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write, name="access log", daemon=True)
                    self._writer.start()
        self._lines.put(line)

    def close(self) -> None:
        """Write the lines still queued, then stop the writer."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._lines.put(None)
            writer.join()

    def _write(self) -> None:
        while True:
            lines = [self._lines.get()]  # wait for a line
            if lines[0] is not None:
                time.sleep(self.delay)  # let the lines of other requests gather
            while not self._lines.empty():
                lines.append(self._lines.get_nowait())
            with contextlib.suppress(OSError, ValueError):  # stderr closed: the lines are lost
                sys.stderr.write("".join(line for line in lines if line is not None))
                sys.stderr.flush()
            if None in lines:
                return


# ---- What the session layer did: records, history, --trace --------------------
#
# session_demo logs every decision (logger "session_demo", DEBUG). The recorder
# keeps the records of the request the current thread serves; the HTML view
# shows them, the history keeps the last few per browser (the save, touch or
# destroy comes after the page is written), and --trace prints them.


class DecisionRecorder(logging.Handler):
    """A logging handler that collects the "session_demo" log lines of the current thread's request."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._local = threading.local()

    def handle(self, record: logging.LogRecord) -> bool:
        """Keep the record's line if this thread is collecting (no lock: each thread has its own list).
        A warning or an error also goes to stderr, as logging prints it when no handler is configured
        (its "last resort", which a handler such as this one would otherwise turn off)."""
        lines = getattr(self._local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())
        if record.levelno >= logging.WARNING and not logging.root.handlers and logging.lastResort:
            logging.lastResort.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[str]]:
        """Collect this thread's log lines until the block ends."""
        self.install()
        outer = getattr(self._local, "lines", None)
        lines: list[str] = []
        self._local.lines = lines
        try:
            yield lines
        finally:
            self._local.lines = outer

    def current(self) -> list[str]:
        """The lines collected so far for this thread's request."""
        return list(getattr(self._local, "lines", None) or [])

    def install(self) -> None:
        """Attach to the "session_demo" logger and let its DEBUG records be made.

        Records only reach other handlers if they want DEBUG: without
        --trace nothing more is printed.
        """
        logger = logging.getLogger("session_demo")
        if self not in logger.handlers:
            logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.DEBUG:
            logger.setLevel(logging.DEBUG)


RECORDER = DecisionRecorder()


@dataclass
class Visit:
    """One request as the session layer saw it: the request line, the status, its log lines."""

    request_line: str
    status: int | None
    decisions: list[str] = field(default_factory=list)


class DecisionHistory:
    """The last few visits of each browser, in bounded memory, keyed by the id its cookie carries.

    A visit is filed under the id the browser will send next, and the
    visits before it move along: after /login (a new id) or /logout (the
    same cookie, a destroyed session) the page still shows what came before.
    """

    def __init__(self, browsers: int = 256, visits: int = 5) -> None:
        self.browsers = browsers
        self.visits = visits
        self._history: OrderedDict[str, deque[Visit]] = OrderedDict()
        self._lock = threading.Lock()

    def earlier(self, session_id: str) -> list[Visit]:
        """The visits filed under this id, newest first."""
        with self._lock:
            return list(self._history.get(session_id, ()))

    def add(self, sent_id: str | None, next_id: str | None, visit: Visit) -> None:
        """File ``visit``, and the visits filed under ``sent_id``, under ``next_id``."""
        with self._lock:
            visits = self._history.pop(sent_id, None) if sent_id else None
            if next_id is None:
                return  # the browser keeps no cookie: nothing will find these again
            if visits is None:
                visits = self._history.pop(next_id, None) or deque(maxlen=self.visits)
            visits.appendleft(visit)
            self._history[next_id] = visits
            while len(self._history) > self.browsers:
                self._history.popitem(last=False)


def printable(text: str) -> str:
    """Text safe to print on a terminal: control characters shown as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def trace_block(visit: Visit) -> str:
    """One request for --trace: the request line and status, then its session lines, indented."""
    status = f" -> {visit.status}" if visit.status is not None else ""
    lines = [printable(visit.request_line) + status]
    lines += ["    " + printable(line) for line in visit.decisions]
    return "\n".join(lines) + "\n"


# ---- The HTML view (ours, not express's) -------------------------------------


LESSON_FOR: list[tuple[str, str]] = [
    # (words in a log line, the title of the lesson in LESSONS.md that explains it);
    # the first match wins, so the more specific words come first.
    ("regenerating", "Login and session fixation"),
    ("unsigned", "Tampering"),
    ("signature invalid", "Tampering"),
    ("no SID sent", "What a session is"),
    ("session found", "The store"),
    ("fetching", "The store"),
    ("saving", "The store"),
    ("save_uninitialized", "save_uninitialized"),
    ("new session", "save_uninitialized"),
    ("secure", "HTTPS, proxies, secure and same_site"),
    ("expiry", "Expiry and rolling"),
    ("browser-session cookie", "Expiry and rolling"),
    ("rolling", "Expiry and rolling"),
    ("unset", "Logout, and unset"),
    ("destroy", "Logout, and unset"),
    ("no session", "Logout, and unset"),
    ("save", "resave and touch"),
    ("touch", "resave and touch"),
]

ROUTE_NOTES: dict[str, tuple[str, str]] = {
    "/login": ("regenerate() destroyed the old session in the store and gave you a new id.",
               "Login and session fixation"),
    "/logout": ("destroy() removed the session from the store; your browser keeps a cookie "
                "that no longer finds it.", "Logout, and unset"),
    "/forget": ("the session was unset for this request (express: req.session = null).",
                "Logout, and unset"),
    "/peek": ("read only: nothing changed, so nothing is saved.", "resave and touch"),
}


def route_note(path: str, status: int, decisions: Sequence[str]) -> tuple[str, str] | None:
    """The page's note on what the route did, as it happened: none for an error answer."""
    if status != 200:
        return None
    if path == "/remember":
        return remember_note(decisions)
    return ROUTE_NOTES.get(path)


def remember_note(decisions: Sequence[str]) -> tuple[str, str]:
    """What /remember did to the browser's cookie: only a Set-Cookie changes it, and this response may not have one."""
    set_cookie = next((line for line in decisions if line.startswith("set-cookie: ")), "set-cookie: no")
    if set_cookie.startswith("set-cookie: yes"):
        text = ("the cookie now has a max_age, and this response's Set-Cookie carries its Expires: "
                "your browser keeps the cookie after it closes.")
    elif set_cookie == "set-cookie: no (unmodified)":
        text = ("the session's cookie now has a max_age, but this response sends no Set-Cookie (changing "
                "only the cookie is not a modification), so your browser's cookie is as it was. The "
                "next response that changes the session (count a view) sends it with its Expires.")
    else:
        reason = set_cookie.removeprefix("set-cookie: no").strip()  # "(secure cookie, but ...)"
        text = ("the session's cookie now has a max_age, but this response sends no Set-Cookie"
                f"{' ' + reason if reason else ''}, so your browser's cookie is as it was.")
    return text, "Expiry and rolling"


def lesson_for(line: str) -> str:
    """The title of the lesson that explains this log line."""
    for words, title in LESSON_FOR:
        if words in line:
            return title
    return "The decisions, and why"


@dataclass
class Panel:
    """What the HTML view's panel shows; every field is plain text, escaped when rendered."""

    cookie: str
    session: str
    session_id: str | None
    stored: str | None
    note: tuple[str, str] | None
    now: Visit
    earlier: list[Visit]


def describe_cookie(cookie_header: str | None, name: str, secrets: Sequence[bytes | str]) -> str:
    """The session cookie the browser sent, cut short, and whether (and with which secret) it checks."""
    raw = parse_cookie_header(cookie_header).get(name) if cookie_header else None
    if not raw:
        return f"Your browser sent no {name} cookie."
    shown = raw[:8] + "..." if len(raw) > 8 else raw  # s: and six characters of the id, as in the logs
    if not raw.startswith("s:"):
        return f"Your browser sent {name}={shown}: not signed (no s: in front), so it is ignored."
    for index, secret in enumerate(secrets):
        if unsign(raw[2:], secret) is not None:
            which = "the first, which signs new cookies" if index == 0 else "an older one"
            return f"Your browser sent {name}={shown}; its signature checks with secret {index} ({which})."
    return f"Your browser sent {name}={shown}; its signature checks with none of the secrets."


def describe_session(state: RequestState | None, lines: Sequence[str]) -> str:
    """The request's session id (shortened) and whether the store had the one the browser named."""
    if state is None:
        return "This request has no session (outside the cookie's path, or the store is down)."
    session = f"Session {short_id(state.session_id)}"
    if "session found" in lines and state.session_id != state.cookie_id:
        return f"{session}: new; the store had {short_id(state.cookie_id)}, the one your cookie names."
    if "session found" in lines:
        return f"{session}: the store had it."
    if state.cookie_id:
        return (f"{session}: new; the store had no session {short_id(state.cookie_id)} "
                "(expired, destroyed or never issued).")
    return f"{session}: new, since no valid cookie came with the request."


def stored_text(store: Store, session_id: Any) -> str | None:
    """What the store holds under this id now, as JSON; None when it holds nothing."""
    sessions = getattr(store, "sessions", None)
    text = sessions.get(session_id) if isinstance(sessions, Mapping) else None
    if isinstance(text, str):
        return text  # MemoryStore's own text, read without expiring it
    try:
        data = store.get(session_id)
    except Exception:
        return "(the store could not be read)"
    return None if data is None else stringify(data)


_STYLE = """\
body { font: 16px/1.45 system-ui, sans-serif; max-width: 46em; margin: 2em auto; padding: 0 1em; }
nav a, form { margin-right: 1em; } form { display: inline; }
section { border: 1px solid #bbb; background: #f7f7f4; padding: 0 1em 1em; margin-top: 1.5em; }
pre { white-space: pre-wrap; word-break: break-all; } .why { color: #666; font-size: 90%; }"""

_LINKS = [("/", "Count a view"), ("/peek", "Peek"), ("/whoami", "Who am I"), ("/logout", "Log out"),
          ("/remember?ms=60000", "Remember me for 60 s"), ("/forget", "Forget")]


def render_page(sentence: str, panel: Panel) -> str:
    """The HTML view: the route's sentence, links to every route, and the panel."""
    e = html.escape
    links = " ".join(f'<a href="{e(href)}">{e(label)}</a>' for href, label in _LINKS)
    stored = panel.stored if panel.stored is not None else "(nothing)"
    note = ""
    if panel.note is not None:
        note = f"<p>{e(panel.note[0])} {_why(panel.note[1])}</p>\n"
    visits = [_render_visit("This response", panel.now, "save, touch or destroy come after the page")]
    visits += [_render_visit("Before", visit, "") for visit in panel.earlier[:4]]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(sentence)}</title>
<link rel="icon" href="data:,"><style>
{_STYLE}
</style></head><body>
<p>{e(sentence)}</p>
<nav>{links}
<form action="/login" method="get"><label>Name <input name="user" placeholder="ann"></label>
<button>Log in</button></form></nav>
<section id="session-layer"><h2>What the session layer did</h2>
<p>{e(panel.cookie)}</p>
<p>{e(panel.session)}</p>
{note}<p>The store holds, for {e(panel.session_id or "no session")}, as this page is written
(this request's save or touch comes after it):</p>
<pre>{e(stored)}</pre>
<h3>Decisions, newest first</h3>
<ol>
{"".join(visits)}</ol>
<p class="why">This page is server.py's own view; curl gets the plain text that express's demo sends.</p>
</section>
</body></html>
"""


def _render_visit(label: str, visit: Visit, aside: str) -> str:
    """One request in the panel: its request line, then each log line with its "why"."""
    e = html.escape
    status = f" &rarr; {visit.status}" if visit.status is not None else ""
    aside = f' <span class="why">({e(aside)})</span>' if aside else ""
    items = "".join(f"<li><code>{e(line)}</code><br>{_why(lesson_for(line))}</li>\n"
                    for line in visit.decisions)
    return (f"<li><b>{e(label)}</b>: <code>{e(visit.request_line)}</code>{status}{aside}\n"
            f"<ul>\n{items}</ul></li>\n")


def _why(title: str) -> str:
    return f'<span class="why">why: see &quot;{html.escape(title)}&quot; in LESSONS.md</span>'


# ---- Flags and secrets ------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line of error (and exit status 2), not the whole usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see python3 server.py --help)\n")


def _yes_no(*, default: bool, help: str) -> dict[str, Any]:
    """argparse settings for a --flag / --no-flag pair."""
    return {"action": argparse.BooleanOptionalAction, "default": default, "help": help}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The demo's flags; each maps onto one session option."""
    parser = _Parser(
        description="The express-session view counter, in Python.",
        epilog=f"The secret comes from --secret-file, else --secret, else ${SECRET_ENVIRONMENT_VARIABLE}, "
               f"else the demo secret {DEMO_SECRET!r} (with a warning).")
    parser.add_argument("--port", type=int, default=3000, help="port to listen on (3000)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--secret", action="append",
                        help="signing secret; repeat it to rotate: the first signs, all verify. "
                             "Other local users can read it in the process list: prefer "
                             f"--secret-file or ${SECRET_ENVIRONMENT_VARIABLE}")
    secret.add_argument("--secret-file", metavar="PATH",
                        help="read the secrets from a file, one a line: the first signs, all verify")
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
    parser.add_argument("--trace", action="store_true",
                        help="print each request's session decisions, one block per request")
    parser.add_argument("--tour", action="store_true",
                        help="print a narrated tour of a few requests, run in-process, and exit")
    # Beyond express-session (the extras package):
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


def read_secrets(args: argparse.Namespace,
                 environ: Mapping[str, str] = os.environ) -> tuple[list[str], str]:
    """The signing secrets and where they came from, in order of preference.

    --secret-file (one secret a line, blank lines skipped), then --secret,
    then the SESSION_SECRET environment variable, then the demo secret.
    Raises ValueError for a file that cannot be read or holds no secret.
    """
    if args.secret_file is not None:
        try:
            with open(args.secret_file, encoding="utf-8") as file:
                secrets = [line.strip() for line in file if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read --secret-file {args.secret_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        if not secrets:
            raise ValueError(f"--secret-file {args.secret_file} holds no secret")
        return secrets, "--secret-file"
    if args.secret:
        return list(args.secret), "--secret"
    if environ.get(SECRET_ENVIRONMENT_VARIABLE):
        return [environ[SECRET_ENVIRONMENT_VARIABLE]], f"${SECRET_ENVIRONMENT_VARIABLE}"
    return [DEMO_SECRET], "the demo secret"


def startup_warnings(args: argparse.Namespace, secret_source: str) -> list[str]:
    """One line for each flag that makes a browser refuse the cookie, or the secret weak."""
    found: list[str] = []
    if secret_source == "the demo secret":
        found.append(f"signing with the demo secret {DEMO_SECRET!r}; pass --secret-file, "
                     f"${SECRET_ENVIRONMENT_VARIABLE} or --secret to use your own")
    else:
        for index, secret in enumerate(args.secret or []):
            if len(secret) < SHORT_SECRET:
                found.append(f"secret {index} from {secret_source} has {len(secret)} characters; "
                             f"use {SHORT_SECRET} or more random ones")
    behind_tls_proxy = args.proxy == "true"
    if args.secure == "true" and not behind_tls_proxy:
        found.append("--secure true over plain HTTP: browsers will not send the cookie back, so "
                     "every visit is a new session (use --secure auto, or --proxy true behind HTTPS)")
    if args.same_site == "none" and not (args.secure == "true" or (args.secure == "auto" and behind_tls_proxy)):
        found.append("--same-site none without --secure true: browsers refuse such a cookie, so "
                     "every visit is a new session")
    return found


# ---- Building the server ------------------------------------------------------


def make_store(spec: str) -> Store:
    """The store that --store names (memory, bounded, sqlite:PATH or redis://...)."""
    if spec == "bounded":
        return BoundedMemoryStore(is_established=lambda data: "user" in data)  # a login counts at once
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
    """The session middleware for these flags: express's, or one of session_demo_extras.concurrency's."""
    with warnings.catch_warnings():  # startup_warnings() has said it, naming where the secret came from
        warnings.filterwarnings("ignore", "short secret")
        options = SessionOptions(**middleware_options(args))
    if args.concurrency == "lock":
        return LockingSessionMiddleware(options)
    if args.concurrency == "merge":
        return MergingSessionMiddleware(options)
    return SessionMiddleware(options)


class DemoServer(GuardedHTTPServer):
    """The demo's server (session_demo_extras.frontend's, with its guards): it also keeps each browser's recent decisions, and traces them."""

    def __init__(self, address: tuple[str, int], handler: type[SessionRequestHandler],
                 middleware: SessionMiddleware, *, trace: TextIO | None = None) -> None:
        self.history = DecisionHistory()
        self.access_log = AccessLog()
        self.log_time = (0, "")  # the access lines' time: (the second, as text)
        self.trace = trace
        self._trace_lock = threading.Lock()
        RECORDER.install()
        super().__init__(address, handler, middleware)

    def server_close(self) -> None:
        """Stop listening; write the access lines still queued."""
        super().server_close()
        self.access_log.close()

    def print_trace(self, block: str) -> None:
        """Print one request's block at once, so that two threads' blocks never interleave."""
        with self._trace_lock:
            assert self.trace is not None
            self.trace.write(block)
            self.trace.flush()


def make_server(args: argparse.Namespace, host: str = "127.0.0.1") -> DemoServer:
    """Build the demo server for these flags (port 0 picks a free port); --trace prints on stderr."""
    return DemoServer((host, args.port), CounterHandler, make_middleware(args),
                      trace=sys.stderr if args.trace else None)


# ---- The tour: python3 server.py --tour ------------------------------------
#
# A few requests on one screen, run in-process with server.py's default
# options: for each, the cookie the browser sends, the session layer's log
# lines (the same records --trace prints), the Set-Cookie and the store.

_TOUR_START = 1_800_000_000.0  # Fri 15 Jan 2027, 08:00:00 UTC; the tour's clock stands still
_TOUR_HIDDEN = ("fetching ", "saving ")  # store calls: the decisions already say them


def _count_views(state: RequestState) -> None:
    """The view counter: the handler of express-session's README."""
    session = state.session
    assert session is not None  # the tour's requests all have one
    session["views"] = session.get("views", 0) + 1


def _only_read(state: RequestState) -> None:
    """A handler that reads the session and changes nothing (server.py's /peek)."""
    assert state.session is not None
    state.session.get("views")


def _tour_request(middleware: SessionMiddleware, out: TextIO, title: str, cookie: str | None,
                  handler: Callable[[RequestState], None]) -> str | None:
    """Run one request in-process and narrate it; return the cookie the browser sends next time.

    The three moments of SessionMiddleware, as a server adapter runs them:
    begin (load or create), the headers (Set-Cookie), the end (save or touch).
    """
    print(f"\n{title}", file=out)
    print(f"  {'Cookie:':<11} {cookie or '(none)'}", file=out)
    with RECORDER.collecting() as lines:
        state = middleware.begin(RequestInfo(url="/", cookie_header=cookie))
        assert state is not None and state.session is not None
        handler(state)
        set_cookie = middleware.set_cookie_header(state)
        middleware.end(state)
    for number, line in enumerate(line for line in lines if not line.startswith(_TOUR_HIDDEN)):
        print(f"  {'log:' if number == 0 else '':<11} {line}", file=out)
    if set_cookie is None:
        print("  Set-Cookie: (none)", file=out)
        return cookie  # the browser keeps what it had
    pair, _, attributes = set_cookie.partition("; ")
    print(f"  Set-Cookie: {pair}\n  {'':<11} {attributes}", file=out)
    return pair


def _show_store(store: MemoryStore, out: TextIO) -> None:
    """Print what the MemoryStore holds: the JSON under each id, its cookie part left out."""
    for number, (sid, text) in enumerate(store.sessions.items()):
        cookie_end = text.index("}") + 1  # the first object inside is the cookie
        shown = '{"cookie":{...}' + text[cookie_end:]
        print(f"  {'store:' if number == 0 else '':<11} {sid} = {shown}", file=out)


def tour(out: TextIO = sys.stdout) -> None:
    """Print a narrated tour of a few requests, with server.py's default options.

    No sockets: each request runs in-process through SessionMiddleware, with
    a clock that stands still and ids sid1, sid2, ... instead of random ones.
    """
    ids = itertools.count(1)
    clock = lambda: _TOUR_START  # noqa: E731 - a clock that stands still
    store = MemoryStore(clock=clock)
    with warnings.catch_warnings():  # the demo secret, on purpose: the tour says so
        warnings.filterwarnings("ignore", "short secret")
        middleware = session_middleware(
            secret=DEMO_SECRET, resave=False, save_uninitialized=True, store=store, clock=clock,
            genid=lambda request: f"sid{next(ids)}")
    print("A tour of session_demo, express-session 1.19.0 in Python, one request at a time.\n"
          "Options as server.py's: secret 'keyboard cat', resave=False,\n"
          "save_uninitialized=True, no max_age. Ids are sid1, sid2, ... (real ones are\n"
          "32 random characters); the store's JSON is shown without its cookie part.", file=out)

    browser = _tour_request(middleware, out, "1. A first visit, no cookie: the page counts a view.",
                            None, _count_views)
    _show_store(store, out)
    browser = _tour_request(middleware, out, "2. The browser sends the cookie back; another view.",
                            browser, _count_views)
    _show_store(store, out)
    browser = _tour_request(middleware, out, "3. A page that only reads (/peek): nothing to save.",
                            browser, _only_read)
    assert browser is not None
    forged = browser.replace("sid1", "sid9")
    _tour_request(middleware, out, "4. A forged cookie: sid1 changed to sid9, same signature.",
                  forged, _only_read)
    _show_store(store, out)
    print("\nThe store was never asked for sid9: its signature failed, so the forger got a\n"
          "new session, sid2. More in LESSONS.md; in a browser: python3 server.py", file=out)


# ---- main --------------------------------------------------------------------


def lighter_log_records() -> None:
    """Make each log record cheaper, as the Logging HOWTO's "Optimization" section says: the demo
    shows no record's thread, process or source line, so logging need not look them up."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
    # Semi-private, but the HOWTO's own advice: no walk up the stack for each record's caller.
    logging._srcfile = None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until Ctrl+C; 0 when stopped, 2 when a flag is wrong or the port is taken."""
    args = parse_args(argv)
    if args.tour:
        tour()
        return 0
    lighter_log_records()
    try:
        args.secret, source = read_secrets(args)
        for warning in startup_warnings(args, source):
            print(f"warning: {warning}", file=sys.stderr)
        server = make_server(args)
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        reason = "it is in use; pass --port N" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        print(f"error: cannot listen on port {args.port}: {reason}", file=sys.stderr)
        return 2
    host, port = server.socket.getsockname()[:2]
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
