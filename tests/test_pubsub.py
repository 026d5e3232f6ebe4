"""Publish/subscribe: channels in memory, and relaying them to WebSockets."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import deque
from contextlib import AsyncExitStack

import pytest
import trio
import trio.lowlevel
import trio.testing
from pubsub_helpers import Joiner, TaskSteps, clients, start_server
from raw_http import HOST, connect, upgraded

from trio_websocket import (
    ConnectionClosed,
    FanOut,
    Gap,
    PubSub,
    Subscription,
    SubscriptionOverflow,
    WebSocketConnection,
    wrap_client_stream,
)
from trio_websocket._broadcast import frame_message
from trio_websocket._pubsub import (
    SLOW_CLIENT_CODE,
    ChannelMessage,
    Overflow,
    _take_burst,
)
from trio_websocket._pubsub_redis import open_redis_pubsub
from trio_websocket._settings import Compression

#: Upper bound for any wait that should end promptly; only reached on a bug.
TIMEOUT = 10
#: Far more than the slow reader's socket buffers can hold.
BIG = 256 * 2**10


async def take(subscription: Subscription, count: int) -> list[ChannelMessage | Gap]:
    with trio.fail_after(TIMEOUT):
        return [await subscription.receive() for _ in range(count)]


def test_import_loads_no_pubsub() -> None:
    code = (
        "import sys, trio_websocket\n"
        "assert 'trio_websocket._pubsub' not in sys.modules\n"
        "assert 'trio_websocket._pubsub_redis' not in sys.modules\n"
        "assert not [m for m in sys.modules if 'redis' in m]\n"
        "trio_websocket.PubSub\n"
        "assert 'trio_websocket._pubsub' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- In memory ---------------------------------------------------------------


async def test_every_subscriber_gets_every_message_in_order() -> None:
    hub = PubSub()
    sent: list[ChannelMessage] = [
        f"m{n}" if n % 2 else f"m{n}".encode() for n in range(200)
    ]
    async with AsyncExitStack() as stack:
        subscriptions = [
            await stack.enter_async_context(hub.subscribe("room", max_buffer=200))
            for _ in range(5)
        ]
        async with hub.subscribe("elsewhere") as other:
            for message in sent:
                assert await hub.publish("room", message) == 5
            for subscription in subscriptions:
                assert await take(subscription, 200) == sent
                assert (subscription.dropped, subscription.gaps) == (0, 0)
            assert other.buffered == 0


async def test_a_waiting_subscriber_is_woken(nursery: trio.Nursery) -> None:
    hub = PubSub()
    got: list[ChannelMessage | Gap] = []
    async with hub.subscribe("room") as subscription:

        async def read() -> None:
            async for message in subscription:
                got.append(message)

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await hub.publish("room", "hello")
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["hello"]
    await trio.testing.wait_all_tasks_blocked()  # the reader's loop ended


async def test_publish_nowait_hands_over_at_once() -> None:
    hub = PubSub()
    async with hub.subscribe("room") as subscription:
        hub.publish_nowait("room", "one")
        hub.publish_nowait("room", bytearray(b"two"))
        assert subscription.buffered == 2  # no checkpoint needed
        assert await take(subscription, 2) == ["one", b"two"]


async def test_order_holds_per_publisher(nursery: trio.Nursery) -> None:
    hub = PubSub()
    async with hub.subscribe("room", max_buffer=1000) as subscription:

        async def publish(name: str) -> None:
            for n in range(100):
                await hub.publish("room", f"{name}{n}")

        async with trio.open_nursery() as publishers:
            publishers.start_soon(publish, "a")
            publishers.start_soon(publish, "b")
        got = await take(subscription, 200)
    for name in "ab":
        mine = [m for m in got if isinstance(m, str) and m.startswith(name)]
        assert mine == [f"{name}{n}" for n in range(100)]


async def test_a_slow_subscriber_loses_the_oldest_and_sees_a_gap() -> None:
    hub = PubSub()
    async with (
        hub.subscribe("room", max_buffer=10) as slow,
        hub.subscribe("room", max_buffer=100) as fast,
    ):
        with trio.fail_after(TIMEOUT):  # publishing never waits for readers
            for n in range(25):
                await hub.publish("room", str(n))
        assert slow.buffered == 10
        assert (slow.dropped, slow.gaps) == (15, 1)
        assert await take(slow, 11) == [Gap(dropped=15)] + [
            str(n) for n in range(15, 25)
        ]
        assert await take(fast, 25) == [str(n) for n in range(25)]
        assert fast.dropped == 0
        # A second overflow after some reading is a second gap, in its place.
        for n in range(25, 37):
            await hub.publish("room", str(n))
        got = await take(slow, 11)
        assert got == [Gap(dropped=2)] + [str(n) for n in range(27, 37)]
        assert (slow.dropped, slow.gaps) == (17, 2)


async def test_overflow_close_ends_only_that_subscription() -> None:
    hub = PubSub()
    async with (
        hub.subscribe("room", max_buffer=3, overflow="close") as strict,
        hub.subscribe("room") as other,
    ):
        for n in range(4):
            await hub.publish("room", str(n))
        with pytest.raises(SubscriptionOverflow, match="more than 3"):
            await strict.receive()
        assert strict.buffered == 0  # nothing kept for it
        assert await hub.publish("room", "4") == 1
        assert await take(other, 5) == ["0", "1", "2", "3", "4"]


async def test_leaving_the_block_unsubscribes() -> None:
    hub = PubSub()
    async with hub.subscribe("a") as first, hub.subscribe("a"), hub.subscribe("b"):
        assert sorted(hub.channels) == ["a", "b"]
        assert hub.subscribers("a") == 2
    assert hub.channels == []
    assert await hub.publish("a", "x") == 0
    with pytest.raises(trio.EndOfChannel):
        await first.receive()
    with pytest.raises(RuntimeError):  # an error inside the block also leaves
        async with hub.subscribe("a"):
            raise RuntimeError
    with trio.move_on_after(0):  # and so does cancellation
        async with hub.subscribe("a") as waiting:
            await waiting.receive()
    assert hub.channels == []
    assert hub._subscriptions == {}


async def test_disconnect_gaps_merge_and_keep_their_place() -> None:
    # What a backend does when it loses its server, in memory.
    hub = PubSub()
    async with hub.subscribe("room", max_buffer=2) as subscription:
        await hub.publish("room", "before")
        hub._gap_everywhere(Gap(disconnected=True))
        hub._gap_everywhere(Gap(disconnected=True))  # merged: still one gap
        await hub.publish("room", "after")
        assert await take(subscription, 3) == [
            "before",
            Gap(disconnected=True),
            "after",
        ]
        assert subscription.gaps == 1
        # An overflow that drops across a disconnect gap folds both into one.
        await hub.publish("room", "1")
        hub._gap_everywhere(Gap(disconnected=True))
        await hub.publish("room", "2")
        await hub.publish("room", "3")
        assert await take(subscription, 3) == [
            Gap(dropped=1, disconnected=True),
            "2",
            "3",
        ]
        assert subscription.gaps == 2


async def test_messages_are_text_or_bytes() -> None:
    hub = PubSub()
    async with hub.subscribe("room") as subscription:
        await hub.publish("room", bytearray(b"ab"))
        assert await subscription.receive() == b"ab"
        with pytest.raises(TypeError):
            await hub.publish("room", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_buffer"):
        async with hub.subscribe("room", max_buffer=0):
            pass  # pragma: no cover
    bad: Overflow = "block"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="overflow"):
        async with hub.subscribe("room", overflow=bad):
            pass  # pragma: no cover
    assert hub.channels == []


# -- Relaying to WebSocket clients over loopback ------------------------------


@pytest.mark.parametrize(
    "compression", [None, "deflate"], ids=["framed-once", "deflate"]
)
async def test_relay_to_a_dozen_clients_exactly_once(
    nursery: trio.Nursery, compression: Compression
) -> None:
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    async with hub.fan_out("room") as group:
        joiner.group = group
        async with clients(server, 12, compression) as connected:
            await relay_to_a_dozen(hub, joiner, group, connected)
            if compression is None:
                check_framed_once(joiner)


SENT: list[ChannelMessage] = [f"t{n}" if n % 3 else bytes([n]) for n in range(50)]


async def relay_to_a_dozen(
    hub: PubSub, joiner: Joiner, group: FanOut, connected: list[WebSocketConnection]
) -> None:
    sent = SENT
    await trio.testing.wait_all_tasks_blocked()
    assert len(group) == 12
    for message in sent:
        await hub.publish("room", message)
        await trio.lowlevel.checkpoint()  # a publisher that does something between
    await hub.publish("room", "end")
    with trio.fail_after(TIMEOUT):
        for client in connected:
            got = []
            while (message := await client.get_message()) != "end":
                got.append(message)
            assert got == sent
    assert group.relayed == 51
    assert (group.dropped, group.evicted, group.gaps) == (0, 0, 0)


def check_framed_once(joiner: Joiner) -> None:
    """Each server connection wrote the shared frames: header and payload."""
    sent = SENT
    wire = sum(2 + len(m.encode() if isinstance(m, str) else m) for m in sent)
    assert [c.stats.wire_bytes_sent for c in joiner.by_path.values()] == [
        wire + 2 + len("end")
    ] * 12


async def lockstep(
    hub: PubSub, connected: list[WebSocketConnection], count: int
) -> None:
    """Publish ``count`` big messages, each once the fast clients have the last."""
    for n in range(count):
        message = bytes([n]) * BIG
        await hub.publish("room", message)
        with trio.fail_after(TIMEOUT):  # a relay that waits on the slow one hangs
            for client in connected:
                assert await client.get_message() == message


@pytest.mark.parametrize("slow", ["close", "drop_oldest"])
async def test_a_slow_client_holds_up_no_one(
    nursery: trio.Nursery, slow: Overflow
) -> None:
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    async with hub.fan_out("room", max_pending=2, slow=slow) as group:
        joiner.group = group
        async with (
            clients(server, 3) as connected,
            upgraded(server.port, "/slow", receive_buffer=4096),
        ):
            await trio.testing.wait_all_tasks_blocked()
            stalled = joiner.by_path["/slow"]
            assert len(group) == 4
            await lockstep(hub, connected, 6)
            # One message stuck in the write, two pending: the rest is over.
            if slow == "close":
                assert (group.evicted, group.dropped) == (1, 0)
                assert stalled not in group
            else:
                assert (group.evicted, group.dropped) == (0, 3)
                assert stalled in group
            assert len(group) == 3 + (slow == "drop_oldest")
    # Leaving the fan-out gave up on the write in progress.
    assert stalled.closed is not None


async def test_slow_client_is_closed_with_1013(nursery: trio.Nursery) -> None:
    # A real client that stops reading for a while, then reads everything.
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    async with hub.fan_out("room", max_pending=1) as group:
        joiner.group = group
        stream = await connect(server.port, receive_buffer=4096)
        client = await wrap_client_stream(
            nursery,
            stream,
            HOST,
            "/lagging",
            max_message_size=math.inf,
            compression=None,
        )
        await trio.testing.wait_all_tasks_blocked()
        sent = [bytes([n]) * BIG for n in range(8)]
        for message in sent:  # some taken, one half-written, one pending, ...
            await hub.publish("room", message)
            await trio.testing.wait_all_tasks_blocked()
        assert group.evicted == 1
        assert len(group) == 0
        got = []
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            while True:
                got.append(await client.get_message())
        assert 0 < len(got) < len(sent)
        assert got == sent[: len(got)]
        assert closed.value.reason is not None
        assert closed.value.reason.code == SLOW_CLIENT_CODE


async def test_gap_message_and_leaving_members(nursery: trio.Nursery) -> None:
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    async with hub.fan_out("room", on_gap="resync") as group:
        joiner.group = group
        async with clients(server, 2) as (first, second):
            await gap_and_leave(hub, joiner, group, first, second)


async def gap_and_leave(
    hub: PubSub,
    joiner: Joiner,
    group: FanOut,
    first: WebSocketConnection,
    second: WebSocketConnection,
) -> None:
    await trio.testing.wait_all_tasks_blocked()
    hub._gap_everywhere(Gap(disconnected=True))
    with trio.fail_after(TIMEOUT):
        assert await first.get_message() == "resync"
        assert await second.get_message() == "resync"
    assert group.gaps == 1
    left = joiner.by_path["/client0"]
    group.discard(left)
    assert left not in group
    await hub.publish("room", "only the second")
    with trio.fail_after(TIMEOUT):
        assert await second.get_message() == "only the second"
    await second.aclose()
    await hub.publish("room", "nobody")
    await trio.testing.wait_all_tasks_blocked()
    assert len(group) == 0  # the closed connection left by itself
    group.add(joiner.by_path["/client1"])  # closed: ignored
    assert len(group) == 0
    with trio.move_on_after(0.2) as nothing:
        await first.get_message()
    assert nothing.cancelled_caught


async def test_the_redis_backend_without_coredis_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)  # import fails
    with pytest.raises(ImportError, match=r"trio-websocket\[redis\]"):
        async with open_redis_pubsub():
            pass  # pragma: no cover


# -- Taking what piled up without a checkpoint ---------------------------------


async def test_receive_nowait_takes_what_waits_and_says_why_not_otherwise() -> None:
    hub = PubSub()
    async with hub.subscribe("room", max_buffer=2, overflow="close") as room:
        with pytest.raises(trio.WouldBlock):
            room.receive_nowait()
        hub.publish_nowait("room", "a")
        hub.publish_nowait("room", b"b")
        assert [room.receive_nowait(), room.receive_nowait()] == ["a", b"b"]
        assert room.buffered == 0
        for message in ("c", "d", "e"):  # one more than the buffer holds
            hub.publish_nowait("room", message)
        with pytest.raises(SubscriptionOverflow):
            room.receive_nowait()
    async with hub.subscribe("hall") as hall:
        pass
    with pytest.raises(trio.EndOfChannel):
        hall.receive_nowait()


async def test_a_burst_is_relayed_with_one_wake_up() -> None:
    hub = PubSub()
    async with hub.fan_out("room", max_pending=256) as group:
        await trio.testing.wait_all_tasks_blocked()  # the relay waits
        counter = TaskSteps("FanOut._pump")
        trio.lowlevel.add_instrument(counter)
        try:
            for number in range(50):
                hub.publish_nowait("room", f"m{number}")
            await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert group.relayed == 50
        assert counter.steps <= 2  # woken once (and at most once more to wait)


async def test_bursts_reach_readers_that_keep_up_whole_and_in_order(
    nursery: trio.Nursery,
) -> None:
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    sent = [f"m{number}" * 50 for number in range(200)]
    async with hub.fan_out("room", max_pending=8) as group:
        joiner.group = group
        async with clients(server, 12) as connected:
            await trio.testing.wait_all_tasks_blocked()
            for start in range(0, len(sent), 50):  # bursts of 50, 8 may wait
                for message in sent[start : start + 50]:
                    hub.publish_nowait("room", message)
                with trio.fail_after(TIMEOUT):
                    for client in connected:
                        got = [await client.get_message() for _ in range(50)]
                        assert got == sent[start : start + 50]
            assert (group.evicted, group.dropped, len(group)) == (0, 0, 12)
            assert group.relayed == len(sent)


def test_a_burst_joins_at_most_64_kib_of_frames_and_keeps_the_order() -> None:
    messages: list[ChannelMessage] = [b"a" * 40_000, b"b" * 40_000, "c" * 10]
    messages += ["d" * 10, b"e" * 70_000]
    framed = deque(frame_message(message) for message in messages)
    bursts = []
    while framed:
        bursts.append(_take_burst(framed))
    sizes = [[framed.payload_size for framed in burst.messages] for burst in bursts]
    assert sizes == [[40_000], [40_000, 10, 10], [70_000]]  # a large one goes alone
    for burst in bursts:
        assert burst.frames == b"".join(framed.frame for framed in burst.messages)
        assert burst.payload_size == sum(sizes[bursts.index(burst)])


async def test_a_lagging_client_does_not_hold_back_the_others_bursts(
    nursery: trio.Nursery,
) -> None:
    hub = PubSub()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    sent = [f"m{number}" for number in range(50)]
    async with hub.fan_out("room", max_pending=64, slow="drop_oldest") as group:
        joiner.group = group
        async with (
            clients(server, 2) as connected,
            upgraded(server.port, "/slow", receive_buffer=4096),
        ):
            await trio.testing.wait_all_tasks_blocked()
            await lockstep(hub, connected, 1)  # the stalled client's write blocks
            counter = TaskSteps("FanOut._pump")
            trio.lowlevel.add_instrument(counter)
            try:
                for message in sent:
                    hub.publish_nowait("room", message)
                with trio.fail_after(TIMEOUT):
                    for client in connected:
                        assert [await client.get_message() for _ in sent] == sent
            finally:
                trio.lowlevel.remove_instrument(counter)
            # Bursts of 32 while the stalled client still had room: not 50 passes.
            assert counter.steps <= 4
            assert (group.evicted, group.dropped, len(group)) == (0, 0, 3)
