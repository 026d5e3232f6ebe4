"""Two connected WebSocket endpoints in memory, for application tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ._client import ClientConfig, client_handshake
from ._concurrency import background_nursery
from ._connection import WebSocketConnection
from ._request import read_request

if TYPE_CHECKING:
    from typing import Unpack

    from ._settings import ConnectionOptions


@asynccontextmanager
async def open_websocket_pair(
    *,
    path: str = "/",
    subprotocols: Sequence[str] = (),
    **options: Unpack[ConnectionOptions],
) -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    """Yield ``(client, server)`` connections joined by in-memory streams.

    The handshake really runs (with ``path`` and, if given, the first of
    ``subprotocols`` negotiated), so both ends behave exactly as over a
    socket, without one. Both are closed when the block exits. ``options``
    are :class:`ConnectionOptions`, applied to both ends.
    """
    # Built and checked here, once, for both ends: inside the two handshake
    # tasks a bad option would fail both and reach the caller as a group of
    # two errors.
    config = ClientConfig.build(
        "open_websocket_pair", subprotocols=subprotocols, **options
    )
    # Imported here: trio.testing imports pytest when it is installed, which
    # would add a noticeable cost to every ``import trio_websocket``.
    from trio.testing import memory_stream_pair

    client_stream, server_stream = memory_stream_pair()
    async with background_nursery() as nursery:
        accepted: list[WebSocketConnection] = []

        async def accept() -> None:
            request = await read_request(nursery, server_stream, config.settings)
            offered = request.proposed_subprotocols
            subprotocol = offered[0] if offered else None
            accepted.append(await request.accept(subprotocol=subprotocol))

        async with trio.open_nursery() as handshake:
            handshake.start_soon(accept)
            client = await client_handshake(
                nursery, client_stream, "localhost", path, config
            )
        server = accepted[0]
        try:
            yield client, server
        finally:
            # Both at once: each close discards its side's unread messages,
            # which lets that side's reader take the other's close frame.
            # One after the other, a full queue on the second side would
            # hold the first close for the whole disconnect timeout.
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as closing:
                    closing.start_soon(client.aclose)
                    closing.start_soon(server.aclose)
