"""A stack replayed as a scanner sends it: one IMAGE per slice at the acquisition rate, with the
answers collected in arrival order (for tests, the latency benchmark, and checking a set-up)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import pyigtl

from ..engine.stack import Stack, slice_to_world
from ..engine.volume_io import Volume
from .wire import LinkClosed, Received, receive, send


def slice_messages(volume: Volume, device: str) -> list[pyigtl.ImageMessage]:
    """One single-slice IMAGE per slice of a stack, each with its own IJK-to-RAS matrix (i, j in-plane)."""
    stack = Stack(volume, device)
    return [  # (k, j, i) voxel order with k = 1: the slice's own (i, j) plane
        pyigtl.ImageMessage(image.T[None], slice_to_world(volume.affine, stack.axis, index), "ras", device_name=device)
        for index, image in enumerate(stack.slices())
    ]


@dataclass
class Replay:
    """A connection to `fetalbrainseg stream`; `received` fills on a reader thread, in order."""

    host: str
    port: int
    received: list[tuple[float, Received]] = field(default_factory=list)  # (arrival time, message)

    def __post_init__(self):
        self.sock = socket.create_connection((self.host, self.port))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = receive(self.sock)
                self.received.append((time.time(), message))
        except (LinkClosed, OSError):
            pass

    def send(self, messages: list, rate_hz: float | None = None) -> list[float]:
        """Send each message stamped with its sending time, at `rate_hz` (None: as fast as possible)."""
        stamps, begin = [], time.time()
        for n, message in enumerate(messages):
            if rate_hz:
                time.sleep(max(0.0, begin + n / rate_hz - time.time()))
            message.timestamp = time.time()
            stamps.append(message.timestamp)
            send(self.sock, message)
        return stamps

    def wait_for(self, count: int, kind: str, timeout: float = 60.0) -> list[tuple[float, Received]]:
        """Wait until `count` messages of `kind` (e.g. "STRING") have arrived; all received so far."""
        deadline = time.time() + timeout
        while sum(m.message_type == kind for _, m in self.received) < count:
            if time.time() > deadline:
                raise TimeoutError(f"{count} {kind} answers expected, {len(self.received)} messages received")
            time.sleep(0.005)
        return list(self.received)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # a bare close leaves the reader's recv, and the peer, waiting
        except OSError:
            pass
        self.sock.close()
        self._reader.join(5)
