"""The engine's classes, with the corrections this library needs.

Connections are driven by the sans-I/O ``ClientProtocol`` and
``ServerProtocol`` of the websockets package; these subclasses change only
how they react to certain frames from the peer, and how the client
negotiates compression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from websockets.client import ClientProtocol
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.typing import ExtensionParameter


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


class ClientDeflateFactory(ClientPerMessageDeflateFactory):
    """permessage-deflate offered as browsers offer it, with a small window.

    The offer is a bare ``client_max_window_bits``, so the server may choose
    any window for our compressor; some answer 15 even to a smaller offer
    (against RFC 7692: Autobahn's reference server does), which the engine
    would refuse. A compressor may always use a smaller window than the one
    negotiated, so ours uses at most ``window_bits``, which is what keeps
    its memory small.
    """

    def __init__(self, window_bits: int, compress_settings: dict[str, Any]) -> None:
        super().__init__(
            client_max_window_bits=True, compress_settings=compress_settings
        )
        self.window_bits = window_bits

    def process_response_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> PerMessageDeflate:
        deflate = super().process_response_params(params, accepted_extensions)
        if deflate.local_max_window_bits <= self.window_bits:
            return deflate
        return PerMessageDeflate(
            deflate.remote_no_context_takeover,
            deflate.local_no_context_takeover,
            deflate.remote_max_window_bits,
            self.window_bits,
            deflate.compress_settings,
        )
