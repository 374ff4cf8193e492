"""Server-side sessions as Node's express-session 1.19.0 makes them, in one module, standard library only.

Read it from the top: the primer, then section 1, a request's whole life; later sections explain what it
calls. Section 11 holds JavaScript details copied for fidelity: skip it on a first read. Elsewhere:
LESSONS.md (lessons; what we do differently, "Difference:" here), session_demo_extras, server.py (the demo).

Sections (grep "# ===="): 1. the request lifecycle, 2. options, 3. decisions, 4. change detection, 5. the
session, 6. the session cookie, 7. signing, 8. the Cookie header, 9. stores, 10. http.server, 11. JavaScript.

Primer. HTTP forgets everything between two requests; a session is how a server remembers a visitor.
- The browser holds only a cookie with the session's id, signed ("s:" + id + "." + an HMAC of the id)
  so that nobody can make an id up. The first secret signs; every secret verifies (for rotation).
- A store keeps the session's data on the server, as JSON, under its id.
- Each request: read and verify the cookie's id -> load that session from the store, or make a new one
  -> the handler uses it -> as the headers go out, Set-Cookie or not -> at the end, save, touch or destroy.
- Two ids: state.session_id, what the Set-Cookie will carry (a handler may assign it); Session.id, fixed.
- A browser-session cookie has no expiry and goes when the browser closes; max_age (ms) sets one.
- "touch" means two things, as in express: Session.touch() restarts the cookie's lifetime; a store's
  touch() moves the stored session's expiry without rewriting it.
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
import secrets as _secrets  # the name "secrets" is kept for the option's list of keys
import ssl
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "session_middleware", "SessionMiddleware", "SessionOptions", "SessionRequestHandler", "SessionHTTPServer",
    "Session", "Cookie", "Store", "MemoryStore", "SessionLoadError", "RequestInfo", "RequestState",
    "Decision", "should_set_cookie", "should_save", "should_touch", "should_destroy", "hash_session",
    "read_session_id", "is_secure", "sign", "unsign", "unsign_any", "parse_cookie_header", "serialize_cookie",
    "stringify", "session_json", "stored_cookie", "expiry_ms", "clock_ms", "short_id", "parse_json",
    "encode_uri_component", "decode_uri_component",
]

_log = logging.getLogger("session_demo")
Clock = Callable[[], float]  # returns the time in seconds since the epoch, like time.time (tests freeze it)
_short_secret_warned = False  # section 2 warns of a short secret once per process, not once per middleware


def short_id(session_id: object) -> str:
    """An id cut short for a log: whoever has a full id is the visitor (Difference: express logs it whole)."""
    if isinstance(session_id, str) and len(session_id) > 8:
        return repr(session_id[:6] + "...")
    return repr(session_id)


# ==== 1. The request lifecycle ==============================================
# A server adapter (section 10 for http.server; WSGI and ASGI ones in the extras) calls a SessionMiddleware
# at three moments of each request (begin, set_cookie_header, end), keeping its RequestState between them.
# A trace (resave=False, save_uninitialized=False, no max_age; the handler does views += 1):
#   visit 1, no cookie. begin: cookie_id = None; generate(): session_id = start_id = "abc" (a new id),
#     start_hash = hash of {}, stored_hash = None (the store holds nothing). Handler: views = 1.
#     headers: new and modified -> Set-Cookie "s:abc.<signature>". end: new, modified -> store.set("abc").
#   visit 2, cookie "s:abc.<signature>". begin: it verifies: cookie_id = session_id = start_id = "abc";
#     store.get("abc") -> inflate(): start_hash = stored_hash = hash of {"views": 1}. Handler: views = 2.
#     headers: the browser's own, modified, no expiry -> no Set-Cookie. end: modified -> store.set("abc").
# is_new() is cookie_id != session_id. start_id is the session's id at the start: it differs from the
# session's id only after regenerate(). Where things are: should_* 3, is_modified 4, Session 5, Cookie 6.
def session_middleware(**options: Any) -> SessionMiddleware:
    """Build the middleware from SessionOptions' keywords (express's ``session(options)``)."""
    return SessionMiddleware(SessionOptions(**options))


class SessionMiddleware:
    """The session layer for any server (express-session's middleware); a subclass may wrap load and save."""
    def __init__(self, options: SessionOptions) -> None:
        self.options = options

    def begin(self, request: RequestInfo) -> RequestState | None:
        """Before the handler: load the session the cookie names, or make one (None: see _skips)."""
        if self._skips(request):
            return None
        state = RequestState(self.options, request)
        state.cookie_id = state.session_id = read_session_id(
            request.cookie_header, self.options.name, self.options.secrets)
        data = self._fetch(state) if state.session_id else None  # no (valid) cookie: no need to ask the store
        if data is not None:
            _log.debug("session found")
            state.inflate(data)
        else:
            _log.debug("no session found; generating a new one" if state.session_id else
                       "no SID sent, generating session")
            state.generate()
        return state

    def _skips(self, request: RequestInfo) -> bool:
        """No session if the store is not ready, or off the cookie's path (express's prefix match, kept)."""
        if not getattr(self.options.store, "ready", True):
            _log.debug("no session: store is disconnected")
            return True
        cookie_path = self.options.cookie_options_for(request).get("path")
        if not request_pathname(request.url).startswith(cookie_path or "/"):  # /foo covers /foobar: kept
            _log.debug("no session: pathname mismatch (cookie path %r)", cookie_path or "/")
            return True
        return False

    def _fetch(self, state: RequestState) -> Any:
        """What the store holds under the cookie's id, or None; a store error raises SessionLoadError."""
        _log.debug("fetching %s", short_id(state.session_id))
        try:
            data = self.load(state)
        except FileNotFoundError:
            return None  # a store may say "not found" this way (Node's stores: an ENOENT error)
        except SessionLoadError:
            raise
        except Exception as exc:
            raise SessionLoadError(f"the session store failed: {exc!r}") from exc
        return data if _found(data) else None  # JS truthiness: False, "", 0 are "not found" (section 11)

    def load(self, state: RequestState) -> Any:
        """Read the session the browser named from the store (express's ``store.get``)."""
        return state.store.get(state.session_id)

    def set_cookie_header(self, state: RequestState) -> str | None:
        """As the headers go out: the Set-Cookie value, or None (also on a failure, which is logged)."""
        if state.session is None:
            _log.debug("set-cookie: no (no session)")
            return None
        try:
            self._restart_cookie_once(state)  # first: max_age slides from each request (section 3)
            decision = should_set_cookie(state)
            if decision and state.session.cookie.secure and not is_secure(state.request, self.options.proxy):
                decision = Decision(False, "secure cookie, but the request is not secure")
            if not decision:
                _log.debug("set-cookie: %s", decision)
                return None
            value = "s:" + sign(state.session_id, self.options.secrets[0])
            header = state.session.cookie.serialize(self.options.name, value)
        except Exception:
            _log.exception("set-cookie: failed; the response goes on without the cookie")
            return None
        _log.debug("set-cookie: %s", decision)
        return header

    def end(self, state: RequestState) -> None:
        """After the handler, before the response's last byte: save, touch or destroy in the store, once.
        A store error is logged and raised, so the adapter answers 500 (express, headers sent, only logs)."""
        if state.ended:
            return
        state.ended = True
        try:
            if state.session is not None:
                self._restart_cookie_once(state)
                save = should_save(state)
                _log.debug("save: %s", save)
                if save:
                    self.save(state)
                elif not self.options.store_implements_touch:
                    _log.debug("touch: no (the store has no touch)")
                else:  # the store's touch: refresh the stored expiry, without a rewrite
                    touch = should_touch(state, save)
                    _log.debug("touch: %s", touch)
                    if touch:
                        state.store.touch(state.session_id, state.session)  # type: ignore[attr-defined]
            elif destroy := should_destroy(state):
                _log.debug("destroy: %s", destroy)
                state.store.destroy(state.session_id)
            else:
                _log.debug("store: nothing to do (no session on the request)")
        except Exception as exc:
            _log.exception("session store failed at the end of the request")
            state.end_error = exc
            raise  # no silent loss: the adapter answers 500 instead of the handler's response

    def save(self, state: RequestState) -> None:
        """Write the whole session to the store at the end of the request (express's ``session.save()``)."""
        assert state.session is not None
        _log.debug("saving %s", short_id(state.session.id))
        state.store.set(state.session.id, state.session)

    @staticmethod
    def _restart_cookie_once(state: RequestState) -> None:
        """Session.touch(), once per request: at the headers, or at the end if none went out."""
        if not state.cookie_restarted and state.session is not None:
            state.session.touch()
            state.cookie_restarted = True


@dataclass
class RequestInfo:
    """What the session layer needs of a request."""
    url: str = "/"  # the target as sent, query included
    cookie_header: str | None = None  # every Cookie header, joined with "; "
    tls: bool = False  # it came over TLS
    forwarded_proto: str | None = None  # X-Forwarded-Proto, trusted only with proxy=True
    framework_secure: bool = False  # a framework's own "is it HTTPS?" (WSGI, ASGI); http.server has none


class RequestState:
    """One request's session and bookkeeping (section 1's trace shows them at work):
      cookie_id    the id the browser's cookie carried, if its signature checked; else None
      session_id   the id the Set-Cookie will carry (a handler may assign it anything)
      session      the Session the handler sees; None once the handler unsets it
      start_id     the session's id when it was loaded or made; differs only after regenerate()
      start_hash   hash_session of its data then: a different hash later means modified
      stored_hash  the hash of what the store holds for it, if this request knows it, else None (section 4)"""
    def __init__(self, options: SessionOptions, request: RequestInfo) -> None:
        self.options = options
        self.request = request
        self.store: Store = options.store
        self.session: Session | None = None
        self.session_id: Any = None
        self.cookie_id: str | None = None
        self.start_id: Any = None
        self.start_hash: str | None = None
        self.stored_hash: str | None = None
        self.cookie_restarted = self.ended = False
        self.end_error: Exception | None = None  # the store's error at the end, if it failed

    def is_new(self) -> bool:
        """The browser did not send this session's id: no cookie, a bad one, an unknown id, regenerated."""
        return bool(self.cookie_id != self.session_id)

    def generate(self) -> None:
        """Start a new session (express's ``generate``)."""
        self.session = self.new_session()
        self.session_id = self.start_id = self.session.id
        self.start_hash = hash_session({})  # a new session holds no data yet

    def inflate(self, data: Mapping[str, Any]) -> None:
        """Use the session the store returned (express calls it inflating)."""
        self.session = self.stored_session(data)
        self.start_id = self.session_id
        self.start_hash = hash_session(data)  # so a reserved key dropped on load (section 5) is a change
        if not self.options.resave:
            self.stored_hash = self.start_hash

    def regenerate(self) -> Session:
        """Destroy the session in the store; a new one, with a new id, takes its place (store.regenerate)."""
        old_id, old_session = self.session_id, self.session
        session = self.new_session()  # an unusable id fails before anything is destroyed
        session.save_sets_stored_hash = False  # see section 4
        self.session_id = session.id
        _log.debug("regenerating: destroying %s, the new id is %s", short_id(old_id), short_id(session.id))
        try:
            self.store.destroy(old_id)
        finally:
            self.session = session
            if old_session is not None:
                old_session._replaced = True  # Difference: it refuses writes (express's goes nowhere)
        return self.session

    def new_session(self) -> Session:
        """A new session (``store.generate``), its id from genid; the caller makes it session_id."""
        session_id = self.options.genid(self.request)
        # Difference: express takes an id that would break the cookie; this is a ValueError.
        if isinstance(session_id, str) and re.search(r'[\x00-\x20",;\\\x7f]', session_id):
            raise ValueError(f"genid returned an unusable session id {session_id!r}: "
                             "no spaces, control characters, '\"', ',', ';' or '\\'")
        cookie_options = self.options.cookie_options_for(self.request)  # may be a callable's (section 2)
        cookie = Cookie(cookie_options, clock=self.options.clock)
        secure = is_secure(self.request, self.options.proxy)
        if cookie_options.get("secure") == "auto":  # 'auto': Secure exactly when this request is HTTPS
            cookie.secure = secure
        if cookie_options.get("same_site") == "auto":
            cookie.same_site = "none" if secure else "lax"  # browsers refuse SameSite=None without Secure
        return Session(self, session_id, cookie)

    def stored_session(self, data: Mapping[str, Any]) -> Session:
        """A Session rebuilt from what the store returned (express's ``store.createSession``)."""
        if not isinstance(data, Mapping):
            raise SessionLoadError(f"the store returned {type(data).__name__}, not a session object")
        if isinstance(data, Session):
            raise SessionLoadError("the store returned the Session object it was given: a store's set() must "
                                   "keep session.to_json() (a plain dict), and get() return that")
        if not isinstance(data.get("cookie"), Mapping):
            raise SessionLoadError("the stored session has no cookie")
        cookie = Cookie.from_json(data["cookie"], clock=self.options.clock)
        return Session(self, self.session_id, cookie, data)


def read_session_id(cookie_header: str | None, name: str, secrets: list[bytes]) -> str | None:
    """The id in the first session cookie if a secret signed it, else None (express's ``getcookie``)."""
    raw = parse_cookie_header(cookie_header or "").get(name)
    if not raw:
        return None
    if not raw.startswith("s:"):
        _log.debug("cookie unsigned")
        return None
    session_id = unsign_any(raw[2:], secrets)
    if session_id is None:
        _log.debug("cookie signature invalid")
    return session_id


def request_pathname(url: str) -> str:
    """A target's path, not decoded, as parseurl (an npm package express uses) reads it: /foo?x=1 -> /foo."""
    if url.startswith("/"):
        return url.split("?", 1)[0].split("#", 1)[0] or "/"
    try:
        return urllib.parse.urlsplit(url).path or "/"
    except ValueError:
        return url  # not a URL at all (e.g. "http://[::1"): it matches no cookie path


def is_secure(request: RequestInfo, proxy: bool | None) -> bool:
    """Is the request HTTPS (express's ``issecure``)? TLS always; else as the proxy option says."""
    if request.tls:
        return True
    if proxy is None:
        return request.framework_secure is True
    return proxy is True and (request.forwarded_proto or "").split(",", 1)[0].lower().strip() == "https"


class SessionLoadError(Exception):
    """The session could not be loaded (store failure or corrupt data): answer ``status`` with ``advice``."""
    status = 500
    advice = "The session could not be loaded; the server log says why"


# ==== 2. Options ============================================================
# Options are read once, when the middleware is built: a bad one fails then, not on some later request.
class SessionOptions:
    """The middleware's options (express's ``session(options)``, in snake_case), validated once:
    secret              the key that signs the cookie, or a list: the first signs, every one verifies
    name                the cookie's name, "connect.sid"
    cookie              the cookie's settings (section 6), or a callable from RequestInfo to them
    store               where sessions are kept (section 9): a MemoryStore by default
    resave              save every loaded session at the end of the request, even unchanged
    save_uninitialized  store a new session, and send its cookie, even if nothing was put in it
    rolling             send the cookie on every response, so its expiry restarts in the browser too
    unset               when the handler sets the session to None: "keep" it in the store, or "destroy"
    proxy               is the request HTTPS? True: trust X-Forwarded-Proto; False: only TLS counts;
                        None: ask the framework (RequestInfo.framework_secure)
    genid               makes a new session id from the RequestInfo
    clock               returns now in seconds, like time.time
    Left out, ``resave`` and ``save_uninitialized`` warn and mean True, as in express. Differences:
    ``secret`` is required, a short one warns, and the cookie options are tried now (a bad path refused)."""
    def __init__(self, *, secret: str | bytes | list[str | bytes] | tuple[str | bytes, ...] | None = None,
                 name: str = "connect.sid",
                 cookie: Mapping[str, Any] | Callable[[RequestInfo], Mapping[str, Any]] | None = None,
                 genid: Callable[[RequestInfo], Any] | None = None, proxy: bool | None = None,
                 resave: bool | None = None, rolling: bool = False, save_uninitialized: bool | None = None,
                 store: Store | None = None, unset: str | None = "keep", clock: Clock = time.time) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds, like time.time")
        self.clock: Clock = clock
        self.genid: Callable[[RequestInfo], Any] = genid or generate_session_id
        if not callable(self.genid):
            raise TypeError("genid option must be a function")
        # express's warning, word for word (so saveUninitialized); stacklevel 3: who called session_middleware
        for option, value in (("resave", resave), ("saveUninitialized", save_uninitialized)):
            if value is None:
                warnings.warn(f"undefined {option} option; provide {option} option", DeprecationWarning, 3)
        self.resave: bool = resave is None or bool(resave)
        self.save_uninitialized: bool = save_uninitialized is None or bool(save_uninitialized)
        self.rolling: bool = bool(rolling)
        if unset and unset not in ("destroy", "keep"):
            raise TypeError('unset option must be "destroy" or "keep"')
        self.unset_destroy: bool = unset == "destroy"
        if proxy is not None and proxy is not True and proxy is not False:
            raise TypeError("proxy option must be True, False or None")
        self.proxy: bool | None = proxy
        self.secrets: list[bytes] = _secret_list(secret)
        self.name: str = name or "connect.sid"  # an empty name means the default, as in express
        self.cookie = {} if cookie is None else cookie
        # Tried now on a probe cookie (TypeError if not a mapping); a callable's answers, on each request. The
        # rules are those of cookie 0.7.2, the npm package express writes cookies with (section 8).
        probe = Cookie({} if callable(self.cookie) else self.cookie, clock=clock)
        if isinstance(probe.path, str) and re.search(r'[ ,"\\]', probe.path):  # cookie 0.7.2 allows it
            raise ValueError(f"option path is invalid: {probe.path!r} (no spaces, ',', '\"' or '\\')")
        if probe.same_site == "auto":  # "auto" is decided per request: try "lax" (plain HTTP's answer)
            probe.same_site = "lax"
        probe.serialize(self.name, "probe")
        self.store: Store = store if store is not None else MemoryStore(clock=clock)
        for method in ("get", "set", "destroy"):
            if not callable(getattr(self.store, method, None)):
                raise TypeError(f"store must implement {method}()")
        self.store_implements_touch: bool = callable(getattr(self.store, "touch", None))  # once, as express

    def cookie_options_for(self, request: RequestInfo) -> Mapping[str, Any]:
        """The cookie options for this request: the mapping, or what the callable returns."""
        if not callable(self.cookie):
            return self.cookie
        options = self.cookie(request)
        if not isinstance(options, Mapping):
            raise TypeError("the cookie option callable must return a mapping")
        return options


def generate_session_id(request: RequestInfo) -> str:
    """A new session id, as express's default genid makes it: 24 random bytes from the OS, as base64url."""
    return _secrets.token_urlsafe(24)


def _secret_list(secret: object) -> list[bytes]:
    """The ``secret`` option as HMAC keys. Differences: none is an error (express fails each request); a short
    one warns (each in a list verifies)."""
    global _short_secret_warned
    if secret is None or secret == "" or secret == b"":
        raise TypeError("secret option required for sessions")
    items: list[Any] = list(secret) if isinstance(secret, (list, tuple)) else [secret]
    if not items:
        raise TypeError("secret option array must contain one or more strings")
    for item in items:
        if not isinstance(item, (str, bytes, bytearray)) or not item:
            raise TypeError(f"each secret must be a non-empty str or bytes, not {item!r}")
    short = [str(index) for index, item in enumerate(items) if len(item) < 32]
    if short and not _short_secret_warned:
        _short_secret_warned = True
        which = "the secret" if len(items) == 1 else f"secret {' and '.join(short)} (of {len(items)})"
        warnings.warn(f"short secret: {which} has fewer than 32 characters, so anyone holding one signed "
                      "cookie can guess it offline; use 32 or more random ones (secrets.token_urlsafe(32))",
                      stacklevel=3)
    return [_key(item) for item in items]


# ==== 3. Decisions ==========================================================
# At the headers and at the end of each request, express-session asks: send the cookie? save? touch the
# store's copy? destroy? Each question is a small predicate with its name, answering a Decision (yes or no,
# with the reason, for the log). New: the browser did not send this session's id (state.is_new()).
# Modified: the handler changed the session's data or its id (section 4). The answers:
#
#   the session                      Set-Cookie                            the store, at the end
#   new, modified (regenerated too)  yes                                   save
#   new, unmodified                  with save_uninitialized               save with save_uninitialized
#   the browser's own, modified      with rolling, or if it has an expiry  save
#   the browser's own, unmodified    with rolling                          save with resave; else touch
#   unset by the handler             no                                    destroy with unset="destroy"
#   saved by the handler, unchanged  as above                              none; the browser's own: touch
# (touch: the store's, section 9.) Each request first restarts the cookie's lifetime (Session.touch), so a
# max_age slides: the session lasts max_age from the last request. The new expiry reaches the store with
# the save or the touch, and the browser with a Set-Cookie: for the browser's own session, sent again when
# it changed (with rolling, always) and only if it has an expiry to refresh (the cookie holds only the id).
# A session_id that is not a string (a handler may assign any) is not sent, saved or touched.
@dataclass(slots=True)
class Decision:
    """A yes or no, with the reason. ``if should_save(state):`` reads the yes/no."""
    yes: bool
    reason: str

    def __bool__(self) -> bool:
        return self.yes

    def __str__(self) -> str:
        return f"{'yes' if self.yes else 'no'} ({self.reason})"


def should_set_cookie(state: RequestState) -> Decision:
    """Send Set-Cookie? The table's middle column (express's ``shouldSetCookie``)."""
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    assert state.session is not None
    if state.is_new():
        if state.options.save_uninitialized:
            return Decision(True, "new session, save_uninitialized")
        if is_modified(state):
            return Decision(True, "new session, modified")
        return Decision(False, "new session, unmodified, save_uninitialized=False")
    if state.options.rolling:
        return Decision(True, "rolling")
    if state.session.cookie.expires is None:
        return Decision(False, "browser-session cookie the browser already has")
    if is_modified(state):
        return Decision(True, "modified, and the cookie has an expiry")
    return Decision(False, "unmodified")


def should_save(state: RequestState) -> Decision:
    """Save at the end? The table's last column, less the touch (express's ``shouldSave``)."""
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    # stored_hash None: the store holds nothing this request knows of (section 4).
    if state.is_new() and state.stored_hash is None and not state.options.save_uninitialized:
        # rows "new", without save_uninitialized, and the handler did not save it
        if is_modified(state):
            return Decision(True, "new session, modified")
        return Decision(False, "new session, unmodified, save_uninitialized=False")
    if is_saved(state):  # the browser's own, unmodified, resave=False; or saved by the handler, unchanged
        return Decision(False, "the store already holds it as it is")
    if state.is_new():  # rows "new", with save_uninitialized, or changed since the handler saved it
        return Decision(True, "new session")
    if state.stored_hash is None:  # the browser's own with resave=True, modified or not
        return Decision(True, "resave=True")
    return Decision(True, "modified")  # row "the browser's own, modified"


def should_touch(state: RequestState, save: Decision | None = None) -> Decision:
    """Refresh the stored expiry of the browser's own session when it is not being saved (``shouldTouch``)."""
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    if state.is_new():
        return Decision(False, "not the session the browser sent")
    if save is None:
        save = should_save(state)
    if save:
        return Decision(False, "it is being saved")
    return Decision(True, "unmodified session the browser sent")


def should_destroy(state: RequestState) -> Decision:
    """Destroy in the store when the handler unset the session and ``unset='destroy'`` (``shouldDestroy``)."""
    if not state.session_id:  # unlike the other three, any id will do, a string or not, as in express
        return Decision(False, "no session id")
    if not state.options.unset_destroy:
        return Decision(False, "unset='keep'")
    if state.session is not None:
        return Decision(False, "the session is still set")
    return Decision(True, "session unset and unset='destroy'")


# ==== 4. Change detection ===================================================
# express-session hashes the session's data (all but its cookie) at the start and at the end of a request:
# a different hash, or id, means modified. stored_hash is the hash of what the store holds, if the request
# knows it (a load with resave=False, or Session.save(), set it), else None. Saved: it is the hash now.
# With resave=True a load leaves it None, so the end always saves. A regenerated session's save() does not
# count, as in express (save_sets_stored_hash: only saves of the session the request began with count).
def is_modified(state: RequestState) -> bool:
    """The session's id or data differs from the request's start (express's ``isModified``)."""
    assert state.session is not None
    return state.start_id != state.session.id or state.start_hash != hash_session(state.session)


def is_saved(state: RequestState) -> bool:
    """The store holds the session as it is now (express's ``isSaved``)."""
    assert state.session is not None
    if state.stored_hash is None:
        return False  # the request knows nothing the store holds: no need to hash
    return state.start_id == state.session.id and state.stored_hash == hash_session(state.session)


def hash_session(data: Mapping[str, Any]) -> str:
    """SHA-1 of the data's JSON (section 9) less its ``cookie`` (express's ``hash``); key order counts."""
    plain = data._data if isinstance(data, Session) else {k: v for k, v in data.items() if k != "cookie"}
    return hashlib.sha1(stringify(plain).encode("utf-8", "surrogatepass")).hexdigest()


# ==== 5. The session ========================================================
# What a handler uses: the data as a mapping (session["views"]); its id and cookie; methods that call the
# store at once (save, reload, destroy, regenerate); touch, which does not. A stored key that express
# reserves (section 11) is dropped when a session is loaded.
class Session(MutableMapping[str, Any]):
    """One visitor's session (express's ``Session``). Difference: a reserved key is refused on set."""
    def __init__(self, state: RequestState, session_id: Any, cookie: Cookie,
                 data: Mapping[str, Any] | None = None) -> None:
        self._state = state
        self._id = session_id
        self.cookie: Cookie = cookie
        self.save_sets_stored_hash = True  # see section 4
        self._replaced = False  # regenerate() put a new session in its place
        self._data: dict[str, Any] = {}
        for key, value in (data or {}).items():
            if key in _RESERVED_KEYS:
                _log.debug("dropping reserved key %r from the stored session", key)
            elif key != "cookie":  # the stored cookie became self.cookie
                self._data[key] = value

    @property
    def id(self) -> Any:
        """The session id, fixed when the session was made (read-only, as in express)."""
        return self._id

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._refuse_if_replaced()
        if key == "cookie":
            raise KeyError("'cookie' is not data: use session.cookie")
        if key in _RESERVED_KEYS:
            raise KeyError(f"{key!r} is reserved by express-session (dropped on load): choose another key")
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._refuse_if_replaced()
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_json(self) -> dict[str, Any]:
        """The stored form: ``{"cookie": {...}, ...data}``, as ``JSON.stringify(req.session)``."""
        return {"cookie": self.cookie.to_json(), **self._data}

    def reset_max_age(self) -> Session:
        """Restart the cookie's lifetime: max_age back to original_max_age; the store is not called."""
        self._refuse_if_replaced()
        self.cookie.restart()
        return self

    touch = reset_max_age  # express's touch() is its resetMaxAge()

    def save(self) -> Session:
        """Write the session to the store now (express's ``save``)."""
        self._refuse_if_replaced()
        _log.debug("saving %s", short_id(self._id))
        if self.save_sets_stored_hash:
            self._state.stored_hash = hash_session(self)
        self._state.store.set(self._id, self)
        return self

    def reload(self) -> Session:
        """Load the session again and return the new object (``reload``); LookupError if it is gone."""
        self._refuse_if_replaced()
        state = self._state
        data: Any = state.store.get(self._id)  # any answer: _found() decides, as in begin()
        if not _found(data):
            raise LookupError("failed to load session")
        state.session = state.stored_session(data)
        state.session.save_sets_stored_hash = self.save_sets_stored_hash  # still a regenerated one, or not
        return state.session

    def destroy(self) -> None:
        """Remove the session from the request and the store (express's ``destroy``); no Set-Cookie."""
        self._refuse_if_replaced()
        _log.debug("destroying %s", short_id(self._id))
        self._state.session = None
        self._state.store.destroy(self._id)

    def regenerate(self) -> Session:
        """A new session, with a new id, in place of this one, which the store forgets (``regenerate``).
        Use the one it returns: this one then refuses writes (Difference: in express they vanish)."""
        self._refuse_if_replaced()
        return self._state.regenerate()

    def _refuse_if_replaced(self) -> None:
        if self._replaced:
            raise RuntimeError("this session was replaced by regenerate(): use the session regenerate() "
                               "returned (the http.server adapter keeps it in self.session)")


# ==== 6. The session cookie =================================================
# The cookie's settings (path, secure, same_site, ...) and its expiry, of which the store keeps a copy.
# The expiry is one value, _expires: ms since the epoch, or None for a browser-session cookie. expires (a
# datetime) and max_age (ms left; not stored) are views of it; setting either sets it, and sets
# original_max_age to the ms left: the lifetime that restart() (Session.touch) starts again. Say the clock
# reads 1,000,000 ms and max_age = 60,000 is set: _expires = 1,060,000, original_max_age = 60,000. At
# 1,045,000, max_age reads 15,000; restart() sets max_age to 60,000 again, so _expires = 1,105,000.
# JS rule, undefined vs null, confined to _is_undefined() (section 11): skip it on a first read.
# Python name: stored (JSON) name, in the order express stores them.
_ATTRIBUTES = {"original_max_age": "originalMaxAge", "partitioned": "partitioned", "priority": "priority",
               "_expires": "expires", "secure": "secure", "http_only": "httpOnly", "domain": "domain",
               "path": "path", "same_site": "sameSite"}
_STORED_NAMES = {stored: name for name, stored in _ATTRIBUTES.items()}
_OPTIONS = ["original_max_age", "partitioned", "priority", "expires", "secure", "http_only", "domain", "path",
            "same_site", "max_age"]  # what Cookie() takes
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS
_MIN_MS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS


class Cookie:
    """express-session's ``Cookie``. Difference: an unknown option is a ValueError (express ignores typos)."""
    original_max_age: int | None = None
    partitioned: bool | None = None
    priority: str | None = None
    secure: bool | str | None = None
    http_only: bool | None = None
    domain: str | None = None
    path: str | None = None
    same_site: bool | str | None = None
    _expires: int | None = None

    def __init__(self, options: Mapping[str, Any] | None = None, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self.path = "/"
        self.http_only = True
        self._expires = self.original_max_age = None  # browser-session; set, so stored as null
        if options is not None and not isinstance(options, Mapping):
            raise TypeError("argument options must be a object (a mapping)")
        for key, value in (options or {}).items():
            if key not in _OPTIONS:
                raise ValueError(f"unknown cookie option {key!r}; known options: {', '.join(_OPTIONS)}")
            setattr(self, key, value)
        if self.original_max_age is None:
            self.original_max_age = self.max_age

    @property
    def expires(self) -> datetime | None:
        """When the browser should drop the cookie, or None for a browser-session cookie."""
        return None if self._expires is None else _EPOCH + timedelta(milliseconds=self._expires)

    @expires.setter
    def expires(self, when: datetime | None) -> None:
        if when is not None and not (isinstance(when, datetime) and when.tzinfo is not None):
            raise TypeError("expires must be a timezone-aware datetime (e.g. tzinfo=timezone.utc) or None")
        self._expires = None if when is None else (when - _EPOCH) // _ONE_MS
        self.original_max_age = self.max_age

    @property
    def max_age(self) -> int | None:
        """Milliseconds until expiry (can be negative), or None when there is no expiry."""
        return None if self._expires is None else self._expires - clock_ms(self._clock)

    @max_age.setter
    def max_age(self, ms: int | float | datetime | None) -> None:
        # Milliseconds from now; None: a browser-session cookie; a datetime, as express's Date (deprecated).
        if ms is None or isinstance(ms, datetime):
            if ms is not None:
                warnings.warn("maxAge as Date; pass number of milliseconds instead", DeprecationWarning, 2)
            self.expires = ms
            return
        if isinstance(ms, bool) or not isinstance(ms, (int, float)):
            raise TypeError("maxAge must be a number or Date (max_age: milliseconds or None)")
        if not math.isfinite(ms):
            raise ValueError(f"max_age must be a finite number of milliseconds, not {ms!r}")
        now = clock_ms(self._clock)
        expires_ms = math.trunc(now + ms)  # JS rule: a Date drops the fraction of a ms, toward zero
        if not _MIN_MS <= expires_ms <= _MAX_MS:
            # Difference: a JavaScript Date reaches the year 275760; Python's datetime stops at 9999.
            raise ValueError(f"max_age {ms!r} puts the expiry outside the years 1 to 9999")
        self._expires = expires_ms
        self.original_max_age = expires_ms - now  # one clock reading (express's two can differ by 1 ms)

    def restart(self) -> None:
        """max_age = original_max_age: the cookie's lifetime starts again."""
        if not _is_undefined(self, "original_max_age"):
            self.max_age = self.original_max_age
        else:  # JS rule: a cookie stored without originalMaxAge loses its expires too (section 11)
            vars(self).pop("_expires", None)

    def to_json(self) -> dict[str, Any]:
        """The stored form (express's ``cookie.data``): JSON names in express's order, unset ones left out."""
        data = {stored: getattr(self, name) for name, stored in _ATTRIBUTES.items()
                if not _is_undefined(self, name)}
        if self.expires is not None:  # in place, in express's key order; as Date.toISOString() writes it
            data["expires"] = self.expires.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, clock: Clock = time.time) -> Cookie:
        """Rebuild a cookie from its stored form (as express's ``store.createSession``)."""
        if not isinstance(data, Mapping):
            raise ValueError("the stored session's cookie is not an object")
        cookie = cls(clock=clock)
        for key, value in data.items():
            if key in _STORED_NAMES and key not in ("expires", "originalMaxAge"):
                setattr(cookie, _STORED_NAMES[key], value)
        _read_stored_expiry(cookie, data, clock)  # as JavaScript reads a stored date (section 11)
        return cookie

    def serialize(self, name: str, value: str) -> str:
        """The Set-Cookie value for this cookie (express's ``cookie.serialize``)."""
        return serialize_cookie(name, value, domain=self.domain, path=self.path, expires=self.expires,
                                http_only=bool(self.http_only), secure=self.secure, priority=self.priority,
                                partitioned=self.partitioned, same_site=self.same_site)


def clock_ms(clock: Clock) -> int:
    """The clock's time in whole milliseconds, as JavaScript's Date.now() counts."""
    return math.floor(clock() * 1000)


# ==== 7. Signing ============================================================
# The cookie carries the id signed, so that a client cannot name another visitor's session: "s:" + id +
# "." + base64(HMAC-SHA256(id, secret)) without "=", as cookie-signature 1.0.7 (the npm package express
# signs with) does. Signed, not encrypted: anyone can read the id, nobody can make one up without the secret.
def unsign_any(signed: str, secrets: list[bytes] | list[str]) -> str | None:
    """Try each secret in order; the first that verifies wins (express's ``unsigncookie``)."""
    for secret in secrets:
        value = unsign(signed, secret)
        if value is not None:
            return value
    return None


def unsign(signed: str, secret: str | bytes) -> str | None:
    """The value before the last '.' if its signature is right, else None (cookie-signature's ``unsign``)."""
    if not isinstance(signed, str):
        raise TypeError("Signed cookie string must be provided.")
    value = signed[: signed.rfind(".")]
    try:
        expected = sign(value, secret)
    except UnicodeEncodeError:
        return None  # a lone surrogate cannot have been signed
    # Compared in constant time, as bytes: compare_digest refuses a str that is not ASCII.
    if hmac.compare_digest(expected.encode("utf-8"), signed.encode("utf-8", "surrogatepass")):
        return value
    return None


def sign(value: str, secret: str | bytes) -> str:
    """``value + '.' + base64(HMAC-SHA256(value))`` without '=' padding (cookie-signature's ``sign``)."""
    if not isinstance(value, str):
        raise TypeError("Cookie value must be provided as a string.")
    mac = hmac.new(_key(secret), value.encode("utf-8"), hashlib.sha256).digest()
    return value + "." + base64.b64encode(mac).decode("ascii").rstrip("=")


def _key(secret: str | bytes) -> bytes:
    """A secret's HMAC key, a str as UTF-8. Difference: a lone surrogate raises (Node signs with U+FFFD)."""
    if isinstance(secret, str):
        return secret.encode("utf-8")
    if isinstance(secret, (bytes, bytearray)):
        return bytes(secret)
    raise TypeError("Secret key must be provided.")


# ==== 8. The Cookie header ==================================================
# Reading "Cookie: a=1; connect.sid=s%3A..." and writing "Set-Cookie: ..." by the rules of the cookie
# package 0.7.2 that express uses (http.cookies follows others). The patterns are used with fullmatch
# ("$" would let "sid\n" through) and ASCII only (no Unicode look-alike of a letter matches).
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_VALUE = re.compile(r'("?)[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*\1')
_COOKIE_DOMAIN = re.compile(r"([.]?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)"
                            r"([.][a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", re.IGNORECASE | re.ASCII)
_COOKIE_PATH = re.compile(r"[\x20-\x3A\x3D-\x7E]*")


def parse_cookie_header(header: str) -> dict[str, str]:
    """A Cookie header as a dict (cookie 0.7.2's ``parse``). Difference: ``__proto__`` is a plain name."""
    if not isinstance(header, str):
        raise TypeError("argument str must be a string")
    cookies: dict[str, str] = {}
    if len(header) < 2:
        return cookies
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip(" \t")  # spaces and tabs only
        if not eq or name in cookies:
            continue  # no '=': skipped; the first of a name wins
        value = value.strip(" \t")
        if value[:1] == '"' and value[-1:] == '"':
            value = value[1:-1]  # one pair of quotes; a lone '"' becomes ''
        if "%" in value:
            try:
                value = decode_uri_component(value)
            except ValueError:
                pass  # kept raw if decoding fails
        cookies[name] = value
    return cookies


def serialize_cookie(name: str, value: str, *, domain: str | None = None, path: str | None = None,
                     expires: datetime | None = None, http_only: bool = False,
                     secure: bool | str | None = False, partitioned: bool | None = False,
                     priority: str | None = None, same_site: bool | str | None = None) -> str:
    """A Set-Cookie value (cookie 0.7.2's ``serialize``); a part that could add an attribute: ValueError."""
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
    for flag, attribute in ((http_only, "HttpOnly"), (secure, "Secure"), (partitioned, "Partitioned")):
        if flag:
            parts.append(attribute)
    if priority:
        parts.append("Priority=" + _attribute_value("priority", priority, ("Low", "Medium", "High")))
    if same_site:
        same_site = "strict" if same_site is True else same_site
        parts.append("SameSite=" + _attribute_value("sameSite", same_site, ("Lax", "Strict", "None")))
    return "; ".join(parts)


def _attribute_value(option: str, value: object, words: tuple[str, ...]) -> str:
    """One of the ``words``, given in any letter case; anything else is a ValueError."""
    for word in words:
        if isinstance(value, str) and value.lower() == word.lower():
            return word
    raise ValueError(f"option {option} is invalid: {value!r}")


# ==== 9. Stores =============================================================
# A store keeps sessions on the server, keyed by id, in their stored form: {"cookie": {...}, ...data}, as
# JSON (never pickle: unpickling can run code). express's stores take callbacks; ours return or raise.
class Store:
    """express-session's ``Store``: get, set, destroy; optionally touch, all, length, clear. An error is a 500
    (get's FileNotFoundError: not found); a hung call holds its request: give your client a timeout."""
    ready: bool = True  # False (say, disconnected): requests run without sessions until it is back

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return the stored session with this id, or None."""
        raise NotImplementedError

    def set(self, sid: str, session: Session) -> None:
        """Store the session (insert or replace). It receives the live Session, which goes on changing: keep
        ``session.to_json()`` (a plain dict; ``session_json`` gives its JSON text too), which get returns."""
        raise NotImplementedError

    def destroy(self, sid: str) -> None:
        """Forget the session with this id (no error if there is none)."""
        raise NotImplementedError


class MemoryStore(Store):
    """Sessions as JSON in a dict (``MemoryStore``), thread-safe; as in express, expired ones go when read."""
    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.sessions: dict[str, str] = {}

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._lookup(sid)

    def set(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        _, text = session_json(session)
        with self._lock:
            self.sessions[sid] = text

    def destroy(self, sid: str) -> None:
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
            found = {sid: self._lookup(sid) for sid in list(self.sessions)}
        return {sid: session for sid, session in found.items() if session is not None}

    def length(self) -> int:
        return len(self.all())

    def clear(self) -> None:
        with self._lock:
            self.sessions = {}

    def _lookup(self, sid: str) -> dict[str, Any] | None:
        """Parse one entry; delete it and return None if its cookie has expired. Hold the lock."""
        text = self.sessions.get(sid)
        if text is None:
            return None
        session: dict[str, Any] | None = parse_json(text)
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
    return session.cookie.to_json() if isinstance(session, Session) else session["cookie"]


def expiry_ms(data: Mapping[str, Any]) -> int | None:
    """When a stored session expires (ms since the epoch), as MemoryStore reads its cookie; None: never."""
    cookie = data.get("cookie")
    if not isinstance(cookie, Mapping) or not cookie.get("expires"):
        return None
    return _expiry_from_stored(cookie["expires"])


def stringify(data: Any) -> str:
    """Compact JSON as JavaScript's JSON.stringify writes it (NaN as null, a datetime as ISO: section 11)."""
    try:
        return _compact_json(data)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise  # a circular structure, say
        return stringify(_finite(data))


# ==== 10. http.server =======================================================
# The adapter for Python's http.server: subclass SessionRequestHandler, write do_GET as usual, use
# self.session. The response is held until end() has run, so a failed save can still be a 500. For
# sessions, read _handle_with_session (begin, the handler, end) and end_headers (Set-Cookie); the rest is
# http.server plumbing. A server a network can reach needs session_demo_extras.frontend's guards.
class _HeldResponse:
    """The handler's wfile, held back: a small response goes out in one write when the request ends; a
    large one all but its last byte, so the client never sees the end before the store has answered."""
    def __init__(self, wfile: Any) -> None:  # the handler's wfile: anything with write and flush
        self._wfile = wfile
        self._held = bytearray()
        self.passed = False  # some of it is out: a 500 can no longer take its place

    def write(self, data: bytes) -> int:
        """Hold ``data``; past 64 KB, pass it on, but for the last byte."""
        self._held += data
        if len(self._held) > 64 * 1024:
            self.flush()
        return len(data)

    def flush(self) -> None:
        """The handler asks for its bytes to go out: all of them but the last one do."""
        if len(self._held) > 1:
            self._wfile.write(self._held[:-1])
            del self._held[:-1]
            self.passed = True

    def release(self) -> None:
        if self._held:
            self._wfile.write(bytes(self._held))
            self._held.clear()
        self._wfile.flush()


class SessionRequestHandler(BaseHTTPRequestHandler):
    """A BaseHTTPRequestHandler whose do_* methods see self.session; a handler or store failure is a 500."""
    _CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)  # normal: logged at debug
    server: SessionHTTPServer
    session_state: RequestState | None = None
    _headers_sent: bool = False  # the final (non-1xx) header block is out
    _cache_control_set: bool = False  # the handler sent Cache-Control: end_headers adds none
    _vary: list[str]  # the handler's Vary values, merged with Cookie in end_headers
    _status: int = 200

    @property
    def session(self) -> Session | None:
        """This request's session (express's ``req.session``); ``self.session = None`` unsets it."""
        return self.session_state.session if self.session_state else None

    @session.setter
    def session(self, value: Session | None) -> None:
        if self.session_state is None:
            raise RuntimeError("this request has no session to replace")
        if value is not None and not isinstance(value, Session):
            raise TypeError("self.session can only be set to None (to unset it) or a Session")
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
        """The target as sent (express's ``req.originalUrl``); http.server's self.path makes '//' '/'."""
        words = self.requestline.split()
        return words[1] if len(words) >= 2 else self.path

    def request_info(self) -> RequestInfo:
        """Describe this request for the session layer."""
        cookie_lines = self.headers.get_all("Cookie") or []
        proto_lines = self.headers.get_all("X-Forwarded-Proto") or []
        return RequestInfo(url=self.request_target(), tls=isinstance(self.connection, ssl.SSLSocket),
                           cookie_header="; ".join(cookie_lines) if cookie_lines else None,
                           forwarded_proto=", ".join(proto_lines) if proto_lines else None)

    def handle_one_request(self) -> None:
        """BaseHTTPRequestHandler's, with the session around ``do_*``."""
        self.session_state = None
        self._headers_sent = self._cache_control_set = False
        self._vary = []
        self.requestline = self.request_version = self.command = ""
        self.raw_requestline = b""  # stays empty if the read fails
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
        elif not self.raw_requestline:  # the client closed the connection
            self.close_connection = True
        elif self.parse_request():
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
            else:
                self._handle_with_session(method)

    def _handle_with_session(self, method: Callable[[], None]) -> None:
        """begin; the handler, its response held back; end; then the held response, or a 500 in its place."""
        middleware = self.server.session_middleware
        try:  # begin: load or create the session
            self.session_state = middleware.begin(self.request_info())
        except Exception as exc:  # the store failed, or genid did
            _log.error("could not load the session: %s", exc)
            error = exc if isinstance(exc, SessionLoadError) else SessionLoadError()
            self.send_error(error.status, None, error.advice)
            return
        real_wfile = self.wfile
        held = self.wfile = _HeldResponse(real_wfile)  # type: ignore[assignment]
        failed = ""  # why the held answer cannot go out, if it cannot
        try:
            method()
        except Exception as exc:
            log = _log.debug if isinstance(exc, self._CLIENT_GONE) else _log.exception
            log("the handler for %s %r failed", self.command, self.path, exc_info=True)
            self.close_connection = True
            if self._headers_sent:
                failed = "The request failed"  # its held answer may be half-written
            else:
                self._headers_buffer: list[bytes] = []  # headers the handler began: not glued onto the 500
                self.send_error(500)
        except BaseException:
            failed = "The request failed"  # SystemExit, KeyboardInterrupt: no half answer goes out
            raise
        finally:  # end: the store operation, before the last byte is released
            self.wfile = real_wfile
            state = self.session_state
            try:
                if state is not None:
                    middleware.end(state)
            except Exception:  # end() logged it
                failed = "The session could not be saved"
            if state is not None and state.end_error is not None:
                failed = "The session could not be saved"  # or in an end() the handler ran early (server.py)
            # No silent loss: a 500 in place of the held answer (or, if part of it is out, no last byte).
            if failed:
                self.close_connection = True
                if not held.passed:
                    self.session_state = None  # no Set-Cookie for a session that may not be stored
                    self._headers_sent = False
                    self._headers_buffer = []
                    self.send_error(500, None, failed + "; the server log says why")
            else:
                held.release()

    def send_header(self, keyword: str, value: str) -> None:
        """Send a header; the handler's Vary is held, to be merged with the session's in end_headers."""
        name = keyword.lower()
        if name == "vary" and self.session_state is not None:
            self._vary.append(value)
            return
        self._cache_control_set |= name == "cache-control"
        super().send_header(keyword, value)

    def send_response_only(self, code: int, message: str | None = None) -> None:
        """Start a response, noting its status: an interim (1xx) one carries no session headers."""
        self._status = code
        super().send_response_only(code, message)

    def end_headers(self) -> None:
        """Add the session's headers (as the headers go out), then end the header block."""
        if self.session_state is not None and not self._headers_sent and self._status >= 200:
            header = self.server.session_middleware.set_cookie_header(self.session_state)
            if header is not None:
                self.send_header("Set-Cookie", header)
                if not self._cache_control_set:  # shared caches: a response that sets the cookie is private
                    self.send_header("Cache-Control", "private")
            # Shared caches: the answer depends on the Cookie header, so it must not go to another visitor.
            vary = [word.strip() for value in self._vary for word in value.split(",") if word.strip()]
            if not {word.lower() for word in vary} & {"cookie", "*"}:
                vary.append("Cookie")
            super().send_header("Vary", ", ".join(vary))
        self._headers_sent = self._headers_sent or self._status >= 200  # an interim 1xx is not the answer
        super().end_headers()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header from the middleware's clock, so that Expires and Date agree."""
        if timestamp is None:
            timestamp = self.server.session_middleware.options.clock()
        return super().date_time_string(timestamp)


class SessionHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a SessionMiddleware: ``SessionHTTPServer(address, Handler, middleware)``."""
    def __init__(self, address: tuple[str, int], handler: type[SessionRequestHandler],
                 middleware: SessionMiddleware) -> None:
        self.session_middleware = middleware
        super().__init__(address, handler)


# ==== 11. JavaScript details, for fidelity: skip them on a first read ========
# express-session runs on JavaScript, whose values follow rules Python's do not. Where the difference
# would show (which answer from a store counts as a session, which keys a session may hold, how a stored
# date or a NaN reads), the rule is copied here; each use above says in one line which rule it copies.
def _found(data: Any) -> bool:
    """Does a store's answer count as a session? JavaScript's truthiness: None, False, '', 0, NaN do not."""
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return data != 0 and not math.isnan(data)
    return data is not None and data is not False and data != ""


# express keeps a session's data and methods on one object, so a stored key named like one of its methods,
# or like what every JavaScript object inherits, is dropped when a session is loaded.
_RESERVED_KEYS = frozenset({
    "id", "req", "save", "reload", "regenerate", "destroy", "touch", "resetMaxAge", "constructor",
    "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString", "toString", "valueOf",
    "__proto__", "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__",
})


def _is_undefined(cookie: Cookie, name: str) -> bool:
    """JS undefined vs null: an attribute never set (or deleted) reads None, but to_json() leaves it out."""
    return name not in vars(cookie)


def _read_stored_expiry(cookie: Cookie, data: Mapping[str, Any], clock: Clock) -> None:
    """A rebuilt cookie's _expires and original_max_age, as express reads them: keys in order (a maxAge, which
    only another program writes, counts from now), then an expires string wins; no originalMaxAge stays
    undefined. Difference, so odd data never fails every request: a bad expires or originalMaxAge is None."""
    for key, value in data.items():
        if key == "expires" and not isinstance(value, str):
            cookie._expires = _expiry_from_stored(value)
        elif key == "maxAge" and value is None:
            cookie._expires = None
        elif key == "maxAge" and isinstance(value, (int, float)):
            cookie._expires = _expiry_from_stored(clock_ms(clock) + value)
    if isinstance(data.get("expires"), str):
        cookie._expires = _expiry_from_stored(data["expires"])
    if "originalMaxAge" not in data:
        del cookie.original_max_age  # undefined, not null
        return
    original = data["originalMaxAge"]
    usable = (isinstance(original, (int, float)) and not isinstance(original, bool)
              and math.isfinite(original) and _MIN_MS <= clock_ms(clock) + original <= _MAX_MS)
    cookie.original_max_age = original if usable else None


def _expiry_from_stored(value: Any) -> int | None:
    """A stored ``expires`` as ms since the epoch, read as a JavaScript Date would read it (an ISO or HTTP
    date, a number, a datetime), or None. Difference: an ISO date without a zone is UTC, not local time."""
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


def _js_value(value: Any) -> Any:
    """What JSON.stringify writes for a value json cannot: a datetime's ISO string, or an error."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    raise TypeError(f"a session can hold only what JSON can (str, numbers, bool, None, lists and dicts "
                    f"with str keys, datetime), not {type(value).__name__}: {value!r:.60}")


# stringify's encoder, made once (json.dumps with these arguments would build one per call).
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                 default=_js_value).encode


def _finite(data: Any) -> Any:
    """A copy of ``data`` with every NaN and infinity replaced by None."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def parse_json(text: str) -> Any:
    """Parse JSON text as JavaScript's JSON.parse does: NaN and Infinity are refused (ValueError)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    return json.JSONDecoder(parse_constant=refuse).decode(text)


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def encode_uri_component(text: str) -> str:
    """Percent-encode as JavaScript's encodeURIComponent (s:a+b gives s%3Aa%2Bb); a lone surrogate raises."""
    try:
        return urllib.parse.quote(text, safe="!*'()")  # quote also keeps letters, digits and "-_.~"
    except UnicodeEncodeError as exc:
        raise ValueError(f"cannot percent-encode {text!r}: {exc.reason}") from None


def decode_uri_component(text: str) -> str:
    """Decode %XX escapes strictly, like decodeURIComponent: a bad escape or non-UTF-8 is a ValueError."""
    if _BAD_PERCENT.search(text):
        raise ValueError(f"malformed percent-escape in {text!r}")
    try:
        return urllib.parse.unquote_to_bytes(text).decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"percent-escapes in {text!r} are not UTF-8") from exc
