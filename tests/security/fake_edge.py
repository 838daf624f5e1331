"""A hand-driven edge for attack tests: it speaks the frame protocol over a real WebSocket,
and does only what the test tells it to (no automatic pongs, no plugins)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from isthmus.wire import protocol as P

MANIFEST = {"probe": {"name": "probe", "title": "Probe", "version": "1", "menu": []}}


class FakeEdge:
    def __init__(self, url: str, name: str, token: str, plugins: dict[str, Any] | None = None,
                 resume: str | None = None) -> None:
        self.ws: ClientConnection = connect(url.replace("http://", "ws://") + "/_edge/connect",
                                            max_size=P.MAX_MESSAGE, open_timeout=10, compression=None,
                                            legacy=True)
        hello: dict[str, Any] = {"t": P.HELLO, "v": P.PROTOCOL_VERSION, "name": name, "token": token,
                                 "plugins": MANIFEST if plugins is None else plugins, "host": "fake"}
        if resume is not None:
            hello["resume"] = resume
        self.ws.send(P.pack([hello]))
        self.first = self.frames(10.0)[0]

    def frames(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        return P.unpack(self.ws.recv(timeout=timeout))

    def send(self, *frames: dict[str, Any]) -> None:
        self.ws.send(P.pack(list(frames)))

    def notify(self, topic: str, data: bytes, plugin: str = "probe", owner: Any = None) -> None:
        self.send({"t": P.NOTIFY, "plugin": plugin, "topic": topic, "d": data, "ow": owner})

    def answer_pings(self, seconds: float) -> None:
        """Keep the link alive (pong every ping) for a while."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                for frame in self.frames(max(0.05, end - time.monotonic())):
                    if frame["t"] == P.PING:
                        self.send({"t": P.PONG, "ts": frame.get("ts")})
            except TimeoutError:
                return

    def closed(self, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                self.ws.recv(timeout=max(0.05, end - time.monotonic()))
        except (ConnectionClosed, EOFError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.ws.close()


def raw_ws_message(port: int, payload: bytes, timeout: float = 20.0) -> bytes:
    """Open /_edge/connect by hand, send ``payload`` as one binary message (however large,
    ignoring any limit the client library would apply), and return what came back."""
    proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/_edge/connect"), max_size=None)
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        proto.send_request(proto.connect())
        sock.sendall(b"".join(proto.data_to_send()))
        while not proto.events_received() and proto.handshake_exc is None:
            proto.receive_data(sock.recv(65536))
        got = b""
        try:
            sock.sendall(Frame(Opcode.BINARY, payload).serialize(mask=True, extensions=[]))
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                got += data
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
        return got
    finally:
        sock.close()


def empty_maps(n: int) -> bytes:
    """A msgpack array of ``n`` empty maps: one byte each on the wire, ~64 bytes each decoded."""
    return b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
