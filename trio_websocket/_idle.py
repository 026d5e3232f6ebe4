"""Idle connections without a task of their own: one watcher per Trio run.

A connection's reader task is what answers pings and notices a close while
the application does not read. But a task parked on an idle socket costs
memory (its coroutine frames, its cancel scopes), and a server may hold
thousands of connections that say nothing for minutes. So a reader that has
found nothing to read for :data:`REST_AFTER` seconds may *rest*: it hands its
socket to the run's :class:`SocketWatcher` and ends. The watcher is a single
system task that waits on a private ``epoll`` set holding every resting
socket; when one becomes readable (data, a close frame, the peer's EOF or a
reset), it calls the connection back, which starts its reader again. A
connection that needs its reader for another reason (it starts closing, or
sends a ping) wakes it the same way, without waiting for the socket. The
watcher exists only while some socket rests: the last one to leave ends it.

Resting needs ``select.epoll`` (Linux); elsewhere readers never rest.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable

import trio

# Seconds a reader waits on a silent socket before it rests. A resting
# connection costs one task start when it wakes up, which is nothing for a
# connection that was quiet for this long.
REST_AFTER = 0.25

logger = logging.getLogger("trio-websocket")

_WATCHER: trio.lowlevel.RunVar[SocketWatcher | None] = trio.lowlevel.RunVar("watcher")


class SocketWatcher:
    """Watches resting sockets and calls their connections back when needed."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._wakers: dict[int, Callable[[], None]] = {}
        self._scope = trio.CancelScope()

    def watch(self, fileno: int, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (once) when ``fileno`` has something to read."""
        try:
            self._epoll.register(fileno, select.EPOLLIN)
        except FileExistsError:  # a closed socket's number, reused
            self._epoll.modify(fileno, select.EPOLLIN)
        self._wakers[fileno] = wake

    def forget(self, fileno: int) -> None:
        """Stop watching ``fileno`` (nothing happens if it is not watched)."""
        if self._wakers.pop(fileno, None) is None:
            return
        with contextlib.suppress(OSError):  # closed elsewhere: already dropped
            self._epoll.unregister(fileno)
        if not self._wakers:
            self._end()

    def _end(self) -> None:
        """Nothing rests: end the watcher task (the next rest starts another)."""
        self._scope.cancel()
        if _WATCHER.get(None) is self:
            _WATCHER.set(None)

    async def run(self) -> None:
        """Wake connections whose sockets became readable, until nothing rests
        (:meth:`forget` of the last one) or the run ends."""
        try:
            with self._scope:
                while True:
                    await trio.lowlevel.wait_readable(self._epoll.fileno())
                    for fileno, _ in self._epoll.poll(0):
                        self._wake(fileno)
        finally:
            self._epoll.close()

    def _wake(self, fileno: int) -> None:
        wake = self._wakers.get(fileno)
        if wake is None:
            return
        self.forget(fileno)
        try:
            wake()
        except Exception:
            # An error here would crash the whole Trio run (this is a system
            # task): keep it to the one connection.
            logger.exception("could not wake a resting connection")


def socket_watcher() -> SocketWatcher | None:
    """The current run's watcher (started if none runs); ``None`` without
    ``epoll`` or when it cannot be made."""
    if not hasattr(select, "epoll"):
        return None
    watcher = _WATCHER.get(None)
    if watcher is None:
        try:
            watcher = SocketWatcher()
        except OSError:  # out of descriptors, say: the reader stays up
            return None
        _WATCHER.set(watcher)
        trio.lowlevel.spawn_system_task(watcher.run, name="trio-websocket watcher")
    return watcher
