"""No lost updates: two requests for one session at once (beyond express-session).

Each request loads the whole session and, if it changed, saves it whole.
Two requests for one session at the same time (two tabs, a page and its
XHRs) both load the same copy; the later save wins and the other's change
is lost (expressjs/session #361, #917). That is express-session's
behaviour, and session_demo's SessionMiddleware keeps it. The two
middlewares here wrap its ``load`` and ``save`` steps instead:

    LockingSessionMiddleware   one request per session at a time, from load
                               to save; keeps every change, counters included
    MergingSessionMiddleware   compare-and-set at save; keeps concurrent
                               changes to *different* keys: of two requests
                               that change the *same* key (a counter), the
                               one saved first keeps its change
    TombstoneStore             a store wrapper: an id destroyed (logout) is
                               not written back by a request that loaded it
                               before, in any of the three modes

    middleware = LockingSessionMiddleware(SessionOptions(secret=..., ...))

What each protects, exactly:

    concurrent requests for one session     default   merge   lock
    change different keys                   one lost  kept    kept
    change the same key (views += 1)        lost      lost*   kept
    one logs out, the other saves later     revived   gone    gone
    several processes (SQLiteStore)         as above  yes     yes

(* the change saved first stays, so never a stale value over a newer one:
in any order of loads and saves, at least as many kept as the default.
"revived": the save re-creates the destroyed session, so a stolen cookie
replayed during the logout survives it; TombstoneStore prevents that in
one process.)
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from session_demo import (
    Clock, RequestInfo, RequestState, Session, SessionLoadError, SessionMiddleware, SessionOptions,
    Store, hash_session, short_id, stringify,
)

__all__ = ["LockingSessionMiddleware", "MergingSessionMiddleware", "SessionBusyError",
           "SessionConflictError", "TombstoneStore"]

_log = logging.getLogger("session_demo.extras")


class SessionBusyError(SessionLoadError):
    """Another request held this session's lock for longer than ``lock_timeout``: answer 503."""

    status = 503
    advice = "Another request is using this session; try again"


class SessionConflictError(RuntimeError):
    """MergingSessionMiddleware gave up: the session kept changing under this request's save.

    Raised out of ``end()`` (via ``save``) so that this request's lost
    changes are not silent: the adapter can answer 5xx.
    """


class LockingSessionMiddleware(SessionMiddleware):
    """Requests with the same session id are served one at a time, from load to save.

    As PHP's file sessions do. The only strategy that keeps a
    read-modify-write of one key (a counter) exact. A lock per id in this
    process (threads); if the store also offers ``acquire``/``release``
    (SQLiteStore does), its lock is taken too, so that processes sharing the
    store wait for each other. Requests without a session id lock nothing.
    A request that waits longer than ``lock_timeout`` seconds gets a 503.

    What it protects: every change of concurrent requests for one session,
    counters included, and a logout (the request after it finds the
    session gone), across processes when the store has locks. Its price:
    requests for one session wait for each other.

    The lock is released when the request ends, whatever the handler
    raised, BaseException (SystemExit, KeyboardInterrupt) included: both
    adapters call ``end()`` (or ``release()``) in a ``finally``, and
    ``end()`` releases in a ``finally`` even if the store fails. A lock the
    process could not release because it died is the store's to recover
    (SQLiteStore takes over a dead process's lock at once).

    A lock belongs to the request (its RequestState), not to a thread: the
    ASGI adapter loads a session in one thread and saves it in another. The
    store is asked for its lock with the request's own owner token
    (``acquire(sid, timeout, owner)``, ``release(sid, owner)``).
    """

    def __init__(self, options: SessionOptions, *, lock_timeout: float = 10.0) -> None:
        super().__init__(options)
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or lock_timeout < 0:
            raise ValueError("lock_timeout must be a number of seconds >= 0")
        self.timeout = float(lock_timeout)
        store = options.store
        self.store_locks = callable(getattr(store, "acquire", None)) and callable(getattr(store, "release", None))
        self._mutex = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}  # id -> (lock, requests using it)
        self._loading: dict[int, RequestState] = {}  # id(RequestInfo) -> its state, while begin() runs

    def begin(self, request: RequestInfo) -> RequestState | None:
        """As SessionMiddleware.begin; if loading fails after the lock was taken, release it."""
        try:
            return super().begin(request)
        except BaseException:
            with self._mutex:
                state = self._loading.get(id(request))
            if state is not None:
                self.release(state)
            raise
        finally:
            with self._mutex:
                self._loading.pop(id(request), None)

    def load(self, state: RequestState) -> Any:
        """Wait (at most lock_timeout) for this session's lock, then read it."""
        owner = secrets.token_hex(8)  # this request, whichever thread it runs in
        self._acquire(state.session_id, owner)
        state.locked_id = state.session_id  # type: ignore[attr-defined]
        state.lock_owner = owner  # type: ignore[attr-defined]
        with self._mutex:
            self._loading[id(state.request)] = state
        return super().load(state)

    def end(self, state: RequestState) -> None:
        """As SessionMiddleware.end, then release the lock."""
        try:
            super().end(state)
        finally:
            self.release(state)

    def release(self, state: RequestState) -> None:
        """Let go of the lock load() took for this request, if any; safe to call twice, from any thread."""
        sid = getattr(state, "locked_id", None)
        if sid is None:
            return
        state.locked_id = None  # type: ignore[attr-defined]
        try:
            if self.store_locks:
                self.options.store.release(sid, state.lock_owner)  # type: ignore[attr-defined]
        finally:
            with self._mutex:
                lock, _ = self._locks[sid]
            lock.release()  # a threading.Lock may be released by another thread than the one that took it
            self._checkin(sid)

    def _acquire(self, sid: str, owner: str) -> None:
        """Take this id's lock in this process and, if the store has locks, in the store (as ``owner``)."""
        deadline = time.monotonic() + self.timeout
        lock = self._checkout(sid)
        if not lock.acquire(timeout=self.timeout):
            self._checkin(sid)
            raise SessionBusyError(f"session {short_id(sid)} stayed locked for {self.timeout} s")
        if not self.store_locks:
            return
        try:
            store = self.options.store
            held = store.acquire(sid, max(0.0, deadline - time.monotonic()), owner)  # type: ignore[attr-defined]
        except BaseException:
            lock.release()
            self._checkin(sid)
            raise
        if not held:
            lock.release()
            self._checkin(sid)
            raise SessionBusyError(f"session {short_id(sid)} stayed locked in the store for {self.timeout} s")

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


def _json_values(data: Mapping[str, Any]) -> dict[str, str]:
    """Each top-level data key (not the cookie) with its value as JSON text, to compare later."""
    return {key: stringify(value) for key, value in data.items() if key != "cookie"}


class _Base:
    """What the store held for ``sid`` when this request last read or wrote it: the base its changes are
    measured from. ``version`` is the store's version then, or None after this request's own write
    (set_if_version does not say the new version; the next write re-reads first)."""

    __slots__ = ("sid", "version", "values")

    def __init__(self, sid: Any, version: int | None, values: dict[str, str]) -> None:
        self.sid = sid
        self.version = version
        self.values = values


class MergingSessionMiddleware(SessionMiddleware):
    """Save with compare-and-set; on a conflict, apply this request's own changes to the fresh copy.

    The store must keep a version per session (``get_versioned``,
    ``set_if_version``: BoundedMemoryStore, SQLiteStore and RedisStore do).
    A request's *changes* are the top-level keys whose value differs from
    what it loaded (set, changed or deleted). At the end of the request the
    session is saved only if the stored version is still the one loaded.
    If another request saved in between, the fresh copy is read and each of
    this request's changes is applied to it, unless the other request
    changed that same key too: then the value saved first stays. The save
    is tried again until it succeeds.

    What it protects: concurrent changes to *different* top-level keys (a
    cart and a theme), a deleted key, and a logout (a session destroyed
    meanwhile is not written back), across processes sharing the store.
    Nobody waits for another request's handler.

    Two requests that change the *same* key keep one change, the one saved
    first: a later save never puts back a stale value. So a counter that
    two requests both read as 5 is left at 6, not at 7, but a request that
    read 5 never sets it back to 6 after others made it 8, as the default's
    last write does. In any order of loads and saves it keeps at least as
    many changes as the default; only LockingSessionMiddleware keeps a
    counter exact. Nested values merge as a whole: a key is one value.

    A conflict costs a re-read and another compare-and-set; each further
    attempt means yet another request saved this session in between, and
    waits a little first (``backoff`` seconds, doubling up to
    ``max_backoff``, with jitter). In one process, the retries for one
    session take turns. After ``attempts`` it gives up and raises
    SessionConflictError. ``session.save()`` in a handler merges the same way.

    Measured with ``python3 benchmarks/bench_session.py --lost-updates``:
    16 clients x 25 requests at once on one cookie against server.py,
    changes kept of 400, min / median / max of 5 runs, every answer a 200:

                                         default       merge         lock
      counter, one process               399/400/400   399/400/400   400
      counter, one process, waits 1 ms   62/71/81      72/77/90      400
      counter, two on one SQLite         144/288/357   240/360/384   400
      own keys, one process              400           400           400
      own keys, one process, waits 1 ms  60/66/82      400           400
      own keys, two on one SQLite        124/143/221   400           400

    (Counter: every request adds one to views; own keys: client N adds one
    to its own key. server.py's handler is so short that in one process
    requests hardly overlap; one that waits 1 ms, as for a database, lets
    them. Two on one SQLite: two processes, requests alternating.) The
    counter varies from run to run in both modes; in a given order of
    loads and saves, merge never keeps fewer than the default (the tests
    try every order of three requests).
    """

    backoff = 0.001  # seconds before the third attempt; doubles with each one after it, up to max_backoff
    max_backoff = 0.1

    def __init__(self, options: SessionOptions, *, attempts: int = 12) -> None:
        super().__init__(options)
        store = options.store
        if not (callable(getattr(store, "get_versioned", None)) and callable(getattr(store, "set_if_version", None))):
            raise TypeError("MergingSessionMiddleware needs a store with versions "
                            "(get_versioned and set_if_version), e.g. BoundedMemoryStore or SQLiteStore")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 2:
            raise ValueError("attempts must be a whole number >= 2 (a conflict needs a second try)")
        self.attempts = attempts
        self._save_turns = tuple(threading.Lock() for _ in range(64))  # striped by session id

    def begin(self, request: RequestInfo) -> RequestState | None:
        """As SessionMiddleware.begin; the session's own save() and reload() then merge and read as ours do."""
        state = super().begin(request)
        if state is not None:
            state.store = _MergingStoreView(self, state)
        return state

    def load(self, state: RequestState) -> Any:
        """Read the session and remember its version and values: the base this request's changes are measured from."""
        return self.read(state, state.session_id)

    def read(self, state: RequestState, sid: Any) -> Any:
        """The stored session ``sid``; it becomes this request's base."""
        data, version = self.options.store.get_versioned(sid)  # type: ignore[attr-defined]
        state.merge_base = _Base(sid, version, _json_values(data) if data else {})  # type: ignore[attr-defined]
        return data

    def save(self, state: RequestState) -> None:
        """Compare-and-set; on a conflict, merge this request's changes into the fresh copy and retry."""
        session = state.session
        assert session is not None
        self.write(state, session)

    def write(self, state: RequestState, session: Session) -> None:
        """Store ``session`` by compare-and-set, merging this request's changes into whatever was saved meanwhile."""
        store = self.options.store
        base = getattr(state, "merge_base", None)
        if base is None or base.sid != session.id:
            base = _Base(session.id, 0, {})  # a new or regenerated session: stored only if there is none
        now = _json_values(session)
        changed = {key: session[key] for key in session if base.values.get(key) != now[key]}
        removed = [key for key in base.values if key not in now]
        version = base.version
        if version is not None and self._stored(state, session, version):
            return  # nobody saved it meanwhile: the common case, and no turn to wait for
        with self._save_turns[hash(session.id) % len(self._save_turns)]:
            for attempt in range(1, self.attempts):
                if attempt >= 2:  # another request saved between our read and our write: let it pass
                    pause = min(self.max_backoff, self.backoff * 2 ** (attempt - 2))
                    time.sleep(random.uniform(0.5, 1.0) * pause)
                fresh, version = store.get_versioned(session.id)  # type: ignore[attr-defined]
                if not fresh:
                    _log.warning("merge: session %s was destroyed meanwhile; not saving it again",
                                 short_id(session.id))
                    return
                kept = _merge(state, session, base.values, now, changed, removed, fresh)
                _log.debug("merge: %s changed meanwhile; %d change(s) re-applied, %d key(s) another "
                           "request changed first", short_id(session.id),
                           len(changed) + len(removed) - len(kept), len(kept))
                if self._stored(state, session, version):
                    return
        _log.error("merge: gave up saving session %s after %d attempts; this request's changes are lost",
                   short_id(session.id), self.attempts)
        raise SessionConflictError(f"session {short_id(session.id)} changed under {self.attempts} "
                                   f"save attempts in a row; this request's changes were not stored")

    def _stored(self, state: RequestState, session: Session, version: int) -> bool:
        """One compare-and-set; on success the stored copy becomes this request's base."""
        if not self.options.store.set_if_version(session.id, session, version):  # type: ignore[attr-defined]
            return False
        state.merge_base = _Base(session.id, None, _json_values(session))  # type: ignore[attr-defined]
        if session.save_sets_stored_hash:
            state.stored_hash = hash_session(session)
        return True


def _merge(state: RequestState, session: Session, before: Mapping[str, str], mine: Mapping[str, str],
           changed: Mapping[str, Any], removed: list[str], fresh: Mapping[str, Any]) -> list[str]:
    """Make ``session`` the fresh copy plus this request's changes (from ``before`` to ``mine``, as JSON).
    A key the fresh copy also changed, to another value, keeps the fresh value: those keys are returned."""
    theirs = _json_values(fresh)
    merged = Session(state, session.id, session.cookie, fresh)  # drops reserved keys, as a load does
    kept_theirs: list[str] = []
    for key in [*changed, *removed]:
        if theirs.get(key) == before.get(key):
            # Only this request changed the key: its change goes in.
            if key in changed:
                merged[key] = changed[key]
            else:
                merged.pop(key, None)
        elif theirs.get(key) != mine.get(key):
            # Both changed it, differently: the value saved first stays.
            kept_theirs.append(key)
    session.clear()
    session.update(merged)
    return kept_theirs


class _MergingStoreView(Store):
    """The store as one request's session sees it under MergingSessionMiddleware: ``session.save()``
    merges as the end of the request does and ``session.reload()`` moves the base; the rest is the store's."""

    def __init__(self, middleware: MergingSessionMiddleware, state: RequestState) -> None:
        self._middleware = middleware
        self._state = state
        self._store = middleware.options.store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get(self, sid: str) -> dict[str, Any] | None:
        """The stored session; it becomes this request's base (reload)."""
        data: dict[str, Any] | None = self._middleware.read(self._state, sid)
        return data

    def set(self, sid: str, session: Session) -> None:
        """The session's own save(): merged, as at the end of the request."""
        if isinstance(session, Session) and session.id == sid:
            self._middleware.write(self._state, session)
        else:
            self._store.set(sid, session)

    def destroy(self, sid: str) -> None:
        """The store's destroy."""
        self._store.destroy(sid)


# ---- a logout cannot be undone by a slower request ----------------------------
#
# Request A loads the session; request B (the victim logging out) destroys
# it; A ends and saves its copy: the session is back, and a stolen cookie
# that A carried survives the logout. express-session does the same (Django
# refuses such a save). TombstoneStore remembers destroyed ids for a while
# and refuses to write them again.


class TombstoneStore:
    """Wraps a store so that a destroyed session id cannot be written again for ``ttl`` seconds.

    Beyond express-session, opt-in: ``SessionOptions(store=TombstoneStore(MemoryStore()), ...)``.
    Every ``destroy(sid)`` (``session.destroy()``, ``regenerate()``'s old id,
    ``unset='destroy'``) leaves a tombstone; ``set``, ``touch`` and
    ``set_if_version`` of a tombstoned id then write nothing and log a
    warning (``set_if_version`` returns False, so a merge sees the session
    gone). A request that loaded the session before the logout therefore
    cannot bring it back, in any concurrency mode; nothing else changes.

    Tombstones live in this process, for ``ttl`` seconds (600: longer than
    any request should take), at most ``max_tombstones`` of them (the
    oldest go first). Processes sharing a SQLiteStore do not see each
    other's: use ``'lock'`` or ``'merge'`` there, which protect a logout
    across processes. Every other attribute (``all``, ``ready``, versions,
    locks) is the wrapped store's, and the optional methods exist only if
    the wrapped store has them, so the middleware sees the same store.
    """

    def __init__(self, store: Store, *, ttl: float = 600.0, max_tombstones: int = 100_000,
                 clock: Clock = time.time) -> None:
        if not (isinstance(ttl, (int, float)) and ttl > 0):
            raise ValueError("ttl must be a number of seconds > 0")
        if isinstance(max_tombstones, bool) or not isinstance(max_tombstones, int) or max_tombstones < 1:
            raise ValueError("max_tombstones must be a whole number >= 1")
        self.store = store
        self.ttl = float(ttl)
        self.max_tombstones = max_tombstones
        self._clock = clock
        self._mutex = threading.Lock()
        self._tombstones: OrderedDict[str, float] = OrderedDict()  # id -> when it may be written again

    def __getattr__(self, name: str) -> Any:
        """Any other attribute is the wrapped store's; touch and set_if_version are guarded first."""
        attribute = getattr(self.store, name)
        if name == "touch":
            return self._guarded(attribute, None)
        if name == "set_if_version":
            return self._guarded(attribute, False)
        return attribute

    def _guarded(self, write: Any, refused: Any) -> Any:
        """``write(sid, ...)``, except for a tombstoned sid: then nothing is written and ``refused`` returned."""
        def guarded(sid: str, *args: Any) -> Any:
            if self.buried(sid):
                return refused
            return write(sid, *args)
        return guarded

    def buried(self, sid: str) -> bool:
        """Is sid tombstoned (then a warning is logged)? Forgets tombstones whose time is up."""
        now = self._clock()
        with self._mutex:
            while self._tombstones and next(iter(self._tombstones.values())) <= now:
                self._tombstones.popitem(last=False)  # they are kept in order of expiry
            buried = sid in self._tombstones
        if buried:
            _log.warning("session %s was destroyed by another request; not writing it back",
                         short_id(sid))
        return buried

    def get(self, sid: str) -> Any:
        """The wrapped store's get."""
        return self.store.get(sid)

    def set(self, sid: str, session: Any) -> None:
        """The wrapped store's set, unless sid was destroyed less than ``ttl`` seconds ago."""
        if not self.buried(sid):
            self.store.set(sid, session)

    def destroy(self, sid: str) -> None:
        """Leave a tombstone for sid, then destroy it in the wrapped store."""
        with self._mutex:
            self._tombstones.pop(sid, None)
            self._tombstones[sid] = self._clock() + self.ttl
            while len(self._tombstones) > self.max_tombstones:
                self._tombstones.popitem(last=False)
        self.store.destroy(sid)
