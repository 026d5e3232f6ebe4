"""Adapter for the ``websockets`` package's asyncio implementation.

A cross-runtime reference (no target): defaults kept except compression (off
unless asked) and the size limit, as for ``websockets.trio``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
import websockets.version
from asyncio_interface import MAX_MESSAGE_SIZE, Channel
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class WebsocketsAsyncioPeer:
    supports_compression = True

    def __init__(self) -> None:
        self._servers: list[Server] = []

    def info(self) -> dict[str, Any]:
        return {
            "library": "websockets.asyncio",
            "version": websockets.version.version,
            "path": websockets.__file__,
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

    async def serve(self, host: str, *, compression: bool) -> int:
        async def echo(ws: ServerConnection) -> None:
            recv, send = ws.recv, ws.send
            try:
                while True:
                    await send(await recv())
            except ConnectionClosed:
                pass

        server = await serve(
            echo,
            host,
            0,
            compression="deflate" if compression else None,
            max_size=MAX_MESSAGE_SIZE,
            backlog=1024,
        )
        self._servers.append(server)
        port: int = next(iter(server.sockets)).getsockname()[1]
        return port


def create() -> WebsocketsAsyncioPeer:
    return WebsocketsAsyncioPeer()
