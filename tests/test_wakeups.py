"""Wake-ups under load, over real loopback TCP (issue 14, item 6).

Counted with a Trio instrument, never timed: frames that arrive in one read
reach a waiting consumer with one wake-up (besides the yield a consumer's
read makes before it looks), and the messages after the first come out of
the queue without another trip through the scheduler.
"""

from __future__ import annotations

import math

import trio
from raw_http import HOST
from raw_peer import TEST_BOUND, TEXT, frame, upgraded_raw_client

from trio_websocket import WebSocketRequest, serve_websocket


class StepCounter(trio.abc.Instrument):
    """Counts the steps one task runs (each step after the first is a wake-up)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_frames_of_one_read_reach_the_consumer_with_one_wake_up() -> None:
    count = 50
    results: trio.MemorySendChannel[tuple[list[str | bytes], int]]
    results, outcome = trio.open_memory_channel(math.inf)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        assert await ws.get_message() == "ready"
        await ws.send_message("go")
        counter = StepCounter(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            received = [await ws.get_message() for _ in range(count)]
        finally:
            trio.lowlevel.remove_instrument(counter)
        results.send_nowait((received, counter.steps))

    with trio.fail_after(TEST_BOUND):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, HOST, 0, None)
            async with upgraded_raw_client(server.port) as peer:
                await peer.stream.send_all(frame(TEXT, b"ready"))
                assert await peer.read_frame(masked=False) == (TEXT, b"go")
                burst = b"".join(frame(TEXT, b"%d" % i) for i in range(count))
                await peer.stream.send_all(burst)  # one write, one read
                received, steps = await outcome.receive()
            nursery.cancel_scope.cancel()
    assert received == [str(i) for i in range(count)]
    # A consumer's read yields once before it looks; the burst arrives during
    # that yield or while the consumer waits: one wake-up for all 50 frames.
    assert steps <= 2
