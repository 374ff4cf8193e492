"""Server-side sessions, the way express-session 1.19.0 does them, in one module.

This is a faithful, standard-library-only Python reimplementation of Node's
express-session middleware (version 1.19.0, with cookie 0.7.2 and
cookie-signature 1.0.7 underneath). It is small enough to read in an evening:
start at the top and follow a request through it. LESSONS.md walks the same
path with things to run.

    python3 server.py            # the view counter from express-session's README
    python3 -m unittest -v       # every behaviour, pinned down
    python3 session_demo.py      # a narrated tour of a few requests

The sections, in the order a request meets them (grep for "# ===="):

    1. Options              SessionOptions, session_middleware()
    2. Signing              sign(), unsign(), encode_uri_component()
    3. The Cookie header    parse_cookie_header(), serialize_cookie()
    4. The session cookie   Cookie
    5. The session          Session
    6. Stores               Store, MemoryStore
    7. Change detection     hash_session(), is_modified(), is_saved()
    8. Decisions            should_save(), should_touch(), should_set_cookie(),
                            should_destroy(), is_secure(), path_matches()
    9. Request lifecycle    RequestInfo, RequestState, SessionMiddleware
   10. http.server          SessionRequestHandler, SessionHTTPServer

Beyond express-session (sections a learner can skip; nothing in them
changes the default, faithful behaviour):

   11. No lost updates      concurrency='lock' | 'merge': LockPerSession,
                            MergeOnConflict
   12. WSGI                 SessionWSGIMiddleware
   13. More stores          BoundedMemoryStore (cannot leak or be flooded),
                            SQLiteStore (survives restarts, shared by processes)

What we do differently from express-session, on purpose (each is also in
LESSONS.md, "What we do differently"):

- Python names: options and attributes are snake_case (``save_uninitialized``,
  ``max_age``, ``http_only``); the stored JSON keeps express's camelCase
  (``originalMaxAge``, ``httpOnly``) so the two can share a store.
- A missing secret is an error when the middleware is built, not a 500 on
  every request; there is no ``req.secret`` fallback (cookie-parser) either.
- Bad options fail at construction: an invalid cookie ``name``, ``path``,
  ``domain``, ``priority`` or ``same_site``, an unknown cookie option, a
  non-finite ``max_age``. express-session notices most of these only when it
  first serializes a cookie. A cookie path may not hold a space, ',', '"'
  or '\\' (cookie 0.7.2 lets these through).
- An id from ``genid`` with a space, a control character, '"', ',', ';' or
  '\\' is refused (ValueError) before anything is stored.
- ``'auto'`` for ``secure``/``same_site`` is resolved when ``cookie`` is a
  callable too (express-session 1.19.0 silently skips it there).
- Store methods are synchronous and raise exceptions instead of taking
  callbacks; the session methods (``save()``, ``regenerate()``, ...) do too.
- Keys that express-session would drop when it loads a session (``id``,
  ``save``, ``toString``, ...) are refused when you set them, instead of
  vanishing on the next request.
- ``original_max_age`` is exactly the ``max_age`` you set: express reads
  the clock twice and can store 1999 for 2000.
- A stored ``expires`` without a time zone is read as UTC (JavaScript would
  read it in local time).
- Session ids are shortened in log lines: an id is a bearer token.
- Store errors while loading give a 500 whose body does not echo the
  error's text; the log has it.
- The http.server adapter holds the whole response until the store has
  answered (a large one: all but its last byte), and sends it in one write;
  express-session holds back only the last byte.
- Not ported: the undocumented ``key`` alias of ``name``, cookie-parser's
  ``req.cookies``/``req.signedCookies`` fallback, the NODE_ENV production
  warning, EventEmitter store events (a store's ``ready`` attribute stands
  in for 'connect'/'disconnect').
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import math
import os
import re
import secrets as _secrets
import socket
import ssl
import sqlite3
import sys
import threading
import time
import urllib.parse
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, TextIO
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    # 1. options
    "SessionOptions", "session_middleware", "generate_session_id",
    # 2. signing
    "sign", "unsign", "unsign_any", "encode_uri_component", "decode_uri_component",
    # 3. the Cookie header
    "parse_cookie_header", "serialize_cookie",
    # 4-6. cookie, session, stores
    "Cookie", "Session", "Store", "MemoryStore",
    # 7-8. change detection and decisions
    "hash_session", "is_modified", "is_saved", "Decision",
    "should_save", "should_touch", "should_set_cookie", "should_destroy",
    "is_secure", "request_pathname", "path_matches",
    # 9-10. lifecycle and http.server
    "RequestInfo", "RequestState", "SessionMiddleware", "SessionLoadError",
    "read_session_id", "SessionRequestHandler", "SessionHTTPServer",
    # 11. beyond express: concurrency
    "LastWriteWins", "LockPerSession", "MergeOnConflict", "SessionBusyError",
    # 12. beyond express: WSGI
    "SessionWSGIMiddleware",
    # 13. beyond express: stores
    "BoundedMemoryStore", "SQLiteStore", "StoreFullError",
    # the tour
    "tour",
]

EXPRESS_SESSION_VERSION = "1.19.0"

_log = logging.getLogger("session_demo")

Clock = Callable[[], float]
"""A clock returns the current time in seconds since the epoch, like time.time."""


class _short:
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


# ==== 1. Options ============================================================
#
# express-session reads its options once, in session(options), and throws
# on the few it validates. We read and validate them once too, in
# SessionOptions, and fail loudly here rather than on the first request.


def generate_session_id(request: RequestInfo) -> str:
    """Make a new session id: 24 random bytes as base64url, 32 characters.

    Mirrors express-session's default ``genid`` (uid-safe's ``uid(24)``):
    192 bits from the operating system's CSPRNG.
    """
    return _secrets.token_urlsafe(24)


class SessionOptions:
    """The validated options of one session middleware.

    Mirrors the option handling at the top of express-session's
    ``session(options)``, with snake_case names. Messages are express's
    where it has one. Differences: ``secret`` is required here; ``resave``
    and ``save_uninitialized`` left as None warn (DeprecationWarning, as
    express's depd does) and mean True; the cookie options are checked now.
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
        concurrency: str | None = None,
        lock_timeout: float = 10.0,
        merge_attempts: int = 3,
    ) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds, like time.time")
        self.clock: Clock = clock

        # genid: express throws if it is not a function.
        if genid is None:
            genid = generate_session_id
        if not callable(genid):
            raise TypeError("genid option must be a function")
        self.genid: Callable[[RequestInfo], Any] = genid

        # resave and save_uninitialized: express warns when they are left out
        # and then behaves as if they were true.
        if resave is None:
            warnings.warn("undefined resave option; provide resave option",
                          DeprecationWarning, stacklevel=3)
            resave = True
        if save_uninitialized is None:
            warnings.warn("undefined saveUninitialized option; provide saveUninitialized option",
                          DeprecationWarning, stacklevel=3)
            save_uninitialized = True
        self.resave: bool = bool(resave)
        self.save_uninitialized: bool = bool(save_uninitialized)
        self.rolling: bool = bool(rolling)

        # unset: 'keep' (the default) or 'destroy'.
        if unset and unset not in ("destroy", "keep"):
            raise TypeError('unset option must be "destroy" or "keep"')
        self.unset_destroy: bool = unset == "destroy"

        # proxy: True trusts X-Forwarded-Proto, False distrusts everything but
        # TLS, None defers to the framework's own idea of "secure".
        if proxy is not None and proxy is not True and proxy is not False:
            raise TypeError("proxy option must be True, False or None")
        self.proxy: bool | None = proxy

        self.secrets: list[bytes] = _secret_list(secret)

        # name: an empty name falls back to the default, as in express.
        self.name: str = name or "connect.sid"

        if cookie is None:
            cookie = {}
        if not callable(cookie) and not isinstance(cookie, Mapping):
            raise TypeError("cookie option must be a mapping or a callable returning one")
        self.cookie: Mapping[str, Any] | Callable[[RequestInfo], Mapping[str, Any]] = cookie
        if isinstance(cookie, Mapping):
            _check_cookie_options(self.name, cookie, clock)
        elif not _COOKIE_NAME.fullmatch(self.name):
            raise ValueError(f"argument name is invalid: {self.name!r} is not a cookie name")

        if store is None:
            store = MemoryStore(clock=clock)
        for method in ("get", "set", "destroy"):
            if not callable(getattr(store, method, None)):
                raise TypeError(f"store must implement {method}()")
        self.store: Store = store
        # express decides once, at construction, whether the store can touch.
        self.store_implements_touch: bool = callable(getattr(store, "touch", None))

        # Not in express: what to do about two requests changing one session
        # at once (section 11). None is express's behaviour: the last write wins.
        if concurrency not in (None, "lock", "merge"):
            raise ValueError('concurrency option must be None, "lock" or "merge"')
        if concurrency == "merge" and not (callable(getattr(store, "get_versioned", None))
                                           and callable(getattr(store, "set_if_version", None))):
            raise TypeError('concurrency="merge" needs a store with versions '
                            "(get_versioned and set_if_version), e.g. BoundedMemoryStore or SQLiteStore")
        if not (isinstance(lock_timeout, (int, float)) and lock_timeout >= 0):
            raise ValueError("lock_timeout must be a number of seconds >= 0")
        if not (isinstance(merge_attempts, int) and merge_attempts >= 1):
            raise ValueError("merge_attempts must be a whole number >= 1")
        self.concurrency: str | None = concurrency
        self.lock_timeout: float = float(lock_timeout)
        self.merge_attempts: int = merge_attempts

    def cookie_options_for(self, request: RequestInfo) -> Mapping[str, Any]:
        """The cookie options for this request: the mapping, or what the callable returns."""
        if callable(self.cookie):
            options = self.cookie(request)
            if not isinstance(options, Mapping):
                raise TypeError("the cookie option callable must return a mapping")
            return options
        return self.cookie


def _secret_list(secret: object) -> list[bytes]:
    """Turn the ``secret`` option into a list of keys: the first signs, all verify.

    A plain string is one secret (never a list of characters). A missing or
    empty secret is an error here, where express only warns and then fails
    every request with "secret option required for sessions".
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
        if isinstance(item, str) and item:
            keys.append(item.encode("utf-8"))
        elif isinstance(item, (bytes, bytearray)) and item:
            keys.append(bytes(item))
        else:
            raise TypeError(f"each secret must be a non-empty str or bytes, not {item!r}")
    return keys


def _check_cookie_options(name: str, options: Mapping[str, Any], clock: Clock) -> None:
    """Build and serialize a probe cookie so that a bad option fails now, not per request.

    Difference: a path with a space, ',', '"' or '\\' is refused too. cookie
    0.7.2 lets them through; they cannot split the header, but no sensible
    cookie path holds them, and a browser may read them differently.
    """
    path = options.get("path")
    if isinstance(path, str) and _UNUSUAL_PATH_CHARACTER.search(path):
        raise ValueError(f"option path is invalid: {path!r} (no spaces, ',', '\"' or '\\')")
    probe = Cookie(options, clock=clock)
    if probe.secure == "auto":
        probe.secure = True
    if isinstance(probe.same_site, str) and probe.same_site == "auto":
        probe.same_site = "lax"
    probe.serialize(name, "probe")


_UNUSUAL_PATH_CHARACTER = re.compile(r'[ ,"\\]')


def session_middleware(**options: Any) -> SessionMiddleware:
    """Build the session middleware: the counterpart of express's ``session(options)``.

    Takes the keyword options of SessionOptions, for example
    ``session_middleware(secret='keyboard cat', resave=False, save_uninitialized=True)``.
    """
    return SessionMiddleware(SessionOptions(**options))


# ==== 2. Signing ============================================================
#
# The cookie carries only the session id, signed so that a client cannot
# pick someone else's id: "s:" + id + "." + base64(HMAC-SHA256(id, secret))
# without the "=" padding, as cookie-signature 1.0.7 makes it. The cookie is
# signed, not encrypted: anyone can read the id.


def _key(secret: str | bytes) -> bytes:
    """The HMAC key for a secret: a str is used as its UTF-8 bytes, as Node does."""
    if isinstance(secret, str):
        return secret.encode("utf-8")
    if isinstance(secret, (bytes, bytearray)):
        return bytes(secret)
    raise TypeError("Secret key must be provided.")


@functools.lru_cache(maxsize=32)
def _keyed_hmac(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with ``key``; sign() copies it instead of keying again."""
    return hmac.new(key, digestmod=hashlib.sha256)


def sign(value: str, secret: str | bytes) -> str:
    """Sign ``value``: ``value + '.' + base64(HMAC-SHA256(value))`` without '=' padding.

    Mirrors cookie-signature's ``sign``: standard base64 (with + and /), the
    HMAC is over the UTF-8 bytes of the value only.
    """
    if not isinstance(value, str):
        raise TypeError("Cookie value must be provided as a string.")
    mac = _keyed_hmac(_key(secret)).copy()
    mac.update(value.encode("utf-8"))
    signature = mac.digest()
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


_URI_COMPONENT_SAFE = "-_.!~*'()"
_ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9\-_.!~*'()]")  # what encodeURIComponent escapes, in ASCII


def _percent_escape(match: re.Match[str]) -> str:
    """'%3A' for ':': one ASCII character as encodeURIComponent writes it."""
    return f"%{ord(match.group()):02X}"


def encode_uri_component(text: str) -> str:
    """Percent-encode like JavaScript's ``encodeURIComponent``.

    Letters, digits and ``-_.!~*'()`` stay; everything else becomes UTF-8
    %XX escapes. So ``s:abc.x+y/z`` becomes ``s%3Aabc.x%2By%2Fz``. A lone
    surrogate raises ValueError, as JavaScript's raises URIError.
    """
    if text.isascii():
        return _ASCII_UNSAFE.sub(_percent_escape, text)  # same result as quote(), faster
    try:
        return urllib.parse.quote(text, safe=_URI_COMPONENT_SAFE, encoding="utf-8", errors="strict")
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


# ==== 3. The Cookie header ==================================================
#
# Reading "Cookie: a=1; connect.sid=s%3A..." and writing "Set-Cookie: ..."
# the way the `cookie` package 0.7.2 does. We do not use http.cookies: its
# parser follows different rules from express's (and has had quadratic-time
# bugs on the Python versions we support).

# Used with fullmatch: in a Python pattern "$" also matches before a final
# newline, which would let "sid\n" through and split the header.
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_COOKIE_VALUE = re.compile(r'^("?)[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*\1$')
_COOKIE_DOMAIN = re.compile(
    r"^([.]?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)([.][a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
    re.IGNORECASE,
)
_COOKIE_PATH = re.compile(r"^[\x20-\x3A\x3D-\x7E]*$")


def parse_cookie_header(header: str, only: str | None = None) -> dict[str, str]:
    """Parse a Cookie header into a dict, with the rules of cookie 0.7.2's ``parse``.

    - Pairs are separated by ';'; a segment without '=' is skipped.
    - Names and values are trimmed of spaces and tabs only.
    - The first occurrence of a name wins; names are case-sensitive.
    - One pair of surrounding double quotes is removed from a value.
    - A value containing '%' is percent-decoded strictly; if that fails
      the raw value is kept.

    It makes one pass over the header: linear time, whatever the input.
    With ``only``, the one cookie wanted, it stops at that cookie's first
    occurrence and decodes nothing else (the answer for it is the same).
    """
    if not isinstance(header, str):
        raise TypeError("argument str must be a string")
    cookies: dict[str, str] = {}
    length = len(header)
    if length < 2:
        return cookies
    index = 0
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
        key = header[index:eq].strip(" \t")  # spaces and tabs only, as cookie 0.7.2 trims
        if key not in cookies and (only is None or key == only):
            value = header[eq + 1:end].strip(" \t")
            if value[:1] == '"' and value[-1:] == '"':
                value = value[1:-1]  # one pair of quotes; a lone '"' becomes ''
            cookies[key] = _try_decode(value)
            if only is not None:
                break  # the first occurrence wins; the rest cannot change the answer
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


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _http_date(when: datetime) -> str:
    """Format a moment like JavaScript's ``Date.toUTCString()``: ``Thu, 01 Jan 1970 00:00:00 GMT``."""
    t = when.astimezone(timezone.utc)
    return (f"{_WEEKDAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT")


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
    Priority, SameSite. ``Max-Age`` is never written: express-session does
    not pass it. The name, value, domain and path are checked against the
    strict RFC 6265 / RFC 7230 patterns (the CVE-2024-47764 fix): an invalid
    one raises ValueError, so no attribute or header can be smuggled in.
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
    if expires is not None:
        if not isinstance(expires, datetime):
            raise ValueError(f"option expires is invalid: {expires!r}")
        parts.append("Expires=" + _http_date(expires))
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    if partitioned:
        parts.append("Partitioned")
    if priority:
        parts.append("Priority=" + _priority_attribute(priority))
    if same_site:
        parts.append("SameSite=" + _same_site_attribute(same_site))
    return "; ".join(parts)


def _priority_attribute(priority: object) -> str:
    """'low'/'medium'/'high' in any case, as written in the header."""
    names = {"low": "Low", "medium": "Medium", "high": "High"}
    if isinstance(priority, str) and priority.lower() in names:
        return names[priority.lower()]
    raise ValueError(f"option priority is invalid: {priority!r}")


def _same_site_attribute(same_site: object) -> str:
    """True means Strict; 'lax'/'strict'/'none' in any case. Anything else (even 'auto') is an error."""
    if same_site is True:
        return "Strict"
    names = {"lax": "Lax", "strict": "Strict", "none": "None"}
    if isinstance(same_site, str) and same_site.lower() in names:
        return names[same_site.lower()]
    raise ValueError(f"option sameSite is invalid: {same_site!r}")


# ==== 4. The session cookie =================================================
#
# Cookie mirrors express-session's session/cookie.js: the attributes of the
# Set-Cookie header, plus the expiry bookkeeping. max_age is in milliseconds,
# as in express, and it is never stored: setting it sets `expires` (and
# `original_max_age`, the lifetime that touch() gives the session again).

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS
_MIN_MS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS


def _ms_to_datetime(ms: int) -> datetime:
    """A whole number of milliseconds since the epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)


def _datetime_to_ms(when: datetime) -> int:
    """An aware datetime as whole milliseconds since the epoch (JavaScript Date precision)."""
    return (when - _EPOCH) // _ONE_MS


def _now_ms(clock: Clock) -> int:
    """The clock's time in whole milliseconds, as JavaScript's Date.now() counts."""
    return math.floor(clock() * 1000)


def _parse_iso(text: str) -> datetime:
    """A stored ISO date as an aware datetime; one without a time zone is read as UTC.

    Raises ValueError if it is not a date.
    """
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def _iso(ms: int) -> str:
    """JavaScript's ``Date.toISOString()``: ``2026-11-29T03:02:30.942Z``."""
    t = _ms_to_datetime(ms)
    return (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T"
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{ms % 1000:03d}Z")


_COOKIE_OPTIONS = ("path", "domain", "http_only", "secure", "same_site", "partitioned",
                   "priority", "max_age", "expires", "original_max_age")


class Cookie:
    """The session cookie's settings and expiry (express-session's ``Cookie``).

    Defaults, as upstream: ``path='/'``, ``http_only=True``, no expiry (a
    browser-session cookie), ``secure``/``same_site``/``domain``/``priority``/
    ``partitioned`` unset (None). Options are applied in their mapping order,
    so when both ``expires`` and ``max_age`` are given the later one wins.

    Difference: an unknown option raises ValueError (express keeps it as an
    ignored property, so a typo passes silently).
    """

    def __init__(self, options: Mapping[str, Any] | None = None, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._expires_ms: int | None = None
        self.original_max_age: int | None = None
        self.path: str | None = "/"
        self.max_age = None
        self.http_only: bool | None = True
        self.domain: str | None = None
        self.secure: bool | str | None = None
        self.same_site: bool | str | None = None
        self.partitioned: bool | None = None
        self.priority: str | None = None
        if options is not None:
            if not isinstance(options, Mapping):
                raise TypeError("argument options must be a object (a mapping)")
            for key, value in options.items():
                if key not in _COOKIE_OPTIONS:
                    raise ValueError(f"unknown cookie option {key!r}; "
                                     f"known options: {', '.join(_COOKIE_OPTIONS)}")
                setattr(self, key, value)
        if self.original_max_age is None:
            self.original_max_age = self.max_age

    def _now_ms(self) -> int:
        return _now_ms(self._clock)

    @property
    def expires(self) -> datetime | None:
        """When the browser should drop the cookie, or None for a browser-session cookie."""
        if self._expires_ms is None:
            return None
        return _ms_to_datetime(self._expires_ms)

    @expires.setter
    def expires(self, when: datetime | None) -> None:
        # Setting expires also sets original_max_age to the time left.
        if when is None:
            self._expires_ms = None
            self.original_max_age = None
            return
        if not isinstance(when, datetime):
            raise TypeError("expires must be a datetime or None")
        if when.tzinfo is None:
            raise ValueError("expires must be timezone-aware, e.g. datetime(..., tzinfo=timezone.utc)")
        self._expires_ms = _datetime_to_ms(when)
        self.original_max_age = self._expires_ms - self._now_ms()

    @property
    def max_age(self) -> int | None:
        """Milliseconds until expiry (can be negative), or None when there is no expiry."""
        if self._expires_ms is None:
            return None
        return self._expires_ms - self._now_ms()

    @max_age.setter
    def max_age(self, ms: int | float | datetime | None) -> None:
        # A number of milliseconds from now; None for a browser-session cookie.
        # express also takes a Date here (deprecated); so do we.
        if ms is None:
            self.expires = None
            return
        if isinstance(ms, datetime):
            warnings.warn("maxAge as Date; pass number of milliseconds instead",
                          DeprecationWarning, stacklevel=2)
            self.expires = ms
            return
        if isinstance(ms, bool) or not isinstance(ms, (int, float)):
            raise TypeError("maxAge must be a number or Date (max_age: milliseconds or None)")
        if not math.isfinite(ms):
            raise ValueError(f"max_age must be a finite number of milliseconds, not {ms!r}")
        now = self._now_ms()
        expires_ms = now + int(ms)
        if not _MIN_MS <= expires_ms <= _MAX_MS:
            raise ValueError(f"max_age {ms!r} puts the expiry outside the years 1 to 9999")
        # One reading of the clock for both, so original_max_age is exactly ms
        # (express reads it twice and can come out 1 ms short).
        self._expires_ms = expires_ms
        self.original_max_age = int(ms)

    def to_json(self) -> dict[str, Any]:
        """The stored form (express's ``cookie.data`` / ``toJSON``), camelCase keys in express's order.

        Unset attributes are left out; ``originalMaxAge`` and ``expires`` are
        always there (null for a browser-session cookie); ``expires`` is an
        ISO string like ``2026-11-29T03:02:30.942Z``.
        """
        data: dict[str, Any] = {"originalMaxAge": self.original_max_age}
        if self.partitioned is not None:
            data["partitioned"] = self.partitioned
        if self.priority is not None:
            data["priority"] = self.priority
        data["expires"] = None if self._expires_ms is None else _iso(self._expires_ms)
        if self.secure is not None:
            data["secure"] = self.secure
        if self.http_only is not None:
            data["httpOnly"] = self.http_only
        if self.domain is not None:
            data["domain"] = self.domain
        if self.path is not None:
            data["path"] = self.path
        if self.same_site is not None:
            data["sameSite"] = self.same_site
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, clock: Clock = time.time) -> Cookie:
        """Rebuild a cookie from its stored form (express's ``store.createSession``).

        Stored keys override the defaults; ``expires`` is parsed from its
        ISO string (or taken as it is, if the store kept an aware datetime);
        ``originalMaxAge`` is restored as stored. A malformed
        stored cookie raises ValueError.
        """
        if not isinstance(data, Mapping):
            raise ValueError("the stored session's cookie is not an object")
        cookie = cls(clock=clock)
        stored_names = {"path": "path", "domain": "domain", "httpOnly": "http_only",
                        "secure": "secure", "sameSite": "same_site",
                        "partitioned": "partitioned", "priority": "priority"}
        for json_key, attribute in stored_names.items():
            if json_key in data:
                setattr(cookie, attribute, data[json_key])
        expires = data.get("expires")
        if isinstance(expires, datetime) and expires.tzinfo is not None:
            cookie.expires = expires  # a store that keeps real dates (express accepts a Date too)
        elif isinstance(expires, str):
            try:
                cookie.expires = _parse_iso(expires)
            except ValueError:
                raise ValueError(f"the stored cookie's expires is not a date: {expires!r}") from None
        elif expires is not None and expires is not False:
            raise ValueError(f"the stored cookie's expires is not a date: {expires!r}")
        original = data.get("originalMaxAge")
        if original is not None and (isinstance(original, bool) or not isinstance(original, (int, float))):
            raise ValueError(f"the stored cookie's originalMaxAge is not a number: {original!r}")
        cookie.original_max_age = None if original is None else int(original)
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


# ==== 5. The session ========================================================
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
    """

    def __init__(self, state: RequestState, session_id: Any, cookie: Cookie,
                 data: Mapping[str, Any] | None = None) -> None:
        self._state = state
        self._id = session_id
        self.cookie: Cookie = cookie
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

    # -- the data, as a mapping --

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
        return f"Session(id={_short(self._id)}, data={self._data!r})"

    def to_json(self) -> dict[str, Any]:
        """The stored form: ``{"cookie": {...}, ...data}``, as ``JSON.stringify(req.session)``."""
        return {"cookie": self.cookie.to_json(), **self._data}

    # -- the methods --

    def touch(self) -> Session:
        """Restart the cookie's lifetime; the store is not called (express's ``touch``)."""
        return self.reset_max_age()

    def reset_max_age(self) -> Session:
        """Set ``max_age`` back to ``original_max_age`` (express's ``resetMaxAge``)."""
        self.cookie.max_age = self.cookie.original_max_age
        return self

    def save(self) -> Session:
        """Write the session to the store now (express's ``save``).

        If nothing changes afterwards, the end of the request will not save
        it again.
        """
        _log.debug("saving %s", _short(self._id))
        self._state.saved_hash = hash_session(self)
        self._state.store.set(self._id, self)
        return self

    def reload(self) -> Session:
        """Load the session again from the store and return the new object (express's ``reload``).

        Changes made before reloading are lost. Raises LookupError
        ('failed to load session') if the store no longer has it.
        """
        data = self._state.store.get(self._id)
        if not _found(data):
            raise LookupError("failed to load session")
        return self._state.create_session(data)

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


# ==== 6. Stores =============================================================
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

    ``ready`` stands in for express's 'connect'/'disconnect' events: while
    it is False the middleware gives requests no session at all.
    """

    ready: bool = True

    def get(self, sid: str) -> dict[str, Any] | None:
        """Return the stored session with this id, or None."""
        raise NotImplementedError

    def set(self, sid: str, session: Session) -> None:
        """Store the session (insert or replace). Serialize ``session.to_json()``."""
        raise NotImplementedError

    def destroy(self, sid: str) -> None:
        """Forget the session with this id (no error if there is none)."""
        raise NotImplementedError


_strict_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _to_json(data: Any) -> str:
    """Compact JSON text, as JavaScript's JSON.stringify writes it.

    Like JSON.stringify, NaN and the infinities become null: Python would
    write NaN, which is not JSON and which no other reader would accept.
    """
    try:
        return _strict_json(data)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise  # a circular structure, say
        return _strict_json(_finite(data))


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


_from_json = json.JSONDecoder(parse_constant=_refuse_constant).decode
"""Parse JSON text as JavaScript's JSON.parse does: NaN and Infinity are refused (ValueError)."""


def _expiry_ms(data: Mapping[str, Any]) -> int | None:
    """When a stored session expires, in ms since the epoch: its cookie's ``expires``, or None (never).

    An ``expires`` that is not a date counts as "never", as in MemoryStore
    (and like an Invalid Date in JavaScript); one without a time zone is
    read as UTC.
    """
    cookie = data.get("cookie")
    if not isinstance(cookie, Mapping) or not isinstance(cookie.get("expires"), str):
        return None
    try:
        return _datetime_to_ms(_parse_iso(cookie["expires"]))
    except ValueError:
        return None


def _session_json(session: Session | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The stored form of a session and its JSON text (compact, as MemoryStore writes it)."""
    data = session.to_json() if isinstance(session, Session) else dict(session)
    return data, _to_json(data)


def _stored_cookie(session: Session | Mapping[str, Any]) -> Any:
    """The stored form of a session's cookie, for touch()."""
    if isinstance(session, Session):
        return session.cookie.to_json()
    return session["cookie"]


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

    def _lookup(self, sid: str) -> dict[str, Any] | None:
        """Parse one entry; delete it and return None if its cookie has expired. Hold the lock."""
        text = self.sessions.get(sid)
        if text is None:
            return None
        session = _from_json(text)
        expires_ms = _expiry_ms(session) if isinstance(session, dict) else None
        if expires_ms is not None and expires_ms <= _now_ms(self._clock):
            del self.sessions[sid]
            return None
        return session

    def get(self, sid: str) -> dict[str, Any] | None:
        """The stored session, or None if there is none or it has expired (and is now deleted)."""
        with self._lock:
            return self._lookup(sid)

    def set(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Store the session as JSON."""
        _, text = _session_json(session)
        with self._lock:
            self.sessions[sid] = text

    def destroy(self, sid: str) -> None:
        """Delete the session, if there is one."""
        with self._lock:
            self.sessions.pop(sid, None)

    def touch(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Replace the stored cookie (so its expiry) with the session's; the data is left alone."""
        cookie = _stored_cookie(session)
        with self._lock:
            current = self._lookup(sid)
            if current is not None:
                current["cookie"] = cookie
                self.sessions[sid] = _to_json(current)

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


# ==== 7. Change detection ===================================================
#
# express-session decides whether to save by hashing the session's data
# (everything but the top-level "cookie") when the request starts and again
# at the end. Different hash, or a different id: the session was modified.


def hash_session(data: Mapping[str, Any]) -> str:
    """SHA-1 of the session's data as compact JSON, without its top-level ``cookie`` key.

    Mirrors express-session's ``hash()``. Key order counts, as it does in
    JavaScript; a nested key called "cookie" counts too.
    """
    if isinstance(data, Session):
        plain = data._data  # a Session's data never holds the cookie
    else:
        plain = {key: value for key, value in data.items() if key != "cookie"}
    text = _to_json(plain)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


_EMPTY_HASH = hash_session({})  # the hash of a session with no data


def is_modified(state: RequestState, current_hash: str | None = None) -> bool:
    """The session's id or data differs from when the request started (express's ``isModified``).

    ``current_hash`` is the session's hash now, if the caller has it already.
    """
    session = state.session
    assert session is not None
    if state.original_id != session.id:
        return True
    return state.original_hash != (current_hash or hash_session(session))


def is_saved(state: RequestState, current_hash: str | None = None) -> bool:
    """The store already holds the session as it is now (express's ``isSaved``)."""
    session = state.session
    assert session is not None
    if state.original_id != session.id:
        return False
    return state.saved_hash == (current_hash or hash_session(session))


# ==== 8. Decisions ==========================================================
#
# The four questions express-session asks of every request, as small
# predicates with its names. Each returns a Decision: true or false, with
# the reason in words, so that --trace can say why.


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


def should_destroy(state: RequestState) -> Decision:
    """Destroy in the store when the handler unset the session and ``unset='destroy'`` (``shouldDestroy``)."""
    if not state.session_id:
        return Decision(False, "no session id")
    if not state.options.unset_destroy:
        return Decision(False, "unset='keep'")
    if state.session is not None:
        return Decision(False, "the session is still set")
    return Decision(True, "session unset and unset='destroy'")


def should_save(state: RequestState) -> Decision:
    """Save unless the store already has this exact session (express's ``shouldSave``).

    A new session with ``save_uninitialized=False`` is saved only if it
    was modified.
    """
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    new_session = state.cookie_id != state.session_id
    current = hash_session(state.session)  # hashed once, for both questions below
    if not state.options.save_uninitialized and state.saved_hash is None and new_session:
        # An uninitialized session: only worth keeping once it holds something.
        if is_modified(state, current):
            return Decision(True, "new session, modified")
        return Decision(False, "new session, unmodified, save_uninitialized=False")
    if is_saved(state, current):
        # Loaded unmodified with resave=False, or save() was called and nothing changed since.
        return Decision(False, "the store already holds it as it is")
    if new_session:
        return Decision(True, "new session")
    if is_modified(state, current):
        return Decision(True, "modified")
    return Decision(True, "unmodified, resave=True")


def should_touch(state: RequestState, save: Decision | None = None) -> Decision:
    """Refresh the store's expiry for a session the browser sent that needs no save (``shouldTouch``).

    ``save`` is should_save's answer, if the caller has it already (it is
    the same question; asking once saves hashing the session again).
    """
    if not isinstance(state.session_id, str):
        return Decision(False, f"session id is not a string: {state.session_id!r}")
    if state.cookie_id != state.session_id:
        return Decision(False, "not the session the browser sent")
    if save is None:
        save = should_save(state)
    if save:
        return Decision(False, "it is being saved")
    return Decision(True, "unmodified session the browser sent")


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


# ==== 9. Request lifecycle ==================================================
#
# express-session does its work at three moments of a request:
#   begin   - read the cookie, load or create the session   (the middleware)
#   headers - decide Set-Cookie                            (on-headers hook)
#   end     - save, touch or destroy in the store,         (wrapped res.end)
#             before the end of the response reaches the client
# SessionMiddleware has one method for each; RequestState is what it keeps
# between them.


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


class SessionLoadError(Exception):
    """The session could not be loaded (store failure or corrupt data): the request gets a 500."""


def _found(data: Any) -> bool:
    """Does a store's answer count as a session? JavaScript's truthiness: None, False, '', 0 do not; {} does."""
    if data is None or data is False or data == "":
        return False
    if isinstance(data, (int, float)) and (data == 0 or data != data):
        return False
    return True


def _guard_for(options: SessionOptions) -> LastWriteWins:
    """The load/save strategy for the ``concurrency`` option (None: express's own)."""
    if options.concurrency == "lock":
        return LockPerSession(options)
    if options.concurrency == "merge":
        return MergeOnConflict(options)
    return LastWriteWins()


def read_session_id(cookie_header: str | None, name: str, secrets: list[bytes]) -> str | None:
    """The session id from the request's cookie, if it is there and correctly signed (``getcookie``).

    Only the first cookie with this name counts. An unsigned value (no
    ``s:``) or a bad signature means no id: a new session, without asking
    the store.
    """
    if not cookie_header:
        return None
    raw = parse_cookie_header(cookie_header, only=name).get(name)
    if not raw:
        return None
    if not raw.startswith("s:"):
        _log.debug("cookie unsigned")
        return None
    session_id = unsign_any(raw[2:], secrets)
    if session_id is None:
        _log.debug("cookie signature invalid")
    return session_id


_NEW_ID: Any = object()  # new_session()'s default: ask genid for the id
_UNSAFE_ID_CHARACTER = re.compile(r'[\x00-\x20",;\\\x7f]')


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
        self.ended = False
        # Used only by the concurrency strategies of section 11.
        self.locked_id: str | None = None
        self.loaded_version: int = 0
        self.loaded_values: dict[str, str] = {}

    def generate_id(self) -> Any:
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

    def new_session(self, session_id: Any = _NEW_ID) -> Session:
        """Put a brand-new session on the request (express's ``store.generate``).

        A new id from ``genid`` (unless one is given), a cookie from the
        options, and ``'auto'`` for ``secure``/``same_site`` resolved
        against this request.
        """
        options = self.options
        self.session_id = self.generate_id() if session_id is _NEW_ID else session_id
        cookie_options = options.cookie_options_for(self.request)
        cookie = Cookie(cookie_options, clock=options.clock)
        secure = is_secure(self.request, options.proxy)
        if cookie_options.get("secure") == "auto":
            cookie.secure = secure
        if cookie_options.get("same_site") == "auto":
            cookie.same_site = "none" if secure else "lax"
        self.session = Session(self, self.session_id, cookie)
        return self.session

    def generate(self) -> None:
        """Start a new session and remember how it began (express's ``generate``).

        A new session holds no data yet, so its hash is always the hash of {}.
        """
        self.new_session()
        self.original_id = self.session_id
        self.original_hash = _EMPTY_HASH

    def create_session(self, data: Mapping[str, Any]) -> Session:
        """Build the request's session from stored data (express's ``store.createSession``)."""
        if not isinstance(data, Mapping):
            raise SessionLoadError(f"the store returned {type(data).__name__}, not a session object")
        if not isinstance(data.get("cookie"), Mapping):
            raise SessionLoadError("the stored session has no cookie")
        try:
            cookie = Cookie.from_json(data["cookie"], clock=self.options.clock)
        except (TypeError, ValueError) as exc:
            raise SessionLoadError(str(exc)) from exc
        self.session = Session(self, self.session_id, cookie, data)
        return self.session

    def inflate(self, data: Mapping[str, Any]) -> None:
        """Use the stored session and remember how it began (express's ``inflate``).

        With ``resave=False`` the store is known to hold exactly this, so
        it counts as saved already.
        """
        self.create_session(data)
        self.original_id = self.session_id
        self.original_hash = hash_session(data)
        if not self.options.resave:
            self.saved_hash = self.original_hash

    def regenerate(self) -> Session:
        """Destroy the session in the store and start a new one (express's ``store.regenerate``).

        As upstream, the bookkeeping is not reset, so a regenerated session
        always counts as modified (and is saved at the end).
        """
        new_id = self.generate_id()  # an unusable id fails before anything is destroyed
        try:
            self.store.destroy(self.session_id)
        finally:
            self.new_session(new_id)
        assert self.session is not None
        return self.session


class LastWriteWins:
    """How express-session loads and saves: each request loads the whole session and saves it whole.

    Two requests that change one session at the same time each save their
    own copy, and the later save wins: the other's change is lost. This is
    the default (``concurrency=None``). Section 11 has the alternatives,
    which replace the steps below.
    """

    def enter(self, state: RequestState) -> None:
        """Before loading: nothing to wait for."""

    def load(self, state: RequestState) -> Any:
        """Read the session from the store."""
        return state.store.get(state.session_id)

    def save(self, state: RequestState) -> None:
        """Write the whole session (``session.save()``)."""
        assert state.session is not None
        state.session.save()

    def leave(self, state: RequestState) -> None:
        """After the request: nothing to release."""


class SessionBusyError(Exception):
    """Another request holds this session's lock for too long (``concurrency='lock'``): answer 503."""


class SessionMiddleware:
    """The session layer for any server: begin, headers, end (express-session's middleware).

    A server adapter calls ``begin(request)`` before the handler runs,
    ``set_cookie_header(state)`` just before the response headers go out,
    and ``end(state)`` after the handler has finished but before the
    response's last bytes are released. If it abandons a request without
    calling ``end`` (the client went away), it calls ``release(state)``.
    """

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.guard: LastWriteWins = _guard_for(options)

    def begin(self, request: RequestInfo) -> RequestState | None:
        """Load the request's session, or make a new one; None when this request gets no session.

        Raises SessionLoadError when the store fails or returns something
        that is not a session: the request should end with a 500.
        """
        options = self.options
        store = options.store
        if not getattr(store, "ready", True):
            _log.debug("no session: store is disconnected")
            return None
        cookie_path = options.cookie_options_for(request).get("path")
        if not path_matches(request_pathname(request.url), cookie_path):
            _log.debug("no session: pathname mismatch (cookie path %r)", cookie_path or "/")
            return None

        state = RequestState(options, request)
        state.cookie_id = state.session_id = read_session_id(
            request.cookie_header, options.name, options.secrets)

        if not state.session_id:
            _log.debug("no SID sent, generating session")
            state.generate()
            return state

        self.guard.enter(state)  # with concurrency='lock': wait for this id's lock
        try:
            _log.debug("fetching %s", _short(state.session_id))
            data = self._load(state)
            if not _found(data):
                _log.debug("no session found; generating a new one")
                state.generate()
            else:
                _log.debug("session found")
                state.inflate(data)
        except BaseException:
            self.release(state)
            raise
        return state

    def _load(self, state: RequestState) -> Any:
        """Ask the store for the session; "not found" errors mean None, others a SessionLoadError."""
        try:
            return self.guard.load(state)
        except FileNotFoundError:
            return None  # express's ENOENT: not found
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise SessionLoadError(f"the session store failed: {exc!r}") from exc
        except Exception as exc:
            raise SessionLoadError(f"the session store failed: {exc!r}") from exc

    def set_cookie_header(self, state: RequestState) -> str | None:
        """Decide Set-Cookie as the headers go out; return its value, or None (the on-headers hook).

        A failure to build the cookie is logged and the response goes on
        without it, as express forwards it to the error handler after the fact.
        """
        options = self.options
        if state.session is None:
            _log.debug("set-cookie: no (no session)")
            return None
        try:
            decision = should_set_cookie(state)
            if not decision:
                _log.debug("set-cookie: no (%s)", decision.reason)
                return None
            if state.session.cookie.secure and not is_secure(state.request, options.proxy):
                _log.debug("set-cookie: no (secure cookie, but the request is not secure)")
                return None
            if not state.touched:
                state.session.touch()
                state.touched = True
            value = "s:" + sign(state.session_id, options.secrets[0])
            header = state.session.cookie.serialize(options.name, value)
        except Exception:
            _log.exception("set-cookie: failed; the response goes on without the cookie")
            return None
        _log.debug("set-cookie: yes (%s)", decision.reason)
        return header

    def end(self, state: RequestState) -> None:
        """Save, touch or destroy the session in the store (the wrapped ``res.end``).

        Call it before the end of the response reaches the client. Store
        errors are logged, never raised: the response still completes. A
        second call does nothing, as a second ``res.end`` does in express.
        """
        if state.ended:
            return
        state.ended = True
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
            if not state.touched:
                state.session.touch()
                state.touched = True
            save = should_save(state)
            if save:
                _log.debug("save: yes (%s)", save.reason)
                self.guard.save(state)
                return
            _log.debug("save: no (%s)", save.reason)
            if not options.store_implements_touch:
                _log.debug("touch: no (the store has no touch)")
                return
            touch = should_touch(state, save)
            if touch:
                _log.debug("touch: yes (%s)", touch.reason)
                store.touch(state.session_id, state.session)
            else:
                _log.debug("touch: no (%s)", touch.reason)
        except Exception:
            _log.exception("session store failed at the end of the request; the response completes")
        finally:
            self.release(state)

    def release(self, state: RequestState) -> None:
        """Let go of what ``begin`` took for this request (a lock); safe to call twice."""
        self.guard.leave(state)


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
        except SessionBusyError as exc:
            _log.warning("%s", exc)
            self.send_error(503, "Session Busy",
                            "Another request is using this session; try again")
            return
        except Exception as exc:
            _log.error("could not load the session: %s", exc)
            self.send_error(500, "Internal Server Error",
                            "The session could not be loaded; the server log says why")
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
            # end: the store operation, before the last byte is released.
            if self.session_state is not None:
                middleware.end(self.session_state)
        finally:
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


# ==== 11. Beyond express: no lost updates ====================================
#
# Everything above is express-session. From here on, the module adds what
# its users keep asking for; nothing here changes the default behaviour.
#
# Each request loads the whole session and, if it changed, saves it whole.
# Two requests for one session at the same time (two tabs, a page and its
# XHRs) both load the same copy; the later save wins and the other's change
# is lost (expressjs/session #361, #917). concurrency='lock' or 'merge'
# replaces the LastWriteWins steps of section 9.


class LockPerSession(LastWriteWins):
    """``concurrency='lock'``: requests with the same session id are served one at a time.

    From load to save, as PHP's file sessions do. The only strategy that
    keeps a read-modify-write of one key (a counter) exact. A lock per id in
    this process (threads); if the store also offers ``acquire``/``release``
    (SQLiteStore does), its lock is taken too, so that processes sharing the
    store wait for each other. Requests without a session id lock nothing.
    A request that waits longer than ``lock_timeout`` seconds gets a 503.
    """

    def __init__(self, options: SessionOptions) -> None:
        self.timeout = options.lock_timeout
        self.store = options.store
        self.store_locks = (callable(getattr(self.store, "acquire", None))
                            and callable(getattr(self.store, "release", None)))
        self._mutex = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}  # id -> (lock, requests using it)

    def _checkout(self, sid: str) -> threading.Lock:
        """The lock for this id, counting one more request that uses it."""
        with self._mutex:
            lock, users = self._locks.get(sid, (threading.Lock(), 0))
            self._locks[sid] = (lock, users + 1)
            return lock

    def _checkin(self, sid: str) -> None:
        """One request fewer uses this id's lock; forget the lock when none does."""
        with self._mutex:
            lock, users = self._locks[sid]
            if users == 1:
                del self._locks[sid]
            else:
                self._locks[sid] = (lock, users - 1)

    def enter(self, state: RequestState) -> None:
        """Wait (at most lock_timeout) for this session's lock; raise SessionBusyError if it stays taken."""
        sid = state.session_id
        deadline = time.monotonic() + self.timeout
        lock = self._checkout(sid)
        if not lock.acquire(timeout=self.timeout):
            self._checkin(sid)
            raise SessionBusyError(f"session {_short(sid)} stayed locked for {self.timeout} s")
        if self.store_locks:
            try:
                held = self.store.acquire(sid, max(0.0, deadline - time.monotonic()))
            except BaseException:
                lock.release()
                self._checkin(sid)
                raise
            if not held:
                lock.release()
                self._checkin(sid)
                raise SessionBusyError(f"session {_short(sid)} stayed locked in the store for {self.timeout} s")
        state.locked_id = sid

    def leave(self, state: RequestState) -> None:
        """Release the lock taken by enter(), if any (regenerate and destroy do not change which)."""
        sid, state.locked_id = state.locked_id, None
        if sid is None:
            return
        try:
            if self.store_locks:
                self.store.release(sid)
        finally:
            with self._mutex:
                lock, _ = self._locks[sid]
            lock.release()
            self._checkin(sid)


def _json_values(data: Mapping[str, Any]) -> dict[str, str]:
    """Each top-level data key (not the cookie) with its value as JSON text, to compare later."""
    return {key: json.dumps(value, sort_keys=True) for key, value in data.items() if key != "cookie"}


class MergeOnConflict(LastWriteWins):
    """``concurrency='merge'``: save with compare-and-set; on a conflict, re-apply this request's changes.

    The store must keep a version per session (``get_versioned``,
    ``set_if_version``). At the end of the request the session is saved
    only if the stored version is still the one loaded. If another request
    saved in between, the top-level keys this request set or deleted are
    applied to the fresh copy and the save is tried again, up to
    ``merge_attempts`` times; after that the error is logged and this
    request's changes are dropped. Cheaper than locking, and keeps
    concurrent changes to *different* keys; two requests incrementing the
    *same* key still lose one increment (use 'lock' for that).
    """

    def __init__(self, options: SessionOptions) -> None:
        self.store = options.store
        self.attempts = options.merge_attempts

    def load(self, state: RequestState) -> Any:
        """Read the session and remember its version and values."""
        data, version = self.store.get_versioned(state.session_id)
        state.loaded_version = version
        state.loaded_values = _json_values(data) if data else {}
        return data

    def save(self, state: RequestState) -> None:
        """Compare-and-set; on a conflict, merge this request's changes into the fresh copy and retry."""
        session = state.session
        assert session is not None
        same_session = session.id == state.cookie_id and session.id == state.original_id
        version = state.loaded_version if same_session else 0
        before = state.loaded_values if same_session else {}
        now = _json_values(session)
        changed = {key: session[key] for key in session if before.get(key) != now[key]}
        removed = [key for key in before if key not in now]
        for _ in range(self.attempts):
            state.saved_hash = hash_session(session)
            if self.store.set_if_version(session.id, session, version):
                return
            fresh, version = self.store.get_versioned(session.id)
            if not fresh:
                _log.warning("merge: session %s was destroyed meanwhile; not saving it again",
                             _short(session.id))
                return
            _log.debug("merge: %s changed meanwhile; re-applying %d change(s)",
                       _short(session.id), len(changed) + len(removed))
            merged = {key: value for key, value in fresh.items()
                      if key != "cookie" and key not in _RESERVED_KEYS}
            merged.update(changed)
            for key in removed:
                merged.pop(key, None)
            session._data = merged
        state.saved_hash = None
        _log.error("merge: gave up saving session %s after %d attempts; this request's changes are lost",
                   _short(session.id), self.attempts)


# ==== 12. Beyond express: WSGI ================================================
#
# express-session is Connect middleware; the nearest thing in Python is a
# WSGI (PEP 3333) middleware, which wraps any WSGI application or framework.
# The three moments of the lifecycle are wired in:
#   begin   - when the server calls us, before the application runs
#   headers - when the application calls start_response
#   end     - when the application's body is exhausted, before its last
#             non-empty chunk is handed to the server

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
    not echo the error (the log has it); a busy session (``concurrency='lock'``)
    a 503; an application that raises before ``start_response`` a 500, and
    the session's end still runs, as with SessionRequestHandler. An
    application that raises later is left to the server, after the end ran.
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
            cookie_header=environ.get("HTTP_COOKIE") or None,
            tls=False,
            forwarded_proto=environ.get("HTTP_X_FORWARDED_PROTO") or None,
            framework_secure=environ.get("wsgi.url_scheme") == "https",
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request: begin, then the application with the headers and end moments wired in."""
        middleware = self.middleware
        # begin: load or create the session, before the application runs.
        try:
            state = middleware.begin(self.request_info(environ))
        except SessionBusyError as exc:
            _log.warning("%s", exc)
            return _plain_text(start_response, "503 Session Busy",
                               "Another request is using this session; try again.\n")
        except Exception as exc:
            _log.error("could not load the session: %s", exc)
            return _plain_text(start_response, "500 Internal Server Error",
                               "The session could not be loaded; the server log says why.\n")
        environ[self.session_key] = state.session if state is not None else None
        environ[self.state_key] = state
        if state is None:
            return self.app(environ, start_response)  # no session: nothing to add

        exchange = _SessionExchange(middleware, state, start_response)
        try:
            chunks = self.app(environ, exchange.start_response)
        except Exception:
            if exchange.started:
                exchange.finish()  # as when a handler fails after its headers
                raise
            chunks = exchange.internal_error(sys.exc_info())
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

    def internal_error(self, exc_info: _ExcInfo) -> list[bytes]:
        """Answer 500 for an application that failed before start_response (express's error handler)."""
        _log.error("the application failed before start_response", exc_info=exc_info)
        return _plain_text(self.start_response, "500 Internal Server Error",
                           "Internal Server Error\n", exc_info)

    def finish(self) -> None:
        """Save, touch or destroy the session in the store, once (the wrapped ``res.end``)."""
        if not self.finished:
            self.finished = True
            self.middleware.end(self.state)

    def abandon(self) -> None:
        """The server stopped before the body ended (the client went away): release, store nothing."""
        if not self.finished:
            self.finished = True
            self.middleware.release(self.state)


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
            if exchange.started:
                exchange.finish()  # as when a handler fails after its headers
                raise
            held = exchange.internal_error(sys.exc_info())[0]
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


# ==== 13. Beyond express: stores that cannot leak, and that persist ==========
#
# BoundedMemoryStore: a memory store with bounds, an amortized expiry sweep
# and fair eviction. SQLiteStore: sessions in a SQLite file that survive a
# restart and are shared by processes. Both keep versions (for
# concurrency='merge'); SQLiteStore also has locks across processes (for
# concurrency='lock').


# ---- a bounded memory store -------------------------------------------------
#
# express-session's MemoryStore (ours too, faithfully) leaks: an expired
# session goes only when someone reads it, and nothing limits how many
# sessions a stream of cookieless requests can create. BoundedMemoryStore
# keeps the same JSON strings, but
#   - a heap of (expiry, id) lets every request remove a few expired sessions
#     that nobody will read again (amortized: no full scan, no timer thread);
#   - max_sessions and max_bytes bound the whole store, and when a bound is
#     reached the store evicts the least recently used *anonymous* session:
#     one whose data never changed since it was first saved (a visitor who
#     did nothing). Sessions whose data changed later (a login, a counter
#     that went up) are "established" and are never evicted; when only they
#     remain, a new session is refused with StoreFullError.


class StoreFullError(Exception):
    """A bounded store cannot take this session without evicting one that is established.

    Raised by ``BoundedMemoryStore.set`` (and ``touch``/``set_if_version``).
    At the end of a request the middleware logs it and the response still
    completes: the visitor gets a session that is not stored, so the next
    request starts a new one.
    """


class _Entry:
    """One stored session: its JSON text and the store's bookkeeping about it."""

    __slots__ = ("text", "size", "expires_ms", "version", "first_hash")

    def __init__(self, text: str, size: int, expires_ms: int | None, version: int,
                 first_hash: str | None) -> None:
        self.text = text
        self.size = size                  # bytes of text in UTF-8
        self.expires_ms = expires_ms      # None: never expires by time
        self.version = version            # bumped by every set(), not by touch()
        self.first_hash = first_hash      # data hash of the first set(); None once established


class BoundedMemoryStore(Store):
    """Sessions in memory, as JSON strings, that cannot leak and cannot be flooded.

    Beyond express-session's MemoryStore, which keeps an expired session
    until someone reads it and has no size limit:

    - Expired sessions are swept as the store is used: each get, set, touch
      and destroy removes at most ``sweep_batch`` expired entries, taken
      from a heap ordered by expiry (entries the heap still holds for
      sessions since rewritten or deleted are skipped when they surface).
      The heap is rebuilt when it holds more than twice as many entries as
      there are sessions, so repeated touches cannot grow it either.
      Sessions without an expiry (browser-session cookies) are never swept
      by time, but they count against the bounds like any other.
    - ``max_sessions`` and ``max_bytes`` bound the store. ``bytes`` counts
      the UTF-8 length of each stored JSON text only: not the ids, not
      Python's own overhead per entry (a few hundred bytes, bounded by
      ``max_sessions``).
    - Eviction is fair to real users. A session is *anonymous* while its
      data (everything but the cookie) is what it was on its first
      ``set()``; once a later ``set()`` changes the data it is
      *established* for good. To make room the store first drops expired
      sessions, then evicts the least recently used anonymous session
      (``get``, ``set`` and ``touch`` count as use). It never evicts an
      established one: if only established sessions remain, the write is
      refused with StoreFullError. ``is_established(data)``, if given,
      marks a session established from its first write (e.g.
      ``lambda data: "user" in data`` for a login that regenerates the id).
    - Versions (``get_versioned``, ``set_if_version``) for
      ``concurrency='merge'``: every set() bumps the version; touch() does
      not. Versions are per id and restart at 1 after a session is
      deleted; the middleware never writes a deleted id with version 0.
    - ``stats()`` reports what the store holds and has removed.

    Safe to share between threads (one lock).
    """

    sweep_batch: int = 8
    """How many heap entries a single get/set/touch/destroy may pop."""

    def __init__(self, *, clock: Clock = time.time, max_sessions: int = 10_000,
                 max_bytes: int = 64 * 1024 * 1024,
                 is_established: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a whole number >= 1, not {max_sessions!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a whole number of bytes >= 1, not {max_bytes!r}")
        if is_established is not None and not callable(is_established):
            raise TypeError("is_established must be a callable taking the stored data, or None")
        self._clock = clock
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._is_established = is_established
        self._lock = threading.Lock()
        self._anonymous: OrderedDict[str, _Entry] = OrderedDict()    # least recently used first
        self._established: OrderedDict[str, _Entry] = OrderedDict()
        self._expiry_heap: list[tuple[int, str]] = []
        self._bytes = 0
        self._expired = 0
        self._evicted = 0

    # -- bookkeeping; every method below with a leading underscore needs the lock --

    def _count(self) -> int:
        return len(self._anonymous) + len(self._established)

    def _entry(self, sid: str) -> _Entry | None:
        entry = self._anonymous.get(sid)
        return entry if entry is not None else self._established.get(sid)

    def _remove(self, sid: str) -> _Entry | None:
        """Forget one entry (its heap entries go stale and are skipped later)."""
        entry = self._anonymous.pop(sid, None)
        if entry is None:
            entry = self._established.pop(sid, None)
        if entry is not None:
            self._bytes -= entry.size
        return entry

    def _sweep(self, now_ms: int, limit: int | None) -> None:
        """Pop up to ``limit`` due heap entries (all of them if None); remove the sessions still expired."""
        heap = self._expiry_heap
        popped = 0
        while heap and heap[0][0] <= now_ms and (limit is None or popped < limit):
            expires_ms, sid = heapq.heappop(heap)
            popped += 1
            entry = self._entry(sid)
            if entry is not None and entry.expires_ms == expires_ms:
                self._remove(sid)
                self._expired += 1

    def _live(self, sid: str, now_ms: int, *, use: bool) -> _Entry | None:
        """The entry for sid unless it has expired (then it is removed); ``use`` refreshes its LRU place."""
        entry = self._entry(sid)
        if entry is None:
            return None
        if entry.expires_ms is not None and entry.expires_ms <= now_ms:
            self._remove(sid)
            self._expired += 1
            return None
        if use:
            (self._anonymous if entry.first_hash is not None else self._established).move_to_end(sid)
        return entry

    def _schedule(self, sid: str, entry: _Entry) -> None:
        """Put the entry's expiry on the heap; rebuild the heap when stale entries outnumber live ones."""
        if entry.expires_ms is not None:
            heapq.heappush(self._expiry_heap, (entry.expires_ms, sid))
        if len(self._expiry_heap) > 2 * self._count() + 64:
            self._expiry_heap = [(e.expires_ms, s) for od in (self._anonymous, self._established)
                                 for s, e in od.items() if e.expires_ms is not None]
            heapq.heapify(self._expiry_heap)

    def _make_room(self, sid: str, added: int, old_size: int, new_size: int, now_ms: int) -> None:
        """Drop expired sessions, then evict LRU anonymous ones (never sid), until the write fits."""
        while (self._count() + added > self.max_sessions
               or self._bytes - old_size + new_size > self.max_bytes):
            if self._expiry_heap and self._expiry_heap[0][0] <= now_ms:
                self._sweep(now_ms, 1)
                continue
            # sid, if anonymous, was just moved to the end: the first other one is the LRU.
            victim = next((other for other in self._anonymous if other != sid), None)
            if victim is None:
                raise StoreFullError(
                    f"session store full ({self._count()} sessions of max_sessions={self.max_sessions}, "
                    f"{self._bytes} bytes of max_bytes={self.max_bytes}) and every other session is "
                    f"established; not storing session {_short(sid)}")
            self._remove(victim)
            self._evicted += 1
            _log.debug("evicted anonymous session %s to make room", _short(victim))

    def _write(self, sid: str, session: Session | Mapping[str, Any], expected: int | None) -> bool:
        """set() and set_if_version(): check the version, make room, store, bump the version."""
        data, text = _session_json(session)
        size = len(text.encode("utf-8", "surrogatepass"))
        fingerprint = hash_session(data)
        expires_ms = _expiry_ms(data)
        with self._lock:
            now_ms = _now_ms(self._clock)
            self._sweep(now_ms, self.sweep_batch)
            entry = self._live(sid, now_ms, use=True)
            version = entry.version if entry is not None else 0
            if expected is not None and expected != version:
                return False
            if size > self.max_bytes:
                raise StoreFullError(f"session {_short(sid)} is {size} bytes, more than "
                                     f"max_bytes={self.max_bytes}")
            if entry is None:
                first_hash: str | None = fingerprint
            elif entry.first_hash is None or entry.first_hash != fingerprint:
                first_hash = None  # established already, or its data changed now
            else:
                first_hash = entry.first_hash
            if first_hash is not None and self._is_established is not None and self._is_established(data):
                first_hash = None
            self._make_room(sid, 0 if entry is not None else 1,
                            entry.size if entry is not None else 0, size, now_ms)
            self._remove(sid)
            new = _Entry(text, size, expires_ms, version + 1, first_hash)
            (self._anonymous if first_hash is not None else self._established)[sid] = new
            self._bytes += size
            self._schedule(sid, new)
            return True

    # -- the Store interface --

    def get(self, sid: str) -> dict[str, Any] | None:
        """The stored session, or None if there is none or it has expired (and is now removed)."""
        return self.get_versioned(sid)[0]

    def set(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Store the session as JSON, evicting anonymous sessions if a bound is reached.

        Raises StoreFullError if it does not fit without evicting an
        established session, or if it alone is larger than ``max_bytes``.
        """
        self._write(sid, session, None)

    def destroy(self, sid: str) -> None:
        """Delete the session, if there is one."""
        with self._lock:
            self._sweep(_now_ms(self._clock), self.sweep_batch)
            self._remove(sid)

    def touch(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Replace the stored cookie (so its expiry) with the session's; the data and version stay."""
        cookie = _stored_cookie(session)
        with self._lock:
            now_ms = _now_ms(self._clock)
            self._sweep(now_ms, self.sweep_batch)
            entry = self._live(sid, now_ms, use=True)
            if entry is None:
                return
            data = _from_json(entry.text)
            data["cookie"] = cookie
            text = _to_json(data)
            size = len(text.encode("utf-8", "surrogatepass"))
            self._make_room(sid, 0, entry.size, size, now_ms)
            self._bytes += size - entry.size
            entry.text, entry.size, entry.expires_ms = text, size, _expiry_ms(data)
            self._schedule(sid, entry)

    def all(self) -> dict[str, dict[str, Any]]:
        """Every live session, keyed by id (all expired ones are swept first)."""
        with self._lock:
            self._sweep(_now_ms(self._clock), None)
            return {sid: _from_json(entry.text)
                    for entries in (self._anonymous, self._established)
                    for sid, entry in entries.items()}

    def length(self) -> int:
        """The number of live sessions (all expired ones are swept first)."""
        with self._lock:
            self._sweep(_now_ms(self._clock), None)
            return self._count()

    def clear(self) -> None:
        """Forget every session (the expired and evicted counts are kept)."""
        with self._lock:
            self._anonymous.clear()
            self._established.clear()
            self._expiry_heap = []
            self._bytes = 0

    # -- versions (concurrency='merge') --

    def get_versioned(self, sid: str) -> tuple[dict[str, Any] | None, int]:
        """The stored session (None if absent or expired) and its version (0 when there is none)."""
        with self._lock:
            now_ms = _now_ms(self._clock)
            self._sweep(now_ms, self.sweep_batch)
            entry = self._live(sid, now_ms, use=True)
            if entry is None:
                return None, 0
            return _from_json(entry.text), entry.version

    def set_if_version(self, sid: str, session: Session | Mapping[str, Any], version: int) -> bool:
        """Store the session only if its version is still ``version`` (0: only if there is none).

        Returns False, writing nothing, on a mismatch. May raise StoreFullError as set() does.
        """
        return self._write(sid, session, version)

    # -- monitoring --

    def stats(self) -> dict[str, int]:
        """A snapshot, without sweeping: live (entries held; an expired one not yet swept
        still counts), expired and evicted (removed so far), bytes (UTF-8 length of the
        stored JSON texts), anonymous, established.
        """
        with self._lock:
            return {
                "live": self._count(),
                "expired": self._expired,
                "evicted": self._evicted,
                "bytes": self._bytes,
                "anonymous": len(self._anonymous),
                "established": len(self._established),
            }


# ---- a SQLite store ---------------------------------------------------------
#
# One file that survives a restart and that several processes (say, a few
# servers behind one proxy) can share. SQLite's WAL mode lets readers and a
# writer work at once; each thread gets its own connection, and every write
# is one short transaction.

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires_ms INTEGER,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expires_ms ON sessions (expires_ms);
CREATE TABLE IF NOT EXISTS locks (
    sid TEXT PRIMARY KEY,
    owner TEXT,
    expires_ms INTEGER
);
"""

_UPSERT_SESSION = """
INSERT INTO sessions (sid, data, expires_ms, version) VALUES (?, ?, ?, 1)
ON CONFLICT (sid) DO UPDATE SET
    data = excluded.data, expires_ms = excluded.expires_ms, version = sessions.version + 1
"""

# Take the lock if nobody holds it, if we hold it (renew), or if its lease ran out.
_TAKE_LOCK = """
INSERT INTO locks (sid, owner, expires_ms) VALUES (?, ?, ?)
ON CONFLICT (sid) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
WHERE locks.owner = excluded.owner OR locks.expires_ms IS NULL OR locks.expires_ms <= ?
"""


class _Connection(sqlite3.Connection):
    """A sqlite3 connection that can be weakly referenced, so close() can reach every thread's."""


class _ThreadConnection:
    """Holds one thread's connection; when the thread ends and this goes, the connection is closed."""

    __slots__ = ("connection", "__weakref__")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        weakref.finalize(self, connection.close)


class SQLiteStore(Store):
    """Sessions in a SQLite file: they survive a restart, and several processes can share them.

    Beyond express-session, which ships only MemoryStore and leaves
    persistence to third-party stores:

    - ``path`` is a file path. ``':memory:'`` is refused: every thread has
      its own connection, and each would see a different empty database.
    - The file is in WAL mode; each thread opens its own connection on
      first use (with ``busy_timeout`` ms of waiting for another writer);
      every read-modify-write is one ``BEGIN IMMEDIATE`` transaction.
    - Expiry is enforced when a session is read (an expired row is deleted
      and None returned) and by ``sweep()``, one indexed DELETE, which a
      write runs at most once every ``sweep_interval`` seconds (in this
      process; no thread). ``sweep()`` is public, e.g. for a cron job.
    - Versions (``get_versioned``, ``set_if_version``) for
      ``concurrency='merge'``: every set() bumps the row's version; touch()
      does not. Versions are per row and restart at 1 after a deletion.
    - Locks (``acquire``, ``release``) for ``concurrency='lock'`` across
      processes. The owner is this store object in this thread. A lock
      row carries a lease of ``lock_lease`` seconds, so the lock of a
      crashed process is taken over once the lease runs out; acquiring a
      lock you hold renews it (one release frees it). ``acquire`` polls.
    - A corrupt row (data that is not JSON, not an object, or without a
      cookie object) is logged as a warning and deleted, and reads as None:
      the visitor gets a new session instead of a 500 on every request.
    - JSON only, never pickle: a row is data, never code.

    Call ``close()`` when done; it closes every thread's connection.
    """

    lock_poll: float = 0.02
    """Seconds between two tries of acquire() while the lock is taken."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock = time.time,
                 sweep_interval: float = 60.0, busy_timeout: int = 5000,
                 lock_lease: float = 30.0) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("file:"):
            raise ValueError(f"SQLiteStore needs a file path, not {path!r}: each thread has its "
                             f"own connection, and an in-memory database is per connection")
        if not (isinstance(sweep_interval, (int, float)) and sweep_interval >= 0):
            raise ValueError("sweep_interval must be a number of seconds >= 0")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int) or busy_timeout < 0:
            raise ValueError("busy_timeout must be a whole number of milliseconds >= 0")
        if not (isinstance(lock_lease, (int, float)) and lock_lease > 0):
            raise ValueError("lock_lease must be a number of seconds > 0")
        self.path = path
        self._clock = clock
        self.sweep_interval = float(sweep_interval)
        self.busy_timeout = busy_timeout
        self.lock_lease = float(lock_lease)
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._mutex = threading.Lock()  # guards _connections, _closed and _last_sweep_ms
        self._closed = False
        self._last_sweep_ms: int | None = None  # None: the first write sweeps
        connection = self._connection()
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            _log.warning("SQLiteStore: %s is in journal mode %r, not WAL", path, mode)
        connection.executescript(_SCHEMA)

    # -- connections and transactions --

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and closed when the thread ends)."""
        if self._closed:
            raise sqlite3.ProgrammingError("this SQLiteStore is closed")
        held = getattr(self._local, "held", None)
        if held is not None:
            return held.connection
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout / 1000,
                                     isolation_level=None, check_same_thread=False,
                                     factory=_Connection)
        connection.execute(f"PRAGMA busy_timeout = {self.busy_timeout}")
        connection.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fewer fsyncs
        with self._mutex:
            self._connections.add(connection)
        self._local.held = _ThreadConnection(connection)
        return connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): a short write transaction."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _owner(self) -> str:
        """Who holds a lock: this store object, in this thread."""
        owner = getattr(self._local, "owner", None)
        if owner is None:
            owner = self._local.owner = f"{os.getpid()}-{_secrets.token_hex(8)}"
        return owner

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self._mutex:
            self._closed = True
            connections = list(self._connections)
            self._connections = weakref.WeakSet()
        for connection in connections:
            connection.close()

    # -- reading rows --

    def _decode(self, connection: sqlite3.Connection, sid: str, text: Any,
                version: int) -> dict[str, Any] | None:
        """Parse a row's data; a corrupt row is logged, deleted, and reads as None."""
        try:
            data = _from_json(text)
        except (TypeError, ValueError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("cookie"), dict):
            return data
        _log.warning("SQLiteStore: session %s is not a JSON object with a cookie; deleting it",
                     _short(sid))
        connection.execute("DELETE FROM sessions WHERE sid = ? AND version = ?", (sid, version))
        return None

    def _read(self, connection: sqlite3.Connection, sid: str) -> tuple[dict[str, Any] | None, int]:
        """The live session and its version, or (None, 0); deletes the row if expired or corrupt."""
        row = connection.execute("SELECT data, expires_ms, version FROM sessions WHERE sid = ?",
                                 (sid,)).fetchone()
        if row is None:
            return None, 0
        text, expires_ms, version = row
        if expires_ms is not None and expires_ms <= _now_ms(self._clock):
            connection.execute("DELETE FROM sessions WHERE sid = ? AND version = ?", (sid, version))
            return None, 0
        data = self._decode(connection, sid, text, version)
        return (data, version) if data is not None else (None, 0)

    # -- expiry --

    def sweep(self) -> int:
        """Delete every expired session and lock now (one indexed DELETE each); return how many sessions."""
        now_ms = _now_ms(self._clock)
        with self._transaction() as connection:
            removed = connection.execute("DELETE FROM sessions WHERE expires_ms <= ?", (now_ms,)).rowcount
            connection.execute("DELETE FROM locks WHERE expires_ms <= ?", (now_ms,))
        with self._mutex:
            self._last_sweep_ms = now_ms
        _log.debug("SQLiteStore: swept %d expired session(s)", removed)
        return removed

    def _maybe_sweep(self) -> None:
        """Sweep if the last sweep in this process is sweep_interval seconds old (called by writes)."""
        now_ms = _now_ms(self._clock)
        with self._mutex:
            last = self._last_sweep_ms
            due = last is None or now_ms - last >= self.sweep_interval * 1000
            if due:
                self._last_sweep_ms = now_ms  # claim it, so one thread sweeps
        if due:
            self.sweep()

    # -- the Store interface --

    def get(self, sid: str) -> dict[str, Any] | None:
        """The stored session, or None if there is none, or it has expired or is corrupt (then deleted)."""
        return self._read(self._connection(), sid)[0]

    def set(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Store the session as JSON (insert or replace) and bump its version."""
        data, text = _session_json(session)
        self._connection().execute(_UPSERT_SESSION, (sid, text, _expiry_ms(data)))
        self._maybe_sweep()

    def destroy(self, sid: str) -> None:
        """Delete the session, if there is one."""
        self._connection().execute("DELETE FROM sessions WHERE sid = ?", (sid,))

    def touch(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Replace the stored cookie (so its expiry) with the session's; the data and version stay."""
        cookie = _stored_cookie(session)
        with self._transaction() as connection:
            data, _ = self._read(connection, sid)
            if data is not None:
                data["cookie"] = cookie
                text = _to_json(data)
                connection.execute("UPDATE sessions SET data = ?, expires_ms = ? WHERE sid = ?",
                                   (text, _expiry_ms(data), sid))
        self._maybe_sweep()

    def all(self) -> dict[str, dict[str, Any]]:
        """Every live session, keyed by id (expired rows are swept first, corrupt ones deleted)."""
        self.sweep()
        connection = self._connection()
        rows = connection.execute("SELECT sid, data, version FROM sessions").fetchall()
        found = {}
        for sid, text, version in rows:
            data = self._decode(connection, sid, text, version)
            if data is not None:
                found[sid] = data
        return found

    def length(self) -> int:
        """The number of live sessions (expired rows are swept first)."""
        self.sweep()
        return self._connection().execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def clear(self) -> None:
        """Forget every session (locks are left alone: their holders release them)."""
        self._connection().execute("DELETE FROM sessions")

    # -- versions (concurrency='merge') --

    def get_versioned(self, sid: str) -> tuple[dict[str, Any] | None, int]:
        """The stored session (None if absent, expired or corrupt) and its version (0 when none)."""
        return self._read(self._connection(), sid)

    def set_if_version(self, sid: str, session: Session | Mapping[str, Any], version: int) -> bool:
        """In one transaction: store the session only if its version is still ``version``.

        0 means "only if there is none" (an expired row counts as none).
        Returns False, writing nothing, on a mismatch.
        """
        data, text = _session_json(session)
        with self._transaction() as connection:
            row = connection.execute("SELECT expires_ms, version FROM sessions WHERE sid = ?",
                                     (sid,)).fetchone()
            current = 0
            if row is not None and (row[0] is None or row[0] > _now_ms(self._clock)):
                current = row[1]
            if current != version:
                return False
            connection.execute(_UPSERT_SESSION, (sid, text, _expiry_ms(data)))
        self._maybe_sweep()
        return True

    # -- locks (concurrency='lock' across processes) --

    def acquire(self, sid: str, timeout: float) -> bool:
        """Take the lock for sid, waiting up to ``timeout`` seconds; True if this caller now holds it.

        Free locks, our own (renewed) and those whose lease has run out are
        taken at once; otherwise it polls every ``lock_poll`` seconds.
        """
        owner = self._owner()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            now_ms = _now_ms(self._clock)
            taken = self._connection().execute(
                _TAKE_LOCK, (sid, owner, now_ms + round(self.lock_lease * 1000), now_ms)).rowcount
            if taken == 1:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.lock_poll, remaining))

    def release(self, sid: str) -> None:
        """Let go of the lock for sid if this caller holds it (a lock taken over meanwhile is not touched)."""
        self._connection().execute("DELETE FROM locks WHERE sid = ? AND owner = ?", (sid, self._owner()))


# ==== The tour: python3 session_demo.py =======================================
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
        touch = should_touch(state, save)
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


if __name__ == "__main__":
    tour()
