"""WebSocket servers: listeners, one task per client, and handler errors."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ._accept import accept_clients, accept_pending
from ._admission import Admission, Gate, Refusal
from ._connection import WebSocketConnection, check_close
from ._errors import ConnectionClosed, HandshakeError
from ._request import (
    WebSocketRequest,
    conclude_request,
    read_request,
    refuse_stream,
)
from ._reuse_port import open_reuse_port_listeners
from ._settings import (
    CONN_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BYTES,
    ConnectionOptions,
    Settings,
    configure,
)
from ._transport import transport_for
from ._url import Endpoint, listener_endpoint, stream_endpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("trio-websocket")

Handler = Callable[[WebSocketRequest], Awaitable[object]]

#: Default of ``handshake_timeout``, in seconds.
HANDSHAKE_TIMEOUT = 10
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
    admission: Admission | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ConnectionOptions],
) -> None:
    """Listen on TCP (TLS when ``ssl_context`` is given) and serve.

    ``handler(request)`` is called once per client, after its handshake
    request has arrived. ``port=0`` picks a free port; ``host=None`` listens
    on every interface. Use ``server = await nursery.start(serve_websocket,
    ...)`` to get the :class:`WebSocketServer` once it is listening.
    ``http_handler``, if given, answers plain HTTP requests on the same port,
    ``admission`` decides who may connect, and ``handshake_timeout`` bounds
    how long a client may take to send its request (see
    :class:`WebSocketServer`). ``reuse_port=True`` (Linux) binds with
    ``SO_REUSEPORT``, so that several processes can listen on the same port
    and the kernel spreads the connections over them (see
    :func:`run_workers`).

    Serves until cancelled, or until ``await server.aclose()`` has shut the
    server down gracefully; then it returns.
    """
    config = configure(_ServerConfig.build, "serve_websocket", locals())
    listeners: Sequence[AnyListener]
    if reuse_port:
        listeners = await open_reuse_port_listeners(host, port, ssl_context)
    elif ssl_context is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    else:
        listeners = await trio.open_ssl_over_tcp_listeners(
            port, ssl_context, host=host, https_compatible=True
        )
    server = WebSocketServer._configured(handler, listeners, config)
    await server.run(task_status=task_status)


@dataclass(frozen=True)
class _ServerConfig:
    """What a server is configured with besides its handler and listeners."""

    settings: Settings
    handler_nursery: trio.Nursery | None
    http_handler: Handler | None
    admission: Admission
    handshake_timeout: float

    @classmethod
    def build(
        cls,
        caller: str,
        /,
        *,
        handler_nursery: trio.Nursery | None = None,
        message_queue_size: float = MESSAGE_QUEUE_SIZE,
        max_message_size: float = MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = RECEIVE_BYTES,
        connect_timeout: float = CONN_TIMEOUT,
        disconnect_timeout: float = CONN_TIMEOUT,
        http_handler: Handler | None = None,
        admission: Admission | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        **options: Unpack[ConnectionOptions],
    ) -> _ServerConfig:
        """The configuration of one call to the server entry point ``caller``.

        Takes the server entry points' parameters, each with its default
        (see :func:`configure`), and their :class:`ConnectionOptions`.
        """
        return cls(
            configure(Settings.build, caller, locals()),
            handler_nursery,
            http_handler,
            admission or Admission(),
            min(handshake_timeout, connect_timeout),
        )


class WebSocketServer:
    """Serve WebSocket clients arriving on one or more Trio listeners.

    Each client gets its own task: the handshake request is read, then
    ``handler(request)`` runs. A client whose request (TLS handshake
    included) is not complete within ``handshake_timeout`` seconds (default
    10; ``connect_timeout`` if that is smaller) is dropped without an
    answer, so slow clients cannot hold connections for long. When the
    handler
    returns the connection is closed with code 1000; when it raises, the
    error is logged and the client gets HTTP 500 or close code 1011, while
    every other client is served on.

    ``http_handler(request)``, if given, is called instead of ``handler``
    for requests that do not ask for a WebSocket upgrade (a health check, a
    browser fetching a page); it answers with
    ``await request.reject(200, extra_headers=..., body=...)``. If it
    returns without answering, the client gets 404. Without it, such
    requests get 426 Upgrade Required.

    ``admission``, an :class:`Admission` policy, refuses clients before any
    handler runs: by ``Origin``, credentials, concurrent connections,
    handshakes per address, and request size; it also caps the clients in
    the handshake at once (``max_handshakes``, default 1000).

    ``await server.aclose()`` shuts the server down gracefully;
    ``server.connections`` lists the open connections.
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
        admission: Admission | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        if not listeners:
            raise ValueError("a WebSocketServer needs at least one listener")
        config = configure(_ServerConfig.build, "WebSocketServer", locals())
        self._setup(handler, listeners, config)

    @classmethod
    def _configured(
        cls, handler: Handler, listeners: Sequence[AnyListener], config: _ServerConfig
    ) -> WebSocketServer:
        """A server from a configuration already built (by ``serve_websocket``)."""
        server = cls.__new__(cls)
        server._setup(handler, listeners, config)
        return server

    def _setup(
        self, handler: Handler, listeners: Sequence[AnyListener], config: _ServerConfig
    ) -> None:
        """Initialize the server: what ``__init__`` does after its checks."""
        self._handler = handler
        self._listeners = list(listeners)
        self._handler_nursery = config.handler_nursery
        self._http_handler = config.http_handler
        self._handshake_timeout = config.handshake_timeout
        self._settings = config.settings
        self._gate = Gate(config.admission)
        self._clients: dict[_Client, None] = {}  # in order of arrival
        # Where client tasks and their connections' tasks run, while serving.
        self._client_nursery: trio.Nursery | None = None
        self._client_left = trio.Event()
        self._closing: tuple[int, str | None] | None = None
        self._accepting: trio.CancelScope | None = None
        self._accepting_stopped = trio.Event()
        self._closed = trio.Event()

    @property
    def connections(self) -> list[WebSocketConnection]:
        """The open WebSocket connections, oldest first."""
        return [
            client.connection
            for client in self._clients
            if client.connection is not None and client.connection.closed is None
        ]

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
    ) -> None:
        """Serve until cancelled or shut down; ``task_status.started`` gets the server.

        After :meth:`aclose`, returns once every client task has ended.
        """
        if self._closing is not None:
            raise RuntimeError("this server has been shut down")
        async with trio.open_nursery() as clients:
            await self._accept(self._handler_nursery or clients, task_status)

    async def _accept(
        self,
        handler_nursery: trio.Nursery,
        task_status: trio.TaskStatus[WebSocketServer],
    ) -> None:
        """Accept clients until :meth:`aclose` cancels this."""
        self._client_nursery = handler_nursery
        accepting_args = (
            self._listeners,
            self._serve_client,
            handler_nursery,
            self._gate.slots,
        )
        try:
            async with trio.open_nursery() as accepting:
                self._accepting = accepting.cancel_scope
                await accepting.start(accept_clients, *accepting_args)
                task_status.started(self)
        finally:
            # Shielded: this runs when cancelled, and every listener must close.
            with trio.CancelScope(shield=True):
                if self._closing is not None:
                    # Clients already in the backlog connected before the
                    # shutdown: serve them (a 503) rather than reset them.
                    await accept_pending(*accepting_args)
                await self._close_listeners()
            self._accepting_stopped.set()

    # -- Graceful shutdown ------------------------------------------------------

    async def aclose(
        self,
        code: int = 1001,
        reason: str | None = "server shutting down",
        *,
        grace_period: float | None = None,
    ) -> None:
        """Shut the server down gracefully; idempotent.

        1. Stop accepting: the listeners are closed, so new clients are
           refused by the operating system; a client whose request arrives
           from now on gets HTTP 503.
        2. Close every open connection with ``code`` and ``reason`` (a
           connection its handler accepts from now on is closed the same
           way).
        3. Wait up to ``grace_period`` seconds (default: the server's
           ``disconnect_timeout``) for the closing handshakes and the
           handlers to finish.
        4. Cancel every client task still running, handlers included.

        Then ``run`` (and ``serve_websocket``) return. Called from a
        handler, it does not wait for or cancel that handler.
        """
        if self._closing is not None:
            await self._closed.wait()
            return
        check_close(code, reason)
        self._closing = (code, reason)
        try:
            await self._stop_accepting()
            for client in list(self._clients):
                self._close_client(client)
            if grace_period is None:
                grace_period = self._settings.disconnect_timeout
            await self._end_clients(grace_period)
        finally:
            self._closed.set()

    async def _end_clients(self, grace_period: float) -> None:
        """Let clients finish for ``grace_period`` seconds, then cancel them."""
        with trio.move_on_after(grace_period):
            await self._wait_for_clients()
        me = trio.lowlevel.current_task()
        for client in self._clients:
            if client.task is not me:
                client.scope.cancel()
        await self._wait_for_clients()

    async def stop_accepting(self, *, handshake_grace: float = 0) -> None:
        """Stop accepting new clients, and keep serving the ones already in.

        The listeners are closed, so the operating system refuses (or, with
        ``reuse_port``, hands to another process) new connections. Clients
        accepted just before are still in their opening handshake: this waits
        up to ``handshake_grace`` seconds for them to finish it, so that they
        are served instead of answered 503 by a following :meth:`aclose`,
        which is what a worker handing its port over to a new process wants.
        """
        await self._stop_accepting()
        with trio.move_on_after(handshake_grace):
            # Polled: nothing signals the end of one client's handshake.
            while any(client.handshaking for client in self._clients):  # noqa: ASYNC110
                await trio.sleep(0.01)

    async def _stop_accepting(self) -> None:
        if self._accepting is None:  # never ran
            await self._close_listeners()
            return
        self._accepting.cancel()
        await self._accepting_stopped.wait()

    async def _close_listeners(self) -> None:
        for listener in self._listeners:
            await trio.aclose_forcefully(listener)

    def _close_client(self, client: _Client) -> None:
        """Start closing the client's connection, if it has an open one."""
        connection, nursery = client.connection, client.nursery
        if connection is None or nursery is None or self._closing is None:
            return
        if connection.closed is None:
            nursery.start_soon(connection.aclose, *self._closing)

    async def _wait_for_clients(self) -> None:
        """Wait until every client task but the caller's own has ended."""
        me = trio.lowlevel.current_task()
        while any(client.task is not me for client in self._clients):
            self._client_left = trio.Event()
            await self._client_left.wait()

    # -- Serving one client -----------------------------------------------------

    async def _serve_client(self, stream: trio.abc.Stream) -> None:
        """Everything one client gets; never lets an error reach the server."""
        client = _Client(self)
        self._clients[client] = None
        try:
            # Shutdown cancels the client through this scope.
            with client.scope:
                async with self._nursery_for_client() as nursery:
                    client.nursery = nursery
                    request = await self._admit_client(client, stream)
                    if request is not None:
                        await self._run_handler(request)
        except Exception:
            logger.exception("unexpected error while serving a client")
        finally:
            self._end_handshake(client)
            if client.admitted:
                self._gate.release_connection()
            del self._clients[client]
            self._client_left.set()
            if client.connection is not None:  # its handler was cancelled
                await client.connection.abandon()
            await transport_for(stream).aclose_forcefully()

    def _nursery_for_client(self) -> AbstractAsyncContextManager[trio.Nursery]:
        """Where a client's connection runs its reader task.

        The nursery of the client tasks when it is the server's own: a
        nursery per client costs every connection about a kilobyte. In a
        ``handler_nursery`` of the caller's, one task per client, as in
        0.12: the connection then gets a nursery of its own.
        """
        if self._handler_nursery is not None:
            return trio.open_nursery()
        assert self._client_nursery is not None
        return _AlreadyOpen(self._client_nursery)

    async def _admit_client(
        self, client: _Client, stream: trio.abc.Stream
    ) -> WebSocketRequest | None:
        """The client's request, for its handler; None if it was refused."""
        # Looking up the peer's address costs a system call: only when needed.
        remote = (
            stream_endpoint(stream, remote=True) if self._gate.tracks_addresses else ""
        )
        refusal = self._gate.admit_connection(remote)
        if refusal is not None:
            await _refuse(stream, refusal)
            return None
        client.admitted = True
        assert client.nursery is not None
        request = await self._admit(client.nursery, stream, remote)
        self._end_handshake(client)
        if request is not None:
            request._on_accept = client.accepted
        return request

    def _end_handshake(self, client: _Client) -> None:
        """Give back the client's handshake slot, once."""
        if client.handshaking:
            client.handshaking = False
            self._gate.slots.give_back()

    async def _admit(
        self, nursery: trio.Nursery, stream: trio.abc.Stream, remote: Endpoint | str
    ) -> WebSocketRequest | None:
        """Read the request and check it; None if the client was refused."""
        with self._gate.handshake(remote):
            request = await self._receive_request(nursery, stream)
        if request is None:
            return None
        refusal = self._refusal(request)
        if refusal is None:
            return request
        _log_refusal(stream, refusal)
        await request.reject(
            refusal.status_code, extra_headers=refusal.headers, body=refusal.body
        )
        return None

    def _refusal(self, request: WebSocketRequest) -> Refusal | None:
        if self._closing is not None:
            return Refusal(503, body=b"The server is shutting down.\n")
        if request.is_upgrade:
            return self._gate.refuse_request(request)
        return None

    async def _receive_request(
        self, nursery: trio.Nursery, stream: trio.abc.Stream
    ) -> WebSocketRequest | None:
        admission = self._gate.admission
        with trio.move_on_after(self._handshake_timeout):
            try:
                return await read_request(
                    nursery,
                    stream,
                    self._settings,
                    plain_http=self._http_handler is not None,
                    max_request_line=admission.max_request_line,
                    max_header_size=admission.max_header_size,
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
        await conclude_request(request, failed)


class _AlreadyOpen:
    """``async with`` for a nursery that is open already: enters nothing."""

    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    async def __aenter__(self) -> trio.Nursery:
        return self._nursery

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _Client:
    """What a server tracks about one client's task."""

    __slots__ = (
        "admitted",
        "connection",
        "handshaking",
        "nursery",
        "scope",
        "server",
        "task",
    )

    def __init__(self, server: WebSocketServer) -> None:
        self.server = server
        self.task = trio.lowlevel.current_task()
        self.handshaking = True  # holds a handshake slot
        self.admitted = False  # counted by the admission gate
        self.scope = trio.CancelScope()  # cancels the client's task
        # Where its connection's tasks run (see _nursery_for_client).
        self.nursery: trio.Nursery | None = None
        self.connection: WebSocketConnection | None = None

    def accepted(self, connection: WebSocketConnection) -> None:
        """Called by ``request.accept()``: track the connection."""
        self.connection = connection
        self.server._close_client(self)  # if accepted after shutdown began


def _log_refusal(stream: trio.abc.Stream, refusal: Refusal) -> None:
    if logger.isEnabledFor(logging.DEBUG):  # looking up the address costs a call
        remote = stream_endpoint(stream, remote=True)
        logger.debug("refused a client from %s: HTTP %d", remote, refusal.status_code)


async def _refuse(stream: trio.abc.Stream, refusal: Refusal) -> None:
    """Refuse a client before reading its request."""
    _log_refusal(stream, refusal)
    await refuse_stream(
        stream, refusal.status_code, extra_headers=refusal.headers, body=refusal.body
    )
