"""Pieces of the opening handshake shared by clients and servers."""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import trio
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue
from websockets.protocol import Event, Protocol

from ._engine import CAN_OPEN_DIRECTLY, HEAD_LIMITS
from ._errors import HandshakeError
from ._transport import transport_for

#: Headers whose values are credentials: the engine's log shows them redacted.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie"}
)
#: How the engine logs one header line, sent (">") or received ("<").
_HEADER_LINES = frozenset({"> %s: %s", "< %s: %s"})


class _EngineLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The engine's log, quieter and without credentials.

    Its per-connection INFO lines are demoted to DEBUG: opening and closing
    are logged by our layer, and the engine's own lines are only useful when
    debugging. At DEBUG it logs every handshake header; the values of
    credentials (``Authorization``, ``Cookie`` and the like) are replaced,
    so that turning debug logs on does not write passwords and session
    tokens to log files. This relies on the engine's format for those lines
    (``_HEADER_LINES``); ``tests/test_logging_levels.py`` fails if a
    websockets release changes it.
    """

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg in _HEADER_LINES and len(args) == 2:
            name, _ = args
            if str(name).lower() in _SECRET_HEADERS:
                args = (name, "[redacted]")
        super().debug(msg, *args, **kwargs)


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


async def receive_some(
    stream: trio.abc.Stream, receive_size: int | None
) -> bytes | bytearray:
    """One read of the handshake: ``b""`` at the end of the stream.

    Raises :exc:`HandshakeError` if the connection broke.
    """
    try:
        return await transport_for(stream).receive(receive_size)
    except trio.BrokenResourceError as exc:
        raise handshake_lost(exc) from exc.__cause__ or exc


async def receive_handshake(
    stream: trio.abc.Stream,
    protocol: Protocol,
    receive_size: int | None,
    *,
    hold_frames: bool = False,
    received: bytes | bytearray | None = None,
) -> tuple[list[Event], bytes]:
    """Read until the engine has parsed the peer's request or response.

    Returns the events parsed so far (the request or response first, then
    any frames that arrived with it) and the bytes held back. With
    ``hold_frames`` the engine sees nothing past the HTTP head, and what
    follows it is returned unparsed: a server must answer before it parses
    frames, or it would answer a ping ahead of its 101, fail on a bad frame
    without a close frame, and parse without the extensions its answer
    negotiates. ``received`` is what :func:`receive_some` already read, if
    anything. Raises :exc:`HandshakeError` when the data is not a valid
    handshake message or the stream ends first; the engine has then queued
    whatever answer it wants to send.
    """
    head_end = _HeadEnd() if hold_frames else None
    while True:
        data = (
            received
            if received is not None
            else await receive_some(stream, receive_size)
        )
        received = None
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


# -- The direct path ----------------------------------------------------------
#
# The common handshake, a complete and well-formed head in one read, is
# parsed and answered here rather than by the engine's generator-based
# parser and its Request, Response and Headers objects, which cost more
# than the rest of the handshake. Anything else (a partial head, a line or
# header the engine would refuse, anything unusual) is left to the engine,
# which stays the reference: the direct path either gives the engine's
# result or declines.

# The engine's grammar of a header name and value (RFC 9110).
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Field = tuple[bytes, bytes]


def direct_path_allowed() -> bool:
    """Whether handshakes may take the direct path now.

    Not while the engine's debug log is on: the engine logs what it parses
    and sends, so it parses and sends.
    """
    return CAN_OPEN_DIRECTLY and not ENGINE_LOGGER.isEnabledFor(logging.DEBUG)


def split_head(data: bytes | bytearray) -> tuple[bytes, bytes] | None:
    """``data`` as a complete HTTP head (without its blank line) and the rest."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    return bytes(data[:end]), bytes(data[end + 4 :])


def parse_head(head: bytes) -> tuple[list[bytes], list[Field]] | None:
    """The start line's three parts and the headers, or None to decline.

    Headers are ``(name, value)`` with lower-case names, values stripped,
    in their order: what :func:`header_pairs` makes of the engine's parse.
    Declines a head the engine would refuse or parse differently.
    """
    lines = head.split(b"\r\n")
    max_line, max_headers = HEAD_LIMITS
    if (
        len(lines) - 1 > max_headers
        or head.count(b"\n") != len(lines) - 1  # a bare LF, or CR
        or head.count(b"\r") != len(lines) - 1
        or max(map(len, lines)) + 2 > max_line
    ):
        return None
    start = lines[0].split(b" ", 2)
    if len(start) != 3:
        return None
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            return None
        fields.append((name.lower(), value))
    return start, fields


def fields_named(
    fields: list[Field], names: Iterable[bytes]
) -> dict[bytes, list[bytes]]:
    """The values of the headers called ``names``, each in its order."""
    found: dict[bytes, list[bytes]] = {name: [] for name in names}
    for name, value in fields:
        values = found.get(name)
        if values is not None:
            values.append(value)
    return found


def only(values: list[bytes]) -> bytes | None:
    """The value of a header that must appear once; None otherwise."""
    return values[0] if len(values) == 1 else None


def lists_upgrade(connection: bytes) -> bool:
    """Whether a ``Connection`` value is a plain token list with ``upgrade``.

    A value with empty or malformed elements is not (the engine then
    decides).
    """
    options = [option.strip(b" \t") for option in connection.split(b",")]
    return all(_TOKEN.fullmatch(option) for option in options) and any(
        option.lower() == b"upgrade" for option in options
    )


def is_websocket_upgrade(upgrade: bytes) -> bool:
    """Whether an ``Upgrade`` value is ``websocket``, in any case."""
    return upgrade.lower() == b"websocket"


def valid_key(key: bytes) -> bool:
    """Whether ``key`` is a ``Sec-WebSocket-Key``: 16 bytes in base64."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def accept_value(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value that answers ``key`` (RFC 6455)."""
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())


def as_headers(name: str, values: list[bytes]) -> Headers:
    """``values`` of the header ``name`` as the engine's ``Headers``."""
    return Headers([(name, value.decode("latin-1")) for value in values])


class _HttpDate:
    """The ``Date`` header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = email.utils.formatdate(second, usegmt=True)
        return self._text


#: The ``Date`` header's value now, as the engine writes it.
http_date = _HttpDate()


def serialize_head(start_line: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """An HTTP head, as the engine serializes its requests and responses."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
    return f"{start_line}\r\n{lines}\r\n".encode("iso-8859-1")
