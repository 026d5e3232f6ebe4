"""The engine's protocol classes, with the corrections this library needs.

Connections are driven by the sans-I/O ``ClientProtocol`` and
``ServerProtocol`` of the websockets package; these subclasses change only
how they react to certain frames from the peer.
"""

from __future__ import annotations

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol
from websockets.server import ServerProtocol


class _CloseBetweenFragments(Protocol):
    """Takes a close frame between two fragments as a normal close.

    RFC 6455 (section 5.4) allows control frames between the fragments of a
    message, so a close there ends the connection like any other close: it
    is answered with the peer's code, and the unfinished message is dropped.
    The engine would call it an incomplete message and fail with 1002
    (Autobahn case 7.1.5).
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None  # no message in progress any more
        super().recv_frame(frame)


class ClientEngine(_CloseBetweenFragments, ClientProtocol):
    """The client side of the engine."""


class ServerEngine(_CloseBetweenFragments, ServerProtocol):
    """The server side of the engine."""
