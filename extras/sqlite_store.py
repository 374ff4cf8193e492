"""Sessions in a SQLite file that survive a restart and are shared by processes (beyond express-session).

express-session ships only MemoryStore and leaves persistence to
third-party stores. SQLiteStore keeps express's JSON in one table, sweeps
expired rows, keeps a version per row (for extras.concurrency's merge)
and leased locks across processes (for its lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from session_demo import (
    Clock, Session, Store, expiry_ms, clock_ms, parse_json, session_json, short_id, stored_cookie,
    stringify,
)

__all__ = ["SQLiteStore"]

_log = logging.getLogger("session_demo.extras")

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
            owner = self._local.owner = f"{os.getpid()}-{secrets.token_hex(8)}"
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
            data = parse_json(text)
        except (TypeError, ValueError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("cookie"), dict):
            return data
        _log.warning("SQLiteStore: session %s is not a JSON object with a cookie; deleting it",
                     short_id(sid))
        connection.execute("DELETE FROM sessions WHERE sid = ? AND version = ?", (sid, version))
        return None

    def _read(self, connection: sqlite3.Connection, sid: str) -> tuple[dict[str, Any] | None, int]:
        """The live session and its version, or (None, 0); deletes the row if expired or corrupt."""
        row = connection.execute("SELECT data, expires_ms, version FROM sessions WHERE sid = ?",
                                 (sid,)).fetchone()
        if row is None:
            return None, 0
        text, expires_ms, version = row
        if expires_ms is not None and expires_ms <= clock_ms(self._clock):
            connection.execute("DELETE FROM sessions WHERE sid = ? AND version = ?", (sid, version))
            return None, 0
        data = self._decode(connection, sid, text, version)
        return (data, version) if data is not None else (None, 0)

    # -- expiry --

    def sweep(self) -> int:
        """Delete every expired session and lock now (one indexed DELETE each); return how many sessions."""
        now_ms = clock_ms(self._clock)
        with self._transaction() as connection:
            removed = connection.execute("DELETE FROM sessions WHERE expires_ms <= ?", (now_ms,)).rowcount
            connection.execute("DELETE FROM locks WHERE expires_ms <= ?", (now_ms,))
        with self._mutex:
            self._last_sweep_ms = now_ms
        _log.debug("SQLiteStore: swept %d expired session(s)", removed)
        return removed

    def _maybe_sweep(self) -> None:
        """Sweep if the last sweep in this process is sweep_interval seconds old (called by writes)."""
        now_ms = clock_ms(self._clock)
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
        data, text = session_json(session)
        self._connection().execute(_UPSERT_SESSION, (sid, text, expiry_ms(data)))
        self._maybe_sweep()

    def destroy(self, sid: str) -> None:
        """Delete the session, if there is one."""
        self._connection().execute("DELETE FROM sessions WHERE sid = ?", (sid,))

    def touch(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Replace the stored cookie (so its expiry) with the session's; the data and version stay."""
        cookie = stored_cookie(session)
        with self._transaction() as connection:
            data, _ = self._read(connection, sid)
            if data is not None:
                data["cookie"] = cookie
                text = stringify(data)
                connection.execute("UPDATE sessions SET data = ?, expires_ms = ? WHERE sid = ?",
                                   (text, expiry_ms(data), sid))
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
        data, text = session_json(session)
        with self._transaction() as connection:
            row = connection.execute("SELECT expires_ms, version FROM sessions WHERE sid = ?",
                                     (sid,)).fetchone()
            current = 0
            if row is not None and (row[0] is None or row[0] > clock_ms(self._clock)):
                current = row[1]
            if current != version:
                return False
            connection.execute(_UPSERT_SESSION, (sid, text, expiry_ms(data)))
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
            now_ms = clock_ms(self._clock)
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
