"""Accepting clients from a server's listeners.

This is :func:`trio.serve_listeners` without its per-client
``trio.aclose_forcefully(stream)``: the server's client task always closes
its stream itself, and a second, forced close costs a cancel scope and a
raised ``Cancelled`` per connection, a noticeable share of a handshake.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import trio

# accept() failures that mean "out of resources for now", not "broken".
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_RETRY_DELAY = 0.1

logger = logging.getLogger("trio-websocket")

Listener = trio.abc.Listener[Any]
ClientHandler = Callable[[Any], Awaitable[None]]


async def accept_clients(
    listeners: Sequence[Listener],
    handle: ClientHandler,
    handler_nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept from every listener; run ``handle(stream)`` in ``handler_nursery``.

    ``handle`` must close the stream it is given. Runs until cancelled.
    """
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_forever, listener, handle, handler_nursery)
        task_status.started()


async def _accept_forever(
    listener: Listener, handle: ClientHandler, handler_nursery: trio.Nursery
) -> NoReturn:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                logger.error(
                    "accept failed: %s; retrying in %s s",
                    os.strerror(exc.errno),
                    _RETRY_DELAY,
                )
                await trio.sleep(_RETRY_DELAY)
            else:
                handler_nursery.start_soon(handle, stream)
