"""A memory store that cannot leak and cannot be flooded (beyond express-session).

express-session's MemoryStore (session_demo's too, faithfully) keeps an
expired session until someone reads it, and nothing limits how many
sessions a stream of cookieless requests can create. BoundedMemoryStore
keeps the same JSON strings, sweeps expired ones as it is used, and is
bounded in sessions and bytes: when full it evicts the least recently used
session, anonymous ones first, as Redis and memcached evict rather than
refuse. It also keeps a version per session, for session_demo_extras.concurrency's merge.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from session_demo import (
    Clock, Session, Store, expiry_ms, clock_ms, parse_json, session_json, short_id,
    stored_cookie, stringify,
)

__all__ = ["BoundedMemoryStore", "SessionTooLargeError"]

_log = logging.getLogger("session_demo.extras")

# ---- a bounded memory store -------------------------------------------------
#
# express-session's MemoryStore (ours too, faithfully) leaks: an expired
# session goes only when someone reads it, and nothing limits how many
# sessions a stream of cookieless requests can create. BoundedMemoryStore
# keeps the same JSON strings, but
#   - a heap of (expiry, id) lets every request remove a few expired sessions
#     that nobody will read again (amortized: no full scan, no timer thread);
#   - max_sessions and max_bytes bound the whole store. When a bound is
#     reached the store never refuses the write: it evicts the least
#     recently used *anonymous* session (one no later request has come back
#     for: a cookieless visit, a bot), and only when none is left the least
#     recently used *established* one (a browser that came back: it sent
#     the cookie again and the session was read). A flood of new sessions
#     therefore pushes out other flood sessions first, and a user who keeps
#     visiting stays at the recent end of the queue.
#   - max_session_bytes caps one session, so that no single session can
#     push out everyone else; a bigger one is refused with
#     SessionTooLargeError.


class SessionTooLargeError(ValueError):
    """One session is larger than ``BoundedMemoryStore.max_session_bytes``: it is not stored.

    Raised by ``set`` and ``set_if_version``; nothing is evicted and the
    stored copy, if any, is kept. The store never refuses a session for
    lack of room (it evicts instead); only a session too large on its own.
    """


class _Entry:
    """One stored session: its JSON text and the store's bookkeeping about it."""

    __slots__ = ("text", "size", "expires_ms", "version", "established")

    def __init__(self, text: str, size: int, expires_ms: int | None, version: int,
                 established: bool) -> None:
        self.text = text
        self.size = size                  # bytes of text in UTF-8
        self.expires_ms = expires_ms      # None: never expires by time
        self.version = version            # bumped by every set(), not by touch()
        self.established = established    # read back by a later request (or is_established said so)


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
      ``max_sessions``). ``max_session_bytes`` (1 MiB, or ``max_bytes`` if
      smaller) caps one session: a larger one raises SessionTooLargeError.
    - A write is never refused for lack of room; the store evicts instead,
      as Redis and memcached do. To make room it drops expired sessions,
      then the least recently used *anonymous* session, and only when no
      other anonymous one is left the least recently used *established*
      one (``get``, ``set`` and ``touch`` count as use).
    - A session is *established* once the store is asked for it again after
      its first write (``get``/``get_versioned``, or ``touch``): a browser
      kept the cookie and came back. Until then it is *anonymous*, whatever
      it holds: a cookieless flood (even one whose requests change data,
      like a view counter's first visit) never comes back, so it only
      evicts itself. A login that regenerates the id is anonymous for one
      request, then established at the first request that sends the new
      cookie. ``is_established(data)``, if given, marks a session
      established at its write (e.g. ``lambda data: "user" in data``, so a
      login counts at once).
    - What this guarantees: a flood of new sessions, or of sessions that
      come back, never refuses a login, and a user is evicted only if
      ``max_sessions`` other sessions were used (or ``max_bytes`` written)
      since that user's last request. It is not a rate limit: a flood
      fast enough to cycle the whole store between two visits of a user
      still evicts that user. Size the store for that.
    - Versions (``get_versioned``, ``set_if_version``) for
      ``MergingSessionMiddleware``: every set() bumps the version; touch() does
      not. Versions are per id and restart at 1 after a session is
      deleted; the middleware never writes a deleted id with version 0.
    - ``stats()`` reports what the store holds and has removed.

    Safe to share between threads (one lock).
    """

    sweep_batch: int = 8
    """How many heap entries a single get/set/touch/destroy may pop."""

    def __init__(self, *, clock: Clock = time.time, max_sessions: int = 10_000,
                 max_bytes: int = 64 * 1024 * 1024, max_session_bytes: int | None = None,
                 is_established: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a whole number >= 1, not {max_sessions!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a whole number of bytes >= 1, not {max_bytes!r}")
        if max_session_bytes is None:
            max_session_bytes = min(1024 * 1024, max_bytes)
        if (isinstance(max_session_bytes, bool) or not isinstance(max_session_bytes, int)
                or not 1 <= max_session_bytes <= max_bytes):
            raise ValueError(f"max_session_bytes must be a whole number of bytes from 1 to "
                             f"max_bytes={max_bytes}, not {max_session_bytes!r}")
        if is_established is not None and not callable(is_established):
            raise TypeError("is_established must be a callable taking the stored data, or None")
        self._clock = clock
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.max_session_bytes = max_session_bytes
        self._is_established = is_established
        self._lock = threading.Lock()
        self._anonymous: OrderedDict[str, _Entry] = OrderedDict()    # least recently used first
        self._established: OrderedDict[str, _Entry] = OrderedDict()
        self._expiry_heap: list[tuple[int, str]] = []
        self._bytes = 0
        self._expired = 0
        self._evicted = 0
        self._evicted_established = 0

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

    def _live(self, sid: str, now_ms: int, *, returning: bool) -> _Entry | None:
        """The entry for sid unless it has expired (then it is removed), made the most recently used.

        ``returning``: a request came back for it (get, touch), so it is established from now on.
        """
        entry = self._entry(sid)
        if entry is None:
            return None
        if entry.expires_ms is not None and entry.expires_ms <= now_ms:
            self._remove(sid)
            self._expired += 1
            return None
        if returning and not entry.established:
            entry.established = True
            del self._anonymous[sid]
            self._established[sid] = entry
        (self._established if entry.established else self._anonymous).move_to_end(sid)
        return entry

    def _schedule(self, sid: str, entry: _Entry) -> None:
        """Put the entry's expiry on the heap; rebuild the heap when stale entries outnumber live ones."""
        if entry.expires_ms is not None:
            heapq.heappush(self._expiry_heap, (entry.expires_ms, sid))
        if len(self._expiry_heap) > 2 * self._count() + 64:
            self._expiry_heap = [(e.expires_ms, s) for od in (self._anonymous, self._established)
                                 for s, e in od.items() if e.expires_ms is not None]
            heapq.heapify(self._expiry_heap)

    def _least_recently_used(self, sid: str) -> str | None:
        """The session to evict: the LRU anonymous one, else the LRU established one; never sid."""
        for entries in (self._anonymous, self._established):
            # sid was just moved to the end of its queue: the first other id is the LRU.
            victim = next((other for other in entries if other != sid), None)
            if victim is not None:
                return victim
        return None

    def _make_room(self, sid: str, added: int, old_size: int, new_size: int, now_ms: int) -> None:
        """Drop expired sessions, then evict least recently used ones (never sid), until the write fits."""
        while (self._count() + added > self.max_sessions
               or self._bytes - old_size + new_size > self.max_bytes):
            if self._expiry_heap and self._expiry_heap[0][0] <= now_ms:
                self._sweep(now_ms, 1)
                continue
            victim = self._least_recently_used(sid)
            if victim is None:  # sid alone is over max_bytes (a touch that grew it): cannot happen
                raise SessionTooLargeError(f"session {short_id(sid)} is {new_size} bytes, more than "
                                           f"max_bytes={self.max_bytes}")
            established = self._entry(victim).established  # type: ignore[union-attr]
            self._remove(victim)
            self._evicted += 1
            self._evicted_established += established
            _log.debug("evicted %s session %s to make room",
                       "established" if established else "anonymous", short_id(victim))

    def _write(self, sid: str, session: Session | Mapping[str, Any], expected: int | None) -> bool:
        """set() and set_if_version(): check the version, make room, store, bump the version."""
        data, text = session_json(session)
        size = len(text.encode("utf-8", "surrogatepass"))
        expires_ms = expiry_ms(data)
        with self._lock:
            now_ms = clock_ms(self._clock)
            self._sweep(now_ms, self.sweep_batch)
            entry = self._live(sid, now_ms, returning=False)
            version = entry.version if entry is not None else 0
            if expected is not None and expected != version:
                return False
            if size > self.max_session_bytes:
                raise SessionTooLargeError(
                    f"session {short_id(sid)} is {size} bytes of JSON, more than "
                    f"max_session_bytes={self.max_session_bytes}; not storing it")
            established = entry is not None and entry.established
            if not established and self._is_established is not None and self._is_established(data):
                established = True
            self._make_room(sid, 0 if entry is not None else 1,
                            entry.size if entry is not None else 0, size, now_ms)
            self._remove(sid)
            new = _Entry(text, size, expires_ms, version + 1, established)
            (self._established if established else self._anonymous)[sid] = new
            self._bytes += size
            self._schedule(sid, new)
            return True

    # -- the Store interface --

    def get(self, sid: str) -> dict[str, Any] | None:
        """The stored session, or None if there is none or it has expired (and is now removed)."""
        return self.get_versioned(sid)[0]

    def set(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Store the session as JSON, evicting least recently used sessions if a bound is reached.

        Raises SessionTooLargeError if it alone is larger than ``max_session_bytes``.
        """
        self._write(sid, session, None)

    def destroy(self, sid: str) -> None:
        """Delete the session, if there is one."""
        with self._lock:
            self._sweep(clock_ms(self._clock), self.sweep_batch)
            self._remove(sid)

    def touch(self, sid: str, session: Session | Mapping[str, Any]) -> None:
        """Replace the stored cookie (so its expiry) with the session's; the data and version stay."""
        cookie = stored_cookie(session)
        with self._lock:
            now_ms = clock_ms(self._clock)
            self._sweep(now_ms, self.sweep_batch)
            entry = self._live(sid, now_ms, returning=True)
            if entry is None:
                return
            data = parse_json(entry.text)
            data["cookie"] = cookie
            text = stringify(data)
            size = len(text.encode("utf-8", "surrogatepass"))
            self._make_room(sid, 0, entry.size, size, now_ms)
            self._bytes += size - entry.size
            entry.text, entry.size, entry.expires_ms = text, size, expiry_ms(data)
            self._schedule(sid, entry)

    def all(self) -> dict[str, dict[str, Any]]:
        """Every live session, keyed by id (all expired ones are swept first)."""
        with self._lock:
            self._sweep(clock_ms(self._clock), None)
            return {sid: parse_json(entry.text)
                    for entries in (self._anonymous, self._established)
                    for sid, entry in entries.items()}

    def length(self) -> int:
        """The number of live sessions (all expired ones are swept first)."""
        with self._lock:
            self._sweep(clock_ms(self._clock), None)
            return self._count()

    def clear(self) -> None:
        """Forget every session (the expired and evicted counts are kept)."""
        with self._lock:
            self._anonymous.clear()
            self._established.clear()
            self._expiry_heap = []
            self._bytes = 0

    # -- versions (MergingSessionMiddleware) --

    def get_versioned(self, sid: str) -> tuple[dict[str, Any] | None, int]:
        """The stored session (None if absent or expired) and its version (0 when there is none)."""
        with self._lock:
            now_ms = clock_ms(self._clock)
            self._sweep(now_ms, self.sweep_batch)
            entry = self._live(sid, now_ms, returning=True)
            if entry is None:
                return None, 0
            return parse_json(entry.text), entry.version

    def set_if_version(self, sid: str, session: Session | Mapping[str, Any], version: int) -> bool:
        """Store the session only if its version is still ``version`` (0: only if there is none).

        Returns False, writing nothing, on a mismatch. May raise SessionTooLargeError as set() does.
        """
        return self._write(sid, session, version)

    # -- monitoring --

    def stats(self) -> dict[str, int]:
        """A snapshot, without sweeping: live (entries held; an expired one not yet swept
        still counts), expired and evicted (removed so far; evicted_established of them
        established), bytes (UTF-8 length of the stored JSON texts), anonymous, established.
        """
        with self._lock:
            return {
                "live": self._count(),
                "expired": self._expired,
                "evicted": self._evicted,
                "evicted_established": self._evicted_established,
                "bytes": self._bytes,
                "anonymous": len(self._anonymous),
                "established": len(self._established),
            }
