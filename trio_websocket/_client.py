"""Opening client connections: TCP, TLS, then the WebSocket handshake."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.extensions import Extension
from websockets.headers import build_extension, build_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import Event
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI

from ._connection import WebSocketConnection
from ._engine import ClientEngine, open_directly
from ._errors import (
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
)
from ._handshake import (
    ENGINE_LOGGER,
    Field,
    HeaderPairs,
    accept_value,
    add_extra_headers,
    as_headers,
    direct_path_allowed,
    fields_named,
    handshake_lost,
    header_pairs,
    is_websocket_upgrade,
    lists_upgrade,
    only,
    parse_head,
    peer_headers,
    receive_handshake,
    receive_some,
    split_head,
)
from ._proxy import (
    Proxy,
    ProxySetting,
    authority,
    basic_auth,
    choose_proxy,
    user_info,
)
from ._redirect import MAX_REDIRECTS, follow_redirect
from ._settings import (
    CONN_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BYTES,
    ConnectionOptions,
    Settings,
    configure,
)
from ._tcp import open_tcp
from ._transport import transport_for
from ._tunnel import open_tunnel
from ._url import WebSocketURL, host_header, parse_url
from ._version import __version__

if TYPE_CHECKING:
    from typing_extensions import Unpack

USER_AGENT = (
    f"Python/{sys.version_info[0]}.{sys.version_info[1]} trio-websocket/{__version__}"
)


@dataclass(frozen=True)
class _Target:
    """Where to connect, and what to ask for there."""

    host: str
    port: int
    resource: str
    use_ssl: bool | ssl.SSLContext

    def __post_init__(self) -> None:
        if not isinstance(self.use_ssl, (bool, ssl.SSLContext)):
            raise TypeError("`use_ssl` argument must be bool or ssl.SSLContext")


@dataclass(frozen=True)
class ClientConfig:
    """How a client connects, and what its handshake request carries.

    Every client entry point builds one with :meth:`build` from its
    parameters and hands it down to what connects. ``credentials`` come from
    the user info of the URL being connected to.
    """

    settings: Settings
    subprotocols: tuple[str, ...] | None
    extra_headers: tuple[tuple[bytes | str, bytes | str], ...]
    origin: str | None
    user_agent: str | None
    proxy: ProxySetting
    max_redirects: int
    credentials: tuple[str, str] | None = None

    @classmethod
    def build(
        cls,
        caller: str,
        /,
        *,
        subprotocols: Sequence[str] | None = None,
        extra_headers: HeaderPairs | None = None,
        message_queue_size: float = MESSAGE_QUEUE_SIZE,
        max_message_size: float = MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = RECEIVE_BYTES,
        disconnect_timeout: float = CONN_TIMEOUT,
        proxy: ProxySetting = None,
        max_redirects: int = MAX_REDIRECTS,
        origin: str | None = None,
        user_agent: str | None = USER_AGENT,
        **options: Unpack[ConnectionOptions],
    ) -> ClientConfig:
        """The configuration of one call to the client entry point ``caller``.

        Takes the client entry points' parameters, each with its default
        (see :func:`configure`), and their :class:`ConnectionOptions`.
        """
        settings = configure(Settings.build, caller, locals())
        return cls(
            settings,
            tuple(subprotocols) if subprotocols else None,
            tuple(extra_headers or ()),
            origin,
            user_agent,
            proxy,
            max_redirects,
        )

    def add_headers(self, headers: Headers) -> None:
        """Add ``User-Agent``, ``Origin``, ``Authorization``, then the extras.

        The extra headers replace our ``User-Agent`` and ``Origin``; an
        ``Authorization`` among them wins over the URL's credentials.
        """
        defaults = [("User-Agent", self.user_agent), ("Origin", self.origin)]
        if self.credentials is not None and not self._has_extra("authorization"):
            defaults.append(("Authorization", basic_auth(self.credentials)))
        add_extra_headers(headers, [(k, v) for k, v in defaults if v is not None])
        add_extra_headers(headers, self.extra_headers)

    def _has_extra(self, name: str) -> bool:
        return any(
            (key.decode("latin-1") if isinstance(key, bytes) else key).lower() == name
            for key, _ in self.extra_headers
        )


def open_websocket(
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    connect_timeout: float = CONN_TIMEOUT,
    disconnect_timeout: float = CONN_TIMEOUT,
    proxy: ProxySetting = None,
    origin: str | None = None,
    user_agent: str | None = USER_AGENT,
    **options: Unpack[ConnectionOptions],
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """Open a WebSocket client connection for the length of an ``async with``.

    Connects to ``host``:``port`` (over TLS when ``use_ssl`` is ``True`` or an
    :class:`ssl.SSLContext`), requests ``resource`` and yields the open
    :class:`WebSocketConnection`. Leaving the block closes the connection.

    Connecting (proxy, TCP, TLS and handshake) is bounded by
    ``connect_timeout`` (:exc:`ConnectionTimeout`), closing by
    ``disconnect_timeout`` (:exc:`DisconnectionTimeout`). An exception raised
    in the block propagates as itself, never wrapped in an exception group.

    ``proxy``
        ``None`` (the default) takes the proxy from the environment
        (``https_proxy`` for TLS, ``http_proxy`` otherwise, then
        ``all_proxy``; ``no_proxy`` lists hosts reached directly); ``False``
        or ``""`` connects directly; a URL (``http://``, ``socks5://`` or
        ``socks5h://``, with optional ``user:password@``) uses that proxy.
        TLS runs inside the tunnel, checked against ``host``. A proxy that
        refuses raises :exc:`ProxyError`.
    ``origin``
        The ``Origin`` header to send (none by default).
    ``user_agent``
        The ``User-Agent`` header, ``trio_websocket.USER_AGENT`` by default;
        ``None`` sends none. A ``User-Agent`` or ``Origin`` in
        ``extra_headers`` replaces these.
    """
    config = configure(ClientConfig.build, "open_websocket", locals())
    target = _Target(host, port, resource, use_ssl)

    async def connect(nursery: trio.Nursery) -> WebSocketConnection:
        return await _connect(nursery, target, config)

    return _ConnectionScope(connect, connect_timeout)


def open_websocket_url(
    url: object,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    connect_timeout: float = CONN_TIMEOUT,
    disconnect_timeout: float = CONN_TIMEOUT,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    proxy: ProxySetting = None,
    max_redirects: int = MAX_REDIRECTS,
    origin: str | None = None,
    user_agent: str | None = USER_AGENT,
    **options: Unpack[ConnectionOptions],
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """Like :func:`open_websocket`, from a ``ws://`` or ``wss://`` URL.

    ``url`` may be any object whose ``str()`` is the URL. ``wss://`` without
    ``ssl_context`` uses the default TLS context; a context given with a
    ``ws://`` URL turns TLS on. ``proxy``, ``origin`` and ``user_agent`` work
    as in :func:`open_websocket`. User info in the URL
    (``wss://user:password@host/``, percent-encoded) is sent as HTTP basic
    authentication.

    Redirects (301, 302, 303, 307, 308) are followed up to ``max_redirects``
    times (0: not at all, the answer raises :exc:`ConnectionRejected`), never
    from TLS to plain ``ws://`` (:exc:`RedirectError`). ``connect_timeout``
    bounds all of it.
    """
    config = configure(ClientConfig.build, "open_websocket_url", locals())
    return _ConnectionScope(url_connector(url, ssl_context, config), connect_timeout)


async def connect_websocket(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    proxy: ProxySetting = None,
    origin: str | None = None,
    user_agent: str | None = USER_AGENT,
    **options: Unpack[ConnectionOptions],
) -> WebSocketConnection:
    """Connect and return an open connection whose reader runs in ``nursery``.

    There is no connect timeout (wrap the call in :func:`trio.move_on_after`
    to add one); handshake errors are raised here, to the caller. The caller
    closes the connection. ``proxy``, ``origin`` and ``user_agent`` work as in
    :func:`open_websocket`.
    """
    config = configure(ClientConfig.build, "connect_websocket", locals())
    target = _Target(host, port, resource, use_ssl)
    return await _connect(nursery, target, config)


async def connect_websocket_url(
    nursery: trio.Nursery,
    url: object,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    proxy: ProxySetting = None,
    max_redirects: int = MAX_REDIRECTS,
    origin: str | None = None,
    user_agent: str | None = USER_AGENT,
    **options: Unpack[ConnectionOptions],
) -> WebSocketConnection:
    """Like :func:`connect_websocket`, from a ``ws://`` or ``wss://`` URL.

    User info, redirects, ``proxy``, ``origin`` and ``user_agent`` work as in
    :func:`open_websocket_url`.
    """
    config = configure(ClientConfig.build, "connect_websocket_url", locals())
    return await url_connector(url, ssl_context, config)(nursery)


async def wrap_client_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    origin: str | None = None,
    user_agent: str | None = USER_AGENT,
    **options: Unpack[ConnectionOptions],
) -> WebSocketConnection:
    """Run the client side of the handshake over any Trio stream.

    ``host`` is sent as the ``Host`` header and ``resource`` as the request
    target. The connection's reader runs in ``nursery``. ``origin`` and
    ``user_agent`` work as in :func:`open_websocket`.
    """
    config = configure(ClientConfig.build, "wrap_client_stream", locals())
    return await client_handshake(nursery, stream, host, resource, config)


Connector = Callable[[trio.Nursery], Awaitable[WebSocketConnection]]


def url_connector(
    url: object, ssl_context: ssl.SSLContext | None, config: ClientConfig
) -> Connector:
    """Check ``url`` now; return what connects to it as ``config`` says.

    The returned function opens a new connection each time it is called,
    with its reader in the given nursery (reconnecting clients call it
    again and again).
    """
    parse_url(url)  # refuse a bad URL before connecting
    address = str(url)

    async def connect(nursery: trio.Nursery) -> WebSocketConnection:
        return await _connect_url(nursery, address, ssl_context, config)

    return connect


class _ConnectionScope:
    """What ``async with open_websocket...`` does: own one connection.

    Entering connects within ``connect_timeout`` and starts the connection's
    background tasks in a nursery of its own; leaving closes the connection
    and that nursery. Exceptions from the connection attempt and from the
    body reach the caller as themselves: the nursery never sees them, so they
    are not wrapped in exception groups. (A class rather than a generator
    based context manager: it keeps fewer frames alive per open connection.)
    """

    def __init__(self, connect: Connector, connect_timeout: float) -> None:
        self._connect: Connector | None = connect
        self._connect_timeout = connect_timeout
        self._nursery_manager = trio.open_nursery()

    async def __aenter__(self) -> WebSocketConnection:
        connect, self._connect = self._connect, None  # its settings: not kept
        if connect is None:
            raise RuntimeError("a connection scope can be entered only once")
        nursery = await self._nursery_manager.__aenter__()
        try:
            with trio.move_on_after(self._connect_timeout) as connecting:
                self._connection = await connect(nursery)
            if connecting.cancelled_caught:
                raise ConnectionTimeout(
                    f"connecting took over {self._connect_timeout} s"
                )
        except OSError as exc:
            await self._close_nursery(nursery)
            # As in 0.12: "HandshakeError for any networking error".
            raise HandshakeError(_network_failure(exc)) from exc
        except BaseException:
            await self._close_nursery(nursery)
            raise
        self._nursery = nursery
        # Our nursery outlives the connection, so its reader may rest.
        self._connection.let_reader_rest()
        return self._connection

    async def __aexit__(self, *exc_info: object) -> None:
        body_error = exc_info[1]
        try:
            try:
                await self._connection.aclose()
            finally:
                await self._close_nursery(self._nursery)
        except BaseException as exc:
            # An exception from the body outranks a cancellation that arrived
            # while closing (the nursery passes it on as a group of Cancelled):
            # replacing it would lose it to the cancel scope. The scope stays
            # cancelled, so the next checkpoint raises again.
            if body_error is None or not _only_cancellation(exc):
                raise
        if body_error is None and self._connection.close_timed_out:
            raise DisconnectionTimeout("the closing handshake did not complete in time")

    async def _close_nursery(self, nursery: trio.Nursery) -> None:
        nursery.cancel_scope.cancel()
        await self._nursery_manager.__aexit__(None, None, None)


def _only_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a :exc:`trio.Cancelled` or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


async def _connect_url(
    nursery: trio.Nursery,
    url: str,
    ssl_context: ssl.SSLContext | None,
    config: ClientConfig,
) -> WebSocketConnection:
    """Connect to ``url``, following redirects (see ``_redirect``)."""
    parts = parse_url(url)
    config = replace(config, credentials=_credentials(parts))
    followed = 0
    while True:
        target = _Target(
            parts.host, parts.port, parts.resource, ssl_context or parts.secure
        )
        try:
            return await _connect(nursery, target, config)
        except ConnectionRejected as rejection:
            next_url = follow_redirect(
                url, rejection, bool(target.use_ssl), followed, config.max_redirects
            )
            if next_url is None:
                raise
        next_parts = parse_url(next_url)
        if next_parts.user_info is not None or not _same_origin(parts, next_parts):
            config = replace(config, credentials=_credentials(next_parts))
        url, parts, followed = next_url, next_parts, followed + 1


def _credentials(parts: WebSocketURL) -> tuple[str, str] | None:
    return user_info(*parts.user_info) if parts.user_info else None


def _same_origin(first: WebSocketURL, second: WebSocketURL) -> bool:
    return (first.secure, first.host, first.port) == (
        second.secure,
        second.host,
        second.port,
    )


async def _connect(
    nursery: trio.Nursery,
    target: _Target,
    config: ClientConfig,
) -> WebSocketConnection:
    stream = await _open_stream(target, config.proxy)
    host = host_header(target.host, target.port, bool(target.use_ssl))
    return await client_handshake(nursery, stream, host, target.resource, config)


async def _open_stream(target: _Target, proxy: ProxySetting) -> trio.abc.Stream:
    """TCP to the server, directly or through a proxy, then TLS if asked."""
    host, port, use_ssl = target.host, target.port, target.use_ssl
    via = choose_proxy(proxy, host, port, bool(use_ssl))
    try:
        if via is None:
            transport = await open_tcp(host, port)
        else:
            transport = await open_tunnel(via, host, port)
    except OSError as exc:
        exc.add_note(_attempt(host, port, via))
        raise
    if not use_ssl:
        return transport
    context = (
        use_ssl if isinstance(use_ssl, ssl.SSLContext) else ssl.create_default_context()
    )
    stream = trio.SSLStream(
        transport,
        context,
        server_hostname=host,
        https_compatible=True,
    )
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(
            f"TLS handshake with {host} failed: {exc.__cause__}"
        ) from (exc.__cause__ or exc)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


_ATTEMPT_PREFIX = "while connecting to "


def _attempt(host: str, port: int, via: Proxy | None) -> str:
    """Where a connection attempt went, for the notes of its ``OSError``."""
    where = f"{_ATTEMPT_PREFIX}{authority(host, port)}"
    return where if via is None else f"{where} through the proxy {via}"


def _network_failure(exc: OSError) -> str:
    """The message of the :exc:`HandshakeError` that wraps ``exc``."""
    notes = [
        note
        for note in getattr(exc, "__notes__", ())
        if isinstance(note, str) and note.startswith(_ATTEMPT_PREFIX)
    ]
    where = notes[-1].removeprefix("while ") if notes else "connecting"
    return f"{where} failed: {exc}"


async def client_handshake(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    config: ClientConfig,
) -> WebSocketConnection:
    """Send the upgrade request over ``stream`` and wait for the response.

    On any failure, including cancellation, the stream is closed.
    """
    settings = config.settings
    direct = direct_path_allowed()
    try:
        protocol = ClientEngine(
            WebSocketURI(False, host, 0, resource, ""),
            subprotocols=[Subprotocol(name) for name in config.subprotocols]
            if config.subprotocols
            else None,
            extensions=settings.client_extensions(),
            logger=ENGINE_LOGGER,
            max_size=settings.engine_max_size,
        )
        if direct:
            request = _direct_request(protocol, host, resource, config)
        else:
            request = _engine_request(protocol, host, config)
        try:
            await transport_for(stream).send_all(request)
        except trio.BrokenResourceError as exc:
            # Lost (e.g. reset) before the request went out: like a loss
            # while reading the response, a HandshakeError.
            raise handshake_lost(exc) from exc.__cause__ or exc
        data = await receive_some(stream, settings.receive_buffer_size)
        opened = _open_directly(protocol, data) if direct else None
        early_frames: list[Event] = []
        early_data = b""
        if opened is not None:
            fields, early_data = opened
        else:
            (response, *early_frames), _ = await receive_handshake(
                stream, protocol, settings.receive_buffer_size, received=data
            )
            _check_response(protocol)
            assert isinstance(response, Response)
            fields = list(header_pairs(response.headers))
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    connection = WebSocketConnection(
        stream,
        protocol,
        settings,
        path=resource,
        handshake_headers=peer_headers(fields),
    )
    connection.start_background_tasks(nursery, early_frames, early_data)
    return connection


def _engine_request(protocol: ClientProtocol, host: str, config: ClientConfig) -> bytes:
    """The upgrade request as the engine makes it, with our headers."""
    upgrade = protocol.connect()
    del upgrade.headers["Host"]
    upgrade.headers["Host"] = host
    config.add_headers(upgrade.headers)
    protocol.send_request(upgrade)
    return b"".join(protocol.data_to_send())


def _direct_request(
    protocol: ClientProtocol, host: str, resource: str, config: ClientConfig
) -> bytes:
    """What :func:`_engine_request` makes, without the engine's help.

    The engine's request holds its own ``Host`` header, which ours replaces
    at the end of the engine's headers.
    """
    fields = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", protocol.key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if protocol.available_extensions is not None:
        offers = [
            (f.name, f.get_request_params()) for f in protocol.available_extensions
        ]
        fields.append(("Sec-WebSocket-Extensions", build_extension(offers)))
    if protocol.available_subprotocols is not None:
        offer = build_subprotocol(protocol.available_subprotocols)
        fields.append(("Sec-WebSocket-Protocol", offer))
    fields.append(("Host", host))
    headers = Headers(fields)  # checks the values as the engine's would be
    config.add_headers(headers)
    return Request(resource, headers).serialize()


# The response headers the direct path reads.
_SWITCH_FIELDS = (
    b"connection",
    b"upgrade",
    b"sec-websocket-accept",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
)


def _open_directly(
    protocol: ClientProtocol, data: bytes | bytearray
) -> tuple[list[Field], bytes] | None:
    """Open ``protocol`` on the 101 in ``data`` without the engine's parser.

    Returns the response headers and the bytes after the response (frames
    the server sent at once, for the connection to parse), or None (the
    engine decides) unless ``data`` starts with a complete 101 that the
    engine would accept.
    """
    split = split_head(data)
    parsed = None if split is None else parse_head(split[0])
    if parsed is None or split is None:
        return None
    (version, status, _), fields = parsed
    if version != b"HTTP/1.1" or status != b"101":
        return None
    negotiated = _negotiated(protocol, fields_named(fields, _SWITCH_FIELDS))
    if negotiated is None:
        return None
    open_directly(protocol, *negotiated)
    return fields, split[1]


def _negotiated(
    protocol: ClientProtocol, found: dict[bytes, list[bytes]]
) -> tuple[list[Extension], Subprotocol | None] | None:
    """The extensions and subprotocol a 101 with these headers sets, if valid."""
    connection, upgrade = only(found[b"connection"]), only(found[b"upgrade"])
    accept = only(found[b"sec-websocket-accept"])
    if (
        connection is None
        or not lists_upgrade(connection)
        or upgrade is None
        or not is_websocket_upgrade(upgrade)
        or accept != accept_value(protocol.key.encode("ascii"))
    ):
        return None
    extensions = found[b"sec-websocket-extensions"]
    subprotocols = found[b"sec-websocket-protocol"]
    try:
        return (
            protocol.process_extensions(
                as_headers("Sec-WebSocket-Extensions", extensions)
            )
            if extensions
            else [],
            protocol.process_subprotocol(
                as_headers("Sec-WebSocket-Protocol", subprotocols)
            )
            if subprotocols
            else None,
        )
    except InvalidHandshake:
        return None


def _check_response(protocol: ClientProtocol) -> None:
    failure = protocol.handshake_exc
    if isinstance(failure, InvalidStatus):
        response = failure.response
        # An informational answer has no body at all, as 0.12 reported it.
        informational = 100 <= response.status_code < 200
        body = None if informational else bytes(response.body)
        raise ConnectionRejected(
            response.status_code, header_pairs(response.headers), body
        )
    if failure is not None:
        raise HandshakeError(f"invalid handshake response: {failure}") from failure
