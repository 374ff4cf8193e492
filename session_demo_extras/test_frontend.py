"""Tests for session_demo_extras.frontend: the guards of a front end, over real sockets.

Each guard is attacked as a client on a network would attack it: a silent connection, a head
trickled a byte at a time, a head too large, a body left unread to smuggle a request, too many
connections, descriptors running out.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import io
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import unittest
from collections.abc import Callable
from typing import Any
from unittest import mock

from session_demo import SessionMiddleware
from session_demo_extras import frontend
from session_demo_extras.frontend import GuardedHTTPServer, GuardedRequestHandler
from test_session import (
    AdapterHelpers, App, AppHandler, CountingStore, HostileHelpers, OneGet, SessionAssertions, _login, _peek,
    _read_body, hello, make_options,
)


class GuardedAppHandler(AppHandler, GuardedRequestHandler):
    """test_session's AppHandler (GET runs ``server.app``), with the front end's guards."""


def guarded_serve(testcase: unittest.TestCase, app: App = hello, **options: Any) -> GuardedHTTPServer:
    """AdapterHelpers.serve, on the guarded pair: a GuardedHTTPServer whose handler runs ``app``."""
    server = AdapterHelpers.serve(testcase, app, handler_base=GuardedAppHandler, server_base=GuardedHTTPServer,
                                  **options)
    assert isinstance(server, GuardedHTTPServer)
    return server


class TestFrontendRequestBodies(SessionAssertions):
    """A request body is read by the handler or the connection closes: it is never read as the next request."""

    SMUGGLED = b"GET /?user=smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

    def test_a_get_body_holding_a_request_gets_one_response_and_the_connection_closes(self):
        """Request smuggling: GET /peek whose body is 'GET /login?user=smuggled': one answer, nobody logged in."""
        for method in (b"GET", b"HEAD", b"POST"):
            with self.subTest(method=method):
                server = guarded_serve(self, _login)
                sock = AdapterHelpers.connect(server)
                self.addCleanup(sock.close)
                sock.sendall(method + b" / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                             % len(self.SMUGGLED) + self.SMUGGLED)
                if method == b"HEAD":
                    data = AdapterHelpers.read_until_closed(sock)
                    self.assertEqual(data.count(b"HTTP/1.1 "), 1, data)
                else:
                    answers = AdapterHelpers.responses(sock)
                    self.assertEqual([a.body for a in answers], ["views: None"])
                stored = [json.loads(text) for text in server.session_middleware.options.store.sessions.values()]
                self.assertNotIn("smuggled", [data.get("user") for data in stored])

    def test_a_chunked_body_closes_the_connection_after_the_response(self):
        """Transfer-Encoding: chunked is not decoded by http.server: the connection closes after one answer."""
        server = guarded_serve(self, _login)
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(self.SMUGGLED), self.SMUGGLED)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
        self.assertEqual([a.body for a in AdapterHelpers.responses(sock)], ["views: None"])

    def test_two_content_length_headers_close_the_connection(self):
        """Two Content-Length headers (a proxy may read the other one): the connection closes after one answer."""
        server = guarded_serve(self, _read_body)
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\nok"
                     + self.SMUGGLED)
        self.assertEqual([a.body for a in AdapterHelpers.responses(sock)], ["read 2"])

    def test_a_body_the_handler_reads_keeps_the_connection_open(self):
        """A POST whose handler reads its whole body: the keep-alive connection answers the next request."""
        server = guarded_serve(self, _read_body)
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        self.addCleanup(connection.close)
        bodies = []
        for body in (b"x" * 100, b"y" * 70000, b""):
            connection.request("POST", "/", body=body)
            answer = connection.getresponse()
            bodies.append(answer.read().decode())
            self.assertFalse(answer.will_close)
        self.assertEqual(bodies, ["read 100", "read 70000", "read 0"])


class TestFrontendTimeouts(SessionAssertions):
    """Idle and slow connections are closed: a request must begin within idle_timeout and its head arrive within head_timeout."""

    def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(self):
        """An idle (silent) connection is closed by the server, quietly (Node: keepAliveTimeout)."""
        server = guarded_serve(self, handler={"idle_timeout": 0.2})
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        self.assertEqual(AdapterHelpers.read_until_closed(sock), b"")

    def test_an_idle_keep_alive_connection_is_closed_after_its_response(self):
        """After one answered request, a keep-alive connection left idle is closed by the server."""
        server = guarded_serve(self, handler={"idle_timeout": 0.2})
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = AdapterHelpers.responses(sock)
        self.assertEqual([a.body for a in answers], ["hello, world"])

    def test_a_head_trickled_one_byte_at_a_time_is_cut_off_at_the_head_timeout(self):
        """Slowloris: a byte every 20 ms, each within any per-recv timeout, still meets the whole-head deadline."""
        server = guarded_serve(self, handler={"idle_timeout": 5, "head_timeout": 0.3})
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        sock.settimeout(0.02)
        head = b"GET / HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 2000 + b"\r\n\r\n"
        sent, closed = 0, False
        while sent < len(head) and not closed:
            try:
                sock.sendall(head[sent:sent + 1])
                sent += 1
                closed = sock.recv(1) == b""  # paces the trickle: waits 20 ms for the server
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
        self.assertTrue(closed, "the server waited for the whole trickled head")
        self.assertLess(sent, len(head))


class TestFrontendHeadSize(SessionAssertions):
    """A request head larger than max_head_size (16 KB, as Node) is answered 431 before the session layer sees it."""

    def test_a_head_over_the_limit_gets_431_and_one_under_it_is_answered(self):
        """15 KB of Cookie is answered; 17 KB in one line or in many gets 431, and the store is never asked."""
        store = CountingStore()
        server = guarded_serve(self, _peek, store=store)
        port = server.server_address[1]
        self.assertEqual(HostileHelpers.raw_get(port, b"Cookie: a=" + b"b" * 15000 + b"\r\n").status, 200)
        calls = sum(store.calls.values())
        for block in (b"Cookie: a=" + b"b" * 17000 + b"\r\n",
                      b"".join(b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(17))):
            with self.subTest(size=len(block)):
                self.assertEqual(HostileHelpers.raw_get(port, block).status, 431)
        self.assertEqual(sum(store.calls.values()), calls)

    def test_the_six_megabyte_head_of_the_issue_gets_431_at_once(self):
        """98 Cookie lines of 65,000 bytes (6.3 MB): 431 after the first 16 KB, not a 200 after reading it all."""
        server = guarded_serve(self, _peek)
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        line = b"Cookie: a=" + b"b" * 64990 + b"\r\n"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + line)  # the rest would follow; the answer comes first
        self.assertTrue(AdapterHelpers.read_until_closed(sock).startswith(b"HTTP/1.1 431 "))

    def test_max_head_size_is_configurable(self):
        """max_head_size on the handler class sets the limit."""
        server = guarded_serve(self, _peek, handler={"max_head_size": 64 * 1024})
        block = b"Cookie: a=" + b"b" * 30000 + b"\r\n"
        self.assertEqual(HostileHelpers.raw_get(server.server_address[1], block).status, 200)


class IdleCrowd:
    """Client sockets that hold a server's connections without asking anything (not a TestCase)."""

    def __init__(self, testcase: unittest.TestCase, port: int) -> None:
        self.testcase, self.port = testcase, port

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.testcase.addCleanup(sock.close)
        return sock

    def kept_alive(self, count: int) -> list[socket.socket]:
        """Connections that had one answer (keep-alive) and then say nothing."""
        socks = []
        for _ in range(count):
            sock = self.connect()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            answer.read()
            socks.append(sock)
        return socks

    def silent(self, count: int) -> list[socket.socket]:
        """Connections that never send a byte."""
        return [self.connect() for _ in range(count)]

    def trickling(self, count: int) -> list[socket.socket]:
        """Connections that send the start of a head, then a byte now and then (here: once more)."""
        socks = [self.connect() for _ in range(count)]
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: a")
        for sock in socks:
            with contextlib.suppress(OSError):  # the server may have closed it to make room
                sock.sendall(b"a")
        return socks


def wait_for(condition: Callable[[], bool]) -> bool:
    """Wait (at most 10 s) until ``condition()`` holds; the server changes it on its own threads."""
    pause = threading.Event()
    for _ in range(1000):
        if condition():
            return True
        pause.wait(0.01)
    return condition()


class TestFrontendIdleConnections(SessionAssertions):
    """Idle and slow connections never lock a visitor out: they wait without a thread, and at the cap the
    one that has waited longest is closed instead of the new one being refused."""

    def test_many_idle_keep_alive_connections_and_a_visitor_is_answered(self):
        """300 keep-alive connections gone quiet (the cap at 100): a new visitor still gets 200."""
        server = guarded_serve(self, _peek, server={"max_waiting": 100})
        IdleCrowd(self, server.server_address[1]).kept_alive(300)
        self.assertEqual(OneGet.get(server).status, 200)

    def test_many_silent_connections_and_a_visitor_is_answered(self):
        """300 connections that never send a byte (the cap at 100): a new visitor still gets 200."""
        server = guarded_serve(self, _peek, server={"max_waiting": 100})
        IdleCrowd(self, server.server_address[1]).silent(300)
        self.assertEqual(OneGet.get(server).status, 200)

    def test_many_trickling_heads_and_a_visitor_is_answered(self):
        """300 connections trickling a head (the cap at 100): a new visitor still gets 200."""
        server = guarded_serve(self, _peek, server={"max_waiting": 100})
        IdleCrowd(self, server.server_address[1]).trickling(300)
        self.assertEqual(OneGet.get(server).status, 200)

    def test_waiting_connections_hold_no_thread(self):
        """200 connections waiting (kept alive, silent, trickling) add no thread each: one loop holds them."""
        server = guarded_serve(self, _peek)
        crowd = IdleCrowd(self, server.server_address[1])
        before = threading.active_count()
        crowd.kept_alive(70), crowd.silent(70), crowd.trickling(70)
        self.assertTrue(wait_for(lambda: len(server._kept_alive) + len(server._arriving) == 210))
        self.assertLess(threading.active_count() - before, 20)  # workers, not one per connection
        self.assertEqual(OneGet.get(server).status, 200)

    def test_at_the_cap_an_idle_keep_alive_connection_is_closed_first(self):
        """max_waiting=2, one silent and one kept-alive connection waiting: a visitor closes the kept-alive one."""
        server = guarded_serve(self, _peek, server={"max_waiting": 2})
        crowd = IdleCrowd(self, server.server_address[1])
        silent, = crowd.silent(1)
        kept, = crowd.kept_alive(1)
        self.assertTrue(wait_for(lambda: len(server._kept_alive) == 1 and len(server._arriving) == 1))
        self.assertEqual(OneGet.get(server).status, 200)
        self.assertEqual(AdapterHelpers.read_until_closed(kept), b"")  # closed by the server
        silent.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(AdapterHelpers.read_until_closed(silent).startswith(b"HTTP/1.1 200 "))

    def test_at_the_cap_the_connection_waiting_longest_is_closed(self):
        """max_waiting=2, two silent connections: a third closes the first, and all three are not refused."""
        server = guarded_serve(self, _peek, server={"max_waiting": 2})
        crowd = IdleCrowd(self, server.server_address[1])
        first, second = crowd.silent(2)
        self.assertTrue(wait_for(lambda: len(server._arriving) == 2))
        third = crowd.connect()
        self.assertEqual(AdapterHelpers.read_until_closed(first), b"")
        for sock in (second, third):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(AdapterHelpers.read_until_closed(sock).startswith(b"HTTP/1.1 200 "))

    def test_under_a_descriptor_limit_of_256_idle_sockets_do_not_lock_a_visitor_out(self):
        """A server run with RLIMIT_NOFILE 256 (in a subprocess): 300 idle sockets of each kind, and a visitor."""
        try:
            import resource
        except ImportError:
            self.skipTest("resource (descriptor limits) is Unix only")
        del resource
        code = textwrap.dedent("""
            import resource
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            from session_demo import session_middleware
            from session_demo_extras.frontend import GuardedHTTPServer, GuardedRequestHandler
            class Handler(GuardedRequestHandler):
                protocol_version = "HTTP/1.1"
                def do_GET(self):
                    self.session["views"] = self.session.get("views", 0) + 1
                    body = b"views: %d" % self.session["views"]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, format, *args):
                    pass
            middleware = session_middleware(secret="a secret of more than 32 characters", resave=False,
                                            save_uninitialized=True)
            server = GuardedHTTPServer(("127.0.0.1", 0), Handler, middleware)
            print(server.server_address[1], server.max_waiting, flush=True)
            server.serve_forever()
        """)
        root = os.path.dirname(os.path.dirname(os.path.abspath(frontend.__file__)))
        process = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
        self.addCleanup(process.stdout.close)
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.kill)
        port, max_waiting = map(int, process.stdout.readline().split())
        self.assertEqual(max_waiting, 128)  # half the descriptors
        crowd = IdleCrowd(self, port)
        for kind in (crowd.kept_alive, crowd.silent, crowd.trickling):
            with self.subTest(kind=kind.__name__):
                kind(300)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                self.addCleanup(connection.close)
                connection.request("GET", "/")
                answer = connection.getresponse()
                self.assertEqual((answer.status, answer.read()), (200, b"views: 1"))
        self.assertIsNone(process.poll(), "the server died")


class TestFrontendWorkers(SessionAssertions):
    """A request whose head has arrived gets a worker thread of its own: a hanging one holds no other."""

    def test_a_request_that_hangs_holds_up_no_other(self):
        """/hang blocks its worker; meanwhile other connections, new and kept alive, are answered."""
        entered, release = threading.Event(), threading.Event()

        def app(handler: AppHandler) -> None:
            if handler.path == "/hang":
                entered.set()
                release.wait(10)
            handler.reply(200, handler.path)

        server = guarded_serve(self, app)
        self.addCleanup(release.set)
        hanging = AdapterHelpers.connect(server)
        self.addCleanup(hanging.close)
        hanging.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(entered.wait(10))
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        self.addCleanup(connection.close)
        for path in ("/a", "/b", "/c"):  # one keep-alive connection, back to the waiting room each time
            connection.request("GET", path)
            self.assertEqual(connection.getresponse().read(), path.encode())
        self.assertEqual(OneGet.get(server, "/d").body, "/d")
        release.set()
        answer = http.client.HTTPResponse(hanging)
        answer.begin()
        self.assertEqual(answer.read(), b"/hang")

    def test_pipelined_requests_are_answered_in_order(self):
        """Three requests sent at once on one connection: three answers, in order."""
        server = guarded_serve(self, lambda handler: handler.reply(200, handler.path))
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = AdapterHelpers.read_until_closed(sock)  # one reader: answers that arrive together are all read
        self.assertEqual(re.findall(rb"\r\n\r\n(/\d)", answers), [b"/1", b"/2", b"/3"])

    def test_64_clients_at_once_are_all_answered(self):
        """64 clients connecting at the same moment (the listen backlog holds them): 64 answers."""
        server = guarded_serve(self, _peek)
        statuses: list[int] = []
        start = threading.Barrier(64)

        def client() -> None:
            start.wait(10)
            statuses.append(OneGet.get(server).status)

        threads = [threading.Thread(target=client) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(statuses, [200] * 64)


class TestFrontendOutOfDescriptors(SessionAssertions):
    """accept() failing for want of a descriptor closes the longest-waiting connection, or backs off."""

    def test_with_nothing_to_close_accept_backs_off_instead_of_spinning(self):
        """accept() failing with EMFILE and no connection waiting: wait accept_backoff (it would spin a core)."""
        server = GuardedHTTPServer(("127.0.0.1", 0), GuardedAppHandler, SessionMiddleware(make_options()))
        self.addCleanup(server.server_close)
        for code in (errno.EMFILE, errno.ENFILE):
            with self.subTest(errno=errno.errorcode[code]):
                listening = mock.Mock(**{"accept.side_effect": OSError(code, os.strerror(code))})
                with mock.patch.object(server, "socket", listening), \
                        mock.patch.object(frontend.time, "sleep") as sleep, self.assertLogs("session_demo", "WARNING"):
                    server._accept()
                sleep.assert_called_once_with(server.accept_backoff)

    def test_with_connections_waiting_accept_closes_the_longest_waiting_one(self):
        """accept() failing with EMFILE while two connections wait: the older is closed, no back-off."""
        server = GuardedHTTPServer(("127.0.0.1", 0), GuardedAppHandler, SessionMiddleware(make_options()))
        self.addCleanup(server.server_close)
        older, newer = mock.Mock(), mock.Mock()
        for sock in (older, newer):
            server._arriving[sock] = frontend._Connection(sock, ("client", 1))
        listening = mock.Mock(**{"accept.side_effect": OSError(errno.EMFILE, os.strerror(errno.EMFILE))})
        with mock.patch.object(server, "socket", listening), mock.patch.object(frontend.time, "sleep") as sleep:
            server._accept()
        sleep.assert_not_called()
        older.close.assert_called_once_with()
        newer.close.assert_not_called()
        self.assertEqual(list(server._arriving), [newer])


class TestFrontendEdges(SessionAssertions):
    """Edges a review found: a Unix socket (no TCP_NODELAY), a second head on the same connection, a reset."""

    def test_a_connection_on_a_unix_socket_is_served(self):
        """No TCP_NODELAY on a Unix socket (a server behind a proxy's socket): the request is answered anyway."""
        class Server:
            session_middleware = SessionMiddleware(make_options())
            app = staticmethod(hello)

        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)

        def serve() -> None:
            with ours:  # as socketserver's shutdown_request does, once the handler is done
                GuardedAppHandler(ours, ("local", 0), Server())

        thread = threading.Thread(target=serve)
        thread.start()
        theirs.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        theirs.settimeout(5)
        answer = b""
        while chunk := theirs.recv(65536):
            answer += chunk
        thread.join(5)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:80])
        self.assertTrue(answer.endswith(b"hello, world"))

    def test_the_head_cap_counts_from_where_each_head_starts(self):
        """A second request on a keep-alive connection gets the same 16 KB for its head, not more."""
        server = guarded_serve(self)
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + big)
        answers = AdapterHelpers.read_until_closed(sock)  # both at once: one reader, so none is lost
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3}) ", answers), [b"200", b"431"])

    def test_a_client_that_resets_the_connection_gets_no_traceback_on_stderr(self):
        """A client that resets mid-body: the failed write of the answer is logged at debug, nothing on stderr."""
        server = guarded_serve(self, _read_body)
        reported = threading.Event()
        original = server.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            original(request, client_address)
            reported.set()

        with mock.patch.object(server, "handle_error", handle_error), \
                mock.patch("sys.stderr", new_callable=io.StringIO) as stderr, \
                self.assertLogs("session_demo", logging.DEBUG) as logs:
            sock = AdapterHelpers.connect(server)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")  # a body begun
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, not a close: the handler's read fails, then the answer's write
            self.assertTrue(reported.wait(5), "the server never noticed the reset")
        self.assertEqual(stderr.getvalue(), "")
        self.assertIn("went away", "\n".join(logs.output))


class TestFrontendRequestChecks(SessionAssertions):
    """Heads refused before any handler runs: a hidden header line, a control character, and no 100 before either."""

    def test_a_target_with_a_control_character_gets_400_and_logs_nothing_raw(self):
        """GET http://[<ESC>[31m (a terminal escape in the target): 400, nothing logged at ERROR, no raw ESC."""
        server = guarded_serve(self, _login)
        with self.assertLogs("session_demo", logging.DEBUG) as logs:
            logging.getLogger("session_demo").debug("marker")
            sock = AdapterHelpers.connect(server)
            self.addCleanup(sock.close)
            sock.sendall(b"GET http://[\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n")
            data = AdapterHelpers.read_until_closed(sock)
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)
        self.assertFalse([r for r in logs.records if r.levelno >= logging.ERROR])
        self.assertNotIn("\x1b", "\n".join(logs.output))

    def test_a_header_line_without_a_colon_is_a_400_not_a_hidden_request(self):
        """Smuggling: 'X-Junk' with no colon hides the Content-Length after it; Node answers 400, so do we."""
        server = guarded_serve(self, _read_body)
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        hidden = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Junk\r\nContent-Length: %d\r\n\r\n" % len(hidden) + hidden)
        self.assertEqual([answer.status for answer in AdapterHelpers.responses(sock)], [400])

    def test_a_multipart_upload_is_answered_not_taken_for_a_bad_header_line(self):
        """multipart/form-data: the email package finds no boundary in the (empty) head's body; that hides nothing."""
        server = guarded_serve(self, _read_body)
        body = b'------x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n------x--\r\n'
        for extra in (b"", b"Expect: 100-continue\r\n"):
            with self.subTest(extra=extra):
                sock = AdapterHelpers.connect(server)
                self.addCleanup(sock.close)
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=----x\r\n"
                             + extra + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                answer = AdapterHelpers.read_until_closed(sock)
                self.assertIn(b"HTTP/1.1 200 ", answer)
                self.assertNotIn(b" 400 ", answer)

    def test_no_100_continue_goes_to_a_request_that_is_refused(self):
        """Expect: 100-continue on a request with a control character: the 400 alone, no interim 100."""
        server = guarded_serve(self)
        sock = AdapterHelpers.connect(server)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /\x01 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        self.assertTrue(AdapterHelpers.read_until_closed(sock).startswith(b"HTTP/1.1 400"))

    def test_a_request_refused_for_its_head_gets_no_interim_100(self):
        """Expect with a header line that hides others, or an unknown method: the 400 or 501 alone, no 100 first."""
        server = guarded_serve(self, _read_body)
        for head in (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nX-Junk\r\nContent-Length: 2\r\n\r\n",
                     b"BREW / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"):
            with self.subTest(head=head):
                sock = AdapterHelpers.connect(server)
                self.addCleanup(sock.close)
                sock.sendall(head)
                first = AdapterHelpers.read_until_closed(sock).split(b"\r\n", 1)[0]
                self.assertRegex(first, rb"^HTTP/1\.[01] (400|501) ")


if __name__ == "__main__":
    unittest.main()
