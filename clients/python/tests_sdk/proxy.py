"""A TCP proxy on 127.0.0.1 in front of a real sessionkeeper server, for the adapter tests that
need a network failure at a chosen point: a stream cut after some bytes, or a response that never
arrives. It forwards bytes untouched (gRPC's HTTP/2 passes through) and counts, per connection,
the bytes the server sent to the client. Threads, no sleeps: every wait is on a socket or an
Event.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class Connection:
    client: socket.socket
    server: socket.socket
    downstream_bytes: int = 0
    """Bytes of the server's answer forwarded to the client."""
    cut: bool = False
    """The proxy closed it on purpose."""
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.closed.set()


class CuttingProxy:
    """``addr`` is where clients connect. Arm one failure at a time:

    * :meth:`cut_after` — the next ``n`` bytes the server sends (on any connection) pass, then the
      connection carrying them is closed: a stream broken mid-way;
    * :meth:`swallow_responses` — from now on the client's bytes reach the server but nothing the
      server answers reaches the client, until :meth:`cut_everything` closes the connections: a
      call that lands on the server and whose response is lost.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream: Tuple[str, int] = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self.connections: List[Connection] = []
        self._cut_budget: Optional[int] = None
        self._swallow = False
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, n: int) -> None:
        with self._lock:
            self._cut_budget = n

    def swallow_responses(self) -> None:
        with self._lock:
            self._swallow = True

    def cut_everything(self) -> None:
        """Close every open connection and forward normally again."""
        with self._lock:
            self._swallow = False
            self._cut_budget = None
            open_ones = [c for c in self.connections if not c.closed.is_set()]
        for conn in open_ones:
            conn.cut = True
            conn.close()

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        self.cut_everything()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            conn = Connection(client, server)
            with self._lock:
                self.connections.append(conn)
            threading.Thread(target=self._pump_up, args=(conn,), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(conn,), daemon=True).start()

    def _pump_up(self, conn: Connection) -> None:
        try:
            while True:
                data = conn.client.recv(65536)
                if not data:
                    break
                conn.server.sendall(data)
        except OSError:
            pass
        conn.close()

    def _pump_down(self, conn: Connection) -> None:
        try:
            while True:
                data = conn.server.recv(65536)
                if not data:
                    break
                with self._lock:
                    if self._swallow:
                        continue
                    budget = self._cut_budget
                    if budget is not None:
                        if len(data) >= budget:
                            data = data[:budget]
                            self._cut_budget = None
                            cut_now = True
                        else:
                            self._cut_budget = budget - len(data)
                            cut_now = False
                    else:
                        cut_now = False
                    conn.downstream_bytes += len(data)
                if data:
                    conn.client.sendall(data)
                if cut_now:
                    conn.cut = True
                    break
        except OSError:
            pass
        conn.close()
