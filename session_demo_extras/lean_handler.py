"""A GuardedRequestHandler that does less for each request (beyond express-session: speed).

Two things http.server does for every request cost the demo counter a fifth of its CPU time:

- It hands the request head to the email package, a parser built for MIME messages. Most heads
  are plain -- each line a token, a colon and printable ASCII, ended by CRLF -- and for those the
  email parser's result is easy to build directly. ``LeanRequestHandler`` does that and hands any
  other head (a folded line, a line without a colon, a bare LF, a byte outside printable ASCII,
  a Content-Type) to ``http.client.parse_headers`` exactly as http.server does, so an odd head is
  treated as before -- but for a bare CR in a header line, which is a 400 here, as in Node.
- It formats the Date header anew for every response; here it is formatted once a second, as
  Node's http module does.

    from session_demo_extras.lean_handler import LeanRequestHandler

    class Handler(LeanRequestHandler):  # instead of GuardedRequestHandler
        def do_GET(self): ...

Everything else is GuardedRequestHandler's (frontend.py: the guards) and SessionRequestHandler's (the
held response, the session).
"""

from __future__ import annotations

import http.client
import io
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

from session_demo_extras.frontend import GuardedRequestHandler

__all__ = ["LeanRequestHandler", "parse_plain_headers"]

# As http.client reads a head: at most 100 header lines, each at most 64 KB.
_MAX_LINE = 65536
_MAX_HEADERS = 100
# A plain header line: a token, a colon, optional spaces or tabs, printable ASCII, CRLF.
_PLAIN_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[ \t]*(?:[\x21-\x7e][\x20-\x7e]*)?\r\n")


def parse_plain_headers(lines: list[bytes]) -> http.client.HTTPMessage | None:
    """The header lines (without the blank line that ends them) as http.client.parse_headers would
    return them, or None if one of them is not plain or names a Content-Type (whose multipart and
    message types the email package reads further). As its compat32 policy does, a value keeps its
    trailing spaces and loses the leading ones."""
    if not all(_PLAIN_LINE.fullmatch(line) and line[:13].lower() != b"content-type:" for line in lines):
        return None
    message = http.client.HTTPMessage()
    for line in lines:
        name, _, value = line[:-2].decode("ascii").partition(":")
        message[name] = value.lstrip(" \t")
    message.set_payload("")  # the empty body the email package reads after the head
    return message


class _PlainHeads(BaseHTTPRequestHandler):
    """http.server's ``parse_request`` (Python 3.11), step by step, with plain header lines parsed by
    ``parse_plain_headers`` (any other head goes to the email package). A base placed after
    GuardedRequestHandler, so that the guards' ``parse_request`` runs around this one."""

    raw_requestline: bytes

    def parse_request(self) -> bool:
        """Parse the request line and the head, as BaseHTTPRequestHandler.parse_request does."""
        self.command = None  # type: ignore[assignment]
        self.request_version = version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:  # the last word is the version
            version = words[-1]
            number = _version_number(version)
            if number is None:
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                                f"Invalid HTTP version ({version.split('/', 1)[1]})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:  # HTTP/0.9: GET only, and the connection closes
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")  # as http.server: one leading slash
        if not self._read_headers():
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "").lower()
        if (expect == "100-continue" and self.protocol_version >= "HTTP/1.1"
                and self.request_version >= "HTTP/1.1"):
            return self.handle_expect_100()
        return True

    def _read_headers(self) -> bool:
        """Read the head's lines into ``self.headers``; False after a 431 (too many lines, or one too long)
        or a 400 (a bare CR)."""
        lines: list[bytes] = []  # as http.client reads them: the line that ends the head included
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long",
                                f"got more than {_MAX_LINE} bytes when reading header line")
                return False
            lines.append(line)
            if len(lines) > _MAX_HEADERS:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers",
                                f"got more than {_MAX_HEADERS} headers")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
        # Difference, stricter than http.server, as Node is: a bare CR, which the email package takes for
        # the end of a line (so "A: 1\rB: 2" would be two headers), is a 400.
        if any(b"\r" in line.replace(b"\r\n", b"") for line in lines):
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
            return False
        headers = None
        if line == b"\r\n" and self.MessageClass is http.client.HTTPMessage:
            headers = parse_plain_headers(lines[:-1])
        if headers is None:  # anything unusual: the email package, as http.server does
            headers = http.client.parse_headers(io.BytesIO(b"".join(lines)), _class=self.MessageClass)
        self.headers = headers
        return True


class LeanRequestHandler(GuardedRequestHandler, _PlainHeads):
    """A GuardedRequestHandler that parses plain heads without the email package (``_PlainHeads``), and
    whose Date header is formatted once a second."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, from the middleware's clock as SessionRequestHandler's, formatted once a second."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(self.server.session_middleware.options.clock())
        cached = getattr(self.server, "_date_header", None)
        if cached is None or cached[0] != second:
            cached = (second, super().date_time_string(second))
            self.server._date_header = cached  # type: ignore[attr-defined]  # one tuple: safe across threads
        return cached[1]


def _version_number(version: str) -> tuple[int, int] | None:
    """(1, 1) for 'HTTP/1.1'; None for what http.server would call a bad request version."""
    if not version.startswith("HTTP/"):
        return None
    parts = version.split("/", 1)[1].split(".")
    if len(parts) != 2 or not all(part.isdigit() and len(part) <= 10 for part in parts):
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:  # '²' is a digit to isdigit() but not to int(), as http.server finds
        return None
