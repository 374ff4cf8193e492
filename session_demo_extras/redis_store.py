"""Sessions in Redis, as connect-redis 10 keeps them, with the standard library only (beyond express-session).

connect-redis is express-session's most used store. RedisStore writes the
same keys and values (``sess:`` + id, the session's JSON exactly as
express writes it, ``SET key value EX ttl``), so a Python app and a Node
app on express-session + connect-redis with the same secret and cookie
name share one Redis and one login. Redis speaks RESP2, a line-based
protocol; the small client below needs only ``socket`` (and ``ssl`` for
``rediss://``). It also offers locks and versions, so that
session_demo_extras.concurrency's lock and merge work across machines.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from session_demo import (
    Clock, Session, Store, clock_ms, expiry_ms, parse_json, session_json, short_id, stored_cookie,
)

__all__ = ["RedisStore", "RedisClient", "RedisReplyError", "RedisConnectionError", "parse_redis_url"]

_log = logging.getLogger("session_demo.extras")

# ---- a RESP2 client -----------------------------------------------------------
#
# A command is an array of bulk strings: *2\r\n$3\r\nGET\r\n$6\r\nsess:a\r\n
# A reply starts with one byte that says its kind:
#   +OK\r\n          a simple string        -ERR ...\r\n     an error
#   :42\r\n          an integer             $5\r\nhello\r\n  a bulk string ($-1: nil)
#   *2\r\n...        an array of replies (*-1: nil)
# Each connection sends one command and reads its reply before the next;
# connections wait in a small pool between commands.


class RedisReplyError(Exception):
    """Redis answered a command with an error reply (``-ERR ...``, ``-WRONGTYPE ...``): Redis itself is up."""


class RedisConnectionError(ConnectionError):
    """The connection failed: closed by Redis, an unreadable reply, or AUTH/SELECT refused."""


def parse_redis_url(url: str) -> dict[str, Any]:
    """Split ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://`` for TLS) into its parts.

    The URL form node-redis (and so connect-redis's users) pass to
    ``createClient({url})``. ``user:password`` means an ACL user (``AUTH
    user password``); ``:password`` the default user (``AUTH password``).
    The user and password are percent-decoded. Anything else (a query, a
    user without a password, a db that is not a number) is a ValueError.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis URL starts with redis:// or rediss://, not {url!r}")
    if parts.query or parts.fragment:
        raise ValueError("a Redis URL takes no query or fragment: redis://[user:password@]host:port/db")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"the port in {url!r} is not a number from 0 to 65535") from None
    database = parts.path.lstrip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"the database in {url!r} must be a number, as in redis://host:6379/0")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if username and password is None:
        raise ValueError("a Redis URL with a user needs a password: redis://user:password@host")
    return {"host": parts.hostname or "127.0.0.1", "port": port, "db": int(database),
            "username": username or None, "password": password or None, "tls": parts.scheme == "rediss"}


def _encode_command(args: tuple[Any, ...]) -> bytes:
    """A command as RESP: an array of bulk strings (str as UTF-8, int as its digits, bytes as they are)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, (str, int)) and not isinstance(arg, bool):
            data = str(arg).encode("utf-8")
        else:
            raise TypeError(f"a Redis command argument is str, int or bytes, not {type(arg).__name__}")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Connection:
    """One socket to Redis, authenticated and on the right database; used by one thread at a time."""

    def __init__(self, settings: Mapping[str, Any], connect_timeout: float, socket_timeout: float,
                 ssl_context: ssl.SSLContext | None) -> None:
        sock = socket.create_connection((settings["host"], settings["port"]), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if settings["tls"]:
                context = ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=settings["host"])  # handshake: connect_timeout
            sock.settimeout(socket_timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._reader = sock.makefile("rb")
        try:
            self._handshake(settings)
        except BaseException:
            self.close()
            raise

    def _handshake(self, settings: Mapping[str, Any]) -> None:
        """AUTH (password, or ACL user and password) and SELECT db, as the URL asks."""
        steps: list[tuple[Any, ...]] = []
        if settings["password"] is not None:
            if settings["username"]:
                steps.append(("AUTH", settings["username"], settings["password"]))
            else:
                steps.append(("AUTH", settings["password"]))
        if settings["db"]:
            steps.append(("SELECT", settings["db"]))
        for step in steps:
            try:
                self.command(*step)
            except RedisReplyError as exc:
                raise RedisConnectionError(f"Redis refused {step[0]}: {exc}") from None

    def command(self, *args: Any) -> Any:
        """Send one command and return its reply; an error reply raises RedisReplyError."""
        self._sock.sendall(_encode_command(args))
        reply = self._read_reply()
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def _read_line(self) -> bytes:
        """One reply line without its CRLF; the connection closing mid-way is a RedisConnectionError."""
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise RedisConnectionError("Redis closed the connection")
        return line[:-2]

    def _read_reply(self) -> Any:
        """Read one reply: str, int, bytes, None (nil), a list, or a RedisReplyError (returned, not raised)."""
        line = self._read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._reader.read(size + 2)
            if len(data) != size + 2:
                raise RedisConnectionError("Redis closed the connection")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._read_reply() for _ in range(count)]
        raise RedisConnectionError(f"not a RESP2 reply: {line[:40]!r}")

    def close(self) -> None:
        """Close the socket (quietly)."""
        for closable in (self._reader, self._sock):
            try:
                closable.close()
            except OSError:
                pass


class RedisClient:
    """A minimal Redis client: ``execute('GET', key)`` over a small pool of connections.

    Stands in for node-redis's ``createClient({url})``. Every connection is
    opened with ``connect_timeout`` seconds to connect (and for the TLS
    handshake), and reads and writes time out after ``socket_timeout``
    seconds, so a Redis that is down or stuck fails the command instead of
    hanging it. A connection that failed is closed and never reused; the
    next command opens a new one (that is the reconnect). A command that
    fails on a pooled connection because Redis closed it (Redis restarted
    while it sat idle) is sent once more on a fresh connection; every
    command RedisStore sends can be repeated safely. At most ``max_idle``
    idle connections are kept.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, connect_timeout: float = 2.0,
                 socket_timeout: float = 5.0, max_idle: int = 8,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = parse_redis_url(url)
        for name, value in (("connect_timeout", connect_timeout), ("socket_timeout", socket_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0 (a bounded wait), not {value!r}")
        if isinstance(max_idle, bool) or not isinstance(max_idle, int) or max_idle < 0:
            raise ValueError("max_idle must be a whole number of connections >= 0")
        self.connect_timeout = float(connect_timeout)
        self.socket_timeout = float(socket_timeout)
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self._idle: list[_Connection] = []
        self._mutex = threading.Lock()  # guards _idle and _closed
        self._closed = False

    def __repr__(self) -> str:
        """The URL without its password."""
        s = self.settings
        user = f"{s['username'] or ''}:***@" if s["password"] is not None else ""
        scheme = "rediss" if s["tls"] else "redis"
        return f"RedisClient({scheme}://{user}{s['host']}:{s['port']}/{s['db']})"

    def _connect(self) -> _Connection:
        return _Connection(self.settings, self.connect_timeout, self.socket_timeout, self.ssl_context)

    def _take(self) -> tuple[_Connection, bool]:
        """An idle connection (True: reused) or a new one (False)."""
        with self._mutex:
            if self._closed:
                raise RedisConnectionError("this RedisClient is closed")
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _give_back(self, connection: _Connection) -> None:
        """Keep a healthy connection for the next command, or close it if the pool is full."""
        with self._mutex:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _drop_idle(self) -> None:
        """Close every idle connection (after one of them was found closed by Redis, the rest likely are)."""
        with self._mutex:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def execute(self, *args: Any) -> Any:
        """Run one command; return its reply. RedisReplyError for an error reply, OSError if the connection fails."""
        connection, reused = self._take()
        try:
            reply = connection.command(*args)
        except RedisReplyError:
            self._give_back(connection)  # Redis answered: the connection is fine
            raise
        except ConnectionError:
            connection.close()
            if not reused:
                raise
            self._drop_idle()
            connection = self._connect()  # once more, on a fresh connection
            try:
                reply = connection.command(*args)
            except RedisReplyError:
                self._give_back(connection)
                raise
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()  # a timeout, or worse: the reply may still come, so never reuse it
            raise
        self._give_back(connection)
        return reply

    def close(self) -> None:
        """Close the idle connections; the client refuses commands afterwards."""
        with self._mutex:
            self._closed = True
        self._drop_idle()


# ---- a Redis store --------------------------------------------------------------
#
# The data is connect-redis's: one string key per session, expired by Redis
# itself (EX). What connect-redis does not have lives outside the session
# keys, so that a Node app (and its SCAN of sess:*) never sees it:
#   - a lock is a key of its own: lock_prefix + id (default "lock:sess:" + id),
#     holding its owner's token, with a lease (PX);
#   - a version is not stored at all: it is computed from the value (the
#     first 60 bits of its SHA-1, plus one), and set_if_version compares it
#     inside Redis with a Lua script. So every writer changes it, Node apps
#     included, and there is no side key to count, expire or keep in step.

# Delete the key only if it still holds this value (a corrupt value, being cleaned up).
_DELETE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Compare-and-set: write ARGV[2] with EX ARGV[3] (delete if ARGV[3] <= 0) only if the
# value's version is still ARGV[1] (15 hex digits of its SHA-1; '0': only if there is none).
_SET_IF_VERSION = """
local current = redis.call('GET', KEYS[1])
if current and current ~= '' then
  if string.sub(redis.sha1hex(current), 1, 15) ~= ARGV[1] then return 0 end
elseif ARGV[1] ~= '0' then
  return 0
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# Renew a lock this owner holds (acquire() called again by the holder).
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Release a lock only if this owner still holds it (not one taken over after its lease ran out).
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _version_of(raw: bytes) -> int:
    """A stored value's version: the first 15 hex digits of its SHA-1, plus one (so never 0)."""
    return int(hashlib.sha1(raw).hexdigest()[:15], 16) + 1


def _glob_escape(text: str) -> str:
    """``text`` with SCAN MATCH's special characters escaped, so a prefix matches only itself."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class RedisStore(Store):
    """Sessions in Redis, key for key and byte for byte as connect-redis 10 keeps them.

    - ``url`` is ``redis://[[user]:password@]host[:port][/db]`` or
      ``rediss://...`` (TLS; pass ``ssl_context`` for your own CA).
    - The key is ``prefix + id`` (``'sess:'``); the value is the session's
      JSON exactly as express-session hands it to connect-redis (cookie
      first). ``set`` is ``SET key value EX ttl``: the seconds until the
      cookie's ``expires``, rounded up, or ``ttl`` (86,400) for a cookie
      without one (a browser-session cookie); a ttl <= 0 deletes the key
      instead (connect-redis's ``set``).
    - ``touch`` is ``EXPIRE key ttl`` (connect-redis's ``touch``): the stored
      JSON, its cookie included, is left as it was. Redis's TTL is the only
      clock that expires a session; ``get`` does not look at the stored
      ``expires``, just as connect-redis does not. (express recomputes the
      cookie's expiry from ``originalMaxAge`` on every request anyway.)
    - ``all``, ``length`` and ``clear`` walk ``prefix*`` with ``SCAN ...
      COUNT scan_count``, never ``KEYS``. ``all`` returns a dict keyed by
      id (our Store interface) where connect-redis returns a list.
    - A value that is not a JSON object with a cookie object (another
      client wrote it, or it was cut short) is logged as a warning,
      deleted if it is still the same value, and reads as None: that
      visitor gets a new session. connect-redis answers 500 on every
      request until the key expires; we do not lock a visitor out.
      The empty string reads as None without a warning, as in connect-redis.
    - ``ready`` (express's storeReady): a failed connection marks the store
      not ready, and the middleware then serves requests without a session
      instead of waiting on Redis; at most every ``retry_interval``
      seconds, ``ready`` asks Redis (PING) again, and the first success
      makes it ready again. Error replies do not count: Redis answered.
    - Versions for ``MergingSessionMiddleware`` (``get_versioned``,
      ``set_if_version``): computed from the stored value, compared in
      Redis by a Lua script; see the section comment above.
    - Locks for ``LockingSessionMiddleware`` (``acquire``, ``release``):
      ``SET lock_prefix+id token NX PX lease``; the owner is the caller's
      ``owner`` token (LockingSessionMiddleware passes one per request, so a
      lock taken in one thread can be released in another), or, without
      one, this store object in this thread; a crashed owner's lock ends with its lease
      (``lock_lease`` seconds); only the owner releases (a Lua script).
      The lease is not renewed: a request that holds a lock longer than
      ``lock_lease`` loses it, and another request may then run beside it.
    - The clock only turns ``expires`` into a TTL; Redis expires keys on
      its own clock.

    Differences from connect-redis, on purpose: ``ttl`` must be a whole
    number of seconds > 0 (connect-redis turns 0 into 86,400, and accepts a
    function); the prefix may not be empty (SCAN ``*`` would count locks and
    every other key in the database); no ``serializer``, ``disableTouch``
    or ``disableTTL``. Call ``close()`` when done.
    """

    lock_poll: float = 0.02
    """Seconds between two tries of acquire() while the lock is taken."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "sess:",
                 ttl: int = 86400, scan_count: int = 100, clock: Clock = time.time,
                 connect_timeout: float = 2.0, socket_timeout: float = 5.0,
                 retry_interval: float = 1.0, max_idle: int = 8, lock_lease: float = 30.0,
                 lock_prefix: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty string such as 'sess:' (connect-redis's default); "
                             "an empty prefix would make all(), length() and clear() touch every key")
        lock_prefix = "lock:" + prefix if lock_prefix is None else lock_prefix
        if not isinstance(lock_prefix, str) or not lock_prefix or lock_prefix.startswith(prefix):
            raise ValueError(f"lock_prefix must be a non-empty string that does not start with the prefix "
                             f"{prefix!r}, or SCAN {prefix}* would count locks as sessions")
        for name, value in (("ttl", ttl), ("scan_count", scan_count)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a whole number > 0, not {value!r}")
        for name, seconds in (("retry_interval", retry_interval), ("lock_lease", lock_lease)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {seconds!r}")
        if not lock_lease > 0:
            raise ValueError("lock_lease must be a number of seconds > 0")
        self.client = RedisClient(url, connect_timeout=connect_timeout, socket_timeout=socket_timeout,
                                  max_idle=max_idle, ssl_context=ssl_context)
        self.prefix = prefix
        self.lock_prefix = lock_prefix
        self.ttl = ttl
        self.scan_count = scan_count
        self.retry_interval = float(retry_interval)
        self.lock_lease = float(lock_lease)
        self._clock = clock
        self._local = threading.local()
        self._healthy = True  # until a command fails
        self._failed_at = 0.0  # time.monotonic() of the last failure

    def __repr__(self) -> str:
        return f"RedisStore({self.client!r}, prefix={self.prefix!r})"

    # -- talking to Redis, and ready --

    def _call(self, *args: Any) -> Any:
        """Run one command, and keep ``ready`` up to date: a failed connection marks the store not ready."""
        try:
            reply = self.client.execute(*args)
        except RedisReplyError:
            self._mark_healthy()
            raise
        except OSError as exc:  # refused, reset, timed out, closed; RedisConnectionError too
            self._failed_at = time.monotonic()
            if self._healthy:
                self._healthy = False
                _log.warning("RedisStore: %r is not answering (%s); not ready", self.client, exc)
            raise
        self._mark_healthy()
        return reply

    def _mark_healthy(self) -> None:
        if not self._healthy:
            self._healthy = True
            _log.warning("RedisStore: %r answers again; ready", self.client)

    @property  # read-only here: Store's plain attribute becomes a question put to Redis
    def ready(self) -> bool:  # type: ignore[override]
        """Whether Redis answers (express's storeReady): False after a failed connection, until a PING succeeds.

        While not ready, a PING is tried at most every ``retry_interval``
        seconds; in between, this is False at once, so requests are not
        held up by a Redis that is down.
        """
        if self._healthy:
            return True
        if time.monotonic() - self._failed_at < self.retry_interval:
            return False
        try:
            self._call("PING")
        except (OSError, RedisReplyError):
            return False
        return True

    def close(self) -> None:
        """Close the connections; the store cannot be used afterwards."""
        self.client.close()

    # -- keys, TTLs and values --

    def _key(self, sid: str) -> str:
        return self.prefix + sid

    def _ttl(self, data: Mapping[str, Any]) -> int:
        """Seconds to keep a session (connect-redis's getTTL): until its cookie's expires, rounded up, else ``ttl``."""
        expires = expiry_ms(data)
        if expires is None:
            return self.ttl
        return -((clock_ms(self._clock) - expires) // 1000)  # ceil((expires - now) / 1000)

    def _decode(self, sid: str, raw: bytes | None) -> dict[str, Any] | None:
        """A stored value as a session, or None: nil and '' are no session; a corrupt one is deleted."""
        if not raw:
            return None
        try:
            data = parse_json(raw.decode("utf-8"))
        except ValueError:  # not UTF-8 or not JSON
            data = None
        if isinstance(data, dict) and isinstance(data.get("cookie"), dict):
            return data
        _log.warning("RedisStore: session %s is not a JSON object with a cookie; deleting it",
                     short_id(sid))
        self._call("EVAL", _DELETE_IF_UNCHANGED, 1, self._key(sid), raw)
        return None

    def _session_keys(self) -> list[str]:
        """Every key under the prefix, walked with SCAN (connect-redis's getAllKeys), in SCAN's order."""
        pattern = _glob_escape(self.prefix) + "*"
        seen: dict[str, None] = {}
        cursor = b"0"
        while True:
            cursor, keys = self._call("SCAN", cursor, "MATCH", pattern, "COUNT", self.scan_count)
            for key in keys:
                seen[key.decode("utf-8", "surrogateescape")] = None
            if cursor == b"0":
                return list(seen)

    # -- the Store interface --

    def get(self, sid: str) -> dict[str, Any] | None:
        """``GET prefix+id``, parsed (connect-redis's get); None if absent, empty or corrupt (then deleted)."""
        return self._decode(sid, self._call("GET", self._key(sid)))

    def set(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """``SET prefix+id json EX ttl``, or ``DEL`` when the cookie has already expired (connect-redis's set)."""
        data, text = session_json(session)
        ttl = self._ttl(data)
        if ttl <= 0:
            self.destroy(sid)
            return
        self._call("SET", self._key(sid), text, "EX", ttl)

    def destroy(self, sid: str) -> None:
        """``DEL prefix+id`` (connect-redis's destroy); an unknown id is not an error."""
        self._call("DEL", self._key(sid))

    def touch(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """``EXPIRE prefix+id ttl`` (connect-redis's touch): the expiry moves, the stored JSON stays.

        A missing key stays missing; a ttl <= 0 makes Redis delete the key.
        """
        self._call("EXPIRE", self._key(sid), self._ttl({"cookie": stored_cookie(session)}))

    def all(self) -> dict[str, dict[str, Any]]:
        """Every session under the prefix, keyed by id: SCAN, then MGET (connect-redis's all, as a dict).

        Corrupt values are skipped (and deleted); keys that expire between
        the SCAN and the MGET are skipped.
        """
        keys = self._session_keys()
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), self.scan_count):
            batch = keys[start:start + self.scan_count]
            for key, raw in zip(batch, self._call("MGET", *batch)):
                sid = key[len(self.prefix):]
                data = self._decode(sid, raw)
                if data is not None:
                    found[sid] = data
        return found

    def length(self) -> int:
        """How many keys are under the prefix, counted with SCAN (connect-redis's length)."""
        return len(self._session_keys())

    def clear(self) -> None:
        """Delete every key under the prefix, found with SCAN (connect-redis's clear); locks are left alone."""
        keys = self._session_keys()
        for start in range(0, len(keys), self.scan_count):
            self._call("DEL", *keys[start:start + self.scan_count])

    # -- versions (MergingSessionMiddleware) --

    def get_versioned(self, sid: str) -> tuple[dict[str, Any] | None, int]:
        """The stored session (None if absent or corrupt) and its version (0 when none).

        The version is computed from the stored bytes, so any write that
        changes the value changes it (a Node app's too); touch() does not.
        """
        raw = self._call("GET", self._key(sid))
        data = self._decode(sid, raw)
        if data is None:
            return None, 0
        return data, _version_of(raw)

    def set_if_version(self, sid: str, session: Session | Mapping[str, Any], version: int) -> bool:
        """Atomically (one Lua script in Redis): store the session only if its version is still ``version``.

        0 means "only if there is none". Returns False, writing nothing,
        on a mismatch. An expired cookie deletes the key, as set() does.
        """
        data, text = session_json(session)
        expected = "0" if version == 0 else f"{version - 1:015x}"
        written = self._call("EVAL", _SET_IF_VERSION, 1, self._key(sid), expected, text, self._ttl(data))
        return bool(written == 1)

    # -- locks (LockingSessionMiddleware across machines) --

    def _owner(self, token: str | None = None) -> str:
        """Who holds a lock: ``pid-token``, the token the caller's (a request's) or this thread's."""
        if token is None:
            token = getattr(self._local, "owner", None)
            if token is None:
                token = self._local.owner = secrets.token_hex(8)
        elif not token:
            raise ValueError("a lock owner must be a non-empty token")
        return f"{os.getpid()}-{token}"

    def acquire(self, sid: str, timeout: float, owner: str | None = None) -> bool:
        """Take the lock for sid, waiting up to ``timeout`` seconds; True if ``owner`` now holds it.

        ``owner`` names the holder (a request: any token); by default it is
        this store object in this thread. ``SET lock_prefix+id token NX PX
        lease``; if the owner already holds it, its lease is renewed.
        Otherwise polls every ``lock_poll`` seconds until the holder
        releases it or its lease runs out.
        """
        key, owner = self.lock_prefix + sid, self._owner(owner)
        lease_ms = max(1, round(self.lock_lease * 1000))
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._call("SET", key, owner, "NX", "PX", lease_ms) == "OK":
                return True
            if self._call("EVAL", _RENEW_LOCK, 1, key, owner, lease_ms) == 1:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.lock_poll, remaining))

    def release(self, sid: str, owner: str | None = None) -> None:
        """Let go of the lock for sid if ``owner`` (as in acquire) holds it; not one taken over meanwhile."""
        self._call("EVAL", _RELEASE_LOCK, 1, self.lock_prefix + sid, self._owner(owner))
