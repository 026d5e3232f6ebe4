"""The fan-out fast path: the pump writes to a member whose socket takes
the frame at once, and falls back to the member's writer task otherwise.

Over real loopback TCP; nothing here is timed.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from pubsub_helpers import Joiner, TaskSteps, clients, start_server
from raw_http import upgraded
from raw_peer import BINARY, TEXT, RawPeer

from trio_websocket import FanOut, PubSub, WebSocketConnection
from trio_websocket._pubsub import Overflow

TIMEOUT = 10


async def receive_until_end(client: WebSocketConnection) -> list[str | bytes]:
    got = []
    with trio.fail_after(TIMEOUT):
        while (message := await client.get_message()) != "end":
            got.append(message)
    return got


async def test_small_messages_skip_the_writer_tasks(nursery: trio.Nursery) -> None:
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    sent = [f"m{n}" for n in range(100)]
    async with hub.fan_out("room") as group:
        joiner.group = group
        async with clients(server, 3) as connected:
            await relay_and_count(hub, sent, connected)


async def relay_and_count(
    hub: PubSub, sent: list[str], connected: list[WebSocketConnection]
) -> None:
    """Relay ``sent``; each client gets it all, the writer tasks never run."""
    await trio.testing.wait_all_tasks_blocked()
    steps = TaskSteps("FanOut._write")
    trio.lowlevel.add_instrument(steps)
    received: list[list[str | bytes]] = []
    try:
        async with trio.open_nursery() as readers:
            for client in connected:
                readers.start_soon(collect, client, received)
            await publish_all(hub, [*sent, "end"])
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert received == [sent] * len(connected)
    assert steps.steps == 0


async def read_ids_until_end(peer: RawPeer) -> list[int]:
    """The message numbers a raw client reads, up to the text "end"."""
    ids = []
    with trio.fail_after(TIMEOUT):
        while (frame := await peer.read_frame(masked=False)) != (TEXT, b"end"):
            opcode, payload = frame
            assert opcode == BINARY and payload == bytes([payload[0]]) * len(payload)
            ids.append(payload[0])
    return ids


@pytest.mark.parametrize("slow", ["close", "drop_oldest"])
async def test_a_stalled_member_falls_back_to_its_queue(
    nursery: trio.Nursery, slow: Overflow
) -> None:
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    sent = [bytes([n]) * 8192 for n in range(60)]
    async with hub.fan_out("room", max_pending=4, slow=slow) as group:
        joiner.group = group
        async with (
            clients(server, 2) as connected,
            upgraded(server.port, "/stalled", receive_buffer=4096) as stalled,
        ):
            await relay_past_a_stalled_member(
                hub, group, slow, sent, connected, RawPeer(stalled)
            )


async def relay_past_a_stalled_member(
    hub: PubSub,
    group: FanOut,
    slow: Overflow,
    sent: list[bytes],
    connected: list[WebSocketConnection],
    stalled: RawPeer,
) -> None:
    await trio.testing.wait_all_tasks_blocked()
    received: list[list[str | bytes]] = []
    async with trio.open_nursery() as readers:
        for client in connected:
            readers.start_soon(collect, client, received)
        await publish_all(hub, [*sent, "end"])
    assert received == [sent] * len(connected)  # the fast members: everything
    await check_stalled(group, slow, stalled, len(sent))


async def collect(
    client: WebSocketConnection, received: list[list[str | bytes]]
) -> None:
    received.append(await receive_until_end(client))


async def publish_all(hub: PubSub, messages: list[str | bytes]) -> None:
    for message in messages:
        await hub.publish("room", message)
        await trio.testing.wait_all_tasks_blocked()


async def check_stalled(
    group: FanOut, slow: Overflow, peer: RawPeer, sent: int
) -> None:
    """Evicted, or it got whole frames of an ordered subsequence once it reads."""
    if slow == "close":
        assert group.evicted == 1
        assert len(group) == 2
        return
    assert group.dropped > 0
    ids = await read_ids_until_end(peer)
    assert ids == sorted(set(ids))
    assert ids[-1] == sent - 1
    assert len(ids) == sent - group.dropped
