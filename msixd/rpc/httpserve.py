"""The metrics port: HTTP/1.x GET of /metrics, one thread, bounded.

prometheus-client's own server starts a thread per connection and keeps it
for as long as the client does; this port is open to every local user. Here
one thread serves every connection with non-blocking sockets: at most
`max_connections` at once (more are closed as they arrive), a request must
arrive within REQUEST_SECONDS and fit in MAX_REQUEST bytes, and every
connection closes after its answer.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from msixd.errors import MsixdError

log = structlog.get_logger(__name__)
REQUEST_SECONDS = 5.0
MAX_REQUEST = 8192


class _Client:
    __slots__ = ("sock", "request", "reply", "deadline")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request = bytearray()
        self.reply = b""
        self.deadline = time.monotonic() + REQUEST_SECONDS


class MetricsHttp:
    def __init__(self, listen: str, registry: CollectorRegistry, max_connections: int) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, int(port)))
        except OSError as err:
            self._listener.close()
            raise MsixdError(f"cannot serve metrics on {listen}: {os.strerror(err.errno or 0)}") from None
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._registry = registry
        self._max = max_connections
        self._clients: dict[socket.socket, _Client] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self.heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.heartbeat = now = time.monotonic()
                for key, mask in self._selector.select(timeout=1.0):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._service(self._clients[key.fileobj], mask)  # type: ignore[index]
                for client in [c for c in self._clients.values() if c.deadline < now]:
                    self._drop(client)
        finally:
            for client in list(self._clients.values()):
                self._drop(client)
            self._selector.close()
            self._listener.close()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE):
                    return  # the next turn tries again; the deadline sweep frees slots
                continue
            if len(self._clients) >= self._max:
                sock.close()  # full: the client may try again
                continue
            sock.setblocking(False)
            client = self._clients[sock] = _Client(sock)
            self._selector.register(sock, selectors.EVENT_READ)
            del client

    def _service(self, client: _Client, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not client.reply:
                data = client.sock.recv(MAX_REQUEST)
                if not data:
                    self._drop(client)
                    return
                client.request += data
                if b"\r\n\r\n" in client.request or b"\n\n" in client.request:
                    client.reply = self._answer(bytes(client.request))
                    self._selector.modify(client.sock, selectors.EVENT_WRITE)
                elif len(client.request) >= MAX_REQUEST:
                    client.reply = _response(431, b"request too large\n", "text/plain")
                    self._selector.modify(client.sock, selectors.EVENT_WRITE)
            if mask & selectors.EVENT_WRITE and client.reply:
                sent = client.sock.send(client.reply)
                client.reply = client.reply[sent:]
                if not client.reply:
                    self._drop(client)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)

    def _answer(self, request: bytes) -> bytes:
        line = request.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(line) != 3 or line[0] != b"GET":
            return _response(405, b"only GET\n", "text/plain")
        if line[1].split(b"?", 1)[0] not in (b"/", b"/metrics"):
            return _response(404, b"metrics are at /metrics\n", "text/plain")
        return _response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.sock, None) is not None:
            self._selector.unregister(client.sock)
        client.sock.close()


def _response(code: int, body: bytes, content_type: str) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large"}[code]
    head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body
