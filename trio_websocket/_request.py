"""The server side of the handshake: a request the application answers."""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidHeader, InvalidUpgrade
from websockets.extensions import Extension
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ._connection import WebSocketConnection
from ._engine import ServerEngine, open_directly
from ._errors import CloseReason, ConnectionClosed, HandshakeError
from ._handshake import (
    ENGINE_LOGGER,
    HeaderPairs,
    PackedHeaders,
    accept_value,
    add_extra_headers,
    as_headers,
    direct_path_allowed,
    fields_named,
    header_pairs,
    http_date,
    is_websocket_upgrade,
    lists_upgrade,
    only,
    parse_head,
    peer_headers,
    put_extra_headers_first,
    receive_handshake,
    receive_some,
    serialize_head,
    split_head,
    valid_key,
)
from ._head import HeadTooLarge, limit_head
from ._settings import (
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BYTES,
    ConnectionOptions,
    Settings,
    configure,
)
from ._transport import transport_for
from ._url import Endpoint, stream_endpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

# How long, and how much, to keep reading from a client we refused, so that
# it receives our answer instead of a reset caused by its unread data.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 2**16
_VERSION_HEADER = "Sec-WebSocket-Version"
_SWITCHING = "HTTP/1.1 101 Switching Protocols"


class DirectAnswer:
    """The 101 the direct path prepared, and what it negotiated."""

    __slots__ = ("extensions", "fields")

    def __init__(
        self, fields: list[tuple[str, str]], extensions: list[Extension]
    ) -> None:
        self.fields = fields
        self.extensions = extensions


class WebSocketRequest:
    """A client's handshake request, waiting for the server's answer.

    A server handler receives one of these and either calls :meth:`accept`
    to open the connection or :meth:`reject` to refuse it with an HTTP
    response.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        protocol: ServerProtocol,
        start: tuple[str, str],
        headers: PackedHeaders,
        response: Response | DirectAnswer | None,
        early_data: bytes,
        settings: Settings,
    ) -> None:
        self._nursery = nursery
        self._stream = stream
        self._protocol = protocol
        self._method, self._path = start
        self._headers = headers
        # The engine's 101, or the direct path's; dropped once sent.
        self._response = response
        self._is_upgrade = response is not None
        self._early_data = early_data  # what the client sent behind its request
        self._settings = settings
        self._answered = False
        self._connection: WebSocketConnection | None = None
        self._path_params: dict[str, str] = {}
        # Told about the connection once accepted (a server tracks them).
        self._on_accept: Callable[[WebSocketConnection], None] | None = None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every request header, as ``(name, value)`` byte pairs.

        Names are lower case; ``Host`` and the offered extensions are
        included.
        """
        return list(self._headers.pairs())

    @property
    def method(self) -> str:
        """The HTTP method: ``GET`` for every WebSocket handshake."""
        return self._method

    @property
    def is_upgrade(self) -> bool:
        """False for a plain HTTP request given to a server's ``http_handler``."""
        return self._is_upgrade

    @property
    def path(self) -> str:
        """The request target: the path and the query string."""
        return self._path

    @property
    def path_params(self) -> dict[str, str]:
        """Values a :class:`Router` took from the path: ``{"name": ...}``.

        Empty unless the request was dispatched by a route with parameters
        such as ``"/feed/{name}"``.
        """
        return self._path_params

    @property
    def proposed_subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order of preference."""
        return tuple(
            subprotocol
            for name, value in self._headers.pairs()
            if name == b"sec-websocket-protocol"
            for subprotocol in parse_subprotocol(value.decode("latin-1"))
        )

    @property
    def local(self) -> Endpoint | str:
        """The server's end of the connection."""
        return stream_endpoint(self._stream, remote=False)

    @property
    def remote(self) -> Endpoint | str:
        """The client's end of the connection."""
        return stream_endpoint(self._stream, remote=True)

    async def accept(
        self,
        *,
        subprotocol: str | None = None,
        extra_headers: HeaderPairs | None = None,
    ) -> WebSocketConnection:
        """Complete the handshake and return the open connection.

        ``subprotocol`` must be one the client offered (else
        :exc:`ValueError`). ``extra_headers`` are added to the response.
        """
        self._check_unanswered()
        response, early_data = self._response, self._early_data
        if response is None:
            raise RuntimeError("a plain HTTP request cannot be accepted")
        if subprotocol is not None and subprotocol not in self.proposed_subprotocols:
            raise ValueError(f"the client did not offer subprotocol {subprotocol!r}")
        if isinstance(response, DirectAnswer):
            answer = _direct_answer(
                self._protocol, response, subprotocol, extra_headers
            )
        else:
            answer = _engine_answer(
                self._protocol, response, subprotocol, extra_headers
            )
        self._answered = True
        self._response, self._early_data = None, b""
        try:
            await transport_for(self._stream).send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await trio.aclose_forcefully(self._stream)
            raise ConnectionClosed(CloseReason(1006, "lost during handshake")) from exc
        self._connection = WebSocketConnection(
            self._stream,
            self._protocol,
            self._settings,
            path=self.path,
            handshake_headers=peer_headers(self._headers.pairs()),
        )
        # Frames the client sent right behind its request are parsed only now,
        # in the state and with the extensions the response set.
        self._connection.start_background_tasks(
            self._nursery, early_data=early_data, contain_errors=True
        )
        # The server's nursery for its clients outlives the connection.
        self._connection.let_reader_rest()
        if self._on_accept is not None:
            self._on_accept(self._connection)
        return self._connection

    async def reject(
        self,
        status_code: int,
        *,
        extra_headers: HeaderPairs | None = None,
        body: bytes | None = None,
    ) -> None:
        """Refuse the connection with an HTTP response, then close it.

        The response carries ``status_code``, ``extra_headers`` and an
        optional ``body`` with the matching ``Content-Length`` (for a
        ``HEAD`` request, the ``Content-Length`` without the body).
        """
        self._check_unanswered()
        if not 200 <= status_code <= 599:
            raise ValueError(f"cannot reject with HTTP status {status_code}")
        response = _http_response(status_code, extra_headers, body or b"")
        if self._method == "HEAD":  # the headers a GET gets, without the body
            response.body = b""
        self._answered = True
        self._protocol.send_response(response)
        await _send_and_close(self._stream, self._protocol)

    def _check_unanswered(self) -> None:
        if self._answered:
            raise RuntimeError("this request was already accepted or rejected")


async def conclude_request(request: WebSocketRequest, failed: bool) -> None:
    """Close what the handler of ``request`` left open.

    An open connection closes with 1000 (1011 after a failure); an
    unanswered request gets 500 after a failure, else 403 (404 for a plain
    HTTP request).
    """
    if request._connection is not None:
        await request._connection.aclose(*((1011, "internal error") if failed else ()))
    elif not request._answered:
        await request.reject(500 if failed else 403 if request.is_upgrade else 404)


def set_path_params(request: WebSocketRequest, params: dict[str, str]) -> None:
    """Give ``request`` the values a :class:`Router` took from its path."""
    request._path_params = params


def _engine_answer(
    protocol: ServerProtocol,
    response: Response,
    subprotocol: str | None,
    extra_headers: HeaderPairs | None,
) -> bytes:
    """The engine's 101 with the application's choices; the engine opens."""
    response.headers = put_extra_headers_first(response.headers, extra_headers)
    if subprotocol is not None:
        response.headers["Sec-WebSocket-Protocol"] = subprotocol
        protocol.subprotocol = Subprotocol(subprotocol)
    protocol.send_response(response)
    return b"".join(protocol.data_to_send())


def _direct_answer(
    protocol: ServerProtocol,
    answer: DirectAnswer,
    subprotocol: str | None,
    extra_headers: HeaderPairs | None,
) -> bytes:
    """What :func:`_engine_answer` makes of the direct path's 101."""
    fields = answer.fields
    if extra_headers:
        merged = put_extra_headers_first(Headers(fields), extra_headers)
        fields = list(merged.raw_items())
    if subprotocol is not None:
        fields.append(("Sec-WebSocket-Protocol", subprotocol))
    open_directly(
        protocol,
        answer.extensions,
        None if subprotocol is None else Subprotocol(subprotocol),
    )
    return serialize_head(_SWITCHING, fields)


def _asks_for_upgrade(request: Request) -> bool:
    upgrade = ",".join(request.headers.get_all("Upgrade"))
    return "websocket" in upgrade.lower()


def _reason_phrase(status_code: int) -> str:
    try:
        return http.HTTPStatus(status_code).phrase
    except ValueError:
        return ""


async def read_request(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    settings: Settings,
    *,
    plain_http: bool = False,
    max_request_line: int | None = None,
    max_header_size: int | None = None,
) -> WebSocketRequest:
    """Read a client's handshake request from ``stream``.

    A request that is not a valid WebSocket upgrade is answered with an HTTP
    error (400, 405, 414, 426, 431 or 505), the stream is closed and
    :exc:`HandshakeError` is raised. With ``plain_http``, a request that does
    not ask for an upgrade at all is returned instead, for the application
    to answer with :meth:`WebSocketRequest.reject`. A request line longer
    than ``max_request_line`` bytes gets 414, header lines totalling more
    than ``max_header_size`` bytes get 431.
    """
    protocol = ServerEngine(
        extensions=settings.server_extensions(),
        max_size=settings.engine_max_size,
        logger=ENGINE_LOGGER,
    )
    limited = limit_head(stream, max_request_line, max_header_size)
    try:
        data = await receive_some(limited, settings.receive_buffer_size)
        if direct_path_allowed():
            direct = _read_directly(nursery, stream, protocol, data, settings)
            if direct is not None:
                return direct
        (request,), early_data = await receive_handshake(
            limited,
            protocol,
            settings.receive_buffer_size,
            hold_frames=True,
            received=data,
        )
    except HeadTooLarge as exc:
        protocol.send_response(protocol.reject(exc.status_code, f"{exc}\n"))
        await _refuse_unreadable(stream, protocol)
        raise
    except HandshakeError:
        await _refuse_unreadable(stream, protocol)
        raise
    assert isinstance(request, Request)
    response = protocol.accept(request)
    start = (request.method, request.path)
    headers = PackedHeaders(header_pairs(request.headers))
    if plain_http and not _asks_for_upgrade(request):
        return WebSocketRequest(
            nursery, stream, protocol, start, headers, None, b"", settings
        )
    if response.status_code != 101:
        protocol.send_response(_refusal(protocol, response))
        await _send_and_close(stream, protocol)
        raise HandshakeError(f"invalid upgrade request: {protocol.handshake_exc}")
    return WebSocketRequest(
        nursery, stream, protocol, start, headers, response, early_data, settings
    )


# The request headers the direct path reads.
_UPGRADE_FIELDS = (
    b"connection",
    b"upgrade",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"origin",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"content-length",
    b"transfer-encoding",
)


def _read_directly(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    protocol: ServerProtocol,
    data: bytes | bytearray,
    settings: Settings,
) -> WebSocketRequest | None:
    """The request in ``data`` read without the engine, if it is a common one.

    None (the engine decides) unless ``data`` holds a complete, valid
    upgrade request that the engine would accept, with nothing unusual:
    frames sent right behind the request are unusual.
    """
    split = split_head(data)
    parsed = None if split is None or split[1] else parse_head(split[0])
    if parsed is None:
        return None
    (method, target, version), fields = parsed
    if method != b"GET" or version != b"HTTP/1.1" or not target.isascii():
        return None
    answer = _direct_101(protocol, fields_named(fields, _UPGRADE_FIELDS))
    if answer is None:
        return None
    return WebSocketRequest(
        nursery,
        stream,
        protocol,
        ("GET", target.decode("ascii")),
        PackedHeaders(fields),
        answer,
        b"",
        settings,
    )


def _direct_101(
    protocol: ServerProtocol, found: dict[bytes, list[bytes]]
) -> DirectAnswer | None:
    """The engine's answer to an upgrade request with these headers, or None.

    None when it would not be a 101, or might not be the same.
    """
    connection, upgrade = only(found[b"connection"]), only(found[b"upgrade"])
    key, version = only(found[b"sec-websocket-key"]), found[b"sec-websocket-version"]
    if (
        connection is None
        or not lists_upgrade(connection)
        or upgrade is None
        or not is_websocket_upgrade(upgrade)
        or key is None
        or not valid_key(key)
        or version != [b"13"]
        or len(found[b"origin"]) > 1
        or found[b"content-length"]
        or found[b"transfer-encoding"]
    ):
        return None
    fields = [
        ("Date", http_date()),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_value(key).decode("ascii")),
    ]
    extensions: list[Extension] = []
    try:
        if found[b"sec-websocket-extensions"]:
            offer = as_headers(
                "Sec-WebSocket-Extensions", found[b"sec-websocket-extensions"]
            )
            answer, extensions = protocol.process_extensions(offer)
            if answer is not None:
                fields.append(("Sec-WebSocket-Extensions", answer))
        if found[b"sec-websocket-protocol"]:
            offer = as_headers(
                "Sec-WebSocket-Protocol", found[b"sec-websocket-protocol"]
            )
            if protocol.process_subprotocol(offer) is not None:
                return None  # the application chooses, in accept()
    except InvalidHandshake:
        return None
    return DirectAnswer(fields, extensions)


def _refusal(protocol: ServerProtocol, response: Response) -> Response:
    """The answer to an invalid upgrade request, with RFC 6455's status codes.

    The engine answers a request without a proper ``Upgrade`` or
    ``Connection`` header with 426; RFC 6455 (section 4.2.2) and
    trio-websocket 0.12 answer 400, and keep 426 with the supported
    ``Sec-WebSocket-Version`` for a missing or unsupported version, which the
    engine answers with 400.
    """
    failure = protocol.handshake_exc
    if isinstance(failure, InvalidUpgrade):
        return protocol.reject(http.HTTPStatus.BAD_REQUEST, f"{failure}\n")
    if isinstance(failure, InvalidHeader) and failure.name == _VERSION_HEADER:
        refusal = protocol.reject(http.HTTPStatus.UPGRADE_REQUIRED, f"{failure}\n")
        refusal.headers[_VERSION_HEADER] = "13"
        return refusal
    return response


async def refuse_stream(
    stream: trio.abc.Stream,
    status_code: int,
    *,
    extra_headers: HeaderPairs | None = None,
    body: bytes = b"",
) -> None:
    """Answer a client with an HTTP error without reading its request.

    For refusals decided before the request arrives (the server is full);
    the response says ``Connection: close`` and the stream is closed.
    """
    response = _http_response(status_code, extra_headers, body)
    await _linger_close(stream, response.serialize())


def _http_response(
    status_code: int, extra_headers: HeaderPairs | None, body: bytes
) -> Response:
    headers = Headers([("Connection", "close"), ("Content-Length", str(len(body)))])
    add_extra_headers(headers, extra_headers)
    return Response(status_code, _reason_phrase(status_code), headers, body)


async def _refuse_unreadable(stream: trio.abc.Stream, protocol: ServerProtocol) -> None:
    # The engine answers some bad requests itself (a line or headers too
    # long); for the rest it just gives up, and we answer 400.
    answer = b"".join(protocol.data_to_send())
    if not answer:
        refusal = protocol.reject(400, "Failed to open a WebSocket connection.\n")
        answer = refusal.serialize()
    await _linger_close(stream, answer)


async def _send_and_close(stream: trio.abc.Stream, protocol: ServerProtocol) -> None:
    await _linger_close(stream, b"".join(protocol.data_to_send()))


async def _linger_close(stream: trio.abc.Stream, answer: bytes) -> None:
    """Send a final answer, then close without resetting the connection.

    Closing a socket that still holds unread data makes the kernel send a
    reset, which can destroy the answer before the client reads it; so we
    half-close and drain the client's input for a bounded time first.
    """
    try:
        await stream.send_all(answer)
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        with trio.move_on_after(_LINGER_SECONDS):
            drained = 0
            while drained < _LINGER_BYTES:
                data = await stream.receive_some(_LINGER_BYTES)
                if not data:
                    break
                drained += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def wrap_server_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    **options: Unpack[ConnectionOptions],
) -> WebSocketRequest:
    """Read a handshake request from any Trio stream and return it.

    Accepting the request starts the connection's reader in ``nursery``. A
    request that is not a valid upgrade is answered with an HTTP error and
    raises :exc:`HandshakeError`.
    """
    settings = configure(Settings.build, "wrap_server_stream", locals())
    return await read_request(nursery, stream, settings)
