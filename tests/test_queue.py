"""The message queue's limits, on their own (no connection around them)."""

from __future__ import annotations

from trio_websocket._queue import MessageQueue


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
