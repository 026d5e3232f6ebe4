"""Client workloads, written once against the adapter interface.

Each workload opens its connections first (not timed), warms up, then runs
until it has done ``max_count`` operations or ``seconds`` have passed,
whichever comes first, and returns ``{"value": ..., ...}``. The agent wraps
every call in ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
import math
from time import perf_counter
from typing import Any

import trio

from interface import Channel, Message, TrioPeer
from payloads import client_share, messages_for

Params = dict[str, Any]
Result = dict[str, Any]
MiB = 2**20


async def _warm_up(channel: Channel, messages: list[Message], rounds: int) -> None:
    for index in range(rounds):
        message = messages[index % len(messages)]
        await channel.send(message)
        echoed = await channel.recv()
        if echoed != message:
            raise AssertionError("the echo server returned a different message")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.floor(fraction * len(ordered)))]


async def round_trips(
    peer: TrioPeer, host: str, port: int, compression: bool, params: Params
) -> Result:
    """Sequential echoes on one connection: rate, p50/p99 (and MiB/s)."""
    messages = messages_for(params)
    message = messages[0]
    async with peer.connect(host, port, compression=compression) as channel:
        await _warm_up(channel, messages, params["warmup"])
        send, recv = channel.send, channel.recv
        samples: list[float] = []
        start = perf_counter()
        deadline = start + params["seconds"]
        for _ in range(params["max_count"]):
            before = perf_counter()
            await send(message)
            await recv()
            after = perf_counter()
            samples.append(after - before)
            if after >= deadline:
                break
        elapsed = perf_counter() - start
    rate = len(samples) / elapsed
    return {
        "value": rate,
        "count": len(samples),
        "elapsed": elapsed,
        "mib_per_s": rate * params["size"] / MiB,
        "p50_us": _percentile(samples, 0.50) * 1e6,
        "p99_us": _percentile(samples, 0.99) * 1e6,
    }


async def pipelined(
    peer: TrioPeer, host: str, port: int, compression: bool, params: Params
) -> Result:
    """One task sends back to back while another receives the echoes: msg/s.

    At most ``window`` messages are in flight, so the run ends soon after its
    time budget instead of draining megabytes of socket buffers.
    """
    messages = messages_for(params)
    max_count: int = params["max_count"]
    async with peer.connect(host, port, compression=compression) as channel:
        await _warm_up(channel, messages, params["warmup"])
        send, recv = channel.send, channel.recv
        window: int = params["window"]
        sent = received = 0
        sending = True
        room: trio.Event | None = None
        start = perf_counter()
        deadline = start + params["seconds"]

        async def sender() -> None:
            nonlocal sent, sending, room
            try:
                for index, message in enumerate(itertools.cycle(messages)):
                    while sent - received >= window:
                        room = trio.Event()
                        await room.wait()
                    last = index + 1 >= max_count or (
                        index % 64 == 63 and perf_counter() >= deadline
                    )
                    # Both counters move before the send: its echo may arrive
                    # before send() returns.
                    sending = not last
                    sent += 1
                    await send(message)
                    if last:
                        break
            finally:
                sending = False

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            # While we wait in recv() a message is outstanding or about to be:
            # while ``sending`` is true, the sender will send at least once more.
            while sending or received < sent:
                await recv()
                received += 1
                if room is not None and sent - received <= window // 2:
                    room.set()
                    room = None
        elapsed = perf_counter() - start
    return {"value": received / elapsed, "count": received, "elapsed": elapsed}


async def fan_in(
    peer: TrioPeer, host: str, port: int, compression: bool, params: Params
) -> Result:
    """``conns`` connections, each doing sequential echoes: total msg/s."""
    messages = messages_for(params)
    message = messages[0]
    conns: int = params["conns"]
    go = trio.Event()
    counts: list[int] = []
    ready = trio.Semaphore(0)
    deadline = math.inf

    async def client() -> None:
        async with peer.connect(host, port, compression=compression) as channel:
            await _warm_up(channel, messages, 2)
            send, recv = channel.send, channel.recv
            ready.release()
            await go.wait()
            done = 0
            for _ in range(params["max_count"]):
                await send(message)
                await recv()
                done += 1
                if perf_counter() >= deadline:
                    break
            counts.append(done)

    async with trio.open_nursery() as nursery:
        for _ in range(conns):
            nursery.start_soon(client)
        for _ in range(conns):
            await ready.acquire()
        start = perf_counter()
        deadline = start + params["seconds"]
        go.set()
    elapsed = perf_counter() - start
    total = sum(counts)
    return {"value": total / elapsed, "count": total, "elapsed": elapsed}


async def handshakes(
    peer: TrioPeer, host: str, port: int, compression: bool, params: Params
) -> Result:
    """Open and close connections, ``concurrency`` at a time: handshakes/s."""
    max_count: int = params["max_count"]
    started = 0
    done = 0
    start = perf_counter()
    deadline = start + params["seconds"]

    async def worker() -> None:
        nonlocal started, done
        while started < max_count and perf_counter() < deadline:
            started += 1
            async with peer.connect(host, port, compression=compression):
                pass
            done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(params["concurrency"]):
            nursery.start_soon(worker)
    elapsed = perf_counter() - start
    return {"value": done / elapsed, "count": done, "elapsed": elapsed}


async def mixed(
    peer: TrioPeer, host: str, port: int, compression: bool, params: Params
) -> Result:
    """``clients`` connections, each echoing the seeded messages of random size
    in turn, one at a time: echoes/s and payload MiB/s (one way), all clients.

    Each client stops at the time budget; the run ends when the last one has
    its last echo (closing is not timed).
    """
    pool = messages_for(params)
    clients: int = params["clients"]
    go = trio.Event()
    ready = trio.Semaphore(0)
    counts: list[int] = []
    payloads: list[int] = []
    finished: list[float] = []
    deadline = math.inf

    async def client(index: int) -> None:
        messages = client_share(pool, index, clients)
        async with peer.connect(host, port, compression=compression) as channel:
            await _warm_up(channel, messages, params["warmup"])
            send, recv = channel.send, channel.recv
            ready.release()
            await go.wait()
            done = payload = 0
            for message in itertools.islice(
                itertools.cycle(messages), params["max_count"]
            ):
                await send(message)
                await recv()
                done += 1
                payload += len(message)
                if perf_counter() >= deadline:
                    break
            finished.append(perf_counter())
            counts.append(done)
            payloads.append(payload)

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client, index)
        for _ in range(clients):
            await ready.acquire()
        start = perf_counter()
        deadline = start + params["seconds"]
        go.set()
    elapsed = max(finished) - start
    total = sum(counts)
    return {
        "value": total / elapsed,
        "count": total,
        "elapsed": elapsed,
        "mib_per_s": sum(payloads) / elapsed / MiB,
    }


WORKLOADS = {
    "round_trips": round_trips,
    "pipelined": pipelined,
    "fan_in": fan_in,
    "handshakes": handshakes,
    "mixed": mixed,
}
