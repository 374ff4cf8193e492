"""The guards of an HTTP front end, for a session server a network can reach (beyond express-session).

session_demo's SessionRequestHandler and SessionHTTPServer are plain http.server with sessions: fine
on your own machine, defenceless on a network. In Node these guards live below Express, in the http
module; here they live beside the module, in a handler and a server that subclass its pair:

    from session_demo_extras.frontend import GuardedHTTPServer, GuardedRequestHandler

    class Handler(GuardedRequestHandler):  # instead of SessionRequestHandler
        def do_GET(self): ...

    GuardedHTTPServer(("", 3000), Handler, middleware).serve_forever()

Each guard, and what it defends against:

- ``idle_timeout`` (5 s, Node's keep-alive timeout): each read and write of a connection within it, so a
  silent or stalled client is closed.
- ``head_timeout`` (60 s, Node's headersTimeout): the whole head within it (slowloris: a byte at a time).
- ``max_head_size`` (16 KB, Node's limit): a larger head is answered 431 before anything reads it all.
- ``request_timeout`` (300 s, Node's requestTimeout): a request whose body trickles in is cut off.
- A body the handler did not read to its end closes the connection (request smuggling: it must not be
  read as the next request).
- ``max_connections`` (256): past it a new connection is answered 503; out of descriptors, ``accept``
  backs off for ``accept_backoff`` seconds instead of spinning.
- A header line http.client cannot read, or a control character in the request line, is a 400
  (request smuggling; a raw escape in a log), with no interim 100 Continue before a refusal.
- Nagle's algorithm is off, so a held-back last byte never waits for a delayed ACK.
"""

from __future__ import annotations

import contextlib
import email.errors
import errno
import io
import logging
import re
import socket
import ssl
import struct
import threading
import time
from typing import Any

from session_demo import SessionHTTPServer, SessionMiddleware, SessionRequestHandler

__all__ = ["GuardedRequestHandler", "GuardedHTTPServer"]

_log = logging.getLogger("session_demo")

_TOO_MANY_CONNECTIONS = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _RequestChecks(SessionRequestHandler):
    """Heads a front end refuses before any handler runs, as Node's HTTP parser does: a header line
    http.client could not read (it hides the lines after it: request smuggling) and a control character
    in the request line are a 400, with no interim 100 Continue before it, nor before a 501."""

    def answer_request(self) -> None:
        """400 to a head that hides lines or has a control character in its request line; else answer."""
        if self._head_hides_lines():
            self.send_error(400, "Bad header line")
            return
        if _CONTROL_CHARACTER.search(self.requestline):  # never a 500, never raw in a log
            self.send_error(400, "Bad request target")
            return
        super().answer_request()

    def handle_expect_100(self) -> bool:
        """Send the interim 100 Continue only to a request answer_request will not refuse."""
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
    """A SessionRequestHandler with a front end's guards: deadlines, a head cap, the unread-body close."""

    server: GuardedHTTPServer
    rfile: io.BufferedReader  # setup() reads the socket through a _SocketReader
    idle_timeout: float = 5.0  # idle or stalled clients: each read and write within this (Node's keep-alive: 5 s)
    head_timeout: float = 60.0  # slowloris: the whole head within this (Node's headersTimeout: 60 s)
    max_head_size: int = 16 * 1024  # memory: a larger head is answered 431 (Node's limit: 16 KB)
    request_timeout: float = 300.0  # a thread held by a trickled body (Node's requestTimeout: 300 s)

    def setup(self) -> None:
        """Set up the connection as usual, with Nagle's algorithm off and rfile read under a deadline."""
        super().setup()
        # Answers go in one piece, but a held-back last byte must not wait for a delayed ACK. Not on
        # every socket (a Unix one has no TCP_NODELAY), hence not StreamRequestHandler's unguarded switch.
        with contextlib.suppress(OSError, AttributeError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Each read and write within idle_timeout: a kernel timeout (SO_RCVTIMEO/SO_SNDTIMEO) where the
        # socket allows it, as Python's own settimeout() adds a poll() to every call.
        if isinstance(self.connection, ssl.SSLSocket) or not _kernel_timeouts(self.connection, self.idle_timeout):
            self.connection.settimeout(self.idle_timeout)
        self.rfile.close()
        self._reader = _SocketReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """SessionRequestHandler's, answering 431 to a head past max_head_size and closing on a deadline."""
        try:
            super().handle_one_request()
        except _HeadTooLarge:
            self.send_error(431)
        except TimeoutError as exc:
            _log.debug("closing the connection: %s", exc)
            self.close_connection = True

    def read_request_head(self) -> bool:
        """Read the head within max_head_size bytes and head_timeout seconds; then allow request_timeout."""
        self._reader.limit = self.rfile.tell() + self.max_head_size  # huge heads: 431 past the limit
        if not self.rfile.peek(1):  # the client closed (a silent one times out after idle_timeout)
            self.close_connection = True
            return False
        self._reader.deadline = time.monotonic() + self.head_timeout  # slowloris: the whole head in time
        if not super().read_request_head():
            return False
        self._reader.limit = None
        self._reader.deadline = time.monotonic() + self.request_timeout  # a trickled body, too
        return True

    def answer_request(self) -> None:
        """Answer as SessionRequestHandler does; then close if the body was not read to its end."""
        self._body_start = self.rfile.tell()
        super().answer_request()
        # Request smuggling: a body not read to its end must not be read as the next request.
        if self._body_left_unread():
            self.close_connection = True

    def _body_left_unread(self) -> bool:
        """Did the request carry a body (Content-Length, Transfer-Encoding) not read exactly to its end?"""
        length = self.headers.get("Content-Length", "0").strip()
        if "Transfer-Encoding" in self.headers or len(self.headers.get_all("Content-Length") or []) > 1:
            return True
        return not (length.isascii() and length.isdigit()) or self.rfile.tell() - self._body_start != int(length)


class GuardedHTTPServer(SessionHTTPServer):
    """A SessionHTTPServer with a connection cap and a back-off when descriptors run out."""

    # Threads and descriptors: past this many open connections, a new one gets 503; 256 leaves four
    # descriptors each under the common limit of 1,024 (the socket, and what a store may open for it).
    max_connections = 256
    accept_backoff = 0.1  # seconds: out of descriptors, accept() fails at once; wait instead of spinning

    def __init__(self, address: tuple[str, int], handler: type[SessionRequestHandler],
                 middleware: SessionMiddleware) -> None:
        self._open_connections = 0
        self._count_lock = threading.Lock()
        super().__init__(address, handler, middleware)

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


class _HeadTooLarge(Exception):
    """More than the handler's max_head_size bytes came without the end of the head: answer 431."""


class _SocketReader(io.RawIOBase):
    """The socket as rfile's raw stream, counting the bytes received (``tell()``); while a head is read,
    no recv starts past ``deadline`` and none reads past ``limit``."""

    deadline: float | None = None
    limit: int | None = None

    def __init__(self, sock: socket.socket) -> None:
        self._sock, self._received = sock, 0

    def readable(self) -> bool:  # io.BufferedReader asks
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError("the request's head took too long to arrive")
        if self.limit is not None:
            if self._received >= self.limit:
                raise _HeadTooLarge()
            buffer = memoryview(buffer)[:self.limit - self._received]
        try:
            count = self._sock.recv_into(buffer)
        except BlockingIOError:  # the kernel's receive timeout ran out
            raise TimeoutError("the client sent nothing for idle_timeout") from None
        self._received += count
        return count

    def tell(self) -> int:
        return self._received


def _kernel_timeouts(sock: socket.socket, seconds: float) -> bool:
    """Make the kernel time out a blocking socket's reads and writes; False where it cannot."""
    timeval = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except (OSError, AttributeError):
        return False
    return True
