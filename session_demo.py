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

Beyond express-session, in the extras package beside this module (built
on its public API; this module knows nothing of them): lost-update
protection, WSGI, a bounded memory store, a SQLite store.

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
import hmac
import io
import json
import logging
import math
import re
import secrets as _secrets
import socket
import ssl
import sys
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
    # for stores
    "stringify", "parse_json", "session_json", "stored_cookie", "expiry_ms", "clock_ms", "short_id",
]

_log = logging.getLogger("session_demo")

Clock = Callable[[], float]
"""A clock returns the current time in seconds since the epoch, like time.time."""


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


def clock_ms(clock: Clock) -> int:
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
        return clock_ms(self._clock)

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
        return f"Session(id={short_id(self._id)}, data={self._data!r})"

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
        _log.debug("saving %s", short_id(self._id))
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


def stringify(data: Any) -> str:
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


parse_json = json.JSONDecoder(parse_constant=_refuse_constant).decode
"""Parse JSON text as JavaScript's JSON.parse does: NaN and Infinity are refused (ValueError)."""


def expiry_ms(data: Mapping[str, Any]) -> int | None:
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


def session_json(session: Session | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The stored form of a session and its JSON text (compact, as MemoryStore writes it)."""
    data = session.to_json() if isinstance(session, Session) else dict(session)
    return data, stringify(data)


def stored_cookie(session: Session | Mapping[str, Any]) -> Any:
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
        session = parse_json(text)
        expires_ms = expiry_ms(session) if isinstance(session, dict) else None
        if expires_ms is not None and expires_ms <= clock_ms(self._clock):
            del self.sessions[sid]
            return None
        return session

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
    text = stringify(plain)
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
    """The session could not be loaded (store failure or corrupt data): answer ``status`` with ``advice``."""

    status = 500
    advice = "The session could not be loaded; the server log says why"


def _found(data: Any) -> bool:
    """Does a store's answer count as a session? JavaScript's truthiness: None, False, '', 0 do not; {} does."""
    if data is None or data is False or data == "":
        return False
    if isinstance(data, (int, float)) and (data == 0 or data != data):
        return False
    return True


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

        _log.debug("fetching %s", short_id(state.session_id))
        try:
            data = self.load(state)
        except FileNotFoundError:
            data = None  # express's ENOENT: not found
        except SessionLoadError:
            raise
        except Exception as exc:
            raise SessionLoadError(f"the session store failed: {exc!r}") from exc
        if not _found(data):
            _log.debug("no session found; generating a new one")
            state.generate()
        else:
            _log.debug("session found")
            state.inflate(data)
        return state

    def load(self, state: RequestState) -> Any:
        """Read the session the browser named from the store (express's ``store.get``)."""
        return state.store.get(state.session_id)

    def save(self, state: RequestState) -> None:
        """Write the whole session to the store at the end of the request (``session.save()``)."""
        assert state.session is not None
        state.session.save()

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
                self.save(state)
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
            _log.exception("session store failed at the end of the request")
            raise  # no silent loss: the adapter answers 500 instead of the handler's response


# ==== 10. http.server =======================================================
#
# The adapter for the standard library's server. Subclass
# SessionRequestHandler, write do_GET as usual, and use self.session.
# The three moments of the lifecycle are wired in:
#   begin   - in handle_one_request, after the request line and headers are read
#   headers - in end_headers, before the header block is written
#   end     - in handle_one_request, after do_GET returns, before the
#             buffered response's last byte is released
# Around them, the guards of a front end, each with what it defends against.

_CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_TOO_MANY_CONNECTIONS = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _HeadTooLarge(Exception):
    """More than the handler's max_head_size bytes came without the end of the head: answer 431."""


class _HeadReader(io.RawIOBase):
    """The socket as rfile's raw stream; ``tell()`` counts the bytes received.

    While reading a head, no recv waits past ``deadline`` and none reads past ``limit``.
    """

    deadline: float | None = None
    limit: int | None = None

    def __init__(self, sock: socket.socket) -> None:
        self._sock, self._received = sock, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request took too long to arrive")
            self._sock.settimeout(remaining)
        if self.limit is not None:
            if self._received >= self.limit:
                raise _HeadTooLarge()
            buffer = memoryview(buffer)[:self.limit - self._received]
        count = self._sock.recv_into(buffer)
        self._received += count
        return count

    def tell(self) -> int:
        return self._received


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
        self.passed = False

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
            self.passed = True
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
    headers the handler set itself, with ``Vary: Cookie``. The store is
    written after the handler returns, before the end of the response is
    released. If the handler raises, the client gets a 500 (if no headers were
    sent yet) and the session's end still runs, as express's error handler ends
    the response; if the store fails there, a 500 replaces the held response.
    """

    server: SessionHTTPServer
    session_state: RequestState | None = None
    _headers_sent: bool = False
    idle_timeout: float = 5.0  # idle keep-alive connections (Node's keepAliveTimeout: 5 s)
    head_timeout: float = 60.0  # slowloris: the whole head within this (Node's headersTimeout: 60 s)
    max_head_size: int = 16 * 1024  # memory: a larger head is answered 431 (Node's limit: 16 KB)
    timeout: float | None = 60.0  # a client that stalls while its body is read or its response written

    def setup(self) -> None:
        """Set up the connection as usual, with Nagle's algorithm off and rfile read under a deadline."""
        super().setup()
        # Answers are written in one piece, but a held-back last byte must not
        # wait for a delayed ACK either.
        with contextlib.suppress(OSError, AttributeError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile.close()
        self._reader = _HeadReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

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
        self._vary: list[str] = []
        self._cache_control_set = False
        self.requestline = self.request_version = self.command = ""
        try:
            # Idle connections: a request must begin within idle_timeout (an idle keep-alive, or a silent client).
            self._reader.deadline = time.monotonic() + self.idle_timeout
            self._reader.limit = self._reader.tell() + self.max_head_size  # huge heads: 431 past the limit
            if not self.rfile.peek(1):
                self.close_connection = True
                return
            self._reader.deadline = time.monotonic() + self.head_timeout  # slowloris: the whole head in time
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return
            self._reader.deadline = self._reader.limit = None
            self.connection.settimeout(self.timeout)
            # A control character in the request line (Node's parser answers 400): never a 500, never in a log.
            if _CONTROL_CHARACTER.search(self.requestline):
                self.send_error(400, "Bad request target")
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            self._body_start = self.rfile.tell()
            self._handle_with_session(method)
            # Request smuggling: a body not read to its end must not be read as the next request.
            if self._body_left_unread():
                self.close_connection = True
        except _HeadTooLarge:
            self.send_error(431)
        except TimeoutError as exc:
            _log.debug("closing the connection: %s", exc)
            self.close_connection = True

    def _body_left_unread(self) -> bool:
        """Did the request carry a body (Content-Length, Transfer-Encoding) not read exactly to its end?"""
        length = self.headers.get("Content-Length", "0").strip()
        if "Transfer-Encoding" in self.headers or len(self.headers.get_all("Content-Length") or []) > 1:
            return True
        return not (length.isascii() and length.isdigit()) or self.rfile.tell() - self._body_start != int(length)

    def _handle_with_session(self, method: Callable[[], None]) -> None:
        middleware = self.server.session_middleware
        # begin: load or create the session.
        try:
            self.session_state = middleware.begin(self.request_info())
            self._headers_sent = False  # an interim 100 Continue is out, the response's headers are not
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
            except Exception as exc:
                log = _log.debug if isinstance(exc, _CLIENT_GONE) else _log.exception  # a client gone is normal
                log("the handler for %s %r failed", self.command, self.path, exc_info=True)
                if not self._headers_sent:
                    self.send_error(500)
                self.close_connection = True
        finally:
            # end: the store operation, before the last byte is released.
            self.wfile = real_wfile
            try:
                if self.session_state is not None:
                    middleware.end(self.session_state)
            except Exception:  # no silent loss (end() logged it): a 500, or a response cut before its last byte
                self.close_connection = True
                if not held.passed:
                    self.session_state = None  # no Set-Cookie for a session that was not stored
                    self._headers_sent = False
                    self.send_error(500, None, "The session could not be saved; the server log says why")
            else:
                held.release()

    def send_header(self, keyword: str, value: str) -> None:
        """Send a header; the handler's Vary is held, to be merged with the session's in end_headers."""
        if keyword.lower() == "vary" and self.session_state is not None:
            self._vary.append(value)
            return
        self._cache_control_set |= keyword.lower() == "cache-control"
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        """Add the session's headers (the on-headers moment), then end the header block."""
        if self.session_state is not None and not self._headers_sent:
            header = self.server.session_middleware.set_cookie_header(self.session_state)
            if header is not None:
                self.send_header("Set-Cookie", header)
                if not self._cache_control_set:  # shared caches: a response setting the cookie is this client's
                    self.send_header("Cache-Control", "private")
            # Shared caches: the answer depends on the Cookie header, so it must not go to another visitor.
            vary = [word.strip() for value in self._vary for word in value.split(",") if word.strip()]
            if not {word.lower() for word in vary} & {"cookie", "*"}:
                vary.append("Cookie")
            super().send_header("Vary", ", ".join(vary))
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
    # Threads and descriptors: past this many open connections, a new one gets 503; 256 leaves four
    # descriptors each under the common limit of 1,024 (the socket; SQLiteStore's file, -wal, -shm).
    max_connections = 256
    accept_backoff = 0.1  # seconds: out of descriptors, accept() fails at once; wait instead of spinning

    def __init__(self, address: tuple[str, int], handler: type[SessionRequestHandler],
                 middleware: SessionMiddleware) -> None:
        self.session_middleware = middleware
        self._open_connections = 0
        self._count_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; out of descriptors, back off rather than spin on a readable socket."""
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                _log.warning("cannot accept a connection (%s); waiting %s s", exc.strerror, self.accept_backoff)
                time.sleep(self.accept_backoff)
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Count the connection in; past max_connections, answer 503 (socketserver then closes it)."""
        with self._count_lock:
            self._open_connections += 1
            full = self._open_connections > self.max_connections
        if full:
            with contextlib.suppress(OSError):
                request.sendall(_TOO_MANY_CONNECTIONS)
        return not full

    def shutdown_request(self, request: Any) -> None:
        """Close the connection and count it out (socketserver calls this once for each one accepted)."""
        with self._count_lock:
            self._open_connections -= 1
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report a connection that failed; a client that went away (reset, broken pipe) is normal: debug only."""
        if isinstance(sys.exc_info()[1], _CLIENT_GONE):
            _log.debug("the client %s went away", client_address)
            return
        super().handle_error(request, client_address)
