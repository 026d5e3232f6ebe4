"""What the ``trio-websocket`` commands share: exit statuses, errors, Trio.

Used by the argument parser and by both commands (``connect`` in
:mod:`trio_websocket.cli._client`, ``serve`` in
:mod:`trio_websocket.cli._server`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A problem with the command line, reported with exit status 2."""


@dataclass(frozen=True)
class RedisAddress:
    """Where ``--pubsub redis://[:PASSWORD@]HOST[:PORT]`` says Redis is."""

    host: str
    port: int = 6379
    password: str | None = None

    def __str__(self) -> str:  # never shows the password
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}"


def run_trio(main: Callable[..., Awaitable[int]], *args: object) -> int:
    """``trio.run(main, *args)``, with Ctrl-C ending it quietly with status 130.

    Exceptions from ``main`` propagate as themselves, never in a group.
    """

    async def interruptible() -> int:
        status = EXIT_INTERRUPTED
        error: Exception | None = None
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:

                async def work() -> None:
                    nonlocal status, error
                    try:
                        status = await main(*args)
                    except Exception as exc:
                        error = exc
                    nursery.cancel_scope.cancel()

                async def watch() -> None:
                    async for _ in interrupts:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(work)
                nursery.start_soon(watch)
        if error is not None:
            raise error
        return status

    return trio.run(interruptible)


def os_error_message(exc: OSError) -> str:
    """The operating system's own words for ``exc``, e.g. "Connection refused".

    Name lookups fail with resolver codes, not errno values (``os.strerror``
    would say "Unknown error -2"): their own message is used instead.
    """
    if isinstance(exc, (socket.gaierror, socket.herror)):
        return exc.strerror or str(exc)
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


def report_error(message: str) -> None:
    """Print one ``error: ...`` line to stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)
