"""The hand-written primitives on their own: ``Waiters``, ``WriteLock``, ``ReadTurns``.

They replace Trio's ``ParkingLot`` and ``Lock`` and a reader task that always
reads (see ``benchmarks/results/ablation.md`` for what each buys), so they
must keep the contracts of what they replace: first come, first served, and a
task cancelled while it waits takes nothing with it, neither a wake-up meant
for another task nor the lock. ``MessageQueue`` has its own file,
``test_queue.py``.

Tasks are ordered with ``wait_all_tasks_blocked`` and time is a ``MockClock``:
nothing here depends on real time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing

from trio_websocket._locks import Waiters, WriteLock
from trio_websocket._turns import LONGEST_QUIET_INTERVAL, QUIET_INTERVAL, ReadTurns


async def start_in_order(
    nursery: trio.Nursery, tasks: list[Callable[[], Awaitable[None]]]
) -> None:
    """Start ``tasks`` one by one, each blocked before the next starts."""
    for task in tasks:
        nursery.start_soon(task)
        await trio.testing.wait_all_tasks_blocked()


async def all_done(nursery: trio.Nursery) -> None:
    """Fail, rather than hang, if a task is still waiting at the end."""
    await trio.testing.wait_all_tasks_blocked()
    assert not nursery.child_tasks, "a task still waits"


# -- Waiters ----------------------------------------------------------------


async def park_then_note(waiters: Waiters, woken: list[int], name: int) -> None:
    await waiters.park()
    woken.append(name)


async def test_waiters_wake_the_longest_waiting_task_first() -> None:
    waiters = Waiters()
    woken: list[int] = []
    async with trio.open_nursery() as nursery:
        await start_in_order(
            nursery,
            [partial(park_then_note, waiters, woken, name) for name in range(4)],
        )
        assert len(waiters) == 4
        for count in range(1, 5):
            waiters.unpark()
            await trio.testing.wait_all_tasks_blocked()
            assert woken == list(range(count))
            assert len(waiters) == 4 - count


async def test_waiters_unpark_without_a_waiter_is_not_remembered() -> None:
    waiters = Waiters()
    waiters.unpark()
    waiters.unpark_all()
    woken: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(park_then_note, waiters, woken, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []  # an earlier unpark is no permit
        assert len(waiters) == 1
        waiters.unpark()
        await all_done(nursery)
    assert woken == [0]


async def test_waiters_unpark_all_wakes_everyone_there_and_nobody_later() -> None:
    waiters = Waiters()
    woken: list[int] = []
    async with trio.open_nursery() as nursery:
        await start_in_order(
            nursery,
            [partial(park_then_note, waiters, woken, name) for name in range(3)],
        )
        waiters.unpark_all()
        assert len(waiters) == 0
        nursery.start_soon(park_then_note, waiters, woken, 3)
        await trio.testing.wait_all_tasks_blocked()
        # Woken together: Trio runs them in any order.
        assert sorted(woken) == [0, 1, 2]
        assert len(waiters) == 1
        waiters.unpark()
        await all_done(nursery)
    assert woken[3:] == [3]


async def test_a_cancelled_waiter_leaves_the_line_and_takes_no_wake_up() -> None:
    waiters = Waiters()
    woken: list[int] = []
    cancelled: list[int] = []

    async def cancellable(name: int, scope: trio.CancelScope) -> None:
        with scope:
            await park_then_note(waiters, woken, name)
        if scope.cancelled_caught:
            cancelled.append(name)

    first, third = trio.CancelScope(), trio.CancelScope()
    async with trio.open_nursery() as nursery:
        await start_in_order(
            nursery,
            [
                lambda: cancellable(0, first),
                lambda: park_then_note(waiters, woken, 1),
                lambda: cancellable(2, third),
                lambda: park_then_note(waiters, woken, 3),
            ],
        )
        first.cancel()
        third.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(cancelled) == [0, 2]
        assert len(waiters) == 2
        waiters.unpark()  # meant for the longest waiting task still there
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [1]
        waiters.unpark()
        await all_done(nursery)
    assert woken == [1, 3]


async def test_a_waiter_cancelled_after_its_wake_up_still_returns() -> None:
    # Once woken, the wake-up is delivered: the cancellation waits for the
    # task's next checkpoint. (What lets WriteLock hand over safely.)
    waiters = Waiters()
    woken: list[int] = []
    scope = trio.CancelScope()

    async def waiter() -> None:
        with scope:
            await park_then_note(waiters, woken, 0)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        waiters.unpark()
        scope.cancel()
        await all_done(nursery)
    assert woken == [0]
    assert scope.cancelled_caught


# -- WriteLock ----------------------------------------------------------------


async def test_write_lock_try_acquire_and_release() -> None:
    lock = WriteLock()
    assert not lock.locked()
    assert lock.try_acquire()
    assert lock.locked()
    assert not lock.try_acquire()
    lock.release()
    assert not lock.locked()
    assert lock.try_acquire()


async def test_a_free_write_lock_is_taken_without_a_checkpoint() -> None:
    # What WriteLock is for: an already cancelled task still gets a free lock
    # (a checkpoint would raise), and gives it back.
    lock = WriteLock()
    entered = False
    with trio.CancelScope() as scope:
        scope.cancel()
        async with lock:
            entered = True
            assert lock.locked()
    assert entered
    assert not lock.locked()
    assert not scope.cancelled_caught


async def test_write_lock_is_released_by_an_exception() -> None:
    lock = WriteLock()
    with pytest.raises(ValueError, match="inside"):
        async with lock:
            raise ValueError("inside")
    assert not lock.locked()


async def hold_then_note(lock: WriteLock, order: list[int], name: int) -> None:
    async with lock:
        order.append(name)
        await trio.lowlevel.checkpoint()


async def test_write_lock_is_handed_over_in_arrival_order() -> None:
    lock = WriteLock()
    order: list[int] = []
    assert lock.try_acquire()
    async with trio.open_nursery() as nursery:
        await start_in_order(
            nursery,
            [partial(hold_then_note, lock, order, name) for name in range(4)],
        )
        assert order == []
        lock.release()
        await all_done(nursery)
    assert order == [0, 1, 2, 3]
    assert not lock.locked()


async def test_a_released_write_lock_goes_to_its_waiter_not_to_a_newcomer() -> None:
    lock = WriteLock()
    order: list[int] = []
    assert lock.try_acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold_then_note, lock, order, 0)
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
        # Handed over, not freed: nobody can barge in before the waiter runs.
        assert lock.locked()
        assert not lock.try_acquire()
        nursery.start_soon(hold_then_note, lock, order, 1)
        await all_done(nursery)
    assert order == [0, 1]
    assert not lock.locked()


async def test_a_cancelled_write_lock_waiter_takes_neither_lock_nor_turn() -> None:
    lock = WriteLock()
    order: list[int] = []
    scope = trio.CancelScope()

    async def cancellable() -> None:
        with scope:
            await hold_then_note(lock, order, 0)

    assert lock.try_acquire()
    async with trio.open_nursery() as nursery:
        await start_in_order(
            nursery, [cancellable, lambda: hold_then_note(lock, order, 1)]
        )
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert scope.cancelled_caught
        assert lock.locked()  # still ours
        lock.release()
        await all_done(nursery)
    assert order == [1]
    assert not lock.locked()


async def test_a_waiter_cancelled_once_handed_the_lock_gives_it_back() -> None:
    lock = WriteLock()
    order: list[int] = []
    scope = trio.CancelScope()

    async def cancellable() -> None:
        with scope:
            await hold_then_note(lock, order, 0)

    assert lock.try_acquire()
    async with trio.open_nursery() as nursery:
        await start_in_order(
            nursery, [cancellable, lambda: hold_then_note(lock, order, 1)]
        )
        lock.release()  # handed to task 0 ...
        scope.cancel()  # ... which is cancelled before it runs
        await all_done(nursery)
    # Task 0 held the lock (its body ran, then its checkpoint raised) and
    # released it: task 1 got it, and the lock is free at the end.
    assert order == [0, 1]
    assert scope.cancelled_caught
    assert not lock.locked()


async def test_write_lock_wait_for_handover_cancelled_does_not_take_the_lock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lock = WriteLock()
    assert lock.try_acquire()
    with trio.move_on_after(1) as scope:  # virtual time
        await lock.wait_for_handover()
    assert scope.cancelled_caught
    lock.release()
    assert not lock.locked()  # nobody left to hand it to


# -- ReadTurns ----------------------------------------------------------------


class Reader:
    """A reader task lending the socket, and whether it still does."""

    def __init__(self, *, may_rest: bool = False) -> None:
        self.needed = False
        self.turns = ReadTurns(lambda: self.needed, self.resume)
        self.may_rest = may_rest
        self.lending = False
        self.lent = 0  # how many times it finished lending
        self.rested = 0  # how many times lending ended in a rest
        self.resumed = 0

    def resume(self) -> None:
        self.resumed += 1

    async def lend(self) -> None:
        self.lending = True
        try:
            self.rested += await self.turns.lend_socket_to_consumers(
                may_rest=self.may_rest
            )
        finally:
            self.lending = False
            self.lent += 1

    async def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.lend)
        await trio.testing.wait_all_tasks_blocked()


def consumer_read(turns: ReadTurns) -> None:
    """One consumer turn at the socket that reads at once."""
    assert turns.consumer_may_read
    turns.start_consumer_turn()
    turns.end_consumer_turn()


async def settle(clock: trio.testing.MockClock, seconds: float) -> None:
    """Move the clock on by ``seconds``, in steps, letting the tasks run."""
    steps = max(1, round(seconds / STEP))
    for _ in range(steps):
        clock.jump(seconds / steps)
        await trio.testing.wait_all_tasks_blocked()


#: Steps of the MockClock, well under the quiet interval.
STEP = QUIET_INTERVAL / 20


async def test_the_socket_is_free_for_consumers_only_while_lent(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    turns = reader.turns
    assert not turns.consumer_may_read
    async with trio.open_nursery() as nursery:
        await reader.start(nursery)
        assert reader.lending
        assert turns.consumer_may_read
        turns.start_consumer_turn()
        assert turns.consumer_reading
        assert not turns.consumer_may_read  # one consumer at a time
        turns.end_consumer_turn()
        assert turns.consumer_may_read
        reader.needed = True
        turns.wake_reader()
        await all_done(nursery)
    assert reader.lent == 1
    assert not turns.consumer_may_read


async def test_a_needed_reader_does_not_lend_the_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    reader.needed = True
    with trio.fail_after(QUIET_INTERVAL / 2):  # virtual time: only a hang
        await reader.lend()
    assert not reader.turns.consumer_may_read


async def test_wake_reader_makes_it_look_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    # The clock does not move: whatever the reader does, it does when woken.
    reader = Reader()
    turns = reader.turns

    async def wake() -> None:
        turns.wake_reader()
        await trio.testing.wait_all_tasks_blocked()

    async with trio.open_nursery() as nursery:
        await reader.start(nursery)
        turns.start_consumer_turn()
        await wake()
        assert reader.lending  # a consumer has the socket
        turns.end_consumer_turn()
        await wake()
        assert reader.lending  # consumers read since it last looked
        await wake()
        assert not reader.lending  # nobody read since: it takes the socket back
        await reader.start(nursery)
        reader.needed = True
        turns.start_consumer_turn()
        await wake()
        assert reader.lending  # needed, but it cannot read while a consumer does
        turns.end_consumer_turn()
        await trio.testing.wait_all_tasks_blocked()
        assert not reader.lending
    assert reader.lent == 2


async def test_a_turn_ending_while_the_reader_is_needed_wakes_it(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    turns = reader.turns
    async with trio.open_nursery() as nursery:
        await reader.start(nursery)
        turns.start_consumer_turn()
        reader.needed = True  # e.g. a ping waits for its pong
        await trio.testing.wait_all_tasks_blocked()
        assert reader.lending  # the consumer has the socket: no reading now
        turns.end_consumer_turn()
        await trio.testing.wait_all_tasks_blocked()
        assert not reader.lending


async def test_the_reader_takes_the_socket_back_when_consumers_stop(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    async with trio.open_nursery() as nursery:
        await reader.start(nursery)
        await settle(mock_clock, QUIET_INTERVAL * 0.9)
        assert reader.lending
        await settle(mock_clock, QUIET_INTERVAL * 0.2)
        assert not reader.lending  # nobody read for a quiet interval


async def test_consumers_that_keep_reading_keep_the_socket(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    async with trio.open_nursery() as nursery:
        await reader.start(nursery)
        for _ in range(100):  # 9 quiet intervals of time, a read in each
            await settle(mock_clock, QUIET_INTERVAL * 0.9)
            assert reader.lending
            consumer_read(reader.turns)
        # They stop: the interval grew, but no further than the longest.
        await settle(mock_clock, 2 * LONGEST_QUIET_INTERVAL)
        assert not reader.lending
    assert reader.lent == 1


async def test_a_consumer_blocked_reading_costs_no_wake_ups(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    turns = reader.turns
    async with trio.open_nursery() as nursery:
        await reader.start(nursery)
        turns.start_consumer_turn()  # an idle connection: the read blocks
        mock_clock.jump(1000)
        await trio.testing.wait_all_tasks_blocked()
        assert reader.lending
        turns.end_consumer_turn()  # a message: the quiet interval starts
        await trio.testing.wait_all_tasks_blocked()
        assert reader.lending
        await settle(mock_clock, LONGEST_QUIET_INTERVAL)
        assert not reader.lending
    assert reader.lent == 1


async def test_turns_outside_a_loan_are_harmless(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    turns = reader.turns
    turns.wake_reader()
    turns.start_consumer_turn()
    turns.end_consumer_turn()
    assert not turns.consumer_reading
    assert not turns.consumer_may_read
    async with trio.open_nursery() as nursery:
        await reader.start(nursery)
        assert turns.consumer_may_read  # earlier turns left nothing behind
        reader.needed = True
        turns.wake_reader()
        await all_done(nursery)


async def consumer_reads_a_while(
    nursery: trio.Nursery, clock: trio.testing.MockClock, reader: Reader
) -> None:
    """A consumer starts reading, and finds nothing for a whole interval."""
    await reader.start(nursery)
    reader.turns.start_consumer_turn()
    await settle(clock, QUIET_INTERVAL * 1.5)


async def test_a_reader_that_may_rest_ends_while_a_consumer_reads_on(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader(may_rest=True)
    turns = reader.turns
    async with trio.open_nursery() as nursery:
        await consumer_reads_a_while(nursery, mock_clock, reader)
        assert (reader.lent, reader.rested) == (1, 1)
        assert turns.consumer_reading  # the socket stays with the consumer
        turns.wake_reader()  # while it reads, nothing starts the reader
        assert reader.resumed == 0
        turns.end_consumer_turn()
    assert reader.resumed == 1
    assert not turns.consumer_may_read  # the reader has the socket again


async def test_a_resting_reader_woken_while_nobody_reads_starts_at_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader(may_rest=True)
    turns = reader.turns
    async with trio.open_nursery() as nursery:
        await consumer_reads_a_while(nursery, mock_clock, reader)
        turns.end_consumer_turn()
        assert reader.resumed == 1
        turns.wake_reader()  # already started: not twice
    assert reader.resumed == 1


async def test_a_reader_that_may_not_rest_keeps_lending(
    mock_clock: trio.testing.MockClock,
) -> None:
    reader = Reader()
    turns = reader.turns
    async with trio.open_nursery() as nursery:
        await consumer_reads_a_while(nursery, mock_clock, reader)
        await settle(mock_clock, QUIET_INTERVAL * 1.5)
        assert reader.lending
        reader.needed = True
        turns.end_consumer_turn()
    assert (reader.rested, reader.resumed) == (0, 0)
