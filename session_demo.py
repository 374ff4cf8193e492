"""Server-side sessions, the way express-session 1.19.0 does them, in one module.

A faithful reimplementation of Node's express-session 1.19.0 (with cookie
0.7.2 and cookie-signature 1.0.7 underneath), standard library only. Read it
from the top: the first section is a request's whole life; each later one
explains a piece the earlier ones call. LESSONS.md walks the same path with
things to run; it also lists what we do differently, on purpose.

    python3 server.py              # the view counter from express-session's README
    python3 -m unittest -v         # every behaviour, pinned down

Sections (grep "# ===="): 1. the request lifecycle, 2. options, 3. decisions,
4. the session, 5. change detection, 6. the session cookie, 7. signing,
8. the Cookie header, 9. stores, 10. the http.server adapter. What goes
beyond express-session lives in the extras package beside this module.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import math
import re
import secrets as _secrets
import socket
import ssl
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

__all__ = [
    "session_middleware", "SessionMiddleware", "SessionOptions", "RequestInfo", "RequestState",
    "SessionLoadError", "Session", "Cookie", "Store", "MemoryStore",
    "SessionRequestHandler", "SessionHTTPServer",
    # the decisions, for tracing and teaching
    "Decision", "should_set_cookie", "should_save", "should_touch", "should_destroy", "hash_session",
    # the building blocks: reading the cookie, signing, the Cookie header
    "read_session_id", "is_secure", "sign", "unsign", "unsign_any", "parse_cookie_header",
    "serialize_cookie", "encode_uri_component", "decode_uri_component",
    # for writing a store
    "stringify", "parse_json", "session_json", "stored_cookie", "expiry_ms", "clock_ms", "short_id",
]

_log = logging.getLogger("session_demo")

Clock = Callable[[], float]
"""A clock returns the current time in seconds since the epoch, like time.time."""


# ==== 1. The request lifecycle ==============================================
#
# express-session does its work at three moments of a request:
#   begin   - read the cookie, load or create the session   (the middleware)
#   headers - decide Set-Cookie                            (on-headers hook)
#   end     - save, touch or destroy in the store,         (wrapped res.end)
#             before the end of the response reaches the client
# SessionMiddleware has one method for each; RequestState is what it keeps
# between them (express keeps it in closures and on req).


def session_middleware(**options: Any) -> SessionMiddleware:
    """Build the session middleware: the counterpart of express's ``session(options)``.

    Takes the keyword options of SessionOptions, for example
    ``session_middleware(secret='keyboard cat', resave=False, save_uninitialized=True)``.
    """
    return SessionMiddleware(SessionOptions(**options))


class SessionMiddleware:
    """The session layer for any server: begin, headers, end (express-session's middleware).

    A server adapter calls ``begin(request)`` before the handler runs,
    ``set_cookie_header(state)`` just before the response headers go out,
    and ``end(state)`` after the handler has finished (even if it raised)
    but before the response's last bytes are released.

    ``load`` and ``save`` are the two store steps a subclass may wrap (the
    extras package does, to lock or merge); nothing else needs overriding.
    """

    def __init__(self, options: SessionOptions) -> None:
        self.options = options

    def begin(self, request: RequestInfo) -> RequestState | None:
        """Load the request's session, or make a new one; None when this request gets no session.

        Raises SessionLoadError when the store fails or returns something
        that is not a session: the request should end with a 500.
        """
        options = self.options
        # No session while the store is disconnected, or outside the cookie's path.
        if not getattr(options.store, "ready", True):
            _log.debug("no session: store is disconnected")
            return None
        cookie_path = options.cookie_options_for(request).get("path")
        if not path_matches(request_pathname(request.url), cookie_path):
            _log.debug("no session: pathname mismatch (cookie path %r)", cookie_path or "/")
            return None

        state = RequestState(options, request)
        state.cookie_id = state.session_id = read_session_id(
            request.cookie_header, options.name, options.secrets)
        # No (valid) cookie: a new session, without asking the store.
        if not state.session_id:
            _log.debug("no SID sent, generating session")
            state.generate()
            return state

        _log.debug("fetching %s", short_id(state.session_id))
        try:
            data = self.load(state)
        except FileNotFoundError:
            data = None  # express's ENOENT: not found
        except SessionLoadError:
            raise
        except Exception as exc:
            raise SessionLoadError(f"the session store failed: {exc!r}") from exc
        if _found(data):
            _log.debug("session found")
            state.inflate(data)
        else:
            _log.debug("no session found; generating a new one")
            state.generate()
        return state

    def load(self, state: RequestState) -> Any:
        """Read the session the browser named from the store (express's ``store.get``)."""
        return state.store.get(state.session_id)

    def set_cookie_header(self, state: RequestState) -> str | None:
        """Decide Set-Cookie as the headers go out; return its value, or None (the on-headers hook).

        As express's ``res.end`` does before it writes the headers, the
        session is touched first (its expiry restarted from
        ``original_max_age``), so the decision sees the new expiry. A failure
        to build the cookie is logged and the response goes on without it,
        as express forwards it to the error handler after the fact.
        """
        options = self.options
        if state.session is None:
            _log.debug("set-cookie: no (no session)")
            return None
        try:
            self._touch(state)
            decision = should_set_cookie(state)
            if not decision:
                _log.debug("set-cookie: no (%s)", decision.reason)
                return None
            if state.session.cookie.secure and not is_secure(state.request, options.proxy):
                _log.debug("set-cookie: no (secure cookie, but the request is not secure)")
                return None
            value = "s:" + sign(state.session_id, options.secrets[0])
            header = state.session.cookie.serialize(options.name, value)
        except Exception:
            _log.exception("set-cookie: failed; the response goes on without the cookie")
            return None
        _log.debug("set-cookie: yes (%s)", decision.reason)
        return header

    def end(self, state: RequestState) -> None:
        """Save, touch or destroy the session in the store (the wrapped ``res.end``).

        Call it once, before the end of the response reaches the client.
        Store errors are logged, never raised: the response still completes.
        """
        options = self.options
        store = options.store
        try:
            destroy = should_destroy(state)
            if destroy:
                _log.debug("destroy: yes (%s)", destroy.reason)
                store.destroy(state.session_id)
                return
            if state.session is None:
                _log.debug("store: nothing to do (no session on the request)")
                return
            self._touch(state)
            save = should_save(state)
            if save:
                _log.debug("save: yes (%s)", save.reason)
                self.save(state)
                return
            _log.debug("save: no (%s)", save.reason)
            if not options.store_implements_touch:
                _log.debug("touch: no (the store has no touch)")
                return
            touch = should_touch(state)
            if touch:
                _log.debug("touch: yes (%s)", touch.reason)
                store.touch(state.session_id, state.session)
            else:
                _log.debug("touch: no (%s)", touch.reason)
        except Exception:
            _log.exception("session store failed at the end of the request; the response completes")

    def save(self, state: RequestState) -> None:
        """Write the whole session to the store at the end of the request (``session.save()``)."""
        assert state.session is not None
        state.session.save()

    @staticmethod
    def _touch(state: RequestState) -> None:
        """Restart the session cookie's lifetime, once per request (express's ``touched`` flag)."""
        if not state.touched and state.session is not None:
            state.session.touch()
            state.touched = True


@dataclass
class RequestInfo:
    """What the session layer needs to know about a request, whatever the server.

    ``url`` is the raw request target; ``cookie_header`` the Cookie
    header (several header lines joined with '; ', as Node does); ``tls``
    whether the socket is TLS; ``forwarded_proto`` the X-Forwarded-Proto
    header; ``framework_secure`` the server's own idea of "secure" (Express's
    ``req.secure``), used when the ``proxy`` option is None.
    """

    url: str = "/"
    cookie_header: str | None = None
    tls: bool = False
    forwarded_proto: str | None = None
    framework_secure: bool = False


class RequestState:
    """One request's session state: express's ``req.session``, ``req.sessionID`` and the middleware's closure.

    ``session`` is the Session (None once destroyed or unset);
    ``session_id`` is what the cookie will carry (express's
    ``req.sessionID``); ``cookie_id`` the id the browser sent, if valid;
    ``original_id``/``original_hash`` describe the session as it started;
    ``saved_hash`` is set when the store holds the session as it is.
    """

    def __init__(self, options: SessionOptions, request: RequestInfo) -> None:
        self.options = options
        self.request = request
        self.store: Store = options.store
        self.session: Session | None = None
        self.session_id: Any = None
        self.cookie_id: str | None = None
        self.original_id: Any = None
        self.original_hash: str | None = None
        self.saved_hash: str | None = None
        self.touched = False

    def generate(self) -> None:
        """Start a new session and remember how it began (express's ``generate``)."""
        self.session = self.new_session(self.new_id())
        self.session.tracks_saves = True
        self.original_id = self.session_id
        self.original_hash = hash_session(self.session)

    def inflate(self, data: Mapping[str, Any]) -> None:
        """Use the stored session and remember how it began (express's ``inflate``).

        With ``resave=False`` the store is known to hold exactly this, so
        it counts as saved already.
        """
        self.session = self.stored_session(data)
        self.session.tracks_saves = True
        self.original_id = self.session_id
        self.original_hash = hash_session(self.session)
        if not self.options.resave:
            self.saved_hash = self.original_hash

    def regenerate(self) -> Session:
        """Destroy the session in the store and start a new one (express's ``store.regenerate``).

        As upstream, the bookkeeping is not reset, so a regenerated session
        counts as modified; and its ``save()`` is express's plain one, which
        does not count as saved, so the end of the request saves it again.
        """
        new_id = self.new_id()  # an unusable id fails before anything is destroyed
        try:
            self.store.destroy(self.session_id)
        finally:
            self.session = self.new_session(new_id)
        return self.session

    def new_id(self) -> Any:
        """A new session id from ``genid``.

        Difference: an id holding a space, a control character, '"', ',',
        ';' or '\\' is refused with ValueError. express-session accepts any
        id (percent-encoding keeps the header safe); such an id means a broken
        genid, and refusing it early keeps it out of stores and logs.
        """
        session_id = self.options.genid(self.request)
        if isinstance(session_id, str) and _UNSAFE_ID_CHARACTER.search(session_id):
            raise ValueError(f"genid returned an unusable session id {session_id!r}: "
                             "no spaces, control characters, '\"', ',', ';' or '\\'")
        return session_id

    def new_session(self, session_id: Any) -> Session:
        """A brand-new session with this id (express's ``store.generate``).

        Its cookie comes from the options, with ``'auto'`` for
        ``secure``/``same_site`` resolved against this request.
        """
        options = self.options
        self.session_id = session_id
        cookie_options = options.cookie_options_for(self.request)
        cookie = Cookie(cookie_options, clock=options.clock)
        secure = is_secure(self.request, options.proxy)
        if cookie_options.get("secure") == "auto":
            cookie.secure = secure
        if cookie_options.get("same_site") == "auto":
            cookie.same_site = "none" if secure else "lax"
        return Session(self, session_id, cookie)

    def stored_session(self, data: Mapping[str, Any]) -> Session:
        """A session rebuilt from what the store returned (express's ``store.createSession``)."""
        if not isinstance(data, Mapping):
            raise SessionLoadError(f"the store returned {type(data).__name__}, not a session object")
        if not isinstance(data.get("cookie"), Mapping):
            raise SessionLoadError("the stored session has no cookie")
        cookie = Cookie.from_json(data["cookie"], clock=self.options.clock)
        return Session(self, self.session_id, cookie, data)


_UNSAFE_ID_CHARACTER = re.compile(r'[\x00-\x20",;\\\x7f]')


def read_session_id(cookie_header: str | None, name: str, secrets: list[bytes]) -> str | None:
    """The session id from the request's cookie, if it is there and correctly signed (``getcookie``).

    Only the first cookie with this name counts. An unsigned value (no
    ``s:``) or a bad signature means no id: a new session, without asking
    the store.
    """
    if not cookie_header:
        return None
    raw = parse_cookie_header(cookie_header).get(name)
    if not raw:
        return None
    if not raw.startswith("s:"):
        _log.debug("cookie unsigned")
        return None
    session_id = unsign_any(raw[2:], secrets)
    if session_id is None:
        _log.debug("cookie signature invalid")
    return session_id


class SessionLoadError(Exception):
    """The session could not be loaded (store failure or corrupt data): answer ``status`` with ``advice``."""

    status = 500
    advice = "The session could not be loaded; the server log says why"


def _found(data: Any) -> bool:
    """Does a store's answer count as a session? JavaScript's truthiness: None, False, '', 0 do not; {} does."""
    if data is None or data is False or data == "":
        return False
    # 0 and NaN are the falsy numbers (NaN is the only value not equal to itself).
    if isinstance(data, (int, float)) and (data == 0 or math.isnan(data)):
        return False
    return True


# ==== 2. Options ============================================================
#
# express-session reads its options once, in session(options), and throws
# on the few it validates. We read and validate them once too, and fail
# loudly here rather than on the first request.


class SessionOptions:
    """The validated options of one session middleware.

    Mirrors the option handling at the top of express-session's
    ``session(options)``, with snake_case names. Messages are express's
    where it has one. ``resave`` and ``save_uninitialized`` left as None warn
    (DeprecationWarning, as express's depd does) and mean True.
    Differences: ``secret`` is required here; the cookie options are
    checked now, by building and serializing a probe cookie.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | list[str | bytes] | tuple[str | bytes, ...] | None = None,
        name: str = "connect.sid",
        cookie: Mapping[str, Any] | Callable[[RequestInfo], Mapping[str, Any]] | None = None,
        genid: Callable[[RequestInfo], Any] | None = None,
        proxy: bool | None = None,
        resave: bool | None = None,
        rolling: bool = False,
        save_uninitialized: bool | None = None,
        store: Store | None = None,
        unset: str | None = "keep",
        clock: Clock = time.time,
    ) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds, like time.time")
        self.clock: Clock = clock
        self.genid: Callable[[RequestInfo], Any] = genid or generate_session_id
        if not callable(self.genid):
            raise TypeError("genid option must be a function")
        self.resave: bool = _true_unless_false(resave, "resave")
        self.save_uninitialized: bool = _true_unless_false(save_uninitialized, "saveUninitialized")
        self.rolling: bool = bool(rolling)
        if unset and unset not in ("destroy", "keep"):
            raise TypeError('unset option must be "destroy" or "keep"')
        self.unset_destroy: bool = unset == "destroy"
        # proxy: True trusts X-Forwarded-Proto, False only TLS, None the framework's idea.
        if proxy is not None and proxy is not True and proxy is not False:
            raise TypeError("proxy option must be True, False or None")
        self.proxy: bool | None = proxy
        self.secrets: list[bytes] = _secret_list(secret)
        self.name: str = name or "connect.sid"  # an empty name falls back to the default, as in express
        self.cookie: Mapping[str, Any] | Callable[[RequestInfo], Mapping[str, Any]] = _checked_cookie_option(
            cookie, self.name, clock)
        self.store: Store = store if store is not None else MemoryStore(clock=clock)
        for method in ("get", "set", "destroy"):
            if not callable(getattr(self.store, method, None)):
                raise TypeError(f"store must implement {method}()")
        # express decides once, at construction, whether the store can touch.
        self.store_implements_touch: bool = callable(getattr(self.store, "touch", None))

    def cookie_options_for(self, request: RequestInfo) -> Mapping[str, Any]:
        """The cookie options for this request: the mapping, or what the callable returns."""
        if not callable(self.cookie):
            return self.cookie
        options = self.cookie(request)
        if not isinstance(options, Mapping):
            raise TypeError("the cookie option callable must return a mapping")
        return options


def generate_session_id(request: RequestInfo) -> str:
    """Make a new session id: 24 random bytes as base64url, 32 characters.

    Mirrors express-session's default ``genid`` (uid-safe's ``uid(24)``):
    192 bits from the operating system's CSPRNG.
    """
    return _secrets.token_urlsafe(24)


def _true_unless_false(value: bool | None, name: str) -> bool:
    """An option express defaults to true, with its deprecation warning when it is left out."""
    if value is None:
        warnings.warn(f"undefined {name} option; provide {name} option", DeprecationWarning, stacklevel=4)
        return True
    return bool(value)


def _secret_list(secret: object) -> list[bytes]:
    """Turn the ``secret`` option into a list of keys: the first signs, all verify.

    A plain string is one secret (never a list of characters). Differences:
    a missing or empty secret is an error here, where express only warns
    and then fails every request with "secret option required for
    sessions"; and an empty string inside a list is refused too (express
    signs with it).
    """
    if isinstance(secret, (list, tuple)):
        if not secret:
            raise TypeError("secret option array must contain one or more strings")
        items = list(secret)
    elif secret is None or secret == "" or secret == b"":
        raise TypeError("secret option required for sessions")
    else:
        items = [secret]
    keys = []
    for item in items:
        if not isinstance(item, (str, bytes, bytearray)) or not item:
            raise TypeError(f"each secret must be a non-empty str or bytes, not {item!r}")
        keys.append(_key(item))
    return keys


def _checked_cookie_option(cookie: object, name: str, clock: Clock) -> Any:
    """The ``cookie`` option, checked: a mapping is probed now, so a bad option fails at construction.

    Difference: a path with a space, ',', '"' or '\\' is refused too. cookie
    0.7.2 lets them through; they cannot split the header, but no sensible
    cookie path holds them, and a browser may read them differently.
    """
    if cookie is None:
        cookie = {}
    if callable(cookie):
        if not _COOKIE_NAME.fullmatch(name):
            raise ValueError(f"argument name is invalid: {name!r} is not a cookie name")
        return cookie
    if not isinstance(cookie, Mapping):
        raise TypeError("cookie option must be a mapping or a callable returning one")
    path = cookie.get("path")
    if isinstance(path, str) and _UNUSUAL_PATH_CHARACTER.search(path):
        raise ValueError(f"option path is invalid: {path!r} (no spaces, ',', '\"' or '\\')")
    probe = Cookie(cookie, clock=clock)
    if probe.secure == "auto":
        probe.secure = True
    if probe.same_site == "auto":
        probe.same_site = "lax"
    probe.serialize(name, "probe")
    return cookie


_UNUSUAL_PATH_CHARACTER = re.compile(r'[ ,"\\]')


# ==== 3. Decisions ==========================================================
#
# The four questions express-session asks of every request, as small
# predicates with its names. Each returns a Decision: true or false, with
# the reason in words, so that a trace can say why.


class Decision:
    """A yes or no, with the reason. ``if should_save(state):`` reads the yes/no."""

    __slots__ = ("yes", "reason")

    def __init__(self, yes: bool, reason: str) -> None:
        self.yes = yes
        self.reason = reason

    def __bool__(self) -> bool:
        return self.yes

    def __repr__(self) -> str:
        return f"Decision({self.yes}, {self.reason!r})"


def should_set_cookie(state: RequestState) -> Decision:
    """Send Set-Cookie for a new session, or for a known one when rolling or modified (``shouldSetCookie``).

    A new session gets a cookie if ``save_uninitialized`` or it was
    modified. The session the browser sent gets one again with ``rolling``,
    or when modified *and* its cookie has an expiry: a browser-session
    cookie is never re-sent.
    """
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    session = state.session
    assert session is not None
    if state.cookie_id != state.session_id:
        # A new session: no cookie, a bad cookie, an unknown id, or regenerated.
        if state.options.save_uninitialized:
            return Decision(True, "new session, save_uninitialized")
        if is_modified(state):
            return Decision(True, "new session, modified")
        return Decision(False, "new session, unmodified, save_uninitialized=False")
    # The session the browser sent.
    if state.options.rolling:
        return Decision(True, "rolling")
    if session.cookie.expires is None:
        return Decision(False, "browser-session cookie the browser already has")
    if is_modified(state):
        return Decision(True, "modified, and the cookie has an expiry")
    return Decision(False, "unmodified")


def should_save(state: RequestState) -> Decision:
    """Save unless the store already has this exact session (express's ``shouldSave``).

    A new session with ``save_uninitialized=False`` is saved only if it
    was modified.
    """
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    new_session = state.cookie_id != state.session_id
    if not state.options.save_uninitialized and state.saved_hash is None and new_session:
        # An uninitialized session: only worth keeping once it holds something.
        if is_modified(state):
            return Decision(True, "new session, modified")
        return Decision(False, "new session, unmodified, save_uninitialized=False")
    if is_saved(state):
        # Loaded unmodified with resave=False, or save() was called and nothing changed since.
        return Decision(False, "the store already holds it as it is")
    if new_session:
        return Decision(True, "new session")
    if is_modified(state):
        return Decision(True, "modified")
    return Decision(True, "unmodified, resave=True")


def should_touch(state: RequestState) -> Decision:
    """Refresh the store's expiry for a session the browser sent that needs no save (``shouldTouch``)."""
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    if state.cookie_id != state.session_id:
        return Decision(False, "not the session the browser sent")
    if should_save(state):
        return Decision(False, "it is being saved")
    return Decision(True, "unmodified session the browser sent")


def should_destroy(state: RequestState) -> Decision:
    """Destroy in the store when the handler unset the session and ``unset='destroy'`` (``shouldDestroy``)."""
    if not state.session_id:
        return Decision(False, "no session id")
    if not state.options.unset_destroy:
        return Decision(False, "unset='keep'")
    if state.session is not None:
        return Decision(False, "the session is still set")
    return Decision(True, "session unset and unset='destroy'")


def is_secure(request: RequestInfo, proxy: bool | None) -> bool:
    """Is this request HTTPS, as far as the session cookie is concerned? (express's ``issecure``)

    TLS on the socket always counts. ``proxy=False`` trusts nothing else;
    ``proxy=None`` trusts the framework's own answer
    (``request.framework_secure``); ``proxy=True`` trusts the first value of
    X-Forwarded-Proto.
    """
    if request.tls:
        return True
    if proxy is False:
        return False
    if proxy is not True:
        return request.framework_secure is True
    header = request.forwarded_proto or ""
    return header.split(",", 1)[0].lower().strip() == "https"


def request_pathname(url: str) -> str:
    """The path of a request target, not percent-decoded (parseurl's ``pathname``).

    ``/foo?x=1`` gives ``/foo``; an absolute URL ``http://host/foo`` gives
    ``/foo``; an empty target gives ``/``.
    """
    if url.startswith("/"):
        return url.split("?", 1)[0].split("#", 1)[0] or "/"
    try:
        return urllib.parse.urlsplit(url).path or "/"
    except ValueError:
        return url  # not a URL at all (e.g. "http://[::1"): it matches no cookie path


def path_matches(pathname: str, cookie_path: str | None) -> bool:
    """Does the request path start with the cookie's path? A plain, case-sensitive prefix test.

    As in express, '/foo' matches '/foobar' too.
    """
    return pathname.startswith(cookie_path or "/")


# ==== 4. The session ========================================================
#
# Session mirrors session/session.js: the data (a mapping), the cookie,
# the id, and the methods save/reload/destroy/regenerate/touch. In express
# these are properties and methods of one object; in Python the data is the
# mapping (session['views']) and the rest are attributes.

# Names express-session cannot hold as data: its own methods and read-only
# properties, and what every JavaScript object inherits. A stored key with one
# of these names is dropped when a session is loaded.
_RESERVED_KEYS = frozenset({
    "id", "req", "save", "reload", "regenerate", "destroy", "touch", "resetMaxAge",
    "constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable",
    "toLocaleString", "toString", "valueOf", "__proto__",
    "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__",
})


class Session(MutableMapping[str, Any]):
    """One visitor's session: its data as a mapping, plus ``id`` and ``cookie``.

    Mirrors express-session's ``Session``. ``session['views'] = 1`` changes
    the data; the request's end decides whether it is saved. Methods talk
    to the store now and raise its errors: ``save()``, ``reload()``,
    ``destroy()``, ``regenerate()``; ``touch()`` and ``reset_max_age()``
    only restart the cookie's lifetime.

    Like express's, ``regenerate()`` and ``reload()`` put a *new* Session on
    the request and return it: the old object is stale afterwards.

    Difference: a key express-session would drop when it loads the session
    (``id``, ``save``, ``toString``, ...) is refused when you set it, instead
    of vanishing on the next request.
    """

    def __init__(self, state: RequestState, session_id: Any, cookie: Cookie,
                 data: Mapping[str, Any] | None = None) -> None:
        self._state = state
        self._id = session_id
        self.cookie: Cookie = cookie
        # express wraps save() on the session the middleware made (and on its
        # reloads) so that it counts as saved; a regenerated one is not wrapped.
        self.tracks_saves = False
        self._data: dict[str, Any] = {}
        for key, value in (data or {}).items():
            if key == "cookie":
                continue  # the stored cookie became self.cookie
            if key in _RESERVED_KEYS:
                _log.debug("dropping reserved key %r from the stored session", key)
                continue
            self._data[key] = value

    @property
    def id(self) -> Any:
        """The session id, fixed when the session was made (read-only, as in express)."""
        return self._id

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "cookie":
            raise KeyError("'cookie' is not data: use session.cookie")
        if key in _RESERVED_KEYS:
            raise KeyError(f"{key!r} is reserved by express-session and would be "
                           f"dropped when the session is loaded; choose another key")
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Session(id={short_id(self._id)}, data={self._data!r})"

    def to_json(self) -> dict[str, Any]:
        """The stored form: ``{"cookie": {...}, ...data}``, as ``JSON.stringify(req.session)``."""
        return {"cookie": self.cookie.to_json(), **self._data}

    def touch(self) -> Session:
        """Restart the cookie's lifetime; the store is not called (express's ``touch``)."""
        return self.reset_max_age()

    def reset_max_age(self) -> Session:
        """Set ``max_age`` back to ``original_max_age`` (express's ``resetMaxAge``)."""
        self.cookie.restart()
        return self

    def save(self) -> Session:
        """Write the session to the store now (express's ``save``).

        If nothing changes afterwards, the end of the request will not save
        it again (unless this session came from ``regenerate()``: see there).
        """
        _log.debug("saving %s", short_id(self._id))
        if self.tracks_saves:
            self._state.saved_hash = hash_session(self)
        self._state.store.set(self._id, self)
        return self

    def reload(self) -> Session:
        """Load the session again from the store and return the new object (express's ``reload``).

        Changes made before reloading are lost. Raises LookupError
        ('failed to load session') if the store no longer has it.
        """
        state = self._state
        data = state.store.get(self._id)
        if not _found(data):
            raise LookupError("failed to load session")
        state.session = state.stored_session(data)
        state.session.tracks_saves = self.tracks_saves
        return state.session

    def destroy(self) -> None:
        """Remove the session from the request and from the store (express's ``destroy``).

        No Set-Cookie is sent; the browser keeps its (now useless) cookie.
        """
        self._state.session = None
        self._state.store.destroy(self._id)

    def regenerate(self) -> Session:
        """Replace the session with a new one, with a new id, and return it (express's ``regenerate``).

        The old session is destroyed in the store; its data is not copied.
        Use it at login to defeat session fixation. If the store fails to
        destroy the old one, the new session is still made, then the error
        is raised.
        """
        return self._state.regenerate()


# ==== 5. Change detection ===================================================
#
# express-session decides whether to save by hashing the session's data
# (everything but the top-level "cookie") when the request starts and again
# at the end. Different hash, or a different id: the session was modified.


def is_modified(state: RequestState) -> bool:
    """The session's id or data differs from when the request started (express's ``isModified``)."""
    session = state.session
    assert session is not None
    return state.original_id != session.id or state.original_hash != hash_session(session)


def is_saved(state: RequestState) -> bool:
    """The store already holds the session as it is now (express's ``isSaved``)."""
    session = state.session
    assert session is not None
    return state.original_id == session.id and state.saved_hash == hash_session(session)


def hash_session(data: Mapping[str, Any]) -> str:
    """SHA-1 of the session's data as compact JSON, without its top-level ``cookie`` key.

    Mirrors express-session's ``hash()``. Key order counts, as it does in
    JavaScript; a nested key called "cookie" counts too.
    """
    if isinstance(data, Session):
        plain = data._data  # a Session's data never holds the cookie
    else:
        plain = {key: value for key, value in data.items() if key != "cookie"}
    return hashlib.sha1(stringify(plain).encode("utf-8", "surrogatepass")).hexdigest()


# ==== 6. The session cookie =================================================
#
# Cookie mirrors express-session's session/cookie.js: the attributes of the
# Set-Cookie header, plus the expiry bookkeeping. max_age is in milliseconds,
# as in express, and it is never stored: setting it sets `expires` (and
# `original_max_age`, the lifetime that touch() gives the session again).

# The cookie's attributes: the Python name and the stored (JSON) name, in the
# order express stores them. Parse, JSON and load all go through this table.
_ATTRIBUTES = {
    "original_max_age": "originalMaxAge", "partitioned": "partitioned", "priority": "priority",
    "expires": "expires", "secure": "secure", "http_only": "httpOnly", "domain": "domain",
    "path": "path", "same_site": "sameSite",
}
_STORED_NAMES = {stored: name for name, stored in _ATTRIBUTES.items()}
_OPTIONS = (*_ATTRIBUTES, "max_age")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS
_MIN_MS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS


class _Attribute:
    """A cookie attribute, kept in the cookie's stored form under its JSON name.

    Set to None, it is stored as JSON null and left out of Set-Cookie, as
    express does with null. A stored form can also lack it altogether (a
    JavaScript ``undefined``); reading it then gives None.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = _ATTRIBUTES[name]

    def __get__(self, cookie: Cookie | None, owner: type | None = None) -> Any:
        if cookie is None:
            return self
        return cookie._stored.get(self.key)

    def __set__(self, cookie: Cookie, value: Any) -> None:
        cookie._stored[self.key] = value


class Cookie:
    """The session cookie's settings and expiry (express-session's ``Cookie``).

    Defaults, as upstream: ``path='/'``, ``http_only=True``, no expiry (a
    browser-session cookie); ``secure``, ``same_site``, ``domain``,
    ``priority`` and ``partitioned`` unset. Options are applied in their
    mapping order, so when both ``expires`` and ``max_age`` are given the
    later one wins.

    Difference: an unknown option raises ValueError (express keeps it as an
    ignored property, so a typo passes silently).
    """

    original_max_age = _Attribute()
    partitioned = _Attribute()
    priority = _Attribute()
    secure = _Attribute()
    http_only = _Attribute()
    domain = _Attribute()
    path = _Attribute()
    same_site = _Attribute()

    def __init__(self, options: Mapping[str, Any] | None = None, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._stored: dict[str, Any] = {"path": "/", "httpOnly": True}
        self.max_age = None  # no expiry, and original_max_age None
        if options is not None:
            if not isinstance(options, Mapping):
                raise TypeError("argument options must be a object (a mapping)")
            for key, value in options.items():
                if key not in _OPTIONS:
                    raise ValueError(f"unknown cookie option {key!r}; known options: {', '.join(_OPTIONS)}")
                setattr(self, key, value)
        if self.original_max_age is None:
            self.original_max_age = self.max_age

    @property
    def expires(self) -> datetime | None:
        """When the browser should drop the cookie, or None for a browser-session cookie."""
        ms = self._stored.get("expires")
        return None if ms is None else _EPOCH + timedelta(milliseconds=ms)

    @expires.setter
    def expires(self, when: datetime | None) -> None:
        # As express's setter: original_max_age becomes the time left.
        if when is not None and not (isinstance(when, datetime) and when.tzinfo is not None):
            raise TypeError("expires must be a timezone-aware datetime (e.g. tzinfo=timezone.utc) or None")
        self._stored["expires"] = None if when is None else (when - _EPOCH) // _ONE_MS
        self.original_max_age = self.max_age

    @property
    def max_age(self) -> int | None:
        """Milliseconds until expiry (can be negative), or None when there is no expiry."""
        ms = self._stored.get("expires")
        return None if ms is None else ms - clock_ms(self._clock)

    @max_age.setter
    def max_age(self, ms: int | float | datetime | None) -> None:
        # A number of milliseconds from now; None for a browser-session cookie.
        # express also takes a Date here (deprecated); so do we.
        if ms is None or isinstance(ms, datetime):
            if ms is not None:
                warnings.warn("maxAge as Date; pass number of milliseconds instead",
                              DeprecationWarning, stacklevel=2)
            self.expires = ms
            return
        if isinstance(ms, bool) or not isinstance(ms, (int, float)):
            raise TypeError("maxAge must be a number or Date (max_age: milliseconds or None)")
        if not math.isfinite(ms):
            raise ValueError(f"max_age must be a finite number of milliseconds, not {ms!r}")
        now = clock_ms(self._clock)
        expires_ms = math.trunc(now + ms)  # a JavaScript Date drops the fraction, toward zero
        if not _MIN_MS <= expires_ms <= _MAX_MS:
            # Difference: JavaScript reaches year 275760; Python's datetime stops at 9999.
            raise ValueError(f"max_age {ms!r} puts the expiry outside the years 1 to 9999")
        self._stored["expires"] = expires_ms
        # One reading of the clock for both (express reads it twice and can be 1 ms off).
        self.original_max_age = expires_ms - now

    def restart(self) -> None:
        """Give the cookie its original lifetime again: ``max_age = original_max_age``.

        A stored cookie that has no ``originalMaxAge`` at all (JavaScript's
        undefined) loses its ``expires`` too, as it does in express.
        """
        if "originalMaxAge" in self._stored:
            self.max_age = self.original_max_age
        else:
            self._stored.pop("expires", None)

    def to_json(self) -> dict[str, Any]:
        """The stored form (express's ``cookie.data``): camelCase keys in express's order.

        Unset attributes are left out, null ones kept; ``expires`` is an ISO
        string like ``2026-11-29T03:02:30.942Z``.
        """
        data = {}
        for key in _ATTRIBUTES.values():
            if key in self._stored:
                data[key] = self._stored[key]
        if data.get("expires") is not None:
            data["expires"] = _iso(data["expires"])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, clock: Clock = time.time) -> Cookie:
        """Rebuild a cookie from its stored form (express's ``store.createSession``).

        Stored keys override the defaults, in their stored order; a stored
        ``maxAge`` counts unless ``expires`` is a date string, as in express.
        Whatever express tolerates loads here too. Differences, so that odd
        data never makes every request fail: an ``expires`` that is not a
        date (ISO or HTTP), a number of ms or a datetime reads as None; an
        ``originalMaxAge`` that is not a number in range reads as None.
        """
        if not isinstance(data, Mapping):
            raise ValueError("the stored session's cookie is not an object")
        cookie = cls(clock=clock)
        for key, value in data.items():
            if key == "expires":
                cookie._stored["expires"] = _expiry_from_stored(value)
            elif key == "maxAge":
                cookie._stored["expires"] = _expiry_from_stored(None if value is None else clock_ms(clock) + value
                                                                if isinstance(value, (int, float)) else None)
            elif key in _STORED_NAMES and key != "originalMaxAge":
                cookie._stored[key] = value
        if isinstance(data.get("expires"), str):
            cookie._stored["expires"] = _expiry_from_stored(data["expires"])
        if "originalMaxAge" in data:
            original = data["originalMaxAge"]
            usable = (isinstance(original, (int, float)) and not isinstance(original, bool)
                      and math.isfinite(original) and abs(original) <= _MAX_MS)
            cookie.original_max_age = original if usable else None
        else:
            del cookie._stored["originalMaxAge"]
        return cookie

    def serialize(self, name: str, value: str) -> str:
        """The Set-Cookie value for this cookie (express's ``cookie.serialize``)."""
        return serialize_cookie(
            name, value,
            domain=self.domain, path=self.path, expires=self.expires,
            http_only=bool(self.http_only), secure=self.secure,
            partitioned=self.partitioned, priority=self.priority, same_site=self.same_site,
        )

    def __repr__(self) -> str:
        return f"Cookie({self.to_json()!r})"


def clock_ms(clock: Clock) -> int:
    """The clock's time in whole milliseconds, as JavaScript's Date.now() counts."""
    return math.floor(clock() * 1000)


def _iso(ms: int) -> str:
    """JavaScript's ``Date.toISOString()``: ``2026-11-29T03:02:30.942Z``."""
    when = _EPOCH + timedelta(milliseconds=ms)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _expiry_from_stored(value: Any) -> int | None:
    """A stored ``expires`` as ms since the epoch, the way a JavaScript Date reads it; None if it is none.

    An ISO string (one without a time zone is read as UTC: JavaScript would
    use local time), an HTTP date, a number of ms, or a datetime.
    """
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return (when - _EPOCH) // _ONE_MS
    if isinstance(when, (int, float)) and not isinstance(when, bool) and _MIN_MS <= when <= _MAX_MS:
        return math.trunc(when)
    return None


# ==== 7. Signing ============================================================
#
# The cookie carries only the session id, signed so that a client cannot
# pick someone else's id: "s:" + id + "." + base64(HMAC-SHA256(id, secret))
# without the "=" padding, as cookie-signature 1.0.7 makes it. The cookie is
# signed, not encrypted: anyone can read the id.


def sign(value: str, secret: str | bytes) -> str:
    """Sign ``value``: ``value + '.' + base64(HMAC-SHA256(value))`` without '=' padding.

    Mirrors cookie-signature's ``sign``: standard base64 (with + and /), the
    HMAC is over the UTF-8 bytes of the value only.
    """
    if not isinstance(value, str):
        raise TypeError("Cookie value must be provided as a string.")
    signature = hmac.digest(_key(secret), value.encode("utf-8"), "sha256")
    return value + "." + base64.b64encode(signature).decode("ascii").rstrip("=")


def unsign(signed: str, secret: str | bytes) -> str | None:
    """Check a signed value and return the value, or None if the signature is wrong.

    Mirrors cookie-signature's ``unsign`` (which returns false): the value is
    everything before the last '.', re-signed and compared in constant time.
    The comparison is on bytes, because ``hmac.compare_digest`` refuses
    non-ASCII str (a hostile cookie must not raise).
    """
    if not isinstance(signed, str):
        raise TypeError("Signed cookie string must be provided.")
    value = signed[: signed.rfind(".")]
    try:
        expected = sign(value, secret)
    except UnicodeEncodeError:
        return None  # a lone surrogate cannot have been signed
    if hmac.compare_digest(expected.encode("utf-8"), signed.encode("utf-8", "surrogatepass")):
        return value
    return None


def unsign_any(signed: str, secrets: list[bytes] | list[str]) -> str | None:
    """Try each secret in order; the first that verifies wins (express's ``unsigncookie``)."""
    for secret in secrets:
        value = unsign(signed, secret)
        if value is not None:
            return value
    return None


def _key(secret: str | bytes) -> bytes:
    """The HMAC key for a secret: a str is used as its UTF-8 bytes, as Node does.

    Difference: a str that is not valid Unicode (a lone surrogate) raises
    UnicodeEncodeError; Node quietly signs with U+FFFD in its place.
    """
    if isinstance(secret, str):
        return secret.encode("utf-8")
    if isinstance(secret, (bytes, bytearray)):
        return bytes(secret)
    raise TypeError("Secret key must be provided.")


# ==== 8. The Cookie header ==================================================
#
# Reading "Cookie: a=1; connect.sid=s%3A..." and writing "Set-Cookie: ..."
# the way the `cookie` package 0.7.2 does. We do not use http.cookies: its
# parser follows different rules from express's.

# Used with fullmatch: in a Python pattern "$" also matches before a final
# newline, which would let "sid\n" through and split the header. ASCII only:
# with re.IGNORECASE alone, the Kelvin sign would match "k".
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_VALUE = re.compile(r'("?)[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*\1')
_COOKIE_DOMAIN = re.compile(r"([.]?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)([.][a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
                            re.IGNORECASE | re.ASCII)
_COOKIE_PATH = re.compile(r"[\x20-\x3A\x3D-\x7E]*")


def parse_cookie_header(header: str) -> dict[str, str]:
    """Parse a Cookie header into a dict, with the rules of cookie 0.7.2's ``parse``.

    - Pairs are separated by ';'; a segment without '=' is skipped.
    - Names and values are trimmed of spaces and tabs only.
    - The first occurrence of a name wins; names are case-sensitive.
    - One pair of surrounding double quotes is removed from a value.
    - A value containing '%' is percent-decoded strictly; if that fails
      the raw value is kept.

    One pass over the header: linear time, whatever the input.
    Difference: a cookie named ``__proto__`` is kept (JavaScript drops it).
    """
    if not isinstance(header, str):
        raise TypeError("argument str must be a string")
    cookies: dict[str, str] = {}
    index, length = 0, len(header)
    if length < 2:
        return cookies
    while index < length:
        eq = header.find("=", index)
        if eq == -1:
            break  # no more pairs
        end = header.find(";", index)
        if end == -1:
            end = length
        elif eq > end:
            # This segment has no '='; resume after the last ';' before the '='.
            index = header.rfind(";", index, eq) + 1
            continue
        key = header[index:eq].strip(" \t")
        if key not in cookies:
            value = header[eq + 1:end].strip(" \t")
            if value[:1] == '"' and value[-1:] == '"':
                value = value[1:-1]  # one pair of quotes; a lone '"' becomes ''
            cookies[key] = _try_decode(value)
        index = end + 1
    return cookies


def _try_decode(value: str) -> str:
    """Percent-decode a cookie value if it has a '%'; keep it raw if decoding fails."""
    if "%" not in value:
        return value
    try:
        return decode_uri_component(value)
    except ValueError:
        return value


def serialize_cookie(
    name: str,
    value: str,
    *,
    domain: str | None = None,
    path: str | None = None,
    expires: datetime | None = None,
    http_only: bool = False,
    secure: bool | str | None = False,
    partitioned: bool | None = False,
    priority: str | None = None,
    same_site: bool | str | None = None,
) -> str:
    """Build a Set-Cookie value, as cookie 0.7.2's ``serialize`` does.

    The value is percent-encoded (encodeURIComponent). Attributes come in
    the order Domain, Path, Expires, HttpOnly, Secure, Partitioned,
    Priority, SameSite; a falsy one is left out. ``Max-Age`` is never
    written: express-session does not pass it. The name, value, domain and
    path are checked against the strict RFC 6265 / RFC 7230 patterns (the
    CVE-2024-47764 fix): an invalid one raises ValueError, so no attribute
    or header can be smuggled in.
    """
    if not isinstance(name, str) or not _COOKIE_NAME.fullmatch(name):
        raise ValueError(f"argument name is invalid: {name!r}")
    encoded = encode_uri_component(value)
    if not _COOKIE_VALUE.fullmatch(encoded):
        raise ValueError(f"argument val is invalid: {encoded!r}")
    parts = [name + "=" + encoded]
    if domain:
        if not isinstance(domain, str) or not _COOKIE_DOMAIN.fullmatch(domain):
            raise ValueError(f"option domain is invalid: {domain!r}")
        parts.append("Domain=" + domain)
    if path:
        if not isinstance(path, str) or not _COOKIE_PATH.fullmatch(path):
            raise ValueError(f"option path is invalid: {path!r}")
        parts.append("Path=" + path)
    if expires:
        if not isinstance(expires, datetime):
            raise ValueError(f"option expires is invalid: {expires!r}")
        parts.append("Expires=" + email.utils.format_datetime(expires.astimezone(timezone.utc), usegmt=True))
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    if partitioned:
        parts.append("Partitioned")
    if priority:
        parts.append("Priority=" + _attribute_value("priority", priority, {"low": "Low", "medium": "Medium",
                                                                           "high": "High"}))
    if same_site:
        names = {"lax": "Lax", "strict": "Strict", "none": "None"}
        parts.append("SameSite=" + ("Strict" if same_site is True else
                                    _attribute_value("sameSite", same_site, names)))
    return "; ".join(parts)


def _attribute_value(option: str, value: object, names: dict[str, str]) -> str:
    """One of a few words, in any letter case, as written in the header; anything else is an error."""
    if isinstance(value, str) and value.lower() in names:
        return names[value.lower()]
    raise ValueError(f"option {option} is invalid: {value!r}")


def encode_uri_component(text: str) -> str:
    """Percent-encode like JavaScript's ``encodeURIComponent``.

    Letters, digits and ``-_.!~*'()`` stay; everything else becomes UTF-8
    %XX escapes. So ``s:abc.x+y/z`` becomes ``s%3Aabc.x%2By%2Fz``. A lone
    surrogate raises ValueError, as JavaScript's raises URIError.
    """
    try:
        return urllib.parse.quote(text, safe="-_.!~*'()", encoding="utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise ValueError(f"cannot percent-encode {text!r}: {exc.reason}") from None


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def decode_uri_component(text: str) -> str:
    """Decode %XX escapes strictly, like JavaScript's ``decodeURIComponent``.

    Raises ValueError on a '%' not followed by two hex digits or on escapes
    that are not valid UTF-8, where Python's ``unquote`` would quietly guess.
    """
    if _BAD_PERCENT.search(text):
        raise ValueError(f"malformed percent-escape in {text!r}")
    try:
        return urllib.parse.unquote_to_bytes(text).decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"percent-escapes in {text!r} are not UTF-8") from exc


# ==== 9. Stores =============================================================
#
# A store keeps sessions on the server, keyed by id. express-session's Store
# API takes callbacks; ours is synchronous and raises.


class Store:
    """The store interface: subclass it and implement ``get``, ``set`` and ``destroy``.

    Mirrors express-session's ``Store``. Optional methods, which express
    also treats as optional, are looked up by name:

    - ``touch(sid, session)``: refresh the expiry only; called at the end of
      a request whose session did not need saving. Without it such sessions
      are not refreshed in the store (use ``resave=True``).
    - ``all() -> dict[str, dict]``, ``length() -> int``, ``clear()``: never
      called by the middleware; for you.

    ``get`` returns the stored JSON-like dict (with a ``cookie`` key) or
    None; raising FileNotFoundError also means "not found" (express's
    ENOENT). Any other exception while loading gives the request a 500.
    A store that talks to a server must bound every call with a timeout:
    the request waits for it.

    ``ready`` stands in for express's 'connect'/'disconnect' events: while
    it is False the middleware gives requests no session at all.
    """

    ready: bool = True

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return the stored session with this id, or None."""
        raise NotImplementedError

    def set(self, sid: str, session: Session) -> None:
        """Store the session (insert or replace): write ``session_json(session)``."""
        raise NotImplementedError

    def destroy(self, sid: str) -> None:
        """Forget the session with this id (no error if there is none)."""
        raise NotImplementedError


class MemoryStore(Store):
    """Sessions in a dict of JSON strings, in this process (express-session's ``MemoryStore``).

    Faithful, leak included: an expired session is removed only when it is
    read (``get``, ``touch``, ``all``, ``length``); there is no timer, and a
    session whose cookie has no expiry never goes. Every read parses the
    JSON again, so callers get a fresh copy. Safe to share between threads.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.sessions: dict[str, str] = {}

    def get(self, sid: str) -> dict[str, Any] | None:
        """The stored session, or None if there is none or it has expired (and is now deleted)."""
        with self._lock:
            return self._lookup(sid)

    def set(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Store the session as JSON."""
        _, text = session_json(session)
        with self._lock:
            self.sessions[sid] = text

    def destroy(self, sid: str) -> None:
        """Delete the session, if there is one."""
        with self._lock:
            self.sessions.pop(sid, None)

    def touch(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Replace the stored cookie (so its expiry) with the session's; the data is left alone."""
        cookie = stored_cookie(session)
        with self._lock:
            current = self._lookup(sid)
            if current is not None:
                current["cookie"] = cookie
                self.sessions[sid] = stringify(current)

    def all(self) -> dict[str, dict[str, Any]]:
        """Every live session, keyed by id (expired ones are deleted on the way)."""
        with self._lock:
            found = {}
            for sid in list(self.sessions):
                session = self._lookup(sid)
                if session is not None:
                    found[sid] = session
            return found

    def length(self) -> int:
        """The number of live sessions."""
        return len(self.all())

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self.sessions = {}

    def _lookup(self, sid: str) -> dict[str, Any] | None:
        """Parse one entry; delete it and return None if its cookie has expired. Hold the lock."""
        text = self.sessions.get(sid)
        if text is None:
            return None
        session = parse_json(text)
        expires_ms = expiry_ms(session) if isinstance(session, dict) else None
        if expires_ms is not None and expires_ms <= clock_ms(self._clock):
            del self.sessions[sid]
            return None
        return session


def session_json(session: Session | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The stored form of a session and its JSON text (compact, as MemoryStore writes it)."""
    data = session.to_json() if isinstance(session, Session) else dict(session)
    return data, stringify(data)


def stored_cookie(session: Session | Mapping[str, Any]) -> Any:
    """The stored form of a session's cookie, for touch()."""
    if isinstance(session, Session):
        return session.cookie.to_json()
    return session["cookie"]


def expiry_ms(data: Mapping[str, Any]) -> int | None:
    """When a stored session expires, in ms since the epoch, or None (never), as MemoryStore decides.

    Its cookie's ``expires`` read as a JavaScript Date would (an ISO or HTTP
    date, or a number); a falsy or unreadable one means never.
    """
    cookie = data.get("cookie")
    if not isinstance(cookie, Mapping) or not cookie.get("expires"):
        return None
    return _expiry_from_stored(cookie["expires"])


def stringify(data: Any) -> str:
    """Compact JSON text, as JavaScript's JSON.stringify writes it.

    Like JSON.stringify, NaN and the infinities become null, and a datetime
    becomes its ISO string (as a Date does; one without a time zone is read
    as UTC). Anything else JSON cannot hold (bytes, a set, an object, a
    dict with tuple keys) raises TypeError: refused loudly, never stored
    half-way. Numbers are written the way Python writes them (1.0, 1e-07).
    """
    try:
        return _strict_json(data)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise  # a circular structure, say
        return _strict_json(_finite(data))


def _json_default(value: Any) -> Any:
    """What JSON.stringify writes for a value json cannot: a datetime's ISO string, or an error."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return _iso((value - _EPOCH) // _ONE_MS)
    raise TypeError(f"a session can hold only what JSON can (str, numbers, bool, None, lists and dicts "
                    f"with str keys, datetime), not {type(value).__name__}: {value!r:.60}")


_strict_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                default=_json_default).encode


def _finite(data: Any) -> Any:
    """A copy of ``data`` with every NaN and infinity replaced by None."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


parse_json = json.JSONDecoder(parse_constant=_refuse_constant).decode
"""Parse JSON text as JavaScript's JSON.parse does: NaN and Infinity are refused (ValueError)."""


class short_id:
    """A session id, shortened when a log line is written: the full id is a bearer token.

    Shortening happens only if the line is logged (``__str__``), so it costs
    nothing when debug logging is off.
    """

    __slots__ = ("session_id",)

    def __init__(self, session_id: object) -> None:
        self.session_id = session_id

    def __str__(self) -> str:
        sid = self.session_id
        if isinstance(sid, str) and len(sid) > 8:
            return repr(sid[:6] + "...")
        return repr(sid)


# ==== 10. http.server =======================================================
#
# The adapter for the standard library's server. Subclass
# SessionRequestHandler, write do_GET as usual, and use self.session.
# The three moments of the lifecycle are wired in:
#   begin   - in handle_one_request, after the request line and headers are read
#   headers - in end_headers, before the header block is written
#   end     - in handle_one_request, after do_GET returns, before the
#             buffered response's last byte is released


class _HeldResponse:
    """A stand-in for the handler's wfile that holds the response back.

    Small responses go out in one write when the request ends (one packet,
    no Nagle stall). A large one is passed on as it grows, except its last
    byte, so the client cannot see the response end before the store has
    answered (express-session holds back the last byte the same way).
    """

    _LIMIT = 64 * 1024

    def __init__(self, wfile: BinaryIO) -> None:
        self._wfile = wfile
        self._chunks: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> int:
        """Hold ``data``; past the limit, pass on everything held but the last byte."""
        self._chunks.append(bytes(data))
        self._size += len(data)
        if self._size > self._LIMIT:
            self._pass_on_all_but_last_byte()
        return len(data)

    def flush(self) -> None:
        """The handler asks for its bytes to go out: all of them but the last one do."""
        self._pass_on_all_but_last_byte()

    def _pass_on_all_but_last_byte(self) -> None:
        data = b"".join(self._chunks)
        if len(data) > 1:
            self._wfile.write(data[:-1])
            data = data[-1:]
        self._chunks = [data] if data else []
        self._size = len(data)

    def release(self) -> None:
        """Send everything that is held."""
        data = b"".join(self._chunks)
        self._chunks, self._size = [], 0
        if data:
            self._wfile.write(data)
        self._wfile.flush()


class SessionRequestHandler(BaseHTTPRequestHandler):
    """A BaseHTTPRequestHandler whose ``do_*`` methods see ``self.session``.

    Serve it with SessionHTTPServer, which carries the middleware. Inside a
    handler method:

    - ``self.session`` is the Session (None if this request has no session,
      e.g. outside the cookie path); set it to None to unset it (express's
      ``req.session = null``);
    - ``self.session_id`` is express's ``req.sessionID``.

    Set-Cookie is added when the handler calls ``end_headers()``, after the
    headers the handler set itself. The store is written after the handler
    returns, before the end of the response is released. If the handler
    raises, the client gets a 500 (if no headers were sent yet) and the
    session's end still runs, as express's error handler ends the response.
    """

    server: SessionHTTPServer
    session_state: RequestState | None = None
    _headers_sent: bool = False

    def setup(self) -> None:
        """Set up the connection as usual, with Nagle's algorithm off (TCP_NODELAY)."""
        super().setup()
        # Answers are written in one piece, but a held-back last byte must not
        # wait for a delayed ACK either.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    @property
    def session(self) -> Session | None:
        """This request's session (express's ``req.session``)."""
        return self.session_state.session if self.session_state else None

    @session.setter
    def session(self, value: Session | None) -> None:
        if self.session_state is None:
            raise RuntimeError("this request has no session to replace")
        if value is not None and not isinstance(value, Session):
            raise TypeError("self.session can only be set to None (to unset it)")
        self.session_state.session = value

    @property
    def session_id(self) -> Any:
        """The id the Set-Cookie will carry (express's ``req.sessionID``)."""
        return self.session_state.session_id if self.session_state else None

    @session_id.setter
    def session_id(self, value: Any) -> None:
        if self.session_state is None:
            raise RuntimeError("this request has no session")
        self.session_state.session_id = value

    def request_target(self) -> str:
        """The request target exactly as the client sent it (express's ``req.originalUrl``).

        ``self.path`` is not quite that: http.server turns a leading '//' into '/'.
        """
        words = self.requestline.split()
        return words[1] if len(words) >= 2 else self.path

    def request_info(self) -> RequestInfo:
        """Describe this request for the session layer."""
        cookie_lines = self.headers.get_all("Cookie") or []
        proto_lines = self.headers.get_all("X-Forwarded-Proto") or []
        return RequestInfo(
            url=self.request_target(),
            cookie_header="; ".join(cookie_lines) if cookie_lines else None,
            tls=isinstance(self.connection, ssl.SSLSocket),
            forwarded_proto=", ".join(proto_lines) if proto_lines else None,
        )

    def handle_one_request(self) -> None:
        """Read one request and answer it, with the session's begin and end around ``do_*``.

        This follows BaseHTTPRequestHandler.handle_one_request step by step.
        """
        self.session_state = None
        self._headers_sent = False
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            self._handle_with_session(method)
        except TimeoutError as exc:
            self.log_error("Request timed out: %r", exc)
            self.close_connection = True

    def _handle_with_session(self, method: Callable[[], None]) -> None:
        middleware = self.server.session_middleware
        # begin: load or create the session.
        try:
            self.session_state = middleware.begin(self.request_info())
        except Exception as exc:  # the store failed, or genid did
            _log.error("could not load the session: %s", exc)
            error = exc if isinstance(exc, SessionLoadError) else SessionLoadError()
            self.send_error(error.status, None, error.advice)
            return
        real_wfile = self.wfile
        held = _HeldResponse(real_wfile)
        self.wfile = held  # type: ignore[assignment]
        try:
            try:
                method()
            except Exception:
                _log.exception("the handler for %s %s failed", self.command, self.path)
                if not self._headers_sent:
                    self.send_error(500)
                self.close_connection = True
        finally:
            # end: the store operation, before the last byte is released.
            if self.session_state is not None:
                middleware.end(self.session_state)
            self.wfile = real_wfile
            held.release()

    def end_headers(self) -> None:
        """Add the session's Set-Cookie (the on-headers moment), then end the header block."""
        if self.session_state is not None and not self._headers_sent:
            header = self.server.session_middleware.set_cookie_header(self.session_state)
            if header is not None:
                self.send_header("Set-Cookie", header)
        self._headers_sent = True
        super().end_headers()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, from the middleware's clock, so Expires and Date agree."""
        if timestamp is None:
            timestamp = self.server.session_middleware.options.clock()
        return super().date_time_string(timestamp)


class SessionHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that carries a SessionMiddleware for its handlers.

    ``SessionHTTPServer(('127.0.0.1', 3000), MyHandler, session_middleware(secret=...))``.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[SessionRequestHandler],
                 middleware: SessionMiddleware) -> None:
        self.session_middleware = middleware
        super().__init__(address, handler)
