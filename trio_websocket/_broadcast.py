"""Sending one message to many connections.

The policy, in one sentence: every connection gets at most one broadcast
message in flight; a connection still busy writing the previous one is
skipped (the message is dropped for it) and reported, so one slow reader
never holds up the others and never makes the server buffer without
bound.

Writes happen in tasks started in a nursery you provide, so
:func:`broadcast` itself returns at once. The message is framed once and
the same bytes are written to every server-side connection without
compression; a connection that uses permessage-deflate (each has its own
compression state) or is a client (each frame has its own mask) frames it
for itself, as :meth:`~WebSocketConnection.send_message` would.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import trio
from websockets.frames import Opcode

from ._codec import codec
from ._connection import WebSocketConnection
from ._errors import ConnectionClosed
from ._iterators import BytesLike

# Connections with a broadcast message still being written to them.
_in_flight: weakref.WeakSet[WebSocketConnection] = weakref.WeakSet()


@dataclass(frozen=True)
class BroadcastResult:
    """What :func:`broadcast` did with each connection.

    ``started``: the message is being written to these (in the nursery).
    ``skipped``: still writing an earlier broadcast message; dropped here.
    ``closed``: closed or closing; nothing was sent.
    """

    started: list[WebSocketConnection]
    skipped: list[WebSocketConnection]
    closed: list[WebSocketConnection]


@dataclass(frozen=True)
class FramedMessage:
    """A message, and its frame as a server without extensions sends it."""

    message: str | BytesLike
    frame: bytes
    payload_size: int


async def broadcast(
    nursery: trio.Nursery,
    connections: Iterable[WebSocketConnection],
    message: str | BytesLike,
) -> BroadcastResult:
    """Send ``message`` to every connection without waiting for slow ones.

    ``str`` is sent as text, bytes-like as binary. Each write runs in a task
    in ``nursery``; a connection that has not finished taking the previous
    broadcast message is skipped (see the module's policy), one that is
    closed is left out. A connection that closes while being written to is
    quietly dropped. Returns which connections got what::

        result = await broadcast(nursery, server.connections, "tick")
        for slow in result.skipped:
            ...  # e.g. count skips and close readers that never catch up

    Cancelling ``nursery`` cancels the writes still in progress, which
    aborts those connections (a frame cut short cannot be resumed).
    """
    framed = frame_message(message)
    result = BroadcastResult([], [], [])
    for connection in connections:
        if connection.closed is not None:
            result.closed.append(connection)
        elif connection in _in_flight:
            result.skipped.append(connection)
        else:
            _in_flight.add(connection)
            nursery.start_soon(_deliver, connection, framed)
            result.started.append(connection)
    await trio.lowlevel.checkpoint()
    return result


def frame_message(message: str | BytesLike) -> FramedMessage:
    """Frame ``message`` once, for :func:`send_framed` to many connections."""
    if isinstance(message, str):
        opcode, payload = Opcode.TEXT, message.encode()
    elif isinstance(message, bytes | bytearray | memoryview):
        opcode, payload = Opcode.BINARY, bytes(message)
    else:
        raise ValueError(f"cannot send a message of type {type(message)!r}")
    head, body = codec.encode_frame(opcode, payload, False)
    return FramedMessage(message, head + body if body else head, len(payload))


async def send_framed(connection: WebSocketConnection, framed: FramedMessage) -> None:
    """Send a message framed once: its ready bytes where they fit, else as usual.

    The shared frame fits a server-side connection without extensions; a
    client masks each frame, and compression state is per connection.
    """
    if connection.takes_shared_frames:
        await connection.send_shared_frame(framed.frame, framed.payload_size)
    else:
        await connection.send_message(framed.message)


async def _deliver(connection: WebSocketConnection, framed: FramedMessage) -> None:
    try:
        await send_framed(connection, framed)
    except ConnectionClosed:
        pass
    finally:
        _in_flight.discard(connection)
