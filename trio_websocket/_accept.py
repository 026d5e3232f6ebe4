"""Accepting clients from a server's listeners.

This is :func:`trio.serve_listeners` with three changes:

* no per-client ``trio.aclose_forcefully(stream)``: the server's client task
  always closes its stream itself, and a second, forced close costs a cancel
  scope and a raised ``Cancelled`` per connection, a noticeable share of a
  handshake;
* a cap on clients in the handshake: while it is reached, the loops stop
  accepting and new connections wait in the operating system's backlog;
* running out of file descriptors (or memory) pauses accepting, with a
  backoff, instead of ending the server.

The listeners are not closed here: on a graceful shutdown the server first
takes what is already waiting in their backlogs (:func:`accept_pending`).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import selectors
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import trio

from ._admission import HandshakeSlots

# accept() failures that mean "out of resources for now", not "broken".
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# The pause after such a failure doubles from the first to the longest.
_FIRST_PAUSE = 0.1
_LONGEST_PAUSE = 1.0
# At most one warning about it in this many seconds.
_WARNING_INTERVAL = 60
# Bounds on taking the backlog at shutdown: connections and seconds.
_MOST_PENDING = 4096
_PENDING_SECONDS = 1.0

logger = logging.getLogger("trio-websocket")

Listener = trio.abc.Listener[Any]
ClientHandler = Callable[[Any], Awaitable[None]]


async def accept_clients(
    listeners: Sequence[Listener],
    handle: ClientHandler,
    handler_nursery: trio.Nursery,
    slots: HandshakeSlots,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept from every listener; run ``handle(stream)`` in ``handler_nursery``.

    Each accepted client takes one of ``slots``, which ``handle`` must give
    back once the handshake is over; ``handle`` must close the stream it is
    given. Runs until cancelled.
    """
    clock = _WarningClock()  # one warning a minute for the server, not per listener
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(
                _accept_forever, listener, handle, handler_nursery, slots, clock
            )
        task_status.started()


async def _accept_forever(
    listener: Listener,
    handle: ClientHandler,
    handler_nursery: trio.Nursery,
    slots: HandshakeSlots,
    clock: _WarningClock,
) -> NoReturn:
    shortage = _Shortage(clock)
    while True:
        await slots.wait_for_one()
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            await shortage.pause(exc.errno)
            continue
        shortage.over()
        slots.take()
        handler_nursery.start_soon(handle, stream)


class _WarningClock:
    """When a shortage was last reported as a warning, for all of a server's
    listeners: one process running out of descriptors is one problem, however
    many addresses it listens on (IPv4 and IPv6, say)."""

    def __init__(self) -> None:
        self._warned_at = -math.inf

    def may_warn(self) -> bool:
        """True at most once a minute."""
        now = trio.current_time()
        if now - self._warned_at < _WARNING_INTERVAL:
            return False
        self._warned_at = now
        return True


class _Shortage:
    """Pauses while accept() fails for lack of descriptors or memory.

    The first failure is a warning (the operator must act: raise the limit,
    find a leak), but at most once a minute (``clock``): at the limit, every
    client that leaves lets one more in, and the next accept() fails again.
    """

    def __init__(self, clock: _WarningClock) -> None:
        self._pause = 0.0  # 0 while accept() works
        self._warned = False  # this shortage was reported as a warning
        self._clock = clock

    async def pause(self, error_number: int) -> None:
        """Wait before the next try, longer each time."""
        if self._pause:
            self._pause = min(self._pause * 2, _LONGEST_PAUSE)
        else:
            self._pause = _FIRST_PAUSE
            self._report(error_number)
        await trio.sleep(self._pause)

    def over(self) -> None:
        """accept() worked."""
        if self._pause:
            self._pause = 0.0
            level = logging.INFO if self._warned else logging.DEBUG
            logger.log(level, "accepting connections again")

    def _report(self, error_number: int) -> None:
        self._warned = self._clock.may_warn()
        logger.log(
            logging.WARNING if self._warned else logging.DEBUG,
            "cannot accept connections: %s; pausing, open connections are still served",
            os.strerror(error_number),
        )


async def accept_pending(
    listeners: Sequence[Listener],
    handle: ClientHandler,
    handler_nursery: trio.Nursery,
    slots: HandshakeSlots,
) -> None:
    """Accept the connections already waiting in the listeners' backlogs.

    Their clients connected before the server stopped accepting; closing
    the listeners would reset them. Only listeners on a socket can tell
    what is waiting; others are left alone. Bounded in count and time.
    """
    with trio.move_on_after(_PENDING_SECONDS):
        for listener in listeners:
            socket = _listening_socket(listener)
            if socket is None:
                continue
            with selectors.DefaultSelector() as waiting:
                waiting.register(socket.fileno(), selectors.EVENT_READ)
                for _ in range(_MOST_PENDING):
                    if not waiting.select(0):
                        break
                    try:
                        stream = await listener.accept()
                    except OSError:  # out of descriptors: the rest is lost
                        break
                    slots.take()
                    handler_nursery.start_soon(handle, stream)


def _listening_socket(listener: Listener) -> trio.socket.SocketType | None:
    """The socket under ``listener`` (and its TLS wrapper, if any)."""
    inner: Listener | None = listener
    while inner is not None and not isinstance(inner, trio.SocketListener):
        inner = getattr(inner, "transport_listener", None)
    return None if inner is None else inner.socket
