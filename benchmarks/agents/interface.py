"""The tiny interface every Trio peer adapter implements.

An adapter is a module ``peer_<name>.py`` with a ``create()`` function that
returns a :class:`TrioPeer`. The workloads (``trio_workloads.py``) and the agent
(``trio_agent.py``) only ever talk to this interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from payloads import MAX_MESSAGE_SIZE, Message

__all__ = ["MAX_MESSAGE_SIZE", "Channel", "Message", "TrioPeer", "serve_tcp"]


@dataclass(frozen=True)
class Channel:
    """One open connection, as two bound methods (no wrapper in the hot path)."""

    send: Callable[[Message], Awaitable[None]]
    recv: Callable[[], Awaitable[Message]]


class TrioPeer(Protocol):
    """What a peer adapter provides."""

    supports_compression: bool

    def info(self) -> dict[str, Any]:
        """Library name and version, reported in the results."""
        ...

    def connect(
        self, host: str, port: int, *, compression: bool
    ) -> AbstractAsyncContextManager[Channel]:
        """Open a client connection to an echo server; close it on exit."""
        ...

    async def serve(
        self,
        host: str,
        *,
        compression: bool,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run an echo server on a free port; report the port via task_status."""
        ...


async def serve_tcp(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    host: str,
    task_status: trio.TaskStatus[int],
) -> None:
    """Run ``handler`` for every TCP client on a free port; report the port."""
    listeners = await trio.open_tcp_listeners(0, host=host, backlog=1024)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(listeners[0].socket.getsockname()[1])
