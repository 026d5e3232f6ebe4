"""Keepalive: ping the peer periodically and give up on one that is silent.

A slow consumer is not a dead peer: the reader keeps reading (up to the
queue's byte budget) while the application is busy, so pongs are still
recorded and the connection is only failed when the peer itself is silent.
"""

from __future__ import annotations

from typing import Protocol

import trio

from ._errors import ConnectionClosed

# Close code for "the server / client encountered an unexpected condition".
_KEEPALIVE_FAILED = 1011


class Pingable(Protocol):
    """What keepalive needs of a connection."""

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong (:exc:`ConnectionClosed` if none)."""

    async def wait_until_closed(self) -> None:
        """Wait until the connection is closed."""

    async def fail(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` without waiting for the peer."""


async def keep_alive(connection: Pingable, interval: float, pong_wait: float) -> None:
    """Ping every ``interval`` seconds until the connection closes.

    A pong that takes longer than ``pong_wait`` seconds closes the connection
    with code 1011, which every task waiting on it then sees.
    """
    while True:
        with trio.move_on_after(interval):
            await connection.wait_until_closed()
            return
        try:
            with trio.fail_after(pong_wait):
                await connection.ping()
        except ConnectionClosed:
            return
        except trio.TooSlowError:
            await connection.fail(_KEEPALIVE_FAILED, "keepalive ping timeout")
            return
