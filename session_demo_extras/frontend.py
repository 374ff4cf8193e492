"""The front end of a session server a network can reach (beyond express-session).

session_demo's SessionRequestHandler and SessionHTTPServer are plain http.server with sessions: fine
on your own machine, defenceless on a network. In Node what follows lives below Express, in the http
module; here it lives beside the module, in a handler and a server that subclass its pair:

    from session_demo_extras.frontend import GuardedHTTPServer, GuardedRequestHandler

    class Handler(GuardedRequestHandler):  # instead of SessionRequestHandler
        def do_GET(self): ...

    GuardedHTTPServer(("", 3000), Handler, middleware).serve_forever()

The design: a thread only for a connection that has a request to serve. http.server gives each
connection a thread for as long as it stays open, so a thousand connections that say nothing hold a
thousand threads; capping them (as this module once did, 503 past 256) hands the site to whoever
opens the most sockets. Here connections wait in a *waiting room* instead:

1. One thread runs a ``selectors`` loop over every connection that is waiting for a request head:
   new connections, and keep-alive connections back from their last answer. It reads what arrives
   into the connection's buffer, and costs nothing while they are silent.
2. Once a connection's buffer holds a whole head, the loop hands it to a worker thread, which runs
   the handler for that one request (the body is read from the socket as the handler asks). A store
   call that hangs for one session holds that worker only: the other requests get other workers.
   Workers are kept for the next request and leave after a minute with nothing to do.
3. After the answer, a keep-alive connection goes back to the waiting room, its unread bytes with it
   (a pipelined request already there is served by the same worker first).
4. The waiting room is bounded: with ``max_waiting`` connections waiting (half the descriptors the
   process may open), a new one makes room by closing the one that has waited longest -- an idle
   keep-alive connection first, as nginx does -- instead of being refused. Out of descriptors
   altogether, ``accept`` closes one the same way, or, with none waiting, backs off
   ``accept_backoff`` seconds instead of spinning. An attacker's silent sockets can then only push
   each other out; a visitor whose head arrives is served.

A waiting connection costs its socket (and the kernel's buffers for it), a small record and the
bytes of its head so far (at most ``max_head_size``); no thread. ``python3 benchmarks/bench_idle.py``
prints what 1,000 idle connections cost the demo server (1 to 2 KB each) and how long a visitor
then waits.

The guards, each with what it defends against:

- ``idle_timeout`` (5 s, Node's keep-alive timeout): a connection that sends nothing for this long
  is closed, in the waiting room or while a handler reads it; each write must progress within it too.
- ``head_timeout`` (60 s, Node's headersTimeout): the whole head within this, counted from its first
  byte (slowloris: a byte at a time).
- ``max_head_size`` (16 KB, Node's limit): a larger head is answered 431, never read whole.
- ``request_timeout`` (300 s, Node's requestTimeout): a request whose body trickles in is cut off.
- A body the handler did not read to its end closes the connection (request smuggling: it must not
  be read as the next request).
- A header line http.client cannot read, or a control character in the request line, is a 400
  (request smuggling; a raw escape in a log), with no interim 100 Continue before a refusal.
- Nagle's algorithm is off, so a held-back last byte never waits for a delayed ACK.

The price: handing each request from the loop to a worker costs some CPU per request, against a
thread that stays with its connection (http.server's way). In exchange, a quiet connection holds no
thread, and fewer threads contend for the GIL at many connections, which kept the slowest answers
(p99) lower in our wrk runs at 64 connections. A worker that lingered on its connection for the next
request was cheaper at 8 connections and slower at 64, so workers do not linger.

TLS: end it in a proxy in front. A listening socket wrapped with ssl works (each connection is then
held by a worker, as the loop cannot read encrypted heads), but its handshake runs in the loop.

Deadlines in the waiting room are checked a few times per timeout (Node checks its own every 30 s by
default), so a connection may outstay its timeout by a tenth of it.
"""

from __future__ import annotations

import collections
import contextlib
import email.errors
import errno
import io
import logging
import queue
import re
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from session_demo import SessionHTTPServer, SessionMiddleware, SessionRequestHandler

__all__ = ["GuardedRequestHandler", "GuardedHTTPServer"]

_log = logging.getLogger("session_demo.frontend")
_CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


# ---- A connection and its bytes ------------------------------------------------


@dataclass(slots=True, eq=False)
class _Connection:
    """One client connection, whoever holds it: the waiting room, or a worker serving its request."""

    sock: socket.socket
    address: Any
    buffer: bytearray = field(default_factory=bytearray)  # received, not yet read by a handler
    waiting_since: float = 0.0  # when it last entered the waiting room
    last_byte_at: float = 0.0  # idle_timeout counts from here
    head_began: float | None = None  # the first byte of the head being waited for: head_timeout counts from here
    kept_alive: bool = False  # it has had an answer and waits for its next request


class _Reader(io.BufferedIOBase):
    """A handler's rfile: the connection's buffer first, then the socket. What the handler does not read
    stays in the buffer, to go back to the waiting room with the connection.

    While a head is read, ``limit`` caps the bytes that may be received for it (past it: 431) and no
    receive starts after ``deadline``."""

    deadline: float | None = None
    limit: int | None = None

    def __init__(self, connection: _Connection) -> None:
        super().__init__()
        self._connection = connection
        self._taken = 0  # bytes handed to the handler: tell()

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._taken

    def _receive(self) -> bool:
        """Receive more bytes into the buffer; False once the client has closed its side."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError("the request took too long to arrive")
        size = 65536
        if self.limit is not None:
            size = min(size, self.limit - self._taken - len(self._connection.buffer))
            if size <= 0:
                raise _HeadTooLarge()
        try:
            data = self._connection.sock.recv(size)
        except BlockingIOError:  # the kernel's receive timeout (idle_timeout) ran out
            raise TimeoutError("the client sent nothing for idle_timeout") from None
        self._connection.buffer += data
        return bool(data)

    def _take(self, size: int) -> bytes:
        buffer = self._connection.buffer
        data = bytes(buffer[:size])
        del buffer[:size]
        self._taken += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """One line, up to and with its b'\\n' (or ``size`` bytes, or what came before the end)."""
        size = -1 if size is None else size
        searched = 0
        while True:
            buffer = self._connection.buffer
            end = buffer.find(b"\n", searched) + 1
            if end and (size < 0 or end <= size):
                return self._take(end)
            if 0 <= size <= len(buffer):
                return self._take(size)
            searched = len(buffer)
            if not self._receive():
                return self._take(len(buffer))

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes (fewer at the end); all until the client closes when size is -1."""
        wanted = -1 if size is None else size
        while (wanted < 0 or len(self._connection.buffer) < wanted) and self._receive():
            pass
        return self._take(len(self._connection.buffer) if wanted < 0 else wanted)

    def read1(self, size: int = -1) -> bytes:
        """What is at hand, receiving once if nothing is."""
        if not self._connection.buffer:
            self._receive()
        return self._take(len(self._connection.buffer) if size < 0 else size)

    def peek(self, size: int = 0) -> bytes:
        """What is at hand without taking it, receiving once if nothing is."""
        if not self._connection.buffer:
            self._receive()
        return bytes(self._connection.buffer)

    def readinto(self, target: Any) -> int:
        data = self.read(len(memoryview(target)))
        memoryview(target)[:len(data)] = data
        return len(data)


class _Writer(io.BufferedIOBase):
    """A handler's wfile: each write goes out whole (socket.sendall), as socketserver's own does."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return memoryview(data).nbytes


class _HeadTooLarge(Exception):
    """More than the handler's max_head_size bytes came without the end of the head: answer 431."""


# ---- The handler: one request at a time ------------------------------------------


class _RequestChecks(SessionRequestHandler):
    """Heads a front end refuses before any handler runs, as Node's HTTP parser does: a header line
    http.client could not read (it hides the lines after it: request smuggling) and a control character
    in the request line are a 400, with no interim 100 Continue before it, nor before a 501."""

    def parse_request(self) -> bool:
        """Parse the head; a 400 (and False) to one that hides lines or has a control character in its
        request line."""
        if not super().parse_request():
            return False
        if self._head_hides_lines():
            self.send_error(400, "Bad header line")
            return False
        if _CONTROL_CHARACTER.search(self.requestline):  # never a 500, never raw in a log
            self.send_error(400, "Bad request target")
            return False
        return True

    def handle_expect_100(self) -> bool:
        """Send the interim 100 Continue only to a request parse_request and the handler will not refuse."""
        if (self._head_hides_lines() or _CONTROL_CHARACTER.search(self.requestline)
                or not hasattr(self, "do_" + self.command)):
            return True  # its 400 or 501 comes next, with no 100 before it
        return super().handle_expect_100()

    def _head_hides_lines(self) -> bool:
        """Did http.client meet a header line it could not read? (Not a multipart type's missing boundary.)"""
        return any(isinstance(defect, _UNREADABLE_LINE) for defect in self.headers.defects)


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_UNREADABLE_LINE = (email.errors.MissingHeaderBodySeparatorDefect,  # a line that is no header (no colon)
                    email.errors.FirstHeaderLineIsContinuationDefect)  # a first header line that is a fold


class GuardedRequestHandler(_RequestChecks):
    """A SessionRequestHandler with a front end's guards: deadlines, a head cap, the unread-body close.

    Under a GuardedHTTPServer it serves one request and hands the connection back to the waiting room;
    under any other socketserver it serves the connection's requests one after another, as
    http.server does."""

    rfile: _Reader
    idle_timeout: float = 5.0  # idle or stalled clients: each read and write within this (Node's keep-alive: 5 s)
    head_timeout: float = 60.0  # slowloris: the whole head within this (Node's headersTimeout: 60 s)
    max_head_size: int = 16 * 1024  # memory: a larger head is answered 431 (Node's limit: 16 KB)
    request_timeout: float = 300.0  # a thread held by a trickled body (Node's requestTimeout: 300 s)

    def setup(self) -> None:
        """Read from the connection's buffer (the waiting room's) and write straight to the socket."""
        self.connection = self.request
        held: Callable[[socket.socket], _Connection | None] | None = getattr(
            self.server, "connection_in_progress", None)
        connection = held(self.request) if held else None
        self._one_request = connection is not None  # the waiting room brings it back for the next
        if connection is None:  # a plain socketserver: this thread keeps the connection
            connection = _Connection(self.request, self.client_address)
            _configure_socket(self.request, self.idle_timeout)
        self._connection = connection
        self.rfile = _Reader(connection)
        self.wfile = _Writer(self.request)

    def handle(self) -> None:
        """One request, under the waiting room; else, as http.server, every request until the close."""
        if not self._one_request:
            super().handle()
            return
        self.close_connection = True
        self.handle_one_request()

    def handle_one_request(self) -> None:
        """SessionRequestHandler's, with the head within max_head_size bytes (else 431) and head_timeout
        seconds; a deadline closes the connection, and so does a body not read to its end."""
        connection = self._connection
        self._body_start: int | None = None  # where the body begins, once the head is parsed
        if connection.head_began is None:  # not from the waiting room: wait here for a first byte
            if not connection.buffer and not self.rfile.peek():
                self.raw_requestline = b""  # no request
                self.close_connection = True  # the client closed
                return
            connection.head_began = time.monotonic()
        began, connection.head_began = connection.head_began, None
        self.rfile.limit = self.max_head_size  # huge heads: 431 past the limit
        self.rfile.deadline = began + self.head_timeout  # slowloris: the whole head in time
        try:
            super().handle_one_request()
        except _HeadTooLarge:
            self.send_error(431)
        except TimeoutError as exc:
            _log.debug("closing the connection: %s", exc)
            self.close_connection = True
        # Request smuggling: a body not read to its end must not be read as the next request.
        if self._body_start is not None and self._body_left_unread(self._body_start):
            self.close_connection = True

    def parse_request(self) -> bool:
        """Parse the head (_RequestChecks refusing what it refuses); then allow request_timeout."""
        if not super().parse_request():
            return False
        self.rfile.limit = None
        self.rfile.deadline = time.monotonic() + self.request_timeout  # a trickled body, too
        self._body_start = self.rfile.tell()
        return True

    def _body_left_unread(self, body_start: int) -> bool:
        """Did the request carry a body (Content-Length, Transfer-Encoding) not read exactly to its end?"""
        length = self.headers.get("Content-Length", "0").strip()
        if "Transfer-Encoding" in self.headers or len(self.headers.get_all("Content-Length") or []) > 1:
            return True
        return not (length.isascii() and length.isdigit()) or self.rfile.tell() - body_start != int(length)


def _configure_socket(sock: socket.socket, idle_timeout: float) -> None:
    """Nagle off, and every read and write of the socket within idle_timeout."""
    # Answers go in one piece, but a held-back last byte must not wait for a delayed ACK. Not on
    # every socket (a Unix one has no TCP_NODELAY), hence the suppress.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A kernel timeout (SO_RCVTIMEO/SO_SNDTIMEO) where the socket allows it: Python's own settimeout()
    # adds a poll() to every call.
    if isinstance(sock, ssl.SSLSocket) or not _kernel_timeouts(sock, idle_timeout):
        sock.settimeout(idle_timeout)


def _kernel_timeouts(sock: socket.socket, seconds: float) -> bool:
    """Make the kernel time out a blocking socket's reads and writes; False where it cannot."""
    timeval = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except (OSError, AttributeError):
        return False
    return True


# ---- The server: a waiting room and workers ----------------------------------------

# The end of a head: its last header line's newline, then an empty line (http.client also takes a
# bare LF for a line end).
_END_OF_HEAD = re.compile(rb"\n\r?\n")
_LISTENER, _WAKE = "listener", "wake"  # what a selector key's data says, besides a _Connection


class GuardedHTTPServer(SessionHTTPServer):
    """A SessionHTTPServer whose connections wait for their request in one selectors loop, not in a
    thread each; a worker thread serves each request whose head has arrived."""

    request_queue_size = 511  # the listen backlog (Node's); socketserver's 5 overflows at 64 connections
    max_waiting: int | None = None  # connections waiting for a head; None: half the descriptor limit
    accept_backoff = 0.1  # seconds: out of descriptors with nothing to close, wait instead of spinning
    worker_idle_time = 60.0  # seconds: a worker with no request for this long leaves

    def __init__(self, address: tuple[str, int], handler: type[SessionRequestHandler],
                 middleware: SessionMiddleware) -> None:
        if self.max_waiting is None:
            self.max_waiting = _half_the_descriptors()
        # The waiting room: idle keep-alive connections (closed first when room is needed), and the
        # rest (new ones, and those whose head has begun), each in the order they began to wait.
        self._kept_alive: collections.OrderedDict[socket.socket, _Connection] = collections.OrderedDict()
        self._arriving: collections.OrderedDict[socket.socket, _Connection] = collections.OrderedDict()
        self._in_progress: dict[socket.socket, _Connection] = {}  # connections a worker holds
        self._returned: collections.deque[_Connection] = collections.deque()  # back from workers
        self._room_open = False  # the loop runs and takes connections back
        self._wake_pending = False  # a wake-up byte is on its way: no need for another
        self._selector: selectors.BaseSelector | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()  # a worker wakes the loop with a byte
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._stop = False
        self._stopped = threading.Event()
        self._workers = _Workers(self._serve, self.worker_idle_time)
        super().__init__(address, handler, middleware)

    # -- the loop --

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Run the waiting room until shutdown(): accept, read heads, hand complete ones to workers."""
        self._stopped.clear()
        handler = self.RequestHandlerClass
        timeouts = [getattr(handler, "idle_timeout", 5.0), getattr(handler, "head_timeout", 60.0)]
        check_every = min(max(min(timeouts) / 10, 0.01), 1.0)  # a tenth of the shortest timeout
        next_check = time.monotonic() + check_every
        self.socket.setblocking(False)  # accept only what has arrived: the loop must never block on it
        with selectors.DefaultSelector() as selector:
            self._selector = selector
            selector.register(self.socket, selectors.EVENT_READ, _LISTENER)
            selector.register(self._wake_reader, selectors.EVENT_READ, _WAKE)
            self._room_open = True
            try:
                while not self._stop:
                    waiting = self._kept_alive or self._arriving
                    timeout = max(0.0, min(poll_interval, next_check - time.monotonic())) if waiting else poll_interval
                    for key, _ in selector.select(timeout):
                        if key.data is _LISTENER:
                            self._accept()
                        elif key.data is _WAKE:
                            self._take_back_returned()
                        else:
                            self._receive(key.data)
                    if time.monotonic() >= next_check:
                        self._close_overdue()
                        next_check = time.monotonic() + check_every
                    self.service_actions()
            finally:
                self._room_open = False
                self._close_returned()
                for connection in [*self._kept_alive.values(), *self._arriving.values()]:
                    self._close(connection)
                self._selector = None
                self._stop = False
                self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever's loop and wait for it (requests in progress finish on their own)."""
        self._stop = True
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket, let idle workers go, and close the wake-up pair."""
        super().server_close()
        self._workers.dismiss_idle()
        self._wake_reader.close()
        self._wake_writer.close()

    # -- step 1: accept, into the waiting room --

    def _accept(self) -> None:
        """Accept one connection into the waiting room, making room first if it is full."""
        try:
            sock, address = self.get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._out_of_descriptors(exc)
            return  # nothing to accept after all (the client left), or no descriptor for it
        if not self.verify_request(sock, address):
            self.shutdown_request(sock)
            return
        sock.setblocking(True)  # a handler reads and writes it blocking, under the kernel's timeouts
        _configure_socket(sock, getattr(self.RequestHandlerClass, "idle_timeout", 5.0))
        connection = _Connection(sock, address)
        if isinstance(sock, ssl.SSLSocket):  # its bytes arrive encrypted: a worker holds it throughout
            self._hand_to_worker(connection)
            return
        self._wait_for_head(connection)

    def _out_of_descriptors(self, exc: OSError) -> None:
        """accept() failed for want of a descriptor: free one, or wait rather than spin on it."""
        if self._close_longest_waiting():
            return  # the listener is still readable: the next turn accepts
        _log.warning("cannot accept a connection (%s); waiting %s s", exc.strerror, self.accept_backoff)
        time.sleep(self.accept_backoff)

    def _close_longest_waiting(self) -> bool:
        """Close the connection that has waited longest, an idle keep-alive one first; False if none waits."""
        for room in (self._kept_alive, self._arriving):
            if room:
                _, connection = room.popitem(last=False)
                _log.debug("the waiting room is full: closing %s", connection.address)
                self._close(connection, leave_room=False)
                return True
        return False

    def _wait_for_head(self, connection: _Connection) -> None:
        """Put a connection in the waiting room (or, if its next head is already here, hand it on)."""
        now = time.monotonic()
        connection.waiting_since = connection.last_byte_at = now
        connection.head_began = now if connection.buffer else None
        if _head_is_here(connection.buffer, 0, self._handover_size()):
            self._hand_to_worker(connection)
            return
        assert self.max_waiting is not None
        while len(self._kept_alive) + len(self._arriving) >= self.max_waiting:
            self._close_longest_waiting()  # the room is full: make room rather than refuse
        room = self._kept_alive if connection.kept_alive and not connection.buffer else self._arriving
        room[connection.sock] = connection
        assert self._selector is not None
        self._selector.register(connection.sock, selectors.EVENT_READ, connection)

    # -- step 2: read until the head is here, then a worker --

    def _receive(self, connection: _Connection) -> None:
        """Read what a waiting connection sent; hand it to a worker once its head is whole."""
        before = len(connection.buffer)
        try:
            data = connection.sock.recv(self._handover_size() - before)
        except BlockingIOError:
            return
        except OSError:  # reset by the client
            self._close(connection)
            return
        if not data:  # the client closed: answer what it sent (as http.server would), or just close
            if connection.buffer:
                self._leave_room(connection)
                self._hand_to_worker(connection)
            else:
                self._close(connection)
            return
        now = time.monotonic()
        connection.buffer += data
        connection.last_byte_at = now
        if connection.head_began is None:  # the first byte of a head: no longer idle
            connection.head_began = now
            if self._kept_alive.pop(connection.sock, None) is not None:
                self._arriving[connection.sock] = connection
        if _head_is_here(connection.buffer, max(0, before - 2), self._handover_size()):
            self._leave_room(connection)
            self._hand_to_worker(connection)

    def _handover_size(self) -> int:
        """The most a waiting connection's buffer holds: a head this long goes to a worker whole or not
        (its handler answers 431, or, with max_head_size above 64 KB, reads the rest itself)."""
        return min(getattr(self.RequestHandlerClass, "max_head_size", 16 * 1024), 65536)

    def _hand_to_worker(self, connection: _Connection) -> None:
        self._in_progress[connection.sock] = connection
        try:
            self._workers.run(connection)
        except RuntimeError as exc:  # no thread could be started: this request cannot be served
            _log.warning("cannot start a worker (%s); closing %s", exc, connection.address)
            del self._in_progress[connection.sock]
            self.shutdown_request(connection.sock)

    def connection_in_progress(self, sock: socket.socket) -> _Connection | None:
        """The connection a worker was handed (its handler reads from its buffer)."""
        return self._in_progress.get(sock)

    # -- step 3: a worker serves one request; a keep-alive connection comes back --

    def _serve(self, connection: _Connection) -> None:
        """In a worker thread: serve the request, then return the connection to the waiting room or
        close it. Serve on while the next head is already here (pipelined), and a TLS connection's
        every request (its bytes arrive encrypted: the loop cannot read its heads)."""
        keep_open = False
        try:
            make_handler: Any = self.RequestHandlerClass
            while True:
                handler = make_handler(connection.sock, connection.address, self)
                keep_open = not handler.close_connection
                tls = isinstance(connection.sock, ssl.SSLSocket)
                if not keep_open or not (tls or _head_is_here(connection.buffer, 0, self._handover_size())):
                    break
                connection.head_began = None if tls else time.monotonic()
        except Exception:
            self.handle_error(connection.sock, connection.address)
            keep_open = False
        finally:
            del self._in_progress[connection.sock]
            if keep_open:
                connection.kept_alive = True
                self._return(connection)
            else:
                self.shutdown_request(connection.sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report a failed connection; a client that went away (reset, broken pipe) is normal: debug only."""
        if isinstance(sys.exc_info()[1], _CLIENT_GONE):
            _log.debug("the client %s went away", client_address)
            return
        super().handle_error(request, client_address)

    def _return(self, connection: _Connection) -> None:
        """From a worker: give a keep-alive connection back to the loop, waking it unless a wake-up is
        already on its way. (No lock: a worker holding one while it waits for the GIL holds up the rest.)"""
        self._returned.append(connection)
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()
        if not self._room_open:  # the loop has stopped: nobody else will close it
            self._close_returned()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full already (it will wake), or closed
            self._wake_writer.send(b"\0")

    def _take_back_returned(self) -> None:
        """In the loop: the connections workers gave back wait for their next head."""
        with contextlib.suppress(OSError):
            self._wake_reader.recv(4096)
        self._wake_pending = False  # after the read: a connection returned from now on sends a new byte
        while connection := _pop(self._returned):
            self._wait_for_head(connection)

    def _close_returned(self) -> None:
        while connection := _pop(self._returned):
            self.shutdown_request(connection.sock)

    # -- step 4: the deadlines of those waiting --

    def _close_overdue(self) -> None:
        """Close each waiting connection silent for idle_timeout, or whose head is past head_timeout."""
        handler = self.RequestHandlerClass
        idle_timeout = getattr(handler, "idle_timeout", 5.0)
        head_timeout = getattr(handler, "head_timeout", 60.0)
        now = time.monotonic()
        for connection in [*self._kept_alive.values(), *self._arriving.values()]:
            silent = now - connection.last_byte_at > idle_timeout
            slow = connection.head_began is not None and now - connection.head_began > head_timeout
            if silent or slow:
                _log.debug("closing %s: %s", connection.address,
                           "the head took too long to arrive" if slow else "it sent nothing for idle_timeout")
                self._close(connection)

    def _leave_room(self, connection: _Connection) -> None:
        self._kept_alive.pop(connection.sock, None)
        self._arriving.pop(connection.sock, None)
        if self._selector is not None:
            self._selector.unregister(connection.sock)

    def _close(self, connection: _Connection, leave_room: bool = True) -> None:
        if leave_room:
            self._kept_alive.pop(connection.sock, None)
            self._arriving.pop(connection.sock, None)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(connection.sock)
        self.shutdown_request(connection.sock)


def _pop(returned: collections.deque[_Connection]) -> _Connection | None:
    """The oldest connection a worker returned, or None (a worker and the loop may both be taking)."""
    try:
        return returned.popleft()
    except IndexError:
        return None


def _head_is_here(buffer: bytearray, search_from: int, handover_size: int) -> bool:
    """Does the buffer hold what a handler needs to start: a whole head, a request line with no head
    after it (HTTP/0.9, or a line the handler refuses), or as much as the waiting room holds?"""
    line_end = buffer.find(b"\n")
    if line_end < 0:
        return len(buffer) >= handover_size
    if len(buffer[:line_end].split()) < 3:
        return True
    return _END_OF_HEAD.search(buffer, max(search_from, line_end)) is not None or len(buffer) >= handover_size


def _half_the_descriptors() -> int:
    """Half the descriptors this process may open (the rest serve requests and what stores open)."""
    try:
        import resource  # Unix only
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 500
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(soft // 2, 10_000))


class _Workers:
    """Threads that serve one request each. A request goes to an idle worker, or, with none idle, to a
    new one: a request never waits for a worker another request holds. An idle worker leaves after
    ``idle_time`` seconds."""

    def __init__(self, serve: Callable[[_Connection], None], idle_time: float) -> None:
        self._serve = serve
        self._idle_time = idle_time
        self._jobs: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._idle = 0  # workers waiting for a job, less those a job is already on its way to
        self._lock = threading.Lock()

    def run(self, connection: _Connection) -> None:
        """Serve this connection's request in a worker thread."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(connection)
                return
        threading.Thread(target=self._work, args=(connection,), daemon=True).start()

    def dismiss_idle(self) -> None:
        """Let the idle workers leave now."""
        with self._lock:
            for _ in range(self._idle):
                self._jobs.put(None)
            self._idle = 0

    def _work(self, job: _Connection | None) -> None:
        while job is not None:
            self._serve(job)
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=self._idle_time)
            except queue.Empty:
                with self._lock:  # a job may have been sent just now: take it, else leave
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        job = None
