"""The lock that keeps one writer at a time on a connection's stream."""

from __future__ import annotations

import trio


class WriteLock:
    """A lock for writers that takes no trip through the scheduler when free.

    Every holder writes to the stream, and that write is the checkpoint; a
    contended acquisition parks until the holder hands the lock over.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters: trio.lowlevel.ParkingLot | None = None  # made when needed

    def locked(self) -> bool:
        """Whether a task holds the lock."""
        return self._held

    async def __aenter__(self) -> None:
        if self._held:
            if self._waiters is None:
                self._waiters = trio.lowlevel.ParkingLot()
            await self._waiters.park()  # __aexit__ hands the lock over
        else:
            self._held = True

    async def __aexit__(self, *exc_info: object) -> None:
        if self._waiters:
            self._waiters.unpark()
        else:
            self._held = False
