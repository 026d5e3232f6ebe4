"""Waiting for a turn: the write lock, and the waiters of a queue."""

from __future__ import annotations

from collections.abc import Awaitable

import trio

from ._outbox import Outbox


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

    def park(self) -> Awaitable[object]:
        """Await this to wait until :meth:`unpark` or :meth:`unpark_all` wakes
        the task. (Not itself a coroutine: a waiting task keeps one frame
        less, which every idle connection's consumer is.)"""
        task = trio.lowlevel.current_task()
        self._tasks.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._tasks.remove(task)  # cancelled while waiting
            return trio.lowlevel.Abort.SUCCEEDED

        return trio.lowlevel.wait_task_rescheduled(abort)  # noqa: ASYNC105 (the caller awaits it)

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

    __slots__ = ("_held", "_outbox", "_waiters")

    def __init__(self, outbox: Outbox | None = None) -> None:
        self._held = False
        self._waiters: Waiters | None = None  # made when needed
        # Senders waiting with their frames (see _outbox); a partly written
        # frame's sender gets the lock first, the others after the waiters.
        self._outbox = outbox

    def locked(self) -> bool:
        """Whether a task holds the lock."""
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free; return whether it was."""
        if self._held:
            return False
        self._held = True
        return True

    async def wait_for_handover(self) -> None:
        """Wait until the holder hands the lock over (after a failed
        :meth:`try_acquire`); cancelled, the lock is not taken."""
        if self._waiters is None:
            self._waiters = Waiters()
        await self._waiters.park()

    def release(self) -> None:
        """Hand the lock to the next waiter, or free it."""
        outbox = self._outbox
        # The outbox goes first when its oldest frame is partly written (it
        # must be finished), or when nobody else waits.
        if (
            outbox is not None
            and outbox.waiting
            and (outbox.has_partial_frame or not self._waiters)
        ):
            outbox.hand_over()
        elif self._waiters:
            self._waiters.unpark()
        else:
            self._held = False

    async def __aenter__(self) -> None:
        if not self.try_acquire():
            await self.wait_for_handover()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
