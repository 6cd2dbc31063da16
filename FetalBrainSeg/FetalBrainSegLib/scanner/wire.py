"""OpenIGTLink messages on a socket, one at a time, none dropped.

pyigtl encodes and decodes the messages. Its own client and server keep only the newest
message of each device and a bounded outgoing queue, which would drop slices of a stack
that arrives faster than it is segmented, so framing on the socket is done here. A message
whose body cannot be decoded is reported as a `Received` with a `problem`: the framing
(header, then a body of the announced size) is intact, so the link carries on.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import pyigtl
from pyigtl.messages import CRC64, MessageBase

HEADER_SIZE = MessageBase.IGTL_HEADER_SIZE
MAX_BODY_BYTES = 1 << 30  # a larger body comes from a broken sender, not a stack of slices
DEVICE_NAME_BYTES = 20  # OpenIGTLink's fixed device-name field

# OpenIGTLink STATUS codes (openigtlink.org, protocol v2)
STATUS_OK = 1
STATUS_UNKNOWN_ERROR = 2
STATUS_CHECKSUM_ERROR = 9
STATUS_UNKNOWN_INSTRUCTION = 12


class LinkClosed(Exception):
    """The other end closed the connection (between messages or in the middle of one)."""


class StatusMessage(MessageBase):
    """OpenIGTLink STATUS: a code, a sub-code, an error name (20 bytes) and a text (pyigtl has none)."""

    def __init__(self, code=STATUS_OK, subcode=0, error_name="", status_string="", timestamp=None, device_name=None):
        MessageBase.__init__(self, timestamp=timestamp, device_name=device_name)
        self._message_type = "STATUS"
        self.code, self.subcode, self.error_name, self.status_string = code, subcode, error_name, status_string
        self._valid_message = True

    def content_asstring(self):
        return f"{self.code} {self.error_name}: {self.status_string}"

    def _pack_content(self):
        name = self.error_name.encode("utf8")[:20]
        return struct.pack("> H q 20s", self.code, self.subcode, name) + self.status_string.encode("utf8") + b"\0"

    def _unpack_content(self, content):
        self.code, self.subcode, name = struct.unpack("> H q 20s", content[:30])
        self.error_name = name.decode("utf8", "replace").rstrip("\0")
        self.status_string = content[30:].split(b"\0", 1)[0].decode("utf8", "replace")


MESSAGE_TYPES = {"STATUS": StatusMessage}


@dataclass
class Received:
    message_type: str
    device_name: str
    timestamp: float
    message: MessageBase | None  # None when the body could not be decoded
    problem: str = ""  # why not
    status_code: int = STATUS_UNKNOWN_ERROR  # the STATUS code that answers the problem


def device_name(source: str, suffix: str) -> str:
    """`<source><suffix>` within the 20 bytes a device name has: the source is shortened, never the suffix."""
    room = DEVICE_NAME_BYTES - len(suffix.encode("utf8"))
    return source.encode("utf8")[:room].decode("utf8", "ignore") + suffix


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise LinkClosed("the connection was closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> Received:
    """The next message on `sock` (blocking). Raises LinkClosed when the peer hangs up, and
    ValueError when the header itself is unusable (the byte stream cannot be followed any more)."""
    header = _read_exactly(sock, HEADER_SIZE)
    try:
        fields = MessageBase.parse_header(header)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable OpenIGTLink header: {exc}") from None
    if fields["body_size"] > MAX_BODY_BYTES:
        raise ValueError(f"a message body of {fields['body_size']} bytes is beyond any stack of slices")
    body = _read_exactly(sock, fields["body_size"])
    kind, name, stamp = fields["message_type"], fields["device_name"], fields["timestamp"]
    if CRC64(body) != struct.unpack("> Q", header[-8:])[0]:
        return Received(kind, name, stamp, None, "its checksum (CRC-64) does not match its body", STATUS_CHECKSUM_ERROR)
    constructor = MESSAGE_TYPES.get(kind) or pyigtl.messages.message_type_to_class_constructor.get(kind)
    if constructor is None:
        problem = f"message type {kind!r} is not one OpenIGTLink defines here"
        return Received(kind, name, stamp, None, problem, STATUS_UNKNOWN_INSTRUCTION)
    message = constructor()
    try:
        message.unpack(fields, body)
    except Exception as exc:  # pyigtl raises whatever numpy or struct raise on a bad body
        return Received(kind, name, stamp, None, f"its {kind} body cannot be decoded ({type(exc).__name__}: {exc})")
    return Received(kind, name, stamp, message)


def send(sock: socket.socket, message: MessageBase) -> None:
    sock.sendall(message.pack())
