"""The interface every asyncio peer adapter implements (no Trio imported).

The asyncio peers are cross-runtime references: the ``websockets`` asyncio
implementation and aiohttp, run by ``asyncio_agent.py`` on uvloop. An adapter
is a module ``peer_<name>.py`` with a ``create()`` function returning an
:class:`AsyncioPeer`; ``asyncio_workloads.py`` only talks to this interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from payloads import MAX_MESSAGE_SIZE, Message

__all__ = ["MAX_MESSAGE_SIZE", "AsyncioPeer", "Channel", "Message"]


@dataclass(frozen=True)
class Channel:
    """One open connection, as two callables (as in ``interface.Channel``)."""

    send: Callable[[Message], Awaitable[None]]
    recv: Callable[[], Awaitable[Message]]


class AsyncioPeer(Protocol):
    supports_compression: bool

    def info(self) -> dict[str, Any]:
        """Library name and version, reported in the results."""
        ...

    def connect(
        self, host: str, port: int, *, compression: bool
    ) -> AbstractAsyncContextManager[Channel]:
        """Open a client connection to an echo server; close it on exit."""
        ...

    async def serve(self, host: str, *, compression: bool) -> int:
        """Start an echo server on a free port (it runs until the process
        exits); return the port."""
        ...
