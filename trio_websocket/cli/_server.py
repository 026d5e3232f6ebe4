"""``trio-websocket serve``: an echo server or a chat room, and a demo page."""

from __future__ import annotations

import argparse
import contextlib
import logging
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

from .._connection import WebSocketConnection
from .._errors import ConnectionClosed
from .._pubsub import FanOut, PubSub
from .._pubsub_redis import RedisError, open_redis_pubsub
from .._request import WebSocketRequest
from .._server import Handler, serve_websocket
from .._url import Endpoint
from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    RedisAddress,
    UsageError,
    os_error_message,
    report_error,
    run_trio,
)
from ._console import Message
from ._demo_page import DEMO_PAGE

logger = logging.getLogger("trio-websocket.serve")

#: Messages a chat client may fall behind before it is disconnected.
OUTBOX_SIZE = 64
#: The close code and reason given to a client that falls too far behind.
TOO_SLOW = (1008, "too slow to keep up")


def serve_command(args: argparse.Namespace) -> int:
    """Run ``trio-websocket serve`` until interrupted."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.pubsub is not None and not args.broadcast:
        raise UsageError("--pubsub goes with --broadcast (the chat room)")
    if args.workers > 1 and args.broadcast and args.pubsub is None:
        raise UsageError(
            "--broadcast cannot be combined with --workers without --pubsub: "
            "each worker would be a chat room of its own; relay the room "
            "through Redis with --pubsub redis://HOST:PORT"
        )
    ssl_context = None
    if args.tls_cert is not None:
        try:
            ssl_context = _tls_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the TLS certificate: {exc}") from None
    _configure_logging()
    if args.workers > 1:
        return _serve_workers(args)
    room: ChatRoom | RedisAddress | None = None
    if args.broadcast:
        room = ChatRoom() if args.pubsub is None else args.pubsub
    try:
        return run_trio(_serve, args.host or None, args.port, ssl_context, room)
    except OSError as exc:  # pragma: no cover - reported by _serve
        report_error(_listen_failure(args.host, args.port, exc))
        return EXIT_ERROR


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _serve_workers(args: argparse.Namespace) -> int:
    """``serve --workers N``: an echo server or a chat room (relayed through
    Redis) in N processes; 0 once stopped."""
    from .._workers import run_workers

    redis: RedisAddress | None = args.pubsub
    kind = "echo server" if redis is None else "chat room"

    def ready(endpoints: list[Endpoint]) -> None:
        url = endpoints[0].url + "/"
        page = url.replace("ws", "http", 1)
        print(
            f"{kind} serving on {url} with {args.workers} workers "
            f"(open {page} in a browser)",
            flush=True,
        )

    if redis is not None:
        # Refused at once rather than by every worker.
        failure = trio.run(_check_redis, redis)
        if failure is not None:
            report_error(failure)
            return EXIT_ERROR

    tls = (
        partial(_tls_context, args.tls_cert, args.tls_key)
        if args.tls_cert is not None
        else None
    )
    try:
        run_workers(
            _echo if redis is None else _shared_chat,
            args.host or None,
            args.port,
            tls,
            workers=args.workers,
            grace=5,
            initializer=_configure_worker_logging,
            lifespan=None if redis is None else partial(_shared_room, redis),
            ready=ready,
            http_handler=_serve_demo_page,
            disconnect_timeout=5,
        )
    except OSError as exc:
        report_error(_listen_failure(args.host, args.port, exc))
        return EXIT_ERROR
    except RuntimeError as exc:  # a worker could not start
        report_error(str(exc))
        return EXIT_ERROR
    return EXIT_OK


def _listen_failure(host: str | None, port: int, exc: OSError) -> str:
    return f"cannot listen on {host or '*'} port {port}: {os_error_message(exc)}"


def _configure_logging() -> None:
    """One line on stderr per event: the command's own, and the library's problems.

    The command logs each connection and close itself at INFO; the library
    logs the same events at DEBUG, and only problems above INFO, so the root
    logger stays at WARNING and each event is printed once.
    """
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logger.setLevel(logging.INFO)


def _configure_worker_logging() -> None:
    """:func:`_configure_logging`, each line saying which worker it comes from."""
    from .._workers import worker_index

    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s worker {worker_index()} %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logger.setLevel(logging.INFO)


async def _serve(
    host: str | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    room: ChatRoom | RedisAddress | None,
) -> int:
    if isinstance(room, RedisAddress):
        connected = False
        try:
            async with _shared_room(room):
                connected = True
                return await _serve_room(host, port, ssl_context, _shared_chat, True)
        except _REDIS_FAILURES as exc:
            if connected:
                raise
            report_error(_redis_failure(room, exc))
            return EXIT_ERROR
    handler = partial(_chat, room) if room is not None else _echo
    return await _serve_room(host, port, ssl_context, handler, room is not None)


async def _serve_room(
    host: str | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    handler: Handler,
    chat: bool,
) -> int:
    serve = partial(
        serve_websocket,
        handler,
        host,
        port,
        ssl_context,
        http_handler=_serve_demo_page,
        disconnect_timeout=5,
    )
    async with trio.open_nursery() as nursery:
        try:
            server = await nursery.start(serve)
        except OSError as exc:  # port in use, a host that does not resolve...
            # Reported here: out of the nursery, it would come in a group.
            report_error(_listen_failure(host, port, exc))
            return EXIT_ERROR
        endpoint = server.listeners[0]
        if isinstance(endpoint, Endpoint):
            url = endpoint.url + "/"
            kind = "chat room" if chat else "echo server"
            page = url.replace("ws", "http", 1)
            print(f"{kind} serving on {url} (open {page} in a browser)", flush=True)
    raise AssertionError("the server never stops on its own")  # pragma: no cover


async def _accept(request: WebSocketRequest) -> WebSocketConnection:
    offered = request.proposed_subprotocols
    ws = await request.accept(subprotocol=offered[0] if offered else None)
    logger.info("%s: %s connected to %s", ws, _peer(request.remote), request.path)
    return ws


def _log_close(ws: WebSocketConnection) -> None:
    reason = ws.closed
    if reason is None:
        logger.info("%s: closing", ws)
    else:
        text = f" ({reason.reason})" if reason.reason else ""
        logger.info("%s: closed %d %s%s", ws, reason.code, reason.name, text)


async def _echo(request: WebSocketRequest) -> None:
    ws = await _accept(request)
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass
    finally:
        _log_close(ws)


async def _chat(room: ChatRoom, request: WebSocketRequest) -> None:
    ws = await _accept(request)
    try:
        await room.join(ws)
    finally:
        _log_close(ws)


#: The Redis channel that ``serve --broadcast --pubsub`` relays the chat on.
CHAT_CHANNEL = "trio-websocket:chat"
# ImportError: the redis extra (coredis) is not installed.
_REDIS_FAILURES = (OSError, trio.TooSlowError, RedisError, ImportError)

#: This process's hub and the group of its chat clients (``--pubsub``).
_room: tuple[PubSub, FanOut] | None = None


@asynccontextmanager
async def _shared_room(redis: RedisAddress) -> AsyncIterator[None]:
    """Connect to Redis and relay the chat channel to this process's clients."""
    global _room
    async with (
        open_redis_pubsub(redis.host, redis.port, password=redis.password) as hub,
        hub.fan_out(CHAT_CHANNEL, max_pending=OUTBOX_SIZE, slow="close") as group,
    ):
        logger.info("chat relayed through %s, channel %r", redis, CHAT_CHANNEL)
        _room = hub, group
        try:
            yield
        finally:
            _room = None


async def _shared_chat(request: WebSocketRequest) -> None:
    """A chat client whose messages go through the hub to every process."""
    if _room is None:  # pragma: no cover - the lifespan sets it first
        raise RuntimeError("the chat room is not connected to Redis")
    hub, group = _room
    ws = await _accept(request)
    group.add(ws)
    try:
        while True:
            message = await ws.get_message()
            try:  # no round trip to Redis per message; wait only when it lags
                hub.publish_nowait(CHAT_CHANNEL, message)
            except trio.WouldBlock:
                await hub.publish(CHAT_CHANNEL, message)
    except ConnectionClosed:
        pass
    finally:
        group.discard(ws)
        _log_close(ws)


async def _check_redis(redis: RedisAddress) -> str | None:
    """None if Redis answers at ``redis``, else why not."""
    try:
        async with open_redis_pubsub(
            redis.host, redis.port, password=redis.password
        ) as hub:
            await hub.publish(CHAT_CHANNEL + ":check", "")
    except _REDIS_FAILURES as exc:
        return _redis_failure(redis, exc)
    return None


def _redis_failure(redis: RedisAddress, exc: Exception) -> str:
    if isinstance(exc, ImportError):
        return str(exc)
    if isinstance(exc, OSError):
        reason = os_error_message(exc)
    elif isinstance(exc, trio.TooSlowError):
        reason = "timed out"
    else:
        reason = str(exc)
    return f"cannot connect to Redis at {redis}: {reason}"


async def _serve_demo_page(request: WebSocketRequest) -> None:
    """Answer ``GET /`` with the chat page; anything else gets 404."""
    peer = _peer(request.remote)
    if request.path.partition("?")[0] != "/":
        logger.info("%s asked for %s: 404", peer, request.path)
        return
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-store"),
    ]
    await request.reject(200, extra_headers=headers, body=DEMO_PAGE.encode())
    logger.info("%s: served the demo page", peer)


def _peer(endpoint: Endpoint | str) -> str:
    if isinstance(endpoint, str):
        return endpoint
    address = endpoint.address
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{endpoint.port}"


class _Member:
    """A chat client's outbox and whether it fell too far behind."""

    def __init__(self, outbox: trio.MemorySendChannel[Message]) -> None:
        self.outbox = outbox
        self.too_slow = False
        self.delivering = trio.CancelScope()


class ChatRoom:
    """Every message from a member goes to every member, sender included.

    Each member has an outbox of ``outbox_size`` messages, emptied by its own
    task. Publishing never waits: a member whose outbox is full is
    disconnected at once: a send in progress is abandoned (which aborts the
    connection) or, if none is, the client gets close code 1008. One slow
    client never holds up the others.
    """

    def __init__(self, outbox_size: int = OUTBOX_SIZE) -> None:
        self._outbox_size = outbox_size
        self._members: dict[WebSocketConnection, _Member] = {}

    async def join(self, ws: WebSocketConnection) -> None:
        """Relay ``ws``'s messages to the room until it leaves."""
        outbox, inbox = trio.open_memory_channel[Message](self._outbox_size)
        member = self._members[ws] = _Member(outbox)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, ws, member, inbox)
                try:
                    while True:
                        self.publish(await ws.get_message())
                except ConnectionClosed:
                    nursery.cancel_scope.cancel()
        finally:
            self._members.pop(ws, None)

    def publish(self, message: Message) -> None:
        """Put ``message`` in every member's outbox, dropping slow members."""
        for ws, member in list(self._members.items()):
            try:
                member.outbox.send_nowait(message)
            except trio.WouldBlock:
                logger.info("%s: too slow, disconnecting", ws)
                del self._members[ws]
                member.too_slow = True
                member.delivering.cancel()

    @staticmethod
    async def _deliver(
        ws: WebSocketConnection,
        member: _Member,
        inbox: trio.MemoryReceiveChannel[Message],
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            with member.delivering:
                async for message in inbox:
                    await ws.send_message(message)
            if member.too_slow:
                await ws.aclose(*TOO_SLOW)
