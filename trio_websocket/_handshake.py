"""Pieces of the opening handshake shared by clients and servers."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import trio
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue
from websockets.protocol import Event, Protocol

from ._errors import HandshakeError
from ._transport import transport_for


class _EngineLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The engine's log, with its per-connection INFO lines demoted to DEBUG.

    Opening and closing are logged by our layer; the engine's own lines are
    only useful when debugging.
    """

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


#: The logger handed to the engine for every connection.
ENGINE_LOGGER = _EngineLogger(logging.getLogger("trio-websocket.engine"))

HeaderPairs = Iterable[tuple[bytes | str, bytes | str]]

# Headers we set by default but that user code may replace.
_REPLACEABLE = frozenset({"host", "user-agent", "origin", "server"})


def header_pairs(headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """Headers as ``(name, value)`` byte pairs with lower-case names.

    Values keep the bytes they arrived as: RFC 9110 allows bytes 0x80-0xFF
    (obs-text), which the engine decodes as ISO-8859-1 (releases before 14:
    ASCII with surrogate escapes; this undoes either).
    """
    return tuple(
        (name.lower().encode("ascii"), value.encode("latin-1", "surrogateescape"))
        for name, value in headers.raw_items()
    )


def is_handshake_field(name: bytes) -> bool:
    """Whether a lower-case header name belongs to the WebSocket handshake.

    User code may not add or override these, or the handshake would no longer
    mean what it says; ``handshake_headers`` leaves them out.
    """
    return name in (b"upgrade", b"connection") or name.startswith(b"sec-websocket-")


def peer_headers(pairs: Iterable[tuple[bytes, bytes]]) -> PackedHeaders:
    """What a connection's ``handshake_headers`` holds: the peer's headers,
    in its order, without the handshake's own fields (as trio-websocket 0.12).
    """
    return PackedHeaders(pair for pair in pairs if not is_handshake_field(pair[0]))


class PackedHeaders:
    """Handshake headers kept as one ``bytes`` object; pairs on request.

    Every open connection keeps its peer's handshake headers, which are
    rarely read again. As a tuple of byte pairs they take about three
    objects and 150 bytes per header; packed, a fifth of that.
    """

    __slots__ = ("_packed",)

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        # Neither a name nor a value can hold a newline, nor a name a colon:
        # the engine refuses such headers.
        self._packed = b"\n".join(name + b":" + value for name, value in pairs)

    def pairs(self) -> tuple[tuple[bytes, bytes], ...]:
        """The headers as ``(name, value)`` byte pairs, in their order."""
        if not self._packed:
            return ()
        return tuple(_split_header(line) for line in self._packed.split(b"\n"))


def _split_header(line: bytes) -> tuple[bytes, bytes]:
    name, _, value = line.partition(b":")
    return name, value


def _text(value: bytes | str, what: str) -> str:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if any(char in text for char in "\r\n\0"):
        raise ValueError(f"header {what} may not contain CR, LF or NUL: {text!r}")
    return text


def add_extra_headers(headers: Headers, extra: HeaderPairs | None) -> None:
    """Add user-supplied headers to a handshake request or response.

    ``Host``, ``User-Agent``, ``Origin`` and ``Server`` replace our defaults;
    the handshake's own headers are a :exc:`ValueError`.
    """
    for raw_name, raw_value in extra or ():
        name, value = _text(raw_name, "name"), _text(raw_value, "value")
        folded = name.lower()
        if is_handshake_field(folded.encode("latin-1")):
            raise ValueError(f"extra headers may not set the handshake header {name}")
        if folded in _REPLACEABLE and name in headers:
            del headers[name]
        try:
            headers[name] = value
        except InvalidHeaderValue:
            raise ValueError(f"invalid value for header {name}: {value!r}") from None


def put_extra_headers_first(headers: Headers, extra: HeaderPairs | None) -> Headers:
    """``headers`` with user-supplied ones in front, checked as by
    :func:`add_extra_headers`; an extra ``Server`` replaces the engine's.

    A server's response lists the application's headers before those the
    engine adds (``Date``, ``Server``), as trio-websocket 0.12 did.
    """
    merged = Headers()
    add_extra_headers(merged, extra)
    for name, value in headers.raw_items():
        if not (name.lower() in _REPLACEABLE and name in merged):
            merged[name] = value
    return merged


def handshake_lost(exc: trio.BrokenResourceError) -> HandshakeError:
    """The error for a connection that broke before the handshake completed.

    Raise it ``from exc.__cause__ or exc``: the cause is the underlying
    error (a reset, a TLS failure) when there is one.
    """
    return HandshakeError(f"connection lost during the handshake: {exc}")


async def receive_handshake(
    stream: trio.abc.Stream,
    protocol: Protocol,
    receive_size: int | None,
    *,
    hold_frames: bool = False,
) -> tuple[list[Event], bytes]:
    """Read until the engine has parsed the peer's request or response.

    Returns the events parsed so far (the request or response first, then
    any frames that arrived with it) and the bytes held back. With
    ``hold_frames`` the engine sees nothing past the HTTP head, and what
    follows it is returned unparsed: a server must answer before it parses
    frames, or it would answer a ping ahead of its 101, fail on a bad frame
    without a close frame, and parse without the extensions its answer
    negotiates. Raises :exc:`HandshakeError` when the data is not a valid
    handshake message or the stream ends first; the engine has then queued
    whatever answer it wants to send.
    """
    transport = transport_for(stream)
    head_end = _HeadEnd() if hold_frames else None
    while True:
        try:
            data = await transport.receive(receive_size)
        except trio.BrokenResourceError as exc:
            raise handshake_lost(exc) from exc.__cause__ or exc
        held = b""
        if data:
            if head_end is not None:
                data, held = head_end.split(data)
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        events = protocol.events_received()
        if events:
            return events, held
        if protocol.handshake_exc is not None:
            raise HandshakeError(str(protocol.handshake_exc)) from (
                protocol.handshake_exc
            )
        if not data:
            raise HandshakeError("connection closed during the handshake")


class _HeadEnd:
    """Finds the blank line that ends an HTTP head, across reads."""

    def __init__(self) -> None:
        self._tail = b""  # the last bytes read, for a blank line split by reads

    def split(self, data: bytes | bytearray) -> tuple[bytes | bytearray, bytes]:
        """``data`` as the part up to the end of the head, and the rest."""
        window = self._tail + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self._tail = window[-3:]
            return data, b""
        cut = end + 4 - len(self._tail)
        return data[:cut], bytes(data[cut:])


async def send_pending(stream: trio.abc.Stream, protocol: Protocol) -> None:
    """Write whatever the engine queued during the handshake."""
    data = b"".join(protocol.data_to_send())
    if data:
        await transport_for(stream).send_all(data)

