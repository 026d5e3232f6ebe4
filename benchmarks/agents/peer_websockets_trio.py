"""Adapter for the ``websockets`` package's Trio implementation.

Defaults are kept except compression (off unless asked) and the size limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import websockets
import websockets.version
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect
from websockets.trio.server import ServerConnection, serve

from interface import MAX_MESSAGE_SIZE, Channel


class WebsocketsTrioPeer:
    supports_compression = True

    def info(self) -> dict[str, Any]:
        return {
            "library": "websockets.trio",
            "version": websockets.version.version,
            "path": websockets.__file__,
            "trio": trio.__version__,
        }

    @asynccontextmanager
    async def connect(
        self, host: str, port: int, *, compression: bool
    ) -> AsyncIterator[Channel]:
        async with connect(
            f"ws://{host}:{port}/",
            compression="deflate" if compression else None,
            max_size=MAX_MESSAGE_SIZE,
            proxy=None,
        ) as ws:
            yield Channel(ws.send, ws.recv)

    async def serve(
        self,
        host: str,
        *,
        compression: bool,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def echo(ws: ServerConnection) -> None:
            recv, send = ws.recv, ws.send
            try:
                while True:
                    await send(await recv())
            except ConnectionClosed:
                pass

        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve(
                    echo,
                    0,
                    host=host,
                    compression="deflate" if compression else None,
                    max_size=MAX_MESSAGE_SIZE,
                    task_status=task_status,
                )
            )
            task_status.started(server.listeners[0].socket.getsockname()[1])


def create() -> WebsocketsTrioPeer:
    return WebsocketsTrioPeer()
