"""A TCP forwarding proxy that counts the bytes its clients send to an upstream server and the
bytes they receive from it: put between the tool and a store, it measures what a run costs on
the wire (request and response lines, headers and bodies, whatever the protocol's framing)."""
from __future__ import annotations

import socket
import threading

CHUNK = 64 * 1024


class CountingProxy:
    """Listens on 127.0.0.1:port and forwards every connection to UPSTREAM_HOST:UPSTREAM_PORT.
    A byte is counted before it is passed on, so once a client has read an answer the counts
    include the request and the answer. close() stops listening (forwarding connections end
    when either side closes)."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sent = 0
        self._received = 0
        self._closed = False
        threading.Thread(target=self._accept, name="counting-proxy", daemon=True).start()

    def counts(self) -> tuple[int, int]:
        """(bytes sent to the upstream, bytes received from it) so far."""
        with self._lock:
            return self._sent, self._received

    def close(self) -> None:
        """Stops accepting connections."""
        self._closed = True
        self._listener.close()

    def _add(self, sent: int, received: int) -> None:
        with self._lock:
            self._sent += sent
            self._received += received

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        back = threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True)
        back.start()
        self._pipe(client, upstream, True)
        back.join()
        for s in (client, upstream):
            s.close()

    def _pipe(self, source: socket.socket, target: socket.socket, to_upstream: bool) -> None:
        """Copies SOURCE to TARGET until SOURCE ends, counting each chunk before it is passed on;
        then half-closes TARGET so the other direction can finish."""
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                self._add(len(data), 0) if to_upstream else self._add(0, len(data))
                target.sendall(data)
        except OSError:
            pass
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
