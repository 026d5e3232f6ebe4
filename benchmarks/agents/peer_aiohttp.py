"""Adapter for aiohttp's WebSocket client and server.

A cross-runtime reference (no target). Defaults kept except compression
(aiohttp's server offers it by default: off unless asked, as for every
peer), the message size limit, and no connection limit on the client
session (its default of 100 would stall the 1,000 idle connections).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from asyncio_interface import MAX_MESSAGE_SIZE, Channel, Message


class ClosedError(ConnectionError):
    pass


class AiohttpPeer:
    supports_compression = True

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []

    def info(self) -> dict[str, Any]:
        return {
            "library": "aiohttp",
            "version": aiohttp.__version__,
            "path": aiohttp.__file__,
        }

    def _client_session(self) -> aiohttp.ClientSession:
        # One session for every connection, as an application would have.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0)
            )
        return self._session

    async def aclose(self) -> None:
        """Close the client session and the servers (the agent is quitting)."""
        if self._session is not None:
            await self._session.close()
        for runner in self._runners:
            await runner.cleanup()

    @asynccontextmanager
    async def connect(
        self, host: str, port: int, *, compression: bool
    ) -> AsyncIterator[Channel]:
        async with self._client_session().ws_connect(
            f"http://{host}:{port}/",
            compress=15 if compression else 0,
            max_msg_size=MAX_MESSAGE_SIZE,
        ) as ws:
            send_str, send_bytes, receive = ws.send_str, ws.send_bytes, ws.receive

            async def send(message: Message) -> None:
                if isinstance(message, str):
                    await send_str(message)
                else:
                    await send_bytes(message)

            async def recv() -> Message:
                message = await receive()
                if message.type is WSMsgType.BINARY or message.type is WSMsgType.TEXT:
                    data: Message = message.data
                    return data
                raise ClosedError(f"connection closed: {message.type!r}")

            yield Channel(send, recv)

    async def serve(self, host: str, *, compression: bool) -> int:
        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(
                compress=compression, max_msg_size=MAX_MESSAGE_SIZE
            )
            await ws.prepare(request)
            receive, send_str, send_bytes = ws.receive, ws.send_str, ws.send_bytes
            while True:
                message = await receive()
                if message.type is WSMsgType.BINARY:
                    await send_bytes(message.data)
                elif message.type is WSMsgType.TEXT:
                    await send_str(message.data)
                else:
                    break
            return ws

        app = web.Application()
        app.router.add_get("/", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, host, 0, backlog=1024)
        await site.start()
        self._runners.append(runner)
        port: int = runner.addresses[0][1]
        return port


def create() -> AiohttpPeer:
    return AiohttpPeer()
