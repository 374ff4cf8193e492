"""Tests for session_demo_extras.lean_handler: the same requests, the same answers as GuardedRequestHandler's.

Every request head here goes, over a real socket, to two servers: one whose handler is
GuardedRequestHandler (the email package parses its heads) and one whose handler is
LeanRequestHandler. Their answers, which echo what the handler saw, must be identical -- but
for a head with a bare CR in a header line, which LeanRequestHandler answers with a 400.
"""

from __future__ import annotations

import email.utils
import http.client
import io
import random
import re
import socket
import threading
import time
import unittest
from typing import Any

from session_demo_extras.frontend import GuardedHTTPServer, GuardedRequestHandler
from session_demo_extras.lean_handler import LeanRequestHandler, parse_plain_headers
from session_demo import session_middleware


class _Echo:
    """do_GET and do_POST answer with what the handler parsed: the request line's parts and the headers."""

    protocol_version = "HTTP/1.1"
    max_head_size = 1 << 20  # past http.client's 64 KB line limit, so that its 431 is compared too

    def do_GET(self: Any) -> None:
        length = self.headers.get("Content-Length", "")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        try:
            text = str(self.headers)
        except Exception as exc:  # as a handler that logs its headers would meet it
            text = type(exc).__name__
        seen = (self.command, self.path, self.request_version, self.close_connection, self.headers.items(),
                [type(defect).__name__ for defect in self.headers.defects], self.headers.is_multipart(), text, body)
        answer = repr(seen).encode("utf-8", "backslashreplace")
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(testcase: unittest.TestCase, base: type, clock: Any = time.time, **attributes: Any) -> GuardedHTTPServer:
    handler = type(f"Echo{base.__name__}", (_Echo, base), attributes)
    middleware = session_middleware(secret="keyboard cat", resave=False, save_uninitialized=False, clock=clock)
    server = GuardedHTTPServer(("127.0.0.1", 0), handler, middleware)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
    testcase.addCleanup(stop)
    return server


def _exchange(server: GuardedHTTPServer, request: bytes, keep_date: bool = False) -> bytes:
    """Send ``request``, close our side for writing, and read everything until the server closes."""
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # a broken pipe, a reset, or not connected any more (after a reset)
            pass  # the server answered and closed before it had read it all
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer if keep_date else re.sub(rb"Date: [^\r\n]*", b"Date: -", answer)


def _has_bare_cr(request: bytes) -> bool:
    """Does a header line of the request's first head hold a CR that is not part of a CRLF?"""
    lines = io.BytesIO(request).readlines()[1:]
    for line in lines:
        if line in (b"\r\n", b"\n"):
            break
        if b"\r" in line.replace(b"\r\n", b""):
            return True
    return False


HEADS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nCookie: a=1; b=2\r\nCookie: c=3\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Empty:\r\nX-Trail: a  \r\nX-Tab:\ta\r\nX-Colon: a:b\r\nx-lower: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /\r\n",
    b"POST /\r\n",
    b"GET / HTTP/1\r\n\r\n",
    b"GET / HTTP/x.y\r\n\r\n",
    b"GET / FOO/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET / HTTP/01234567890.1\r\n\r\n",
    b"GET  /  HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / x HTTP/1.1\r\n\r\n",
    b"GET //a//b HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\n X: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Junk\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
    b"GET / HTTP/1.1\r\n: a\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX\x01Y: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok",
    b"POST / HTTP/1.1\r\ncontent-length: 2\r\nExpect: 100-continue\r\n\r\nok",
    b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok",
    b"GET / HTTP/1.1\r\nHost: x\r\n",  # the client stops before the blank line
    b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 99 + b"\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 100 + b"\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 101 + b"\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"a" * 65531 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"a" * 65540 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=----x\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Type: multipart/x\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\ncontent-type: message/rfc822\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nContent-Type: multipart/x\r\n\r\n",
    b"GET / HTTP/\xb2.1\r\n\r\n",
    b"GET / HTTP/1.\xb9\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 100 + b"Y: " + b"b" * 70_000 + b"\r\n\r\n",
]


class TestLeanRequestHandler(unittest.TestCase):
    """LeanRequestHandler answers every request exactly as GuardedRequestHandler does."""

    def setUp(self) -> None:
        self.standard = _serve(self, GuardedRequestHandler)
        self.plain = _serve(self, LeanRequestHandler)

    def assert_same_answers(self, heads: list[bytes]) -> None:
        for head in heads:
            with self.subTest(head=head[:120]):
                lean = _exchange(self.plain, head)
                if _has_bare_cr(head):
                    self.assertTrue(lean.startswith(b"HTTP/1.1 400 Bad header line\r\n"), lean[:80])
                else:
                    self.assertEqual(lean, _exchange(self.standard, head))

    def test_a_bare_cr_in_a_header_line_is_a_400(self):
        """'A: 1\\rB: 2' is two headers to the email package; a 400 here, as Node answers, with or without Expect."""
        for head in (b"GET / HTTP/1.1\r\nHost: x\rContent-Length: 5\r\n\r\nhello",
                     b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nX: a\rY: b\r\nContent-Length: 2\r\n\r\nok",
                     b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n"):
            with self.subTest(head=head):
                self.assertTrue(_has_bare_cr(head))
                self.assertTrue(_exchange(self.plain, head).startswith(b"HTTP/1.1 400 Bad header line\r\n"))
        self.assertTrue(_exchange(self.standard, HEADS[0].replace(b"Host: x", b"Host: x\rY: z")).startswith(
            b"HTTP/1.1 200 "))  # what http.server alone does with it

    def test_plain_and_odd_heads_get_the_same_answer(self):
        """Plain heads, odd request lines, folds, bare LFs, bytes outside ASCII, limits: the same answers."""
        self.assert_same_answers(HEADS)

    def test_the_guards_still_hold(self):
        """The 16 KB head cap (431) and the guard against a line that hides others (400) still answer."""
        standard = _serve(self, GuardedRequestHandler, max_head_size=16 * 1024)
        lean = _serve(self, LeanRequestHandler, max_head_size=16 * 1024)
        for head in (b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
                     b"POST / HTTP/1.1\r\nX-Junk\r\nContent-Length: 5\r\n\r\nhello"):
            with self.subTest(head=head[:40]):
                answer = _exchange(lean, head)
                self.assertEqual(answer, _exchange(standard, head))
                self.assertFalse(answer.startswith(b"HTTP/1.1 200"), answer[:60])

    def test_random_heads_get_the_same_answer(self):
        """Heads made of random header lines, most of them plain, some odd: the same answers."""
        pieces = [b"Host", b"X-A", b"cookie", b"a.b", b"X Y", b"", b":", b": ", b":\t", b"v", b"a=1; b",
                  b" ", b"\t", b"\r", b"\n", b"\x00", b"\x80", b"\xff", b"\x7f", b'"', b"(", b"100-continue",
                  b"close", b"keep-alive"]
        rng = random.Random(1234)
        heads = []
        for _ in range(150):
            lines = []
            for _ in range(rng.randint(0, 6)):
                if rng.random() < 0.7:
                    line = rng.choice([b"Host", b"X-A", b"Cookie", b"Connection"]) + b": " + b"".join(
                        rng.choice([b"v", b"a=1; b", b" ", b"close", b"keep-alive"]) for _ in range(3))
                else:
                    line = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
                lines.append(line + rng.choice([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
            heads.append(b"GET / HTTP/1.1\r\n" + b"".join(lines) + b"\r\n")
        self.assert_same_answers(heads)


class TestLeanDateHeader(unittest.TestCase):
    """The Date header, formatted once a second, is still the middleware clock's time, to the second."""

    def test_the_date_follows_the_clock(self):
        """Two answers in one second share a Date; a second later, the Date is the new second's."""
        now = [1_800_000_000.25]
        server = _serve(self, LeanRequestHandler, clock=lambda: now[0])

        def date() -> str:
            answer = _exchange(server, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", keep_date=True)
            return re.search(rb"Date: ([^\r\n]*)", answer).group(1).decode()

        for moment in (1_800_000_000.25, 1_800_000_000.75, 1_800_000_001.5, 1_799_999_000.0):
            with self.subTest(moment=moment):
                now[0] = moment
                self.assertEqual(date(), email.utils.formatdate(moment, usegmt=True))


class TestParsePlainHeaders(unittest.TestCase):
    """parse_plain_headers: http.client's result for a plain head, None for any other."""

    def test_a_plain_head_gives_what_http_client_gives(self):
        """Names, values (trailing spaces kept, leading ones dropped), order and repeats as http.client has them."""
        head = b"Host: x\r\nCookie: a=1\r\nX-Trail: a  \r\nX-Tab:\tb\r\nX-Empty:\r\ncookie: c=3\r\n"
        lines = io.BytesIO(head).readlines()
        ours = parse_plain_headers(lines)
        theirs = http.client.parse_headers(io.BytesIO(head + b"\r\n"))
        self.assertIsNotNone(ours)
        self.assertEqual(ours.items(), theirs.items())
        self.assertEqual((str(ours), ours.get_payload()), (str(theirs), theirs.get_payload()))
        self.assertEqual(ours.get_all("Cookie"), ["a=1", "c=3"])

    def test_anything_unusual_is_left_to_the_email_package(self):
        """A fold, a missing colon, a space before it, a bare LF, a tab or a byte outside ASCII, a Content-Type: None."""
        for line in (b" folded\r\n", b"X-Junk\r\n", b"X : a\r\n", b"X: a\n", b"X: a\tb\r\n", b"X: \xe9\r\n",
                     b"X: a\x00\r\n", b": a\r\n", b"X: a\r\r\n", b"Content-Type: text/plain\r\n",
                     b"content-TYPE: multipart/x\r\n"):
            with self.subTest(line=line):
                self.assertIsNone(parse_plain_headers([b"Host: x\r\n", line]))


if __name__ == "__main__":
    unittest.main()
