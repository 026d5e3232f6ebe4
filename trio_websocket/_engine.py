"""The engine's classes, and every use this library makes of its internals.

Connections are driven by the sans-I/O ``ClientProtocol`` and
``ServerProtocol`` of the websockets package. Its public API covers almost
everything; where it does not, this module reaches into the engine, and no
other module does. A websockets release that changes these internals then
breaks ``tests/test_engine_hooks.py`` (one test per hook, checking the shape
relied on) rather than every user at once, and each hook falls back to the
public path instead of misbehaving.

The hooks, what each relies on, and its fallback:

* **Close between fragments** (:class:`ClientEngine`, :class:`ServerEngine`):
  ``recv_frame`` clears ``current_size``, the engine's size of the message
  in progress, before a close frame. Fallback: none is needed; without that
  attribute the engine fails the connection with 1002 as it always did.
* **Release the handshake** (:func:`release_handshake`): replaces
  ``protocol.parser``, the engine's parser generator, after following its
  ``gi_yieldfrom`` chain to ``StreamReader.at_eof`` (``gi_code``) with an
  empty ``protocol.reader.buffer``. Fallback: the engine's parser is kept,
  and with it the parsed handshake; our frame codec is not used, since the
  engine may be inside a frame.
* **Parser on demand** (:class:`ParserOnDemand`): the parser that replaces
  the engine's stands in for ``Protocol.parse`` until the engine is given
  input, relying on ``receive_data`` and ``receive_eof`` advancing
  ``protocol.parser`` with ``next()``. Fallback: when
  :data:`CAN_PARSE_ON_DEMAND` is false, the generator is made at once.
* **Size reads** (:func:`track_frame_sizes`): sets the ``__class__`` of
  ``protocol.reader``, a plain ``StreamReader`` whose ``read_exact`` the
  parser calls, to :class:`SizingReader`. Fallback: a reader of another
  class is left alone, nothing is reported missing, and every read is of
  the configured size.
* **Send uncompressed** (:func:`send_uncompressed`): empties
  ``protocol.extensions`` for one frame, which ``send_frame`` reads when it
  frames. Fallback: without a ``list`` there, the frame is compressed.
* **Shared frames** (:func:`queue_frame`): appends bytes framed elsewhere to
  ``protocol.writes``, the list ``data_to_send()`` drains. Fallback: when
  :data:`CAN_QUEUE_FRAMES` is false, broadcasts frame the message for each
  connection with ``send_message``.
* **Why the engine failed** (:func:`parser_failure`): reads
  ``protocol.parser_exc``. Fallback: ``None``, as if the peer had not
  misbehaved: the reader waits for its close frame until the deadline.
* **Handshake done elsewhere** (:func:`open_directly`): sets
  ``protocol.extensions``, ``protocol.subprotocol`` and ``protocol.state``
  as the engine's handshake would, and replaces ``protocol.parser`` (then
  still waiting for the HTTP head) with the frame parser. Fallback: when
  :data:`CAN_OPEN_DIRECTLY` is false, every handshake goes through the
  engine.
* **Head limits** (:data:`HEAD_LIMITS`): reads ``MAX_LINE_LENGTH`` and
  ``MAX_NUM_HEADERS`` of ``websockets.http11``, the engine's limits on an
  HTTP head. Fallback: limits small enough for any release.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Generator, Sequence
from typing import Any

from websockets import http11
from websockets.client import ClientProtocol
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import ExtensionParameter, Subprotocol

from ._iterators import BytesLike

#: The engines this module makes at import to probe the installed release log
#: here: a logger outside the logging tree, so nothing is logged for them
#: (not even to an application that logs everything at DEBUG).
_PROBE_LOGGER = logging.Logger("trio-websocket.engine-probe", logging.WARNING)

# Reads at least this large copy through a memoryview rather than a slice.
_COPY_THROUGH_VIEW = 4096


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


# -- Release the handshake ----------------------------------------------------


def release_handshake(protocol: Protocol) -> bool:
    """Let the engine drop the handshake request or response it parsed.

    The engine's parser is one generator that parsed the handshake and then
    went on to parse frames, so its local variables keep the parsed HTTP
    message and its headers alive as long as the connection: over a
    kilobyte per idle connection. Between two frames the frame parser holds
    no other state, so there a fresh one can take over; in the middle of a
    frame (bytes that came with the handshake) the old one is kept, and so
    it is if the engine's internals ever stop looking as expected.

    Returns whether the fresh parser took over: the engine then waits for
    the first byte of a frame with nothing buffered, so our own codec may
    parse the frames that follow (see :mod:`._frames`).
    """
    parser = getattr(protocol, "parser", None)
    if protocol.reader.buffer or not between_frames(parser):
        return False
    if not isinstance(parser, ParserOnDemand):
        _install_frame_parser(protocol)
    return True


def between_frames(parser: object) -> bool:
    """Whether ``parser`` is a generator waiting for the first byte of a frame."""
    if isinstance(parser, ParserOnDemand):
        return True
    inner: Any = parser
    while inspect.isgenerator(inner) and inner.gi_yieldfrom is not None:
        inner = inner.gi_yieldfrom
    at_eof = getattr(StreamReader, "at_eof", None)
    return inspect.isgenerator(inner) and inner.gi_code is getattr(
        at_eof, "__code__", None
    )


# -- Parser on demand ---------------------------------------------------------


class ParserOnDemand:
    """The engine's frame parser, made when the engine is first given input.

    While our codec parses the frames (see :mod:`._frames`), the engine may
    never see a byte of input; its parser generator, suspended at its first
    wait for data, would still cost each connection about 440 bytes. This
    stands in for it: the first ``next()`` (from ``receive_data`` or
    ``receive_eof``) makes the generator, puts it in its place and runs it,
    which parses whatever the engine was given.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def __iter__(self) -> ParserOnDemand:
        return self

    def __next__(self) -> None:
        parser = Protocol.parse(self._protocol)
        self._protocol.parser = parser
        next(parser)


def _install_frame_parser(protocol: Protocol) -> None:
    """Give ``protocol`` a fresh frame parser, waiting for a frame's start."""
    if CAN_PARSE_ON_DEMAND:
        protocol.parser = ParserOnDemand(protocol)  # type: ignore[assignment]
    else:
        protocol.parser = Protocol.parse(protocol)
        next(protocol.parser)  # run to its first wait for data, as the engine does


def _parses_a_ping(server: Protocol) -> bool:
    """Whether the server side ``server`` parses a masked, empty ping."""
    server.receive_data(b"\x89\x80\x00\x00\x00\x00")
    (ping,) = server.events_received()
    return isinstance(ping, Frame) and ping.opcode is Opcode.PING


def _can_parse_on_demand() -> bool:
    try:
        probe = Protocol(Side.SERVER, logger=_PROBE_LOGGER)
        probe.parser = ParserOnDemand(probe)  # type: ignore[assignment]
        return _parses_a_ping(probe) and inspect.isgenerator(probe.parser)
    except Exception:
        return False


#: Whether :class:`ParserOnDemand` works with this release of the engine.
CAN_PARSE_ON_DEMAND = _can_parse_on_demand()


# -- Size reads ---------------------------------------------------------------


class ReadSizer(typing.Protocol):
    """What :func:`track_frame_sizes` returns."""

    @property
    def missing(self) -> int:
        """Bytes the parser still needs to finish what it is reading."""
        ...


class SizingReader(StreamReader):
    """The engine's input buffer, noting how many bytes the parser waits for.

    While a large frame arrives, this tells the connection how much of it is
    still missing, so it can read the rest in large chunks without reading
    past the end of the frame (which would queue messages ahead of what the
    message queue allows).
    """

    wanted = 0

    # The engine's version returns a bytearray slice; returning bytes saves
    # the copy that making an (unmasked) payload into a bytes message would
    # cost, which matters for large messages. The engine accepts either.
    def read_exact(  # type: ignore[override]
        self, n: int
    ) -> Generator[None, None, bytes]:
        """Wait until ``n`` bytes are buffered, then take them as ``bytes``."""
        self.wanted = n
        buffer = self.buffer
        while len(buffer) < n:
            if self.eof:
                raise EOFError(f"stream ended {n - len(buffer)} bytes short")
            yield
        if n < _COPY_THROUGH_VIEW:
            data = bytes(buffer[:n])
        else:  # one copy instead of two
            with memoryview(buffer) as view, view[:n] as head:
                data = bytes(head)
        del buffer[:n]
        return data

    @property
    def missing(self) -> int:
        """Bytes the parser still needs to finish what it is reading."""
        return self.wanted - len(self.buffer)


class _NothingMissing:
    """The fallback of :func:`track_frame_sizes`: no frame size is known."""

    missing = 0


def track_frame_sizes(protocol: Protocol) -> ReadSizer:
    """Make the engine's input buffer a :class:`SizingReader`; return it.

    The buffer object stays the same (it may already hold bytes that came
    with the handshake); only its class changes, which is safe because
    :class:`SizingReader` adds no state of its own beyond a class default.
    """
    reader = getattr(protocol, "reader", None)
    if type(reader) is not StreamReader:
        return _NothingMissing()
    reader.__class__ = SizingReader
    assert isinstance(reader, SizingReader)
    return reader


# -- Send uncompressed --------------------------------------------------------


def send_uncompressed(
    protocol: Protocol,
    send: Callable[[BytesLike, bool], None],
    payload: BytesLike,
    fin: bool,
) -> None:
    """Frame one data frame with ``send`` as if no extension were negotiated.

    The frame goes out with RSV1 clear, which tells the peer it is not
    compressed.
    """
    extensions = protocol.extensions
    if not isinstance(extensions, list):
        send(payload, fin)
        return
    protocol.extensions = []
    try:
        send(payload, fin)
    finally:
        protocol.extensions = extensions


# -- Shared frames ------------------------------------------------------------


def queue_frame(protocol: Protocol, frame: bytes) -> None:
    """Queue ``frame``, framed elsewhere, as if the engine had framed it.

    Only when :data:`CAN_QUEUE_FRAMES`; the next ``data_to_send()`` returns it.
    """
    protocol.writes.append(frame)


def _can_queue_frames() -> bool:
    probe = Protocol(Side.SERVER, logger=_PROBE_LOGGER)
    writes = getattr(probe, "writes", None)
    if not isinstance(writes, list):
        return False
    writes.append(b"probe")
    return probe.data_to_send() == [b"probe"] and probe.data_to_send() == []


#: Whether :func:`queue_frame` works with this release of the engine.
CAN_QUEUE_FRAMES = _can_queue_frames()


# -- Why the engine failed ----------------------------------------------------


def parser_failure(protocol: Protocol) -> Exception | None:
    """The error on which the engine stopped parsing the peer's input, if any.

    An :exc:`EOFError` when the input ended without a closing handshake.
    """
    failure: Exception | None = getattr(protocol, "parser_exc", None)
    return failure


# -- Handshake done elsewhere -------------------------------------------------


def open_directly(
    protocol: Protocol, extensions: list[Extension], subprotocol: Subprotocol | None
) -> None:
    """Open ``protocol`` after a handshake it did not parse or answer itself.

    Leaves the engine as its own handshake would have: ``extensions`` and
    ``subprotocol`` negotiated, the state OPEN, and its parser waiting for
    the first frame. Only while :data:`CAN_OPEN_DIRECTLY`.
    """
    protocol.extensions = extensions
    protocol.subprotocol = subprotocol
    protocol.state = State.OPEN
    _install_frame_parser(protocol)


def _can_open_directly() -> bool:
    try:
        server = ServerProtocol(logger=_PROBE_LOGGER)
        open_directly(server, [], None)
        return (
            _parses_a_ping(server)
            and server.data_to_send() == [b"\x8a\x00"]  # the pong
            and server.state is State.OPEN
            and server.handshake_exc is None
        )
    except Exception:
        return False


#: Whether :func:`open_directly` works with this release of the engine.
CAN_OPEN_DIRECTLY = _can_open_directly()


# -- Head limits --------------------------------------------------------------


def _head_limits() -> tuple[int, int]:
    max_line = getattr(http11, "MAX_LINE_LENGTH", None)
    max_headers = getattr(http11, "MAX_NUM_HEADERS", None)
    if isinstance(max_line, int) and isinstance(max_headers, int):
        return max_line, max_headers
    return 1024, 32


#: The engine's longest HTTP line (its CRLF included) and most headers.
HEAD_LIMITS = _head_limits()
