"""WebSocket servers: listeners, one task per client, and handler errors."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from ._errors import ConnectionClosed, HandshakeError
from ._request import WebSocketRequest, read_request
from ._settings import (
    CONN_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BYTES,
    ConnectionOptions,
    Settings,
)
from ._url import Endpoint, listener_endpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("trio-websocket")

Handler = Callable[[WebSocketRequest], Awaitable[object]]
AnyListener = trio.abc.Listener[Any]


async def serve_websocket(
    handler: Handler,
    host: str | bytes | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    handler_nursery: trio.Nursery | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    connect_timeout: float = CONN_TIMEOUT,
    disconnect_timeout: float = CONN_TIMEOUT,
    http_handler: Handler | None = None,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ConnectionOptions],
) -> NoReturn:
    """Listen on TCP (TLS when ``ssl_context`` is given) and serve forever.

    ``handler(request)`` is called once per client, after its handshake
    request has arrived. ``port=0`` picks a free port; ``host=None`` listens
    on every interface. Use ``server = await nursery.start(serve_websocket,
    ...)`` to get the :class:`WebSocketServer` once it is listening.
    ``http_handler``, if given, answers plain HTTP requests on the same port
    (see :class:`WebSocketServer`).
    """
    listeners: Sequence[AnyListener]
    if ssl_context is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    else:
        listeners = await trio.open_ssl_over_tcp_listeners(
            port, ssl_context, host=host, https_compatible=True
        )
    server = WebSocketServer(
        handler,
        listeners,
        handler_nursery=handler_nursery,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        http_handler=http_handler,
        **options,
    )
    await server.run(task_status=task_status)


class WebSocketServer:
    """Serve WebSocket clients arriving on one or more Trio listeners.

    Each client gets its own task: the handshake request is read (within
    ``connect_timeout``), then ``handler(request)`` runs. When the handler
    returns the connection is closed with code 1000; when it raises, the
    error is logged and the client gets HTTP 500 or close code 1011, while
    every other client is served on.

    ``http_handler(request)``, if given, is called instead of ``handler``
    for requests that do not ask for a WebSocket upgrade (a health check, a
    browser fetching a page); it answers with
    ``await request.reject(200, extra_headers=..., body=...)``. If it
    returns without answering, the client gets 404. Without it, such
    requests get 426 Upgrade Required.
    """

    def __init__(
        self,
        handler: Handler,
        listeners: Sequence[AnyListener],
        *,
        handler_nursery: trio.Nursery | None = None,
        message_queue_size: float = MESSAGE_QUEUE_SIZE,
        max_message_size: float = MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = RECEIVE_BYTES,
        connect_timeout: float = CONN_TIMEOUT,
        disconnect_timeout: float = CONN_TIMEOUT,
        http_handler: Handler | None = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        if not listeners:
            raise ValueError("a WebSocketServer needs at least one listener")
        self._handler = handler
        self._listeners = list(listeners)
        self._handler_nursery = handler_nursery
        self._http_handler = http_handler
        self._connect_timeout = connect_timeout
        self._settings = Settings(
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
            disconnect_timeout=disconnect_timeout,
            **options,
        )

    @property
    def listeners(self) -> list[Endpoint | str]:
        """Where the server listens: an :class:`Endpoint` per TCP listener.

        A Unix socket listener gives its path; other listeners a description.
        """
        return [listener_endpoint(listener) for listener in self._listeners]

    @property
    def port(self) -> int:
        """The port the server listens on.

        Raises :exc:`RuntimeError` unless the server has TCP listeners that
        all share one port.
        """
        endpoints = self.listeners
        ports = {
            endpoint.port for endpoint in endpoints if isinstance(endpoint, Endpoint)
        }
        if len(ports) != 1 or not all(isinstance(e, Endpoint) for e in endpoints):
            raise RuntimeError(
                f"the server does not listen on exactly one TCP port: {self.listeners}"
            )
        return ports.pop()

    async def run(
        self,
        *,
        task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Serve until cancelled; ``task_status.started`` gets the server."""
        async with trio.open_nursery() as nursery:
            serve = partial(
                trio.serve_listeners,
                self._serve_client,
                self._listeners,
                handler_nursery=self._handler_nursery,
            )
            await nursery.start(serve)
            task_status.started(self)
        raise AssertionError("serve_listeners never returns")  # pragma: no cover

    async def _serve_client(self, stream: trio.abc.Stream) -> None:
        """Everything one client gets; never lets an error reach the server."""
        try:
            async with trio.open_nursery() as nursery:
                request = await self._receive_request(nursery, stream)
                if request is not None:
                    await self._run_handler(request)
        except Exception:
            logger.exception("unexpected error while serving a client")
        finally:
            await trio.aclose_forcefully(stream)

    async def _receive_request(
        self, nursery: trio.Nursery, stream: trio.abc.Stream
    ) -> WebSocketRequest | None:
        with trio.move_on_after(self._connect_timeout):
            try:
                return await read_request(
                    nursery,
                    stream,
                    self._settings,
                    plain_http=self._http_handler is not None,
                )
            except (HandshakeError, trio.BrokenResourceError) as exc:
                logger.debug("refused a client: %s", exc)
                return None
        logger.debug("dropped a client that sent no request in time")
        return None

    async def _run_handler(self, request: WebSocketRequest) -> None:
        failed = False
        handler = self._handler
        if not request.is_upgrade:
            assert self._http_handler is not None
            handler = self._http_handler
        try:
            await handler(request)
        except ConnectionClosed as exc:
            logger.debug("handler ended on a closed connection: %r", exc)
        except Exception:
            failed = True
            logger.exception("handler for %s failed", request.path)
        await request._conclude(failed)
