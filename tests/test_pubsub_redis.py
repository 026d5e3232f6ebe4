"""The Redis backend of PubSub, against a redis-server this test starts."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from test_pubsub import Joiner, clients, start_server

from trio_websocket import Gap, PubSub
from trio_websocket._pubsub import ChannelMessage, Subscription
from trio_websocket._pubsub_redis import RedisPubSub, open_redis_pubsub

TIMEOUT = 10
REDIS_SERVER = shutil.which("redis-server")

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (apt-get install redis-server)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A throwaway redis-server on a loopback port, with no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=TIMEOUT)
            self.process = None

    async def ready(self) -> None:
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await stream.aclose()
                return


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def take(subscription: Subscription, count: int) -> list[ChannelMessage | Gap]:
    with trio.fail_after(TIMEOUT):
        return [await subscription.receive() for _ in range(count)]


async def test_messages_cross_between_hubs_in_order(redis_server: RedisServer) -> None:
    await redis_server.ready()
    sent: list[ChannelMessage] = [
        f"m{n}" if n % 2 else bytes([n, 0]) for n in range(50)
    ]
    async with (
        open_redis_pubsub(port=redis_server.port) as publisher,
        open_redis_pubsub(port=redis_server.port) as subscriber,
        subscriber.subscribe("room") as first,
        subscriber.subscribe("room") as second,
        publisher.subscribe("room") as local,
    ):
        for message in sent:
            assert await publisher.publish("room", message) == 2  # two hubs
        assert await take(first, 50) == sent
        assert await take(second, 50) == sent
        assert await take(local, 50) == sent
    assert subscriber.channels == []


async def test_unsubscribing_stops_delivery(redis_server: RedisServer) -> None:
    await redis_server.ready()
    async with open_redis_pubsub(port=redis_server.port) as hub:
        async with hub.subscribe("a"):
            assert await hub.publish("a", "x") == 1
        with trio.fail_after(TIMEOUT):
            while True:  # UNSUBSCRIBE is sent soon
                if await hub.publish("a", "y") == 0:
                    break
                await trio.sleep(0.01)


async def test_a_restart_is_a_gap_and_subscriptions_resume(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    async with (
        open_redis_pubsub(port=redis_server.port, max_reconnect_delay=0.1) as hub,
        hub.subscribe("room") as subscription,
    ):
        assert await hub.publish("room", "before") == 1
        assert await take(subscription, 1) == ["before"]
        redis_server.stop()
        assert await take(subscription, 1) == [Gap(disconnected=True)]
        assert not hub.connected
        assert await hub.publish("room", "lost") == 0
        redis_server.start()
        with trio.fail_after(TIMEOUT):
            await hub.wait_connected()  # and subscribed again
        assert hub.connected
        assert await hub.publish("room", "after") == 1
        assert await take(subscription, 1) == ["after"]
        assert hub.disconnects == 1
        assert subscription.gaps == 1


async def test_an_unreachable_server_fails_to_open() -> None:
    with pytest.raises((OSError, trio.TooSlowError)):
        async with open_redis_pubsub(port=free_port(), connect_timeout=2):
            pass  # pragma: no cover


async def test_a_cancelled_publish_leaves_no_stale_answer(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    async with (
        open_redis_pubsub(port=redis_server.port) as hub,
        hub.subscribe("room") as subscription,
    ):
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)  # no answer for now
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hub.publish, "room", "maybe")
                await trio.testing.wait_all_tasks_blocked()  # awaiting the answer
                nursery.cancel_scope.cancel()
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert await hub.publish("other", "x") == 0  # not the answer above
        assert await hub.publish("room", "sure") == 1
        got = [await subscription.receive()]
        if got == ["maybe"]:  # it did reach Redis: at most once, then
            got.append(await subscription.receive())
        assert got[-1] == "sure"


def test_redis_hub_is_a_pubsub() -> None:
    assert issubclass(RedisPubSub, PubSub)


async def test_fan_out_over_redis_tells_clients_to_resync(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    await redis_server.ready()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    async with (
        open_redis_pubsub(port=redis_server.port, max_reconnect_delay=0.1) as hub,
        hub.fan_out("room", on_gap="resync") as group,
    ):
        joiner.group = group
        async with clients(server, 3) as connected:
            await trio.testing.wait_all_tasks_blocked()
            assert await hub.publish("room", "one") == 1
            redis_server.stop()
            with trio.fail_after(TIMEOUT):
                for client in connected:
                    assert await client.get_message() == "one"
                    assert await client.get_message() == "resync"
