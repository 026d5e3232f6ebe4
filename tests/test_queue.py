"""The message queue on its own (no connection around them): its limits,
first come first served, cancellation, closing."""

from __future__ import annotations

import math

import trio
import trio.testing
from test_primitives import all_done

from trio_websocket._queue import Fragment, Item, MessageQueue


def fill(queue: MessageQueue, message: bytes, bound: int) -> int:
    """Put ``message`` until the queue has no room; how many went in."""
    count = 0
    while queue.has_room() and count < bound:
        queue.put(message, len(message))
        count += 1
    return count


def test_byte_budget_counts_each_items_overhead() -> None:
    # A 64 KiB budget of one-byte messages must not hold 64 Ki of them:
    # each costs far more than its payload in memory.
    budget = 2**16
    count = fill(MessageQueue(max_items=1, max_bytes=budget), b"x", budget)
    assert 1 < count < budget // 100


def test_byte_budget_holds_about_its_size_of_large_messages() -> None:
    message = b"x" * 4096
    count = fill(MessageQueue(max_items=1, max_bytes=2**16), message, 1000)
    assert count == 16  # 16 * (4096 + overhead) reaches 64 KiB


def test_count_limit_alone_without_a_byte_budget() -> None:
    assert fill(MessageQueue(max_items=3, max_bytes=0), b"x", 100) == 3


def test_taking_an_item_makes_room_again() -> None:
    queue = MessageQueue(max_items=1, max_bytes=0)
    queue.put(b"a", 1)
    assert not queue.has_room()
    assert queue.get_nowait() == b"a"
    assert queue.has_room()
    assert queue.queued_bytes == 0


# -- Consumers and the reader, in tasks ---------------------------------------


async def get_into(queue: MessageQueue, received: list[Item | None]) -> None:
    received.append(await queue.get())


async def waiting_consumers(
    nursery: trio.Nursery, queue: MessageQueue, count: int
) -> list[list[Item | None]]:
    """Start ``count`` tasks waiting in ``get``, in order; their results."""
    results: list[list[Item | None]] = []
    for _ in range(count):
        results.append([])
        nursery.start_soon(get_into, queue, results[-1])
        await trio.testing.wait_all_tasks_blocked()
    return results


async def test_items_come_out_in_the_order_they_went_in() -> None:
    queue = MessageQueue(max_items=math.inf, max_bytes=0)
    items: list[Item] = ["a", b"b", Fragment("c", False), Fragment("d", True), "e"]
    for item in items:
        queue.put(item, 1)
    assert len(queue) == 5
    assert queue.queued_bytes == 5
    assert [await queue.get() for _ in items] == items
    assert queue.get_nowait() is None
    assert queue.queued_bytes == 0


async def test_waiting_consumers_are_served_first_come_first_served() -> None:
    queue = MessageQueue(max_items=1, max_bytes=0)
    async with trio.open_nursery() as nursery:
        results = await waiting_consumers(nursery, queue, 3)
        for index, message in enumerate(["first", "second", "third"]):
            queue.put(message, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert [len(result) for result in results] == [1] * (index + 1) + [0] * (
                2 - index
            )
    assert results == [["first"], ["second"], ["third"]]


async def test_a_cancelled_consumer_does_not_swallow_a_message() -> None:
    queue = MessageQueue(max_items=1, max_bytes=0)
    scope = trio.CancelScope()
    cancelled: list[Item | None] = []

    async def cancellable() -> None:
        with scope:
            await get_into(queue, cancelled)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancellable)
        await trio.testing.wait_all_tasks_blocked()
        [other] = await waiting_consumers(nursery, queue, 1)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        queue.put("only", 4)
        # The cancelled consumer no longer counts as waiting.
        assert queue.has_item_for_every_waiter
        await all_done(nursery)
    assert scope.cancelled_caught
    assert cancelled == []
    assert other == ["only"]


async def test_a_consumer_cancelled_once_woken_still_gets_its_message() -> None:
    queue = MessageQueue(max_items=1, max_bytes=0)
    scope = trio.CancelScope()
    received: list[Item | None] = []

    async def cancellable() -> None:
        with scope:
            await get_into(queue, received)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancellable)
        await trio.testing.wait_all_tasks_blocked()
        queue.put("mine", 4)
        scope.cancel()  # after the wake-up: the message must not be lost
    assert received == ["mine"]
    assert len(queue) == 0


async def test_waiters_with_and_without_items() -> None:
    queue = MessageQueue(max_items=math.inf, max_bytes=0)
    assert not queue.has_waiter_without_item
    assert not queue.has_item_for_every_waiter
    queue.put("queued", 1)
    assert not queue.has_item_for_every_waiter  # nobody waits
    assert queue.get_nowait() == "queued"
    async with trio.open_nursery() as nursery:
        results = await waiting_consumers(nursery, queue, 2)
        assert queue.has_waiter_without_item
        assert not queue.has_item_for_every_waiter
        queue.put("a", 1)  # both still wait: only one has an item coming
        assert queue.has_waiter_without_item
        assert not queue.has_item_for_every_waiter
        queue.put("b", 1)
        assert not queue.has_waiter_without_item
        assert queue.has_item_for_every_waiter
        await all_done(nursery)
    assert {tuple(result) for result in results} == {("a",), ("b",)}
    assert not queue.has_waiter_without_item
    assert not queue.has_item_for_every_waiter


async def test_a_waiting_consumer_gives_the_reader_room() -> None:
    # A full queue stops the reader, but a consumer waiting for more than
    # what is queued must let it read: otherwise both would wait forever.
    queue = MessageQueue(max_items=1, max_bytes=0)
    queue.put("full", 4)
    assert not queue.has_room()
    reader_woken = trio.Event()

    async def reader() -> None:
        await queue.wait_for_room()
        reader_woken.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not reader_woken.is_set()
        # A consumer that takes the queued item makes room ...
        assert await queue.get() == "full"
        await trio.testing.wait_all_tasks_blocked()
        assert reader_woken.is_set()

    queue = MessageQueue(max_items=0, max_bytes=0)  # no room by itself
    assert not queue.has_room()
    reader_woken = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not reader_woken.is_set()
        # ... and so does one that waits on an empty queue.
        [result] = await waiting_consumers(nursery, queue, 1)
        assert reader_woken.is_set()
        assert queue.has_room()
        queue.put("for the waiter", 14)
        assert not queue.has_room()  # its item is there: no more room
        await all_done(nursery)
    assert result == ["for the waiter"]


async def test_room_by_bytes_when_the_count_is_reached() -> None:
    queue = MessageQueue(max_items=1, max_bytes=100_000)
    queue.put(b"x" * 10, 10)
    queue.put(b"x" * 10, 10)
    assert len(queue) == 2
    assert queue.has_room()  # over the count, under the byte budget
    queue.put(b"x" * 100_000, 100_000)
    assert not queue.has_room()
    assert queue.get_nowait() == b"x" * 10
    assert not queue.has_room()  # the large one still fills the budget


async def test_close_keeps_queued_items_then_ends() -> None:
    queue = MessageQueue(max_items=math.inf, max_bytes=0)
    queue.put("a", 1)
    queue.put("b", 1)
    queue.close(discard=False)
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    assert await queue.get() is None
    assert await queue.get() is None  # and stays ended


async def test_close_with_discard_drops_the_items() -> None:
    queue = MessageQueue(max_items=math.inf, max_bytes=0)
    queue.put("a", 1)
    queue.put(b"bb", 2)
    queue.close(discard=True)
    assert len(queue) == 0
    assert queue.queued_bytes == 0
    assert await queue.get() is None


async def test_close_wakes_every_consumer_and_the_reader() -> None:
    queue = MessageQueue(max_items=1, max_bytes=0)
    queue.put("full", 4)
    reader_done = trio.Event()

    async def reader() -> None:
        await queue.wait_for_room()
        reader_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        results = await waiting_consumers(nursery, queue, 3)
        # The first consumer took the queued item at once; two wait.
        assert results[0] == ["full"]
        assert queue.has_waiter_without_item
        queue.close(discard=False)
        await all_done(nursery)
    assert reader_done.is_set()
    assert results == [["full"], [None], [None]]


async def test_the_reader_waits_for_room_only_while_the_queue_is_open() -> None:
    queue = MessageQueue(max_items=0, max_bytes=0)
    queue.close(discard=False)
    with trio.fail_after(1):  # only a hang would reach this
        await queue.wait_for_room()
