"""Small frames waiting for the write lock, written together in one system call.

When a socket does not drain as fast as several tasks send on it, the senders
queue behind the one whose write waits for buffer space, and each would get
a system call of its own when its turn comes. Instead a waiting sender of a
small, already framed message leaves the frame in the connection's
:class:`Outbox` and parks. The task holding the lock, once its own write
went through, writes every waiting frame at once, as far as the kernel takes
them without waiting, and wakes the senders whose frames went out whole.

Nobody waits on behalf of another task: a frame that the kernel took only in
part is finished by its own sender, which is handed the lock for that (the
lock goes to it before anybody else, so nothing lands inside the frame), and
so are the frames behind it, one sender at a time, as without an outbox.

Cancellation keeps its meaning: a sender cancelled while its frame waits
takes it back and nothing of it is sent; once part of the frame is on the
wire, its sender finishes it, and a cancellation then aborts the connection,
as it does for any write cut short.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class _Waiting:
    """One parked sender and its frame."""

    __slots__ = ("frame", "sent", "task")

    def __init__(self, task: trio.lowlevel.Task, frame: bytes) -> None:
        self.task = task
        self.frame = frame
        self.sent = 0  # bytes of the frame on the wire


class Outbox:
    """Frames of senders waiting for the write lock, oldest first."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        # Oldest first; an attribute, so the hot path tests it without a call.
        self.waiting: list[_Waiting] = []

    @property
    def has_partial_frame(self) -> bool:
        """Whether the oldest frame (a sender must wait) is partly written:
        its sender goes next."""
        return self.waiting[0].sent > 0

    async def wait(self, frame: bytes) -> int:
        """Park until ``frame`` is written or the lock is handed to this task.

        Returns how many bytes of the frame are written: all of them, or, for
        a task that now holds the lock, what it has left to write from.
        """
        waiting = _Waiting(trio.lowlevel.current_task(), frame)
        self.waiting.append(waiting)

        def abort(_: object) -> trio.lowlevel.Abort:
            if waiting.sent:  # part of it is out: its sender must finish it
                return trio.lowlevel.Abort.FAILED
            self.waiting.remove(waiting)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return waiting.sent

    def write_waiting(self, write: Callable[[bytes], int]) -> int:
        """Write the waiting frames with one ``write`` call that does not wait;
        wake the senders whose frames went out whole. Returns the bytes
        written. (For the lock holder, after its own frame.)"""
        waiting = self.waiting
        if not waiting or waiting[0].sent:
            return 0
        written = write(b"".join(entry.frame for entry in waiting))
        left = written
        done = 0
        for entry in waiting:
            size = len(entry.frame)
            if left < size:
                entry.sent = left  # 0: untouched
                break
            left -= size
            entry.sent = size
            trio.lowlevel.reschedule(entry.task)
            done += 1
        del waiting[:done]
        return written

    def hand_over(self) -> None:
        """Wake the oldest waiting sender (there must be one) to take the lock."""
        trio.lowlevel.reschedule(self.waiting.pop(0).task)
