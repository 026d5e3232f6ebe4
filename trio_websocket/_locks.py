"""Waiting for a turn: the write lock, and the waiters of a queue."""

from __future__ import annotations

import trio


class Waiters:
    """Tasks waiting to be woken, in order: a lighter ``ParkingLot``.

    Trio's ``ParkingLot`` keeps an ordered dict even for a single task, which
    costs every idle connection (whose consumer waits for a message) over
    600 bytes; a list of tasks does the same job in a tenth of that.
    """

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: list[trio.lowlevel.Task] = []

    def __len__(self) -> int:
        return len(self._tasks)

    async def park(self) -> None:
        """Wait until :meth:`unpark` or :meth:`unpark_all` wakes this task."""
        task = trio.lowlevel.current_task()
        self._tasks.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._tasks.remove(task)  # cancelled while waiting
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def unpark(self) -> None:
        """Wake the task that has waited longest, if any."""
        if self._tasks:
            trio.lowlevel.reschedule(self._tasks.pop(0))

    def unpark_all(self) -> None:
        """Wake every waiting task."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            trio.lowlevel.reschedule(task)


class WriteLock:
    """A lock for writers that takes no trip through the scheduler when free.

    Every holder writes to the stream, and that write is the checkpoint; a
    contended acquisition parks until the holder hands the lock over.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters: Waiters | None = None  # made when needed

    def locked(self) -> bool:
        """Whether a task holds the lock."""
        return self._held

    async def __aenter__(self) -> None:
        if self._held:
            if self._waiters is None:
                self._waiters = Waiters()
            await self._waiters.park()  # __aexit__ hands the lock over
        else:
            self._held = True

    async def __aexit__(self, *exc_info: object) -> None:
        if self._waiters:
            self._waiters.unpark()
        else:
            self._held = False
