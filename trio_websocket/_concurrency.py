"""A nursery whose body's exceptions reach the caller unwrapped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """Open a nursery for background tasks that serve the ``async with`` body.

    An exception raised by the body is caught inside the nursery and raised
    again outside it, so it reaches the caller as itself, with its traceback,
    cause and context, and not wrapped in an exception group (Trio's
    ``strict_exception_groups``). The background tasks are cancelled when
    the body ends.
    """
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            yield nursery
        except BaseException as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
