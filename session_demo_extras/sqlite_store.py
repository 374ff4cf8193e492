"""Sessions in a SQLite file that survive a restart and are shared by processes (beyond express-session).

express-session ships only MemoryStore and leaves persistence to
third-party stores. SQLiteStore keeps express's JSON in one table, sweeps
expired rows, keeps a version per row (for session_demo_extras.concurrency's merge)
and leased locks across processes (for its lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sqlite3
import stat
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

def _host_identity() -> str:
    """This host as lock owners name it: the hostname, plus the pid namespace where there is one.

    Two containers may share a hostname and a database file but not their
    pids; the namespace keeps one from taking a live process of the other
    for dead.
    """
    name = socket.gethostname()
    try:
        return f"{name}#pidns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


_HOST = _host_identity()


def _lock_owner_pid(owner: str) -> int | None:
    """The pid in a lock owner ``host:pid:token`` if host is this host; None otherwise."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return None
    return int(parts[1])


def _process_is_alive(pid: int) -> bool:
    """Does a process with this pid exist on this host? (A zombie, not yet reaped, still counts.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours to signal
    return True


def _create_owner_only(path: str) -> None:
    """Create the database file with mode 0600 if it does not exist, whatever the umask.

    SQLite gives the -wal and -shm files it creates the database file's
    permissions, so they are owner-only too. An existing file is left as it
    is (it may be shared on purpose); a warning says if others can read it.
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            _log.warning("SQLiteStore: %s has mode %o: other users can read every session id "
                         "in it; chmod 600 it unless it is shared on purpose", path, mode)
        return
    try:
        os.fchmod(descriptor, 0o600)  # the umask may have taken owner bits away
    finally:
        os.close(descriptor)


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
      A new file is created owner-only (0600, whatever the umask), and so
      are its ``-wal`` and ``-shm`` files: they hold every full session id.
    - The file is in WAL mode; each thread opens its own connection on
      first use (with ``busy_timeout`` ms of waiting for another writer);
      every read-modify-write is one ``BEGIN IMMEDIATE`` transaction.
    - Expiry is enforced when a session is read (an expired row is deleted
      and None returned) and by ``sweep()``, one indexed DELETE, which a
      write runs at most once every ``sweep_interval`` seconds (in this
      process; no thread). ``sweep()`` is public, e.g. for a cron job.
    - Versions (``get_versioned``, ``set_if_version``) for
      ``MergingSessionMiddleware``: every set() bumps the row's version; touch()
      does not. Versions are per row and restart at 1 after a deletion.
    - Locks (``acquire``, ``release``) for ``LockingSessionMiddleware`` across
      processes. The owner is ``host:pid:token`` (host: the hostname and pid
      namespace); the token is the caller's ``owner`` (LockingSessionMiddleware
      passes one per request, so a lock taken in one thread can be released
      in another), or, without one, this store object in this thread. A lock row carries a short lease
      (``lock_lease``, 5 s) that a daemon thread renews every third of it
      while the lock is held, so a long request keeps its lock and a
      crashed one does not keep it long. A lock whose owner is a process of
      this host that no longer exists (``kill -9``) is taken over at once;
      one from another host, or whose pid was reused, when its lease runs
      out. Acquiring a lock you hold renews it (one release frees it).
      ``acquire`` polls every ``lock_poll`` seconds.
    - A corrupt row (data that is not JSON, nested too deep for Python's
      parser, not an object, or without a cookie object) is logged as a
      warning and deleted, and reads as None: the visitor gets a new
      session instead of a 500 on every request.
    - Every call is bounded: a file locked by another process is waited for
      at most ``busy_timeout`` ms, then the call raises
      ``sqlite3.OperationalError`` ("database is locked"); a lock at most
      for the middleware's ``lock_timeout``.
    - Failures are never swallowed: a write that fails (a read-only or
      locked file, a full disk) raises ``sqlite3.Error`` out of ``set``,
      ``touch``, ``destroy`` and ``set_if_version``, so the middleware can
      tell the client. Only the opportunistic sweep after a successful
      write logs its failure instead (the session is stored).
    - JSON only, never pickle: a row is data, never code.

    Call ``close()`` when done; it closes every thread's connection.
    """

    lock_poll: float = 0.02
    """Seconds between two tries of acquire() while the lock is taken."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock = time.time,
                 sweep_interval: float = 60.0, busy_timeout: int = 5000,
                 lock_lease: float = 5.0) -> None:
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
        self._held: dict[tuple[str, str], None] = {}  # (sid, owner) of the locks held in this process
        self._renewer: threading.Thread | None = None
        self._stop_renewing = threading.Event()
        _create_owner_only(path)
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
        held: _ThreadConnection | None = getattr(self._local, "held", None)
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
            if connection.in_transaction:  # SQLite itself rolls back on some errors (SQLITE_FULL)
                connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except BaseException:  # a failed COMMIT must not leave this thread's connection in a transaction
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _owner(self, token: str | None = None) -> str:
        """Who holds a lock: ``host:pid:token``, the token the caller's (a request's) or this thread's."""
        if token is None:
            token = getattr(self._local, "owner", None)
            if token is None:
                token = self._local.owner = secrets.token_hex(8)
        elif not token or ":" in token:
            raise ValueError(f"a lock owner must be a non-empty token without ':', not {token!r}")
        return f"{_HOST}:{os.getpid()}:{token}"

    def close(self) -> None:
        """Close every thread's connection and stop renewing leases; the store cannot be used afterwards."""
        self._stop_renewing.set()
        with self._mutex:
            self._closed = True
            connections = list(self._connections)
            self._connections = weakref.WeakSet()
            renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(5)
        for connection in connections:
            connection.close()

    # -- reading rows --

    def _decode(self, connection: sqlite3.Connection, sid: str, text: Any,
                version: int) -> dict[str, Any] | None:
        """Parse a row's data; a corrupt row is logged, deleted, and reads as None."""
        try:
            data = parse_json(text)
        except (TypeError, ValueError, RecursionError):  # RecursionError: valid JSON, too deep
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
            try:
                self.sweep()
            except sqlite3.Error as exc:  # the write itself succeeded; the next one sweeps again
                with self._mutex:
                    self._last_sweep_ms = last
                _log.warning("SQLiteStore: sweeping expired sessions failed: %s", exc)

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
        count: int = self._connection().execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        return count

    def clear(self) -> None:
        """Forget every session (locks are left alone: their holders release them)."""
        self._connection().execute("DELETE FROM sessions")

    # -- versions (MergingSessionMiddleware) --

    def get_versioned(self, sid: str) -> tuple[dict[str, Any] | None, int]:
        """The stored session (None if absent, expired or corrupt) and its version (0 when none)."""
        return self._read(self._connection(), sid)

    def set_if_version(self, sid: str, session: Session | Mapping[str, Any], version: int) -> bool:
        """In one transaction: store the session only if its version is still ``version``.

        0 means "only if there is none" (an expired row counts as none).
        Returns False, writing nothing, on a mismatch.
        """
        data, text = session_json(session)
        if self._version(self._connection(), sid) != version:
            return False  # a mismatch seen without waiting for the write lock (WAL: reads do not wait)
        with self._transaction() as connection:
            if self._version(connection, sid) != version:
                return False
            connection.execute(_UPSERT_SESSION, (sid, text, expiry_ms(data)))
        self._maybe_sweep()
        return True

    def _version(self, connection: sqlite3.Connection, sid: str) -> int:
        """The live session's version, 0 if there is none (an expired row counts as none)."""
        row = connection.execute("SELECT expires_ms, version FROM sessions WHERE sid = ?", (sid,)).fetchone()
        if row is not None and (row[0] is None or row[0] > clock_ms(self._clock)):
            return int(row[1])
        return 0

    # -- locks (LockingSessionMiddleware across processes) --

    def acquire(self, sid: str, timeout: float, owner: str | None = None) -> bool:
        """Take the lock for sid, waiting up to ``timeout`` seconds; True if ``owner`` now holds it.

        ``owner`` names the holder (a request: any token without ':'); by
        default it is this store object in this thread. Free locks, our own
        (renewed), those whose lease has run out and those of a dead process
        on this host are taken at once; otherwise it polls every
        ``lock_poll`` seconds.
        """
        owner = self._owner(owner)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._try_lock(sid, owner):
                with self._mutex:
                    self._held[(sid, owner)] = None
                self._start_renewing()
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.lock_poll, remaining))

    def _try_lock(self, sid: str, owner: str) -> bool:
        """One attempt: take a free, own or expired lock, or one whose owner process is dead."""
        connection = self._connection()
        now_ms = clock_ms(self._clock)
        lease_end = now_ms + round(self.lock_lease * 1000)
        if connection.execute(_TAKE_LOCK, (sid, owner, lease_end, now_ms)).rowcount == 1:
            return True
        row = connection.execute("SELECT owner FROM locks WHERE sid = ?", (sid,)).fetchone()
        if row is None or not isinstance(row[0], str):
            return False
        pid = _lock_owner_pid(row[0])
        if pid is None or pid == os.getpid() or _process_is_alive(pid):
            return False
        taken = connection.execute("UPDATE locks SET owner = ?, expires_ms = ? WHERE sid = ? AND owner = ?",
                                   (owner, lease_end, sid, row[0])).rowcount == 1
        if taken:
            _log.warning("SQLiteStore: took over the lock of session %s from process %d, "
                         "which is gone", short_id(sid), pid)
        return taken

    def release(self, sid: str, owner: str | None = None) -> None:
        """Let go of the lock for sid if ``owner`` (as in acquire) holds it; not one taken over meanwhile."""
        owner = self._owner(owner)
        with self._mutex:
            self._held.pop((sid, owner), None)
        self._connection().execute("DELETE FROM locks WHERE sid = ? AND owner = ?", (sid, owner))

    def renew_leases(self) -> None:
        """Push back the lease of every lock this process holds by ``lock_lease`` (the renewer calls it)."""
        with self._mutex:
            held = list(self._held)
        if not held:
            return
        lease_end = clock_ms(self._clock) + round(self.lock_lease * 1000)
        with self._transaction() as connection:
            connection.executemany("UPDATE locks SET expires_ms = ? WHERE sid = ? AND owner = ?",
                                   [(lease_end, sid, owner) for sid, owner in held])

    def _start_renewing(self) -> None:
        """Start the daemon thread that renews held leases, once per store."""
        with self._mutex:
            if self._renewer is not None or self._closed:
                return
            self._renewer = threading.Thread(target=self._renew_while_open, daemon=True,
                                             name="SQLiteStore lease renewer")
        self._renewer.start()

    def _renew_while_open(self) -> None:
        """Every third of a lease, renew the leases held, until close()."""
        while not self._stop_renewing.wait(self.lock_lease / 3):
            try:
                self.renew_leases()
            except sqlite3.Error as exc:  # a busy file: the next round tries again
                _log.warning("SQLiteStore: renewing lock leases failed: %s", exc)
