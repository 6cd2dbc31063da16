"""`fetalbrainseg stream`: segment the slices a scanner sends over OpenIGTLink, and answer each.

One connection at a time, as a scanner or Slicer holds one. Per connection, the reading
thread queues every message (a slice that arrives while the model is busy waits, it is not
dropped) and one worker answers them strictly in arrival order. A series starts with the
connection and again whenever the device name or the in-plane geometry changes; each new
series restarts the intensity normalization. A message that cannot be used gets an error
STATUS and the link stays up. A dropped connection is logged; a listening link then accepts
the next one, a connecting link reconnects.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Callable

from pyigtl import ImageMessage

from ..engine.streaming import StreamingSegmenter
from . import replies
from .series import split_image
from .wire import STATUS_UNKNOWN_INSTRUCTION, LinkClosed, Received, StatusMessage, receive, send

RECONNECT_SECONDS = 1.0
POLL_SECONDS = 0.2  # how often a waiting link checks that it should stop


class Session:
    """One connection: `run` reads until the peer hangs up, then lets the worker answer what is queued."""

    def __init__(self, sock: socket.socket, streaming: StreamingSegmenter, log: Callable[[str], None]):
        self.sock = sock
        self.streaming = streaming
        self.log = log
        self._queue: queue.Queue = queue.Queue()
        self._series: tuple | None = None
        self._series_index = 0
        self.answered = 0  # slices answered on this connection

    def run(self) -> None:
        worker = threading.Thread(target=self._work, name="FetalBrainSeg-scanner", daemon=True)
        worker.start()
        try:
            while True:
                self._queue.put(receive(self.sock))
        except LinkClosed:
            pass
        except ValueError as exc:  # an unreadable header: the byte stream cannot be followed any more
            self._queue.put(Received("", "", time.time(), None, str(exc)))
        except OSError as exc:
            self.log(f"connection lost: {exc}")
        finally:
            self._queue.put(None)
            worker.join()

    def _work(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                for message in self._answer(item):
                    send(self.sock, message)
        except OSError as exc:  # the peer is gone: nothing left can be delivered
            self.log(f"connection lost while answering: {exc}")

    def _answer(self, item: Received) -> list:
        source = item.device_name or "unnamed"
        if item.message is None:
            self.log(f"{source}: refused {item.message_type or 'message'}: {item.problem}")
            return [replies.error_message(source, f"refused: {item.problem}", item.timestamp, item.status_code)]
        if isinstance(item.message, StatusMessage):
            return []  # a peer's acknowledgement; answering it could start an endless exchange
        if not isinstance(item.message, ImageMessage):
            text = f"only IMAGE messages are segmented, not {item.message_type}"
            return [replies.error_message(source, text, item.timestamp, STATUS_UNKNOWN_INSTRUCTION)]
        try:
            return self._segment(source, item.message)
        except ValueError as exc:  # MessageImageError, or the engine's NaN refusal
            self.log(f"{source}: refused IMAGE: {exc}")
            return [replies.error_message(source, f"refused IMAGE: {exc}", item.timestamp)]

    def _segment(self, source: str, message: ImageMessage) -> list:
        parts = split_image(message.image, message.ijk_to_world_matrix)
        series = (source, message.world_coordinate_system, parts.geometry())
        if series != self._series:
            if self._series is not None:
                self.log(f"{source}: new series (name or geometry changed); normalization restarts")
            self.streaming.reset()
            self._series, self._series_index = series, 0
        results = []
        for piece in parts.slices:
            results.append(self.streaming.process(piece.image, piece.to_world, self._series_index))
            self._series_index += 1
        self.answered += len(results)
        world, stamp, queued = message.world_coordinate_system, message.timestamp, self._queue.qsize()
        answer = [replies.mask_message(source, parts.mask_array([r.mask for r in results]), parts.matrix, world, stamp)]
        for result in results:
            answer += replies.slice_replies(source, result, world, queued, stamp)
        return answer


class ScannerLink:
    """Listen on (host, port), or connect to a scanner's (host, port), until `stop`."""

    def __init__(
        self,
        streaming: StreamingSegmenter,
        port: int,
        host: str = "127.0.0.1",
        connect: bool = False,
        log: Callable[[str], None] = print,
    ):
        self.streaming = streaming
        self.host, self.port, self.connect = host, port, connect
        self.log = log
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._current: socket.socket | None = None
        if not connect:
            self._listener = socket.create_server((host, port))
            self._listener.settimeout(POLL_SECONDS)
            self.port = self._listener.getsockname()[1]  # the one chosen when asked for port 0

    def serve_forever(self) -> None:
        if self.connect:
            self.log(f"connecting to {self.host}:{self.port} (OpenIGTLink)")
        else:
            self.log(f"listening on {self.host}:{self.port} (OpenIGTLink); Ctrl-C stops")
        while not self._stop.is_set():
            sock, peer = self._next_connection()
            if sock is None:
                continue
            self.log(f"connected: {peer}")
            self._current = sock
            session = Session(sock, self.streaming, self.log)
            try:
                session.run()
            finally:
                self._current = None
                sock.close()
            self.log(f"connection closed: {peer} ({session.answered} slices answered)")
        if self._listener is not None:
            self._listener.close()

    def _next_connection(self) -> tuple[socket.socket | None, str]:
        if not self.connect:
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                return None, ""
            sock.settimeout(None)
            return sock, f"{address[0]}:{address[1]}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=POLL_SECONDS)
        except OSError:
            self._stop.wait(RECONNECT_SECONDS)
            return None, ""
        sock.settimeout(None)
        return sock, f"{self.host}:{self.port}"

    def start(self) -> threading.Thread:
        """Serve on a daemon thread (tests, embedding); `stop` ends it."""
        thread = threading.Thread(target=self.serve_forever, name="FetalBrainSeg-link", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        current = self._current
        if current is not None:
            try:
                current.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
