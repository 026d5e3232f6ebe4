"""Adapter for the ``trio_websocket`` API.

Used for two peers: this repository (installed editable) and trio-websocket
0.12.2 from PyPI. Both are imported as ``trio_websocket``; each runs in its own
virtual environment, so the import picks the one installed there.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket as tw

from interface import MAX_MESSAGE_SIZE, Channel


def _takes_compression(function: Callable[..., Any]) -> bool:
    # A named parameter, or (this library) one of the ConnectionOptions that
    # every entry point takes as keyword arguments.
    options = getattr(tw, "ConnectionOptions", None)
    return "compression" in inspect.signature(function).parameters or (
        options is not None and "compression" in options.__annotations__
    )


def _compression_kwargs(supported: bool, on: bool) -> dict[str, Any]:
    if not supported:
        return {}
    return {"compression": "deflate" if on else None}


def _build() -> str:
    """``compiled`` if any imported module of the library is an extension."""
    files = [
        getattr(module, "__file__", None) or ""
        for name, module in list(sys.modules.items())
        if name == "trio_websocket" or name.startswith("trio_websocket.")
    ]
    return "compiled" if any(f.endswith((".so", ".pyd")) for f in files) else "pure"


class TrioWebsocketPeer:
    def __init__(self) -> None:
        # Looked up once: inspect.signature costs more than a handshake step.
        self._client_compression = _takes_compression(tw.open_websocket)
        self._server_compression = _takes_compression(tw.serve_websocket)
        self.supports_compression = (
            self._client_compression and self._server_compression
        )

    def info(self) -> dict[str, Any]:
        return {
            "library": "trio_websocket",
            "version": tw.__version__,
            "path": tw.__file__,
            "trio": trio.__version__,
            "build": _build(),
        }

    @asynccontextmanager
    async def connect(
        self, host: str, port: int, *, compression: bool
    ) -> AsyncIterator[Channel]:
        kwargs = _compression_kwargs(self._client_compression, compression)
        async with tw.open_websocket(
            host,
            port,
            "/",
            use_ssl=False,
            max_message_size=MAX_MESSAGE_SIZE,
            **kwargs,
        ) as ws:
            yield Channel(ws.send_message, ws.get_message)

    async def serve(
        self,
        host: str,
        *,
        compression: bool,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def echo(request: tw.WebSocketRequest) -> None:
            ws = await request.accept()
            get, send = ws.get_message, ws.send_message
            try:
                while True:
                    await send(await get())
            except tw.ConnectionClosed:
                pass

        kwargs = _compression_kwargs(self._server_compression, compression)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: tw.serve_websocket(
                    echo,
                    host,
                    0,
                    None,
                    max_message_size=MAX_MESSAGE_SIZE,
                    task_status=task_status,
                    **kwargs,
                )
            )
            task_status.started(server.port)


def create() -> TrioWebsocketPeer:
    return TrioWebsocketPeer()
